"""The one exception family a stage turns into a one-line message and a non-zero exit code.

Library code raises a :class:`StageError` subclass for unusable input or a missing upstream
artifact (a wrong parameter, a missing folder, a manifest without rows, ...). Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class StageError(Exception):
    """Unusable input or missing upstream output; the message says what to do."""


class MissingArtifactError(StageError, FileNotFoundError):
    """An input another stage writes is absent: run that stage first (``dvc repro``)."""
