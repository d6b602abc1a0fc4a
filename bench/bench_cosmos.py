"""Hypervolume of the preference-conditioned (COSMOS) front vs a K = 16 sweep's front, and its cost.

Workload: the issue's MMoE (100 inputs, 4 experts 100-64-32, towers 32-16-1, batch 1024, Adam) on
two synthetic tasks with a real trade-off (correlation 0). The sweep: 16 evenly spaced weight
vectors, trained as one population, `--epochs` each. COSMOS: one conditioned model trained once
(`--cosmos-epochs`), its front read off by evaluating 16 (and 64) preferences. Both fronts are
measured on the test split (MSE of both tasks, lower is better) against one reference point: the
nadir of all points pushed 10% outward (engine.pareto.default_reference_point). Cost: COSMOS's
wall time against one ordinary run of the sweep's epochs, timed in the same process.

    python bench/bench_cosmos.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    WORKLOAD,
    command,
    header,
    load_avg,
    machine,
    section_name,
    set_threads,
    table,
    write_section,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6, help="epochs of each sweep member (and the one run)")
    ap.add_argument("--cosmos-epochs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timings of one run and of COSMOS")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--correlation", type=float, default=0.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    set_threads(args.threads)
    info = machine()
    import numpy as np

    from engine import pareto
    from engine.config import load_config
    from engine.cosmos import evaluate_preferences, train_cosmos
    from engine.population import train_population
    from engine.sweeps import plan_sweep, weight_vectors
    from engine.train import train

    dp = {**WORKLOAD["dataset_params"], "n_tasks": 2, "correlation": args.correlation}
    base = load_config(
        {
            **WORKLOAD,
            "dataset_params": dp,
            "epochs": args.epochs,
            "threads": args.threads,
            "grad_stats_every": 0,
        }
    )
    cfgs = plan_sweep(base, weight_vectors(2, 16, "grid")).configs
    train(cfgs[0])  # warm-up (data cache, imports)
    t0 = time.perf_counter()
    members = train_population(cfgs)
    sweep_s = time.perf_counter() - t0
    sweep_pts = np.array([[m.test["task_1"]["mse"], m.test["task_2"]["mse"]] for m in members])

    ccfg = base.model_copy(update={"epochs": args.cosmos_epochs})
    one_runs, cosmos_runs, ratios = [], [], []
    res = None
    for _ in range(args.rounds):  # interleaved: a load change hits both alike
        t0 = time.perf_counter()
        train(base.model_copy(update={"balancer": "ew"}))
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = train_cosmos(ccfg, {"alpha": args.alpha, "lam": args.lam})
        b = time.perf_counter() - t0
        one_runs.append(a)
        cosmos_runs.append(b)
        ratios.append(b / a)
    one_run, cosmos_s = float(np.median(one_runs)), float(np.median(cosmos_runs))
    assert res is not None and res.model is not None
    from engine.datasets import load_dataset

    data = load_dataset(base.dataset, dp, base.seed)
    fronts = {}
    eval_s = {}
    for n in (16, 64):
        prefs = weight_vectors(2, n, "grid")
        t0 = time.perf_counter()
        ev = evaluate_preferences(res.model, data.test, data, prefs)
        eval_s[n] = time.perf_counter() - t0
        fronts[n] = np.array([[e["task_1"]["mse"], e["task_2"]["mse"]] for e in ev])
    hib = [False, False]
    ref = pareto.default_reference_point(np.vstack([sweep_pts, *fronts.values()]), hib)
    hv_sweep = pareto.hypervolume(sweep_pts, hib, ref)
    hv = {n: pareto.hypervolume(f, hib, ref) for n, f in fronts.items()}
    info["load average at end"] = load_avg()
    cost = float(np.median(ratios))
    rows = [
        [
            "K = 16 sweep (population)",
            f"{hv_sweep:.4g}",
            "100%",
            "",
            f"{sweep_s:.1f}",
            f"{sweep_s / one_run:.2f}x",
            "",
        ],
    ]
    for n in (16, 64):
        ratio = hv[n] / hv_sweep if hv_sweep > 0 else float("nan")
        rows.append(
            [
                f"COSMOS, {n} preferences",
                f"{hv[n]:.4g}",
                f"**{ratio * 100:.1f}%**",
                f">= 95%: {'met' if ratio >= 0.95 else 'MISSED'}",
                f"{cosmos_s:.1f} (+{eval_s[n]:.2f} eval)",
                f"**{cost:.2f}x**",
                f"<= 2x: {'met' if cost <= 2 else 'MISSED'}",
            ]
        )
    text = header(
        "Preference-conditioned front (COSMOS) vs the K = 16 sweep", command("bench_cosmos.py", args), info
    )
    text += (
        f"\nMMoE workload on 2 synthetic tasks (correlation {args.correlation}); sweep members {args.epochs} "
        f"epochs each; COSMOS alpha {args.alpha}, lambda {args.lam}, "
        f"{args.cosmos_epochs} epochs, trained once. "
        f"Hypervolume of test MSE (task_1, task_2) against the common reference point "
        f"({ref[0]:.4g}, {ref[1]:.4g}); one ordinary run of "
        f"{args.epochs} epochs took {one_run:.2f} s (median of "
        f"{args.rounds}, interleaved with the COSMOS runs; cost = median of the per-round ratios).\n\n"
    )
    text += table(
        rows, ["front", "hypervolume", "vs sweep", "target", "train s", "cost vs one run", "target"]
    )
    text += "\n\nPoints (test MSE task_1, task_2):\n\n"
    text += "- sweep: " + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in sweep_pts) + "\n"
    text += "- COSMOS (16 preferences, task_1 weight 1 -> 0): " + ", ".join(
        f"({a:.3f}, {b:.3f})" for a, b in fronts[16]
    )
    print(text)
    if not args.no_write:
        write_section(section_name("cosmos", args), text)


if __name__ == "__main__":
    main()
