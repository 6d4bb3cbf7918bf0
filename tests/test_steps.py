"""Every stage has one shape: ``python -m stages.<name> [--params FILE] [--root DIR]`` calls
``run_<stage>(params, workspace)``; these tests call the library functions on tiny workspaces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import features_info, make_processed, repo_params, write_params
from dicom_factory import chest_like, make_dataset, write

from pipeline import paths
from pipeline.cli import main as cli_main
from pipeline.contracts import ContractError
from pipeline.dataset import Dataset
from pipeline.errors import MissingArtifactError
from pipeline.params import REPO_ROOT
from pipeline.predictions import calibration_path, read_predictions, write_predictions
from pipeline.sources import SOURCES_FILE, SourceError, run_sources
from pipeline.steps.augment import run_augment
from pipeline.steps.evaluate import run_evaluate
from pipeline.steps.ingest import run_ingest
from pipeline.steps.split import run_split
from pipeline.store import open_store, write_store
from pipeline.workspace import Workspace

PATIENT_NAME = "Quackenbush^Zebediah"


def _site(folder: Path, n_patients: int, prefix: str, seed: int = 0) -> Path:
    """A DICOM folder with two images per patient (nested folders) and its labels.csv."""
    rows = []
    for i in range(2 * n_patients):
        rel = f"{prefix}{i // 2:02d}/sub/img{i}.dcm"
        arr = chest_like(40, 36, bits=12, seed=seed + i)
        write(
            folder / rel,
            make_dataset(
                arr, bits_stored=12, PatientID=f"{prefix}-ID-{i // 2}", PatientName=PATIENT_NAME, PatientSex="MF"[i % 2]
            ),
        )
        rows.append((rel, "abnormal" if (i // 2) % 2 else "normal"))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(folder / "labels.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    return {
        "dev": _site(root / "dev", 12, "d"),
        "b": _site(root / "b", 3, "b", 100),
        "c": _site(root / "c", 2, "c", 200),
    }


def _params(root: Path, sites: dict[str, Path], external: object):
    raw = repo_params()
    raw["data"]["dicom_dir"] = str(sites["dev"])
    raw["data"]["labels_csv"] = str(sites["dev"] / "labels.csv")
    raw["data"]["external"] = external
    raw["ingest"].update({"size": 16, "min_size": 16, "workers": 1})
    return write_params(root, raw)


def _ext(sites, *names: str, description: str | None = None) -> list[dict]:
    out = [{"name": f"site-{n}", "dicom_dir": str(sites[n]), "labels_csv": str(sites[n] / "labels.csv")} for n in names]
    if description:
        out[0]["description"] = description
    return out


# ------------------------------------------------------------------------------- the CLI shape


def test_cli_turns_stage_errors_into_one_line_and_exit_1(tmp_path, capsys) -> None:
    write_params(tmp_path, repo_params())
    assert cli_main("split", run_split, "split", ["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("split: data/processed/manifest.csv is missing (written by the ingest stage)")
    assert cli_main("split", run_split, "split", ["--params", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_stage_module_runs_as_dvc_runs_it(sites, tmp_path) -> None:
    """`python -m stages.<name> --root DIR` from the repository root, as in dvc.yaml."""
    _params(tmp_path, sites, [])
    env = {**os.environ, "CI": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.sources", "--root", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [s["name"] for s in json.loads((tmp_path / SOURCES_FILE).read_text())["sets"]] == ["internal"]
    bad = subprocess.run(
        [sys.executable, "-m", "stages.ingest", "--root", str(tmp_path / "absent")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("ingest: ")


def test_every_stage_script_is_the_thin_cli() -> None:
    """No logic lives only in a stage: each script names its run_<stage> and nothing else."""
    for script in sorted((REPO_ROOT / "stages").glob("*.py")):
        if script.name == "__init__.py":
            continue
        name = script.stem
        code = script.read_text()
        assert f"from pipeline.steps.{name} import run_{name}" in code, script
        # A foreach stage also passes the method names its positional argument accepts.
        per_method = f'entry("{name}", run_{name}, __doc__, methods=VARIANT_NAMES)' in code
        assert per_method or f'entry("{name}", run_{name}, __doc__)' in code, script
        body = [ln for ln in code.split('"""')[-1].splitlines() if ln.strip()]
        assert len(body) == 4 + per_method, f"{script}: only the CLI wrapper belongs here"


