"""LogME (pipeline.logme) on its known properties: the evidence formula against the Gaussian
marginal likelihood, the fixed point as a maximum, invariances, label separation vs shuffled labels,
and a monotone decrease with the label-noise rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pipeline.logme import log_evidence, logme, logme_columns, one_hot


def _separable(n: int = 200, d: int = 8, sep: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    means = rng.normal(size=(2, d))
    means *= sep / np.linalg.norm(means[0] - means[1])
    return means[y] + rng.normal(size=(n, d)), y


@pytest.mark.parametrize("shape", [(5, 2), (3, 6)])  # N > D and N < D
def test_evidence_equals_the_gaussian_marginal_likelihood(shape) -> None:
    """Hand-checkable: y ~ N(0, I/beta + F F^T/alpha) is the model's marginal likelihood."""
    rng = np.random.default_rng(1)
    f = rng.normal(size=shape)
    y = rng.normal(size=shape[0])
    for alpha, beta in [(1.0, 1.0), (0.3, 4.0), (7.0, 0.2)]:
        cov = np.eye(shape[0]) / beta + f @ f.T / alpha
        expected = multivariate_normal(mean=np.zeros(shape[0]), cov=cov).logpdf(y)
        assert log_evidence(alpha, beta, f, y) == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_case_by_hand() -> None:
    # F = [[1], [1]], y = [1, 1], alpha = beta = 1: cov = I + 11^T = [[2, 1], [1, 2]], det 3,
    # y^T cov^-1 y = 2/3, so log p = -log(2 pi) - log(3)/2 - 1/3.
    f, y = np.ones((2, 1)), np.ones(2)
    assert log_evidence(1.0, 1.0, f, y) == pytest.approx(-np.log(2 * np.pi) - np.log(3) / 2 - 1 / 3)


def test_fixed_point_maximises_the_evidence() -> None:
    f, y = _separable(n=60, d=5)
    t = one_hot(y)[:, 1]
    (ev,) = logme_columns(f, t[:, None])
    best = log_evidence(ev.alpha, ev.beta, f, t)
    assert best / len(t) == pytest.approx(ev.log_evidence)
    for da, db in [(1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5)]:
        assert log_evidence(ev.alpha * da, ev.beta * db, f, t) < best


def test_invariant_to_sample_order_and_feature_rotation() -> None:
    f, y = _separable(n=80, d=6, seed=2)
    score = logme(f, y)
    perm = np.random.default_rng(0).permutation(len(y))
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    assert logme(f[perm], y[perm]) == pytest.approx(score, rel=1e-9)
    assert logme(f @ q, y) == pytest.approx(score, rel=1e-9)  # isotropic prior: rotation-invariant
    # Label names do not matter: swapping the two classes permutes the columns only.
    assert logme(f, 1 - y) == pytest.approx(score, rel=1e-12)


def test_label_separating_features_beat_shuffled_labels() -> None:
    for seed in range(5):
        f, y = _separable(seed=seed)
        shuffled = np.random.default_rng(100 + seed).permutation(y)
        assert logme(f, y) > logme(f, shuffled) + 0.05


def test_score_decreases_with_label_noise() -> None:
    rates = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    scores = np.zeros((10, len(rates)))
    for seed in range(10):
        f, y = _separable(n=300, d=10, seed=seed)
        rng = np.random.default_rng(1000 + seed)
        u = rng.random(len(y))  # the same draws at every rate: noisier sets flip a superset
        for j, r in enumerate(rates):
            scores[seed, j] = logme(f, np.where(u < r, 1 - y, y))
    mean = scores.mean(axis=0)
    assert np.all(np.diff(mean) < 0), mean


def test_more_informative_features_score_higher() -> None:
    weak, y = _separable(sep=0.5, seed=3)
    strong, y2 = _separable(sep=4.0, seed=3)
    assert np.array_equal(y, y2)
    assert logme(strong, y) > logme(weak, y)


def test_multiclass_absent_class_and_input_checks() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 90)
    f = np.eye(3)[y] * 3 + rng.normal(size=(90, 3))
    assert np.isfinite(logme(f, y))
    # Labels {0, 2}: class 1 is absent and must not add an all-zero column.
    y02 = np.where(y == 1, 0, y)
    assert logme(f, y02) == pytest.approx(logme(f, (y02 == 2).astype(int)))
    with pytest.raises(ValueError, match="two classes"):
        logme(f, np.zeros(90, int))
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
