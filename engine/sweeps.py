"""Task-weight sweeps: K weight vectors x seeds, trained as one population when possible.

A linear-scalarisation sweep trains one model per task-weight vector w on the simplex and keeps
the non-dominated results; it traces the convex part of the Pareto front (Miettinen,
"Nonlinear Multiobjective Optimization", Kluwer 1999, ch. 3.1; Boyd & Vandenberghe, "Convex
Optimization", 2004, sec. 4.7.4). Weight vectors come from a regular simplex grid
(`simplex_grid`, Das & Dennis, "Normal-Boundary Intersection", SIAM J. Optim. 1998) or from a
Dirichlet distribution (`random_simplex`).

`run_sweep` creates one run per (weights, seed) member in the lake, all sharing one `sweep_id`
(the Pareto page groups by it), and trains them:

- as one population (`engine.population.train_population`: the K models stacked, hand-batched
  by `engine.stacked` for shared-bottom, OMoE and MMoE and run under `torch.func.vmap` for the
  others, each member logging through its own `RunWriter`), when the balancer has constant
  weights and the architecture can be batched;
- otherwise as separate runs, in this process one after another or queued for the worker, each
  with an event in its log saying why the population was not possible.

A small manifest, `<lake>/_sweeps/<sweep_id>.json`, records the weights, seeds, run ids, mode and
reason (`sweep_info`).

`submit_sweep` / `submit_plan` do the same without blocking, for the dashboard: the population
is queued as one job for the worker (`engine.jobs.submit_job`), which starts and watches its
`python -m engine _sweep SWEEP_ID --runs ...` trainer like any trainer (the per-user queue
limit, round robin and cancel rules apply; a killed trainer fails its runs with the signal in
the reason). `launch_sweep` starts that process detached and unsupervised (for scripts that run
no worker).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from engine.config import ConfigError, RunConfig, load_config
from engine.paths import REPO_ROOT
from engine.recorder import RunWriter, read_json_dict, write_json_atomic
from engine.store import Lake

Mode = Literal["auto", "population", "sequential"]
Executor = Literal["inprocess", "queue"]

SWEEPS_DIR = "_sweeps"
MAX_MEMBERS = 1024


# --------------------------------------------------------------------------- weight vectors


def simplex_grid(n_tasks: int, divisions: int) -> np.ndarray:
    """Every weight vector with entries in {0, 1/H, ..., 1} summing to 1 (H = `divisions`).

    The regular simplex lattice of Das & Dennis (1998): C(H + T - 1, T - 1) points, rows in
    lexicographic order of the integer compositions (the first task's weight descending).
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    if divisions < 1:
        raise ValueError(f"divisions must be >= 1, got {divisions}")
    rows = []
    # compositions of H into T non-negative parts via stars and bars
    for bars in itertools.combinations(range(divisions + n_tasks - 1), n_tasks - 1):
        parts, prev = [], -1
        for b in (*bars, divisions + n_tasks - 1):
            parts.append(b - prev - 1)
            prev = b
        rows.append(parts)
    grid = np.asarray(rows, dtype=np.float64)[::-1] / divisions
    return np.ascontiguousarray(grid)


def grid_size(n_tasks: int, divisions: int) -> int:
    """Number of points of `simplex_grid(n_tasks, divisions)`."""
    from math import comb

    return comb(divisions + n_tasks - 1, n_tasks - 1)


def grid_of_size(n_tasks: int, k: int) -> np.ndarray:
    """A simplex grid with about `k` points: the finest grid with at most `k` points (at least
    the T vertices). For two tasks this is exactly k evenly spaced weight vectors."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_tasks == 1:
        return np.ones((1, 1))
    h = 1
    while grid_size(n_tasks, h + 1) <= k:
        h += 1
    return simplex_grid(n_tasks, h)


def random_simplex(n_tasks: int, k: int, seed: int = 0, alpha: float = 1.0) -> np.ndarray:
    """`k` weight vectors drawn from a symmetric Dirichlet(alpha) (alpha = 1: uniform on the simplex)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(n_tasks, float(alpha)), size=k)