# ------------------------------------------------------------------------------- data sets


def test_sources_fingerprint_is_dvc_hash_and_tracks_content(sites, tmp_path) -> None:
    shutil.copytree(sites["b"], tmp_path / "b")
    raw = repo_params()
    raw["data"].update(dicom_dir=str(tmp_path / "b"), labels_csv=str(tmp_path / "b" / "labels.csv"), external=[])
    ws = Workspace(tmp_path / "ws")
    params = write_params(ws.root, raw)
    first = run_sources(params, ws)
    before = ws.path(SOURCES_FILE).read_bytes()
    run_sources(params, ws)
    assert ws.path(SOURCES_FILE).read_bytes() == before  # unchanged data: byte-identical -> no rerun
    s = first["sets"][0]
    assert s["name"] == "internal" and s["n_files"] == 7  # 6 images + labels.csv inside the folder

    # The hash is DVC's own: `dvc add` of the same folder records the same md5.
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=tmp_path, check=True, timeout=120)
    subprocess.run([str(dvc), "add", "-q", "b"], cwd=tmp_path, check=True, timeout=120)
    assert f"md5: {s['dicom_dir_md5']}" in (tmp_path / "b.dvc").read_text()

    shutil.rmtree(tmp_path / ".dvc")
    first_file = next((tmp_path / "b").rglob("*.dcm"))
    first_file.write_bytes(first_file.read_bytes()[:-2] + b"\x00\x01")  # same size, new content
    assert run_sources(params, ws)["sets"][0]["dicom_dir_md5"] != s["dicom_dir_md5"]


def test_sources_names_a_missing_folder(sites, tmp_path) -> None:
    ext = _ext(sites, "b")
    ext[0]["dicom_dir"] = str(tmp_path / "nowhere")
    params = _params(tmp_path, sites, ext)
    with pytest.raises(SourceError, match=r"data.external\[site-b\].dicom_dir .*is not a folder"):
        run_sources(params, Workspace(tmp_path))


@pytest.mark.parametrize("external", [[], None, "two", "legacy"])
def test_ingest_and_split_with_zero_one_or_several_external_sets(sites, tmp_path, external) -> None:
    if external == "two":
        external = _ext(sites, "b", "c", description="Adult PA radiographs, hospital B")
    elif external == "legacy":  # the single mapping of earlier versions: one set named `external`
        external = {"dicom_dir": str(sites["b"]), "labels_csv": str(sites["b"] / "labels.csv")}
    params = _params(tmp_path, sites, external)
    ws = Workspace(tmp_path)
    with pytest.raises(SourceError, match="run the sources stage first"):
        (
            ws.path(SOURCES_FILE).parent.mkdir(parents=True, exist_ok=True),
            ws.path(SOURCES_FILE).write_text(
                json.dumps(
                    {
                        "schema_version": 1,
                        "hash": "md5 (DVC)",
                        "sets": [
                            {
                                "name": "other",
                                "role": "internal",
                                "dicom_dir": "x",
                                "labels_csv": "x.csv",
                                "description": None,
                                "dicom_dir_md5": "a.dir",
                                "n_files": 1,
                                "size_bytes": 1,
                                "labels_csv_md5": "b",
                            }
                        ],
                    }
                )
            ),
            run_ingest(params, ws),
        )
    run_sources(params, ws)
    report = run_ingest(params, ws)
    names = [e.name for e in params.data.external]
    assert list(report["external"]) == names
    manifest = pd.read_csv(ws.manifest)
    assert list(manifest["source"].drop_duplicates()) == ["internal", *names]
    for name, block in report["external"].items():
        assert block["accepted"] == (manifest["source"] == name).sum() > 0
    split = run_split(params, ws)
    assert [k for k in split if k.startswith("external")] == [f"external/{n}" for n in sorted(names)]
    splits = pd.read_csv(ws.splits)
    assert (splits.loc[manifest["source"] != "internal", "split"] == "external").all()
    for f in ws.root.rglob("*"):
        if f.is_file() and f.suffix in {".json", ".csv"}:
            assert PATIENT_NAME not in f.read_text(errors="replace")


