"""The only place the pages read the run lake (and submit, cancel or delete runs).

Every function returns plain DataFrames/dicts. The Lake is resolved from `$SEESAW_HOME`
(default data/runs) on each call, so tests can point the app at a temporary lake.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.figures.common import run_labels
from engine import paths
from engine.store import Lake

LIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("finished", "failed", "cancelled")


@st.cache_resource(show_spinner=False)
def _lake_at(root: str) -> Lake:
    return Lake(root)


def lake_root() -> Path:
    env = os.environ.get("SEESAW_HOME")
    return Path(env).expanduser().resolve() if env else paths.home().resolve()


def lake() -> Lake:
    """The Lake of this server process (one instance per root, shared by sessions)."""
    root = lake_root()
    root.mkdir(parents=True, exist_ok=True)
    return _lake_at(str(root))


# ---- runs ---------------------------------------------------------------------------------


def runs() -> pd.DataFrame:
    """The runs table (one row per run, newest first) with a readable 'label' column."""
    df = lake().runs()
    if df.empty:
        return df.assign(label=pd.Series(dtype="object"))
    df = df.sort_values(["created", "run_id"], ascending=False, na_position="last").reset_index(drop=True)
    labels = run_labels(df, df["run_id"].tolist())
    return df.assign(label=df["run_id"].map(labels))


def latest_batch(runs_df: pd.DataFrame, window_s: float = 10.0, limit: int = 4) -> list[str]:
    """The newest run and those created within `window_s` before it (one preset or sweep click)."""
    if runs_df.empty:
        return []
    created = pd.to_numeric(runs_df["created"], errors="coerce")
    if created.isna().all():
        return runs_df["run_id"].head(1).tolist()
    newest = float(created.max())
    batch = runs_df[created >= newest - window_s]
    return batch.sort_values("created")["run_id"].head(limit).tolist()


def labels_for(runs_df: pd.DataFrame, run_ids: Sequence[str]) -> dict[str, str]:
    return run_labels(runs_df, list(run_ids))


def split_existing(
    run_ids: Sequence[str], runs_df: pd.DataFrame | None = None
) -> tuple[list[str], list[str]]:
    """(ids that exist in the lake, ids that do not) in the given order."""
    known = set(runs_df["run_id"]) if runs_df is not None and not runs_df.empty else None
    ok: list[str] = []
    missing: list[str] = []
    for rid in run_ids:
        exists = (rid in known) if known is not None else lake().exists(rid)
        (ok if exists else missing).append(rid)
    return ok, missing


def status(run_id: str) -> dict[str, Any]:
    try:
        return lake().status(run_id)
    except (LookupError, ValueError):
        return {"state": "unknown"}


def statuses(run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {rid: status(rid) for rid in run_ids}


def config(run_id: str) -> dict[str, Any]:
    try:
        return lake().config(run_id)
    except (LookupError, ValueError):
        return {}


# ---- tables -------------------------------------------------------------------------------


def metrics(
    run_ids: Sequence[str],
    split: str | Sequence[str] | None = None,
    metric: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    if not run_ids:
        return lake().metrics([])
    return lake().metrics(list(run_ids), split=split, metric=metric)


def final_metrics(run_ids: Sequence[str] | None = None, split: str = "test") -> pd.DataFrame:
    return lake().final_metrics(None if run_ids is None else list(run_ids), split=split)


def grad_stats(run_ids: Sequence[str], layer: str | Sequence[str] | None = None) -> pd.DataFrame:
    return lake().grad_stats(list(run_ids), layer=layer)


def task_weights(run_ids: Sequence[str]) -> pd.DataFrame:
    return lake().task_weights(list(run_ids))


def balancer_stats(run_ids: Sequence[str]) -> pd.DataFrame:
    return lake().balancer_stats(list(run_ids))


def events(run_ids: Sequence[str]) -> pd.DataFrame:
    return lake().events(list(run_ids))


# ---- actions ------------------------------------------------------------------------------


def submit(config_dict: dict[str, Any]) -> str:
    """Validate (engine.config.load_config raises ConfigError) and queue one run."""
    from engine.config import load_config
    from engine.jobs import submit as _submit

    cfg = load_config(config_dict)
    return _submit(cfg, lake())


def submit_many(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Validate every config first, then queue them all (nothing is queued if one is invalid)."""
    from engine.config import load_config
    from engine.jobs import submit as _submit

    cfgs = [load_config(c) for c in configs]
    return [_submit(c, lake()) for c in cfgs]


