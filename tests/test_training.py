"""pipeline.training: layer-group rates, the fine-tune/scratch runs, resume, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.backbones import create_backbone
from pipeline.dataset import Dataset
from pipeline.params import REPO_ROOT, Params, validate_params
from pipeline.predictions import read_predictions
from pipeline.store import write_store
from pipeline.strategies import plan_groups
from pipeline.trained_methods import run_trained_method
from pipeline.training import (
    auroc,
    choose_monitor,
    load_trained,
    predict_proba,
    set_train_mode,
    set_trainable,
    train,
    update_best,
)
from pipeline.workspace import Workspace

SIZE = 32


def _params(**sections) -> Params:
    """The repo's params.yaml with tiny-run overrides: ``train={"epochs": 1}`` etc."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"].update(batch_size=8, num_threads=0, augment_on_the_fly=False, device="cpu")
    raw["scratch"].update(lr=0.01, steps=2)
    for key, value in sections.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return validate_params(raw)


def _dataset(n: int = 24, classes=("normal", "abnormal"), seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = np.array([classes[i % len(classes)] for i in range(n)])
    images = rng.random((n, SIZE, SIZE)).astype(np.float32) * 0.5
    for k in range(1, len(classes)):  # a learnable signal: a bright square per class
        images[labels == classes[k], 4 * k : 4 * k + 8, 8:16] = 1.0
    split = np.array(["train"] * (n - 8) + ["val"] * 4 + ["test"] * 2 + ["external"] * 2)
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "file": [f"img{i}.dcm" for i in range(n)],
            "patient": [f"pt{i}" for i in range(n)],
            "label": labels,
            "split": split,
            "source": np.where(split == "external", "external", "internal"),
        }
    )
    return Dataset(manifest=manifest, images=images.astype(np.float16), classes=tuple(classes))


# ---------------------------------------------------------------------------------------------
# Metrics


def test_auroc_binary_multiclass_and_undefined() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    assert auroc(y, p, positive_index=1) == 1.0
    assert auroc(y, p[:, ::-1], positive_index=1) == 0.0
    y3 = np.array([0, 1, 2, 0, 1, 2])
    assert auroc(y3, np.eye(3)[y3] * 0.8 + 0.2 / 3, positive_index=2) == 1.0
    assert np.isnan(auroc(np.array([1, 1]), p[:2], positive_index=1))


# ---------------------------------------------------------------------------------------------
# Runs


def _write_project(root, dataset: Dataset) -> None:
    processed = root / "data" / "processed"
    processed.mkdir(parents=True)
    write_store(processed / "images", np.asarray(dataset.images, np.float16))
    dataset.manifest.drop(columns="split").to_csv(processed / "manifest.csv", index=False)
    splits = dataset.manifest[["row", "patient", "label", "split"]]
    splits.to_csv(processed / "splits.csv", index=False)


