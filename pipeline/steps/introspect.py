"""introspect stage: the re-used network's structure, what each path trains, and what its units
see before and after fine-tuning."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from pipeline import introspection as I
from pipeline import introspection_figures as figs
from pipeline import paths
from pipeline.backbones import ClassifierModel, create_backbone, images_to_tensor, select_device, set_num_threads
from pipeline.common import get_logger, seed_everything
from pipeline.contracts import Introspection, write_contract
from pipeline.dataset import load_dataset
from pipeline.errors import StageError
from pipeline.features import prepare_frozen
from pipeline.params import Params
from pipeline.training import load_trained
from pipeline.workspace import Workspace

log = get_logger("introspect")
REPORT = paths.INTROSPECTION
FIGURE_DIR = paths.INTROSPECTION_FIGURES
FINETUNED = paths.MODELS / "finetune" / "best.pt"


def _first_filters(model: ClassifierModel) -> np.ndarray:
    """(n, kh, kw): the first convolution summed over its input channels (a grey image's view)."""
    return model.trunk.first_conv().weight.detach().float().sum(dim=1).cpu().numpy()


@torch.inference_mode()
def _feature_maps(
    model: ClassifierModel, image: np.ndarray, modules: dict[str, torch.nn.Module], n_channels: int
) -> dict[str, np.ndarray]:
    with I.Taps(modules) as taps:
        model(images_to_tensor(image[None], next(model.parameters()).device))
        return {g: taps[g][0, :n_channels].float().cpu().numpy() for g in modules}


def run_introspect(params: Params, workspace: Workspace) -> dict[str, Any]:
    """reports/introspection/introspection.json and reports/introspection/figures/*.png."""
    start = time.perf_counter()
    cfg = params.introspect
    seed_everything(params.seed)
    set_num_threads(params.train.num_threads)
    device = select_device(params.train.device)
    dataset = load_dataset(params, root=workspace.root)
    train = dataset.rows("train")
    if len(train) == 0:
        raise StageError("the train split is empty; check the split stage")
    images = np.asarray(dataset.images[train], dtype=np.float32)
    size = int(images.shape[-1])
    after = load_trained(workspace.require(FINETUNED, "finetune"), device)
    if after.backbone_name != params.backbone.name:
        raise StageError(
            f"{FINETUNED} is a fine-tuned {after.backbone_name}, params.yaml names "
            f"{params.backbone.name}; rerun the finetune stage"
        )
    with torch.random.fork_rng(devices=[]):
        before = create_backbone(params.backbone, len(params.data.classes)).to(device)
    # Eval mode, no weight gradients, NHWC: as every frozen embedding (pipeline.features).
    models = {"before": prepare_frozen(before, device), "after": prepare_frozen(after, device)}
    outputs = {m: I.group_outputs(model, size) for m, model in models.items()}
    backbone_groups = [name for name, _ in before.layer_groups][:-1]
    timing = {"load": time.perf_counter() - start}

    fig_dir = workspace.path(FIGURE_DIR)
    filters = {m: _first_filters(model) for m, model in models.items()}
    change = float(np.linalg.norm(filters["after"] - filters["before"]) / np.linalg.norm(filters["before"]))
    depth_groups = I.evenly_spaced(backbone_groups, cfg.feature_map_depths)
    maps = {
        m: _feature_maps(model, images[0], {g: outputs[m][g] for g in depth_groups}, cfg.feature_map_channels)
        for m, model in models.items()
    }

    timing["filters_and_feature_maps"] = time.perf_counter() - start - sum(timing.values())
    unit_groups = backbone_groups[-cfg.last_groups :]
    means = {
        m: I.channel_means(model, images, {g: outputs[m][g] for g in unit_groups}, cfg.batch_size)
        for m, model in models.items()
    }
    timing["train_split_activations"] = time.perf_counter() - start - sum(timing.values())
    units: dict[str, list[dict[str, Any]]] = {}
    for g in unit_groups:
        units[g] = []
        chosen = I.select_units(means["before"][g], cfg.units_per_group)
        seeds = [params.seed + c for c in chosen]
        maxed = {
            m: I.maximise_units(model, outputs[m][g], chosen, size, cfg.steps, cfg.lr, cfg.l2, cfg.blur_every, seeds)
            for m, model in models.items()
        }
        for i, c in enumerate(chosen):
            positions = np.argsort(-means["before"][g][:, c], kind="stable")
            shown_image = images[positions[:1]]  # both models explain the same radiograph
            entry: dict[str, Any] = {"group": g, "channel": c}
            for m, model in models.items():
                rows, acts = I.top_rows(means[m][g], train, c, cfg.top_k)
                pos = np.searchsorted(train, rows)
                mx = maxed[m][i]
                recon = I.guided_backprop(model, outputs[m][g], c, shown_image)[0]
                entry[m] = {
                    "top_rows": rows,
                    "top_activations": acts,
                    "top_images": images[pos],
                    "actmax_start": mx.start,
                    "actmax_final": mx.final,
                    "actmax_image": mx.image,
                    "reconstruction": recon,
                    "reconstruction_row": int(train[positions[0]]),
                    "mean_activation": float(means[m][g][:, c].mean()),
                }
            units[g].append(entry)

    timing["actmax_and_guided_backprop"] = time.perf_counter() - start - sum(timing.values())
    figures = {
        "filters": workspace.show(figs.plot_filters(filters, fig_dir / "first_layer_filters.png")),
        "feature_maps": workspace.show(figs.plot_feature_maps(images[0], maps, fig_dir / "feature_maps.png")),
        "units": {g: workspace.show(figs.plot_units(g, us, fig_dir / f"units_{g}.png")) for g, us in units.items()},
    }
    drop = {"top_images", "actmax_image", "reconstruction"}
    doc: dict[str, Any] = {
        "backbone": before.backbone_name,
        "weights_source": {"before": before.weights_source, "after": str(FINETUNED)},
        "image_size": size,
        "n_train": int(len(train)),
        "architecture": I.architecture(before, size),
        "training": I.training_plans(before, params),
        "first_layer": {
            "shape": list(before.trunk.first_conv().weight.shape),
            "relative_change": change,
            "figure": figures["filters"],
        },
        "feature_maps": {
            "row": int(train[0]),
            "groups": depth_groups,
            "channels": cfg.feature_map_channels,
            "figure": figures["feature_maps"],
        },
        "units": {
            "selection": "per group, the channels whose per-image mean activation over the train "
            "split varies most under the pretrained network; the same channels after "
            "fine-tuning",
            "reconstruction": "captum GuidedBackprop of the unit's mean activation on the "
            "pretrained network's top radiograph, for both networks",
            "groups": {
                g: [
                    {
                        k: ({kk: vv for kk, vv in v.items() if kk not in drop} if k in ("before", "after") else v)
                        for k, v in u.items()
                    }
                    for u in us
                ]
                for g, us in units.items()
            },
            "figures": figures["units"],
        },
        "wall_time_s": round(time.perf_counter() - start, 1),
        "timing_s": {k: round(v, 1) for k, v in timing.items()},
    }
    write_contract(workspace.path(REPORT), Introspection, doc)
    log.info(
        "introspection of %s: %d groups, units of %s; %.1f s",
        doc["backbone"],
        len(doc["architecture"]["groups"]),
        ", ".join(unit_groups),
        doc["wall_time_s"],
    )
    return doc
