"""The worker with the real job trainers: a population sweep (`python -m engine _sweep`) and a
COSMOS training (`python -m engine _cosmos`) queued from the engine's submit functions, trained
to the end, and killed with SIGKILL mid-run (their runs fail with the signal named, every
flushed row stays)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import wait_until

from engine.cosmos import learned_front, submit_cosmos
from engine.jobs import Worker
from engine.store import Lake
from engine.sweeps import submit_sweep, sweep_info

BIG = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 20000, "dim": 16},
    "arch": "mmoe",
    "epochs": 200,
    "batch_size": 32,
    "threads": 1,
    "owner": "tester",
}
TINY = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 600, "dim": 8, "correlation": -0.5},
    "arch": "mmoe",
    "epochs": 2,
    "batch_size": 64,
    "threads": 1,
    "owner": "tester",
}


@pytest.fixture
def worker_on(tmp_path: Path) -> Iterator[tuple[Lake, Worker]]:
    lake = Lake(tmp_path / "lake")
    worker = Worker(lake, max_parallel=1, poll=0.2)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        yield lake, worker
    finally:
        worker.stop(terminate_trainers=True)
        thread.join(timeout=30)


def _states(lake: Lake, ids: list[str]) -> list[str]:
    return [lake.status(r).get("state", "") for r in ids]


def _kill_and_check(lake: Lake, ids: list[str], who: str) -> None:
    wait_until(
        lambda: all(len(lake.metrics([r], split="train")) >= 40 for r in ids),
        180,
        "training rows to be flushed",
    )
    before = {r: lake.metrics([r], split="train") for r in ids}
    (pid,) = {lake.status(r)["pid"] for r in ids}
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: set(_states(lake, ids)) == {"failed"}, 10, "the runs to be marked failed")
    assert time.time() - killed <= 10
    for rid in ids:
        err = lake.status(rid)["error"]
        assert err.startswith(f"{who} killed by signal 9 (SIGKILL)"), err
        after = lake.metrics([rid], split="train")
        assert len(after) >= len(before[rid])
        assert not after.duplicated(["step", "task"]).any()
        merged = before[rid].merge(after, on=["step", "task"], suffixes=("_b", "_a"))
        assert len(merged) == len(before[rid]) and (merged["value_b"] == merged["value_a"]).all()


@pytest.mark.slow
def test_sigkill_of_a_real_population_trainer(worker_on: tuple[Lake, Worker]) -> None:
    lake, worker = worker_on
    res = submit_sweep(BIG, [[1.0, 0.0], [0.0, 1.0]], lake=lake)
    assert res.mode == "population" and res.reason == ""
    assert sweep_info(lake, res.sweep_id)["run_ids"] == res.run_ids
    wait_until(lambda: worker.launched_jobs, 30, "the worker to launch the population")
    assert worker.launched_jobs[0].kind == "population"
    _kill_and_check(lake, res.run_ids, "population trainer")


@pytest.mark.slow
def test_a_real_cosmos_job_trains_to_the_end_then_another_is_killed(worker_on: tuple[Lake, Worker]) -> None:
    lake, worker = worker_on
    rid = submit_cosmos(TINY, {"alpha": 1.0, "lam": 0.5}, lake)
    assert lake.status(rid)["state"] in ("queued", "running")  # the worker may claim it at once
    wait_until(lambda: lake.status(rid).get("state") in ("finished", "failed"), 180, "the COSMOS run to end")
    st = lake.status(rid)
    assert st["state"] == "finished", st.get("error")
    front = learned_front(rid, 3, lake, split="test")
    assert len(front) == 3 and "task_1/mse" in front
    assert [j.kind for j in worker.launched_jobs] == ["cosmos"]

    big = submit_cosmos(BIG, None, lake)
    _kill_and_check(lake, [big], "COSMOS trainer")
