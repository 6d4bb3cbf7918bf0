"""One trainer for the fine-tune and scratch paths.

Both paths run the same loop on the same network (``pipeline.backbones``), the same data,
augmentation, budget (``train.*``) and early stopping; they differ only in where the weights start
and how learning rates are assigned:

* ``finetune``: ImageNet weights, one optimiser group per layer group with the tiered rates of
  ``finetune.lr_powers`` (the 2:4:6 rule by default: 1e-6 at the bottom, 1e-4 for the other
  pretrained groups, 1e-2 for the new head), optional ``unfreeze_last_n`` and head-only
  ``warmup_epochs``;
* ``scratch``: random initialisation, one rate (``scratch.lr``) for every group.

Reproducibility: every random draw derives from (seed, epoch[, row]) -- the epoch's shuffling,
each image's augmentation, dropout -- rather than from a stream that runs across epochs, so an
interrupted run that resumes from its checkpoint retraces the uninterrupted one exactly (tested).
A checkpoint is written after every epoch with a fingerprint of the params, code and data that
produced it; a rerun resumes only from a checkpoint with the same fingerprint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.backbones import (
    ClassifierModel,
    create_backbone,
    images_to_tensor,
    select_device,
    set_num_threads,
)
from pipeline.common import get_logger, seed_everything
from pipeline.params import Backbone, Params

log = get_logger(__name__)

Kind = Literal["finetune", "scratch"]
KINDS: tuple[str, ...] = ("finetune", "scratch")
CHECKPOINT_NAME = "checkpoint.pt"
TRAINED_FORMAT = "cxr-transfer/trained-model/1"
_CODE_FILES = ("training.py", "backbones.py", "augment.py")
# NHWC weights/activations while training on CPU/CUDA (oneDNN/cuDNN run it faster; measured in
# bench/models.py, see BENCHMARKS.md).
TRAIN_CHANNELS_LAST = True


# ---------------------------------------------------------------------------------------------
# Layer-group learning rates


@dataclass
class GroupPlan:
    """One layer group's place in the optimiser: its configured rate and whether it trains."""

    name: str
    params: list[torch.nn.Parameter]
    lr: float
    trainable: bool
    is_head: bool

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)


def plan_groups(model: ClassifierModel, kind: str, params: Params) -> list[GroupPlan]:
    """Assign every layer group its learning rate and trainability.

    finetune: backbone groups are split into ``len(lr_powers) - 1`` tiers, bottom to top, at the
    ``lr_boundaries`` indices (or evenly); the head gets the last power. ``unfreeze_last_n``
    freezes all but the last n backbone groups. scratch: every group at ``scratch.lr``.
    """
    groups = model.layer_groups
    backbone, head = groups[:-1], groups[-1]
    if head[0] != "head":
        raise AssertionError("the last layer group must be the new head")
    n_b = len(backbone)
    if kind == "scratch":
        lr = float(params.scratch.lr)
        return [GroupPlan(n, ps, lr, True, n == "head") for n, ps in groups]
    if kind != "finetune":
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    ft = params.finetune
    rates = ft.learning_rates
    tier_rates, head_rate = rates[:-1], rates[-1]
    n_tiers = len(tier_rates)
    if ft.lr_boundaries is None:
        # Even split: np.array_split gives the bottom tiers the extra group when uneven.
        tier_of = np.concatenate(
            [np.full(len(c), t) for t, c in enumerate(np.array_split(np.arange(n_b), n_tiers))]
        ).astype(int)
    else:
        bounds = list(ft.lr_boundaries)
        if bounds and bounds[-1] >= n_b:
            names = [n for n, _ in backbone]
            raise ValueError(
                f"finetune.lr_boundaries = {bounds}: backbone {model.backbone_name} has {n_b} "
                f"layer groups ({', '.join(names)}), so boundaries must be < {n_b}"
            )
        tier_of = np.array([sum(b <= i for b in bounds) for i in range(n_b)], dtype=int)
    n_train = n_b if ft.unfreeze_last_n is None else ft.unfreeze_last_n
    if n_train > n_b:
        raise ValueError(
            f"finetune.unfreeze_last_n = {ft.unfreeze_last_n} but backbone {model.backbone_name} "
            f"has only {n_b} layer groups"
        )
    plan = [
        GroupPlan(name, ps, float(tier_rates[tier_of[i]]), i >= n_b - n_train, False)
        for i, (name, ps) in enumerate(backbone)
    ]
    plan.append(GroupPlan("head", head[1], float(head_rate), True, True))
    return plan


