"""Reusable Streamlit widgets: the sidebar (worker + lake), run pickers, task-weight sliders
that stay on the simplex, progress rows and empty states."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import queries, state

#: Plain-text state marks (DejaVu covers them; colour emoji fonts are often missing on servers).
STATE_ICONS: dict[str, str] = {
    "queued": "◌",
    "running": "▶",
    "finished": "✓",
    "failed": "✗",
    "cancelled": "■",
    "unknown": "?",
}


def state_badge(s: str | None) -> str:
    s = s or "unknown"
    return f"{STATE_ICONS.get(s, '?')} {s}"


# ---- sidebar ------------------------------------------------------------------------------


def sidebar() -> None:
    """Who you are (runs are queued under that name), worker state (alive, pid, running count; a
    start button when dead) and the lake path."""
    from dashboard import identity

    with st.sidebar:
        identity.sidebar_box()
        st.markdown("**Worker**")
        ws = queries.worker_status()
        if ws is not None:
            running = ws.get("running") or []
            n_running = len(running) if isinstance(running, list | tuple) else int(running or 0)
            jobs = ws.get("jobs")
            n_jobs = len(jobs) if isinstance(jobs, list) else n_running
            runs_text = f" ({n_running} runs)" if n_running != n_jobs else ""
            slots = ws.get("max_parallel", "?")
            st.success(
                f"alive · pid {ws.get('pid')} · {n_jobs} running{runs_text} / {slots} max",
                icon=":material/check_circle:",
            )
        elif time.time() - queries.ensure_worker_once() < 30:
            st.info("worker starting…", icon=":material/hourglass_top:")
        else:
            st.warning("no worker: queued runs wait", icon=":material/warning:")
            if st.button("Start worker", key="sidebar_start_worker", width="stretch"):
                try:
                    ws = queries.start_worker(wait=3.0)
                except Exception as e:  # show why, keep the app usable
                    st.error(f"could not start the worker: {e}")
                else:
                    if ws is None:
                        st.info("worker starting…")
                    st.rerun()
        st.caption(f"Run lake: `{queries.lake_root()}`")


# ---- run pickers --------------------------------------------------------------------------


def run_option_label(runs: pd.DataFrame) -> dict[str, str]:
    """'label · dataset' per run (no state: a chosen chip keeps the text it was chosen with)."""
    if runs.empty:
        return {}
    return {
        rid: f"{label} · {ds}"
        for rid, label, ds in zip(runs["run_id"], runs["label"], runs["dataset"], strict=True)
    }


def warn_missing(missing: Sequence[str]) -> None:
    if missing:
        shown = ", ".join(f"`{m}`" for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        st.warning(
            f"Run(s) {shown} from the link do not exist in this lake "
            f"(`{queries.lake_root()}`): deleted, or the link comes from another machine.",
            icon=":material/warning:",
        )


def run_picker(
    runs: pd.DataFrame,
    key: str,
    label: str = "Runs",
    default: Sequence[str] = (),
    candidates: pd.DataFrame | None = None,
    url_key: str = "runs",
    max_selections: int | None = None,
    help: str | None = None,
    restrict: bool = False,
) -> list[str]:
    """A multiselect of runs bound to the URL parameter `url_key` (comma-joined ids).

    Ids in the URL that do not exist are reported; `default` is used (and written to the URL)
    when the URL names no run. With `restrict`, URL ids outside `candidates` are dropped.
    """
    pool = candidates if candidates is not None else runs
    from_url = state.get_list(url_key)
    known = set(runs["run_id"]) if not runs.empty else set()
    missing = [r for r in from_url if r not in known]
    warn_missing(missing)
    chosen = [r for r in from_url if r in known]
    options = list(pool["run_id"]) if not pool.empty else []
    if restrict:
        chosen = [r for r in chosen if r in set(options)]
    if not chosen:
        chosen = list(default)
    options += [r for r in chosen if r not in options]
    if max_selections:
        chosen = chosen[:max_selections]
    labels = run_option_label(runs)
    wkey = f"picker:{key}"
    current = st.session_state.get(wkey)
    if current is None:
        st.session_state[wkey] = chosen
    elif any(r not in options for r in current):
        st.session_state[wkey] = [r for r in current if r in options]
    picked = st.multiselect(
        label,
        options,
        key=wkey,
        format_func=lambda r: labels.get(r, r),
        max_selections=max_selections,
        help=help,
        placeholder="choose runs…",
    )
    state.set_list(url_key, picked)
    return list(picked)


def dataset_of_view(runs: pd.DataFrame, datasets: Sequence[str]) -> str | None:
    """The dataset of the first run selected in the URL, if it is among `datasets`; else the first."""
    ids = state.get_list("runs")
    if ids and not runs.empty:
        hit = runs.loc[runs["run_id"].isin(ids), "dataset"]
        for ds in hit:
            if ds in datasets:
                return str(ds)
    return datasets[0] if datasets else None


def url_selectbox(
    label: str,
    options: Sequence[str],
    url_key: str,
    key: str,
    default: str | None = None,
    format_func: Any = str,
    help: str | None = None,
) -> str | None:
    """A selectbox whose value lives in the URL parameter `url_key`."""
    options = list(options)
    if not options:
        return None
    wanted = state.get_value(url_key) or (default or "")
    wkey = f"sel:{key}"
    if st.session_state.get(wkey) not in options:
        st.session_state[wkey] = (
            wanted if wanted in options else (default if default in options else options[0])
        )
    value = st.selectbox(label, options, key=wkey, format_func=format_func, help=help)
    state.set_value(url_key, value)
    return value


# ---- task weights on the simplex ----------------------------------------------------------


def _weight_keys(prefix: str, tasks: Sequence[str]) -> list[str]:
    return [f"{prefix}:{t}" for t in tasks]


def rebalance(values: Sequence[float], changed: int, step: float = 0.01) -> list[float]:
    """Keep weights on the simplex after entry `changed` moved: scale the others so the sum is 1
    (spread evenly when they are all zero); rounded to `step`, the rounding error absorbed by the
    largest other entry."""
    n = len(values)
    v = min(max(float(values[changed]), 0.0), 1.0)
    if n == 1:
        return [1.0]
    others = [i for i in range(n) if i != changed]
    rest = sum(max(float(values[i]), 0.0) for i in others)
    remaining = 1.0 - v
    out = [0.0] * n
    out[changed] = v
    for i in others:
        share = (max(float(values[i]), 0.0) / rest) if rest > 1e-12 else 1.0 / len(others)
        out[i] = round(round(remaining * share / step) * step, 6)
    diff = round(1.0 - sum(out), 6)
    if abs(diff) > 1e-9:
        j = max(others, key=lambda i: out[i])
        out[j] = round(min(max(out[j] + diff, 0.0), 1.0), 6)
        if abs(sum(out) - 1.0) > 1e-6:  # could not absorb (other at a bound): move the changed one
            out[changed] = round(1.0 - sum(out[i] for i in others), 6)
    return out


def _on_weight_change(keys: list[str], changed: int) -> None:
    values = [float(st.session_state.get(k, 0.0)) for k in keys]
    for k, v in zip(keys, rebalance(values, changed), strict=True):
        st.session_state[k] = v


def task_weight_sliders(tasks: Sequence[str], prefix: str = "w") -> dict[str, float]:
    """One slider per task; moving one rescales the others so the weights always sum to 1."""
    keys = _weight_keys(prefix, tasks)
    values = [st.session_state.get(k) for k in keys]
    if any(v is None for v in values) or abs(sum(float(v or 0) for v in values) - 1.0) > 0.011:
        eq = rebalance([1.0 / len(keys)] * len(keys), 0) if keys else []
        for k, v in zip(keys, eq, strict=True):
            st.session_state[k] = v
    cols = st.columns(len(keys)) if keys else []
    out: dict[str, float] = {}
    for i, (t, k) in enumerate(zip(tasks, keys, strict=True)):
        with cols[i]:
            out[t] = float(
                st.slider(
                    f"weight of {t}", 0.0, 1.0, step=0.01, key=k, on_change=_on_weight_change, args=(keys, i)
                )
            )
    return out


def preference_picker(tasks: Sequence[str], key: str) -> tuple[float, ...]:
    """A preference over `tasks` (on the simplex): one slider for two tasks (the first task's
    share, the rest goes to the second), linked sliders for more (`task_weight_sliders`)."""
    tasks = list(tasks)
    if len(tasks) == 2:
        a = float(
            st.slider(
                f"Preference for {tasks[0]} (the rest goes to {tasks[1]})",
                0.0,
                1.0,
                0.5,
                0.05,
                key=key,
                help="Moves the ★ along the learned front: 1 = only "
                f"{tasks[0]} counts, 0 = only {tasks[1]} counts.",
            )
        )
        return (round(a, 4), round(1.0 - a, 4))
    values = task_weight_sliders(tasks, prefix=key)
    w = [max(0.0, float(values[t])) for t in tasks]
    total = sum(w) or 1.0
    return tuple(round(v / total, 4) for v in w)


# ---- progress and empty states ------------------------------------------------------------


def progress_row(row: pd.Series | dict[str, Any], label: str | None = None) -> None:
    """A progress bar with step/epoch text for a queued or running run."""
    p = float(row.get("progress") or 0.0)
    s = str(row.get("status") or row.get("state") or "unknown")
    step, total = row.get("step"), row.get("total_steps")
    epoch, epochs = row.get("epoch"), row.get("epochs")
    bits = [state_badge(s)]
    if total and pd.notna(total):
        bits.append(f"step {int(step or 0)}/{int(total)}")
    if epoch is not None and epochs and pd.notna(epochs):
        bits.append(f"epoch {int(epoch or 0)}/{int(epochs)}")
    hb = row.get("heartbeat")
    if s == "running" and hb and pd.notna(hb):
        bits.append(f"heartbeat {max(0.0, time.time() - float(hb)):.0f} s ago")
    st.progress(
        min(max(p, 0.0), 1.0),
        text=f"**{label or row.get('label') or row.get('run_id')}** — " + " · ".join(bits),
    )


def empty_lake(what: str = "Nothing to show yet") -> None:
    """The fresh-install message: what to do next."""
    st.info(
        f"{what}. The run lake is empty: launch a quick preset on **Home**, design a run on "
        "**Launch**, or from a terminal: `python -m engine run --dataset synthetic-correlation`.",
        icon=":material/eco:",
    )
    c1, c2 = st.columns(2)
    c1.page_link("pages/home.py", label="Quick starts on Home", icon=":material/home:")
    c2.page_link("pages/launch.py", label="Design a run on Launch", icon=":material/rocket_launch:")


def page_links(run_ids: Sequence[str], exclude: str = "") -> None:
    """Links to the other analysis pages with the same runs selected."""
    targets = [
        ("pages/live.py", "Live", ":material/monitoring:"),
        ("pages/conflicts.py", "Conflicts", ":material/call_split:"),
        ("pages/transfer.py", "Transfer", ":material/compare_arrows:"),
        ("pages/pareto.py", "Pareto", ":material/scatter_plot:"),
        ("pages/runs.py", "Runs", ":material/table_rows:"),
    ]
    targets = [t for t in targets if t[0] != exclude]
    cols = st.columns(len(targets))
    qp = state.view_params(runs=list(run_ids))
    for col, (page, title, icon) in zip(cols, targets, strict=True):
        col.page_link(page, label=f"Open in {title}", icon=icon, query_params=qp)


def finished_runs_or_stop(empty_title: str, waiting: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all runs, finished runs); stops the page with a message when there are none of either."""
    runs = queries.runs()
    if runs.empty:
        empty_lake(empty_title)
        st.stop()
    done = runs[runs["status"] == "finished"]
    if done.empty:
        st.info(waiting)
        st.stop()
    return runs, done