# ------------------------------------------------------------------------------- later stages


def test_augment_step_views_train_only(workspace) -> None:
    from PIL import Image

    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 2 + ["external"] * 2
    raw = repo_params()
    raw["augment"].update(copies=2, preview_images=3)
    params = write_params(workspace.root, raw)
    make_processed(workspace, split)
    run_augment(params, workspace)
    views = open_store(workspace.path(paths.AUGMENTED_STORE))
    index = pd.read_csv(workspace.path(paths.AUGMENTED_INDEX))
    train = np.flatnonzero(np.array(split) == "train")
    assert views.shape == (len(train) * 2, 16, 16) and views.dtype == np.float16
    assert set(index["row"]) == set(train)  # never val/test/external
    with Image.open(workspace.path(paths.FIGURES / "augment_preview.png")) as im:
        assert im.format == "PNG"


def test_evaluate_step_reports_each_external_set(workspace) -> None:
    rng = np.random.default_rng(3)
    n_pat = 160
    split_of = rng.choice(["train", "val", "test", "ext-a", "ext-b"], size=n_pat, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    rows = []
    for p in range(n_pat):
        for _ in range(2):
            s = split_of[p]
            rows.append(
                {
                    "patient": f"{p:016x}",
                    "label": "abnormal" if p % 2 else "normal",
                    "split": "external" if s.startswith("ext") else s,
                    "source": {"ext-a": "site-a", "ext-b": "site-b"}.get(s, "internal"),
                }
            )
    man = pd.DataFrame(rows)
    man.insert(0, "row", range(len(man)))
    man["file"] = [f"f{i}.dcm" for i in range(len(man))]
    for col, val in (("sex", "F"), ("age", 50.0), ("view", "PA")):
        man[col] = val
    workspace.path(paths.PROCESSED).mkdir(parents=True)
    man.to_csv(workspace.manifest, index=False)
    raw = repo_params()
    raw["data"]["external"] = [{"name": n, "dicom_dir": "x", "labels_csv": "y"} for n in ("site-a", "site-b", "site-c")]
    raw["evaluate"]["bootstrap_samples"] = 100
    params = write_params(workspace.root, raw)
    with pytest.raises(Exception, match="no prediction files"):
        run_evaluate(params, workspace)
    y = (man["label"] == "abnormal").to_numpy()
    ds = Dataset(manifest=man, images=np.zeros((len(man), 2, 2), np.float16), classes=("normal", "abnormal"))
    for name in ("linear", "scratch"):  # finetune missing: evaluated methods are those present
        p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, len(man)), 0.01, 0.99)
        write_predictions(workspace.predictions(name), ds, np.stack([1 - p, p], axis=1))
    metrics, ev = run_evaluate(params, workspace)
    assert ev["results"]["linear"]["val_calibration"]["n_val_images"] == len(ds.rows("val"))
    assert set(metrics) == {"linear", "scratch"}
    assert list(metrics["linear"]) == ["test", "external/site-a", "external/site-b"]
    counts = man[man["split"] == "external"]["source"].value_counts()
    assert metrics["linear"]["external/site-a"]["n"] == counts["site-a"]
    assert any("'site-c'" in note for note in ev["notes"])  # configured, no rows: said, not guessed
    assert json.loads(workspace.path(paths.METRICS).read_text()) == json.loads(json.dumps(metrics))
    plots = workspace.path(paths.PLOTS)
    assert (plots / "roc" / "linear_external-site-a.csv").is_file()
    assert read_predictions(workspace.predictions("linear"))["source"].nunique() == 3
    calibration_path(workspace.predictions("scratch")).unlink()  # a hand-made or stale file
    with pytest.raises(ContractError, match="scratch.calibration.json is missing"):
        run_evaluate(params, workspace)


