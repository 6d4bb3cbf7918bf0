"""The clinical evaluation report: one self-contained HTML file and the same content as Markdown.

Structure after the CLAIM (Checklist for AI in Medical Imaging) and TRIPOD+AI reporting
guidelines. Every number shown is read from the pipeline's JSON reports (ingest.json, split.json,
metrics.json, evaluation.json, diagnostics.json, reports/train/*.json); nothing here computes a
statistic. A missing optional input gives its section an explicit "not available" note.

How: :func:`load_inputs` reads the files, :func:`build_sections` turns them into a list of
sections made of simple blocks (paragraph, table, figure, note, ...), and one Jinja2 template per
format renders the same blocks, so the HTML and the Markdown cannot drift apart. The HTML embeds
figures as base64 PNG data URIs and inline CSS, and has no script and no remote reference; the
Markdown links the PNG files under ``reports/figures/``.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import contracts as C
from pipeline import paths
from pipeline.common import get_logger

log = get_logger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# (id, title): the report's sections in order; ids are the HTML anchors (tests look for them).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("intended-use", "Intended use and limitations"),
    ("data-sources", "Data sources"),
    ("ingest", "Ingest: accepted and rejected files"),
    ("patient-flow", "Patient flow"),
    ("demographics", "Demographics per split"),
    ("model-cards", "Model cards"),
    ("results", "Results"),
    ("curves", "ROC, precision-recall and calibration"),
    ("confusion", "Confusion matrices at the pre-registered operating point"),
    ("comparisons", "Paired comparisons"),
    ("subgroups", "Subgroups"),
    ("overfitting", "Overfitting diagnostics"),
    ("gradcam", "Grad-CAM heatmaps"),
    ("reproducibility", "Reproducibility"),
    ("checklist", "Reporting checklist (CLAIM / TRIPOD+AI)"),
)
SECTION_IDS = tuple(s for s, _ in SECTIONS)
PATH_ORDER = ("linear", "finetune", "scratch")
PATH_NAMES = {
    "linear": "linear (frozen features + logistic regression)",
    "finetune": "finetune (differential learning rates)",
    "scratch": "scratch (same network, random initialisation)",
}
PACKAGES = ("torch", "torchvision", "monai", "pydicom", "scikit-learn", "numpy", "scipy", "pandas", "dvc", "dvclive")
SALT_MASK = "***masked***"
DEMO_DIR = "data/demo/dicom"

# --------------------------------------------------------------------------- blocks


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    row_classes: list[str] = field(default_factory=list)  # e.g. "flagged" per row (HTML only)
    caption: str = ""


@dataclass
class Figure:
    key: str
    path: Path  # the PNG on disk
    md_path: str  # relative to the Markdown file
    caption: str
    uri: str = ""  # data: URI, filled when rendering HTML


def p(text: str) -> dict[str, Any]:
    return {"kind": "p", "text": text}


def callout(text: str) -> dict[str, Any]:
    return {"kind": "callout", "text": text}


def missing(text: str) -> dict[str, Any]:
    """An explicit 'not available' note: missing inputs are said, never silently skipped."""
    return {"kind": "missing", "text": text}


def h3(text: str) -> dict[str, Any]:
    return {"kind": "h3", "text": text}


def ul(items: Sequence[str]) -> dict[str, Any]:
    return {"kind": "list", "items": list(items)}


def pre(text: str) -> dict[str, Any]:
    # Markdown fence longer than any backtick run inside (attribution files contain fences).
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return {"kind": "pre", "text": text, "fence": "`" * max(3, longest + 1)}


def table(t: Table) -> dict[str, Any]:
    return {"kind": "table", "table": t}


def figure(f: Figure) -> dict[str, Any]:
    return {"kind": "figure", "figure": f}


# --------------------------------------------------------------------------- formatting


def fnum(x: Any, nd: int = 3) -> str:
    """A number as text; ``n/a`` for null/NaN (undefined statistics stay visible as such)."""
    if x is None or isinstance(x, bool):
        return "n/a" if x is None else str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "n/a"
    if isinstance(x, int):  # counts stay counts
        return str(x)
    return f"{v:.{nd}f}"


def fsci(x: Any) -> str:
    """Learning rates and C values: 1e-06, 0.01, 1 (compact, exact as configured)."""
    if x is None:
        return "n/a"
    return f"{float(x):g}"


def fci(v: Any, lo: Any, hi: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{fnum(v, nd)} (CI n/a)"
    return f"{fnum(v, nd)} ({fnum(lo, nd)}–{fnum(hi, nd)})"


def fdiff(v: Any, lo: Any, hi: Any) -> str:
    """A difference with its CI, 'to' between bounds (negative bounds stay readable)."""
    if v is None:
        return "n/a"
    return f"{fnum(v)} (95% CI {fnum(lo)} to {fnum(hi)})"


def fp(x: Any) -> str:
    """A p-value: three decimals, or '< 0.001'."""
    if x is None:
        return "n/a"
    v = float(x)
    if not math.isfinite(v):
        return "n/a"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def fblock(b: Mapping[str, Any] | None, nd: int = 3) -> str:
    """``{"value","ci_low","ci_high"}`` -> '0.812 (0.741–0.883)'."""
    if not b:
        return "n/a"
    return fci(b.get("value"), b.get("ci_low"), b.get("ci_high"), nd)


def fprop(b: Mapping[str, Any] | None) -> str:
    """A Wilson block: value (CI) k/n."""
    if not b or b.get("value") is None:
        return "n/a" if not b else f"n/a ({b.get('k', '?')}/{b.get('n', '?')})"
    return f"{fblock(b)} {b.get('k')}/{b.get('n')}"


_SCHEME = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://")


def strip_url_schemes(text: str) -> str:
    """Web addresses in cited text lose their scheme: plain-text citations, never links."""
    return _SCHEME.sub("", text)


def mask_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The validated params with the pseudonym salt masked (it protects the pseudonyms)."""
    out = yaml.safe_load(yaml.safe_dump(dict(raw), sort_keys=False))
    if isinstance(out.get("ingest"), dict) and "pseudonym_salt" in out["ingest"]:
        out["ingest"]["pseudonym_salt"] = SALT_MASK
    return out


# --------------------------------------------------------------------------- inputs


@dataclass
class ReportInputs:
    """Everything the report shows, read from disk; ``None`` = that input is missing."""

    params: Any  # pipeline.params.Params
    ingest: C.IngestReport | None = None
    split: C.SplitReport | None = None
    metrics: dict | None = None  # validated against C.Metrics
    evaluation: dict | None = None  # validated against C.Evaluation
    diagnostics: dict | None = None  # validated against C.Diagnostics
    train_logs: dict[str, C.TrainLog | C.LinearLog | C.KnnLog] = field(default_factory=dict)
    features_info: C.FeaturesInfo | None = None
    attributions: list[tuple[str, str]] = field(default_factory=list)  # (folder, text)
    figures: dict[str, Path] = field(default_factory=dict)  # existing upstream PNGs by key
    gradcam: Any = None  # GradcamResult, or None with gradcam_note
    gradcam_note: str = ""
    repro: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # input -> why it is unavailable


def _read_optional(path: Path, problems: dict[str, str], name: str, model: type[C.M]) -> C.M | None:
    """The file validated against its contract; ``None`` (and the reason in ``problems``) when it
    is missing, not JSON or does not match."""
    if not path.exists():
        problems[name] = f"{name} not found"
        return None
    try:
        return C.read_contract(path, model)
    except C.ContractError as err:
        problems[name] = str(err)
        return None


