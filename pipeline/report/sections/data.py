"""Sections about the data: intended use, sources and their provenance, ingest, patient flow
with the label definition and class mix, and demographics per patient."""

from __future__ import annotations

from typing import Any

from pipeline import contracts as C
from pipeline.report.blocks import Table, callout, fmean_sd, fnum, h3, missing, p, pre, strip_url_schemes, table, ul
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import split_stats, split_title

DEMO_DIR = "data/demo/dicom"

#: What ingest and evaluation do with a missing or invalid header value (pipeline/dicom.py
#: header_facts, pipeline/ingest.py, pipeline/evaluation.py). The counts come from the inputs.
MISSING_HEADER_RULES = (
    "PatientSex absent, empty or not M/F/O: recorded as U (unknown); the image is kept.",
    "PatientAge absent or not a DICOM age string (nnnD/W/M/Y): age unknown (empty); the image is kept, "
    "left out of the age statistics and put in the 'unknown' age band of the subgroup analysis.",
    "ViewPosition absent or not a DICOM defined term: view unknown (empty, shown as 'unknown'); raw text is "
    "never stored.",
    "PatientID absent: the image gets the pseudonym of its file path, so it is a patient of its own (it "
    "cannot be linked to the patient's other images); counted under 'images without a PatientID' (Ingest).",
    "No value is imputed: unknowns stay unknown in every count, table and subgroup.",
)


def _is_demo(inp: ReportInputs) -> bool:
    return str(inp.params.data.dicom_dir).rstrip("/") in (DEMO_DIR, f"./{DEMO_DIR}")


def _ingest_sources(inp: ReportInputs) -> list[tuple[str, C.IngestBlock]]:
    """(name, ingest block) of the development set and of every external set ingested."""
    ing = inp.ingest
    if ing is None:
        return []
    return [("development", ing)] + [(f"external `{n}`", b) for n, b in ing.external.items()]


