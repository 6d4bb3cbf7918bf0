"""One trainer for every trained strategy: finetune, scratch and the fine-tuning variants.

Every strategy (``pipeline.strategies``) runs the same loop on the same network
(``pipeline.backbones``), data, augmentation and early stopping; they differ in where the weights
start (ImageNet, random, or ImageNet with the head at the linear probe's solution), which layer
groups train at which rate (``pipeline.param_groups``) and their budget.

What a training log's per-epoch record means:

* ``train_loss`` / ``train_auroc``: eval mode (BatchNorm statistics as at inference, no dropout)
  on the un-augmented training images, the same conditions as ``val_*``: comparable, so a
  train-val gap is an overfitting signal and not an artefact of augmentation or train mode;
* ``train_loss_running`` / ``train_auroc_running``: the values seen while training (train mode,
  augmented images, weights changing within the epoch).

Early stopping and the kept epoch follow a *finite* monitor: val AUROC when it is defined on the
val split (every class present), else val loss; an epoch whose score is not finite never becomes
the best. BatchNorm policy: ``finetune.bn`` = ``freeze`` keeps every BatchNorm layer of a
pretrained network at its ImageNet running statistics while its affine weights train (measured
here: clearly better generalisation on new patients than re-estimating them); ``adapt``
re-estimates them; a random network always adapts. Inference runs in fp32 on every device; cuDNN
runs deterministic kernels.

Reproducibility: every random draw derives from (seed, epoch[, row]), so an interrupted run that
resumes from its checkpoint retraces the uninterrupted one exactly (tested); see
``pipeline.checkpoint`` for what the fingerprint covers.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed
from pipeline.backbones import (
    ClassifierModel,
    create_backbone,
    select_device,
    set_num_threads,
)
from pipeline.checkpoint import cpu_state, fingerprint, load_matching, save_atomic
from pipeline.common import get_logger, seed_everything
from pipeline.loader import epoch_seed, iter_batches, iter_images, loader_settings, make_batches
from pipeline.param_groups import GroupPlan, make_optimizer, make_scheduler
from pipeline.params import Backbone, Params
from pipeline.strategies import Strategy, get_strategy

log = get_logger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
TRAINED_FORMAT = "cxr-transfer/trained-model/1"
# NHWC weights/activations while training on CPU/CUDA (oneDNN/cuDNN run it faster; measured in
# bench/models.py, see BENCHMARKS.md).
TRAIN_CHANNELS_LAST = True


# ---------------------------------------------------------------------------------------------
# Metrics and inference


def auroc(y: np.ndarray, probs: np.ndarray, positive_index: int) -> float:
    """ROC AUC: positive class vs rest for two classes, one-vs-rest macro for more.

    NaN when it is undefined (a split missing a class): there is no score to report.
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


def auroc_defined(y: np.ndarray, n_classes: int) -> bool:
    """Whether :func:`auroc` gives a number on labels ``y`` of an ``n_classes`` task."""
    present = len(np.unique(y)) if len(y) else 0
    return present >= 2 if n_classes == 2 else present == n_classes