@pytest.mark.parametrize(
    "kind, classes, extra",
    [
        ("finetune", ("normal", "abnormal"), {"train": {"epochs": 1, "augment_on_the_fly": True}}),
        (
            "scratch",
            ("a", "b", "c"),
            # train.augment_on_the_fly is the pretrained methods'; scratch has its own (off).
            {
                "train": {"epochs": 1, "augment_on_the_fly": True},
                "data": {"classes": ["a", "b", "c"], "positive_class": None},
            },
        ),
    ],
)
def test_one_epoch_stage_writes_every_output(tmp_path, kind, classes, extra) -> None:
    ds = _dataset(classes=classes)
    _write_project(tmp_path, ds)
    params = _params(**extra)
    result = run_trained_method(kind, params, Workspace(tmp_path))

    preds = read_predictions(tmp_path / "predictions" / f"{kind}.csv", classes)
    assert preds["row"].tolist() == list(range(len(ds.manifest)))  # every split, every row
    assert set(preds["split"]) == {"train", "val", "test", "external"}
    probs = preds[[f"prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

    model = load_trained(tmp_path / "models" / kind / "best.pt")
    assert model.head.out_features == len(classes) and model.classes == classes
    raw = preds[[f"raw_prob_{c}" for c in classes]].to_numpy()  # prob_ are calibrated on val
    np.testing.assert_allclose(predict_proba(model, ds.images, None, 8), raw, atol=2e-6)

    log = json.loads((tmp_path / "reports" / "train" / f"{kind}.json").read_text())
    card = log["model_card"]
    for key in (
        "path",
        "backbone",
        "weights_source",
        "weights_sha256",
        "trained",
        "layer_groups",
        "epochs_run",
        "best_epoch",
        "device",
        "wall_time_s",
        "image_size",
        "seed",
    ):
        assert key in card, key
    assert card["path"] == kind and card["epochs_run"] == 1 and card["image_size"] == SIZE
    assert (card["weights_sha256"] is None) == (kind == "scratch")
    assert card["augment_on_the_fly"] == (kind == "finetune")
    assert [g["name"] for g in card["layer_groups"]][-1] == "head"
    (entry,) = log["history"]
    keys = {"epoch", "train_loss", "train_auroc", "train_loss_running", "train_auroc_running", "val_loss", "val_auroc"}
    assert set(entry) >= keys
    assert set(entry["lr"]) == {g["name"] for g in card["layer_groups"]}
    live = tmp_path / "reports" / "train" / kind
    assert (live / "metrics.json").exists()
    for name in ("train/loss.tsv", "val/auroc.tsv", "lr/head.tsv"):
        assert (live / "plots" / "metrics" / name).exists(), name
    assert (tmp_path / "models" / ".resume" / kind / "checkpoint.pt").exists()
    assert result.best_epoch == 1


def test_resume_after_interrupt_ends_with_identical_weights(tmp_path) -> None:
    ds = _dataset()
    params = _params(train={"epochs": 2, "early_stopping_patience": None})
    tr, va = ds.rows("train"), ds.rows("val")

    full = train("finetune", ds, params, tr, va, out_dir=tmp_path / "a", live_dir=None)
    again = train("finetune", ds, params, tr, va, out_dir=None, live_dir=None)
    # Same seed, fresh run: identical predictions, bit for bit.
    p_full = predict_proba(full.model, ds.images, None, 8)
    assert np.array_equal(p_full, predict_proba(again.model, ds.images, None, 8))

    part = train("finetune", ds, params, tr, va, tmp_path / "b", None, stop_after_epoch=1)
    assert len(part.history) == 1
    resumed = train("finetune", ds, params, tr, va, tmp_path / "b", tmp_path / "live")
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    for key, tensor in full.final_state.items():
        assert torch.equal(resumed.final_state[key], tensor), key
    assert resumed.history[1]["train_loss"] == full.history[1]["train_loss"]
    assert resumed.best_epoch == full.best_epoch
    # The dvclive dir of the resumed run shows both epochs.
    tsv = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(tsv) == 1 + 2

    # Other params (here: the seed) -> the checkpoint is not reused.
    other = train("finetune", ds, params, tr, va, tmp_path / "b", None, seed=7, epochs=1)
    assert other.resumed_from_epoch is None


def test_warmup_and_unfreeze_leave_frozen_groups_bit_identical() -> None:
    ds = _dataset()
    params = _params(train={"epochs": 1}, finetune={"warmup_epochs": 1})
    torch.manual_seed(0)
    pretrained = create_backbone(params.backbone, 2).backbone_state()
    res = train("finetune", ds, params, ds.rows("train"), ds.rows("val"), None, None)
    after = res.final_state
    # Head-only warm-up: every backbone tensor, BN statistics included, is unchanged.
    assert all(torch.equal(after[f"trunk.net.{k}"], v) for k, v in pretrained.items())
    assert res.history[0]["lr"]["stem"] == 0.0 and res.history[0]["lr"]["head"] > 0

    params = _params(train={"epochs": 1}, finetune={"unfreeze_last_n": 1})
    res = train("finetune", ds, params, ds.rows("train"), ds.rows("val"), None, None)
    changed = {k.split(".")[0] for k, v in pretrained.items() if not torch.equal(res.final_state[f"trunk.net.{k}"], v)}
    assert changed == {"_conv_head", "_bn1"}  # only the last backbone group (head_conv) moved


def test_loader_threads_give_the_same_batches_in_order() -> None:
    from pipeline.augment import make_augmentation
    from pipeline.loader import LoaderSettings, iter_batches, load_batch

    images = _dataset(n=12).images
    batches = [np.array([3, 1, 4]), np.array([0, 5]), np.array([9, 2, 6]), np.array([7, 8])]
    aug = make_augmentation(_params().augment)
    direct = [load_batch(images, b, aug, seed=1, epoch=2) for b in batches]
    for settings in (LoaderSettings(), LoaderSettings(ahead=2), LoaderSettings(ahead=3, workers=2)):
        got = list(iter_batches(images, batches, aug, 1, 2, settings))
        assert [b.rows.tolist() for b in got] == [b.tolist() for b in batches]
        for g, d in zip(got, direct, strict=True):
            assert torch.equal(g.images, d.images) and torch.equal(g.draw.theta, d.draw.theta)
            assert torch.equal(g.on(torch.device("cpu"), aug), d.on(torch.device("cpu"), aug))
    # The images are the store rows as float32 (B, 1, S, S); a run of rows reads as a slice.
    np.testing.assert_array_equal(direct[0].images[:, 0].numpy(), np.asarray(images[[3, 1, 4]], np.float32))
    run = load_batch(images, np.array([7, 8]), None, seed=1, epoch=2)
    np.testing.assert_array_equal(run.images[:, 0].numpy(), np.asarray(images[7:9], np.float32))
    assert run.draw is None and torch.equal(run.on(torch.device("cpu")), run.images)
    # Augmentation depends on the epoch (new views each epoch) and really changes the image.
    view = direct[0].on(torch.device("cpu"), aug)
    other = load_batch(images, batches[0], aug, seed=1, epoch=3).on(torch.device("cpu"), aug)
    assert not torch.equal(other, view) and not torch.equal(view, direct[0].images)


def test_loader_settings_read_ahead_only_off_cpu() -> None:
    from pipeline.loader import loader_settings

    cpu = loader_settings(torch.device("cpu"))
    assert cpu.ahead == 0 and not cpu.pin
    gpu = loader_settings(torch.device("cuda", 0))  # a device object: no GPU needed
    assert gpu.ahead >= 2 and gpu.workers >= 2 and gpu.pin
    assert not loader_settings(torch.device("mps")).pin


# ---------------------------------------------------------------------------------------------
# Trainer fixes (issue 9): eval-mode train metrics, a finite monitor, BatchNorm policy


def test_train_metrics_are_eval_mode_on_unaugmented_images() -> None:
    ds = _dataset()
    params = _params(train={"epochs": 1, "augment_on_the_fly": True})
    tr, va = ds.rows("train"), ds.rows("val")
    res = train("finetune", ds, params, tr, va, None, None)
    (entry,) = res.history
    # The kept model is the only epoch's: its eval-mode predictions on the raw train images give
    # exactly the logged train AUROC; the running value (augmented, train mode) is logged apart.
    y = np.asarray(ds.labels())[tr]
    assert entry["train_auroc"] == pytest.approx(auroc(y, predict_proba(res.model, ds.images, tr, 8), 1), abs=1e-12)
    assert "train_auroc_running" in entry and entry["train_loss_running"] != entry["train_loss"]


def test_monitor_is_finite_when_val_lacks_a_class() -> None:
    # Three classes, val holds two: val AUROC (OvR macro) is undefined, so val loss is followed.
    assert choose_monitor("x", np.array([0, 1, 1, 0]), 3) == "val_loss"
    assert choose_monitor("x", np.array([0, 1, 2]), 3) == "val_auroc"
    assert choose_monitor("x", np.array([0, 1]), 2) == "val_auroc"
    # A diverged epoch (NaN) never replaces a finite best; a finite one replaces a NaN first epoch.
    model = torch.nn.Linear(1, 1)
    st = {"best_state": None, "best_score": -np.inf, "best_epoch": 0, "bad_epochs": 0}
    update_best(st, model, {"epoch": 1, "val_auroc": float("nan")}, "val_auroc")
    assert st["best_epoch"] == 1
    update_best(st, model, {"epoch": 2, "val_auroc": 0.6}, "val_auroc")
    assert st["best_epoch"] == 2
    update_best(st, model, {"epoch": 3, "val_auroc": float("nan")}, "val_auroc")
    assert st["best_epoch"] == 2 and st["bad_epochs"] == 1


def test_the_kept_epoch_has_fitted_its_training_data() -> None:
    # The demo's scratch run: val AUROC peaks by chance at epoch 1, before anything is learnt.
    model = torch.nn.Linear(1, 1)
    history = [
        {"epoch": 1, "train_auroc": 0.50, "val_auroc": 0.72},
        {"epoch": 2, "train_auroc": 0.58, "val_auroc": 0.42},
        {"epoch": 3, "train_auroc": 0.77, "val_auroc": 0.50},
        {"epoch": 4, "train_auroc": 0.88, "val_auroc": 0.60},
        {"epoch": 5, "train_auroc": 0.84, "val_auroc": 0.36},
        {"epoch": 6, "train_auroc": float("nan"), "val_auroc": 0.59},  # undefined: nothing to check
    ]
    kept = {}
    for floor in (None, 0.7):
        st = {"best_state": None, "best_score": -np.inf, "best_epoch": 0, "bad_epochs": 0}
        for entry in history:
            update_best(st, model, entry, "val_auroc", floor)
        kept[floor] = (st["best_epoch"], st["bad_epochs"])
    assert kept[None] == (1, 5)  # the best val epoch, whatever it fitted
    assert kept[0.7] == (4, 2)  # epoch 3 is the first fitted one (reset), epoch 4 beats it on val
    # No epoch fitted: the best of all, as without the floor.
    st = {"best_state": None, "best_score": -np.inf, "best_epoch": 0, "bad_epochs": 0}
    for entry in history[:2]:
        update_best(st, model, entry, "val_auroc", 0.7)
    assert st["best_epoch"] == 1 and st["best_fitted"] is False


@pytest.mark.parametrize("bn, moved", [("freeze", False), ("adapt", True)])
def test_batchnorm_policy(bn: str, moved: bool) -> None:
    params = _params(finetune={"bn": bn})
    model = create_backbone(params.backbone, 2)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    set_train_mode(model, set_trainable(plan_groups(model, "finetune", params), False), bn)
    with torch.no_grad():
        model(torch.rand(4, 1, SIZE, SIZE))
    after = model.state_dict()
    changed = any(not torch.equal(after[k], v) for k, v in stats.items())
    assert changed is moved
    # Affine BatchNorm weights still train under `freeze`: they are in the plan.
    assert all(p.requires_grad for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())


def test_fingerprint_covers_code_libraries_and_device() -> None:
    from pipeline.checkpoint import code_files, fingerprint, library_versions

    names = {str(p) for p in code_files()}
    for module in ("pipeline/training.py", "pipeline/param_groups.py", "pipeline/strategies.py", "pipeline/augment.py"):
        assert module in names
    assert {"torch", "numpy", "monai"} <= set(library_versions())
    ds = _dataset()
    labels = np.asarray(ds.labels())
    args = (ds.images, labels, ds.rows("train"), ds.rows("val"))
    cpu = fingerprint({"a": 1}, torch.device("cpu"), *args)
    assert cpu == fingerprint({"a": 1}, torch.device("cpu"), *args)
    assert cpu != fingerprint({"a": 1}, torch.device("meta"), *args)
    assert cpu != fingerprint({"a": 2}, torch.device("cpu"), *args)
