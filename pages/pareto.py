"""Pareto: runs (or one weight sweep) as points on two task metrics; the non-dominated front as a
step line, dominated runs faded, hypervolume against a shown reference point; a parallel-coordinates
view for 3+ tasks. Click a point to open that run's curves and config. When the dataset has a
finished preference-conditioned model (Pareto HyperNetwork or COSMOS) of the plotted tasks, its
learned front is drawn too and a preference slider moves a ★ along it."""

from __future__ import annotations

import json

import streamlit as st

from dashboard import queries, state, widgets
from dashboard.figures.curves import curves_figure, curves_info
from dashboard.figures.pareto import (
    inversion_text,
    learned_front_info,
    learned_point_text,
    metric_columns,
    parallel_figure,
    parallel_info,
    pareto_figure,
    pareto_info,
    preference_grid,
    run_at,
)
from dashboard.nav import require_entry

require_entry()

st.title("Pareto")
st.caption("A run is on the front when no other run is at least as good on both metrics and better on one.")
runs, done = widgets.finished_runs_or_stop(
    "No runs to compare yet", "No finished run yet: points appear here when runs finish (their test metrics)."
)
ds, pool, sweep, color_by = widgets.front_pickers(runs, done, "pareto", "all finished runs")
cosmos_all = queries.cosmos_runs(done, ds)  # preference-conditioned models: drawn as a learned front
pool = pool[~pool["run_id"].isin(cosmos_all["run_id"])]
if sweep:
    pool = pool[pool["sweep_id"] == sweep]

source = pool if not pool.empty else done[done["run_id"].isin(cosmos_all["run_id"])]
metrics = [c for c in metric_columns(source) if source[c].notna().any()]
if len(metrics) < 2:
    st.info("These runs have fewer than two test metrics: a front needs two.")
    st.stop()
primary = queries.task_primary_metrics(source["run_id"].head(1).tolist())
preferred = [f"{t}/{m}" for t, m in primary.items() if f"{t}/{m}" in metrics]
default_x = preferred[0] if preferred else metrics[0]
default_y = preferred[1] if len(preferred) > 1 else next(m for m in metrics if m != default_x)
a1, a2 = st.columns(2)
with a1:
    x = widgets.url_selectbox("x axis", metrics, "x", "pareto_x", default=default_x)
with a2:
    y = widgets.url_selectbox("y axis", metrics, "y", "pareto_y", default=default_y)
if x == y:
    st.warning("Choose two different metrics for the axes.")
    st.stop()

labels = queries.labels_for(runs, [*pool["run_id"], *cosmos_all["run_id"]])
info = pareto_info(pool, x, y, color_by, labels)

# ---- the learned front of a preference-conditioned model (COSMOS) -----------------------------
learned = None
x_task, y_task = x.rsplit("/", 1)[0], y.rsplit("/", 1)[0]
matching = cosmos_all[cosmos_all["task_list"].apply(lambda ts: x_task in ts and y_task in ts)]
if not matching.empty:
    cos_ids = matching["run_id"].tolist()
    ref = str(pool["run_id"].iloc[0]) if not pool.empty else ""
    same_data = [r for r in cos_ids if ref and queries.same_data(r, ref)]
    with st.container(border=True):
        c1, c2 = st.columns([2, 3], gap="large")
        with c1:
            cid = widgets.url_selectbox(
                "Learned front (preference-conditioned model)",
                ["", *cos_ids],
                "cosmos",
                "pareto_cosmos",
                default=(same_data or cos_ids)[0],
                format_func=lambda r: labels.get(r, r) if r else "none",
                help="A preference-conditioned model (Pareto HyperNetwork or COSMOS): one training, any "
                "preference by a forward pass.",
            )
        if cid:
            tasks = matching.loc[matching["run_id"] == cid, "task_list"].iloc[0]
            with c2:
                pref = widgets.preference_picker(tasks, key=f"pareto_pref:{cid}")
            try:
                with st.spinner("Evaluating the learned front…"):
                    front = queries.cosmos_front(cid, preference_grid(len(tasks)), "test")
                    at_pref = queries.cosmos_front(cid, (pref,), "test")
            except Exception as e:  # a missing checkpoint or dataset must not break the page
                st.warning(f"The learned front of `{cid}` could not be evaluated: {e}")
            else:
                learned = learned_front_info(front, x, y, at_pref, cid, labels.get(cid, cid))
            if learned is not None and learned.point is not None:
                st.caption(
                    f"★ **Your preference** {learned_point_text(learned)} "
                    f"(test split: one forward pass of `{cid}`, nothing is trained)"
                )
            if learned is not None and learned.inverted:
                lam = queries.cosmos_params(cid).get("lam", "?")
                st.warning(inversion_text(learned, lam), icon=":material/swap_horiz:")
            if ref and cid not in same_data:
                st.caption(
                    "This model was trained on other dataset parameters than these runs: its test "
                    "rows differ, so compare with care."
                )
