"""variant stage (`variant@<name>`, a DVC foreach over strategies.variants): one extra strategy.

Fine-tuning variants train like finetune (``pipeline.trained_methods``); the frozen-feature
variants ``linear_on_logits`` and ``knn`` fit scikit-learn models (``pipeline.feature_variants``).
Either way the outputs follow the main methods' contracts: predictions/<name>.csv and
reports/train/<name>.json.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import StageError
from pipeline.params import Params
from pipeline.strategies import get_strategy
from pipeline.trained_methods import torchrun_capable
from pipeline.workspace import Workspace


@torchrun_capable
def run_variant(params: Params, workspace: Workspace, name: str) -> Any:
    if name not in params.strategies.variants:
        raise StageError(f"variant {name!r} is not listed in strategies.variants {params.strategies.variants}")
    strategy = get_strategy(name)
    if strategy.kind == "trained":
        from pipeline.trained_methods import run_trained_method

        return run_trained_method(name, params, workspace)
    from pipeline.feature_variants import run_feature_variant

    return run_feature_variant(name, params, workspace)
