"""Introspection of the re-used network: what it is, what each path trains, what its units see.

* :func:`architecture` -- the layer groups in forward order (the groups of
  :attr:`pipeline.backbones.ClassifierModel.layer_groups` that the optimiser uses), each with its
  output shape, parameter count and multiply-adds from ``torchinfo``;
* :func:`training_plans` -- which groups each path trains and at which rate, from
  :func:`pipeline.strategies.plan_groups` (the same rule the trainer applies);
* :func:`group_outputs` -- the module whose output is a group's output: the last one to run whose
  parameters all lie in the group, so the value before any parameter-free activation that follows
  (EfficientNet-Lite: the stem's and head_conv's BatchNorm before ReLU6; a block's output, which
  ends linear). A clipped map would give activation maximisation no gradient where the unit is
  off; :class:`Taps` records them;
* :func:`channel_means` / :func:`select_units` / :func:`top_rows` -- per-image mean activation of
  each channel over a split, the units to show, and the images that activate a unit most;
* :func:`maximise_units` -- gradient-ascent activation maximisation of a unit's mean activation
  from a fixed-seed grey image, with an L2 pull to mid-grey and a periodic 3x3 blur;
* :func:`guided_backprop` -- captum's ``GuidedBackprop`` of a unit's mean activation (ReLU6
  modules, which captum does not recognise, are swapped for an ``nn.ReLU`` subclass computing
  ReLU6 on a copy of the model).

Everything runs in eval mode on grey images ``(B, 1, S, S)`` in [0, 1], the models' input.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbones import ClassifierModel, images_to_tensor
from pipeline.params import Params
from pipeline.strategies import plan_groups

M = TypeVar("M", bound=nn.Module)


def _param_group(model: ClassifierModel) -> dict[int, str]:
    return {id(p): name for name, ps in model.layer_groups for p in ps}


def _group_of(module: nn.Module, owner: dict[int, str]) -> str | None:
    """The layer group holding all of ``module``'s parameters (None: none, or several)."""
    names = {owner.get(id(p)) for p in module.parameters()}
    return names.pop() if len(names) == 1 else None


def group_outputs(model: ClassifierModel, image_size: int = 32) -> dict[str, nn.Module]:
    """``{group: module}``: the module whose output is each layer group's output, in group order."""
    owner = _param_group(model)
    groups = [name for name, _ in model.layer_groups]
    maximal: list[nn.Module] = []
    for name, m in model.named_modules():
        g = _group_of(m, owner)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if g is not None and (m is model or _group_of(parent, owner) != g):
            maximal.append(m)
    finished: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: finished.append(mod)) for m in maximal]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, image_size, image_size, device=_device(model)))
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, nn.Module] = {}
    for m in finished:  # forward order: the last one to finish is the group's output
        out[_group_of(m, owner)] = m  # type: ignore[index]
    missing = [g for g in groups if g not in out]
    if missing:
        raise AssertionError(f"no module produces the output of layer groups {missing}")
    return {g: out[g] for g in groups}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def architecture(model: ClassifierModel, image_size: int) -> dict[str, Any]:
    """Layer groups in order with output shape, parameters and multiply-adds (torchinfo)."""
    import torchinfo

    owner = _param_group(model)
    outputs = group_outputs(model, image_size)
    stats = torchinfo.summary(
        model,
        input_size=(1, 1, image_size, image_size),
        depth=64,
        verbose=0,
        col_names=("output_size", "num_params", "mult_adds"),
        device=_device(model),
    )
    shape_of = {id(li.module): list(li.output_size) for li in stats.summary_list}
    macs = dict.fromkeys(outputs, 0)
    for li in stats.summary_list:
        if li.is_leaf_layer:
            g = _group_of(li.module, owner)
            if g is not None:
                macs[g] += int(li.macs)
    groups: list[dict[str, Any]] = []
    for i, (name, ps) in enumerate(model.layer_groups):
        groups.append(
            {
                "index": i,
                "name": name,
                "output_shape": shape_of[id(outputs[name])],
                "n_params": int(sum(p.numel() for p in ps)),
                "mult_adds": macs[name],
            }
        )
    total = int(sum(g["n_params"] for g in groups))
    if total != int(stats.total_params):
        raise AssertionError(f"layer groups hold {total} parameters, torchinfo counts {stats.total_params}")
    return {
        "backbone": model.backbone_name,
        "input_shape": [1, 1, image_size, image_size],
        "groups": groups,
        "total_params": total,
        "total_mult_adds": int(stats.total_mult_adds),
        "summary_library": f"torchinfo {torchinfo.__version__}",
    }


