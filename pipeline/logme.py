"""LogME: the log maximum evidence of frozen features for a labelled target set.

You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021. For each one-hot label column ``y`` (N,) and features ``F`` (N, D) it fits the Bayesian
linear regression ``y = F w + e`` with prior ``w ~ N(0, alpha^-1 I)`` and noise ``e ~ N(0, beta^-1 I)``,
and maximises the marginal likelihood (the evidence)

    log p(y | F, alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                                - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log |A|,
    A = alpha I + beta F^T F,   m = beta A^-1 F^T y,

over (alpha, beta) with MacKay's fixed-point updates ``gamma = sum beta s_i / (alpha + beta s_i)``,
``alpha = gamma / m^T m``, ``beta = (N - gamma) / ||F m - y||^2`` (s_i: eigenvalues of F^T F). The
score is the mean over classes of the maximised evidence divided by N: higher means the features
explain the labels better with a simpler linear model, without any training.

Everything is computed from one thin SVD ``F = U diag(sigma) V^T`` (s_i = sigma_i^2, k = min(N, D)
non-zero terms; the D - k zero eigenvalues contribute ``log alpha`` each to ``log |A|``), so the cost
is one SVD plus O(k) per iteration and class, whether N < D or N > D. Features are used as given (no
centring or scaling), as in the paper's reference procedure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITER = 100
TOL = 1e-6  # relative change of alpha/beta that ends the fixed-point iteration


@dataclass(frozen=True)
class Evidence:
    """One label column's maximised evidence: per-sample log evidence and the fitted precisions."""

    log_evidence: float  # log p(y | F, alpha, beta) / N at the fixed point
    alpha: float
    beta: float
    iterations: int


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sigma^2 (k,), U (N, k))`` of the thin SVD of ``features``."""
    u, sigma, _ = np.linalg.svd(features, full_matrices=False)
    return sigma**2, u


def _terms(alpha: float, beta: float, s: np.ndarray, z: np.ndarray, r0: float):
    """Posterior quantities for one column, in the SVD basis.

    ``z = U^T y`` (k,), ``r0 = ||y||^2 - ||z||^2`` (the part of y outside the span of F).
    Returns ``(m^T m, ||F m - y||^2, gamma)``.
    """
    denom = alpha + beta * s
    mm = float(np.sum(beta**2 * s * z**2 / denom**2))
    res = float(np.sum((alpha / denom) ** 2 * z**2) + r0)
    gamma = float(np.sum(beta * s / denom))
    return mm, res, gamma


def log_evidence(alpha: float, beta: float, features: np.ndarray, y: np.ndarray) -> float:
    """``log p(y | F, alpha, beta)`` (not divided by N) at given precisions: the formula above."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s, u = _spectrum(f)
    return _log_evidence(alpha, beta, s, u.T @ y, float(y @ y - (u.T @ y) @ (u.T @ y)), *f.shape)


def _log_evidence(alpha: float, beta: float, s: np.ndarray, z: np.ndarray, r0: float, n: int, d: int) -> float:
    mm, res, _ = _terms(alpha, beta, s, z, r0)
    logdet = float(np.sum(np.log(alpha + beta * s)) + (d - len(s)) * np.log(alpha))
    return (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res
        - alpha / 2 * mm
        - logdet / 2
    )


def _maximise(s: np.ndarray, z: np.ndarray, r0: float, n: int, d: int) -> Evidence:
    alpha, beta = 1.0, 1.0
    tiny = np.finfo(np.float64).tiny
    it = 0
    while it < MAX_ITER:
        it += 1
        mm, res, gamma = _terms(alpha, beta, s, z, r0)
        new_alpha = gamma / max(mm, tiny)
        new_beta = max(n - gamma, tiny) / max(res, tiny)
        done = (abs(new_alpha - alpha) <= TOL * alpha) and (abs(new_beta - beta) <= TOL * beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    ev = _log_evidence(alpha, beta, s, z, r0, n, d)
    return Evidence(ev / n, float(alpha), float(beta), it)


def logme_columns(features: np.ndarray, targets: np.ndarray) -> list[Evidence]:
    """The maximised evidence of each column of ``targets`` (N, C) on ``features`` (N, D)."""
    f = np.asarray(features, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if f.ndim != 2 or t.ndim != 2 or len(f) != len(t):
        raise ValueError(f"features (N, D) and targets (N, C) expected, got {f.shape} and {t.shape}")
    if len(f) < 2:
        raise ValueError("LogME needs at least two samples")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinity")
    s, u = _spectrum(f)
    n, d = f.shape
    out = []
    for c in range(t.shape[1]):
        y = t[:, c]
        z = u.T @ y
        r0 = max(float(y @ y - z @ z), 0.0)
        out.append(_maximise(s, z, r0, n, d))
    return out


def one_hot(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``(N,)`` integer labels -> ``(N, C)`` float one-hot matrix."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError("labels must be a 1-d array of non-negative integers")
    c = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    return np.eye(c)[labels]


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score of ``features`` (N, D) for integer class ``labels`` (N,): the mean over the
    one-hot columns of the maximised log evidence per sample (You et al. 2021, Algorithm 1)."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError("LogME needs at least two classes among the labels")
    # One column per class present (an absent class would be an all-zero column, fitted exactly).
    targets = one_hot(np.searchsorted(present, labels), len(present))
    return float(np.mean([e.log_evidence for e in logme_columns(features, targets)]))
