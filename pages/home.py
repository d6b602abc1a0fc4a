"""Home: what is running, recent runs, and one-click quick starts."""

from __future__ import annotations

import streamlit as st

from dashboard import queries, state, widgets
from dashboard.nav import require_entry
from dashboard.presets import PRESETS, preset
from engine.config import ConfigError
from engine.jobs import QueueLimitError

require_entry()

st.title("Seesaw")
st.caption(
    "Launch, watch, compare and explain multi-task learning runs: where sharing helps, "
    "where tasks fight, and what each trade-off costs."
)

runs = queries.runs()

# ---- quick starts --------------------------------------------------------------------------
st.subheader("Quick starts")
cols = st.columns(len(PRESETS))
for col, p in zip(cols, PRESETS, strict=True):
    with col, st.container(border=True):
        st.markdown(f"**{p.title}**")
        st.caption(p.description)
        st.caption(f"{len(p.configs)} runs · " + ", ".join(sorted({c["dataset"] for c in p.configs})))
        if st.button("Launch", key=f"preset:{p.key}", type="primary", width="stretch"):
            st.session_state["_preset_launch"] = p.key

launch_key = st.session_state.pop("_preset_launch", None)
if launch_key:
    chosen = preset(launch_key)
    try:
        ids = queries.submit_many(chosen.configs)
    except ConfigError as e:
        st.error(f"This preset cannot run here: {e}")
    except QueueLimitError as e:
        st.error(str(e), icon=":material/hourglass_top:")
    else:
        state.set_list("runs", ids)
        st.switch_page(chosen.page, query_params=state.view_params(runs=ids))

# ---- what is running ------------------------------------------------------------------------
st.subheader("Running now")
if runs.empty:
    widgets.empty_lake("No runs yet")
else:
    live_ids = runs.loc[runs["status"].isin(queries.LIVE_STATES), "run_id"].tolist()

    @st.fragment(run_every=2.0 if live_ids else None)
    def running_now() -> None:
        """Progress bars that move by themselves while runs train."""
        statuses = queries.statuses(live_ids)
        still = [r for r in live_ids if statuses[r].get("state") in queries.LIVE_STATES]
        if live_ids and not still:
            st.rerun()  # everything ended: redraw the page (recent runs, no timer)
        if not still:
            st.caption("Nothing is training. Launch a quick start above or design a run on **Launch**.")
            return
        labels = dict(zip(runs["run_id"], runs["label"], strict=True))
        for rid in still:
            widgets.progress_row(
                {**statuses[rid], "status": statuses[rid].get("state")}, labels.get(rid, rid)
            )
        st.page_link(
            "pages/live.py",
            label="Watch them live",
            icon=":material/monitoring:",
            query_params=state.view_params(runs=still),
        )

    running_now()

    # ---- recent runs ---------------------------------------------------------------------------
    st.subheader("Recent runs")
    recent = runs.head(10)
    metric_cols = [
        c for c in recent.columns if "/" in c and not c.endswith("/loss") and recent[c].notna().any()
    ][:6]
    view = recent[["label", "status", "dataset", "arch", "balancer", *metric_cols]].copy()
    view["status"] = view["status"].map(widgets.state_badge)
    st.dataframe(
        view,
        hide_index=True,
        width="stretch",
        column_config={"label": st.column_config.TextColumn("run", width="large")},
    )
    c1, c2 = st.columns(2)
    c1.page_link("pages/runs.py", label=f"All {len(runs)} runs", icon=":material/table_rows:")
    c2.page_link(
        "pages/live.py",
        label="Curves of the latest runs",
        icon=":material/monitoring:",
        query_params=state.view_params(runs=queries.latest_batch(runs)),
    )