def training_plans(model: ClassifierModel, params: Params) -> dict[str, Any]:
    """Per method of this run (main three + listed variants): every layer group with ``trains``
    and ``lr`` (None when frozen, or when the rate is chosen during training), plus a note."""
    from pipeline import paths
    from pipeline.strategies import get_strategy

    def rows(name: str, lr_known: bool = True) -> list[dict[str, Any]]:
        return [
            {"group": g.name, "trains": g.trainable, "lr": g.lr if g.trainable and lr_known else None}
            for g in plan_groups(model, name, params)
        ]

    frozen = [{"group": name, "trains": False, "lr": None} for name, _ in model.layer_groups]
    out: dict[str, Any] = {}
    for name in paths.methods(params):
        s = get_strategy(name)
        if s.kind == "features":
            out[name] = {"groups": frozen, "note": f"every group frozen; {s.summary}"}
        elif name == "scratch" and params.scratch.lr is None:
            grid = params.scratch.model_copy(update={"lr": params.scratch.lr_grid[0]})
            scratch_params = params.model_copy(update={"scratch": grid})
            out[name] = {
                "groups": [
                    {"group": g.name, "trains": True, "lr": None} for g in plan_groups(model, name, scratch_params)
                ],
                "note": f"{s.summary}: the rate is chosen on val from scratch.lr_grid {params.scratch.lr_grid} "
                "(reports/train/scratch.json, lr_search)",
            }
        else:
            out[name] = {"groups": rows(name), "note": s.summary}
    return out


class Taps:
    """Forward hooks that keep the latest output of some modules: ``taps[name]`` (B, C, h, w)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.out: dict[str, torch.Tensor] = {}
        self._hooks = [m.register_forward_hook(self._keep(n)) for n, m in modules.items()]

    def _keep(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.out[name] = output

        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.out[name]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@torch.inference_mode()
def channel_means(
    model: ClassifierModel, images: np.ndarray, modules: dict[str, nn.Module], batch_size: int
) -> dict[str, np.ndarray]:
    """``{name: (N, C)}`` spatial mean of each channel of each module's output, per image."""
    model.eval()
    device = _device(model)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in modules}
    with Taps(modules) as taps:
        for start in range(0, len(images), batch_size):
            model(images_to_tensor(images[start : start + batch_size], device))
            for n in modules:
                parts[n].append(taps[n].float().mean(dim=(2, 3)).cpu().numpy())
    return {n: np.concatenate(v) for n, v in parts.items()}


def select_units(means: np.ndarray, n: int) -> list[int]:
    """The ``n`` channels whose per-image mean activation varies most (ties: lower index)."""
    spread = means.std(axis=0)
    return [int(c) for c in np.argsort(-spread, kind="stable")[:n]]


def top_rows(means: np.ndarray, rows: np.ndarray, channel: int, k: int) -> tuple[list[int], list[float]]:
    """The ``k`` rows with the highest mean activation of ``channel`` (ties: lower row)."""
    order = np.argsort(-means[:, channel], kind="stable")[:k]
    return [int(rows[i]) for i in order], [float(means[i, channel]) for i in order]


@dataclass
class Maximised:
    image: np.ndarray  # (S, S) float32 in [0, 1]
    start: float  # the unit's mean activation on the starting image
    final: float  # ... on the returned image (the best iterate)
    history: list[float]