def _read_plain(path: Path, problems: dict[str, str], name: str, model: type[C.M]) -> dict | None:
    """Like :func:`_read_optional`, as the plain (validated) document."""
    doc = _read_optional(path, problems, name, model)
    return None if doc is None else doc.model_dump(by_alias=True, exclude_unset=True)


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def reproducibility_facts(root: Path, params_raw: Mapping[str, Any]) -> dict[str, Any]:
    import platform

    from pipeline.provenance import reproducibility_record
    from pipeline.sources import SOURCES_FILE

    sources = root / SOURCES_FILE
    return {
        "record": reproducibility_record(root, C.read_contract(sources, C.Sources) if sources.is_file() else None),
        "packages": package_versions(),
        "python": platform.python_version(),
        "params": mask_params(params_raw),
    }


def load_inputs(root: Path, params: Any, params_raw: Mapping[str, Any] | None = None) -> ReportInputs:
    """Read the pipeline's reports under ``root``, each validated against its contract; missing or
    invalid ones are recorded, not fatal."""
    from pipeline.params import resolve_path

    root = Path(root)
    problems: dict[str, str] = {}
    inp = ReportInputs(params=params, problems=problems)
    inp.ingest = _read_optional(root / paths.INGEST_REPORT, problems, str(paths.INGEST_REPORT), C.IngestReport)
    inp.split = _read_optional(root / paths.SPLIT_REPORT, problems, str(paths.SPLIT_REPORT), C.SplitReport)
    inp.metrics = _read_plain(root / paths.METRICS, problems, str(paths.METRICS), C.Metrics)
    inp.evaluation = _read_plain(root / paths.EVALUATION, problems, str(paths.EVALUATION), C.Evaluation)
    inp.diagnostics = _read_plain(root / paths.DIAGNOSTICS, problems, str(paths.DIAGNOSTICS), C.Diagnostics)
    inp.features_info = _read_optional(root / paths.FEATURES_INFO, problems, str(paths.FEATURES_INFO), C.FeaturesInfo)
    for name in paths.PATHS:
        log_ = _read_optional(
            root / paths.train_log(name), problems, str(paths.train_log(name)), C.train_log_model(name)
        )
        if log_ is not None:
            inp.train_logs[name] = log_
    folders = [params.data.dicom_dir] + [e.dicom_dir for e in params.data.external]
    for folder in folders:
        # Attribution sits in the DICOM folder or beside it (next to the labels CSV), so that
        # ingest sees only DICOM files in the folder itself.
        for where in (Path(folder), Path(folder).parent):
            f = resolve_path(where, root) / "ATTRIBUTION.md"
            if f.exists():
                inp.attributions.append((where.as_posix(), f.read_text(encoding="utf-8", errors="replace")))
                break
    candidates = {"augment_preview": root / paths.FIGURES / "augment_preview.png"}
    if inp.diagnostics:
        for key, rel in (inp.diagnostics.get("figures") or {}).items():
            candidates[f"diagnose_{key}"] = root / rel
    inp.figures = {k: v for k, v in candidates.items() if v.exists()}
    raw = params_raw if params_raw is not None else params.model_dump(mode="json")
    inp.repro = reproducibility_facts(root, raw)
    return inp


# --------------------------------------------------------------------------- section builders


def _configured_splits(inp: ReportInputs) -> list[str]:
    """The splits a claim is made on: test, then every configured external set (params order)."""
    return ["test"] + [e.split_key for e in inp.params.data.external]


def _split_title(inp: ReportInputs, split: str) -> str:
    """How the report names a split: never guessed from folder names."""
    for e in inp.params.data.external:
        if e.split_key == split:
            return f"External: {e.label}" if e.description else e.label[0].upper() + e.label[1:]
    return f"{split} split"


def _ingest_sources(inp: ReportInputs) -> list[tuple[str, C.IngestBlock]]:
    """(name, ingest block) of the development set and of every external set ingested."""
    ing = inp.ingest
    if ing is None:
        return []
    return [("development", ing)] + [(f"external `{n}`", b) for n, b in ing.external.items()]


def _splits_present(inp: ReportInputs) -> list[str]:
    ev = inp.evaluation or {}
    return list(ev.get("splits") or [])


def _paths_present(inp: ReportInputs) -> list[str]:
    ev = inp.evaluation or {}
    got = list(ev.get("paths") or []) or [p for p in PATH_ORDER if p in (inp.metrics or {})]
    return [p for p in PATH_ORDER if p in got] + [p for p in got if p not in PATH_ORDER]


def _split_block(inp: ReportInputs, path: str, split: str) -> dict | None:
    return ((inp.evaluation or {}).get("results", {}).get(path, {}).get("splits", {}) or {}).get(split)


def _auroc(inp: ReportInputs, path: str, split: str) -> dict | None:
    """Headline AUROC {value, ci_low, ci_high}: evaluation.json, else metrics.json."""
    b = _split_block(inp, path, split)
    if b and b.get("auroc"):
        return b["auroc"]
    m = (inp.metrics or {}).get(path, {}).get(split)
    if m and "auroc" in m:
        return {"value": m.get("auroc"), "ci_low": m.get("auroc_ci_low"), "ci_high": m.get("auroc_ci_high")}
    return None


def _comparison(inp: ReportInputs, split: str, a: str, b: str) -> dict | None:
    """Paired comparison a - b from evaluation.json (sign flipped when stored as b - a)."""
    for c in ((inp.evaluation or {}).get("comparisons") or {}).get(split, []) or []:
        if c.get("path_a") == a and c.get("path_b") == b:
            return dict(c)
        if c.get("path_a") == b and c.get("path_b") == a:

            def neg(x: Any) -> Any:
                return None if x is None else -x

            return {
                **c,
                "path_a": a,
                "path_b": b,
                "auroc_a": c.get("auroc_b"),
                "auroc_b": c.get("auroc_a"),
                "difference": neg(c.get("difference")),
                "ci_low": neg(c.get("ci_high")),
                "ci_high": neg(c.get("ci_low")),
            }
    return None


def _diff_text(c: Mapping[str, Any] | None) -> str:
    c = c or {}
    pv = fp(c.get("p_value"))
    return (
        f"difference {fnum(c.get('difference'))} (95% CI {fnum(c.get('ci_low'))} to {fnum(c.get('ci_high'))}, "
        f"{c.get('method', 'paired DeLong')} p {pv if pv.startswith('<') else '= ' + pv})"
    )


def _separates(c: Mapping[str, Any] | None) -> int | None:
    """+1 / -1 when the CI of a - b excludes 0 on that side, 0 when it includes 0, None if unknown."""
    if not c or c.get("ci_low") is None or c.get("ci_high") is None:
        return None
    if c["ci_low"] > 0:
        return 1
    if c["ci_high"] < 0:
        return -1
    return 0


def _overlap(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool | None:
    if a is None or b is None or None in (a.get("ci_low"), a.get("ci_high"), b.get("ci_low"), b.get("ci_high")):
        return None
    return not (a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])


