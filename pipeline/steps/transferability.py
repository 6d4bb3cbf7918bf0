"""transferability stage: candidate backbones ranked by LogME on frozen train features."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.backbones import select_device
from pipeline.common import get_logger, read_json, seed_everything
from pipeline.contracts import Transferability, write_contract
from pipeline.dataset import load_dataset
from pipeline.errors import StageError
from pipeline.params import Params
from pipeline.transferability import check_candidate_name, rank_correlation, ranking, score_candidate
from pipeline.workspace import Workspace

log = get_logger("transferability")
REPORT = paths.TRANSFERABILITY


def _reusable(info: dict[str, Any], params: Params, name: str) -> bool:
    """Were data/features/ made by candidate ``name`` with this run's grey-to-RGB mode and
    its own packaged weights (no weights_path override)?"""
    prep = info.get("preprocessing", {})
    return (
        name == params.backbone.name == info.get("backbone")
        and params.backbone.weights_path is None
        and prep.get("grey_to_rgb") == params.backbone.grey_to_rgb
    )


def _val_auroc(workspace: Workspace) -> dict[str, float]:
    """The linear path's val AUROC per backbone it ran with (today: the configured one)."""
    p = workspace.path(paths.train_log("linear"))
    if not p.exists():
        return {}
    rec = read_json(p)
    backbone = rec.get("model_card", {}).get("backbone")
    value = rec.get("val_auroc")
    return {backbone: float(value)} if backbone and value is not None else {}


def run_transferability(params: Params, workspace: Workspace) -> dict[str, Any]:
    """reports/transferability.json: per candidate its LogME score, feature dimension and cost;
    the ranking; the rank correlation with the linear path's val AUROC where it can be computed."""
    start = time.perf_counter()
    seed_everything(params.seed)
    for name in params.strategies.candidates:
        check_candidate_name(name)
    dataset = load_dataset(params, root=workspace.root)
    train = dataset.rows("train")
    labels = dataset.labels()[train]
    if len(np.unique(labels)) < 2:
        raise StageError("the train split holds a single class: LogME needs at least two")
    images = np.asarray(dataset.images[train])
    info = read_json(workspace.require(paths.FEATURES_INFO, "features"))
    results = []
    for name in params.strategies.candidates:
        reuse = None
        if _reusable(info, params, name):
            reuse = np.load(workspace.require(paths.FEATURES, "features"), mmap_mode="r")[train]
        cand = score_candidate(
            name,
            images,
            labels,
            len(params.data.classes),
            params.backbone.grey_to_rgb,
            params.features.batch_size,
            select_device(params.train.device),
            params.train.num_threads,
            reuse=reuse,
            reuse_from=f"{paths.FEATURES} (features stage)" if reuse is not None else None,
        )
        if reuse is not None:
            cand.weights_source = info.get("weights_source")
        log.info(
            "%s: %s",
            name,
            f"LogME {cand.score:.4f} (D={cand.feature_dim}, {cand.seconds:.1f} s)"
            if cand.status == "scored"
            else f"skipped: {cand.reason}",
        )
        results.append(cand)
    scores = {c.name: float(c.score) for c in results if c.score is not None}
    doc: dict[str, Any] = {
        "method": "LogME (You et al., ICML 2021): mean over one-hot classes of the maximised "
        "log evidence per sample of Bayesian linear regression on frozen features",
        "split": "train",
        "n_train": int(len(train)),
        "image_size": int(images.shape[-1]),
        "candidates": [c.as_dict() for c in results],
        "ranking": ranking(results),
        "correlation_with_val_auroc": rank_correlation(scores, _val_auroc(workspace)),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_contract(workspace.path(REPORT), Transferability, doc)
    log.info("ranking: %s (%.1f s)", ", ".join(r["name"] for r in doc["ranking"]), doc["wall_time_s"])
    return doc
