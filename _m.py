import pandas as pd, json
from pipeline.params import load_params
from pipeline.predictions import read_predictions
from pipeline.evaluation import evaluate_predictions
params = load_params("params.yaml") if callable(load_params) else None
man = pd.read_csv("/work/main/data/processed/manifest.csv", keep_default_na=False, na_values=[""], dtype={"source": str})
preds = {n: read_predictions(f"/work/main/predictions/{n}.csv", params.data.classes) for n in ("linear","finetune","scratch")}
m, ev = evaluate_predictions(preds, man, params)
for p, d in m.items():
    for s, x in d.items():
        print(p, s, "auc %.3f patient CI %.3f-%.3f image CI %.3f-%.3f boot %.3f-%.3f pw %.3f n=%d pts=%d" % (x["auroc"], x["auroc_ci_low"], x["auroc_ci_high"], x["auroc_image_ci_low"], x["auroc_image_ci_high"], x["auroc_boot_ci_low"], x["auroc_boot_ci_high"], x["auroc_patient_weighted"], x["n"], x["n_patients"]))
for s, cs in ev["comparisons"].items():
    for c in cs:
        print(s, c["path_a"], c["path_b"], "%.3f (%.3f, %.3f) p=%.3g boot (%.3f, %.3f) %s" % (c["difference"], c["ci_low"], c["ci_high"], c["p_value"], c["bootstrap"]["ci_low"], c["bootstrap"]["ci_high"], c["verdict"]))
at = ev["results"]["finetune"]["splits"]["test"]["at_threshold"]
print({k: (round(at[k]["value"],3), round(at[k]["ci_low"],3), round(at[k]["ci_high"],3), round(at[k]["design_effect"],2)) for k in ("sensitivity","specificity","ppv","npv")})
print([ (g["attribute"], g["group"], g["n"], g["n_patients"], g["flags"]) for g in ev["results"]["finetune"]["splits"]["test"]["subgroups"] if g["flagged"]])