def summary_answers(inp: ReportInputs) -> list[str]:
    """The two questions answered from the test-split numbers, hedged where intervals overlap."""
    split = "test"
    paths_ = [p for p in _paths_present(inp) if (_auroc(inp, p, split) or {}).get("value") is not None]
    if not paths_:
        return []
    au: dict[str, dict[str, Any]] = {p: _auroc(inp, p, split) or {} for p in paths_}
    n_txt = ""
    b = _split_block(inp, paths_[0], split)
    if b:
        n_txt = f" (test split: {b.get('n')} images of {b.get('n_patients')} patients, {b.get('n_positive')} positive)"
    out: list[str] = []
    # 1) does the pretrained backbone help?
    pre = [p for p in ("finetune", "linear") if p in au]
    if pre and "scratch" in au:
        best_pre = max(pre, key=lambda p: au[p]["value"])
        c = _comparison(inp, split, best_pre, "scratch")
        head = f"{best_pre} AUROC {fblock(au[best_pre])} vs scratch {fblock(au['scratch'])}{n_txt}"
        s = _separates(c)
        if s == 1:
            out.append(f"Does the pretrained backbone help? Yes, on this test set: {head}; {_diff_text(c)}.")
        elif s == -1:
            out.append(
                "Does the pretrained backbone help? No: training from scratch did better here: "
                f"{head}; {_diff_text(c)}."
            )
        elif s == 0:
            out.append(
                f"Does the pretrained backbone help? Not shown: {head}; the paired {_diff_text(c)} "
                "includes 0, so this test set cannot tell them apart."
            )
        else:
            ov = _overlap(au[best_pre], au["scratch"])
            verdict = (
                "the 95% intervals overlap, so the difference is not established"
                if ov
                else "the 95% intervals do not overlap"
                if ov is False
                else "intervals unavailable"
            )
            out.append(f"Does the pretrained backbone help? {head}: {verdict} (no paired comparison available).")
    else:
        out.append(
            "Does the pretrained backbone help? Cannot say: the scratch path or every pretrained path is missing."
        )
    # 2) which path is best?
    ranked = sorted(au, key=lambda p: -au[p]["value"])
    best = ranked[0]
    if len(ranked) == 1:
        out.append(f"Which path is best? Only {best} was evaluated: AUROC {fblock(au[best])}.")
    else:
        runner = ranked[1]
        c = _comparison(inp, split, best, runner)
        s = _separates(c)
        order = ", ".join(f"{p} {fblock(au[p])}" for p in ranked)
        if s == 1:
            out.append(
                f"Which path is best? {best}: test AUROC {order}; against the runner-up {runner}, {_diff_text(c)}."
            )
        elif s == 0 or (s is None and _overlap(au[best], au[runner])):
            why = _diff_text(c) + " includes 0" if c else "their 95% intervals overlap"
            out.append(
                f"Which path is best? {best} has the highest point estimate (test AUROC {order}), but against "
                f"{runner} the {why}: the data do not separate them."
            )
        else:
            out.append(f"Which path is best? {best}: test AUROC {order}.")
    return out


def _section_summary(inp: ReportInputs) -> list[dict]:
    from pipeline.report.answer import answer

    blocks: list[dict] = []
    titles = {s: _split_title(inp, s) for s in _splits_present(inp)}
    for ans in answer(inp.evaluation, inp.train_logs, inp.diagnostics, titles):
        blocks.append(h3(f"The answer: {ans['title']}"))
        blocks.append(callout(" ".join(ans["sentences"])))
        if ans["warnings"]:
            blocks.append(ul([f"⚠ {w}" for w in ans["warnings"]]))
    answers = summary_answers(inp)
    if not answers:
        blocks.append(
            missing(
                "No test-split results: reports/evaluation.json and reports/metrics.json are "
                "missing or empty, so the questions cannot be answered."
            )
        )
    for a in answers:
        blocks.append(callout(a))
    for e in inp.params.data.external:
        ext = [p for p in _paths_present(inp) if _auroc(inp, p, e.split_key)]
        if ext:
            b = _split_block(inp, ext[0], e.split_key) or {}
            blocks.append(
                p(
                    f"{_split_title(inp, e.split_key)} (never used for training, thresholds or model choice"
                    + (f"; {b.get('n')} images, {b.get('n_positive')} positive" if b else "")
                    + "): "
                    + "; ".join(f"{q} AUROC {fblock(_auroc(inp, q, e.split_key))}" for q in ext)
                    + "."
                )
            )
        else:
            blocks.append(missing(f"External set `{e.name}` is configured but has no results in evaluation.json."))
    if not inp.params.data.external:
        blocks.append(missing("No external validation: no external set is configured (data.external is empty)."))
    d = inp.diagnostics
    if d and d.get("verdicts"):
        blocks.append(p("Overfitting: " + " ".join(f"{k}: {v.get('text')}" for k, v in d["verdicts"].items())))
        for ref, c in ((d.get("learning_curve") or {}).get("scratch_catch_up") or {}).items():
            blocks.append(p(f"Learning curve (scratch vs {ref}): {c.get('text')}"))
    blocks.append(
        p(
            "AUROC is shown with its patient-level 95% confidence interval (clustered DeLong and patient bootstrap: "
            "a patient's images are not independent); 'the data do not separate them' means "
            "the interval of the paired difference includes zero. Research use only: see the limitations below."
        )
    )
    return blocks


def _is_demo(inp: ReportInputs) -> bool:
    return str(inp.params.data.dicom_dir).rstrip("/") in (DEMO_DIR, f"./{DEMO_DIR}")


def _section_intended_use(inp: ReportInputs) -> list[dict]:
    prm = inp.params
    cls = ", ".join(prm.data.classes)
    blocks = [
        callout(
            "Research use only. This is not a medical device and its outputs must not be used for "
            "diagnosis, triage or any clinical decision."
        ),
        p(
            f"Intended use: to compare, on one labelled set of chest radiographs, three ways of transferring an "
            f"ImageNet-pretrained backbone ({prm.backbone.name}) to the task '{cls}' "
            f"(positive class: {prm.data.positive_class}) — frozen features with logistic regression, "
            f"fine-tuning with per-layer-group learning rates, and the same network trained from scratch."
        ),
        h3("Limitations"),
    ]
    lim = []
    if _is_demo(inp):
        lim.append(
            "Demo data: the NIH ChestX-ray14 images were distributed down-sampled to 64 × 64 pixels, far below "
            f"diagnostic resolution, and are up-sampled to {prm.ingest.size} px for the models. The numbers show "
            "the pipeline working; they say nothing about clinical performance."
        )
    else:
        lim.append(
            f"Images are resized to {prm.ingest.size} × {prm.ingest.size} px ({prm.ingest.fit}); fine detail "
            "visible at full resolution is lost."
        )
    n_txt = ""
    if inp.split:
        tot = _split_rows(inp)
        if tot:
            n_txt = (
                " (" + ", ".join(f"{r['split']}: {r['patients']} patients / {r['images']} images" for r in tot) + ")"
            )
    lim += [
        f"Small sample{n_txt}: confidence intervals are wide and a single split can favour any path by chance; "
        "patient-level splits prevent leakage but not sampling variability.",
        "Labels come from the labels CSV as given; no reader study was done"
        + (
            " (the demo's NIH ChestX-ray14 labels were text-mined from radiology reports and are known to be noisy)."
            if _is_demo(inp)
            else "."
        ),
        "Dataset shift: performance measured on one site's images need not carry over to other scanners, "
        "populations, disease prevalence or acquisition protocols; the operating point was chosen on the "
        "validation split of the development site.",
    ]
    for e in prm.data.external:
        lim.append(
            f"External set `{e.name}`"
            + (f" ({e.description})" if e.description else "")
            + ": it may differ in age, equipment and disease spectrum from the development data, and a "
            "small set gives wide intervals; its results test generalisation, they do not validate "
            "clinical use."
        )
    if not prm.data.external:
        lim.append("No external site was configured: generalisation to other sites is untested.")
    lim.append(
        "Grad-CAM heatmaps are coarse (the last feature map is a few cells wide) and show where the "
        "network's evidence is, not whether it is clinically meaningful."
    )
    blocks.append(ul(lim))
    return blocks


