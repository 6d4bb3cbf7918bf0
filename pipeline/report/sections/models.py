"""Model cards: one per method of this run (main three, then the variants), from the train logs."""

from __future__ import annotations

from pipeline import contracts as C
from pipeline import paths
from pipeline.report.blocks import Table, fnum, fsci, h3, missing, p, table
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import card_methods, method_title


def _net_rows(c: C.NetModelCard, log_: C.TrainLog) -> list[list[str]]:
    rows = [
        ["optimiser", c.optimizer],
        ["head initialisation", c.head_init],
        ["BatchNorm statistics", c.bn],
        ["training batches augmented on the fly", "yes" if c.augment_on_the_fly else "no"],
        ["trained parameters", fnum(c.trained_params)],
        ["early stopping on", c.monitor + (" (stopped early)" if log_.stopped_early else "")],
    ]
    if log_.lr_search is not None:
        s = log_.lr_search
        rows.append(
            [
                "learning rate chosen on val",
                f"{fsci(s.chosen_lr)} from "
                + ", ".join(f"{fsci(t.lr)} (val AUROC {fnum(t.val_auroc)})" for t in s.trials)
                + f"; {fnum(s.epochs_per_trial)} epoch(s) per trial",
            ]
        )
    return rows


def section_model_cards(inp: ReportInputs) -> list[dict]:
    blocks: list[dict] = []
    fi = inp.features_info
    for name in card_methods(inp):
        log_ = inp.train_logs.get(name)
        blocks.append(h3(method_title(name)))
        if log_ is None:
            why = inp.problems.get(str(paths.train_log(name)), f"{paths.train_log(name)} not found")
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
                else "no epochs (stores the training embeddings)"
                if isinstance(c, C.KnnModelCard)
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
                ["trained parameters", fnum(c.n_params_trained)],
            ]
            if fi:
                rows.append(["feature dimension", fnum(fi.D)])
        elif isinstance(c, C.KnnModelCard):
            rows += [["k (chosen by grouped CV log loss)", fnum(c.k)], ["frozen", c.frozen]]
        elif isinstance(log_, C.TrainLog) and isinstance(c, C.NetModelCard):
            rows += _net_rows(c, log_)
        blocks.append(table(Table(["item", "value"], rows)))
        if c.layer_groups:
            blocks.append(
                table(
                    Table(
                        ["layer group", "learning rate", "parameters", "trainable"],
                        [
                            [g.name, fsci(g.lr), fnum(g.n_params), "yes" if g.trainable else "no"]
                            for g in c.layer_groups
                        ],
                        caption=f"{name}: learning rate per layer group",
                    )
                )
            )
        else:
            blocks.append(p("No backbone layer is trained: the embeddings were computed once, without gradients."))
    return blocks


__all__ = ["section_model_cards"]
