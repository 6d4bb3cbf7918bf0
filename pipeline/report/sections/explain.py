"""The class activation maps section: Grad-CAM of the fine-tuned network and the CAM of the linear
method, each figure on one colour scale (pipeline.report.gradcam)."""

from __future__ import annotations

from pipeline.report.blocks import Figure, Table, figure, fnum, fsci, h3, missing, p, table
from pipeline.report.gradcam import CAM_METHODS, OUTCOME_NAMES
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import method_title

WHAT = {
    "finetune": "MONAI GradCAM on the fine-tuned network's last convolutional feature map (module '{layer}'), "
    "explaining the '{target}' logit; raw maps (ReLU of the gradient-weighted activations), not normalised per "
    "panel, so every panel shares the colour scale 0–{vmax}.",
    "linear": "The linear method's class activation map (Zhou et al. 2016): the logistic regression's weights "
    "(divided by the standardiser's SDs) applied to the frozen backbone's last feature map, cell by cell. The mean "
    "of the map plus the intercept terms is the model's logit for '{target}', so red cells raise and blue cells "
    "lower the score, in logit units per cell; one colour scale {vmin}–{vmax} for every panel.",
}


def section_cams(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    blocks: list[dict] = [
        p(
            "For the most confident test cases of each outcome at each method's validation-chosen threshold "
            "(true/false positives: highest probability first; true/false negatives: lowest first). Each panel "
            "gives the outcome, the manifest row (cases are identified by it only), the true and the predicted "
            "label and the predicted probability."
        )
    ]
    for method in CAM_METHODS:
        blocks.append(h3(method_title(method)))
        g = inp.cams.get(method)
        if g is None:
            blocks.append(missing(f"No map for {method}: {inp.cam_notes.get(method, 'not computed')}."))
            continue
        blocks.append(
            p(
                WHAT[method].format(layer=g.layer, target=g.target_class, vmin=fsci(g.scale[0]), vmax=fsci(g.scale[1]))
                + f" Threshold {fnum(g.threshold)}."
            )
        )
        if f"cam_{method}" in figs:
            blocks.append(figure(figs[f"cam_{method}"]))
        blocks.append(
            table(
                Table(
                    ["outcome", "manifest row", "true label", "predicted", f"p({g.target_class})"],
                    [
                        [
                            f"{c['outcome']} ({OUTCOME_NAMES[c['outcome']]})",
                            str(c["row"]),
                            c["label"],
                            c["predicted"],
                            fnum(c["prob"]),
                        ]
                        for c in g.cases
                    ],
                )
            )
        )
        if g.missing_outcomes:
            blocks.append(
                missing(
                    f"No {method} test case for: "
                    + ", ".join(f"{o} ({OUTCOME_NAMES[o]})" for o in g.missing_outcomes)
                    + "."
                )
            )
    return blocks


__all__ = ["section_cams"]
