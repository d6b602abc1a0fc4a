"""The only place the pages read the run lake (and submit, cancel or delete runs).

Every function returns plain DataFrames/dicts. The Lake is resolved from `$SEESAW_HOME`
(default data/runs) on each call, so tests can point the app at a temporary lake.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import identity
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
    """Validate (engine.config.load_config raises ConfigError) and queue one run under this
    session's user (engine.jobs.QueueLimitError when they have too many queued)."""
    return submit_many([config_dict])[0]


def submit_many(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Validate every config first, then queue them all under this session's user (nothing is
    queued if one is invalid or the batch would pass the per-user queue limit)."""
    from engine.config import load_config
    from engine.jobs import submit_many as _submit_many

    user = identity.current()
    cfgs = [load_config({**c, "owner": user}) for c in configs]
    return _submit_many(cfgs, lake())


def current_user() -> str:
    return identity.current()


def cancel(run_id: str) -> str:
    """Cancel a run of this session's user; returns what happened (or why not) in words."""
    from engine.jobs import NotOwnerError
    from engine.jobs import cancel as _cancel

    try:
        return str(_cancel(run_id, lake(), by=identity.current()))
    except NotOwnerError as e:
        return str(e)


def delete(run_id: str) -> None:
    """Delete a run of this session's user (engine.jobs.NotOwnerError for someone else's)."""
    from engine.jobs import NotOwnerError

    owner = config(run_id).get("owner")
    if not identity.owns(owner):
        raise NotOwnerError(f"run {run_id} belongs to {owner}; only they can delete it")
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


# ---- reports --------------------------------------------------------------------------------


