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
        if _wants_torchrun(stage, params, getattr(args, "method", None)):
            from pipeline import distributed

            return distributed.relaunch(stage, sys.argv[1:] if argv is None else list(argv), params.train.nproc)
        if methods is not None:
            run(params, Workspace(args.root), args.method)
        else:
            run(params, Workspace(args.root))
    except StageError as err:
        print(f"{stage}: {err}", file=sys.stderr)
        return EXIT_STAGE_ERROR
    return 0


def _wants_torchrun(stage: str, params: Any, method: str | None) -> bool:
    """A training stage with train.nproc > 1 not yet under torchrun relaunches itself under it."""
    from pipeline import distributed
    from pipeline.strategies import get_strategy

    if params.train.nproc <= 1 or distributed.launched_by_torchrun():
        return False
    name = method if stage == "variant" else stage
    return (
        name is not None
        and name in ("finetune", "scratch", *params.strategies.variants)
        and (get_strategy(name).kind == "trained")
    )


def entry(stage: str, run: Callable[..., Any], doc: str | None, methods: tuple[str, ...] | None = None) -> None:
    """``if __name__ == "__main__"`` of a stage module."""
    sys.exit(main(stage, run, doc, methods=methods))
