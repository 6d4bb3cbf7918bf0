"""Rank candidate backbones for this data set by LogME on frozen train features, with no training.

Each candidate of ``strategies.candidates`` is built from the backbone registry with its pretrained
weights (never downloaded: a candidate whose weights are not on this machine is skipped, and the
reason recorded), embeds the train split's images with the same frozen procedure as the features
stage (:func:`pipeline.features.extract_features`), and gets its LogME score
(:mod:`pipeline.logme`). The configured backbone's train features are reused from the features
stage when they were made with the same backbone settings.

When the linear path's validation AUROC is known for at least three scored candidates, the
Spearman rank correlation between score and AUROC says whether the ranking tracks transfer
performance here; otherwise the report says why it cannot be computed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from pipeline.backbones import EFFICIENTNET_LITE, TIMM_PREFIX, TORCHVISION_PREFIX, BackboneError, create_backbone
from pipeline.errors import StageError
from pipeline.features import extract_features
from pipeline.logme import logme
from pipeline.params import Backbone

MIN_FOR_CORRELATION = 3  # a rank correlation of two points is always +-1


@dataclass
class Candidate:
    name: str
    status: str  # "scored" | "skipped"
    reason: str | None = None
    score: float | None = None
    feature_dim: int | None = None
    n_train: int | None = None
    seconds: float | None = None  # embedding (when done here) + LogME
    embed_seconds: float | None = None  # None: features reused from the features stage
    logme_seconds: float | None = None
    features_from: str | None = None
    weights_source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_candidate_name(name: str) -> None:
    """A name the registry can ever build; anything else is a configuration error, not a skip."""
    if name in EFFICIENTNET_LITE or name.startswith((TORCHVISION_PREFIX, TIMM_PREFIX)):
        return
    raise StageError(
        f"strategies.candidates: {name!r} is not a registry name "
        f"({', '.join(EFFICIENTNET_LITE)}, torchvision/<arch>, timm/<arch>)"
    )


def score_features(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(LogME score, seconds)`` of one candidate's train features."""
    t0 = time.perf_counter()
    score = logme(features, labels)
    return score, time.perf_counter() - t0


def score_candidate(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    grey_to_rgb: Literal["repeat", "sum_stem"],
    batch_size: int,
    device: str | torch.device = "cpu",
    num_threads: int = 0,
    reuse: np.ndarray | None = None,
    reuse_from: str | None = None,
) -> Candidate:
    """Embed ``images`` (N, S, S) with candidate ``name`` (or take ``reuse``) and score them."""
    check_candidate_name(name)
    if reuse is not None:
        score, secs = score_features(reuse, labels)
        return Candidate(
            name,
            "scored",
            score=score,
            feature_dim=int(reuse.shape[1]),
            n_train=len(labels),
            seconds=round(secs, 3),
            logme_seconds=round(secs, 3),
            features_from=reuse_from,
        )
    t0 = time.perf_counter()
    try:
        model = create_backbone(Backbone(name=name, grey_to_rgb=grey_to_rgb), num_classes)
    except BackboneError as err:
        return Candidate(name, "skipped", reason=str(err))
    feats, _, info = extract_features(
        model, images, None, batch_size=batch_size, device=device, num_threads=num_threads
    )
    embed_s = time.perf_counter() - t0
    score, secs = score_features(feats, labels)
    return Candidate(
        name,
        "scored",
        score=score,
        feature_dim=int(feats.shape[1]),
        n_train=len(labels),
        seconds=round(embed_s + secs, 3),
        embed_seconds=round(embed_s, 3),
        logme_seconds=round(secs, 3),
        features_from="embedded by this stage",
        weights_source=info["weights_source"],
    )


def ranking(candidates: list[Candidate]) -> list[dict[str, Any]]:
    """Scored candidates, best first (ties keep the configured order), with their rank."""
    scored = [c for c in candidates if c.status == "scored"]
    order = sorted(scored, key=lambda c: -float(c.score))  # type: ignore[arg-type]
    return [{"rank": i + 1, "name": c.name, "score": c.score} for i, c in enumerate(order)]


def rank_correlation(scores: Mapping[str, float], val_auroc: Mapping[str, float]) -> dict[str, Any]:
    """Spearman's rho between LogME score and the linear path's val AUROC over the candidates that
    have both, or ``rho = None`` with the reason it cannot be computed."""
    from scipy.stats import spearmanr

    both = [n for n in scores if n in val_auroc and np.isfinite(val_auroc[n])]
    out: dict[str, Any] = {
        "candidates": both,
        "val_auroc": {n: val_auroc[n] for n in both},
        "rho": None,
        "p_value": None,
    }
    if len(both) < MIN_FOR_CORRELATION:
        have = ", ".join(both) if both else "none"
        out["note"] = (
            f"cannot be computed: the linear path's val AUROC is known for {len(both)} scored "
            f"candidate(s) ({have}); a rank correlation needs at least {MIN_FOR_CORRELATION}. The "
            "pipeline runs the linear path for the configured backbone only; run it with "
            "backbone.name set to each other candidate to compare"
        )
        return out
    x = [scores[n] for n in both]
    y = [val_auroc[n] for n in both]
    if len(set(x)) < 2 or len(set(y)) < 2:
        out["note"] = "cannot be computed: the scores or the AUROCs are all equal"
        return out
    res = spearmanr(x, y)
    out["rho"], out["p_value"] = float(res.statistic), float(res.pvalue)
    out["note"] = f"Spearman rank correlation over {len(both)} candidates"
    return out
