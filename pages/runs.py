"""Runs: every run in a filterable, sortable table; tick runs to overlay their curves,
download the table as CSV or delete runs."""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from dashboard import identity, queries, state, widgets
from dashboard.figures.curves import curves_figure, curves_info
from dashboard.nav import require_entry

require_entry()

st.title("Runs")
runs = queries.runs()
if runs.empty:
    widgets.empty_lake("No runs yet")
    st.stop()

# ---- filters ---------------------------------------------------------------------------------
with st.container(border=True):
    f1, f2, f3, f4, f5 = st.columns(5)
    ds_options = sorted(runs["dataset"].dropna().unique())
    url_ds = state.get_value("dataset")
    if "runs_f_dataset" not in st.session_state:
        st.session_state["runs_f_dataset"] = [url_ds] if url_ds in ds_options else []
    f_ds = f1.multiselect("Dataset", ds_options, key="runs_f_dataset")
    if len(f_ds) == 1:
        state.set_value("dataset", f_ds[0])
    f_arch = f2.multiselect("Architecture", sorted(runs["arch"].dropna().unique()), key="runs_f_arch")
    f_bal = f3.multiselect("Balancer", sorted(runs["balancer"].dropna().unique()), key="runs_f_bal")
    f_status = f4.multiselect("Status", sorted(runs["status"].dropna().unique()), key="runs_f_status")
    all_tags = sorted({t for ts in runs["tags"].fillna("") for t in str(ts).split(",") if t})
    f_tags = f5.multiselect("Tags", all_tags, key="runs_f_tags")
    search = st.text_input("Search name or id", "", key="runs_search", placeholder="e.g. mmoe, sweep, 3fa9c1")

view = runs
if f_ds:
    view = view[view["dataset"].isin(f_ds)]
if f_arch:
    view = view[view["arch"].isin(f_arch)]
if f_bal:
    view = view[view["balancer"].isin(f_bal)]
if f_status:
    view = view[view["status"].isin(f_status)]
if f_tags:
    view = view[view["tags"].fillna("").map(lambda s: any(t in str(s).split(",") for t in f_tags))]
if search.strip():
    q = search.strip().lower()
    view = view[
        view["label"].str.lower().str.contains(q, regex=False) | view["run_id"].str.contains(q, regex=False)
    ]

metric_cols = [c for c in view.columns if "/" in c and not c.endswith("/loss") and view[c].notna().any()]
selected = state.get_list("runs")
known = set(runs["run_id"])
widgets.warn_missing([r for r in selected if r not in known])
selected = [r for r in selected if r in known]

table = view[
    [
        "run_id",
        "name",
        "dataset",
        "arch",
        "balancer",
        "status",
        "owner",
        "progress",
        "tasks",
        "seed",
        "tags",
        "sweep_id",
        *metric_cols,
        "created",
        "error",
    ]
].copy()
table.insert(0, "select", table["run_id"].isin(selected))
table["created"] = pd.to_datetime(table["created"], unit="s", errors="coerce")
table["status"] = table["status"].map(widgets.state_badge)
st.caption(f"{len(view)} of {len(runs)} runs · tick rows to overlay their curves; click a header to sort.")
editor_key = "runs_table:" + hashlib.md5(",".join(view["run_id"]).encode()).hexdigest()[:10]
edited = st.data_editor(
    table,
    key=editor_key,
    hide_index=True,
    width="stretch",
    height=min(38 + 35 * len(table), 460),
    disabled=[c for c in table.columns if c != "select"],
    column_config={
        "select": st.column_config.CheckboxColumn("✓", width="small"),
        "run_id": st.column_config.TextColumn("run", width="medium"),
        "progress": st.column_config.ProgressColumn(
            "progress", min_value=0.0, max_value=1.0, format="percent"
        ),
        "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        **{c: st.column_config.NumberColumn(c, format="%.4f") for c in metric_cols},
    },
)
ticked = edited.loc[edited["select"], "run_id"].tolist()
hidden_selected = [r for r in selected if r not in set(view["run_id"])]
picked = hidden_selected + [r for r in ticked if r not in hidden_selected]
if picked != selected:
    state.set_list("runs", picked)

c1, c2, c3 = st.columns(3)
c1.download_button(
    "Download CSV",
    queries.export_csv(view),
    file_name="seesaw-runs.csv",
    mime="text/csv",
    icon=":material/download:",
    key="runs_csv",
    on_click="ignore",  # a download needs no rerun, and a rerun can swallow the next click
)

with c2.popover(f"Delete {len(picked)} selected", disabled=not picked, icon=":material/delete:"):
    st.write(
        "Deleting removes the run folders for good. Running runs must be cancelled first; "
        "you can delete only the runs you queued."
    )
    if st.button("Delete for good", type="primary", key="runs_delete"):
        deleted, refused = [], []
        for rid in picked:
            try:
                queries.delete(rid)
                deleted.append(rid)
            except Exception as e:  # running / being started: say why
                refused.append(f"{rid}: {e}")
        state.set_list("runs", [r for r in picked if r not in deleted])
        for msg in refused:
            st.error(msg)
        if deleted:
            st.session_state["_runs_deleted"] = len(deleted)
            st.rerun()
owner_of = dict(zip(runs["run_id"], runs["owner"], strict=True))
status_of = dict(zip(runs["run_id"], runs["status"], strict=True))
live_picked = [r for r in picked if status_of.get(r) in queries.LIVE_STATES]
mine = [r for r in live_picked if identity.owns(owner_of.get(r))]
others = sorted({str(owner_of.get(r)) for r in live_picked if r not in mine})
if not live_picked:
    why_not = "Tick queued or running runs in the table to cancel them."
elif not mine:
    why_not = f"Only their owners can cancel these runs ({', '.join(others)}); you are {identity.current()}."
else:
    why_not = f"Cancels your {len(mine)} queued/running run(s)" + (
        f"; {len(live_picked) - len(mine)} of someone else's stay." if others else "."
    )
if c3.button(
    f"Cancel {len(mine)} of mine" if live_picked else "Cancel selected",
    disabled=not mine,
    help=why_not,
    icon=":material/stop_circle:",
    key="runs_cancel",
):
    for rid in mine:
        st.toast(queries.cancel(rid))
n_deleted = st.session_state.pop("_runs_deleted", None)
if n_deleted:
    st.toast(f"Deleted {n_deleted} run(s)")

# ---- overlaid curves -----------------------------------------------------------------------
st.subheader("Curves")
if not picked:
    st.info("Tick one or more runs in the table to overlay their curves here.")
    st.stop()
labels = queries.labels_for(runs, picked)
metrics = queries.metrics(picked, split=["train", "val"])
if metrics.empty:
    st.info("The selected runs have no recorded values yet.")
else:
    o1, o2, o3 = st.columns(3)
    names = ["loss", *sorted(set(metrics["metric"]) - {"loss"})]
    metric = o1.selectbox("Metric", names, key="runs_metric")
    splits = o2.multiselect(
        "Splits",
        ["train", "val"],
        default=["train", "val"] if metric == "loss" else ["val"],
        key=f"runs_splits:{metric}",
    )
    smoothing = o3.slider("Smoothing (train)", 0.0, 0.99, 0.6, 0.01, key="runs_smoothing")
    log_y = o3.toggle("Log scale", metric == "loss", key=f"runs_log:{metric}")
    info = curves_info(metrics, metric, tuple(splits) or ("val",), labels, smoothing)
    st.plotly_chart(curves_figure(info, log_y=log_y), width="stretch", key="runs_curves")
widgets.page_links(picked, exclude="pages/runs.py")
