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


# ------------------------------------------------------------------ the transferability stage


def test_rank_correlation_needs_three_candidates() -> None:
    from pipeline.transferability import rank_correlation

    one = rank_correlation({"a": 1.0, "b": 0.5}, {"a": 0.7})
    assert one["rho"] is None and "known for 1 scored candidate(s) (a)" in one["note"]
    three = rank_correlation({"a": -0.1, "b": -0.3, "c": -0.2}, {"a": 0.8, "b": 0.6, "c": 0.7, "z": 0.9})
    assert three["candidates"] == ["a", "b", "c"] and three["rho"] == pytest.approx(1.0)
    flipped = rank_correlation({"a": -0.1, "b": -0.3, "c": -0.2}, {"a": 0.6, "b": 0.8, "c": 0.7})
    assert flipped["rho"] == pytest.approx(-1.0)


def test_transferability_step_scores_reuses_and_skips(workspace, monkeypatch, tmp_path) -> None:
    import json

    from conftest import make_processed, repo_params, write_params

    from pipeline import paths
    from pipeline.errors import StageError
    from pipeline.steps.transferability import REPORT, run_transferability

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))  # no timm weights here
    split = ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    make_processed(workspace, split, size=32)
    n = len(split)
    f, _ = _separable(n=n, d=5)
    workspace.path(paths.FEATURES_DIR).mkdir(parents=True)
    np.save(workspace.path(paths.FEATURES), f.astype(np.float32))
    workspace.path(paths.FEATURES_INFO).write_text(
        json.dumps(
            {
                "backbone": "efficientnet_lite0",
                "weights_source": "test",
                "D": 5,
                "preprocessing": {"grey_to_rgb": "repeat"},
            }
        )
    )
    workspace.train_log("linear").parent.mkdir(parents=True)
    workspace.train_log("linear").write_text(
        json.dumps({"val_auroc": 0.75, "model_card": {"backbone": "efficientnet_lite0"}})
    )
    raw = repo_params()
    raw["strategies"] = {"candidates": ["efficientnet_lite0", "efficientnet_lite1", "timm/resnet18"]}
    raw["features"]["batch_size"] = 8
    raw["train"]["num_threads"] = 1
    doc = run_transferability(write_params(workspace.root, raw), workspace)
    assert json.loads(workspace.path(REPORT).read_text())["ranking"] == doc["ranking"]
    by = {c["name"]: c for c in doc["candidates"]}
    lite0, lite1, skipped = by["efficientnet_lite0"], by["efficientnet_lite1"], by["timm/resnet18"]
    # The configured backbone's features are reused (D = 5 of the fake file), not re-embedded.
    assert lite0["feature_dim"] == 5 and lite0["embed_seconds"] is None
    assert lite0["features_from"].startswith("data/features/images.npy")
    assert lite1["status"] == "scored" and lite1["feature_dim"] == 1280 and lite1["embed_seconds"] > 0
    assert lite1["n_train"] == 12 and np.isfinite(lite1["score"])
    assert skipped["status"] == "skipped" and "not found" in skipped["reason"]
    assert [r["name"] for r in doc["ranking"]] == sorted(
        ["efficientnet_lite0", "efficientnet_lite1"], key=lambda k: -by[k]["score"]
    )
    corr = doc["correlation_with_val_auroc"]
    assert corr["rho"] is None and corr["val_auroc"] == {"efficientnet_lite0": 0.75}
    raw["strategies"] = {"candidates": ["resnet18"]}
    with pytest.raises(StageError, match="not a registry name"):
        run_transferability(write_params(workspace.root, raw), workspace)