def _section_data_sources(inp: ReportInputs) -> list[dict]:
    d = inp.params.data
    rows = [["development", d.dicom_dir, d.labels_csv, "train / val / test"]]
    rows += [
        [f"external `{e.name}`", e.dicom_dir, e.labels_csv, e.description or "(no description given)"]
        for e in d.external
    ]
    blocks = [
        table(Table(["set", "DICOM folder", "labels CSV", "description"], rows)),
        p(
            f"Classes: {', '.join(d.classes)}; positive class: {d.positive_class}. Labels come from the labels CSV "
            "(columns file, label); patient, sex, age and view from the DICOM header. Patient IDs are stored only "
            "as salted hashes; names and dates are never read into any output."
        ),
    ]
    if not d.external:
        blocks.append(missing("No external data source is configured (data.external is empty)."))
    if inp.attributions:
        for folder, text in inp.attributions:
            blocks.append(h3(f"Attribution: {folder}/ATTRIBUTION.md"))
            blocks.append(pre(strip_url_schemes(text.strip())))
    else:
        blocks.append(
            missing("No ATTRIBUTION.md found in the data folders: provenance and licence are not documented here.")
        )
    return blocks


def _section_ingest(inp: ReportInputs) -> list[dict]:
    ing = inp.ingest
    if not ing:
        return [missing(f"Ingest report unavailable: {inp.problems.get('reports/ingest.json', 'missing')}.")]
    sources = _ingest_sources(inp)
    classes = list(inp.params.data.classes)
    rows = []
    for name, s in sources:
        rows.append(
            [name, fnum(s.seen), fnum(s.accepted), fnum(s.rejected), fnum(len(s.labels_without_file))]
            + [fnum(s.per_class.get(c, 0)) for c in classes]
            + [fnum(s.patients)]
        )
    blocks = [
        p(
            "Every file found is either accepted or rejected with a reason (accepted + rejected = seen). "
            "'Labels without a file': rows of the labels CSV naming a file that was not found."
        ),
        table(
            Table(
                ["set", "files seen", "accepted", "rejected", "labels without a file"]
                + [f"accepted: {c}" for c in classes]
                + ["patients"],
                rows,
            )
        ),
    ]
    reasons = sorted({r for _, s in sources for r in s.reasons})
    if reasons:
        rt = [[r] + [fnum(s.reasons.get(r, 0)) for _, s in sources] for r in reasons]
        blocks.append(table(Table(["rejection reason"] + [n for n, _ in sources], rt, caption="Rejections by reason")))
    else:
        blocks.append(p("No file was rejected."))
    if len(sources) == 1:
        blocks.append(missing("No external set was ingested."))
    blocks.append(
        p(
            "The names of rejected files are listed in reports/ingest.json and not reproduced here, "
            "because file names can carry patient identifiers."
        )
    )
    return blocks


def _split_stats(inp: ReportInputs) -> dict[str, C.SplitStats]:
    """split.json per split: train, val, test, then the external sets in the file's order."""
    if inp.split is None:
        return {}
    block = inp.split.splits
    keys = [k for k in ("train", "val", "test") if k in block] + [k for k in block if k.startswith("external/")]
    return {k: block[k] for k in keys}


def _split_rows(inp: ReportInputs) -> list[dict[str, Any]]:
    return [
        {"split": name, "patients": st.patients, "images": st.images, "labels": st.labels}
        for name, st in _split_stats(inp).items()
    ]


def _section_flow(inp: ReportInputs) -> list[dict]:
    rows = _split_rows(inp)
    blocks: list[dict] = []
    if not rows:
        return [missing(f"Split report unavailable: {inp.problems.get('reports/split.json', 'no per-split counts')}.")]
    ing = inp.ingest
    classes = list(inp.params.data.classes)
    steps = []
    if ing:
        steps.append(
            f"Development site: {fnum(ing.seen)} files found → {fnum(ing.accepted)} accepted "
            f"({fnum(ing.rejected)} rejected, see Ingest)."
        )
    dev = [r for r in rows if not r["split"].startswith("external")]
    if dev:
        steps.append(
            "Split by patient (no patient in two splits): "
            + "; ".join(f"{r['split']} {fnum(r['patients'])} patients / {fnum(r['images'])} images" for r in dev)
            + "."
        )
    ext = [r for r in rows if r["split"].startswith("external/")]
    by_split = {r["split"]: r for r in ext}
    for name, e in ing.external.items() if ing else []:
        r = by_split.get(f"external/{name}")
        steps.append(
            f"{_split_title(inp, f'external/{name}')}: {fnum(e.seen)} files found → "
            f"{fnum(e.accepted)} accepted"
            + (f" → {fnum(r['patients'])} patients / {fnum(r['images'])} images, never trained on." if r else ".")
        )
    blocks.append(ul(steps))
    t_rows = [
        [r["split"], fnum(r["patients"]), fnum(r["images"])] + [fnum(r["labels"].get(c)) for c in classes] for r in rows
    ]
    blocks.append(table(Table(["split", "patients", "images"] + [f"images: {c}" for c in classes], t_rows)))
    if not ext:
        blocks.append(missing("No external split."))
    return blocks


def _section_demographics(inp: ReportInputs) -> list[dict]:
    stats = _split_stats(inp)
    if not stats:
        return [missing("Split report unavailable: no demographics per split.")]
    blocks: list[dict] = []
    for attr, label in (("sex", "Sex (images)"), ("view", "View position (images)")):
        counts = {k: getattr(v, attr) for k, v in stats.items()}
        blocks.append(h3(label))
        keys = sorted({k for v in counts.values() for k in v}, key=str)
        rows = [[str(k)] + [fnum(counts[s].get(k, 0)) for s in stats] for k in keys]
        blocks.append(table(Table([label.split(" (")[0]] + list(stats), rows)))
    blocks.append(h3("Age (years)"))
    blocks.append(
        table(
            Table(
                ["Age"] + list(stats),
                [
                    ["mean"] + [fnum(v.age_mean, 1) for v in stats.values()],
                    ["unknown (images)"] + [fnum(v.age_unknown) for v in stats.values()],
                ],
            )
        )
    )
    return blocks


def _section_model_cards(inp: ReportInputs) -> list[dict]:
    blocks: list[dict] = []
    fi = inp.features_info
    for name in PATH_ORDER:
        log_ = inp.train_logs.get(name)
        blocks.append(h3(PATH_NAMES[name]))
        if log_ is None:
            why = inp.problems.get(str(paths.train_log(name)), f"reports/train/{name}.json not found")
            blocks.append(missing(f"No training log for {name} ({why})."))
            continue
        c = log_.model_card
        rows = [
            ["backbone", c.backbone],
            ["weights source", c.weights_source],
            ["weights sha256", c.weights_sha256 or "none (random initialisation)"],
            ["what was trained", c.trained],
            [
                "epochs run / kept epoch",
                f"{fnum(c.epochs_run)} / {fnum(c.best_epoch)}"
                if c.epochs_run is not None
                else "no epochs (closed-form convex fit)",
            ],
            ["device", c.device],
            ["wall time", f"{fnum(c.wall_time_s, 1)} s"],
            ["image size", f"{fnum(c.image_size)} px"],
            ["seed", fnum(c.seed)],
        ]
        if isinstance(c, C.LinearModelCard):
            rows += [
                ["C (chosen by grouped CV)", fsci(c.C)],
                ["CV folds used / requested", f"{fnum(c.cv_folds)} / {fnum(c.cv_folds_requested)}"],
                ["frozen", c.frozen],
            ]
            if fi:
                rows.append(["feature dimension", fnum(fi.D)])
        elif isinstance(c, C.KnnModelCard):
            rows += [["k (chosen by grouped CV)", fnum(c.k)], ["frozen", c.frozen]]
        else:
            rows.append(["early stopping on", c.monitor])
        blocks.append(table(Table(["item", "value"], rows)))
        groups = c.layer_groups
        if groups:
            blocks.append(
                table(
                    Table(
                        ["layer group", "learning rate", "parameters", "trainable"],
                        [[g.name, fsci(g.lr), fnum(g.n_params), "yes" if g.trainable else "no"] for g in groups],
                        caption=f"{name}: learning rate per layer group",
                    )
                )
            )
        elif name == "linear":
            blocks.append(p("No backbone layer is trained: the embeddings were computed once, without gradients."))
    return blocks