def test_missing_upstream_artifact_is_a_stage_error(workspace) -> None:
    with pytest.raises(MissingArtifactError, match="manifest.csv is missing"):
        run_split(write_params(workspace.root, repo_params()), workspace)


def feature_workspace(workspace: Workspace) -> int:
    """A tiny frozen-feature problem in ``workspace`` (what the features stage leaves): 20
    patients x 2 images with patient-level classes, 12 train / 4 val / 4 test patients, one
    augmented view per train image. Returns the number of images."""
    from test_linear import _problem

    # 20 patients x 2 images, patient-level classes; 12 train, 4 val, 4 test patients.
    X, y, groups = _problem(n_patients=20, dim=6, sep=3.0)
    n = len(y)
    patient_idx = np.repeat(np.arange(20), 2)
    split = np.select([patient_idx < 12, patient_idx < 16], ["train", "val"], "test")
    proc = workspace.path(paths.PROCESSED)
    proc.mkdir(parents=True)
    write_store(workspace.store, np.zeros((n, 16, 16), np.float16))
    manifest = pd.DataFrame(
        {
            "row": range(n),
            "file": [f"f{i}.dcm" for i in range(n)],
            "source": "internal",
            "patient": groups,
            "label": np.where(y == 1, "abnormal", "normal"),
        }
    )
    manifest.to_csv(workspace.manifest, index=False)
    manifest.assign(split=split)[["row", "patient", "label", "split"]].to_csv(workspace.splits, index=False)
    train = np.flatnonzero(split == "train")
    pd.DataFrame({"aug_row": range(len(train)), "row": train, "copy": 0}).to_csv(
        workspace.path(paths.AUGMENTED_INDEX), index=False
    )
    workspace.path(paths.FEATURES_DIR).mkdir(parents=True)
    np.save(workspace.path(paths.FEATURES), X.astype(np.float32))
    np.save(workspace.path(paths.AUGMENTED_FEATURES), (X[train] + 0.1).astype(np.float32))
    workspace.path(paths.FEATURES_INFO).write_text(json.dumps(features_info(6, 16, n, len(train))))
    return n


def test_linear_step_end_to_end(workspace) -> None:
    from test_linear import GRID

    n = feature_workspace(workspace)
    raw = repo_params()
    raw["linear"].update(cv_folds=3, C_grid=GRID)
    params = write_params(workspace.root, raw)

    from pipeline.steps.linear import run_linear

    run_linear(params, workspace)
    preds = read_predictions(workspace.predictions("linear"), ("normal", "abnormal"))
    assert preds["row"].tolist() == list(range(n)) and set(preds["split"]) == {"train", "val", "test"}
    assert workspace.path("models/linear/model.joblib").is_file()
    log = json.loads(workspace.train_log("linear").read_text())
    card = log["model_card"]
    assert card["path"] == "linear" and card["weights_sha256"] == "ab" * 32
    assert card["trained"] == "logistic regression on frozen 6-d embeddings"
    assert (card["n_train_images"], card["n_train_augmented"], card["n_train_patients"]) == (24, 24, 12)
    search = log["C_search"]  # separable data: C climbs past the grid to linear.C_max, said so
    assert search["initial_grid"] == GRID and [r["C"] for r in log["cv"]] == search["searched_grid"]
    assert log["best_C"] == search["best_C"] == max(search["searched_grid"]) and search["stop"] == "bound"
    assert card["C_scoring"] == "neg_log_loss" and card["C_stop_reason"] in card["cv_warnings"]
    assert log["val_auroc"] > 0.9