@torch.inference_mode()
def predict_logits(
    model: ClassifierModel,
    images: np.ndarray,
    rows: np.ndarray | None,
    batch_size: int,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Eval-mode fp32 logits ``(n, n_classes)`` of ``images[rows]`` (all rows when None).

    fp32 on every device: reduced-precision inference ties nearby probabilities, which moves
    AUROC and thresholds.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    was_training = model.training
    model.eval()
    out = np.empty((len(rows), model.num_classes), dtype=np.float32)
    try:
        done = 0
        for chunk, x in iter_images(images, rows, batch_size, device):
            out[done : done + len(chunk)] = model(x).float().cpu().numpy()
            done += len(chunk)
    finally:
        model.train(was_training)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_proba(
    model: ClassifierModel,
    images: np.ndarray,
    rows: np.ndarray | None,
    batch_size: int,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Softmax class probabilities ``(n, n_classes)`` float64 of ``images[rows]`` in eval mode."""
    return softmax(predict_logits(model, images, rows, batch_size, device))


def evaluate_rows(
    model: ClassifierModel,
    images: np.ndarray,
    rows: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    device: torch.device,
    positive_index: int,
    ctx: distributed.Context = distributed.SINGLE,
) -> tuple[float, float]:
    """Eval-mode cross-entropy and AUROC on ``rows`` (NaN, NaN without rows); under DDP each
    rank predicts ``rows[rank::world]`` and the logits are gathered, so every rank gets the same."""
    if len(rows) == 0:
        return float("nan"), float("nan")
    rows = np.asarray(rows)
    local = predict_logits(model, images, rows[ctx.rank :: ctx.world], batch_size, device)
    logits = torch.from_numpy(distributed.gather_rows(local, len(rows), ctx))
    loss = float(F.cross_entropy(logits, torch.from_numpy(y)).item())
    return loss, auroc(y, torch.softmax(logits, 1).numpy(), positive_index)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Training only: bf16 on CUDA GPUs that support it natively, fp16 (with a GradScaler) on older
    ones; fp32 elsewhere (CPU bf16 kernels are slower than fp32 on most CPUs, MPS is partial)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_for(device: torch.device):
    dtype = autocast_dtype(device)
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=dtype)


def set_deterministic(device: torch.device, deterministic: bool = True) -> None:
    """cuDNN's kernel choice on CUDA (``train.deterministic``): deterministic algorithms without
    autotuning (reproducible), or autotuned (cuDNN benchmarks each new shape once and keeps the
    fastest kernels; runs then differ within noise)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


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
    extra: dict[str, Any] = field(default_factory=dict)

    def log_record(self) -> dict:
        """The reports/train/<method>.json document."""
        return {
            "model_card": self.model_card,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
            **self.extra,
        }


def set_trainable(plan: list[GroupPlan], warmup: bool) -> set[int]:
    """requires_grad per group (frozen groups and, in warm-up, the whole backbone get none).

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


def set_train_mode(model: ClassifierModel, frozen: set[int], bn: str) -> None:
    """Train mode, except: modules whose parameters are all frozen stay in eval mode (their
    BatchNorm statistics and drop-connect stay as loaded, i.e. truly frozen), and with
    ``bn = "freeze"`` every BatchNorm layer keeps its running statistics."""
    model.train()
    for m in model.modules():
        ps = list(m.parameters())
        if (
            ps
            and all(id(p) in frozen for p in ps)
            or bn == "freeze"
            and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ):
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


def describe_training(strategy: Strategy, plan: list[GroupPlan], params: Params, epochs: int, optimizer: str) -> str:
    """One sentence of what was trained how, for the model card."""
    tr = params.train
    how = f"{optimizer}, {tr.schedule} schedule, up to {epochs} epochs, batch {tr.batch_size}"
    if not strategy.pretrained:
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
    start = "the head initialised at the linear probe's solution, then " if strategy.head_init == "linear_probe" else ""
    text = (
        f"{start}fine-tuned from ImageNet weights with per-layer-group learning rates: "
        + "; ".join(parts)
        + f"; new head at lr {_fmt_lr(plan[-1].lr)} ({how}); BatchNorm statistics {strategy.bn_policy(params)}"
    )
    frozen = [g.name for g in plan if not g.trainable]
    if frozen:
        text += f"; frozen (not trained): {', '.join(frozen)}"
    if strategy.warmup_epochs(params):
        text += f"; first {strategy.warmup_epochs(params)} epoch(s) train the head only"
    return text


def choose_monitor(name: str, y_val: np.ndarray, n_classes: int) -> str:
    """What early stopping and the kept epoch follow: val AUROC when it is defined, else val loss."""
    if len(y_val) and auroc_defined(y_val, n_classes):
        return "val_auroc"
    if len(y_val):
        log.warning("%s: val AUROC is undefined (a class is missing from val); following val loss", name)
        return "val_loss"
    log.warning("%s: no val rows: no early stopping, the last epoch is kept", name)
    return "none"


def monitor_score(entry: dict, monitor: str) -> float:
    """Higher is better; NaN when the epoch's monitor is not finite (a diverged run)."""
    if monitor == "none":
        return float(entry["epoch"])
    v = entry[monitor]
    if v is None or not math.isfinite(v):
        return float("nan")
    return float(v) if monitor == "val_auroc" else -float(v)


def _fresh_state() -> dict[str, Any]:
    """The loop state that a checkpoint carries besides model/optimiser/scheduler."""
    return {
        "epoch": 0,
        "history": [],
        "best_state": None,
        "best_epoch": 0,
        "best_score": -math.inf,
        "best_fitted": False,
        "bad_epochs": 0,
        "finished": False,
        "stopped_early": False,
        "wall_time_s": 0.0,
    }


def has_fitted(entry: dict, min_train_auroc: float | None) -> bool:
    """Whether an epoch's eval-mode train AUROC reaches ``min_train_auroc`` (None, or an undefined
    train AUROC: nothing to check, it counts as fitted)."""
    v = entry.get("train_auroc")
    if min_train_auroc is None or v is None or not math.isfinite(v):
        return True
    return float(v) >= min_train_auroc


def update_best(
    st: dict[str, Any], model: ClassifierModel, entry: dict, monitor: str, min_train_auroc: float | None = None
) -> None:
    """Keep the best epoch's weights; count epochs without improvement.

    The kept epoch must have fitted its training data (:func:`has_fitted`, ``train.min_train_auroc``):
    an epoch that has not is kept only while none has, and the first that has replaces it whatever
    its val score (a baseline that is compared must have learnt). A non-finite score is kept only
    while no epoch has had a finite one (so a run always returns some weights)."""
    score = monitor_score(entry, monitor)
    fitted, best_fitted = has_fitted(entry, min_train_auroc), bool(st.get("best_fitted", True))
    better = math.isfinite(score) and (not math.isfinite(st["best_score"]) or score > st["best_score"])
    improved = (fitted and not best_fitted) or (fitted == best_fitted and better)
    if st["best_state"] is None or improved:
        st["best_score"] = score if math.isfinite(score) else -math.inf
        st["best_fitted"] = fitted
        st["best_epoch"], st["bad_epochs"] = entry["epoch"], 0
        st["best_state"] = cpu_state(model)
    else:
        st["bad_epochs"] += 1


@dataclass
class _Run:
    """Everything one training run holds while its epochs run."""

    name: str
    strategy: Strategy
    model: ClassifierModel
    plan: list[GroupPlan]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    threads: int
    epochs: int
    seed: int
    warmup_epochs: int
    optimizer_name: str
    monitor: str
    transform: Any
    ctx: distributed.Context
    net: torch.nn.Module  # what the training step calls: ``model``, its DDP wrapper, compiled
    scaler: torch.amp.GradScaler  # fp16 loss scaling (enabled only for fp16 autocast)


def _run_epoch(run: _Run, st: dict[str, Any], dataset: Any, labels: np.ndarray, train_rows, val_rows, params) -> dict:
    """One epoch: train on shuffled (augmented) train rows, then measure train and val in eval mode."""
    epoch = int(st["epoch"]) + 1
    t0 = time.perf_counter()
    # Fixed per-epoch seed: dropout/drop-connect draws do not depend on earlier epochs.
    torch.manual_seed(epoch_seed(run.seed, epoch))
    warm = epoch <= run.warmup_epochs
    set_train_mode(run.model, set_trainable(run.plan, warm), run.strategy.bn_policy(params))
    lrs = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    lrs = {g.name: lrs.get(g.name, 0.0) if g.is_head or not warm else 0.0 for g in run.plan}
    # The single-process order, this rank's share of it (all of it without DDP).
    order = distributed.shard(np.random.default_rng(epoch_seed(run.seed, epoch)).permutation(train_rows), run.ctx)
    total = torch.zeros((), device=run.device)
    probs: list[torch.Tensor] = []
    seen: list[np.ndarray] = []
    bs = params.train.batch_size
    batches = make_batches(order, distributed.local_batch_size(bs, run.ctx))
    t_pass = time.perf_counter()
    loader = iter_batches(dataset.images, batches, run.transform, run.seed, epoch, loader_settings(run.device))
    for batch in loader:
        rows = batch.rows
        x = batch.on(run.device, run.transform)  # augmented on the training device
        y = torch.from_numpy(labels[rows]).to(run.device, non_blocking=True)
        run.optimizer.zero_grad(set_to_none=True)
        with autocast_for(run.device):
            logits = run.net(x)
        loss = F.cross_entropy(logits.float(), y)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        # Detached device tensors: no host sync per step; one transfer at the end of the epoch.
        total = total + loss.detach() * len(rows)
        probs.append(torch.softmax(logits.detach().float(), 1))
        seen.append(labels[rows])
    seconds_train_pass = time.perf_counter() - t_pass
    pos, ctx = params.data.positive_index, run.ctx
    n_seen = len(order) * ctx.world
    y_seen = distributed.gather_rows(np.concatenate(seen), n_seen, ctx)
    running_probs = distributed.gather_rows(torch.cat(probs).cpu().numpy(), n_seen, ctx)
    total = distributed.all_reduce_sum(total, ctx)
    images = dataset.images
    train_loss, train_auroc = evaluate_rows(run.model, images, train_rows, labels[train_rows], bs, run.device, pos, ctx)
    val_loss, val_auroc = evaluate_rows(run.model, images, val_rows, labels[val_rows], bs, run.device, pos, ctx)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_auroc": train_auroc,
        "train_loss_running": float(total) / n_seen,
        "train_auroc_running": auroc(y_seen, running_probs, pos),
        "val_loss": val_loss,
        "val_auroc": val_auroc,
        "lr": lrs,
        "seconds": round(time.perf_counter() - t0, 3),
        "seconds_train_pass": round(seconds_train_pass, 3),
    }


def _fingerprint_config(run: _Run, params: Params, classes: tuple[str, ...], head_init: Any) -> dict[str, Any]:
    return {
        "strategy": run.name,
        "epochs": run.epochs,
        "seed": run.seed,
        "classes": list(classes),
        "positive_class": params.data.positive_class,
        "backbone": params.backbone.model_dump(),
        "train": params.train.model_dump(exclude={"device", "num_threads"}),
        "finetune": params.finetune.model_dump(),
        "scratch": params.scratch.model_dump(),
        "strategies": params.strategies.model_dump(exclude={"variants", "candidates"}),
        "augment": params.augment.model_dump() if augments_on_the_fly(run.strategy, params) else None,
        "head_init": None if head_init is None else [np.asarray(t).tolist() for t in head_init],
        "world_size": run.ctx.world,
    }


def augments_on_the_fly(strategy: Any, params: Params) -> bool:
    """Whether this strategy's training batches are augmented on the fly: scratch has its own
    switch (``scratch.augment_on_the_fly``), every pretrained strategy follows ``train``'s."""
    return params.train.augment_on_the_fly if strategy.pretrained else params.scratch.augment_on_the_fly


def _setup(name: str, dataset: Any, params: Params, n_train: int, epochs: int | None, seed: int, head_init) -> _Run:
    strategy = get_strategy(name)
    if strategy.kind != "trained":
        raise ValueError(f"{name!r} is not a trained strategy")
    tr = params.train
    threads = set_num_threads(tr.num_threads)
    device = select_device(tr.device)
    ctx = distributed.init(device.type)
    if ctx.active and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    set_deterministic(device, tr.deterministic)
    seed_everything(seed)
    model = create_backbone(params.backbone, len(dataset.classes), pretrained=strategy.pretrained)
    if strategy.head_init == "linear_probe":
        if head_init is None:
            raise ValueError(f"{name}: the head starts at the linear probe's solution: pass head_init")
        set_head(model, *head_init)
    plan = strategy.layer_plan(model.layer_groups, params)
    model = model.to(device).use_channels_last(TRAIN_CHANNELS_LAST and device.type != "mps")
    optimizer_name = params.scratch.optimizer if not strategy.pretrained else tr.optimizer
    optimizer = make_optimizer(plan, tr.model_copy(update={"optimizer": optimizer_name}))
    n_local = math.ceil(n_train / ctx.world)  # DistributedSampler's share per rank
    batches_per_epoch = len(make_batches(np.arange(n_local), distributed.local_batch_size(tr.batch_size, ctx)))
    planned = strategy.epochs(params, batches_per_epoch) if epochs is None else int(epochs)
    if planned < 1:
        raise ValueError(f"epochs must be >= 1, got {planned}")
    warmup = min(strategy.warmup_epochs(params), planned)
    backbone_start = {g.name: warmup * batches_per_epoch for g in plan if not g.is_head}
    scheduler = make_scheduler(optimizer, tr.schedule, planned * batches_per_epoch, backbone_start)
    transform = None
    if augments_on_the_fly(strategy, params):
        from pipeline.augment import make_augmentation

        transform = make_augmentation(params.augment)
    net: torch.nn.Module = model
    if ctx.active:
        # DDP registers the parameters that require grad now: every trainable group's. With a
        # head-only warm-up the backbone's get no gradient in its first epochs (find_unused).
        set_trainable(plan, warmup=False)
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[ctx.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=warmup > 0,
        )
    if tr.compile:
        net = torch.compile(net)  # type: ignore[assignment]  # an OptimizedModule, called like net
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)
    return _Run(
        name, strategy, model, plan, optimizer, scheduler, device, threads, planned, seed, warmup,
        optimizer_name, "none", transform, ctx, net, scaler,
    )  # fmt: skip