def _section_results(inp: ReportInputs) -> list[dict]:
    if not inp.evaluation:
        return [missing(f"Evaluation unavailable: {inp.problems.get('reports/evaluation.json', 'missing')}.")]
    ev = inp.evaluation
    blocks: list[dict] = [
        p(
            "AUROC with its patient-level 95% interval (the wider of the clustered DeLong, Obuchowski 1997, and the "
            "patient bootstrap), the image-level DeLong interval for reference (it treats images as independent and "
            "is too narrow when patients have several images), and the patient-weighted AUROC; AP = average "
            "precision; sensitivity, specificity, PPV and NPV at the operating point chosen on the validation split "
            "(method: " + str((ev.get("settings") or {}).get("operating_point")) + "), with Wilson 95% intervals "
            "and counts k/n; Brier score and expected calibration error (ECE) of the positive-class probability."
        )
    ]
    for note in ev.get("notes") or []:
        blocks.append(p(f"Note: {note}"))
    if not inp.params.data.external:
        blocks.append(missing("No external results: no external set is configured (data.external is empty)."))
    for split in _configured_splits(inp):
        blocks.append(h3(_split_title(inp, split)))
        if split not in (ev.get("splits") or []):
            blocks.append(missing(f"No results for {split}: it has no evaluated rows."))
            continue
        rows = []
        for path in _paths_present(inp):
            b = _split_block(inp, path, split)
            if not b:
                continue
            at = b.get("at_threshold") or {}
            cal = b.get("calibration") or {}
            op = ev["results"][path].get("operating_point") or {}
            rows.append(
                [
                    path,
                    f"{fnum(b.get('n'))} ({fnum(b.get('n_positive'))} pos, {fnum(b.get('n_patients'))} pts)",
                    fblock(b.get("auroc")),
                    fblock(b.get("auroc_image")),
                    fnum(b.get("auroc_patient_weighted")),
                    fnum(b.get("average_precision")),
                    fprop(at.get("sensitivity")),
                    fprop(at.get("specificity")),
                    fprop(at.get("ppv")),
                    fprop(at.get("npv")),
                    fnum(cal.get("brier")),
                    fnum(cal.get("ece")),
                    fnum(op.get("threshold")),
                ]
            )
        blocks.append(
            table(
                Table(
                    [
                        "path",
                        "n",
                        "AUROC (patient-level CI)",
                        "AUROC (image-level CI)",
                        "AUROC patient-weighted",
                        "AP",
                        "sensitivity",
                        "specificity",
                        "PPV",
                        "NPV",
                        "Brier",
                        "ECE",
                        "threshold",
                    ],
                    rows,
                )
            )
        )
    return blocks


