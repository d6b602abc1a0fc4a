"""Transfer: does sharing help? Each task's test metric against its single-task baseline,
negative transfer highlighted, and delta-m per run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import queries, state, widgets
from dashboard.figures.transfer import delta_m_figure, transfer_figure, transfer_info
from dashboard.nav import require_entry
from engine.jobs import QueueLimitError

require_entry()

st.title("Transfer")
st.caption(
    "Each multi-task run against a single-task baseline: same data, tasks, seed, epochs, batch size "
    "and learning rate, one network per task, equal weights. Positive = sharing helped."
)
runs = queries.runs()
if runs.empty:
    widgets.empty_lake("No runs to compare yet")
    st.stop()

mtl = runs[runs["arch"] != "single-task"]
if mtl.empty:
    st.info("Only single-task runs so far. Launch a multi-task run to compare it with its baseline.")
    st.stop()
datasets = list(dict.fromkeys(mtl["dataset"].dropna()))
ds = widgets.url_selectbox(
    "Dataset", datasets, "dataset", "transfer_dataset", default=widgets.dataset_of_view(runs, datasets)
)
pool = mtl[mtl["dataset"] == ds]
default = pool.loc[pool["status"] == "finished", "run_id"].head(6).tolist() or pool["run_id"].head(1).tolist()
picked = widgets.run_picker(
    runs, key=f"transfer:{ds}", default=default, candidates=pool, max_selections=20, restrict=True
)
if not picked:
    st.info("Choose one or more multi-task runs above.")
    st.stop()
labels = queries.labels_for(runs, picked)

auto = st.toggle(
    "Run missing baselines automatically",
    value=True,
    key="transfer_auto",
    help="Queue a single-task baseline for every chosen run that has none (one per distinct "
    "data/seed/budget), so the comparison fills in by itself.",
)
baselines = queries.find_baselines(picked)
missing = [r for r, b in baselines.items() if b is None]
if missing:
    if auto or st.button(f"Run {len(missing)} missing baseline(s)", key="transfer_run_baselines"):
        try:
            made = queries.ensure_baselines(missing)
        except QueueLimitError as e:
            st.warning(f"Could not queue the missing baselines: {e}")
            made = {}
        n_new = sum(1 for _, created in made.values() if created)
        if n_new:
            st.toast(f"Queued {n_new} single-task baseline run(s)")
        baselines.update({r: b for r, (b, _) in made.items()})
    else:
        st.warning(f"{len(missing)} run(s) have no single-task baseline yet.")

status_of = dict(zip(runs["run_id"], runs["status"], strict=True))
base_ids = sorted({b for b in baselines.values() if b})
pending = [b for b in base_ids if status_of.get(b, "queued") in queries.LIVE_STATES]


@st.fragment(run_every=2.0 if pending else None)
def comparison() -> None:
    stat = queries.statuses(base_ids)
    still = [b for b in base_ids if stat[b].get("state") in queries.LIVE_STATES]
    if pending and not still:
        st.rerun()
    if still:
        st.info(
            f"Waiting for {len(still)} baseline run(s) to finish "
            f"({', '.join(stat[b].get('state', '?') for b in still)}); this view updates by itself.",
            icon=":material/hourglass_top:",
        )
        if queries.worker_status() is None:
            st.warning("No worker is running: start one from the sidebar so the baselines train.")
    failed = [b for b in base_ids if stat[b].get("state") in ("failed", "cancelled")]
    for b in failed:
        st.error(f"Baseline `{b}` {stat[b].get('state')}: {stat[b].get('error') or ''}")
    finals = queries.final_metrics([*picked, *base_ids])
    info = transfer_info(finals, baselines, queries.task_primary_metrics(picked), labels)
    unfinished = [labels[r] for r in picked if status_of.get(r) != "finished"]
    if unfinished:
        st.caption("Test metrics appear when a run finishes; not finished yet: " + ", ".join(unfinished))
    if info.empty:
        st.info("No chosen run has both its own test metrics and a finished baseline yet.")
        return
    c1, c2 = st.container(), st.container()
    with c1:
        st.plotly_chart(transfer_figure(info), width="stretch", key="transfer_bars")
    with c2:
        st.plotly_chart(delta_m_figure(info), width="stretch", key="transfer_delta")
    table = info.rows.rename(columns={"label": "run", "change_pct": "change %"})
    cols = ["run", "task", "metric", "value", "baseline", "change %", "negative"]

    def _mark(row: pd.Series) -> list[str]:
        color = "background-color: rgba(214, 39, 40, 0.18)" if row["negative"] else ""
        return [color] * len(row)

    st.dataframe(
        table[cols]
        .style.apply(_mark, axis=1)
        .format({"value": "{:.4f}", "baseline": "{:.4f}", "change %": "{:+.2f}"}),
        hide_index=True,
        width="stretch",
    )
    n_neg = int(info.rows["negative"].sum())
    if n_neg:
        st.warning(
            f"Negative transfer in {n_neg} task result(s): those tasks do better trained alone.",
            icon=":material/trending_down:",
        )


comparison()
state.set_list("runs", picked)
widgets.page_links(picked, exclude="pages/transfer.py")
