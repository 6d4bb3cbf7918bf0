"""The report stage's library: one self-contained HTML file + Markdown from synthetic pipeline outputs."""

from __future__ import annotations

import html as html_lib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_inputs as RI

from pipeline import paths
from pipeline.report import render as R
from pipeline.report.gradcam import pipeline_cams, select_cases


def _render(root: Path, params, gradcam: bool) -> tuple[str, str, R.ReportInputs]:
    inp = R.load_inputs(root, params)
    fig_dir = root / paths.FIGURES / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if gradcam:
        inp.cams, inp.cam_notes = pipeline_cams(root, params, inp.evaluation, fig_dir)
    html, md = R.write_report(inp, root / paths.REPORT_HTML, root / paths.REPORT_MD, fig_dir)
    return html.read_text(encoding="utf-8"), md.read_text(encoding="utf-8"), inp


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Every input present: external set, diagnostics, a saved fine-tuned model (real Grad-CAM)."""
    root = tmp_path_factory.mktemp("full")
    params, _ = RI.build(root)
    html, md, inp = _render(root, params, gradcam=True)
    return root, html, md, inp


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """No external set, no diagnostics, no fine-tuned model."""
    root = tmp_path_factory.mktemp("sparse")
    params, _ = RI.build(root, external=False, with_model=False, with_diagnostics=False, with_sources=False)
    html, md, inp = _render(root, params, gradcam=True)
    return root, html, md, inp


def _section_html(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_html_has_every_section_and_is_self_contained(full) -> None:
    root, html, _, inp = full
    assert inp.problems == {}
    assert [p for p in (root / paths.REPORTS).iterdir() if p.suffix == ".html"] == [root / paths.REPORT_HTML]
    for sid, title in R.SECTIONS:
        assert f'<section id="{sid}">' in html
        assert title in html
    assert not re.search(r"<script|<link|<iframe|<object|@import", html, re.I)
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    # roc, pr, calibration, confusion, 4 diagnose, augment preview, 2 CAMs, 3 introspection
    assert len(srcs) >= 14
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in re.findall(r'\bhref="([^"]*)"', html))
    assert all(u.startswith("data:") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", html))
    assert "http://" not in html and "https://" not in html
    # the attribution's citation survives as plain text, without a scheme
    assert "nihcc.app.box.com/v/ChestXray-NIHCC" in _section_html(html, "data-sources")


def test_no_identifier_salt_or_pseudonym_leaks(full) -> None:
    root, html, md, _ = full
    man = pd.read_csv(root / paths.MANIFEST)
    for text in (html, md):
        for planted in (RI.PLANTED_NAME, RI.PLANTED_ID, RI.PLANTED_DATE, RI.SALT):
            assert planted not in text
        assert not any(p in text for p in man["patient"].astype(str))  # not even pseudonyms
    assert R.SALT_MASK in html


def test_numbers_come_from_the_json_reports(full) -> None:
    root, html, md, inp = full
    ev = inp.evaluation
    a = ev["results"]["finetune"]["splits"]["test"]["auroc"]
    shown = f"{a['value']:.3f} ({a['ci_low']:.3f}–{a['ci_high']:.3f})"
    assert shown in _section_html(html, "results") and shown in md
    conf = ev["results"]["scratch"]["splits"]["external/site-b"]["at_threshold"]["confusion"]
    row = (
        f"| scratch | external/site-b | youden | {ev['results']['scratch']['operating_point']['threshold']:.3f} | "
        f"{conf['tp']} | {conf['fp']} | {conf['fn']} | {conf['tn']} |"
    )
    assert row in md
    d = inp.diagnostics
    assert d["verdicts"]["scratch"]["text"] in _section_html(html, "overfitting")
    assert d["learning_curve"]["scratch_catch_up"]["finetune"]["text"] in html
    ing = _section_html(html, "ingest")
    assert "not_dicom" in ing and "modality_not_radiograph" in ing
    assert "1e-06" in _section_html(html, "model-cards")  # the 2:4:6 rule's bottom learning rate


def test_summary_is_the_answer_with_overfitting_lines_and_no_second_verdict(full) -> None:
    from pipeline.report.answer import answer

    _, html, _, inp = full
    summary = html_lib.unescape(_section_html(html, "summary"))
    titles = {s: R.split_title(inp, s) for s in inp.evaluation["splits"]}
    answers = answer(inp.evaluation, inp.train_logs, inp.diagnostics, titles, recommendation=inp.recommendation)
    # The recommendation (chosen on validation) first, then one answer per evaluated split.
    assert [a["split"] for a in answers] == ["val", "test", "external/site-b"]
    assert inp.recommendation is not None and answers[0]["sentences"][0].startswith("Recommended: ")
    for a in answers:
        assert f"The answer: {a['title']}" in summary and " ".join(a["sentences"]) in summary
    assert "Which path is best?" not in summary and "Does the pretrained backbone help?" not in summary
    assert summary.count("The answer:") == len(answers)  # one answer per split, no duplicate verdict
    assert inp.diagnostics["verdicts"]["scratch"]["text"] in summary


def test_recommendation_section_shows_the_stored_choice_and_its_evidence(full) -> None:
    _, html, md, inp = full
    rec = inp.recommendation
    assert rec is not None and rec.recommended is not None
    section = html_lib.unescape(_section_html(html, "recommendation"))
    assert "chosen on validation only" in section and f"{rec.recommended} (recommended)" in section
    assert all(limit in section for limit in rec.limits)
    assert "## 2. Recommendation: which way to transfer" in md


def test_markdown_has_the_same_sections_and_relative_figures(full) -> None:
    root, _, md, _ = full
    for i, (sid, title) in enumerate(R.SECTIONS, start=1):
        assert f"## {i}. {title}" in md
        assert f'<a id="{sid}"></a>' in md
    assert "data:image" not in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "figures/report/roc.png" in links and "figures/diagnose/learning_curve.png" in links
    assert {"figures/report/cam_finetune.png", "figures/report/cam_linear.png"} <= set(links)
    assert "introspection/figures/units_head_conv.png" in links
    for link in links:
        assert not link.startswith(("/", "http")) and (root / paths.REPORTS / link).is_file()


def test_cam_section_lists_cases_by_row_with_true_and_predicted_labels(full) -> None:
    _, html, md, inp = full
    assert set(inp.cams) == {"finetune", "linear"} and inp.cam_notes == {}
    sec = _section_html(html, "gradcam")
    assert "No map for" not in sec
    for method, g in inp.cams.items():
        assert g.target_class == "abnormal" and g.figure.name == f"cam_{method}.png"
        assert {c["outcome"] for c in g.cases} | set(g.missing_outcomes) == {"TP", "FP", "TN", "FN"}
        for c in g.cases:
            row = f"<td>{c['row']}</td><td>{c['label']}</td><td>{c['predicted']}</td>"
            assert row in sec
            assert c["predicted"] == ("abnormal" if c["outcome"] in ("TP", "FP") else "normal")
        assert f"figures/report/cam_{method}.png" in md
    assert inp.cams["finetune"].layer == "cam" and inp.cams["finetune"].scale[0] == 0.0
    lo, hi = inp.cams["linear"].scale
    assert lo == -hi < 0  # signed map: one symmetric scale


def test_missing_inputs_are_said_not_skipped(sparse) -> None:
    _, html, md, inp = sparse
    for sid, _ in R.SECTIONS:
        assert f'<section id="{sid}">' in html
    cams = _section_html(html, "gradcam")
    assert "fine-tuned model models/finetune/best.pt is missing" in cams
    assert "linear model models/linear/model.joblib is missing" in cams
    assert "Introspection unavailable" in _section_html(html, "introspection")
    assert "Transferability ranking unavailable" in _section_html(html, "transferability")
    assert "No data fingerprint" in _section_html(html, "data-sources")
    assert "Not available" in _section_html(html, "overfitting")
    assert "no external set is configured" in _section_html(html, "results")
    assert "No external" in _section_html(html, "summary")
    assert "reports/diagnostics.json" in inp.problems
    assert md.count("**Not available:**") >= 5


def test_select_cases_known_answer() -> None:
    test = pd.DataFrame(
        {
            "row": [10, 11, 12, 13, 14, 15, 16, 17],
            "label": ["abnormal", "abnormal", "normal", "normal", "abnormal", "normal", "normal", "abnormal"],
            "prob_abnormal": [0.9, 0.7, 0.8, 0.1, 0.2, 0.3, 0.55, 0.95],
        }
    )
    got = select_cases(test, "prob_abnormal", "abnormal", 0.5, 2)
    assert [(c["outcome"], c["row"]) for c in got] == [
        ("TP", 17),
        ("TP", 10),
        ("FP", 12),
        ("FP", 16),
        ("TN", 13),
        ("TN", 15),
        ("FN", 14),
    ]


def test_self_contained_check_rejects_remote_references() -> None:
    R.check_self_contained('<img src="data:image/png;base64,AAAA//8="><a href="#x">x</a>')
    for bad in (
        "<script>alert(1)</script>",
        '<img src="//cdn.example/x.png">',
        '<a href="https://x.org">x</a>',
        '<div style="background:url(http://x/y.png)"></div>',
        "see http://example.org",
    ):
        with pytest.raises(ValueError, match="self-contained"):
            R.check_self_contained(bad)


def test_params_are_shown_with_the_salt_masked() -> None:
    masked = R.mask_params({"seed": 1, "ingest": {"pseudonym_salt": "s3cret", "size": 64}})
    assert masked == {"seed": 1, "ingest": {"pseudonym_salt": R.SALT_MASK, "size": 64}}


CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_screenshot_in_headless_chromium(full, tmp_path) -> None:
    if CHROMIUM is None:
        why = "chromium not installed (apt-get install chromium); the screenshot test needs it"
        if os.environ.get("CI"):
            pytest.fail(why + " and CI must run it (.ci/run installs it)")
        pytest.skip(why)
    root, *_ = full
    url = (root / paths.REPORT_HTML).resolve().as_uri()
    shot = tmp_path / "report.png"
    base = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,4000", url], capture_output=True, timeout=90, check=False
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (4000, 1280)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # not blank
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=False).stdout
    for sid, _ in R.SECTIONS:
        assert f'<section id="{sid}">' in dom, f"section {sid} missing from the rendered DOM"
    assert dom.count("<img") >= 14


def test_markdown_fences_survive_fenced_attribution_text(full) -> None:
    _, _, md, _ = full
    # The attribution holds a ``` fence: the report's own fence must be longer, so it stays one block.
    blocks = re.findall(r"^````text\n(.*?)\n````$", md, re.S | re.M)
    assert len(blocks) == 2
    assert all(b.startswith("# Attribution") and "```\npython -m pipeline.importer\n```" in b for b in blocks)


def test_text_is_html_escaped() -> None:
    """Text from the JSON reports and params (titles, notes, file names) must never become markup."""
    sections = [
        {
            "id": "s1",
            "number": 1,
            "title": "A <b>title</b>",
            "blocks": [R.p("reuses predictions/<path>.csv & <script>alert(1)</script>")],
        }
    ]
    html = R.render_html("T <i>x</i>", sections, {})
    assert "predictions/&lt;path&gt;.csv &amp; &lt;script&gt;" in html
    assert "<script>" not in html and "<b>title</b>" not in html and "<i>x</i>" not in html
    R.check_self_contained(html)


def test_external_sets_are_named_by_description_never_by_folder(full) -> None:
    root, html, md, inp = full
    results = _section_html(html, "results")
    assert "External: Adult PA radiographs, hospital B, 2019" in results
    assert "paediatric" not in html.lower()  # nothing guessed from folder names


def test_reproducibility_says_what_is_missing(full) -> None:
    root, html, md, inp = full
    section = _section_html(html, "reproducibility")
    # The synthetic outputs are in a temporary folder: no git checkout, no dvc.lock, no sources.
    assert "Not reproducible from a commit as it stands" in section
    assert "not a git checkout" in section and "no dvc.lock" in section
    assert "Reproducible from this commit" not in section


def _rows(section: str) -> list[list[str]]:
    """Every table body row of an HTML section as its cells' text (header rows left out)."""
    rows = [
        [html_lib.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
        for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", section, re.S)
    ]
    return [r for r in rows if r]


def test_every_method_is_listed_main_three_first_with_its_description(full) -> None:
    from pipeline.strategies import get_strategy

    _, html, _, inp = full
    order = ["linear", "finetune", "scratch", RI.VARIANT]
    assert R.evaluated_methods(inp) == order
    for sid in ("results", "validation", "confusion"):
        firsts = [r[0] for r in _rows(_section_html(html, sid)) if r and r[0] in order]
        assert list(dict.fromkeys(firsts)) == order, sid
    pairs = {(r[0], r[1]) for r in _rows(_section_html(html, "comparisons")) if len(r) > 1}
    assert ("finetune", RI.VARIANT) in pairs and ("linear", "scratch") in pairs
    assert RI.VARIANT in {r[0] for r in _rows(_section_html(html, "subgroups")) if r}
    cards = html_lib.unescape(_section_html(html, "model-cards"))
    assert all(f"{m}: {get_strategy(m).summary}" in cards for m in order)
    arch = _rows(_section_html(html, "introspection"))
    head = next(r for r in arch if r[1:2] == ["head"])
    assert head[-4:] == ["frozen", "0.01", "0.01 (chosen on val)", "0.01"]  # linear, finetune, scratch, dlr_234


def test_checklist_is_decided_from_the_inputs(full, sparse) -> None:
    from pipeline.report.sections.checklist import CHECKLIST, checklist_rows

    def status(html: str) -> dict[str, str]:
        return {r[0]: r[1] for r in _rows(_section_html(html, "checklist"))}

    full_status, sparse_status = status(full[1]), status(sparse[1])
    assert len(full_status) == len(sparse_status) == len(CHECKLIST)
    # The synthetic run is no git checkout: the code item is the one not reported.
    assert [k for k, v in full_status.items() if v != "reported"] == [
        "Code availability and its commit (TRIPOD+AI 18; CLAIM 41-42)"
    ]
    missing = {k for k, v in sparse_status.items() if v == "not reported"}
    for item in ("External validation", "Architecture", "Choice of the pretrained model", "Interpretability",
                 "Robustness and overfitting", "External sets' provenance"):  # fmt: skip
        assert any(k.startswith(item) for k in missing), item
    section = _section_html(full[1], "checklist")
    code_row = next(tr for tr in re.findall(r"<tr[^>]*>.*?</tr>", section, re.S) if "Code availability" in tr)
    assert '<a href="#validation">' in section and "href" not in code_row and 'class="flagged"' in code_row
    # One input taken away flips exactly its item.
    inp = full[3]
    params = inp.params.model_copy(update={"data": inp.params.data.model_copy(update={"label_definition": None})})
    rows = checklist_rows(R.ReportInputs(**{**inp.__dict__, "params": params}), {})
    why = {item: w for item, _, w in rows}
    assert why["Reference standard: the label definition (TRIPOD+AI 7; CLAIM 15-17)"] == (
        "data.label_definition is not set"
    )


def test_demographics_are_per_patient_and_missing_values_are_explained(full) -> None:
    _, html, _, inp = full
    sec = _section_html(html, "demographics")
    rows = {r[0]: r[1:] for r in _rows(sec)}
    stats = inp.split.splits
    assert rows["patients"] == [str(stats[k].per_patient.patients) for k in ("train", "val", "test", "external/site-b")]
    test = stats["test"].per_patient
    assert rows["age mean ± SD (years)"][2] == f"{test.age_mean:.1f} ± {test.age_sd:.1f}"
    assert rows["age range (years)"][2] == f"{test.age_min:.1f}–{test.age_max:.1f}"
    assert rows["age unknown (patients)"][2] == str(test.age_unknown)
    assert rows["sex U"][2] == str(test.sex["U"])
    assert "PatientAge absent" in sec and "recorded as U (unknown)" in sec
    assert f"test: age unknown for {stats['test'].age_unknown} of {stats['test'].images} images" in sec
    flow = _rows(_section_html(html, "patient-flow"))
    test_row = next(r for r in flow if r and r[0] == "test")
    assert test_row[3:7] == [str(stats["test"].labels["normal"]), str(stats["test"].labels["abnormal"])] + [
        str(test.patients_with_label["normal"]),
        str(test.patients_with_label["abnormal"]),
    ]
    assert inp.params.data.label_definition.split(";")[0] in html_lib.unescape(_section_html(html, "patient-flow"))


def test_validation_section_reads_the_operating_point_on_val(full) -> None:
    _, html, _, inp = full
    rows = {r[0]: r for r in _rows(_section_html(html, "validation"))}
    op = inp.evaluation["results"]["finetune"]["operating_point"]
    val = op["val"]
    s = val["sensitivity"]
    assert rows["finetune"][2] == f"{op['threshold']:.3f}"
    assert rows["finetune"][5] == f"{s['value']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f}) {s['k']}/{s['n']}"
    assert rows["finetune"][4].startswith(f"{val['prevalence']:.3f}")


def test_network_sections_embed_the_stage_figures_and_the_ranking(full) -> None:
    root, html, _, inp = full
    intro = _section_html(html, "introspection")
    assert intro.count("<img") == 2 + len(inp.introspection.units.figures)
    for g in inp.introspection.architecture.groups:
        assert f"<td>{g.name}</td>" in intro
    tr = inp.transferability
    rows = _rows(_section_html(html, "transferability"))
    ranked = [r[1] for r in rows if r and r[0].isdigit()]
    assert ranked == [c.name for c in tr.ranking]
    best = next(c for c in tr.candidates if c.name == tr.ranking[0].name)
    assert rows[0][3] == f"{best.score:.4f}" and rows[0][8] == f"{best.seconds:.1f}"
    assert "cannot be computed" in _section_html(html, "transferability")


def test_provenance_and_code_location_come_from_the_inputs(full) -> None:
    _, html, _, inp = full
    sec = html_lib.unescape(_section_html(html, "data-sources"))
    for s in inp.sources.sets:
        assert s.dicom_dir_md5 in sec and s.labels_csv_md5 in sec
    assert "Adult PA radiographs, hospital B, 2019" in sec
    repro = html_lib.unescape(_section_html(html, "reproducibility"))
    assert f"checkout {inp.repro['record']['code']['checkout']}" in repro
    assert "no git remote configured" in repro
