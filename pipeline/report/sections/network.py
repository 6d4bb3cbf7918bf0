"""Sections about the re-used network: introspection (architecture, what each method trains,
first-layer filters, feature maps, units before and after fine-tuning; the introspect stage) and
the transferability ranking of candidate backbones (LogME; the transferability stage)."""

from __future__ import annotations

from pipeline import contracts as C
from pipeline.report.blocks import Figure, Table, figure, fnum, fp, fsci, h3, missing, p, table, ul
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import configured_methods, ordered


def _plan_cell(plan: C.TrainingPlan | None, group: str, trained: dict[str, float]) -> str:
    """A group's learning rate under one method; a rate chosen during training (scratch) is read
    from that method's model card (``trained``: group -> rate) when it has run."""
    if plan is None:
        return "n/a"
    row = next((g for g in plan.groups if g.group == group), None)
    if row is None:
        return "n/a"
    if not row.trains:
        return "frozen"
    if row.lr is not None:
        return fsci(row.lr)
    return f"{fsci(trained[group])} (chosen on val)" if group in trained else "trains (rate chosen on val)"


def _trained_rates(inp: ReportInputs, method: str) -> dict[str, float]:
    log_ = inp.train_logs.get(method)
    return {g.name: g.lr for g in log_.model_card.layer_groups if g.trainable} if log_ is not None else {}


def architecture_table(intro: C.Introspection, methods: list[str], rates: dict[str, dict[str, float]]) -> Table:
    """Layer groups in forward order with output shape and parameters, and per method the
    learning rate of each group it trains ('frozen' otherwise)."""
    rows = [
        [
            str(g.index),
            g.name,
            " × ".join(str(d) for d in g.output_shape[1:]),
            fnum(g.n_params),
            fnum(g.mult_adds),
        ]
        + [_plan_cell(intro.training.get(m), g.name, rates.get(m, {})) for m in methods]
        for g in intro.architecture.groups
    ]
    return Table(
        ["#", "layer group", "output (C × h × w)", "parameters", "multiply-adds"] + methods,
        rows,
        caption=f"{intro.architecture.summary_library}; input {' × '.join(map(str, intro.architecture.input_shape))}; "
        f"{fnum(intro.architecture.total_params)} parameters in all. Method columns: learning rate of each group "
        "trained.",
    )


def _units_rows(units: list[C.Unit]) -> list[list[str]]:
    rows = []
    for u in units:
        for state in ("before", "after"):
            s: C.UnitState = getattr(u, state)
            rows.append(
                [
                    f"channel {u.channel}",
                    "pretrained" if state == "before" else "fine-tuned",
                    ", ".join(str(r) for r in s.top_rows),
                    ", ".join(fnum(a, 2) for a in s.top_activations),
                    f"{fnum(s.actmax_start, 2)} → {fnum(s.actmax_final, 2)}",
                    fnum(s.mean_activation, 2),
                    str(s.reconstruction_row),
                ]
            )
    return rows


def section_introspection(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    intro = inp.introspection
    if intro is None:
        why = inp.problems.get("reports/introspection/introspection.json", "not found")
        return [missing(f"Introspection unavailable: {why} (the introspect stage writes it).")]
    methods = ordered(intro.training, configured_methods(inp))
    blocks: list[dict] = [
        p(
            f"The re-used network, {intro.backbone} ({intro.weights_source.before}), before and after fine-tuning "
            f"({intro.weights_source.after}), on {fnum(intro.n_train)} training radiographs at "
            f"{fnum(intro.image_size)} px; {fnum(intro.wall_time_s, 1)} s."
        ),
        h3("Architecture and what each method trains"),
        table(architecture_table(intro, methods, {m: _trained_rates(inp, m) for m in methods})),
        ul([f"{m}: {intro.training[m].note}" for m in methods]),
        h3("First-layer filters"),
        p(
            f"The first convolution ({' × '.join(map(str, intro.first_layer.shape))}) summed over its colour "
            "channels, pretrained and fine-tuned; fine-tuning changed it by "
            f"{fnum(intro.first_layer.relative_change, 4)} (relative Frobenius norm of the difference)."
        ),
    ]
    blocks.append(
        figure(figs["introspect_filters"]) if "introspect_filters" in figs else missing("Filter figure not found.")
    )
    blocks.append(h3("Feature maps"))
    blocks.append(
        p(
            f"The first {fnum(intro.feature_maps.channels)} channels of the outputs of "
            f"{', '.join(intro.feature_maps.groups)} for training radiograph row {intro.feature_maps.row}."
        )
    )
    blocks.append(
        figure(figs["introspect_feature_maps"])
        if "introspect_feature_maps" in figs
        else missing("Feature-map figure not found.")
    )
    blocks.append(h3("Units before and after fine-tuning"))
    blocks.append(p(f"Selection: {intro.units.selection}. Reconstruction: {intro.units.reconstruction}."))
    for group, units in intro.units.groups.items():
        blocks.append(
            table(
                Table(
                    [
                        "unit",
                        "network",
                        "top training rows",
                        "their mean activations",
                        "activation maximisation (start → final)",
                        "mean activation (train)",
                        "guided-backprop row",
                    ],
                    _units_rows(units),
                    caption=f"{group}: the same channels under both networks",
                )
            )
        )
        key = f"introspect_units_{group}"
        blocks.append(figure(figs[key]) if key in figs else missing(f"Unit figure of {group} not found."))
    return blocks


def section_transferability(inp: ReportInputs) -> list[dict]:
    tr = inp.transferability
    if tr is None:
        why = inp.problems.get("reports/transferability.json", "not found")
        return [missing(f"Transferability ranking unavailable: {why} (the transferability stage writes it).")]
    rank = {r.name: r.rank for r in tr.ranking}
    rows = [
        [
            fnum(rank.get(c.name)) if c.name in rank else "not ranked",
            c.name,
            c.status,
            fnum(c.score, 4),
            fnum(c.feature_dim),
            fnum(c.n_train),
            fnum(c.embed_seconds, 1) if c.embed_seconds is not None else "reused",
            fnum(c.logme_seconds, 2),
            fnum(c.seconds, 1),
            c.reason or c.features_from or "",
        ]
        for c in sorted(tr.candidates, key=lambda c: rank.get(c.name, len(rank) + 1))
    ]
    corr = tr.correlation_with_val_auroc
    corr_text = (
        f"Spearman rank correlation of LogME with the linear method's val AUROC over "
        f"{', '.join(corr.candidates)}: rho {fnum(corr.rho)} (p {fp(corr.p_value)})."
        if corr.rho is not None
        else f"Rank correlation with the linear method's val AUROC: {corr.note}."
    )
    return [
        p(
            f"{tr.method}. Computed on the {tr.split} split ({fnum(tr.n_train)} images, {fnum(tr.image_size)} px) "
            "with no training: it ranks candidate backbones before compute is spent on them. Higher is better; "
            f"scores compare candidates on this data set only. {fnum(tr.wall_time_s, 1)} s in all."
        ),
        table(
            Table(
                [
                    "rank",
                    "candidate",
                    "status",
                    "LogME",
                    "feature dim",
                    "train images",
                    "embedding (s)",
                    "LogME (s)",
                    "cost (s)",
                    "features / why skipped",
                ],
                rows,
            )
        ),
        p(corr_text),
    ]


__all__ = ["architecture_table", "section_introspection", "section_transferability"]
