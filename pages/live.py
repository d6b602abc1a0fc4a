"""Live: curves, metrics, task weights and gradient conflicts of chosen runs, updating by itself
(a fragment re-runs every second while any shown run is queued or running)."""

from __future__ import annotations

import streamlit as st

from dashboard import identity, queries, widgets
from dashboard.figures.conflicts import (
    cosine_heatmap,
    cosine_matrix_info,
    cosine_timeseries_figure,
    grad_layers,
    norm_ratio_figure,
)
from dashboard.figures.curves import curves_figure, curves_info, metrics_table
from dashboard.figures.weights import weights_figure
from dashboard.nav import require_entry

require_entry()

REFRESH_S = 1.0

st.title("Live")
runs = queries.runs()
if runs.empty:
    widgets.empty_lake("No runs to watch yet")
    st.stop()

live_ids = runs.loc[runs["status"].isin(queries.LIVE_STATES), "run_id"].tolist()
default = live_ids[:4] or queries.latest_batch(runs)
picked = widgets.run_picker(
    runs,
    key="live",
    label="Runs to watch",
    default=default,
    max_selections=8,
    help="Running runs are chosen by default; the URL keeps your choice.",
)
if not picked:
    st.info("Choose one or more runs above to see their curves.")
    st.stop()

labels = queries.labels_for(runs, picked)
owners = dict(zip(runs["run_id"], runs["owner"], strict=True))
shown = runs[runs["run_id"].isin(picked)]
any_live = bool(shown["status"].isin(queries.LIVE_STATES).any())
c1, c2, c3 = st.columns([2, 1, 3])
smoothing = c1.slider("Smoothing (train)", 0.0, 0.99, 0.6, 0.01, key="live_smoothing")
log_y = c2.toggle("Log scale", True, key="live_log", help="log y axis for losses")
c3.caption(
    "Updates by itself every second while a shown run is live." if any_live else "All shown runs have ended."
)


def _progress_and_cancel(statuses: dict[str, dict]) -> None:
    for rid in picked:
        stt = statuses.get(rid, {})
        s = stt.get("state", "unknown")
        row = {**stt, "status": s, "label": labels.get(rid, rid)}
        if s in queries.LIVE_STATES:
            a, b = st.columns([6, 1])
            with a:
                widgets.progress_row(row)
            why_not = identity.not_yours(owners.get(rid))
            if b.button(
                "Cancel",
                key=f"cancel:{rid}",
                disabled=why_not is not None,
                help=why_not or "Stop this run (the trainer stops at its next step)",
            ):
                st.toast(queries.cancel(rid))
        elif s == "failed":
            st.error(
                f"**{labels.get(rid, rid)}** failed: {stt.get('error') or 'no reason recorded'}",
                icon=":material/error:",
            )
        elif s == "cancelled":
            st.warning(
                f"**{labels.get(rid, rid)}** was cancelled at step {stt.get('step') or 0}.",
                icon=":material/stop_circle:",
            )


@st.fragment(run_every=REFRESH_S if any_live else None)
def live_view() -> None:
    statuses = queries.statuses(picked)
    now_live = any(s.get("state") in queries.LIVE_STATES for s in statuses.values())
    if now_live != any_live:
        st.rerun()  # a run started or ended: redraw the page so the refresh timer follows
    _progress_and_cancel(statuses)

    metrics = queries.metrics(picked)
    if metrics.empty:
        st.info(
            "No values recorded yet: the run is queued or starting (the trainer flushes every second)."
            if now_live
            else "These runs recorded no values."
        )
        return
    metric_names = ["loss", *sorted(set(metrics["metric"]) - {"loss"})]
    metric = st.selectbox(
        "Metric",
        metric_names,
        key="live_metric",
        help="train curves exist for the loss only; validation values are per epoch",
    )
    info = curves_info(metrics, metric=metric, splits=("train", "val"), labels=labels, smoothing=smoothing)
    st.plotly_chart(curves_figure(info, log_y=log_y and metric == "loss"), width="stretch", key="live_curves")

    st.markdown("**Metrics** (latest validation, and test once finished)")
    table = metrics_table(metrics, labels)
    if table.empty:
        st.caption("Validation runs at the end of each epoch.")
    else:
        st.dataframe(table.drop(columns=["run_id"]), hide_index=True, width="stretch")
    weights = queries.task_weights(picked)
    if weights.empty:
        st.caption("No task weights recorded yet.")
    else:
        st.plotly_chart(weights_figure(weights, labels), width="stretch", key="live_weights")

    stats = queries.grad_stats(picked)
    st.markdown("**Gradient conflicts between tasks**")
    if stats.empty:
        st.caption(
            "No gradient statistics: the architecture shares no parameters (single-task), "
            "gradient statistics are off for these runs, or none were logged yet."
        )
        return
    runs_with = [r for r in picked if r in set(stats["run_id"])]
    g1, g2, g3 = st.columns([2, 2, 1])
    heat_run = g1.selectbox("Run", runs_with, format_func=lambda r: labels.get(r, r), key="live_heat_run")
    layers = grad_layers(stats[stats["run_id"] == heat_run])
    layer = g2.selectbox(
        "Shared block",
        layers,
        key="live_layer",
        help="'all' = every shared parameter; others are the model's shared blocks",
    )
    follow = g3.toggle("Follow latest", True, key="live_follow")
    run_stats = stats[(stats["run_id"] == heat_run) & (stats["layer"] == layer)]
    steps = sorted(run_stats["step"].unique().tolist())
    step = steps[-1] if steps else 0
    if len(steps) > 1 and not follow:
        step = st.select_slider("Step", steps, value=steps[-1], key=f"live_step:{heat_run}:{layer}")
    elif len(steps) > 1:
        st.caption(f"Showing the latest logged step ({step}); switch off *Follow latest* to pick a step.")
    h1, h2 = st.columns([2, 3], gap="large")
    with h1:
        st.plotly_chart(
            cosine_heatmap(cosine_matrix_info(run_stats, step, layer)), width="stretch", key="live_heatmap"
        )
    with h2:
        st.plotly_chart(
            cosine_timeseries_figure(stats[stats["run_id"] == heat_run], layer, labels, mark_step=step),
            width="stretch",
            key="live_cos_ts",
        )
    st.plotly_chart(norm_ratio_figure(stats, "all", labels), width="stretch", key="live_norms")

    ev = queries.events(picked)
    if not ev.empty:
        with st.expander(f"Events ({len(ev)})"):
            ev = ev.assign(run=ev["run_id"].map(lambda r: labels.get(r, r)))
            st.dataframe(ev[["run", "level", "text"]].tail(50), hide_index=True, width="stretch")


live_view()
widgets.page_links(picked, exclude="pages/live.py")