def section_intended_use(inp: ReportInputs) -> list[dict]:
    prm = inp.params
    cls = ", ".join(prm.data.classes)
    blocks = [
        callout(
            "Research use only. This is not a medical device and its outputs must not be used for "
            "diagnosis, triage or any clinical decision."
        ),
        p(
            f"Intended use: to compare, on one labelled set of chest radiographs, ways of transferring an "
            f"ImageNet-pretrained backbone ({prm.backbone.name}) to the task '{cls}' "
            f"(positive class: {prm.data.positive_class}): frozen features with logistic regression, "
            "fine-tuning with per-layer-group learning rates, the same network trained from scratch"
            + (f", and the variants {', '.join(prm.strategies.variants)}" if prm.strategies.variants else "")
            + "."
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
    stats = split_stats(inp)
    n_txt = ""
    if stats:
        n_txt = " (" + ", ".join(f"{k}: {v.patients} patients / {v.images} images" for k, v in stats.items()) + ")"
    lim += [
        f"Small sample{n_txt}: confidence intervals are wide and a single split can favour any method by chance; "
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
        "Class activation maps are coarse (the last feature map is a few cells wide) and show where a "
        "model's evidence is, not whether it is clinically meaningful."
    )
    blocks.append(ul(lim))
    return blocks


def _provenance_rows(inp: ReportInputs) -> list[list[str]]:
    """One row per configured set: its description and its fingerprint in data/sources.json."""
    by_name = {s.name: s for s in inp.sources.sets} if inp.sources else {}
    d = inp.params.data
    rows = []
    dev_text = "the development data" + ("; see its attribution below" if inp.attributions else "")
    for name, role, description in [("internal", "development (train / val / test)", dev_text)] + [
        (e.name, "external (never trained on)", e.description or "(no description given)") for e in d.external
    ]:
        s = by_name.get(name)
        rows.append(
            [
                name,
                role,
                description,
                s.dicom_dir_md5 if s else "not recorded",
                fnum(s.n_files) if s else "n/a",
                f"{fnum(s.size_bytes / 2**20, 1)} MiB" if s else "n/a",
                s.labels_csv_md5 if s else "not recorded",
            ]
        )
    return rows


def section_data_sources(inp: ReportInputs) -> list[dict]:
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
        h3("Provenance and fingerprints"),
    ]
    if inp.sources is None:
        blocks.append(
            missing(
                f"No data fingerprint: {inp.problems.get('data/sources.json', 'data/sources.json not found')} "
                "(the sources stage writes it)."
            )
        )
    else:
        blocks.append(
            table(
                Table(
                    ["set", "role", "description", "DICOM folder md5 (DVC)", "files", "size", "labels CSV md5"],
                    _provenance_rows(inp),
                    caption="From data/sources.json: the same hashes mean the same files.",
                )
            )
        )
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


def section_ingest(inp: ReportInputs) -> list[dict]:
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
            + [fnum(s.patients), fnum(s.patients_missing_id)]
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
                + ["patients", "images without a PatientID"],
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


def section_flow(inp: ReportInputs) -> list[dict]:
    stats = split_stats(inp)
    if not stats:
        return [missing(f"Split report unavailable: {inp.problems.get('reports/split.json', 'no per-split counts')}.")]
    ing = inp.ingest
    classes = list(inp.params.data.classes)
    steps = []
    if ing:
        steps.append(
            f"Development site: {fnum(ing.seen)} files found → {fnum(ing.accepted)} accepted "
            f"({fnum(ing.rejected)} rejected, see Ingest)."
        )
    dev = {k: v for k, v in stats.items() if not k.startswith("external")}
    if dev:
        steps.append(
            "Split by patient (no patient in two splits): "
            + "; ".join(f"{k} {fnum(v.patients)} patients / {fnum(v.images)} images" for k, v in dev.items())
            + "."
        )
    forced = inp.split.checks.patients_forced_to_train if inp.split else None
    if forced:
        steps.append(
            f"{fnum(forced)} patient(s) kept in train because they would hold more than "
            f"{fnum(inp.split.settings.max_patient_share, 2) if inp.split else 'n/a'} of the val or test images "
            "(split.max_patient_share; never dropped)."
        )
    for name, e in ing.external.items() if ing else []:
        st = stats.get(f"external/{name}")
        steps.append(
            f"{split_title(inp, f'external/{name}')}: {fnum(e.seen)} files found → {fnum(e.accepted)} accepted"
            + (f" → {fnum(st.patients)} patients / {fnum(st.images)} images, never trained on." if st else ".")
        )
    blocks: list[dict] = [ul(steps), h3("Label definition and class mix per split")]
    definition = inp.params.data.label_definition
    if definition:
        end = "" if definition.rstrip().endswith((".", "!", "?")) else "."
        blocks.append(p(f"Label definition (data.label_definition): {definition.rstrip()}{end}"))
    else:
        blocks.append(
            missing(
                "No label definition given (data.label_definition is unset): what each class means and how "
                "the labels were obtained is not stated."
            )
        )
    rows = []
    for k, v in stats.items():
        pp = v.per_patient
        rows.append(
            [k, fnum(v.patients), fnum(v.images)]
            + [fnum(v.labels.get(c, 0)) for c in classes]
            + [fnum(pp.patients_with_label.get(c, 0)) if pp else "n/a" for c in classes]
            + [fnum(v.max_patient_share, 3)]
        )
    blocks.append(
        table(
            Table(
                ["split", "patients", "images"]
                + [f"images: {c}" for c in classes]
                + [f"patients with {c}" for c in classes]
                + ["largest patient's share"],
                rows,
                caption="A patient with images of both classes counts in both 'patients with' columns.",
            )
        )
    )
    if any(v.per_patient is None for v in stats.values()):
        blocks.append(missing("split.json has no per-patient counts (rerun the split stage)."))
    if not any(k.startswith("external/") for k in stats):
        blocks.append(missing("No external split."))
    return blocks


def _per_patient_rows(stats: dict[str, C.SplitStats]) -> list[list[str]]:
    def get(v: C.SplitStats, fn: Any) -> str:
        return fn(v.per_patient) if v.per_patient is not None else "n/a"

    sexes = sorted({s for v in stats.values() if v.per_patient for s in v.per_patient.sex})
    rows = [["patients"] + [get(v, lambda d: fnum(d.patients)) for v in stats.values()]]
    rows += [[f"sex {s}"] + [get(v, lambda d, s=s: fnum(d.sex.get(s, 0))) for v in stats.values()] for s in sexes]
    rows += [
        ["age mean ± SD (years)"] + [get(v, lambda d: fmean_sd(d.age_mean, d.age_sd)) for v in stats.values()],
        ["age range (years)"]
        + [
            get(v, lambda d: f"{fnum(d.age_min, 1)}–{fnum(d.age_max, 1)}" if d.age_min is not None else "n/a")
            for v in stats.values()
        ],
        ["age unknown (patients)"] + [get(v, lambda d: fnum(d.age_unknown)) for v in stats.values()],
    ]
    return rows


def section_demographics(inp: ReportInputs) -> list[dict]:
    stats = split_stats(inp)
    if not stats:
        return [missing("Split report unavailable: no demographics per split.")]
    blocks: list[dict] = [
        h3("Per patient"),
        p(
            "One record per patient: sex is the most frequent known value of the patient's images, age the lowest "
            "known age (the earliest study)."
        ),
    ]
    if all(v.per_patient is None for v in stats.values()):
        blocks.append(missing("split.json has no per-patient demographics (rerun the split stage)."))
    else:
        blocks.append(table(Table(["per patient"] + list(stats), _per_patient_rows(stats))))
    for attr, label in (("sex", "Sex (images)"), ("view", "View position (images)")):
        counts = {k: getattr(v, attr) for k, v in stats.items()}
        blocks.append(h3(label))
        keys = sorted({k for v in counts.values() for k in v}, key=str)
        rows = [[str(k)] + [fnum(counts[s].get(k, 0)) for s in stats] for k in keys]
        blocks.append(table(Table([label.split(" (")[0]] + list(stats), rows)))
    blocks.append(h3("Age (images)"))
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
    blocks.append(h3("Missing header values"))
    blocks.append(ul(list(MISSING_HEADER_RULES)))
    unknown = [
        f"{k}: age unknown for {fnum(v.age_unknown)} of {fnum(v.images)} images, sex unknown for "
        f"{fnum(v.sex.get('U', 0) + v.sex.get('unknown', 0))}, view unknown for {fnum(v.view.get('unknown', 0))}"
        for k, v in stats.items()
    ]
    blocks.append(p("In this run: " + "; ".join(unknown) + "."))
    if inp.ingest is not None:
        blocks.append(
            p(
                "Images without a PatientID: "
                + "; ".join(f"{n} {fnum(s.patients_missing_id)}" for n, s in _ingest_sources(inp))
                + "."
            )
        )
    return blocks


__all__ = [
    "MISSING_HEADER_RULES",
    "section_data_sources",
    "section_demographics",
    "section_flow",
    "section_ingest",
    "section_intended_use",
]
