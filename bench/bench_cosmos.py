"""Hypervolume of the preference-conditioned fronts vs a K = 16 sweep's front, and their cost.

Workload: the issue's MMoE (100 inputs, 4 experts 100-64-32, towers 32-16-1, batch 1024, Adam) on
two synthetic tasks with a real trade-off (correlation 0). The sweep: 16 evenly spaced weight
vectors, trained as one population, `--epochs` each. Each conditioning (`--conditioning`: a Pareto
HyperNetwork and COSMOS input conditioning, engine.hypernet): one conditioned model trained once
(`--cosmos-epochs`), its front read off by evaluating 16 (and 64) preferences. Both fronts are
measured on the test split (MSE of both tasks, lower is better) against one reference point: the
nadir of all points pushed 10% outward (engine.pareto.default_reference_point). Cost: the conditioned
model's wall time against one ordinary run of the sweep's epochs, timed in the same process.

    python bench/bench_cosmos.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

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
    ap.add_argument("--cosmos-epochs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timings of one run and of COSMOS")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lam", type=float, default=0.0)
    ap.add_argument(
        "--conditioning", default="hypernet,input", help="comma-separated: hypernet, input (COSMOS)"
    )
    ap.add_argument("--correlation", type=float, default=0.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    set_threads(args.threads)
    info = machine()
    import numpy as np

    from engine import pareto
    from engine.config import load_config
    from engine.cosmos import CONDITIONING_LABELS, evaluate_preferences, train_cosmos
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
    conds = [c for c in args.conditioning.split(",") if c]
    one_runs: list[float] = []
    cond_runs: dict[str, list[float]] = {c: [] for c in conds}
    ratios: dict[str, list[float]] = {c: [] for c in conds}
    res: dict[str, Any] = {}
    for _ in range(args.rounds):  # interleaved: a load change hits all alike
        t0 = time.perf_counter()
        train(base.model_copy(update={"balancer": "ew"}))
        a = time.perf_counter() - t0
        one_runs.append(a)
        for c in conds:
            t0 = time.perf_counter()
            res[c] = train_cosmos(ccfg, {"alpha": args.alpha, "lam": args.lam, "conditioning": c})
            b = time.perf_counter() - t0
            cond_runs[c].append(b)
            ratios[c].append(b / a)
    one_run = float(np.median(one_runs))
    from engine.datasets import load_dataset

    data = load_dataset(base.dataset, dp, base.seed)
    fronts: dict[tuple[str, int], np.ndarray] = {}
    eval_s: dict[tuple[str, int], float] = {}
    for c in conds:
        for n in (16, 64):
            prefs = weight_vectors(2, n, "grid")
            t0 = time.perf_counter()
            ev = evaluate_preferences(res[c].model, data.test, data, prefs)
            eval_s[c, n] = time.perf_counter() - t0
            fronts[c, n] = np.array([[e["task_1"]["mse"], e["task_2"]["mse"]] for e in ev])
    hib = [False, False]
    ref = pareto.default_reference_point(np.vstack([sweep_pts, *fronts.values()]), hib)
    hv_sweep = pareto.hypervolume(sweep_pts, hib, ref)
    hv = {k: pareto.hypervolume(f, hib, ref) for k, f in fronts.items()}
    info["load average at end"] = load_avg()
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
    for c in conds:
        cost = float(np.median(ratios[c]))
        for n in (16, 64):
            ratio = hv[c, n] / hv_sweep if hv_sweep > 0 else float("nan")
            rows.append(
                [
                    f"{CONDITIONING_LABELS.get(c, c)}, {n} preferences",
                    f"{hv[c, n]:.4g}",
                    f"**{ratio * 100:.1f}%**",
                    f">= 95%: {'met' if ratio >= 0.95 else 'MISSED'}",
                    f"{float(np.median(cond_runs[c])):.1f} (+{eval_s[c, n]:.2f} eval)",
                    f"**{cost:.2f}x**",
                    f"<= 2x: {'met' if cost <= 2 else 'MISSED'}",
                ]
            )
    text = header("Preference-conditioned fronts vs the K = 16 sweep", command("bench_cosmos.py", args), info)
    text += (
        f"\nMMoE workload on 2 synthetic tasks (correlation {args.correlation}); sweep members {args.epochs} "
        f"epochs each; conditioned models: alpha {args.alpha}, lambda {args.lam}, "
        f"{args.cosmos_epochs} epochs, each trained once. "
        f"Hypervolume of test MSE (task_1, task_2) against the common reference point "
        f"({ref[0]:.4g}, {ref[1]:.4g}); one ordinary run of "
        f"{args.epochs} epochs took {one_run:.2f} s (median of "
        f"{args.rounds}, interleaved with the conditioned runs; cost = median of the per-round ratios).\n\n"
    )
    text += table(
        rows, ["front", "hypervolume", "vs sweep", "target", "train s", "cost vs one run", "target"]
    )
    text += "\n\nPoints (test MSE task_1, task_2):\n\n"
    text += "- sweep: " + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in sweep_pts) + "\n"
    for c in conds:
        text += (
            f"- {CONDITIONING_LABELS.get(c, c)} (16 preferences, task_1 weight 1 -> 0): "
            + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in fronts[c, 16])
            + "\n"
        )
    print(text)
    if not args.no_write:
        write_section(section_name("cosmos", args), text)


if __name__ == "__main__":
    main()
