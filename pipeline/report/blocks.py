"""The report's building blocks and its one family of number formatters.

A section is a list of blocks: plain dicts with a ``kind`` (``p``, ``callout``, ``missing``,
``h3``, ``list``, ``pre``, ``table``, ``figure``) that both templates (HTML and Markdown) render
the same way. Every number shown in a table or a sentence goes through :func:`fnum` and the
helpers built on it (:func:`fci`, :func:`fdiff`, :func:`fp`, :func:`fblock`, :func:`fprop`,
:func:`fsci`), so an undefined statistic is always ``n/a`` and a value has the same digits
everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- blocks


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    row_classes: list[str] = field(default_factory=list)  # e.g. "flagged" per row (HTML only)
    caption: str = ""


@dataclass
class Figure:
    key: str
    path: Path  # the PNG on disk
    md_path: str  # relative to the Markdown file
    caption: str
    uri: str = ""  # data: URI, filled when rendering HTML


def p(text: str) -> dict[str, Any]:
    return {"kind": "p", "text": text}


def callout(text: str) -> dict[str, Any]:
    return {"kind": "callout", "text": text}


def missing(text: str) -> dict[str, Any]:
    """An explicit 'not available' note: missing inputs are said, never silently skipped."""
    return {"kind": "missing", "text": text}


def h3(text: str) -> dict[str, Any]:
    return {"kind": "h3", "text": text}


def ul(items: Sequence[str]) -> dict[str, Any]:
    return {"kind": "list", "items": list(items)}


def pre(text: str) -> dict[str, Any]:
    # Markdown fence longer than any backtick run inside (attribution files contain fences).
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return {"kind": "pre", "text": text, "fence": "`" * max(3, longest + 1)}


def table(t: Table, links: Sequence[str] | None = None) -> dict[str, Any]:
    """A table block; ``links`` (one section anchor or ``""`` per row) turns the last cell of each
    row into a link to that section (HTML)."""
    b: dict[str, Any] = {"kind": "table", "table": t}
    if links is not None:
        b["links"] = list(links)
    return b


def figure(f: Figure) -> dict[str, Any]:
    return {"kind": "figure", "figure": f}


# --------------------------------------------------------------------------- numbers


def fnum(x: Any, nd: int = 3) -> str:
    """A number as text; ``n/a`` for null/NaN (undefined statistics stay visible as such)."""
    if x is None or isinstance(x, bool):
        return "n/a" if x is None else str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "n/a"
    if isinstance(x, int):  # counts stay counts
        return str(x)
    return f"{v:.{nd}f}"


def fsci(x: Any) -> str:
    """Learning rates and C values: 1e-06, 0.01, 1 (compact, exact as configured)."""
    if x is None:
        return "n/a"
    return f"{float(x):g}"


def fci(v: Any, lo: Any, hi: Any, nd: int = 3) -> str:
    """A value with its interval: '0.812 (0.741–0.883)'."""
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{fnum(v, nd)} (CI n/a)"
    return f"{fnum(v, nd)} ({fnum(lo, nd)}–{fnum(hi, nd)})"


def fdiff(v: Any, lo: Any, hi: Any, nd: int = 3) -> str:
    """A difference with its CI, 'to' between bounds (negative bounds stay readable)."""
    if v is None:
        return "n/a"
    return f"{fnum(v, nd)} (95% CI {fnum(lo, nd)} to {fnum(hi, nd)})"


def fp(x: Any) -> str:
    """A p-value: three decimals, or '< 0.001'."""
    if x is None:
        return "n/a"
    v = float(x)
    if not math.isfinite(v):
        return "n/a"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def fblock(b: Mapping[str, Any] | None, nd: int = 3) -> str:
    """``{"value","ci_low","ci_high"}`` -> '0.812 (0.741–0.883)'."""
    if not b:
        return "n/a"
    return fci(b.get("value"), b.get("ci_low"), b.get("ci_high"), nd)


def fprop(b: Mapping[str, Any] | None) -> str:
    """A Wilson block: value (CI) k/n."""
    if not b or b.get("value") is None:
        return "n/a" if not b else f"n/a ({b.get('k', '?')}/{b.get('n', '?')})"
    return f"{fblock(b)} {b.get('k')}/{b.get('n')}"


def fmean_sd(mean: Any, sd: Any, nd: int = 1) -> str:
    """'62.3 ± 14.1' (SD n/a when undefined)."""
    if mean is None:
        return "n/a"
    return f"{fnum(mean, nd)} ± {fnum(sd, nd)}"


# --------------------------------------------------------------------------- text


_SCHEME = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://")


def strip_url_schemes(text: str) -> str:
    """Web addresses in cited text lose their scheme: plain-text citations, never links."""
    return _SCHEME.sub("", text)


__all__ = [
    "Figure",
    "Table",
    "callout",
    "fblock",
    "fci",
    "fdiff",
    "figure",
    "fmean_sd",
    "fnum",
    "fp",
    "fprop",
    "fsci",
    "h3",
    "missing",
    "p",
    "pre",
    "strip_url_schemes",
    "table",
    "ul",
]
