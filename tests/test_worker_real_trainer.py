"""The worker with the real trainer process (`python -m engine _train`): SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from polling import wait_until

from engine.config import load_config
from engine.jobs import Worker, submit
from engine.store import Lake


@pytest.mark.slow
def test_sigkill_of_a_real_trainer_fails_the_run_and_keeps_flushed_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    cfg = load_config(
        {
            "dataset": "synthetic-correlation",
            "dataset_params": {"n_samples": 20000, "dim": 16},
            "arch": "mmoe",
            "balancer": "pcgrad",
            "epochs": 200,
            "batch_size": 32,
            "threads": 1,
        }
    )
    run_id = submit(cfg, lake)
    worker = Worker(lake, max_parallel=1, poll=0.2)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: len(lake.metrics([run_id], split="train")) >= 200, 120, "training rows to be flushed"
        )
        before = lake.metrics([run_id], split="train")
        pid = lake.status(run_id)["pid"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: lake.status(run_id).get("state") == "failed", 10, "the run to be marked failed")
        assert time.time() - killed_at <= 10
        status = lake.status(run_id)
        assert "SIGKILL" in status["error"] or "signal 9" in status["error"], status["error"]

        after = lake.metrics([run_id], split="train")
        # every row that was queryable before the kill still is; nothing is duplicated
        key = ["step", "task"]
        assert len(after) >= len(before)
        assert not after.duplicated(key).any()
        merged = before.merge(after, on=key, suffixes=("_b", "_a"))
        assert len(merged) == len(before)
        assert (merged["value_b"] == merged["value_a"]).all()
        # no half-written segment anywhere in the run directory: every segment name opens, and
        # temp files (the worker may be compacting the ended run right now) never linger
        run_dir = lake.run_dir(run_id)
        wait_until(lambda: not list(run_dir.rglob("*.tmp")), 30, "temporary files to be renamed or removed")
        opened = 0
        for f in run_dir.rglob("seg-*.parquet"):
            try:
                pq.read_table(f)
                opened += 1
            except FileNotFoundError:  # removed by compaction after we listed it: not half-written
                pass
        assert opened > 0
    finally:
        worker.stop(terminate_trainers=True)
        thread.join(timeout=30)


@pytest.mark.slow
def test_two_real_trainers_and_a_reader_never_raise(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    ids = [
        submit(
            load_config(
                {
                    "dataset": "synthetic-correlation",
                    "dataset_params": {"n_samples": 3000, "dim": 8},
                    "arch": arch,
                    "balancer": "mgda",
                    "epochs": 4,
                    "batch_size": 32,
                    "grad_stats_every": 1,
                    "threads": 1,
                }
            ),
            lake,
        )
        for arch in ("mmoe", "shared-bottom")
    ]
    worker = Worker(lake, max_parallel=2, poll=0.2)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    errors: list[BaseException] = []
    reads = 0
    try:
        reader = Lake(tmp_path)  # a separate reader, as the dashboard would be
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                reader.runs()
                reader.metrics(ids)
                reader.grad_stats(ids)
                reader.task_weights(ids)
                reader.final_metrics()
                reads += 1
            except BaseException as e:  # any lock or file error fails the test
                errors.append(e)
            if all(lake.status(i).get("state") in ("finished", "failed") for i in ids):
                break
        assert not errors, errors[:3]
        assert reads > 10
        assert [lake.status(i)["state"] for i in ids] == ["finished", "finished"]
    finally:
        worker.stop(terminate_trainers=True)
        thread.join(timeout=30)