elif not cosmos_all.empty:
    trained = sorted({t for ts in cosmos_all["task_list"] for t in ts})
    st.caption(
        f"This dataset's preference-conditioned model(s) train {', '.join(trained)}: choose axes of "
        "those tasks to see a learned front."
    )
else:
    st.caption(
        "Train a preference-conditioned model (Pareto HyperNetwork or COSMOS) on **Launch** to move a "
        "point along its learned front here."
    )

if info.points.empty and learned is None:
    st.info(f"No finished run has both {x} and {y}.")
    st.stop()
event = st.plotly_chart(
    pareto_figure(info, learned=learned),
    width="stretch",
    key="pareto_chart",
    on_select="rerun",
    selection_mode="points",
    config={"displaylogo": False},
)
if info.points.empty:
    st.caption("No other finished run of this dataset has both metrics yet: only the learned front is drawn.")
    st.stop()
m1, m2, m3 = st.columns(3)
m1.metric("Runs on the front", f"{len(info.front_run_ids)} / {len(info.points)}")
m2.metric("Hypervolume", f"{info.hypervolume:.4g}" if info.hypervolume is not None else "–")
if info.reference is not None:
    m3.metric(
        "Reference point",
        f"({info.reference[0]:.4g}, {info.reference[1]:.4g})",
        help="nadir of the points pushed 10% outward; only points better than it count",
    )
if info.n_missing:
    st.caption(f"{info.n_missing} run(s) lack one of the two metrics and are not drawn.")

points = list(getattr(getattr(event, "selection", None), "points", None) or [])
if points:
    clicked = run_at(points[0], info)
    if clicked and clicked != st.session_state.get("_pareto_clicked"):
        st.session_state["_pareto_clicked"] = clicked
        st.session_state["sel:pareto_run"] = clicked
        state.set_value("run", clicked)

# ---- 3+ tasks --------------------------------------------------------------------------------
n_tasks = len({c.split("/")[0] for c in metrics})
if n_tasks >= 3:
    st.subheader("All tasks at once")
    wanted = preferred if len(preferred) >= 3 else metrics[: min(len(metrics), 4)]
    objectives = st.multiselect("Metrics (axes)", metrics, default=wanted, key=f"pareto_par:{ds}")
    if len(objectives) >= 2:
        st.plotly_chart(
            parallel_figure(parallel_info(pool, objectives, color_by, labels)),
            width="stretch",
            key="pareto_parallel",
        )

# ---- drill down ------------------------------------------------------------------------------
st.subheader("Run details")
ids = info.points.sort_values("on_front", ascending=False)["run_id"].tolist()
front = set(info.front_run_ids)
chosen = widgets.url_selectbox(
    "Click a point above, or pick a run",
    ["", *ids],
    "run",
    "pareto_run",
    default="",
    format_func=lambda r: (("★ " if r in front else "") + labels.get(r, r)) if r else "—",
)
url_run = state.get_value("run")
if url_run and url_run not in set(runs["run_id"]):
    widgets.warn_missing([url_run])
if not chosen:
    st.caption("★ = on the front. The details of the chosen run appear here.")
    st.stop()

row = runs[runs["run_id"] == chosen].iloc[0]
pt = info.points[info.points["run_id"] == chosen]
on_front = bool(pt["on_front"].iloc[0]) if not pt.empty else False
st.markdown(
    f"**{labels.get(chosen, chosen)}** · `{chosen}` · {row['dataset']} · {row['arch']} / {row['balancer']} · "
    + ("on the front ★" if on_front else "dominated")
)
d1, d2 = st.container(), st.columns([2, 3], gap="large")
with d1:
    m = queries.metrics([chosen], split=["train", "val"], metric="loss")
    if m.empty:
        st.caption("No curves recorded.")
    else:
        st.plotly_chart(
            curves_figure(curves_info(m, "loss", ("train", "val"), labels, 0.6), log_y=True),
            width="stretch",
            key="pareto_detail_curves",
        )
with d2[0]:
    test_cols = [c for c in metrics if c in row.index and row[c] == row[c]]
    st.dataframe(
        {"metric": test_cols, "test": [float(row[c]) for c in test_cols]}, hide_index=True, width="stretch"
    )
with d2[1], st.expander("Config", expanded=True):
    st.code(json.dumps(queries.config(chosen), indent=2), language="json", height=320)
st.page_link(
    "pages/live.py",
    label="Open this run in Live",
    icon=":material/monitoring:",
    query_params=state.view_params(runs=[chosen]),
)
