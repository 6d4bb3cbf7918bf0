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
from pipeline.params import REPO_ROOT, Backbone, Params, validate_params
from pipeline.predictions import read_predictions
from pipeline.store import write_store
from pipeline.training import (
    auroc,
    load_trained,
    make_optimizer,
    make_scheduler,
    plan_groups,
    predict_proba,
    run_training_stage,
    train,
)

SIZE = 32


def _params(**sections) -> Params:
    """The repo's params.yaml with tiny-run overrides: ``train={"epochs": 1}`` etc."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"].update(batch_size=8, num_threads=0, augment_on_the_fly=False, device="cpu")
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
# Learning-rate plan


def test_2_4_6_rule_puts_every_parameter_in_one_group_at_its_rate() -> None:
    params = _params()  # lr_powers [6, 4, 2], lr_boundaries [3]
    model = create_backbone(params.backbone, num_classes=2)
    opt = make_optimizer(plan_groups(model, "finetune", params), params)
    expected = {"stem": 1e-6, "stage1": 1e-6, "stage2": 1e-6, "head": 1e-2}
    seen: dict[int, str] = {}
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(expected.get(g["name"], 1e-4), rel=1e-12), g["name"]
        for p in g["params"]:
            assert id(p) not in seen, f"{g['name']} and {seen[id(p)]} share a parameter"
            seen[id(p)] = g["name"]
    assert set(seen) == {id(p) for p in model.parameters()}
    head_ids = {id(p) for p in model.head.parameters()}
    assert {seen[i] for i in head_ids} == {"head"}


def test_even_split_unfreeze_and_scratch_plans() -> None:
    model = create_backbone(Backbone(name="efficientnet_lite0"), num_classes=2)
    tiers = {"lr_powers": [5, 4, 3, 2], "lr_boundaries": None}
    even = plan_groups(model, "finetune", _params(finetune=tiers))
    # 9 backbone groups in 3 tiers of 3, bottom to top, then the head.
    assert [g.lr for g in even] == pytest.approx([1e-5] * 3 + [1e-4] * 3 + [1e-3] * 3 + [1e-2])
    last2 = plan_groups(model, "finetune", _params(finetune={"unfreeze_last_n": 2}))
    assert [g.name for g in last2 if g.trainable] == ["stage7", "head_conv", "head"]
    opt = make_optimizer(last2, _params())
    assert [g["name"] for g in opt.param_groups] == ["stage7", "head_conv", "head"]
    scratch = plan_groups(model, "scratch", _params(scratch={"lr": 0.05}))
    assert all(g.trainable and g.lr == 0.05 for g in scratch)
    with pytest.raises(ValueError, match="lr_boundaries"):
        plan_groups(model, "finetune", _params(finetune={"lr_boundaries": [9]}))
    with pytest.raises(ValueError, match="unfreeze_last_n"):
        plan_groups(model, "finetune", _params(finetune={"unfreeze_last_n": 10}))


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules_scale_each_group_from_its_own_rate(schedule: str) -> None:
    params = _params(train={"schedule": schedule})
    model = create_backbone(params.backbone, num_classes=2)
    opt = make_optimizer(plan_groups(model, "finetune", params), params)
    sched = make_scheduler(opt, schedule, total_steps=20)
    trace = []
    for _ in range(20):
        trace.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    trace = np.array(trace)
    key = "max_lr" if schedule == "onecycle" else "initial_lr"
    configured = np.array([g[key] for g in opt.param_groups])
    # Every group follows the same shape: ratios between groups stay those configured.
    ratios = np.tile(configured / configured[-1], (20, 1))
    np.testing.assert_allclose(trace / trace[:, -1:], ratios, rtol=1e-9)
    peak = trace.max(axis=0)
    np.testing.assert_allclose(peak, configured, rtol=1e-3)
    if schedule == "cosine":
        assert trace[-1, -1] < 0.01 * configured[-1]
    if schedule == "constant":
        assert (trace == configured).all()


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
            {"train": {"epochs": 1}, "data": {"classes": ["a", "b", "c"], "positive_class": None}},
        ),
    ],
)
def test_one_epoch_stage_writes_every_output(tmp_path, kind, classes, extra) -> None:
    ds = _dataset(classes=classes)
    _write_project(tmp_path, ds)
    params = _params(**extra)
    result = run_training_stage(kind, params, root=tmp_path)

    preds = read_predictions(tmp_path / "predictions" / f"{kind}.csv", classes)
    assert preds["row"].tolist() == list(range(len(ds.manifest)))  # every split, every row
    assert set(preds["split"]) == {"train", "val", "test", "external"}
    probs = preds[[f"prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

    model = load_trained(tmp_path / "models" / kind / "best.pt")
    assert model.head.out_features == len(classes) and model.classes == classes
    np.testing.assert_allclose(predict_proba(model, ds.images, None, 8), probs, atol=2e-6)

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
    assert [g["name"] for g in card["layer_groups"]][-1] == "head"
    (entry,) = log["history"]
    keys = {"epoch", "train_loss", "train_auroc", "val_loss", "val_auroc", "lr", "seconds"}
    assert set(entry) >= keys
    assert set(entry["lr"]) == {g["name"] for g in card["layer_groups"]}
    live = tmp_path / "reports" / "train" / kind
    assert (live / "metrics.json").exists()
    for name in ("train/loss.tsv", "val/auroc.tsv", "lr/head.tsv"):
        assert (live / "plots" / "metrics" / name).exists(), name
    assert (tmp_path / "models" / kind / "ckpt" / "checkpoint.pt").exists()
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


def test_loader_thread_gives_the_same_batches_in_order() -> None:
    from pipeline.augment import make_augmentation
    from pipeline.training import iter_batches, load_batch

    images = _dataset(n=12).images
    batches = [np.array([3, 1, 4]), np.array([0, 5]), np.array([9, 2, 6])]
    cfg = _params().augment
    direct = [load_batch(images, b, make_augmentation(cfg), seed=1, epoch=2) for b in batches]
    for ahead in (0, 2):
        got = list(iter_batches(images, batches, make_augmentation(cfg), 1, 2, ahead=ahead))
        assert [r.tolist() for r, _ in got] == [b.tolist() for b in batches]
        assert all(np.array_equal(x, d) for (_, x), d in zip(got, direct, strict=False))
    # Augmentation depends on the epoch (new views each epoch) and really changes the image.
    other = load_batch(images, batches[0], make_augmentation(cfg), seed=1, epoch=3)
    assert not np.array_equal(other, direct[0])
    assert not np.array_equal(direct[0], np.asarray(images[batches[0]], np.float32))