def make_optimizer(plan: list[GroupPlan], params: Params) -> torch.optim.Optimizer:
    """One optimiser group per trainable layer group, named, at its configured rate."""
    tr = params.train
    groups: list[dict[str, Any]] = [{"params": g.params, "lr": g.lr, "name": g.name} for g in plan if g.trainable]
    if tr.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=groups[-1]["lr"],
            momentum=tr.momentum,
            weight_decay=tr.weight_decay,
            nesterov=tr.momentum > 0,
        )
    if tr.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=groups[-1]["lr"], weight_decay=tr.weight_decay)
    raise ValueError(f"train.optimizer = {tr.optimizer!r} is not supported")


def _cosine(total: int):
    def f(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    return f


def _constant(step: int) -> float:
    return 1.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule over the whole planned run (the same length when resuming)."""
    total_steps = max(1, total_steps)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(total_steps))
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)
    if schedule == "onecycle":
        # Each group's configured rate is its peak (max_lr per group). Momentum is left at
        # train.momentum (cycle_momentum=False) so the optimiser params mean what they say.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            cycle_momentum=False,
        )
    raise ValueError(f"train.schedule = {schedule!r} is not supported")


# ---------------------------------------------------------------------------------------------
# Metrics


def auroc(y: np.ndarray, probs: np.ndarray, positive_index: int) -> float:
    """ROC AUC: positive class vs rest for two classes, one-vs-rest macro for more.

    NaN when it is undefined (a split with a single class): there is no score to report.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    n_classes = probs.shape[1]
    if len(y) == 0 or len(np.unique(y)) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y == positive_index, probs[:, positive_index]))
    if len(np.unique(y)) < n_classes:
        return float("nan")  # OvR macro needs every class present
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


# ---------------------------------------------------------------------------------------------
# Data


def _aug_seed(seed: int, epoch: int, rows: np.ndarray) -> int:
    # Tagged entropy keeps on-the-fly views distinct from the materialised copies of
    # pipeline.augment.view_seed(seed, row, copy), while fixed by (seed, epoch, the batch's rows
    # in order); the batch order is itself fixed by (seed, epoch), so a resumed run matches.
    entropy = [int(seed), int(epoch), 0x7A11, *(int(r) for r in rows)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 0xE90C]).generate_state(1)[0])


def load_batch(images: np.ndarray, rows: np.ndarray, transform: Any, seed: int, epoch: int) -> np.ndarray:
    """(B, S, S) float32 images of ``rows``, augmented when ``transform`` is given."""
    batch = np.asarray(images[np.asarray(rows)], dtype=np.float32)
    if transform is not None:
        from pipeline.augment import augment_batch

        batch = augment_batch(transform, batch, _aug_seed(seed, epoch, np.asarray(rows)))
    return batch


def _single_thread() -> None:
    # torch's intra-op thread count is per calling thread: the loader thread runs its small
    # per-image ops on one core and leaves the model's thread pool alone.
    torch.set_num_threads(1)