def frozen(model: M) -> M:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def unit_activation(
    model: ClassifierModel, module: nn.Module, channel: int | Sequence[int], x: torch.Tensor
) -> torch.Tensor:
    """``(B,)`` mean activation of ``channel`` in ``module``'s output; a sequence of B channels
    gives image i the activation of channel i (one batch for several units)."""
    with Taps({"u": module}) as taps:
        model(x)
        out = taps["u"]
    if isinstance(channel, int):
        return out[:, channel].float().mean(dim=(1, 2))
    idx = torch.as_tensor(list(channel), device=out.device)
    return out[torch.arange(len(idx), device=out.device), idx].float().mean(dim=(1, 2))


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def maximise_units(
    model: ClassifierModel,
    module: nn.Module,
    channels: Sequence[int],
    size: int,
    steps: int,
    lr: float,
    l2: float,
    blur_every: int,
    seeds: Sequence[int],
) -> list[Maximised]:
    """Gradient ascent on the input to raise each channel's mean activation in ``module``'s output.

    Image i starts from mid-grey plus N(0, 0.05) noise drawn from ``seeds[i]``; Adam on
    ``-activation_i + l2 * mean((x_i - 0.5)^2)``, each image clamped to [0, 1] after every step and
    blurred with a 3x3 mean every ``blur_every`` steps; the best iterate of each is returned. The
    units run as one batch: in eval mode the images do not interact and Adam is elementwise, so
    each result is that of a run of its own.
    """
    if len(channels) != len(seeds):
        raise ValueError("one seed per channel")
    model = frozen(model)
    device = _device(model)
    x0 = (
        torch.cat(
            [
                (0.5 + 0.05 * torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(int(s))))
                for s in seeds
            ]
        )
        .clamp(0, 1)
        .to(device)
    )
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    history: list[np.ndarray] = []
    best = np.full(len(channels), -np.inf)
    best_x = x0.clone()
    for step in range(steps + 1):
        act = unit_activation(model, module, channels, x)
        history.append(act.detach().cpu().numpy().astype(np.float64))
        better = history[-1] > best
        best = np.where(better, history[-1], best)
        best_x[torch.as_tensor(better, device=device)] = x.detach()[torch.as_tensor(better, device=device)]
        if step == steps:
            break
        opt.zero_grad()
        (-act.sum() + l2 * ((x - 0.5) ** 2).mean(dim=(1, 2, 3)).sum()).backward()
        opt.step()
        with torch.no_grad():
            if blur_every and (step + 1) % blur_every == 0:
                x.copy_(_blur(x))
            x.clamp_(0, 1)
    hist = np.stack(history, axis=1)
    return [
        Maximised(
            best_x[i, 0].cpu().numpy().astype(np.float32),
            float(hist[i, 0]),
            float(best[i]),
            [float(v) for v in hist[i]],
        )
        for i in range(len(channels))
    ]


def maximise_unit(
    model: ClassifierModel,
    module: nn.Module,
    channel: int,
    size: int,
    steps: int,
    lr: float,
    l2: float,
    blur_every: int,
    seed: int,
) -> Maximised:
    """:func:`maximise_units` for one channel."""
    return maximise_units(model, module, [channel], size, steps, lr, l2, blur_every, [seed])[0]


class _GuidedReLU6(nn.ReLU):
    """ReLU6 as an ``nn.ReLU`` subclass, so that captum's guided backprop hooks it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


def _swap_relu6(model: M) -> M:
    for name, child in list(model.named_children()):
        if isinstance(child, nn.ReLU6):
            setattr(model, name, _GuidedReLU6())
        else:
            _swap_relu6(child)
    return model


class _UnitForward(nn.Module):
    def __init__(self, model: ClassifierModel, module_name: str, channel: int) -> None:
        super().__init__()
        self.model = model
        self.module = model.get_submodule(module_name)
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unit_activation(self.model, self.module, self.channel, x)[:, None]


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise KeyError("module is not part of the model")


def guided_backprop(
    model: ClassifierModel, module: nn.Module, channel: int, images: np.ndarray, method: str = "guided_backprop"
) -> np.ndarray:
    """``(B, S, S)`` captum GuidedBackprop (or ``deconvolution``) of the unit's mean activation."""
    import warnings

    from captum.attr import Deconvolution, GuidedBackprop

    name = module_name(model, module)
    guided = frozen(_swap_relu6(copy.deepcopy(model)))
    assert isinstance(guided, ClassifierModel)
    explainer = {"guided_backprop": GuidedBackprop, "deconvolution": Deconvolution}[method]
    x = images_to_tensor(images, _device(guided)).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        attr = explainer(_UnitForward(guided, name, channel)).attribute(x, target=0)
    return attr[:, 0].detach().cpu().numpy().astype(np.float32)


def evenly_spaced(items: Sequence[str], n: int) -> list[str]:
    """``n`` items spread from the first to the last (all when fewer)."""
    if n >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]