def front_pickers(
    runs: pd.DataFrame,
    done: pd.DataFrame,
    prefix: str,
    all_label: str,
) -> tuple[str, pd.DataFrame, str, str]:
    """The Pareto and Report pages' top row: dataset, points (all runs or one sweep), colour by.

    Returns (dataset, that dataset's finished runs, chosen sweep id or "",
    colour column); widget keys and URL parameters are `<prefix>_dataset`, ... and dataset,
    sweep, color."""
    datasets = list(dict.fromkeys(done["dataset"].dropna()))
    top = st.columns([2, 2, 1])
    with top[0]:
        ds = url_selectbox(
            "Dataset", datasets, "dataset", f"{prefix}_dataset", default=dataset_of_view(runs, datasets)
        )
    pool = done[done["dataset"] == ds]
    sweeps = sorted(s for s in pool["sweep_id"].dropna().unique() if s)
    with top[1]:
        sweep = url_selectbox(
            "Points",
            ["", *sweeps],
            "sweep",
            f"{prefix}_sweep",
            default="",
            format_func=lambda s: f"sweep {s}" if s else all_label,
        )
    with top[2]:
        color_by = url_selectbox(
            "Colour by",
            ["balancer", "arch"],
            "color",
            f"{prefix}_color",
            default="balancer",
            format_func=lambda c: "architecture" if c == "arch" else c,
        )
    return ds or "", pool, sweep or "", color_by or "balancer"