def cancel(run_id: str) -> str:
    from engine.jobs import cancel as _cancel

    return str(_cancel(run_id, lake()))


def delete(run_id: str) -> None:
    lake().delete_run(run_id)


def export_csv(runs_df: pd.DataFrame) -> bytes:
    return runs_df.to_csv(index=False).encode("utf-8")


# ---- the worker ---------------------------------------------------------------------------


def worker_status() -> dict[str, Any] | None:
    try:
        from engine.jobs import worker_status as _ws
    except ImportError:
        return None
    try:
        return _ws(lake())
    except (OSError, ValueError):
        return None


def _reap(proc: Any) -> None:
    """Wait on a child process in a daemon thread so it never lingers as a zombie."""
    wait = getattr(proc, "wait", None)
    if callable(wait):
        threading.Thread(target=wait, name=f"reap-{getattr(proc, 'pid', '?')}", daemon=True).start()


def start_worker(wait: float = 0.0) -> dict[str, Any] | None:
    """Start a worker for this lake if none is alive; wait up to `wait` seconds for it to report.

    engine.jobs.ensure_worker reaps its own child; should it hand back a process object, a
    daemon thread here waits on it so it never lingers as a zombie.
    """
    from engine.jobs import ensure_worker

    result = ensure_worker(lake())
    _reap(result)
    deadline = time.monotonic() + wait
    while True:
        ws = worker_status()
        if ws is not None or time.monotonic() >= deadline:
            return ws
        time.sleep(0.1)


@st.cache_resource(show_spinner=False)
def _ensure_worker_once(root: str) -> float:
    """Start the worker once per server process and lake (cache_resource)."""
    try:
        start_worker(wait=1.5)  # so the sidebar can already show it alive on the first page
    except Exception:  # never break the app over the worker; the sidebar shows its state
        return 0.0
    return time.time()


def ensure_worker_once() -> float:
    """Start the worker once per server process; returns when this process started it (0: never)."""
    if os.environ.get("SEESAW_NO_WORKER") == "1":
        return 0.0
    return _ensure_worker_once(str(lake_root()))


def _import_engine() -> None:
    import engine.balancers
    import engine.datasets
    import engine.metrics
    import engine.models  # noqa: F401


@st.cache_resource(show_spinner=False)
def _warm_up_once() -> threading.Thread:
    """Import the heavy engine modules in the background once per server process, so the first
    page that needs them (Launch validates configs with torch-backed registries) is not slow."""
    t = threading.Thread(target=_import_engine, name="seesaw-warm-up", daemon=True)
    t.start()
    return t


def warm_up() -> None:
    _warm_up_once()


# ---- single-task baselines ------------------------------------------------------------------


def find_baselines(run_ids: Sequence[str]) -> dict[str, str | None]:
    from engine.baselines import find_baselines as _find

    return _find(lake(), list(run_ids))


def ensure_baselines(run_ids: Sequence[str]) -> dict[str, tuple[str | None, bool]]:
    from engine.baselines import ensure_baselines as _ensure

    return _ensure(lake(), list(run_ids))


def task_primary_metrics(run_ids: Sequence[str]) -> dict[str, str]:
    """task -> its primary metric, from each run's dataset declaration."""
    from dashboard.registry import dataset_tasks

    out: dict[str, str] = {}
    seen: set[str] = set()
    for rid in run_ids:
        cfg = config(rid)
        key = f"{cfg.get('dataset')}|{cfg.get('dataset_params')}"
        if not cfg or key in seen:
            continue
        seen.add(key)
        specs, _err = dataset_tasks(str(cfg.get("dataset")), dict(cfg.get("dataset_params") or {}))
        for t in specs:
            out.setdefault(t.name, t.primary_metric)
    return out
