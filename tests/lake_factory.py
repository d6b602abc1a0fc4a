"""Build a run lake of N finished runs with realistic rows, fast, through the real RunWriter.

Used by the dashboard tests and by bench/page_load.py (200 runs). Each run gets per-step train
losses, per-epoch validation metrics, test metrics, task weights, gradient statistics (overall
and per shared block), balancer statistics and events, shaped like what the trainer writes.

    python -m tests.lake_factory /tmp/lake 200
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import load_config
from engine.recorder import RunWriter
from engine.store import Lake

DATASETS: dict[str, dict[str, Any]] = {
    "synthetic-correlation": {"tasks": ["task_1", "task_2"], "metrics": ("mse", "mae"), "base": (0.9, 0.75)},
    "adult": {"tasks": ["income", "never_married"], "metrics": ("auc", "logloss"), "base": (0.88, 0.33)},
    "recsys-sim": {"tasks": ["click", "cart", "purchase"], "metrics": ("auc", "logloss"), "base": (0.7, 0.4)},
}
ARCHS: dict[str, list[str]] = {
    "mmoe": ["embedding", "expert_0", "expert_1", "expert_2", "expert_3"],
    "shared-bottom": ["embedding", "bottom"],
    "ple": ["embedding", "shared_expert_0", "shared_expert_1"],
    "single-task": [],
}
BALANCERS = ["ew", "fixed", "uw", "pcgrad", "mgda", "cagrad"]


def _config(
    rng: np.random.Generator,
    i: int,
    dataset: str,
    arch: str,
    balancer: str,
    sweep_id: str | None = None,
    weights: dict[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    tasks = DATASETS[dataset]["tasks"]
    cfg: dict[str, Any] = {
        "dataset": dataset,
        "arch": arch,
        "balancer": balancer,
        "epochs": 3,
        "batch_size": 256,
        "lr": 0.001,
        "seed": seed,
        "grad_stats_every": 5,
        "name": f"{arch}/{balancer} #{i}",
        "tags": ["factory", dataset.split("-")[0]],
        "owner": "factory",
    }
    if dataset == "synthetic-correlation":
        cfg["dataset_params"] = {"n_samples": 2000, "dim": 16, "correlation": 0.5}
    if balancer == "fixed":
        w = weights or {
            t: round(float(x), 3) for t, x in zip(tasks, rng.dirichlet(np.ones(len(tasks))), strict=True)
        }
        if all(v == 0 for v in w.values()):
            w[tasks[0]] = 1.0
        cfg["balancer_params"] = {"weights": w}
    if sweep_id:
        cfg["sweep_id"] = sweep_id
        cfg["tags"] = [*cfg["tags"], "sweep"]
    if arch == "single-task":
        cfg["name"] = f"single-task baseline #{i}"
    return load_config(cfg).model_dump(mode="json")


def write_run(
    lake: Lake,
    cfg: dict[str, Any],
    rng: np.random.Generator,
    steps_per_epoch: int = 20,
    state: str = "finished",
    quality: float | None = None,
) -> str:
    """Create one run and write its tables with the RunWriter; return its id."""
    ds = DATASETS[cfg["dataset"]]
    tasks: list[str] = ds["tasks"]
    m_primary, m_second = ds["metrics"]
    higher = m_primary == "auc"
    blocks = ARCHS.get(cfg["arch"], [])
    rid = lake.create_run(cfg)
    w = RunWriter(lake.run_dir(rid), flush_interval=3600)
    w._hb_thread = None  # no heartbeat thread: the run is written in one go
    with w._lock:
        w._status.update(state="running", pid=os.getpid(), started=time.time(), finished=None, error=None)
    epochs = int(cfg["epochs"])
    total = epochs * steps_per_epoch
    q = rng.normal(0, 1, size=len(tasks)) if quality is None else np.full(len(tasks), quality)
    task_scale = rng.uniform(0.7, 1.3, size=len(tasks))
    conflict = rng.uniform(-0.6, 0.6)
    fixed_w = (cfg.get("balancer_params") or {}).get("weights")
    done_steps = total if state != "running" else total // 2
    w.log_event("info", f"training {cfg['arch']} with {cfg['balancer']} on {cfg['dataset']}")
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            if step >= done_steps:
                break
            decay = math.exp(-step / (0.4 * total))
            losses = {
                t: float(task_scale[k] * (0.4 + 0.8 * decay) + 0.03 * rng.standard_normal())
                for k, t in enumerate(tasks)
            }
            w.log_metrics(
                [
                    {"step": step, "epoch": epoch, "split": "train", "task": t, "metric": "loss", "value": v}
                    for t, v in losses.items()
                ]
            )
            if fixed_w:
                weights = {t: float(fixed_w[t]) for t in tasks}
            elif cfg["balancer"] == "ew":
                weights = dict.fromkeys(tasks, 1.0)
            else:
                raw = np.abs(
                    1
                    + 0.3 * np.sin(step / 7 + np.arange(len(tasks)))
                    + 0.05 * rng.standard_normal(len(tasks))
                )
                weights = {t: float(x) for t, x in zip(tasks, raw / raw.sum() * len(tasks), strict=True)}
            w.log_task_weights(step, weights)
            if cfg["balancer"] in ("pcgrad", "cagrad", "mgda"):
                w.log_balancer_stats(step, {"projections": float(rng.integers(0, len(tasks)))})
            if blocks and step % int(cfg["grad_stats_every"] or 5) == 0:
                rows = []
                norms = {
                    t: float(abs(1.0 * decay * task_scale[k] + 0.1 * rng.standard_normal()) + 0.01)
                    for k, t in enumerate(tasks)
                }
                for layer_i, layer in enumerate(["all", *blocks]):
                    for i, a in enumerate(tasks):
                        for j in range(i, len(tasks)):
                            b = tasks[j]
                            cos = (
                                1.0
                                if i == j
                                else float(
                                    np.clip(
                                        conflict
                                        + 0.1 * layer_i * (-1) ** layer_i
                                        + 0.35 * rng.standard_normal(),
                                        -1,
                                        1,
                                    )
                                )
                            )
                            rows.append(
                                {
                                    "layer": layer,
                                    "task_i": a,
                                    "task_j": b,
                                    "cosine": cos,
                                    "norm_i": norms[a],
                                    "norm_j": norms[b],
                                }
                            )
                w.log_grad_stats(step, rows)
            step += 1
            w.set_progress(step, total, epoch, epochs)
        if step >= done_steps and state == "running":
            break
        val = []
        for k, t in enumerate(tasks):
            drift = 0.01 * q[k] + 0.02 * (1 - math.exp(-epoch))
            p = ds["base"][0] + drift if higher else ds["base"][0] - drift
            s = ds["base"][1] - drift * 0.5 if not higher else ds["base"][1] - 0.5 * drift
            val += [
                {
                    "step": step,
                    "epoch": epoch,
                    "split": "val",
                    "task": t,
                    "metric": "loss",
                    "value": float(task_scale[k] * 0.5),
                },
                {
                    "step": step,
                    "epoch": epoch,
                    "split": "val",
                    "task": t,
                    "metric": m_primary,
                    "value": float(p),
                },
                {
                    "step": step,
                    "epoch": epoch,
                    "split": "val",
                    "task": t,
                    "metric": m_second,
                    "value": float(s),
                },
            ]
        w.log_metrics(val)
    if state == "running":
        w.flush()
        return rid
    summary: dict[str, dict[str, float]] = {}
    test = []
    for k, t in enumerate(tasks):
        v1 = ds["base"][0] + (0.012 if higher else -0.012) * q[k] + 0.004 * rng.standard_normal()
        v2 = ds["base"][1] - 0.006 * q[k]
        summary[t] = {"loss": float(task_scale[k] * 0.5), m_primary: float(v1), m_second: float(v2)}
        test += [
            {"step": step, "epoch": epochs, "split": "test", "task": t, "metric": m, "value": v}
            for m, v in summary[t].items()
        ]
    w.log_metrics(test)
    w.log_event("info", f"finished; best epoch {epochs}")
    w.finish(
        state,
        summary=summary if state == "finished" else None,
        error="synthetic failure for tests" if state == "failed" else None,
    )
    return rid


@contextlib.contextmanager
def _no_fsync() -> Any:
    """Test data need not survive a power cut: skip fsync while generating (10x faster)."""
    real = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync = real


def make_lake(
    root: Path | str,
    n_runs: int = 20,
    seed: int = 0,
    steps_per_epoch: int = 20,
    running: int = 0,
    compact: bool = True,
) -> Lake:
    """A lake with `n_runs` finished runs (a mix of datasets, architectures, balancers, a weight
    sweep and single-task baselines) plus `running` half-written runs still marked running."""
    with _no_fsync():
        return _make_lake(root, n_runs, seed, steps_per_epoch, running, compact)


def app_lake(monkeypatch: Any, root: Path, template: Path | None = None) -> Path:
    """Point the app under test at `root` (a copy of `template`, or created empty if missing),
    with its worker off (SEESAW_NO_WORKER): queued runs stay queued."""
    if template is not None:
        shutil.copytree(template, root)
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SEESAW_HOME", str(root))
    monkeypatch.setenv("SEESAW_NO_WORKER", "1")
    return root


def adult_report(root: Path | str, note: str, title: str = "") -> Any:
    """The Report of a `make_lake` lake's finished adult runs on three metrics (two AUCs, higher
    is better; a log loss, lower is better), with their loss curves."""
    from dashboard.report import build_report

    lake = Lake(root)
    runs = lake.runs()
    pool = runs[(runs["status"] == "finished") & (runs["dataset"] == "adult")]
    ids = pool["run_id"].tolist()
    return build_report(
        pool,
        ["income/auc", "never_married/auc", "income/logloss"],
        {r: lake.config(r) for r in ids},
        note=note,
        title=title,
        curves=lake.metrics(ids, split=["train", "val"], metric="loss"),
    )


def _make_lake(
    root: Path | str, n_runs: int, seed: int, steps_per_epoch: int, running: int, compact: bool
) -> Lake:
    lake = Lake(root)
    rng = np.random.default_rng(seed)
    dsets = list(DATASETS)
    i = 0
    made: list[str] = []
    # a weight sweep on the synthetic data (fixed balancer), about a sixth of the runs
    n_sweep = min(max(n_runs // 6, 0), 11)
    for k in range(n_sweep):
        x = k / max(n_sweep - 1, 1)
        cfg = _config(
            rng,
            i,
            "synthetic-correlation",
            "mmoe",
            "fixed",
            sweep_id="sweep-factory",
            weights={"task_1": round(x, 3), "task_2": round(1 - x, 3)},
        )
        made.append(write_run(lake, cfg, rng, steps_per_epoch))
        i += 1
    while i < n_runs:
        ds = dsets[i % len(dsets)]
        arch = list(ARCHS)[(i // 3) % len(ARCHS)]
        bal = "ew" if arch == "single-task" else BALANCERS[(i // 2) % len(BALANCERS)]
        cfg = _config(rng, i, ds, arch, bal, seed=(i // 12) % 2)
        made.append(write_run(lake, cfg, rng, steps_per_epoch))
        i += 1
    for k in range(running):
        cfg = _config(rng, n_runs + k, "synthetic-correlation", "mmoe", "pcgrad")
        write_run(lake, cfg, rng, steps_per_epoch, state="running")
    if compact:
        for rid in made:
            lake.compact(rid)
    return lake


if __name__ == "__main__":
    t0 = time.perf_counter()
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/seesaw-lake")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    lk = make_lake(target, n)
    print(f"{len(lk.run_ids())} runs in {target} ({time.perf_counter() - t0:.1f} s)")
