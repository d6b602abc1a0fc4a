"""Conflicts: how often and where task gradients point against each other."""

from __future__ import annotations

import streamlit as st

from dashboard import queries, state, widgets
from dashboard.figures.conflicts import (
    conflict_rate_figure,
    conflict_rate_info,
    cosine_distribution_figure,
    cosine_timeseries_figure,
    grad_layers,
    layer_conflict_figure,
    norm_ratio_figure,
)
from dashboard.nav import require_entry

require_entry()

st.title("Conflicts")
st.caption(
    "Cosine < 0 between two tasks' gradients on the shared parameters means one task's step "
    "undoes the other's: the seesaw."
)
runs = queries.runs()
if runs.empty:
    widgets.empty_lake("No runs to analyse yet")
    st.stop()

shared = runs[runs["arch"] != "single-task"]
if shared.empty:
    st.info(
        "Only single-task runs so far: they share no parameters, so their tasks cannot conflict. "
        "Launch a multi-task architecture (e.g. MMoE or Shared-Bottom)."
    )
    st.stop()
default = (
    shared.loc[shared["status"] == "finished", "run_id"].head(1).tolist() or shared["run_id"].head(1).tolist()
)
picked = widgets.run_picker(
    runs, key="conflicts", default=default, candidates=shared, max_selections=6, restrict=True
)
if not picked:
    st.info("Choose one or more multi-task runs above.")
    st.stop()

labels = queries.labels_for(runs, picked)
stats = queries.grad_stats(picked)
if stats.empty:
    st.info(
        "These runs logged no gradient statistics (single-task architecture, `grad_stats_every = 0`, "
        "or still starting). Pick other runs or launch one with gradient statistics on."
    )
    st.stop()
missing = [labels[r] for r in picked if r not in set(stats["run_id"])]
if missing:
    st.caption("No gradient statistics for: " + ", ".join(missing))

rates = conflict_rate_info(stats)
c1, c2 = st.container(), st.container()
with c1:
    st.plotly_chart(conflict_rate_figure(rates, labels), width="stretch", key="conf_rates")
with c2:
    st.markdown("**Per task pair** (all shared parameters)")
    show = rates.assign(run=rates["run_id"].map(labels))[
        ["run", "pair", "conflict_rate", "mean_cosine", "p10_cosine", "n_steps"]
    ]
    st.dataframe(
        show,
        hide_index=True,
        width="stretch",
        column_config={
            "conflict_rate": st.column_config.ProgressColumn(
                "conflict rate", min_value=0.0, max_value=1.0, format="percent"
            ),
            "mean_cosine": st.column_config.NumberColumn("mean cos", format="%.3f"),
            "p10_cosine": st.column_config.NumberColumn("10th pct", format="%.3f"),
        },
    )

layers = grad_layers(stats)
layer = widgets.url_selectbox(
    "Shared block",
    layers,
    "layer",
    "conflicts_layer",
    default="all",
    help="'all' = every shared parameter; the others are the model's shared blocks",
)
d1, d2 = st.columns(2, gap="large")
with d1:
    st.plotly_chart(cosine_distribution_figure(stats, layer, labels=labels), width="stretch", key="conf_dist")
with d2:
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.5, 0.01, key="conflicts_smoothing")
    st.plotly_chart(cosine_timeseries_figure(stats, layer, labels, smoothing), width="stretch", key="conf_ts")

st.subheader("Which shared blocks conflict most")
if len(layers) > 1:
    st.plotly_chart(layer_conflict_figure(stats, labels=labels), width="stretch", key="conf_layers")
else:
    st.caption("These models report one shared block only.")
st.plotly_chart(norm_ratio_figure(stats, layer, labels, smoothing), width="stretch", key="conf_norms")
st.caption(
    "Norm ratio: each task's gradient norm over the mean of the tasks' norms. A task far above 1 "
    "dominates the shared update."
)
state.set_list("runs", picked)
widgets.page_links(picked, exclude="pages/conflicts.py")
