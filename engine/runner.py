"""Run one run directory to its end: the bridge between the lake and the training loop.

Used by the worker's trainer processes (`python -m engine _train RUN_ID`) and by the CLI's
foreground `run`. Whatever happens, the run ends in a terminal state with a readable reason.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from engine.config import ConfigError, RunConfig, load_config
from engine.devices import DeviceError
from engine.recorder import RunWriter
from engine.store import Lake
from engine.train import TrainingError, TrainResult, train

USER_ERRORS = (TrainingError, ConfigError, DeviceError, ValueError, FileNotFoundError)


def execute_run(lake: Lake, run_id: str, progress: bool = False) -> TrainResult | None:
    """Train `run_id` in this process, recording into its run directory."""
    return execute_in_run_dir(
        lake, run_id, lambda cfg, writer, run_dir: train(cfg, writer, progress, run_dir / "checkpoint.pt")
    )


def execute_in_run_dir(
    lake: Lake, run_id: str, fit: Callable[[RunConfig, RunWriter, Path], TrainResult]
) -> TrainResult | None:
    """Train `run_id` in this process with `fit(config, writer, run directory)`: status and
    heartbeat, the rows `fit` writes, its result's state and test summary. A user error (bad
    config, NaN loss, missing file) fails the run with its message; a bug fails it with the
    traceback in the events; the run's segments are compacted at the end either way."""
    run_dir = lake.run_dir(run_id)
    writer = RunWriter(run_dir)
    writer.start(os.getpid())
    result: TrainResult | None = None
    try:
        cfg = load_config(lake.config(run_id))
        result = fit(cfg, writer, run_dir)
        writer.finish(result.state, summary=result.test or None)
    except USER_ERRORS as e:
        writer.log_event("error", str(e))
        writer.finish("failed", error=str(e))
    except KeyboardInterrupt:
        writer.log_event("info", "interrupted from the keyboard")
        writer.finish("cancelled", error="interrupted")
        raise
    except Exception as e:  # a bug: keep the traceback for the report
        tb = traceback.format_exc(limit=8)
        writer.log_event("error", tb)
        writer.finish("failed", error=f"internal error {type(e).__name__}: {e}")
    finally:
        try:
            lake.compact(run_id)
        except Exception as e:  # compaction is an optimisation; never lose the run over it
            print(f"compaction of {run_id} skipped: {e}", file=sys.stderr)
    return result
