"""Results tables of the architecture and balancer zoos: test metrics per task (mean ± std over
seeds), delta-m against single-task baselines, training time and ms per step.

    python -m bench.zoo_table archs       # every architecture x {adult, recsys-sim}, 3 seeds
    python -m bench.zoo_table balancers   # every balancer on MMoE x {adult, movielens-100k}, 3 seeds

Runs train in-process (threads=1), two at a time, and the table is written to
docs/results-<axis>.md with the machine and the command. Options: --seeds, --epochs, --only,
--jobs, --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from engine.balancers import BALANCERS
from engine.config import ConfigError, load_config
from engine.models import MODELS
from engine.pareto import delta_m

REPO = Path(__file__).resolve().parent.parent

DATASETS_BY_AXIS = {
    "archs": {
        "adult": {"dataset_params": {}, "epochs": 2, "batch_size": 256},
        "recsys-sim": {"dataset_params": {"n_impressions": 30000}, "epochs": 2, "batch_size": 256},
    },
    "balancers": {
        "adult": {"dataset_params": {}, "epochs": 2, "batch_size": 256},
        "movielens-100k": {"dataset_params": {}, "epochs": 2, "batch_size": 512},
    },
}


def _one(job: dict[str, Any]) -> dict[str, Any]:
    from engine.train import train

    torch.set_num_threads(1)
    row = {k: job[k] for k in ("axis_value", "dataset", "seed")}
    try:
        cfg = load_config(job["config"])
    except ConfigError as e:  # the combination does not apply (e.g. a cascade on non-funnel tasks)
        return {**row, "error": str(e), "not_applicable": True}
    t0 = time.perf_counter()
    try:
        res = train(cfg)
    except Exception as e:  # a method failing is a result too; the table says so
        return {**row, "error": f"{type(e).__name__}: {e}"}
    secs = time.perf_counter() - t0
    row.update(seconds=secs, ms_per_step=1000 * secs / max(res.steps, 1), steps=res.steps)
    for task, vals in res.test.items():
        for metric, v in vals.items():
            if metric != "loss":
                row[f"{task}/{metric}"] = v
    return row


def jobs_for(axis: str, seeds: int, epochs: int | None, only: list[str] | None) -> list[dict[str, Any]]:
    values = list(MODELS) if axis == "archs" else list(BALANCERS)
    if only:
        values = [v for v in values if v in only]
    out = []
    for dataset, base in DATASETS_BY_AXIS[axis].items():
        names = values + (["single-task"] if axis == "balancers" and "single-task" not in values else [])
        for value in names:
            for seed in range(seeds):
                cfg = {
                    "dataset": dataset,
                    "dataset_params": base["dataset_params"],
                    "epochs": epochs or base["epochs"],
                    "batch_size": base["batch_size"],
                    "seed": seed,
                    "threads": 1,
                    "grad_stats_every": 0,
                }
                if axis == "archs":
                    cfg.update(arch=value, balancer="ew")
                elif value == "single-task":
                    cfg.update(arch="single-task", balancer="ew")
                else:
                    cfg.update(arch="mmoe", balancer=value)
                out.append({"axis_value": value, "dataset": dataset, "seed": seed, "config": cfg})
    return out


def summarise(rows: list[dict[str, Any]], axis: str) -> str:
    df = pd.DataFrame(rows)
    lines: list[str] = []
    for dataset, part in df.groupby("dataset", sort=False):
        metric_cols = [c for c in part.columns if "/" in c and part[c].notna().any()]
        base = part[part["axis_value"] == "single-task"]
        base_means = {c: base[c].mean() for c in metric_cols} if not base.empty else {}
        header = ["name", *metric_cols, "delta-m %", "s / run", "ms / step"]
        lines += [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, g in part.groupby("axis_value", sort=False):
            if "error" in g and g["error"].notna().all():
                na = "not_applicable" in g and g["not_applicable"].fillna(False).astype(bool).all()
                reason = str(g["error"].iloc[0]).split(";")[0].replace("|", "/")
                cells = [f"n/a: {reason}" if na else f"failed: {reason}"] + [""] * (len(header) - 2)
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
                continue
            ok = g[g["error"].isna()] if "error" in g else g
            cells = [f"{ok[c].mean():.4f} ± {ok[c].std(ddof=0):.4f}" for c in metric_cols]
            dm = ""
            if base_means:
                from engine.metrics import higher_is_better

                means = {c: ok[c].mean() for c in metric_cols}
                hib = {c: higher_is_better(c.split("/")[1]) for c in metric_cols}
                dm = f"{delta_m(means, base_means, hib):+.2f}"
            cells += [dm, f"{ok['seconds'].mean():.1f}", f"{ok['ms_per_step'].mean():.1f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("axis", choices=["archs", "balancers"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--only", nargs="*", help="restrict to these names")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    jobs = jobs_for(args.axis, args.seeds, args.epochs, args.only)
    print(f"{len(jobs)} runs on {args.jobs} processes", flush=True)
    rows = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, row in enumerate(pool.map(_one, jobs), 1):
            rows.append(row)
            status = row.get("error") or f"{row['seconds']:.1f} s"
            print(
                f"[{i}/{len(jobs)}] {row['dataset']} {row['axis_value']} seed {row['seed']}: {status}",
                flush=True,
            )
    table = summarise(rows, args.axis)
    cmd = f"python -m bench.zoo_table {args.axis} --seeds {args.seeds}" + (
        f" --epochs {args.epochs}" if args.epochs else ""
    )
    what = "architecture (balancer EW)" if args.axis == "archs" else "balancer (architecture MMoE)"
    text = (
        f"# Results: every {what}\n\n"
        f"Command: `{cmd}` ({time.perf_counter() - t0:.0f} s wall). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, CPU, 1 thread per run, "
        f"{args.jobs} runs at a time. Test metrics: mean ± std over {args.seeds} seeds "
        "(the seed sets the split and the initialisation). delta-m: mean signed % change against "
        "the single-task baseline, positive = better.\n\n" + table
    )
    out = args.out or REPO / "docs" / f"results-{args.axis}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    errors = [r for r in rows if r.get("error")]
    if errors:
        print(f"{len(errors)} runs failed; first: {errors[0]['error']}")


if __name__ == "__main__":
    main()
