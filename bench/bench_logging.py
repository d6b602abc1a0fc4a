"""Logging overhead: gradient statistics every 10 steps vs never, on real runs written to a lake.

Workload: the issue's MMoE (3 tasks, 100 inputs, 4 experts 100-64-32, towers 32-16-1, batch
1024, Adam). Each variant is one whole run (`engine.runner.execute_run`: RunWriter, Parquet
segments, status heartbeats) in a temporary lake; the variants are interleaved round by round and
the overhead is the median over rounds of (time with statistics / time without - 1). An EW run
computes a Jacobian only on the statistics steps; a gradient balancer (PCGrad here) reuses the
Jacobian it computes anyway, so only the statistics themselves cost.

    python bench/bench_logging.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    WORKLOAD,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    set_threads(args.threads)
    info = machine()
    from engine.config import load_config
    from engine.runner import execute_run
    from engine.store import Lake

    lake = Lake(tempfile.mkdtemp(prefix="seesaw-bench-logging-"))
    variants = {
        (bal, every): load_config(
            {
                **WORKLOAD,
                "epochs": args.epochs,
                "threads": args.threads,
                "balancer": bal,
                "grad_stats_every": every,
            }
        )
        for bal in ("ew", "pcgrad")
        for every in (0, 10)
    }

    def run(cfg) -> float:  # type: ignore[no-untyped-def]
        rid = lake.create_run(cfg, state="running")
        t0 = time.perf_counter()
        execute_run(lake, rid)
        dt = time.perf_counter() - t0
        assert lake.status(rid)["state"] == "finished", lake.status(rid).get("error")
        return dt

    run(variants[("ew", 0)])  # warm-up
    times: dict[tuple[str, int], list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for k, cfg in variants.items():
            times[k].append(run(cfg))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    info["load average at end"] = load_avg()
    rows = []
    for bal in ("ew", "pcgrad"):
        over = median([b / a - 1 for a, b in zip(times[(bal, 0)], times[(bal, 10)], strict=True)])
        target = f"<= 5%: {'met' if over <= 0.05 else 'MISSED'}" if bal == "ew" else ""
        rows.append(
            [
                bal,
                f"{median(times[(bal, 0)]):.2f}",
                f"{median(times[(bal, 10)]):.2f}",
                f"**{over * 100:+.1f}%**",
                target,
            ]
        )
    n_train = int(WORKLOAD["dataset_params"]["n_samples"] * 0.7)
    steps = args.epochs * -(-n_train // WORKLOAD["batch_size"])
    text = header(
        "Logging overhead: gradient statistics every 10 steps vs never",
        command("bench_logging.py", args),
        info,
    )
    text += (
        f"\nWhole runs (execute_run into a temporary lake) of {steps} steps, {args.rounds} interleaved "
        "rounds, "
        "medians; overhead = median over rounds of (with / without - 1).\n\n"
    )
    text += table(rows, ["balancer", "never s", "every 10 steps s", "overhead", "target"])
    print(text)
    if not args.no_write:
        write_section(section_name("logging", args), text)


if __name__ == "__main__":
    main()
