"""Single-task baselines: find (or queue) the run that tells whether sharing helped.

The baseline of a multi-task run trains the same tasks on the same data without sharing:
arch "single-task", balancer "ew", and the same dataset (with its parameters), tasks, seed,
epochs, batch size and learning rate. A run is a baseline match for another when those fields
agree (`baseline_key`; the per-epoch step cap too, since it changes the training budget).
Transfer = each task's test metric against the baseline's (engine.pareto.relative_change,
delta_m, negative_transfer).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.store import Lake

BASELINE_ARCH = "single-task"
BASELINE_BALANCER = "ew"
#: Run states in order of preference when several baselines match.
_PREFERENCE = {"finished": 0, "running": 1, "queued": 2}


def _tasks_of(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The run's task list; the dataset's full list when the config says None (all tasks)."""
    tasks = cfg.get("tasks")
    if tasks:
        return tuple(str(t) for t in tasks)
    from engine.datasets import DATASETS

    ds = DATASETS.get(str(cfg.get("dataset")))
    if ds is None:
        return ()
    try:
        return tuple(t.name for t in ds.tasks(ds.Params(**(cfg.get("dataset_params") or {}))))
    except (ValueError, TypeError):
        return ()


def _canonical(obj: Any) -> str:
    return json.dumps(obj or {}, sort_keys=True, default=str)


def baseline_key(cfg: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields a run and its single-task baseline share."""
    return (
        str(cfg.get("dataset")),
        _canonical(cfg.get("dataset_params")),
        _tasks_of(cfg),
        int(cfg.get("seed", 0)),
        int(cfg.get("epochs", 0)),
        int(cfg.get("batch_size", 0)),
        float(cfg.get("lr", 0.0)),
        int(cfg.get("max_steps_per_epoch") or 0),
    )


def is_baseline(cfg: Mapping[str, Any]) -> bool:
    """True for a single-task run (it is its own reference)."""
    return cfg.get("arch") == BASELINE_ARCH


def baseline_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config of `cfg`'s baseline run (to submit when none exists)."""
    keep = (
        "dataset",
        "dataset_params",
        "seed",
        "epochs",
        "batch_size",
        "lr",
        "optimizer",
        "weight_decay",
        "device",
        "threads",
        "patience",
        "max_steps_per_epoch",
        "log_every",
        "owner",
    )
    out: dict[str, Any] = {k: cfg[k] for k in keep if k in cfg}
    out.update(
        {
            "tasks": list(_tasks_of(cfg)) or None,
            "arch": BASELINE_ARCH,
            "arch_params": {},
            "balancer": BASELINE_BALANCER,
            "balancer_params": {},
            "grad_stats_every": 0,
            "name": f"single-task baseline ({cfg.get('dataset')}, seed {cfg.get('seed', 0)})",
            "tags": ["baseline"],
        }
    )
    if cfg.get("early_stopping_metric"):
        out["early_stopping_metric"] = cfg["early_stopping_metric"]
    return out


def _candidates(lake: Lake, states: Iterable[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(run_id, state, config) of every single-task EW run in one of `states`."""
    runs = lake.runs()
    if runs.empty:
        return []
    sel = runs[
        (runs["arch"] == BASELINE_ARCH)
        & (runs["balancer"] == BASELINE_BALANCER)
        & (runs["status"].isin(list(states)))
    ]
    out: list[tuple[str, str, dict[str, Any]]] = []
    for rid, st in zip(sel["run_id"], sel["status"], strict=True):
        try:
            out.append((str(rid), str(st), lake.config(str(rid))))
        except (LookupError, ValueError):
            continue
    return out


def find_baselines(
    lake: Lake, run_ids: Sequence[str], states: Iterable[str] = ("finished", "running", "queued")
) -> dict[str, str | None]:
    """run_id -> the id of its baseline (finished preferred, then running, then queued; newest
    first within a state), or None. A single-task run maps to itself."""
    states = list(states)
    cands = _candidates(lake, states)
    by_key: dict[tuple[Any, ...], list[tuple[int, str]]] = {}
    for rid, st, cfg in cands:
        by_key.setdefault(baseline_key(cfg), []).append((_PREFERENCE.get(st, 9), rid))
    out: dict[str, str | None] = {}
    for rid in run_ids:
        try:
            cfg = lake.config(rid)
        except (LookupError, ValueError):
            out[rid] = None
            continue
        if is_baseline(cfg):
            out[rid] = rid
            continue
        matches = by_key.get(baseline_key(cfg), [])
        if not matches:
            out[rid] = None
            continue
        best_pref = min(p for p, _ in matches)
        out[rid] = max(r for p, r in matches if p == best_pref)  # newest id among the best state
    return out


def find_baseline(
    lake: Lake, run_id: str, states: Iterable[str] = ("finished", "running", "queued")
) -> str | None:
    return find_baselines(lake, [run_id], states)[run_id]


def ensure_baselines(lake: Lake, run_ids: Sequence[str]) -> dict[str, tuple[str | None, bool]]:
    """run_id -> (baseline id, True if it was queued just now). Queues one baseline per distinct
    key (runs that share a baseline share the new run too). Runs whose config is unreadable map to
    (None, False)."""
    from engine.config import load_config
    from engine.jobs import submit

    found = find_baselines(lake, run_ids)
    out: dict[str, tuple[str | None, bool]] = {}
    queued: dict[tuple[Any, ...], str] = {}
    for rid in run_ids:
        if found.get(rid):
            out[rid] = (found[rid], False)
            continue
        try:
            cfg = lake.config(rid)
        except (LookupError, ValueError):
            out[rid] = (None, False)
            continue
        key = baseline_key(cfg)
        if key in queued:
            out[rid] = (queued[key], False)
            continue
        new_id = submit(load_config(baseline_config(cfg)), lake)
        queued[key] = new_id
        out[rid] = (new_id, True)
    return out