def weight_vectors(n_tasks: int, k: int, kind: str = "grid", seed: int = 0) -> np.ndarray:
    """`k` (about k for a grid of 3+ tasks) weight vectors: kind "grid" or "random"."""
    if kind == "grid":
        return grid_of_size(n_tasks, k)
    if kind == "random":
        return random_simplex(n_tasks, k, seed)
    raise ValueError(f"kind must be 'grid' or 'random', got {kind!r}")


# ------------------------------------------------------------------------------- planning


def new_sweep_id() -> str:
    """`sw-YYYYmmdd-HHMMSS-<6 hex>` (sorts by creation time, UTC)."""
    return "sw-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class SweepPlan:
    """The member configs of one sweep, before anything is written."""

    sweep_id: str
    configs: list[RunConfig]
    weights: list[dict[str, float]]  # per member
    seeds: list[int]  # per member
    tasks: list[str]


@dataclass
class SweepResult:
    """What `run_sweep` / `launch_sweep` did."""

    sweep_id: str
    run_ids: list[str]
    mode: str  # "population" | "sequential" | "queued"
    reason: str = ""  # why not a population ("" when it is one)
    seconds: float = 0.0
    states: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None  # the detached trainer of `launch_sweep`


def _tasks_of(cfg: RunConfig) -> list[str]:
    from engine.config import resolve

    return list(resolve(cfg)["tasks"])


