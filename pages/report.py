"""Report: pick runs (or one sweep), two or more task metrics, a reference run and a note; preview
the report and download it as one self-contained HTML file, PNGs of its figures, a CSV of its
numbers, or everything in one zip (dashboard.report builds all four from the same data)."""

from __future__ import annotations

import streamlit as st

from dashboard import queries, widgets
from dashboard.figures.pareto import metric_columns
from dashboard.nav import require_entry
from dashboard.report import ReportError, build_report, chromium_path, default_reference

require_entry()

MAX_DEFAULT_RUNS = 12

st.title("Report")
st.caption(
    "A trade-off report to keep: the front of the chosen runs, what each point gains and loses "
    "against a reference run in plain words, with directions, units, seeds and every configuration."
)
runs, done = widgets.finished_runs_or_stop(
    "Nothing to report yet", "No finished run yet: a report uses the test metrics of finished runs."
)

# ---- what goes in ----------------------------------------------------------------------------
ds, pool, sweep, color_by = widgets.front_pickers(runs, done, "report", "runs I pick")
if sweep:
    chosen = pool[pool["sweep_id"] == sweep]
    st.caption(f"{len(chosen)} finished run(s) of sweep `{sweep}`.")
else:
    picked = widgets.run_picker(
        runs,
        key=f"report:{ds}",
        label="Runs (finished, this dataset)",
        default=pool["run_id"].head(MAX_DEFAULT_RUNS).tolist(),
        candidates=pool,
        restrict=True,
        help="The points of the report; the URL keeps your choice.",
    )
    chosen = pool[pool["run_id"].isin(picked)]
if chosen.empty:
    st.info("Choose one or more finished runs (or a sweep) above.")
    st.stop()

metrics = [c for c in metric_columns(chosen) if chosen[c].notna().any()]
if len(metrics) < 2:
    st.info("These runs have fewer than two test metrics: a trade-off needs two.")
    st.stop()
primary = queries.task_primary_metrics(chosen["run_id"].head(1).tolist())
preferred = [f"{t}/{m}" for t, m in primary.items() if f"{t}/{m}" in metrics] or metrics[:2]
mkey = f"report_metrics:{ds}"
if any(m not in metrics for m in st.session_state.get(mkey, [])):
    del st.session_state[mkey]
chosen_metrics = st.multiselect(
    "Task metrics (two or more)",
    metrics,
    default=preferred,
    key=mkey,
    help="Each with its direction (higher or lower is better) from the metric's definition.",
)
if len(chosen_metrics) < 2:
    st.warning("Choose two or more task metrics: a trade-off needs two.")
    st.stop()

ids = chosen["run_id"].tolist()
labels = queries.labels_for(runs, ids)
configs = queries.configs(ids)
rkey = f"report_ref:{ds}:{sweep}"
if st.session_state.get(rkey) not in ids:
    st.session_state[rkey] = default_reference(chosen, chosen_metrics, configs)
r1, r2 = st.columns([2, 3])
reference = r1.selectbox(
    "Reference run",
    ids,
    key=rkey,
    format_func=lambda r: labels.get(r, r),
    help="Every point's gains and losses are stated against this run (default: an equal-weights run).",
)
title = r2.text_input("Title", "", key="report_title", placeholder="default: the metrics and dataset")
note = st.text_area(
    "Note",
    "",
    key="report_note",
    placeholder="What should the reader take away? (kept in the report as written)",
    height=90,
)
o1, o2 = st.columns(2)
with_curves = o1.toggle("Include training curves", True, key="report_curves")
with_transfer = o2.toggle(
    "Include single-task comparison (if baselines finished)", True, key="report_transfer"
)

try:
    report = build_report(
        chosen,
        chosen_metrics,
        configs,
        reference=reference,
        note=note,
        title=title,
        curves=queries.loss_curves(ids) if with_curves else None,
        transfer=queries.transfer_of(ids, labels) if with_transfer else None,
        color_by=color_by,
    )
except ReportError as e:
    st.error(str(e))
    st.stop()

# ---- downloads -------------------------------------------------------------------------------
stem = report.file_stem()
browser = chromium_path()
no_png = None if browser else "PNG export needs Chromium on the server (Debian: apt install chromium)."
d1, d2, d3, d4 = st.columns(4)
d1.download_button(
    "HTML report",
    data=lambda: report.to_html().encode("utf-8"),
    file_name=f"{stem}.html",
    mime="text/html",
    icon=":material/download:",
    key="report_dl_html",
    on_click="ignore",  # a download needs no rerun, and a rerun can swallow the next click
    type="primary",
    help="One self-contained file: interactive figures, opens without a network.",
)
d2.download_button(
    "CSV of the numbers",
    data=report.to_csv(),
    file_name=f"{stem}.csv",
    mime="text/csv",
    icon=":material/table:",
    key="report_dl_csv",
    on_click="ignore",  # a download needs no rerun, and a rerun can swallow the next click
)
d3.download_button(
    f"Zip: HTML, CSV, {len(report.figures)} PNGs",
    data=lambda: report.to_zip(with_pngs=True),
    file_name=f"{stem}-figures.zip",
    mime="application/zip",
    icon=":material/image:",
    key="report_dl_png",
    on_click="ignore",  # a download needs no rerun, and a rerun can swallow the next click
    disabled=no_png is not None,
    help=no_png
    or "The figures as PNGs (rendered by headless Chromium: a few seconds), the HTML "
    "report, the CSV and every configuration as JSON, in one zip.",
)
d4.caption(
    f"{len(report.points)} run(s) · {len(report.front_ids)} on the front · seeds "
    f"{', '.join(map(str, report.seeds)) or '–'}"
)

# ---- preview ---------------------------------------------------------------------------------
st.divider()
st.subheader(report.title)
if note.strip():
    st.info(note)
st.markdown(
    "\n".join(
        f"- **{o.label}** (`{o.column}`): {o.direction_text}; changes in "
        f"{'percentage points (pt)' if o.unit == 'pt' else 'percent of the reference (%)'}"
        for o in report.objectives
    )
)
if report.n_missing:
    st.caption(f"{report.n_missing} chosen run(s) lack one of the metrics and are on no front.")

st.markdown(f"**Trade-offs on the front** against {labels.get(reference, reference)}")
table = report.tradeoffs.drop(columns=["run_id", "reference", "gains", "losses"]).rename(
    columns={"label": "point", "tradeoff": "trade-off"}
)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        **{c: st.column_config.NumberColumn(c, format="%+.2f") for c in table.columns if c.endswith(")")},
        "trade-off": st.column_config.TextColumn("trade-off", width="large"),
    },
)
for i, f in enumerate(report.figures, 1):
    st.markdown(f"**Figure {i}. {f.title}**")
    st.caption(f.caption)
    st.plotly_chart(f.figure, width="stretch", key=f"report_fig:{f.name}", config={"displaylogo": False})
with st.expander(f"Configuration of every point ({len(ids)})"):
    st.json(report.configs, expanded=False)
