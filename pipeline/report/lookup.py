"""Where the report finds things in its inputs: methods in order, split names, result blocks.

Methods are never a fixed list: the report shows every method of this run
(:func:`pipeline.paths.methods`: the three main ones, then ``strategies.variants``) and whatever
else ``evaluation.json`` holds, the main three first. Each method's description comes from the
strategy registry (:mod:`pipeline.strategies`), the one place a method is defined.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pipeline import paths

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pipeline.report.inputs import ReportInputs

MAIN_METHODS = paths.PATHS


def ordered(names: Iterable[str], configured: Iterable[str] = ()) -> list[str]:
    """``names`` (each once): the main three first, then the ``configured`` order, then the rest
    in their own order."""
    names = list(dict.fromkeys(names))
    first = [m for m in (*MAIN_METHODS, *configured) if m in names]
    return list(dict.fromkeys(first + names))


def configured_methods(inp: ReportInputs) -> list[str]:
    """Every method this run produces (main three + ``strategies.variants``)."""
    return list(paths.methods(inp.params))


def evaluated_methods(inp: ReportInputs) -> list[str]:
    """The methods with results in evaluation.json (else metrics.json), main three first."""
    ev = inp.evaluation or {}
    got = list(ev.get("paths") or []) or list(inp.metrics or {})
    return ordered(got, configured_methods(inp))


def card_methods(inp: ReportInputs) -> list[str]:
    """Methods that get a model card: configured ones, and any with a training log."""
    return ordered([*configured_methods(inp), *inp.train_logs], configured_methods(inp))


def method_summary(name: str) -> str:
    """What a method does, in one line (the strategy registry's summary)."""
    from pipeline.strategies import get_strategy

    try:
        return get_strategy(name).summary
    except ValueError:
        return "a method not in the strategy registry"


def method_title(name: str) -> str:
    return f"{name}: {method_summary(name)}"


def configured_splits(inp: ReportInputs) -> list[str]:
    """The splits a claim is made on: test, then every configured external set (params order)."""
    return ["test"] + [e.split_key for e in inp.params.data.external]


def split_title(inp: ReportInputs, split: str) -> str:
    """How the report names a split: never guessed from folder names."""
    for e in inp.params.data.external:
        if e.split_key == split:
            return f"External: {e.label}" if e.description else e.label[0].upper() + e.label[1:]
    return f"{split} split"


def splits_present(inp: ReportInputs) -> list[str]:
    return list((inp.evaluation or {}).get("splits") or [])


def split_block(inp: ReportInputs, method: str, split: str) -> dict | None:
    """evaluation.json's result of ``method`` on ``split`` (None when absent)."""
    res = ((inp.evaluation or {}).get("results") or {}).get(method) or {}
    return (res.get("splits") or {}).get(split)


def operating_point(inp: ReportInputs, method: str) -> dict[str, Any]:
    res = ((inp.evaluation or {}).get("results") or {}).get(method) or {}
    return res.get("operating_point") or {}


def split_stats(inp: ReportInputs) -> dict[str, Any]:
    """split.json per split: train, val, test, then the external sets in the file's order."""
    if inp.split is None:
        return {}
    block = inp.split.splits
    keys = [k for k in ("train", "val", "test") if k in block] + [k for k in block if k.startswith("external/")]
    return {k: block[k] for k in keys}


__all__ = [
    "card_methods",
    "configured_methods",
    "configured_splits",
    "evaluated_methods",
    "method_summary",
    "method_title",
    "operating_point",
    "ordered",
    "split_block",
    "split_stats",
    "split_title",
    "splits_present",
]
