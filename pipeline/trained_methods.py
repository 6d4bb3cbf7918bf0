"""The stage side of every trained strategy: train, predict every row, save, log.

``run_trained_method(name, params, workspace)`` is what the ``finetune`` and ``scratch`` stages
and the fine-tuning variants (``variant@<name>``) do: trains on the train split (val for the
epoch choice), predicts every manifest row (train, val, test, external) with the kept model and
writes predictions/<name>.csv, models/<name>/best.pt, reports/train/<name>.json and the dvclive
dir reports/train/<name>/ (main methods; a variant's history is in its JSON log). The resumable
checkpoint lives in models/.resume/<name>/ (outside every DVC output, which DVC removes before a
stage reruns, so a rerun after an interruption finds it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import joblib
import numpy as np

from pipeline import distributed, paths
from pipeline.common import get_logger
from pipeline.contracts import TrainLog, write_contract
from pipeline.dataset import load_dataset
from pipeline.errors import StageError
from pipeline.lr_search import search_scratch_lr
from pipeline.params import Params
from pipeline.predictions import write_predictions
from pipeline.strategies import MAIN_METHODS, get_strategy
from pipeline.training import TrainResult, predict_proba, save_trained, train
from pipeline.workspace import Workspace

log = get_logger(__name__)
LINEAR_MODEL = paths.MODELS / "linear" / "model.joblib"
RESUME_DIR = paths.MODELS / ".resume"


def relaunch_under_torchrun(params: Params, stage: str, method: str | None, argv: list[str]) -> int | None:
    """Run the stage as ``train.nproc`` processes under torchrun when it trains a network and is
    not already under torchrun; None = run here, in this process."""
    name = method if stage == "variant" else stage
    if params.train.nproc <= 1 or distributed.launched_by_torchrun() or name is None:
        return None
    if get_strategy(name).kind != "trained":
        return None
    return distributed.relaunch(stage, argv, params.train.nproc)


F = TypeVar("F", bound=Callable[..., Any])


def torchrun_capable(fn: F) -> F:
    """Mark a stage function whose stage relaunches under torchrun (``pipeline.cli`` asks)."""
    fn.relaunch_under_torchrun = relaunch_under_torchrun  # type: ignore[attr-defined]
    return fn


def probe_head(model: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The network head (weight ``(K, D)``, bias ``(K,)``) equal to a fitted
    ``StandardScaler -> LogisticRegression`` pipeline on the same pooled features.

    Folds the scaler into the weights (w / sigma, b - w . mu / sigma). A binary logistic
    regression has one score z; the two logits (-z/2, z/2) give softmax = (1 - sigmoid(z),
    sigmoid(z)), its own probabilities.
    """
    scaler, lr = model[0], model[-1]
    coef = np.asarray(lr.coef_, dtype=np.float64) / scaler.scale_
    bias = np.asarray(lr.intercept_, dtype=np.float64) - coef @ scaler.mean_
    if list(lr.classes_) != list(range(n_classes)):
        raise ValueError(f"the linear probe's classes {list(lr.classes_)} are not 0..{n_classes - 1}")
    if n_classes == 2:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        bias = np.array([-bias[0] / 2, bias[0] / 2])
    return coef.astype(np.float32), bias.astype(np.float32)


def run_trained_method(name: str, params: Params, workspace: Workspace) -> TrainResult:
    strategy = get_strategy(name)
    dataset = load_dataset(params, root=workspace.root)
    train_rows, val_rows = dataset.rows("train"), dataset.rows("val")
    if len(train_rows) == 0:
        raise StageError("the train split is empty; check the split stage")
    extra: dict[str, Any] = {}
    if not strategy.pretrained and params.scratch.lr is None:
        search = search_scratch_lr(dataset, params, train_rows, val_rows)
        extra["lr_search"] = search
        params = params.model_copy(update={"scratch": params.scratch.model_copy(update={"lr": search["chosen_lr"]})})
    head_init = None
    if strategy.head_init == "linear_probe":
        linear_path = workspace.require(LINEAR_MODEL, "linear")
        head_init = probe_head(joblib.load(linear_path), len(dataset.classes))
    model_dir = workspace.path(paths.MODELS / name)
    live_dir = workspace.path(paths.TRAIN_LOGS / name) if name in MAIN_METHODS else None
    result = train(
        name,
        dataset,
        params,
        train_rows,
        val_rows,
        out_dir=workspace.path(RESUME_DIR / name),
        live_dir=live_dir,
        head_init=head_init,
    )
    result.extra.update(extra)
    ctx = distributed.init(result.model_card["device"].split(":")[0])
    if not ctx.is_main:  # under DDP only rank 0 predicts and writes
        distributed.finish(ctx)
        return result
    probs = predict_proba(result.model, dataset.images, None, params.train.batch_size)
    write_predictions(workspace.path(paths.predictions_csv(name)), dataset, probs)
    save_trained(model_dir / "best.pt", result, dataset.classes, params.backbone)
    write_contract(workspace.path(paths.train_log(name)), TrainLog, result.log_record())
    log.info("%s: predictions for %d rows -> %s", name, len(probs), paths.predictions_csv(name))
    distributed.finish(ctx)
    return result