def configs(run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """run_id -> its config (the configuration of every point of a report)."""
    return {rid: config(rid) for rid in run_ids}


def loss_curves(run_ids: Sequence[str]) -> pd.DataFrame:
    """Train/val loss rows of the runs (the curves figure of a report)."""
    return metrics(list(run_ids), split=["train", "val"], metric="loss")


def transfer_of(run_ids: Sequence[str], labels: dict[str, str]) -> Any:
    """TransferInfo of the multi-task runs among `run_ids` against their *finished* single-task
    baselines (nothing is queued here); None when none has one."""
    from dashboard.figures.transfer import transfer_info
    from engine.baselines import find_baselines as _find

    found = {r: b for r, b in _find(lake(), list(run_ids), states=("finished",)).items() if b and b != r}
    if not found:
        return None
    finals = final_metrics([*found, *set(found.values())])
    info = transfer_info(finals, found, task_primary_metrics(list(found)), labels)
    return None if info.empty else info


# ---- lessons (Learn page): one shared run per configuration -----------------------------------


@functools.lru_cache(maxsize=4096)
def _config_key(config_json: str) -> str:
    from engine.dedupe import config_key

    return config_key(json.loads(config_json))


def lesson_run(config_dict: dict[str, Any], submit: bool = True, retry_failed: bool = False) -> str | None:
    """The run of this configuration, shared by everyone: found, or (with `submit`) queued for the
    worker under this session's user (engine.dedupe.find_or_submit; ConfigError / QueueLimitError
    propagate). Without `submit`: None when nobody queued it yet."""
    from engine.dedupe import find_by_key, find_or_submit

    found = find_by_key(_config_key(json.dumps(config_dict, sort_keys=True, default=str)), lake())
    if not submit or (found is not None and not retry_failed):
        return found  # a lock-free look-up answers every redraw after the first
    cfg = {**config_dict, "owner": identity.current()}
    return find_or_submit(cfg, lake(), retry_failed=retry_failed)[0]


def lesson_cosmos(
    config_dict: dict[str, Any],
    params: dict[str, Any] | None = None,
    submit: bool = True,
    retry_failed: bool = False,
) -> str | None:
    """The COSMOS run of this configuration, shared by everyone: found, or launched in its own
    trainer process (engine.dedupe.find_or_launch_cosmos)."""
    from engine.dedupe import find_cosmos, find_or_launch_cosmos

    if not submit:
        return find_cosmos(config_dict, params, lake())
    cfg = {**config_dict, "owner": identity.current()}
    return find_or_launch_cosmos(cfg, params, lake(), retry_failed=retry_failed)[0]


def run_states(run_ids: Sequence[str]) -> dict[str, str]:
    return {rid: str(status(rid).get("state", "unknown")) for rid in run_ids}


def gate_weights(run_ids: Sequence[str]) -> pd.DataFrame:
    """MMoE gate weights over training: run_id, step, task, expert, weight (from the
    `gate:<task>:<expert>` balancer statistics the model records)."""
    from engine.models.mmoe import GATE_STAT_PREFIX

    df = balancer_stats(list(run_ids)) if run_ids else pd.DataFrame()
    cols = ["run_id", "step", "task", "expert", "weight"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df[df["name"].astype(str).str.startswith(GATE_STAT_PREFIX)]
    if df.empty:
        return pd.DataFrame(columns=cols)
    parts = df["name"].astype(str).str[len(GATE_STAT_PREFIX) :].str.rsplit(":", n=1, expand=True)
    return pd.DataFrame(
        {
            "run_id": df["run_id"].to_numpy(),
            "step": df["step"].to_numpy(),
            "task": parts[0].to_numpy(),
            "expert": parts[1].astype(int).to_numpy(),
            "weight": df["value"].astype(float).to_numpy(),
        }
    )


@st.cache_data(show_spinner=False, max_entries=256)
def cosmos_front(run_id: str, prefs: tuple[tuple[float, ...], ...], split: str = "test") -> pd.DataFrame:
    """A finished COSMOS run's metrics at each preference (inference only; cached per run,
    preferences and split). The model and its data are loaded once per process and kept
    (engine.cosmos.load_cosmos, reloaded only when the checkpoint changes)."""
    from engine.cosmos import learned_front

    return learned_front(run_id, list(map(list, prefs)), lake(), split=split)


COSMOS_TAG = "cosmos"
COSMOS_PARAMS_FILE = "cosmos.json"  # engine.cosmos.PARAMS_FILE (not imported: it pulls in torch)


def cosmos_runs(runs_df: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Finished COSMOS runs (preference-conditioned models) among `runs_df`, newest first,
    optionally of one dataset; a `task_list` column holds each run's tasks. Reads no checkpoint
    and imports no torch (the Pareto page calls it on every redraw)."""
    if runs_df is None or runs_df.empty or "tags" not in runs_df:
        return pd.DataFrame(columns=[*(runs_df.columns if runs_df is not None else []), "task_list"])
    tagged = runs_df["tags"].fillna("").astype(str).str.split(",").apply(lambda tags: COSMOS_TAG in tags)
    sel = runs_df[tagged & (runs_df["status"] == "finished")]
    if dataset is not None:
        sel = sel[sel["dataset"] == dataset]
    root = lake_root()
    has_params = [(root / str(r) / COSMOS_PARAMS_FILE).is_file() for r in sel["run_id"]]
    sel = sel[np.asarray(has_params, dtype=bool)]
    sel = sel.sort_values("run_id", ascending=False)
    return sel.assign(task_list=[[t for t in str(x).split(",") if t] for x in sel["tasks"]])


def cosmos_params(run_id: str) -> dict[str, Any]:
    """The COSMOS parameters (alpha, lam, eval_rays) a COSMOS run was trained with ({} if none)."""
    from engine.recorder import read_json_dict

    try:
        return read_json_dict(lake().run_dir(run_id) / COSMOS_PARAMS_FILE)
    except (OSError, ValueError):
        return {}


def same_data(run_a: str, run_b: str) -> bool:
    """Whether two runs train on the same data: one dataset, the same parameters once the
    dataset's defaults are filled in (so a spelled-out default equals a left-out one)."""
    a, b = config(run_a), config(run_b)
    if not a or not b or a.get("dataset") != b.get("dataset"):
        return False
    pa, pb = dict(a.get("dataset_params") or {}), dict(b.get("dataset_params") or {})
    if pa == pb:
        return True
    from engine.datasets import DATASETS

    ds = DATASETS.get(str(a.get("dataset")))
    if ds is None:
        return False
    try:
        return bool(ds.Params(**pa).model_dump() == ds.Params(**pb).model_dump())
    except ValueError:
        return False


# ---- Launch: population sweeps and COSMOS trainings, queued as jobs for the worker -----------------

_NOT_TRAINED = ("name", "tags", "owner", "sweep_id")


@st.cache_data(show_spinner=False, max_entries=64)
def _batch_problem(configs_json: str) -> str | None:
    from engine.config import load_config
    from engine.population import batch_problem

    return batch_problem([load_config(c) for c in json.loads(configs_json)])


def sweep_batch_problem(configs: Sequence[dict[str, Any]]) -> str | None:
    """Why these sweep members cannot be trained as one population (None when they can):
    engine.population.batch_problem, cached per configuration (labels and ids do not count).
    ConfigError for an invalid config."""
    trimmed = [{k: v for k, v in c.items() if k not in _NOT_TRAINED} for c in configs]
    return _batch_problem(json.dumps(trimmed, sort_keys=True, default=str))


def submit_sweep(configs: Sequence[dict[str, Any]], separate: bool = False) -> dict[str, Any]:
    """Queue a weight sweep under this session's user (engine.sweeps.submit_plan): one
    population job that the worker trains in one process when the members can be batched, else
    (or when the user asked for `separate` runs) one queued run per member, each run's log
    saying why. Returns sweep_id, run_ids, mode ("population" or "queued") and reason.
    ConfigError / QueueLimitError propagate (nothing is queued then)."""
    from engine.config import load_config
    from engine.sweeps import plan_group, submit_plan

    user = identity.current()
    plan = plan_group([load_config({**c, "owner": user}) for c in configs])
    res = submit_plan(plan, lake(), mode="sequential" if separate else "auto")
    return {"sweep_id": res.sweep_id, "run_ids": list(res.run_ids), "mode": res.mode, "reason": res.reason}


def cosmos_params_model() -> Any:
    """The pydantic model of the COSMOS parameters (alpha, lambda, evaluation rays)."""
    from engine.cosmos import CosmosParams

    return CosmosParams


def cosmos_problems(config_dict: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Why this config and these COSMOS parameters cannot be trained as a COSMOS run ([] when
    they can): invalid parameters, an invalid config, fewer than two tasks."""
    from engine.config import ConfigError, load_config, resolve
    from engine.cosmos import cosmos_config, params_from

    problems: list[str] = []
    try:
        params_from(params)
    except ValueError as e:
        problems.append(str(e))
    try:
        cfg = cosmos_config(load_config(dict(config_dict)), params if not problems else None)
        n = len(resolve(cfg)["tasks"])
        if n < 2:
            problems.append(f"a preference-conditioned model needs at least 2 tasks (you chose {n})")
    except (ConfigError, ValueError) as e:
        problems.append(str(e))
    return problems


def submit_cosmos(config_dict: dict[str, Any], params: dict[str, Any]) -> str:
    """Queue a COSMOS training under this session's user (engine.cosmos.submit_cosmos): the
    worker trains it in a process it starts and watches. ConfigError, ValueError (parameters)
    and QueueLimitError propagate."""
    from engine.cosmos import submit_cosmos as _submit

    return _submit({**config_dict, "owner": identity.current()}, params, lake())


@st.cache_data(show_spinner=False, max_entries=32)
def selection_bias(run_ids: tuple[str, ...], dataset_params_json: str, seed: int) -> dict[str, Any]:
    """Truth and predictions of finished click -> purchase runs on recsys-sim's test rows
    (engine.cascade_eval; inference only, cached per run set)."""
    from engine.cascade_eval import predictions, truth

    params = json.loads(dataset_params_json)
    return {"truth": truth(params, seed), "pred": {rid: predictions(rid, lake()) for rid in run_ids}}


@st.cache_data(show_spinner=False, max_entries=8)
def recsys_truth(dataset_params_json: str, seed: int) -> dict[str, Any]:
    from engine.cascade_eval import truth

    return truth(json.loads(dataset_params_json), seed)


@st.cache_data(show_spinner=False, max_entries=8)
def toy_landscape(n: int, scale: tuple[float, float]) -> Any:
    from engine.toy2d import landscape

    return landscape(n, scale)


@st.cache_resource(show_spinner=False)
def toy_pareto_set() -> Any:
    from engine.toy2d import pareto_set

    return pareto_set(401)  # grid step 0.05: sharp enough to draw, 0.2 s to compute


@st.cache_data(show_spinner=False, max_entries=4096)
def toy_trajectory(method: str, start: tuple[float, float], scale: tuple[float, float], seed: int) -> Any:
    """One optimiser path on the 2-D toy problem (pure math on two numbers; cached)."""
    from engine.toy2d import trajectory

    return trajectory(method, start, scale=scale, seed=seed)