def _section_curves(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    if not inp.evaluation:
        return [missing("Evaluation unavailable: no curves.")]
    blocks: list[dict] = []
    for key in ("roc", "pr", "calibration"):
        f = figs.get(key)
        if f:
            blocks.append(figure(f))
        else:
            blocks.append(missing(f"The {key} figure could not be drawn (no curve data in evaluation.json)."))
    if not any(s.startswith("external/") for s in _splits_present(inp)):
        blocks.append(missing("No external set evaluated, so only test curves are shown."))
    return blocks


def _section_confusion(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    ev = inp.evaluation
    if not ev:
        return [missing("Evaluation unavailable: no confusion matrices.")]
    blocks: list[dict] = []
    rows = []
    for path in _paths_present(inp):
        op = ev["results"][path].get("operating_point") or {}
        method = op.get("method")
        if method == "sensitivity":
            method = f"sensitivity ≥ {fnum(op.get('target_sensitivity'), 2)} on val"
        for split in _splits_present(inp):
            b = _split_block(inp, path, split) or {}
            conf = (b.get("at_threshold") or {}).get("confusion")
            if conf:
                rows.append(
                    [
                        path,
                        split,
                        str(method),
                        fnum(op.get("threshold")),
                        fnum(conf.get("tp")),
                        fnum(conf.get("fp")),
                        fnum(conf.get("fn")),
                        fnum(conf.get("tn")),
                    ]
                )
            else:
                rows.append([path, split, str(method), fnum(op.get("threshold")), "n/a", "n/a", "n/a", "n/a"])
                if op.get("note"):
                    blocks.append(p(f"{path}: {op['note']}"))
    blocks.append(
        p(
            "The threshold of each path was fixed on the validation split before the test and external "
            "sets were scored (pre-registered); a case is called positive when its probability is at or "
            "above the threshold."
        )
    )
    blocks.append(table(Table(["path", "split", "operating point", "threshold", "TP", "FP", "FN", "TN"], rows)))
    if figs.get("confusion"):
        blocks.append(figure(figs["confusion"]))
    return blocks


def _section_comparisons(inp: ReportInputs) -> list[dict]:
    ev = inp.evaluation
    if not ev:
        return [missing("Evaluation unavailable: no paired comparisons.")]
    blocks: list[dict] = [
        p(
            "Each pair of methods on the same images (paired, patient-level test of the AUROC difference, "
            "A minus B). A 95% interval that includes 0 means the data do not separate the two; "
            "p-values are not corrected for the three comparisons."
        )
    ]
    for split in _configured_splits(inp):
        comps = (ev.get("comparisons") or {}).get(split)
        if not comps:
            blocks.append(missing(f"No paired comparisons for {split}."))
            continue
        rows = [
            [
                c.get("path_a"),
                c.get("path_b"),
                fnum(c.get("n")),
                fnum(c.get("auroc_a")),
                fnum(c.get("auroc_b")),
                fdiff(c.get("difference"), c.get("ci_low"), c.get("ci_high")),
                fp(c.get("p_value")),
            ]
            for c in comps
        ]
        blocks.append(h3(_split_title(inp, split)))
        blocks.append(table(Table(["A", "B", "n", "AUROC A", "AUROC B", "difference (95% CI)", "p"], rows)))
    return blocks


def _section_subgroups(inp: ReportInputs) -> list[dict]:
    ev = inp.evaluation
    if not ev:
        return [missing("Evaluation unavailable: no subgroup analysis.")]
    st = ev.get("settings") or {}
    blocks: list[dict] = [
        p(
            "AUROC (patient-level 95% CI) per subgroup of sex, age band and view. "
            f"⚑ marks a flagged subgroup: fewer than "
            f"{fnum(st.get('min_subgroup_size'))} images or a single class (its AUROC is unreliable or undefined). "
            "Subgroup results are exploratory."
        )
    ]
    for split in _configured_splits(inp):
        if split not in _splits_present(inp):
            blocks.append(missing(f"No subgroups for {split}: it was not evaluated."))
            continue
        rows, classes = [], []
        for path in _paths_present(inp):
            for g in (_split_block(inp, path, split) or {}).get("subgroups") or []:
                flag = g.get("flagged")
                rows.append(
                    [
                        path,
                        str(g.get("attribute")),
                        ("⚑ " if flag else "") + str(g.get("group")),
                        fnum(g.get("n")),
                        fnum(g.get("n_patients")),
                        fnum(g.get("n_positive")),
                        fci(g.get("auroc"), g.get("ci_low"), g.get("ci_high")),
                        "; ".join(g.get("flags") or []) if flag else "",
                    ]
                )
                classes.append("flagged" if flag else "")
        blocks.append(h3(_split_title(inp, split)))
        if rows:
            blocks.append(
                table(
                    Table(
                        ["path", "attribute", "group", "n", "patients", "positive", "AUROC (95% CI)", "flag"],
                        rows,
                        row_classes=classes,
                    )
                )
            )
        else:
            blocks.append(missing(f"No subgroup rows in evaluation.json for the {split} split."))
    return blocks


def _section_overfitting(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    d = inp.diagnostics
    if not d:
        return [missing(f"Diagnostics unavailable: {inp.problems.get('reports/diagnostics.json', 'missing')}.")]
    r = d.get("rules") or {}
    defs = d.get("definitions") or {}
    blocks: list[dict] = [
        h3("Verdicts"),
        p(
            f"Rules (diagnose.gap_mild = {fnum(r.get('gap_mild'), 2)}, "
            f"diagnose.gap_severe = {fnum(r.get('gap_severe'), 2)}, "
            f"diagnose.overfit_k = {fnum(r.get('overfit_k'))}): {defs.get('verdict', '')}"
        ),
    ]
    vt = [
        [k, str(v.get("level")), fnum(v.get("gap")), "yes" if v.get("onset") else "no", str(v.get("text"))]
        for k, v in (d.get("verdicts") or {}).items()
    ]
    blocks.append(table(Table(["path", "verdict", "AUROC gap", "onset", "why"], vt)))
    paths_ = d.get("paths") or {}
    ep_rows = []
    for name in ("finetune", "scratch"):
        x = paths_.get(name)
        if not x:
            continue
        ab, al, on = x.get("at_best") or {}, x.get("at_last") or {}, x.get("overfit_onset")
        ep_rows.append(
            [
                name,
                f"{fnum(x.get('best_epoch'))} of {fnum(x.get('epochs_run'))}",
                f"{fnum(ab.get('train_auroc'))} / {fnum(ab.get('val_auroc'))}",
                fnum(ab.get("auroc_gap")),
                fnum(ab.get("loss_gap")),
                f"{fnum(al.get('train_auroc'))} / {fnum(al.get('val_auroc'))}",
                fnum(al.get("auroc_gap")),
                fnum(al.get("loss_gap")),
                f"epoch {on['epoch']} (val loss lowest at epoch {on['rise_after_epoch']})" if on else "none",
            ]
        )
    blocks.append(h3("Loss and AUROC curves"))
    if ep_rows:
        blocks.append(
            table(
                Table(
                    [
                        "path",
                        "kept epoch",
                        "train / val AUROC at kept",
                        "AUROC gap (kept)",
                        "loss gap (kept)",
                        "train / val AUROC at last",
                        "AUROC gap (last)",
                        "loss gap (last)",
                        "overfitting onset",
                    ],
                    ep_rows,
                )
            )
        )
        blocks.append(
            p(
                f"Gap definitions: {defs.get('auroc_gap', '')} {defs.get('loss_gap', '')} "
                f"Onset: {defs.get('overfit_onset', '')}"
            )
        )
    else:
        blocks.append(missing("No epoch-trained path in diagnostics.json."))
    for key in ("diagnose_curves",):
        blocks.append(figure(figs[key]) if figs.get(key) else missing("Loss/AUROC curve figure not found."))

    blocks.append(h3("Transfer trifecta: start, convergence, asymptote"))
    tri = (d.get("trifecta") or {}).get("paths") or {}
    if tri:
        rows = []
        for name in PATH_ORDER:
            t = tri.get(name)
            if not t:
                continue
            test = t.get("test") or {}
            rows.append(
                [
                    name,
                    fnum(t.get("start_val_auroc")),
                    "n/a"
                    if t.get("convergence_epochs") is None
                    else f"{t['convergence_epochs']} epochs"
                    + (
                        f" ({fnum(t.get('convergence_seconds'), 0)} s)"
                        if t.get("convergence_seconds") is not None
                        else ""
                    ),
                    fnum(t.get("best_val_auroc", t.get("best_cv_auroc")))
                    if t.get("best_val_auroc") is not None
                    else f"{fnum(t.get('best_cv_auroc'))} (CV)",
                    fci(test.get("auroc"), test.get("ci_low"), test.get("ci_high")),
                ]
            )
        blocks.append(
            table(
                Table(
                    [
                        "path",
                        "start (val AUROC, epoch 1)",
                        "convergence (to 95% of best)",
                        "best val AUROC",
                        "test AUROC (95% CI)",
                    ],
                    rows,
                )
            )
        )
        cmp_ = (d.get("trifecta") or {}).get("finetune_vs_scratch") or {}
        if cmp_:

            def claim(key: str) -> str:
                v = cmp_.get(key)
                return str(cmp_.get(f"{key}_claim") or ("n/a" if v is None else "yes" if v else "no"))

            overlap = cmp_.get("test_ci_overlap")
            overlap_text = "overlap" if overlap else "do not overlap" if overlap is False else "n/a"
            blocks.append(
                p(
                    f"finetune vs scratch: higher start {claim('higher_start')} "
                    f"(Δ {fnum(cmp_.get('start_val_auroc_diff'))}), "
                    f"faster convergence {claim('faster_convergence')} "
                    f"({fnum(cmp_.get('convergence_epochs_saved'))} epochs saved), "
                    f"higher asymptote {claim('higher_asymptote')} (test Δ {fnum(cmp_.get('test_auroc_diff'))}; "
                    f"95% CIs {overlap_text})."
                )
            )
        blocks.append(
            p(
                f"Definitions: {defs.get('starting_performance', '')} {defs.get('convergence', '')} "
                f"{defs.get('asymptote', '')}"
            )
        )
        if tri.get("linear", {}).get("note"):
            blocks.append(p(tri["linear"]["note"]))
    else:
        blocks.append(missing("No trifecta numbers in diagnostics.json."))
    blocks.append(
        figure(figs["diagnose_trifecta"]) if figs.get("diagnose_trifecta") else missing("Trifecta figure not found.")
    )

    blocks.append(h3("Linear path: validation curve over C"))
    lin = paths_.get("linear")
    if lin:
        blocks.append(
            table(
                Table(
                    ["C", "train AUROC", "CV AUROC", "CV SD", "gap"],
                    [
                        [
                            ("→ " if math.isclose(rw["C"], lin["best_C"]) else "") + fsci(rw["C"]),
                            fnum(rw.get("train_auroc")),
                            fnum(rw.get("cv_auroc")),
                            fnum(rw.get("cv_auroc_std")),
                            fnum(rw.get("gap")),
                        ]
                        for rw in lin.get("curve", [])
                    ],
                    caption=f"→ marks the chosen C = {lin['best_C']:g}",
                )
            )
        )
        blocks.append(p(defs.get("linear_gap", "")))
    else:
        blocks.append(missing("No linear validation curve in diagnostics.json."))
    blocks.append(
        figure(figs["diagnose_validation_curve"])
        if figs.get("diagnose_validation_curve")
        else missing("Validation-curve figure not found.")
    )

    blocks.append(h3("Learning curve"))
    lc = d.get("learning_curve")
    if lc and lc.get("summary"):
        sizes = ""
        if lc.get("n_training_patients_total") is not None:
            sizes = (
                f" {fnum(lc.get('n_training_patients_total'))} training patients in all; test split of "
                f"{fnum(lc.get('n_test_images'))} images."
            )
        blocks.append(
            p(
                f"{defs.get('learning_curve', '')} Fractions {lc.get('fractions')}, "
                f"{fnum(lc.get('repeats'))} repeat(s), "
                f"{fnum(lc.get('epochs'))} epochs for finetune/scratch.{sizes} {lc.get('reuse', '')}"
            )
        )
        blocks.append(
            table(
                Table(
                    [
                        "path",
                        "fraction",
                        "training patients",
                        "training images",
                        "test AUROC (95% CI)",
                        "repeats",
                        "reused main run",
                    ],
                    [
                        [
                            s["path"],
                            fnum(s["fraction"], 2),
                            fnum(s["n_patients"]),
                            fnum(s["n_images"]),
                            fci(s.get("test_auroc"), s.get("ci_low"), s.get("ci_high")),
                            fnum(s.get("repeats")),
                            "yes" if s.get("reused_main_run") else "no",
                        ]
                        for s in lc["summary"]
                    ],
                )
            )
        )
        blocks.append(p(f"Catch-up rule: {defs.get('scratch_catches_up', '')}"))
        for ref, c in (lc.get("scratch_catch_up") or {}).items():
            blocks.append(callout(f"scratch vs {ref}: {c.get('text')}"))
    else:
        blocks.append(missing("No learning curve in diagnostics.json."))
    blocks.append(
        figure(figs["diagnose_learning_curve"])
        if figs.get("diagnose_learning_curve")
        else missing("Learning-curve figure not found.")
    )
    return blocks


def _section_gradcam(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    g = inp.gradcam
    if g is None:
        return [missing(f"Grad-CAM not available: {inp.gradcam_note or 'not computed'}.")]
    from pipeline.report.gradcam import OUTCOME_NAMES

    blocks = [
        p(
            f"MONAI GradCAM on the fine-tuned model's last convolutional feature map (module '{g.layer}'), "
            f"explaining the '{g.target_class}' output, for the most confident test cases of each outcome at the "
            f"validation-chosen threshold {fnum(g.threshold)} (true/false positives: highest probability first; "
            "true/false negatives: lowest first). Cases are identified by manifest row only. Warm colours mark "
            "the regions that raised the score."
        ),
        figure(figs["gradcam"]),
        table(
            Table(
                ["outcome", "manifest row", "label", f"p({g.target_class})"],
                [
                    [f"{c['outcome']} ({OUTCOME_NAMES[c['outcome']]})", str(c["row"]), c["label"], fnum(c["prob"])]
                    for c in g.cases
                ],
            )
        ),
    ]
    if g.missing_outcomes:
        blocks.append(
            missing("No test case for: " + ", ".join(f"{o} ({OUTCOME_NAMES[o]})" for o in g.missing_outcomes) + ".")
        )
    return blocks


def _section_reproducibility(inp: ReportInputs) -> list[dict]:
    r = inp.repro or {}
    rec = r.get("record") or {}
    git = rec.get("git") or {}
    commit = git.get("commit")
    lc = (inp.diagnostics or {}).get("learning_curve") or {}
    lc_seeds = sorted({pt.get("seed") for pt in lc.get("points") or [] if pt.get("seed") is not None})
    rows = [
        [
            "git commit",
            (commit + (" (clean: no uncommitted input)" if git.get("clean") else " (uncommitted changes to inputs)"))
            if commit
            else "not available (not a git checkout)",
        ],
        [
            "dvc.lock sha256",
            rec.get("dvc_lock_sha256") or "not available (no dvc.lock: the pipeline was not run by DVC)",
        ],
        ["seed (params)", fnum(inp.params.seed)],
        [
            "seeds of the training runs",
            ", ".join(f"{k}: {fnum(v.model_card.seed)}" for k, v in inp.train_logs.items()) or "n/a",
        ],
        ["learning-curve seeds", ", ".join(str(s) for s in lc_seeds) or "n/a"],
        ["evaluation bootstrap seed", fnum((inp.evaluation or {}).get("seed"))],
        ["Python", str(r.get("python"))],
    ]
    rows += [[f"package {k}", v] for k, v in (r.get("packages") or {}).items()]
    data_rows = [
        [
            str(d.get("name")),
            str(d.get("dicom_dir")),
            str(d.get("dicom_dir_md5")),
            fnum(d.get("n_files")),
            str(d.get("labels_csv_md5")),
        ]
        for d in rec.get("data") or []
    ]
    if rec.get("reproducible"):
        verdict = callout(
            f"Reproducible from this commit: `git checkout {commit}` and `dvc repro` with data of "
            "the hashes below rerun every number (CPU runs are deterministic for a given seed and "
            "package versions)."
        )
    else:
        verdict = missing(
            "Not reproducible from a commit as it stands: "
            + "; ".join(rec.get("missing") or ["no reproducibility record"])
            + "."
        )
    blocks = [
        verdict,
        table(Table(["item", "value"], rows)),
        h3("Data fingerprints (data/sources.json)"),
        table(Table(["set", "DICOM folder", "DVC md5", "files", "labels CSV md5"], data_rows))
        if data_rows
        else missing("No data fingerprint recorded (run the sources stage)."),
        p("The pseudonym salt is masked below."),
        h3("Parameters (validated params.yaml)"),
        pre(yaml.safe_dump(r.get("params") or {}, sort_keys=False, allow_unicode=True).strip()),
    ]
    return blocks


CHECKLIST: tuple[tuple[str, str], ...] = (
    ("Title and summary of the question, results and conclusion (TRIPOD+AI 1-2; CLAIM 1-2)", "summary"),
    ("Intended use, clinical context, research-only status (TRIPOD+AI 3, 26; CLAIM 3-4)", "intended-use"),
    ("Data sources, sites, licences (TRIPOD+AI 5-6; CLAIM 7-8)", "data-sources"),
    ("Eligibility, exclusions and their reasons (TRIPOD+AI 6, 20a; CLAIM 8, 33)", "ingest"),
    (
        "Participant flow and sample size per split, patient-level partition (TRIPOD+AI 10, 20a; CLAIM 21, 33)",
        "patient-flow",
    ),
    ("Characteristics of the data per split (TRIPOD+AI 20b; CLAIM 34)", "demographics"),
    ("Model description, initialisation, training details (TRIPOD+AI 12; CLAIM 22-26)", "model-cards"),
    ("Performance with confidence intervals, test and external (TRIPOD+AI 23; CLAIM 37)", "results"),
    ("Discrimination and calibration plots (TRIPOD+AI 12e, 23a)", "curves"),
    ("Operating point chosen before testing; confusion matrices (CLAIM 38)", "confusion"),
    ("Comparison of models on the same data (CLAIM 32)", "comparisons"),
    ("Fairness: performance across subgroups (TRIPOD+AI 14, 23b; CLAIM 39)", "subgroups"),
    ("Robustness and overfitting analysis, sample-size effects (TRIPOD+AI 12c; CLAIM 26)", "overfitting"),
    ("Interpretability / failure analysis (CLAIM 27, 40)", "gradcam"),
    ("Code, parameters and software versions (TRIPOD+AI 18; CLAIM 41-42)", "reproducibility"),
)


def _section_checklist(_inp: ReportInputs) -> list[dict]:
    titles = dict(SECTIONS)
    return [
        p(
            "Where each reporting item of the CLAIM 2024 update and TRIPOD+AI (2024) checklists is addressed in this "
            "report. Item numbers are indicative; items about clinical deployment do not apply to research software."
        ),
        {
            "kind": "table",
            "table": Table(["item", "section"], [[item, titles[sid]] for item, sid in CHECKLIST]),
            "links": [sid for _, sid in CHECKLIST],
        },
    ]


# --------------------------------------------------------------------------- figures of the report


def draw_report_figures(inp: ReportInputs, fig_dir: Path, md_base: Path) -> dict[str, Figure]:
    """ROC/PR/calibration/confusion PNGs under ``fig_dir``, plus the upstream figures that exist."""
    from pipeline.report import figures as F

    figs: dict[str, Figure] = {}

    def add(key: str, path: Path, caption: str) -> None:
        figs[key] = Figure(key=key, path=path, md_path=_rel(path, md_base), caption=caption)

    ev = inp.evaluation
    if ev and ev.get("splits"):
        splits = list(ev["splits"])
        has_curves = any(
            (_split_block(inp, pth, s) or {}).get("curves", {}).get("roc")
            for pth in _paths_present(inp)
            for s in splits
        )
        if has_curves:
            add(
                "roc",
                F.plot_roc_pr(ev, splits, "roc", fig_dir / "roc.png"),
                "ROC curves per split; legend: AUROC (patient-level 95% CI).",
            )
            add(
                "pr",
                F.plot_roc_pr(ev, splits, "pr", fig_dir / "pr.png"),
                "Precision-recall curves per split; legend: average precision.",
            )
        if any((_split_block(inp, pth, s) or {}).get("calibration") for pth in _paths_present(inp) for s in splits):
            add(
                "calibration",
                F.plot_calibration(ev, splits, fig_dir / "calibration.png"),
                "Reliability diagrams: observed fraction positive against mean predicted probability per bin.",
            )
        if ev.get("positive_class"):
            add(
                "confusion",
                F.plot_confusion(
                    ev,
                    splits,
                    ev.get("classes") or list(inp.params.data.classes),
                    ev["positive_class"],
                    fig_dir / "confusion.png",
                ),
                "Confusion matrices at each path's validation-chosen threshold.",
            )
    captions = {
        "augment_preview": "Training images and their augmented views (augment stage).",
        "diagnose_curves": "Loss and AUROC per epoch (train dashed, validation solid); circle: kept epoch; "
        "dotted line: overfitting onset.",
        "diagnose_trifecta": "Validation AUROC per epoch, finetune vs scratch; squares: first epoch at 95% of the "
        "path's best (dotted line).",
        "diagnose_validation_curve": "Linear path: train-fold and cross-validated AUROC over C; dotted line: chosen C.",
        "diagnose_learning_curve": "Test AUROC (patient-level 95% CI) against the number of training patients.",
    }
    for key, path in inp.figures.items():
        add(key, path, captions.get(key, key))
    if inp.gradcam is not None:
        add(
            "gradcam",
            Path(inp.gradcam.figure),
            "Grad-CAM heatmaps over test images: outcome, manifest row and predicted probability per panel.",
        )
    return figs


def _rel(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


# --------------------------------------------------------------------------- assembly + rendering


def build_sections(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict[str, Any]]:
    """Every section, in :data:`SECTIONS` order, as ``{"id", "title", "number", "blocks"}``."""
    builders = {
        "summary": lambda: _section_summary(inp),
        "intended-use": lambda: _section_intended_use(inp),
        "data-sources": lambda: _section_data_sources(inp),
        "ingest": lambda: _section_ingest(inp),
        "patient-flow": lambda: _section_flow(inp),
        "demographics": lambda: _section_demographics(inp),
        "model-cards": lambda: _section_model_cards(inp),
        "results": lambda: _section_results(inp),
        "curves": lambda: _section_curves(inp, figs),
        "confusion": lambda: _section_confusion(inp, figs),
        "comparisons": lambda: _section_comparisons(inp),
        "subgroups": lambda: _section_subgroups(inp),
        "overfitting": lambda: _section_overfitting(inp, figs),
        "gradcam": lambda: _section_gradcam(inp, figs),
        "reproducibility": lambda: _section_reproducibility(inp),
        "checklist": lambda: _section_checklist(inp),
    }
    out = []
    for i, (sid, title) in enumerate(SECTIONS, start=1):
        blocks = builders[sid]()
        if sid == "data-sources" and "augment_preview" in figs:
            blocks.append(figure(figs["augment_preview"]))
        out.append({"id": sid, "title": title, "number": i, "blocks": blocks})
    return out


def sanitize_blocks(sections: list[dict[str, Any]]) -> None:
    """Strip URL schemes from every text shown (inputs may cite web pages): no link can leak in."""
    for sec in sections:
        for b in sec["blocks"]:
            if "text" in b:
                b["text"] = strip_url_schemes(str(b["text"]))
            if "items" in b:
                b["items"] = [strip_url_schemes(str(i)) for i in b["items"]]
            if b["kind"] == "table":
                t = b["table"]
                t.rows = [[strip_url_schemes(str(c)) for c in row] for row in t.rows]
                t.caption = strip_url_schemes(t.caption)
            if b["kind"] == "figure":
                b["figure"].caption = strip_url_schemes(b["figure"].caption)


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a typo in a template is an error, not an empty cell
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def render_html(title: str, sections: list[dict[str, Any]], figs: Mapping[str, Figure]) -> str:
    """One self-contained HTML page: inline CSS, figures as data URIs, no script, no remote URL."""
    from pipeline.report.figures import png_data_uri

    for f in figs.values():
        f.uri = png_data_uri(f.path)
    css = (TEMPLATE_DIR / "report.css").read_text(encoding="utf-8")
    return _environment().get_template("report.html.j2").render(title=title, sections=sections, css=css)


def render_markdown(title: str, sections: list[dict[str, Any]]) -> str:
    return _environment().get_template("report.md.j2").render(title=title, sections=sections)


def check_self_contained(html: str) -> None:
    """Refuse to write an HTML report that would load anything: no script, no remote reference."""
    bad = []
    if re.search(r"<script\b", html, re.I):
        bad.append("a <script> element")
    for m in re.finditer(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, re.I):
        v = m.group(1)
        if not (v.startswith("#") or v.startswith("data:image/png;base64,")):
            bad.append(f"reference {v[:60]!r}")
    for m in re.finditer(r"url\(\s*['\"]?([^)'\"]*)", html, re.I):
        if not m.group(1).startswith("data:"):
            bad.append(f"url({m.group(1)[:60]})")
    if re.search(r"@import", html, re.I):
        bad.append("a CSS @import")
    if re.search(r"\b(?:https?|ftp)://", html, re.I):
        bad.append("a web address")
    if bad:
        raise ValueError("report.html would not be self-contained: " + "; ".join(sorted(set(bad))[:5]))


def write_report(inp: ReportInputs, html_path: Path, md_path: Path, fig_dir: Path) -> tuple[Path, Path]:
    """Draw the report's figures, render both formats, check the HTML, write both files."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = draw_report_figures(inp, fig_dir, Path(md_path).parent)
    sections = build_sections(inp, figs)
    sanitize_blocks(sections)
    title = inp.params.report.title
    html = render_html(title, sections, figs)
    check_self_contained(html)
    md = render_markdown(title, sections)
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    Path(html_path).write_text(html, encoding="utf-8")
    Path(md_path).write_text(md, encoding="utf-8")
    return Path(html_path), Path(md_path)