def iter_batches(
    images: np.ndarray,
    batches: list[np.ndarray],
    transform: Any,
    seed: int,
    epoch: int,
    ahead: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, images)`` per batch, read and augmented by one loader thread.

    The loader thread runs torch with one intra-op thread: MONAI's small per-image ops gain
    nothing from more, and on a loaded machine a multi-threaded OpenMP region per tiny op is
    many times slower (measured: 2.5 ms vs 24 ms per image with two busy cores). ``ahead`` > 0
    prepares that many batches while the model steps (useful when the model runs on a GPU and
    the CPU is free); ``ahead`` = 0 waits for each batch, so on CPU the loader never competes
    with the model for cores. Each batch is a pure function of (seed, epoch, rows): the thread
    changes timing only, never the data. Only the loader thread uses ``transform``.
    """
    pending: deque = deque()
    todo = iter(batches)
    with ThreadPoolExecutor(max_workers=1, initializer=_single_thread) as pool:

        def submit() -> None:
            rows = next(todo, None)
            if rows is not None:
                job = pool.submit(load_batch, images, rows, transform, seed, epoch)
                pending.append((rows, job))

        for _ in range(max(ahead, 1)):
            submit()
        while pending:
            rows, job = pending.popleft()
            batch = job.result()
            if ahead > 0:
                submit()
            yield rows, batch
            if ahead == 0:
                submit()


def loader_ahead(device: torch.device) -> int:
    """Batches to prepare in advance: none on CPU (the cores are the model's), two otherwise."""
    return 0 if device.type == "cpu" else 2


def _batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # Near-equal batches of at most batch_size: never a trailing batch of one image (BatchNorm in
    # train mode cannot normalise a single 1x1 map) and no image dropped.
    n_batches = max(1, math.ceil(len(rows) / batch_size))
    return np.array_split(rows, n_batches)


def _autocast(device: torch.device):
    # bf16 autocast on CUDA only: CPU bf16 kernels are slower than fp32 on most CPUs, and MPS
    # support is partial.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.inference_mode()
def predict_logits(
    model: ClassifierModel,
    images: np.ndarray,
    rows: np.ndarray | None,
    batch_size: int,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Eval-mode logits ``(n, n_classes)`` float32 of ``images[rows]`` (all rows when None)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    was_training = model.training
    model.eval()
    out = np.empty((len(rows), model.num_classes), dtype=np.float32)
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x = images_to_tensor(images[chunk], device)
            with _autocast(device):
                out[start : start + len(chunk)] = model(x).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def predict_proba(
    model: ClassifierModel,
    images: np.ndarray,
    rows: np.ndarray | None,
    batch_size: int,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Softmax class probabilities ``(n, n_classes)`` float64 of ``images[rows]`` in eval mode."""
    logits = predict_logits(model, images, rows, batch_size, device).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _hash_update_rows(h: Any, images: np.ndarray, rows: np.ndarray, chunk: int = 256) -> None:
    for start in range(0, len(rows), chunk):
        h.update(np.ascontiguousarray(images[rows[start : start + chunk]]).tobytes())


def fingerprint(
    kind: str,
    params: Params,
    epochs: int,
    seed: int,
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    classes: tuple[str, ...],
) -> str:
    """sha256 of everything that determines a run's weights: params, code, data.

    Excludes what does not change the result's meaning (device, thread count): a run may resume
    on another machine.
    """
    h = hashlib.sha256()
    cfg = {
        "kind": kind,
        "epochs": epochs,
        "seed": seed,
        "classes": list(classes),
        "positive_class": params.data.positive_class,
        "backbone": params.backbone.model_dump(),
        "train": params.train.model_dump(exclude={"device", "num_threads"}),
        "method": (params.finetune if kind == "finetune" else params.scratch).model_dump(),
        "augment": params.augment.model_dump() if params.train.augment_on_the_fly else None,
        "torch": torch.__version__,
    }
    h.update(json.dumps(cfg, sort_keys=True, default=list).encode())
    here = Path(__file__).resolve().parent
    for name in _CODE_FILES:
        p = here / name
        h.update(p.read_bytes() if p.exists() else b"")
    for arr in (train_rows, val_rows, labels[train_rows], labels[val_rows]):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    h.update(str(images.shape[1:]).encode())
    _hash_update_rows(h, images, np.concatenate([train_rows, val_rows]))
    return h.hexdigest()


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The trainer


@dataclass
class TrainResult:
    """A finished (or test-interrupted) run: ``model`` holds the best epoch's weights."""

    model: ClassifierModel
    history: list[dict]
    best_epoch: int
    model_card: dict
    monitor: str
    stopped_early: bool
    resumed_from_epoch: int | None
    fingerprint: str
    final_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def log_record(self) -> dict:
        """The reports/train/<kind>.json document."""
        return {
            "model_card": self.model_card,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
        }


def _set_trainable(model: ClassifierModel, plan: list[GroupPlan], warmup: bool) -> set[int]:
    """requires_grad per group (frozen groups and, in warmup, the whole backbone get none).

    Returns the ids of the frozen parameters.
    """
    frozen: set[int] = set()
    for g in plan:
        active = g.trainable and (g.is_head or not warmup)
        for p in g.params:
            p.requires_grad_(active)
            if not active:
                frozen.add(id(p))
    return frozen


def _train_mode(model: ClassifierModel, frozen: set[int]) -> None:
    """Train mode, except modules whose parameters are all frozen: they stay in eval mode so
    their BatchNorm statistics (and drop-connect) stay as loaded, i.e. truly frozen."""
    model.train()
    for m in model.modules():
        ps = list(m.parameters())
        if ps and all(id(p) in frozen for p in ps):
            m.eval()


def _open_live(live_dir: Path | None, history: list[dict]):
    if live_dir is None:
        return None
    from dvclive import Live

    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    for entry in history:  # a resumed run: the dvclive dir shows the whole run
        _log_live(live, entry)
    return live


def _log_live(live, entry: dict) -> None:
    for key, name in (
        ("train_loss", "train/loss"),
        ("train_auroc", "train/auroc"),
        ("val_loss", "val/loss"),
        ("val_auroc", "val/auroc"),
    ):
        v = entry.get(key)
        if v is not None and math.isfinite(v):
            live.log_metric(name, float(v))
    for g, lr in entry["lr"].items():
        live.log_metric(f"lr/{g}", float(lr))
    live.next_step()


def _fmt_lr(lr: float) -> str:
    return f"{lr:.0e}" if lr > 0 else "0"


def _describe_training(kind: str, plan: list[GroupPlan], params: Params, epochs: int) -> str:
    tr = params.train
    how = f"{tr.optimizer}, {tr.schedule} schedule, up to {epochs} epochs, batch {tr.batch_size}"
    if kind == "scratch":
        return f"whole network from random initialisation, every layer group at lr {_fmt_lr(plan[0].lr)} ({how})"
    tiers: list[tuple[float, list[str]]] = []
    for g in plan:
        if g.is_head:
            continue
        if tiers and tiers[-1][0] == g.lr:
            tiers[-1][1].append(g.name)
        else:
            tiers.append((g.lr, [g.name]))
    parts = [f"{ns[0]}..{ns[-1] if len(ns) > 1 else ns[0]} at lr {_fmt_lr(lr)}" for lr, ns in tiers]
    text = (
        "fine-tuned from ImageNet weights with per-layer-group learning rates: "
        + "; ".join(parts)
        + f"; new head at lr {_fmt_lr(plan[-1].lr)} ({how})"
    )
    frozen = [g.name for g in plan if not g.trainable]
    if frozen:
        text += f"; frozen (not trained): {', '.join(frozen)}"
    if params.finetune.warmup_epochs:
        text += f"; first {params.finetune.warmup_epochs} epoch(s) train the head only"
    return text


def _choose_monitor(kind: str, y_val: np.ndarray) -> str:
    """What early stopping and the best checkpoint follow: val AUROC when it is defined."""
    if len(y_val) and len(np.unique(y_val)) >= 2:
        return "val_auroc"
    if len(y_val):
        log.warning("%s: the val split has a single class; early stopping on val loss", kind)
        return "val_loss"
    log.warning("%s: no val rows: no early stopping, the last epoch is kept", kind)
    return "none"


def _fresh_state() -> dict[str, Any]:
    """The loop state that a checkpoint carries besides model/optimiser/scheduler."""
    return {
        "epoch": 0,
        "history": [],
        "best_state": None,
        "best_epoch": 0,
        "best_score": -math.inf,
        "bad_epochs": 0,
        "finished": False,
        "stopped_early": False,
        "wall_time_s": 0.0,
    }


def _train_epoch(
    model: ClassifierModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    transform: Any,
    seed: int,
    epoch: int,
    device: torch.device,
) -> tuple[float, np.ndarray, np.ndarray]:
    """One pass over ``order``; returns mean loss and the train-mode probabilities it saw."""
    total, probs, ys = 0.0, [], []
    batches = _batches(order, batch_size)
    ahead = loader_ahead(device)
    for rows, batch in iter_batches(images, batches, transform, seed, epoch, ahead):
        x = images_to_tensor(batch, device)
        y = torch.from_numpy(labels[rows]).to(device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(rows)
        probs.append(torch.softmax(logits.detach().float(), 1).cpu().numpy())
        ys.append(labels[rows])
    return total / len(order), np.concatenate(probs), np.concatenate(ys)


def _validate(
    model: ClassifierModel,
    images: np.ndarray,
    rows: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    device: torch.device,
    positive_index: int,
) -> tuple[float, float]:
    """Eval-mode cross-entropy and AUROC on ``rows`` (NaN, NaN without rows)."""
    if len(rows) == 0:
        return float("nan"), float("nan")
    logits = torch.from_numpy(predict_logits(model, images, rows, batch_size, device))
    loss = float(F.cross_entropy(logits, torch.from_numpy(y)).item())
    return loss, auroc(y, torch.softmax(logits, 1).numpy(), positive_index)


def _update_best(st: dict[str, Any], model: ClassifierModel, entry: dict, monitor: str) -> None:
    """Keep the best epoch's weights; count epochs without improvement."""
    epoch = entry["epoch"]
    score = {"val_auroc": entry["val_auroc"], "val_loss": -entry["val_loss"], "none": float(epoch)}[monitor]
    if st["best_state"] is None or (math.isfinite(score) and score > st["best_score"]):
        st["best_score"], st["best_epoch"], st["bad_epochs"] = score, epoch, 0
        st["best_state"] = _cpu_state(model)
    else:
        st["bad_epochs"] += 1


def train(
    kind: Kind,
    dataset: Any,
    params: Params,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    out_dir: Path | None,
    live_dir: Path | None,
    epochs: int | None = None,
    seed: int | None = None,
    *,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train ``kind`` on ``train_rows``, early-stopping on ``val_rows``; return the best model.

    ``dataset`` needs ``images`` (N, S, S) in [0, 1], ``classes`` and ``labels()`` (class index
    per row): :class:`pipeline.dataset.Dataset`. ``out_dir`` holds ``checkpoint.pt`` (written
    every epoch, resumed when its fingerprint matches); ``live_dir`` is the dvclive directory;
    either may be None. ``epochs``/``seed`` override ``train.epochs``/``seed`` (learning curves).
    ``stop_after_epoch`` ends the call after that epoch as an interruption would (the schedule
    keeps its full length), for testing resume.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    t_call = time.perf_counter()
    tr = params.train
    epochs = tr.epochs if epochs is None else int(epochs)
    seed = params.seed if seed is None else int(seed)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray(val_rows, dtype=np.int64)
    if len(train_rows) < 2:
        raise ValueError(f"{kind}: need at least 2 training images, got {len(train_rows)}")
    if np.intersect1d(train_rows, val_rows).size:
        raise ValueError(f"{kind}: train and val rows overlap")
    images = dataset.images
    labels = np.asarray(dataset.labels(), dtype=np.int64)
    classes = tuple(dataset.classes)
    positive_index = params.data.positive_index
    y_val = labels[val_rows]

    threads = set_num_threads(tr.num_threads)
    device = select_device(tr.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # reproducible kernel choice

    seed_everything(seed)
    model = create_backbone(params.backbone, len(classes), pretrained=(kind == "finetune"))
    plan = plan_groups(model, kind, params)
    model = model.to(device).use_channels_last(TRAIN_CHANNELS_LAST and device.type != "mps")
    optimizer = make_optimizer(plan, params)
    batches_per_epoch = len(_batches(train_rows, tr.batch_size))
    scheduler = make_scheduler(optimizer, tr.schedule, epochs * batches_per_epoch)
    monitor = _choose_monitor(kind, y_val)

    fp = fingerprint(kind, params, epochs, seed, images, labels, train_rows, val_rows, classes)
    st = _fresh_state()
    resumed_from: int | None = None
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("fingerprint") == fp:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["torch_rng"])
            st = {k: ckpt[k] for k in st}
            resumed_from = int(st["epoch"])
            log.info(
                "%s: resuming from %s at epoch %d/%d (same params, code and data)",
                kind,
                ckpt_path,
                resumed_from,
                epochs,
            )
        else:
            log.info("%s: %s comes from other params, code or data: starting fresh", kind, ckpt_path)
        del ckpt

    transform = None
    if tr.augment_on_the_fly:
        from pipeline.augment import make_augmentation

        transform = make_augmentation(params.augment)
    live = _open_live(live_dir, st["history"])
    warmup_epochs = params.finetune.warmup_epochs if kind == "finetune" else 0

    t_run, wall_before = time.perf_counter(), float(st["wall_time_s"])
    epoch = int(st["epoch"])
    while not st["finished"] and epoch < epochs:
        epoch += 1
        t0 = time.perf_counter()
        # Fixed per-epoch seed: dropout/drop-connect draws do not depend on earlier epochs.
        torch.manual_seed(_epoch_seed(seed, epoch))
        warm = epoch <= warmup_epochs
        _train_mode(model, _set_trainable(model, plan, warm))
        active = {g["name"]: g["lr"] for g in optimizer.param_groups}
        lrs = {g.name: active.get(g.name, 0.0) if g.is_head or not warm else 0.0 for g in plan}
        order = np.random.default_rng(_epoch_seed(seed, epoch)).permutation(train_rows)
        train_loss, train_probs, y_seen = _train_epoch(
            model,
            optimizer,
            scheduler,
            images,
            labels,
            order,
            tr.batch_size,
            transform,
            seed,
            epoch,
            device,
        )
        val_loss, val_auroc = _validate(model, images, val_rows, y_val, tr.batch_size, device, positive_index)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_auroc": auroc(y_seen, train_probs, positive_index),
            "val_loss": val_loss,
            "val_auroc": val_auroc,
            "lr": lrs,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        st["history"].append(entry)
        _update_best(st, model, entry, monitor)
        patience = tr.early_stopping_patience
        if monitor != "none" and patience is not None and st["bad_epochs"] >= patience:
            st["stopped_early"] = epoch < epochs
        st["epoch"] = epoch
        st["finished"] = st["stopped_early"] or epoch >= epochs
        st["wall_time_s"] = wall_before + (time.perf_counter() - t_run)
        log.info(
            "%s epoch %d/%d: train loss %.4f auroc %.3f | val loss %.4f auroc %.3f | %.1f s",
            kind,
            epoch,
            epochs,
            train_loss,
            entry["train_auroc"],
            val_loss,
            val_auroc,
            entry["seconds"],
        )
        if st["stopped_early"]:
            log.info("%s: early stop after epoch %d (best epoch %d)", kind, epoch, st["best_epoch"])
        if ckpt_path is not None:
            _save_atomic(
                {
                    "fingerprint": fp,
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    **st,
                },
                ckpt_path,
            )
        if live is not None:
            _log_live(live, entry)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    if live is not None:
        live.end()

    final_state = _cpu_state(model)
    model.load_state_dict(st["best_state"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    card = {
        "path": kind,
        "backbone": model.backbone_name,
        "weights_source": model.weights_source,
        "weights_sha256": model.weights_sha256,
        "trained": _describe_training(kind, plan, params, epochs),
        "layer_groups": [{"name": g.name, "lr": g.lr, "n_params": g.n_params, "trainable": g.trainable} for g in plan],
        "epochs_run": int(st["epoch"]),
        "best_epoch": int(st["best_epoch"]),
        "monitor": monitor,
        "device": str(device),
        "num_threads": threads,
        "wall_time_s": round(float(st["wall_time_s"]), 2),
        "image_size": int(images.shape[-1]),
        "seed": seed,
        "grey_to_rgb": params.backbone.grey_to_rgb,
        "preprocessing": model.preprocessing.description,
    }
    log.info(
        "%s: done in %.1f s (this call), best epoch %d",
        kind,
        time.perf_counter() - t_call,
        st["best_epoch"],
    )
    return TrainResult(
        model=model,
        history=copy.deepcopy(st["history"]),
        best_epoch=int(st["best_epoch"]),
        model_card=card,
        monitor=monitor,
        stopped_early=bool(st["stopped_early"]),
        resumed_from_epoch=resumed_from,
        fingerprint=fp,
        final_state=final_state,
    )


# ---------------------------------------------------------------------------------------------
# Saved models (models/<kind>/best.pt)


def save_trained(path: str | Path, result: TrainResult, classes: tuple[str, ...], backbone: Backbone) -> Path:
    """Write the best weights with what :func:`load_trained` needs to rebuild the network."""
    model = result.model
    path = Path(path)
    _save_atomic(
        {
            "format": TRAINED_FORMAT,
            "backbone": backbone.model_dump(),
            "num_classes": model.num_classes,
            "classes": list(classes),
            "image_size": result.model_card["image_size"],
            "weights_source": model.weights_source,
            "weights_sha256": model.weights_sha256,
            "model_card": result.model_card,
            "state_dict": _cpu_state(model),
        },
        path,
    )
    return path


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> ClassifierModel:
    """Rebuild a model saved by :func:`save_trained`, in eval mode on ``device``.

    The architecture is rebuilt without reading any pretrained file (the saved state_dict holds
    every tensor) and the state loads strictly. ``model.classes`` and ``model.model_card`` are
    set from the file; ``model.gradcam_layer`` is the module to hook for Grad-CAM.
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != TRAINED_FORMAT:
        raise ValueError(f"{path}: not a cxr-transfer trained model (format {blob.get('format')!r})")
    with torch.random.fork_rng(devices=[]):  # building must not disturb the caller's RNG
        model = create_backbone(Backbone(**blob["backbone"]), blob["num_classes"], pretrained=False)
    model.load_state_dict(blob["state_dict"], strict=True)
    model.weights_source = blob["weights_source"]
    model.weights_sha256 = blob["weights_sha256"]
    model.classes = tuple(blob["classes"])
    model.model_card = blob["model_card"]
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# The finetune / scratch stages


def run_training_stage(kind: Kind, params: Params, root: Path | None = None) -> TrainResult:
    """What ``stages/finetune.py`` and ``stages/scratch.py`` do, rooted at ``root``.

    Trains on the train split (val split for early stopping), predicts every manifest row (train,
    val, test, external) with the best model and writes predictions/<kind>.csv,
    models/<kind>/best.pt, reports/train/<kind>.json and the dvclive dir reports/train/<kind>/.
    The resumable checkpoint lives in models/<kind>/ckpt/ (not a DVC output, so a rerun after an
    interruption finds it).
    """
    from pipeline import paths
    from pipeline.contracts import TrainLog, write_contract
    from pipeline.dataset import load_dataset
    from pipeline.errors import StageError
    from pipeline.params import REPO_ROOT
    from pipeline.predictions import write_predictions

    root = REPO_ROOT if root is None else Path(root)
    dataset = load_dataset(params, root=root)
    train_rows, val_rows = dataset.rows("train"), dataset.rows("val")
    if len(train_rows) == 0:
        raise StageError("the train split is empty; check the split stage")
    model_dir = root / paths.MODELS / kind
    result = train(
        kind,
        dataset,
        params,
        train_rows,
        val_rows,
        out_dir=model_dir / "ckpt",
        live_dir=root / paths.TRAIN_LOGS / kind,
    )
    probs = predict_proba(result.model, dataset.images, None, params.train.batch_size)
    write_predictions(root / paths.predictions_csv(kind), dataset, probs)
    save_trained(model_dir / "best.pt", result, dataset.classes, params.backbone)
    write_contract(root / paths.train_log(kind), TrainLog, result.log_record())
    log.info(
        "%s: predictions for %d rows -> %s; model -> %s",
        kind,
        len(probs),
        paths.predictions_csv(kind),
        (model_dir / "best.pt").relative_to(root),
    )
    return result
