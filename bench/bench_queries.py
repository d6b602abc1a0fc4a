"""Latency of the Pareto page's queries on a lake of 1,000 runs, and of the learned-front slider.

Builds a lake of N finished runs with tests/lake_factory.py (realistic rows through the real
RunWriter, compacted), then times, cold (a fresh Lake object: first call) and warm (median of
repeated calls), what the Pareto page reads: the runs table (with each run's test summary),
the final test metrics of a sweep's runs, the sweep's front analytics (non-dominated sort,
hypervolume), a run's curves for the drill-down; plus the slider's query on a COSMOS run
(`learned_front` at one preference) and a 101-preference front.

    python bench/bench_queries.py               # 1,000 runs
    python bench/bench_queries.py --runs 200 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    command,
    header,
    load_avg,
    machine,
    median,
    section_name,
    set_threads,
    table,
    write_section,
)

sys.path.insert(0, str(REPO / "tests"))

BUDGET_MS = 300.0


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return cold * 1e3, median(warm) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    set_threads(args.threads)
    info = machine()
    import numpy as np
    from lake_factory import make_lake

    from engine import pareto
    from engine.config import load_config
    from engine.cosmos import learned_front, run_cosmos
    from engine.metrics import higher_is_better
    from engine.store import Lake

    root = Path(tempfile.mkdtemp(prefix="seesaw-bench-queries-")) / "lake"
    t0 = time.perf_counter()
    make_lake(root, args.runs, steps_per_epoch=20)
    build_s = time.perf_counter() - t0
    rid = run_cosmos(
        load_config(
            {
                "dataset": "synthetic-correlation",
                "dataset_params": {"n_samples": 4000, "dim": 20},
                "epochs": 2,
                "threads": args.threads,
            }
        ),
        {"alpha": 1.0, "lam": 1.0},
        Lake(root),
    )
    lake = Lake(root)
    runs = lake.runs()
    sweep = runs[runs["sweep_id"] == "sweep-factory"]["run_id"].tolist()
    one = runs["run_id"].iloc[len(runs) // 2]
    results: dict[str, tuple[float, float]] = {}
    fresh = Lake(root)
    results["runs table (all runs, test summaries)"] = timed(lambda: fresh.runs(), args.repeats)
    results["final test metrics of a sweep"] = timed(lambda: fresh.final_metrics(sweep), args.repeats)
    results["final test metrics of every run"] = timed(lambda: fresh.final_metrics(None), args.repeats)

    def front() -> None:
        df = fresh.runs()
        df = df[df["dataset"] == "synthetic-correlation"]
        cols = ["task_1/mse", "task_2/mse"]
        vals = df[cols].to_numpy(dtype=float, na_value=np.nan)
        hib = [higher_is_better("mse")] * 2
        pareto.non_dominated_sort(vals, hib)
        ok = vals[~np.isnan(vals).any(axis=1)]
        pareto.hypervolume(ok, hib, pareto.default_reference_point(ok, hib))

    results["runs + front analytics (sort, hypervolume)"] = timed(front, args.repeats)
    results["one run's curves (drill-down)"] = timed(lambda: fresh.metrics([one]), args.repeats)
    results["slider: learned front at one preference"] = timed(
        lambda: learned_front(rid, [[0.3, 0.7]], fresh, split="val"), args.repeats
    )
    results["learned front at 101 preferences"] = timed(lambda: learned_front(rid, 101, fresh), args.repeats)
    info["load average at end"] = load_avg()
    rows = []
    for name, (cold, warm) in results.items():
        worst = max(cold, warm)
        rows.append([name, f"{cold:.0f}", f"{warm:.0f}", f"{'met' if worst <= BUDGET_MS else 'MISSED'}"])
    text = header(
        f"Pareto page queries on a lake of {len(runs)} runs", command("bench_queries.py", args), info
    )
    text += (
        f"\nLake built with tests/lake_factory.py in {build_s:.0f} s ({len(runs)} runs incl. one COSMOS run, "
        f"compacted). Cold = first call on a fresh Lake (nothing cached); warm = median of {args.repeats} "
        f"calls. Target: <= {BUDGET_MS:.0f} ms.\n\n"
    )
    text += table(rows, ["query", "cold ms", "warm ms", f"<= {BUDGET_MS:.0f} ms"])
    print(text)
    if not args.no_write:
        write_section(section_name("queries", args), text)


if __name__ == "__main__":
    main()
