"""A stand-in trainer process for the worker tests.

    python tests/fake_trainer.py HOME RUN_ID [RUN_ID ...] [--rows N] [--sleep S] [--ignore-cancel]
                                 [--exit-code C]

Writes one train-loss metric row per step (step = 0..N-1, flushing every 0.05 s) through
`RunWriter`, then test metrics and a summary, and finishes. Several run ids stand in for a
population: one process, one writer per run, each run stopping alone when its cancel is
requested. Honours cancel requests unless `--ignore-cancel` (then only the worker's SIGTERM
stops it). `--exit-code C` exits with C right after the rows, without recording an end state
(the worker must explain the exit).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.recorder import RunWriter


def main(argv: list[str] | None = None) -> int:
    """Run the fake training loop; return the process exit code."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("home")
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--sleep", type=float, default=0.01)
    p.add_argument("--ignore-cancel", action="store_true")
    p.add_argument("--exit-code", type=int, default=None)
    args = p.parse_args(argv)

    writers = {rid: RunWriter(Path(args.home) / rid, flush_interval=0.05) for rid in args.run_ids}
    for writer in writers.values():
        writer.start(os.getpid())
        writer.log_event("info", f"fake trainer started with {args.rows} rows")
    live = dict(writers)
    for step in range(args.rows):
        for rid, writer in list(live.items()):
            writer.log_metrics(
                [
                    {
                        "step": step,
                        "epoch": 0,
                        "split": "train",
                        "task": "a",
                        "metric": "loss",
                        "value": 1.0 / (step + 1),
                    }
                ]
            )
            writer.log_task_weights(step, {"a": 0.5, "b": 0.5})
            writer.set_progress(step + 1, args.rows, 0, 1)
            writer.maybe_flush()
            if not args.ignore_cancel and writer.cancel_requested():
                writer.finish("cancelled", error="cancelled by request")
                del live[rid]
        if not live:
            return 0
        time.sleep(args.sleep)
    for writer in live.values():
        writer.flush()
    if args.exit_code is not None:
        print(f"fake trainer exiting with code {args.exit_code}", flush=True)
        return args.exit_code
    last = args.rows
    for writer in live.values():
        writer.log_metrics(
            [
                {"step": last, "epoch": 0, "split": "test", "task": "a", "metric": "auc", "value": 0.75},
                {"step": last, "epoch": 0, "split": "test", "task": "b", "metric": "auc", "value": 0.65},
            ]
        )
        writer.finish("finished", summary={"a": {"auc": 0.75}, "b": {"auc": 0.65}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