def set_head(model: ClassifierModel, weight: np.ndarray, bias: np.ndarray) -> None:
    """Set the new head's weights (``(n_classes, D)``, ``(n_classes,)``), e.g. a linear probe's."""
    w = torch.as_tensor(np.asarray(weight), dtype=model.head.weight.dtype)
    b = torch.as_tensor(np.asarray(bias), dtype=model.head.bias.dtype)
    if w.shape != model.head.weight.shape or b.shape != model.head.bias.shape:
        raise ValueError(
            f"head_init has shapes {tuple(w.shape)}, {tuple(b.shape)}; the head needs "
            f"{tuple(model.head.weight.shape)}, {tuple(model.head.bias.shape)}"
        )
    with torch.no_grad():
        model.head.weight.copy_(w)
        model.head.bias.copy_(b)


def train(
    name: str,
    dataset: Any,
    params: Params,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    out_dir: Path | None,
    live_dir: Path | None,
    epochs: int | None = None,
    seed: int | None = None,
    *,
    head_init: tuple[np.ndarray, np.ndarray] | None = None,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train strategy ``name`` on ``train_rows``, choosing the epoch on ``val_rows``.

    ``dataset`` needs ``images`` (N, S, S) in [0, 1], ``classes`` and ``labels()`` (class index
    per row): :class:`pipeline.dataset.Dataset`. ``out_dir`` holds ``checkpoint.pt`` (written
    every epoch, resumed when its fingerprint matches); ``live_dir`` is the dvclive directory;
    either may be None. ``epochs``/``seed`` override the strategy's budget/``seed`` (learning
    curves, LR search). ``head_init``: the head's (weight, bias) for a strategy whose head starts at
    the linear probe. ``stop_after_epoch`` ends the call after that epoch as an interruption would
    (the schedule keeps its full length), for testing resume.
    """
    t_call = time.perf_counter()
    seed = params.seed if seed is None else int(seed)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray(val_rows, dtype=np.int64)
    if len(train_rows) < 2:
        raise ValueError(f"{name}: need at least 2 training images, got {len(train_rows)}")
    if np.intersect1d(train_rows, val_rows).size:
        raise ValueError(f"{name}: train and val rows overlap")
    labels = np.asarray(dataset.labels(), dtype=np.int64)
    classes = tuple(dataset.classes)
    run = _setup(name, dataset, params, len(train_rows), epochs, seed, head_init)
    run.monitor = choose_monitor(name, labels[val_rows], len(classes))
    fp = fingerprint(
        _fingerprint_config(run, params, classes, head_init), run.device, dataset.images, labels, train_rows, val_rows
    )
    st, resumed_from = _resume(run, out_dir, fp)
    main = run.ctx.is_main  # only rank 0 writes files
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None and main else None
    live = _open_live(live_dir if main else None, st["history"])
    t_run, wall_before = time.perf_counter(), float(st["wall_time_s"])
    patience = params.train.early_stopping_patience if run.strategy.early_stopping else None
    while not st["finished"] and st["epoch"] < run.epochs:
        entry = _run_epoch(run, st, dataset, labels, train_rows, val_rows, params)
        epoch = entry["epoch"]
        st["history"].append(entry)
        update_best(st, run.model, entry, run.monitor, params.train.min_train_auroc)
        if run.monitor != "none" and patience is not None and st["bad_epochs"] >= patience:
            st["stopped_early"] = epoch < run.epochs
        st["epoch"] = epoch
        st["finished"] = st["stopped_early"] or epoch >= run.epochs
        st["wall_time_s"] = wall_before + (time.perf_counter() - t_run)
        log.info(
            "%s epoch %d/%d: train loss %.4f auroc %.3f (eval mode) | val loss %.4f auroc %.3f | %.1f s",
            name, epoch, run.epochs, entry["train_loss"], entry["train_auroc"], entry["val_loss"],
            entry["val_auroc"], entry["seconds"],
        )  # fmt: skip
        if st["stopped_early"]:
            log.info("%s: early stop after epoch %d (best epoch %d)", name, epoch, st["best_epoch"])
        if ckpt_path is not None:
            save_atomic(
                {
                    "fingerprint": fp,
                    "model": cpu_state(run.model),
                    "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    **st,
                },
                ckpt_path,
            )
        distributed.barrier(run.ctx)  # every rank resumes from the same checkpoint
        if live is not None:
            _log_live(live, entry)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    if live is not None:
        live.end()
    result = _finish(run, st, params, dataset.images, resumed_from, fp)
    log.info("%s: done in %.1f s (this call), best epoch %d", name, time.perf_counter() - t_call, st["best_epoch"])
    return result


def _resume(run: _Run, out_dir: Path | None, fp: str) -> tuple[dict[str, Any], int | None]:
    st = _fresh_state()
    path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    ckpt = load_matching(path, fp)
    if ckpt is None:
        if path is not None and path.exists():
            log.info("%s: %s comes from other params, code, data or device: starting fresh", run.name, path)
        return st, None
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch_rng"])
    st = {k: ckpt[k] for k in st}
    log.info(
        "%s: resuming from %s at epoch %d/%d (same params, code, data and device)",
        run.name,
        path,
        st["epoch"],
        run.epochs,
    )
    return st, int(st["epoch"])


def _finish(run: _Run, st: dict[str, Any], params: Params, images: np.ndarray, resumed_from, fp: str) -> TrainResult:
    model, plan = run.model, run.plan
    final_state = cpu_state(model)
    model.load_state_dict(st["best_state"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    card = {
        "path": run.name,
        "backbone": model.backbone_name,
        "weights_source": model.weights_source,
        "weights_sha256": model.weights_sha256,
        "trained": describe_training(run.strategy, plan, params, run.epochs, run.optimizer_name),
        "layer_groups": [{"name": g.name, "lr": g.lr, "n_params": g.n_params, "trainable": g.trainable} for g in plan],
        "epochs_run": int(st["epoch"]),
        "best_epoch": int(st["best_epoch"]),
        "monitor": run.monitor,
        "device": str(run.device),
        "num_threads": run.threads,
        "wall_time_s": round(float(st["wall_time_s"]), 2),
        "image_size": int(images.shape[-1]),
        "seed": run.seed,
        "grey_to_rgb": params.backbone.grey_to_rgb,
        "preprocessing": model.preprocessing.description,
        "optimizer": run.optimizer_name,
        "bn": run.strategy.bn_policy(params),
        "head_init": run.strategy.head_init,
        "augment_on_the_fly": run.transform is not None,
        "trained_params": sum(g.n_params for g in plan if g.trainable),
    }
    return TrainResult(
        model=model,
        history=copy.deepcopy(st["history"]),
        best_epoch=int(st["best_epoch"]),
        model_card=card,
        monitor=run.monitor,
        stopped_early=bool(st["stopped_early"]),
        resumed_from_epoch=resumed_from,
        fingerprint=fp,
        final_state=final_state,
    )


# ---------------------------------------------------------------------------------------------
# Saved models (models/<method>/best.pt)


def save_trained(path: str | Path, result: TrainResult, classes: tuple[str, ...], backbone: Backbone) -> Path:
    """Write the best weights with what :func:`load_trained` needs to rebuild the network."""
    model = result.model
    path = Path(path)
    save_atomic(
        {
            "format": TRAINED_FORMAT,
            "backbone": backbone.model_dump(),
            "num_classes": model.num_classes,
            "classes": list(classes),
            "image_size": result.model_card["image_size"],
            "weights_source": model.weights_source,
            "weights_sha256": model.weights_sha256,
            "model_card": result.model_card,
            "state_dict": cpu_state(model),
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