def plan_sweep(
    base: RunConfig | Mapping[str, Any],
    weights: np.ndarray | Sequence[Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: Sequence[int] = (0,),
    sweep_id: str | None = None,
) -> SweepPlan:
    """Member configs for every (weights, seed) pair: balancer "fixed" with those weights, the
    base config's seed replaced, a shared `sweep_id`, a readable name and tags.

    `weights` is a (K, T) array in the order of the run's tasks, or K dicts task -> weight.
    Raises ConfigError for an invalid member (e.g. all-zero weights).
    """
    base_dict = base.model_dump(mode="json") if isinstance(base, RunConfig) else dict(base)
    base_cfg = load_config(base_dict)
    tasks = _tasks_of(base_cfg)
    sweep_id = sweep_id or new_sweep_id()
    rows: list[dict[str, float]] = []
    if isinstance(weights, np.ndarray) or (len(weights) and not isinstance(weights[0], Mapping)):
        arr = np.asarray(weights, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(tasks):
            raise ConfigError(f"weights must be a (K, {len(tasks)}) array for tasks {tasks}, got {arr.shape}")
        rows = [{t: float(v) for t, v in zip(tasks, r, strict=True)} for r in arr]
    else:
        rows = [{t: float(w[t]) for t in tasks} for w in weights]  # type: ignore[index]
    if not rows:
        raise ConfigError("a sweep needs at least one weight vector")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    if len(rows) * len(seeds) > MAX_MEMBERS:
        raise ConfigError(f"{len(rows)} weight vectors x {len(seeds)} seeds is over {MAX_MEMBERS} runs")
    configs, member_w, member_s = [], [], []
    for i, w in enumerate(rows):
        for s in seeds:
            label = ", ".join(f"{t} {v:.3g}" for t, v in w.items())
            d = {
                **base_dict,
                "balancer": "fixed",
                "balancer_params": {"weights": w},
                "seed": s,
                "sweep_id": sweep_id,
                "name": f"sweep {sweep_id[-6:]} #{i + 1} ({label}) seed {s}",
                "tags": [*base_dict.get("tags", []), "sweep"],
            }
            configs.append(load_config(d))
            member_w.append(w)
            member_s.append(s)
    return SweepPlan(sweep_id, configs, member_w, member_s, tasks)


# ------------------------------------------------------------------------------- manifest


def _manifest_path(lake: Lake, sweep_id: str) -> Path:
    if not (sweep_id.startswith("sw-") and sweep_id[3:].replace("-", "").isalnum() and "/" not in sweep_id):
        raise ValueError(f"invalid sweep id {sweep_id!r}")
    return lake.root / SWEEPS_DIR / f"{sweep_id}.json"


def _write_manifest(lake: Lake, plan: SweepPlan, run_ids: list[str], mode: str, reason: str) -> None:
    path = _manifest_path(lake, plan.sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        path,
        {
            "sweep_id": plan.sweep_id,
            "created": time.time(),
            "mode": mode,
            "reason": reason,
            "tasks": plan.tasks,
            "run_ids": run_ids,
            "weights": plan.weights,
            "seeds": plan.seeds,
        },
    )


def sweep_info(lake: Lake, sweep_id: str) -> dict[str, Any]:
    """The sweep's manifest: mode, reason, tasks, run_ids, weights and seeds per member ({} if none)."""
    return read_json_dict(_manifest_path(lake, sweep_id))


def sweep_runs(lake: Lake, sweep_id: str) -> pd.DataFrame:
    """The runs table rows of one sweep, with its member weights as columns `w/<task>`."""
    runs = lake.runs()
    df = runs[runs["sweep_id"] == sweep_id].copy()
    info = sweep_info(lake, sweep_id)
    if info:
        wmap = dict(zip(info.get("run_ids", []), info.get("weights", []), strict=False))
        for t in info.get("tasks", []):
            df[f"w/{t}"] = df["run_id"].map(lambda r, t=t: (wmap.get(r) or {}).get(t, np.nan))
    return df.reset_index(drop=True)


# ------------------------------------------------------------------------------ executing


def _create_running(lake: Lake, cfg: RunConfig, by: str) -> str:
    """A run created already claimed (state running), so no worker will start it."""
    rid = lake.create_run(cfg, state="running")
    lake.claim(rid, by=by)
    return rid


def _note(lake: Lake, run_id: str, level: str, text: str) -> None:
    """Append one event to a run's log before its trainer starts (a separate writer flushes it)."""
    w = RunWriter(lake.run_dir(run_id))
    w.log_event(level, text)
    w.flush()


def _fallback_text(reason: str, how: str) -> str:
    return f"trained as a separate run ({how}), not as part of a batched population: {reason}"


def train_members(
    lake: Lake, run_ids: Sequence[str], progress: Callable[[int, int], None] | None = None
) -> dict[str, str]:
    """Train existing run directories (one sweep's members) as one population in this process.

    Each run gets its own RunWriter (status, heartbeat, rows, checkpoint). Returns run_id -> end
    state. A failure that concerns the whole population fails every member with the reason.
    """
    from engine.population import error_of, train_population
    from engine.runner import USER_ERRORS

    cfgs = [load_config(lake.config(r)) for r in run_ids]
    writers = [RunWriter(lake.run_dir(r)) for r in run_ids]
    for w in writers:
        w.start(os.getpid())
    states: dict[str, str] = {}
    try:
        results = train_population(
            cfgs, writers, [lake.run_dir(r) / "checkpoint.pt" for r in run_ids], progress=progress
        )
        for rid, w, res in zip(run_ids, writers, results, strict=True):
            err = error_of(res) or None
            w.finish(res.state, error=err, summary=res.test or None)
            states[rid] = res.state
    except USER_ERRORS as e:
        for rid, w in zip(run_ids, writers, strict=True):
            w.log_event("error", str(e))
            w.finish("failed", error=str(e))
            states[rid] = "failed"
    except KeyboardInterrupt:
        for rid, w in zip(run_ids, writers, strict=True):
            w.finish("cancelled", error="interrupted")
            states[rid] = "cancelled"
        raise
    except Exception as e:  # a bug: keep the traceback for the report
        tb = traceback.format_exc(limit=8)
        for rid, w in zip(run_ids, writers, strict=True):
            w.log_event("error", tb)
            w.finish("failed", error=f"internal error {type(e).__name__}: {e}")
            states[rid] = "failed"
    finally:
        for rid in run_ids:
            with contextlib.suppress(Exception):
                lake.compact(rid)
    return states


def run_sweep(
    base: RunConfig | Mapping[str, Any],
    weights: np.ndarray | Sequence[Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: Sequence[int] = (0,),
    lake: Lake | None = None,
    mode: Mode = "auto",
    executor: Executor = "inprocess",
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Create and train one sweep: one run per (weight vector, seed), all with one sweep_id.

    mode "auto" trains a population when `batch_problem` finds none, else separate runs;
    "population" insists (PopulationError with the reason otherwise); "sequential" never
    batches. Separate runs train in this process one after another (`executor="inprocess"`) or
    are queued for the worker (`"queue"`, returns at once with mode "queued"). Each separately
    trained member's log says why it was not batched.
    """
    return run_plan(plan_sweep(base, weights, seeds), lake, mode, executor, progress)


def plan_group(configs: Sequence[RunConfig | Mapping[str, Any]], sweep_id: str | None = None) -> SweepPlan:
    """A sweep plan from ready-made member configs (e.g. seeds x any balancer): each gets the
    shared `sweep_id`; weights are recorded for fixed-weight members ({} otherwise)."""
    sweep_id = sweep_id or new_sweep_id()
    cfgs: list[RunConfig] = []
    for c in configs:
        d = c.model_dump(mode="json") if isinstance(c, RunConfig) else dict(c)
        cfgs.append(load_config({**d, "sweep_id": sweep_id}))
    if not cfgs:
        raise ConfigError("a sweep needs at least one run")
    tasks = _tasks_of(cfgs[0])
    weights = [dict(c.balancer_params.get("weights") or {}) if c.balancer == "fixed" else {} for c in cfgs]
    return SweepPlan(sweep_id, cfgs, weights, [c.seed for c in cfgs], tasks)


def run_plan(
    plan: SweepPlan,
    lake: Lake | None = None,
    mode: Mode = "auto",
    executor: Executor = "inprocess",
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Train a planned sweep (see `run_sweep`): one population when the members can be batched
    (`engine.population.batch_problem`), else separate runs, each with the reason in its log."""
    from engine.population import PopulationError, batch_problem

    lake = lake or Lake()
    t0 = time.perf_counter()
    reason = "sequential mode was asked for" if mode == "sequential" else (batch_problem(plan.configs) or "")
    if mode == "population" and reason:
        raise PopulationError(reason)
    if not reason:
        run_ids = [_create_running(lake, c, "population") for c in plan.configs]
        _write_manifest(lake, plan, run_ids, "population", "")
        states = train_members(lake, run_ids, progress)
        return SweepResult(plan.sweep_id, run_ids, "population", "", time.perf_counter() - t0, states)
    result = _run_separately(lake, plan, reason, executor, progress)
    result.seconds = time.perf_counter() - t0
    return result


def _run_separately(
    lake: Lake,
    plan: SweepPlan,
    reason: str,
    executor: Executor,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """The fallback: one ordinary run per member, queued or trained here one after another."""
    if executor == "queue":
        from engine.jobs import submit_many

        # all or none (the per-user queue limit is checked for the whole sweep); QueueLimitError
        # reaches the caller
        run_ids = submit_many(plan.configs, lake)
        for rid in run_ids:
            # hold a claim while writing the note so that no worker starts the run mid-write
            if lake.claim(rid, by="sweep"):
                try:
                    _note(lake, rid, "info", _fallback_text(reason, "queued for the worker"))
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lake.run_dir(rid) / "claim")
        _write_manifest(lake, plan, run_ids, "queued", reason)
        return SweepResult(plan.sweep_id, run_ids, "queued", reason)
    from engine.runner import execute_run

    run_ids = [_create_running(lake, c, "sweep") for c in plan.configs]
    _write_manifest(lake, plan, run_ids, "sequential", reason)
    states: dict[str, str] = {}
    for i, rid in enumerate(run_ids):
        _note(
            lake, rid, "info", _fallback_text(reason, f"member {i + 1} of {len(run_ids)}, one after another")
        )
        execute_run(lake, rid)
        states[rid] = str(lake.status(rid).get("state"))
        if progress is not None:
            progress(i + 1, len(run_ids))
    return SweepResult(plan.sweep_id, run_ids, "sequential", reason, states=states)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(Exception):
        proc.wait()


def launch_sweep(
    base: RunConfig | Mapping[str, Any],
    weights: np.ndarray | Sequence[Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: Sequence[int] = (0,),
    lake: Lake | None = None,
) -> SweepResult:
    """Start a sweep without waiting: a population in a detached `python -m engine _sweep`
    process, or (when it cannot be batched) separate runs queued for the worker with the reason
    in their logs. A daemon thread reaps the child (no zombies under Streamlit).

    The detached process is not supervised by the worker (nobody records why it died should it
    be killed): where a worker runs, use `submit_sweep`, which queues the population as a job."""
    from engine.population import batch_problem

    lake = lake or Lake()
    plan = plan_sweep(base, weights, seeds)
    reason = batch_problem(plan.configs)
    if reason:
        return _run_separately(lake, plan, reason, "queue")
    run_ids = [_create_running(lake, c, "population") for c in plan.configs]
    _write_manifest(lake, plan, run_ids, "population", "")
    log = lake.root / SWEEPS_DIR / f"{plan.sweep_id}.log"
    env = dict(os.environ)
    env["SEESAW_HOME"] = str(lake.root)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "_sweep", "--home", str(lake.root), plan.sweep_id],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO_ROOT),
            env=env,
            start_new_session=True,
        )
    threading.Thread(target=_reap, args=(proc,), daemon=True, name=f"reap-{plan.sweep_id}").start()
    return SweepResult(plan.sweep_id, run_ids, "population", "", 0.0, process=proc)


def submit_plan(plan: SweepPlan, lake: Lake | None = None, mode: Mode = "auto") -> SweepResult:
    """Queue a planned sweep for the worker without training anything here.

    When the members can be batched (`engine.population.batch_problem`; mode "auto" or
    "population") they are queued as one population job (`engine.jobs.submit_job`): the worker
    trains them in one `python -m engine _sweep` process it starts and watches, and the result's
    mode is "population". Otherwise (or with mode "sequential") they are queued as separate runs,
    each with the reason in its log (mode "queued"). mode "population" raises PopulationError
    with the reason when they cannot be batched. QueueLimitError (all or nothing) reaches the
    caller.
    """
    from engine.jobs import submit_job
    from engine.population import PopulationError, batch_problem

    lake = lake or Lake()
    reason = "sequential mode was asked for" if mode == "sequential" else (batch_problem(plan.configs) or "")
    if mode == "population" and reason:
        raise PopulationError(reason)
    if reason:
        return _run_separately(lake, plan, reason, "queue")
    run_ids = submit_job(
        "population",
        plan.configs,
        lake,
        group=plan.sweep_id,
        prepare=lambda ids: _write_manifest(lake, plan, ids, "population", ""),
    )
    return SweepResult(plan.sweep_id, run_ids, "population", "")


def submit_sweep(
    base: RunConfig | Mapping[str, Any],
    weights: np.ndarray | Sequence[Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: Sequence[int] = (0,),
    lake: Lake | None = None,
    mode: Mode = "auto",
) -> SweepResult:
    """Plan a sweep (see `run_sweep`) and queue it for the worker (see `submit_plan`)."""
    return submit_plan(plan_sweep(base, weights, seeds), lake, mode)


def execute_sweep(lake: Lake, sweep_id: str, run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """Train a population sweep in this process (the `_sweep` trainer process): the members
    `run_ids` (the worker names the ones it claimed), else every run of the sweep's manifest."""
    if run_ids:
        members = [str(r) for r in run_ids]
        for rid in members:
            lake.config(rid)  # RunNotFoundError for a run that is not there
    else:
        info = sweep_info(lake, sweep_id)
        if not info:
            raise FileNotFoundError(f"no sweep {sweep_id!r} in {lake.root}")
        members = list(info["run_ids"])
    return train_members(lake, members)
