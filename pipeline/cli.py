"""The one command-line shape of every stage: ``python -m stages.<name> [--params FILE] [--root DIR]``.

``main`` parses those two options, validates the params, builds the :class:`Workspace` and calls
the stage's library function ``run_<stage>(params, workspace)``. A :class:`StageError` (bad
input, missing upstream output) becomes one line on stderr and exit code 1; any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.params import REPO_ROOT, load_params
from pipeline.workspace import Workspace

EXIT_STAGE_ERROR = 1


def main(
    stage: str,
    run: Callable[..., Any],
    doc: str | None,
    argv: list[str] | None = None,
    methods: tuple[str, ...] | None = None,
) -> int:
    """Parse, validate params, run. ``methods``: the stage takes one positional method name
    (one of ``methods``), passed to ``run(params, workspace, method)``: a `foreach` stage."""
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{stage}", description=(doc or stage).strip().splitlines()[0]
    )
    if methods is not None:
        parser.add_argument("method", choices=methods, help="which method this stage runs")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml in the root)")
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT,
        help="workspace folder the artifacts and relative data paths live under (default: the repository root)",
    )
    args = parser.parse_args(argv)
    try:
        params_file = args.params if Path(args.params).is_absolute() else args.root / args.params
        params = load_params(params_file)
        # A training stage (see pipeline.trained_methods.torchrun_capable) with train.nproc > 1
        # relaunches itself under torchrun; the others never import the distributed machinery.
        relaunch = getattr(run, "relaunch_under_torchrun", None)
        if relaunch is not None:
            rc = relaunch(params, stage, getattr(args, "method", None), sys.argv[1:] if argv is None else list(argv))
            if rc is not None:
                return int(rc)
        if methods is not None:
            run(params, Workspace(args.root), args.method)
        else:
            run(params, Workspace(args.root))
    except StageError as err:
        print(f"{stage}: {err}", file=sys.stderr)
        return EXIT_STAGE_ERROR
    return 0


def entry(stage: str, run: Callable[..., Any], doc: str | None, methods: tuple[str, ...] | None = None) -> None:
    """``if __name__ == "__main__"`` of a stage module."""
    sys.exit(main(stage, run, doc, methods=methods))
