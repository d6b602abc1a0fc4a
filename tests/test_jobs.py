"""The queue and the worker, with tests/fake_trainer.py standing in for the real trainer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from engine import jobs
from engine.jobs import (
    Worker,
    WorkerAlreadyRunning,
    cancel,
    describe_exit,
    ensure_worker,
    submit,
    worker_status,
)
from engine.recorder import TABLES, TERMINAL_STATES, parse_segment
from engine.store import Lake

REPO = Path(__file__).resolve().parent.parent
FAKE = str(REPO / "tests" / "fake_trainer.py")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def fake(*args: str) -> Callable[[Path, str], list[str]]:
    """trainer_argv running the fake trainer with extra arguments."""
    return lambda root, rid: [sys.executable, FAKE, str(root), rid, *args]


def cfg(owner: str = "", **over: Any) -> dict[str, Any]:
    return {"name": "job", "dataset": "synthetic-correlation", "epochs": 1, "owner": owner, **over}


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `pred` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run `worker.run_forever()` in a thread; stop it and its trainers afterwards."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run_forever()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    try:
        wait_for(lambda: worker_status(worker.lake) is not None or errors, what="the worker lock")
        if errors:
            raise errors[0]
        yield worker
    finally:
        worker.stop(terminate_trainers=True)
        t.join(timeout=30)
    if errors:
        raise errors[0]


def state(lake: Lake, rid: str) -> str:
    return lake.status(rid).get("state", "")


def ended(lake: Lake, rid: str) -> bool:
    return state(lake, rid) in TERMINAL_STATES


def trainer_started(lake: Lake, rid: str) -> bool:
    st = lake.status(rid)
    return st.get("state") == "running" and bool(st.get("started")) and bool(st.get("pid"))


# --------------------------------------------------------------------------------------------


def test_worker_runs_queued_runs_up_to_max_parallel(lake: Lake) -> None:
    ids = [submit(cfg(), lake) for _ in range(5)]
    worker = Worker(lake, max_parallel=2, poll=0.05, trainer_argv=fake("--rows", "30", "--sleep", "0.02"))
    max_running = 0
    pids: set[int] = set()
    with running(worker):

        def all_done() -> bool:
            nonlocal max_running
            states = [lake.status(r) for r in ids]
            max_running = max(max_running, sum(s.get("state") == "running" for s in states))
            pids.update(s["pid"] for s in states if s.get("pid"))
            info = worker_status(lake)
            assert info is None or len(info["running"]) <= 2
            return all(s.get("state") in TERMINAL_STATES for s in states)

        wait_for(all_done, timeout=60, what="all runs to end")
        # the worker reaps every child: no zombie left behind
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), what="children reaped")
        # ended runs are compacted by the worker
        wait_for(
            lambda: all(len(os.listdir(lake.run_dir(r) / "metrics")) == 1 for r in ids), what="compaction"
        )
    assert max_running == 2, "two trainers at a time, never more"
    assert [state(lake, r) for r in ids] == ["finished"] * 5
    assert sorted(worker.launched) == sorted(ids) and worker.launched[:2] == ids[:2]  # oldest first
    assert lake.metrics(split="train").groupby("run_id").size().to_dict() == dict.fromkeys(ids, 30)
    assert len(lake.final_metrics()) == 10
    assert (lake.run_dir(ids[0]) / "trainer.log").exists()


def test_claim_is_exclusive(lake: Lake) -> None:
    ids = [submit(cfg(), lake) for _ in range(10)]
    n_threads = 6
    barrier = threading.Barrier(n_threads)
    wins: list[list[str]] = [[] for _ in range(n_threads)]

    def claimer(k: int) -> None:
        barrier.wait()
        for rid in ids:
            if lake.claim(rid, by=f"claimer-{k}"):
                wins[k].append(rid)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_wins = [rid for w in wins for rid in w]
    assert sorted(all_wins) == sorted(ids), "every run claimed exactly once"
    # a run claimed by someone alive is never started by a worker
    worker = Worker(lake, max_parallel=4, poll=0.05, trainer_argv=fake())
    try:
        worker.run_once()
        assert worker.launched == []
    finally:
        worker.close()


def test_sigkill_marks_failed_and_keeps_flushed_rows(lake: Lake) -> None:
    rid = submit(cfg(), lake)
    worker = Worker(
        lake, max_parallel=1, poll=0.05, trainer_argv=fake("--rows", "100000", "--sleep", "0.005")
    )
    with running(worker):
        wait_for(lambda: trainer_started(lake, rid), what="the trainer to start")
        wait_for(lambda: len(lake.metrics([rid])) >= 40, what="some rows")
        before = len(lake.metrics([rid]))
        os.kill(lake.status(rid)["pid"], signal.SIGKILL)
        wait_for(lambda: ended(lake, rid), timeout=10, what="the run to be marked failed")
        st = lake.status(rid)
        assert st["state"] == "failed"
        assert "signal 9" in st["error"] and "SIGKILL" in st["error"]
        df = lake.metrics([rid])
        assert len(df) >= before, "rows flushed before the kill are still there"
        assert df["step"].tolist() == list(range(len(df))), "no hole, no duplicate"
        for table in TABLES:
            folder = lake.run_dir(rid) / table
            if not folder.exists():
                continue
            for name in os.listdir(folder):
                if parse_segment(name) is not None:
                    pq.read_table(folder / name)  # every visible segment is a whole Parquet file
            for f in lake.files(table, [rid]):
                assert not Path(f).name.startswith(".")


def test_trainer_exit_code_and_log_tail_in_reason(lake: Lake) -> None:
    rid = submit(cfg(), lake)
    worker = Worker(lake, max_parallel=1, poll=0.05, trainer_argv=fake("--rows", "3", "--exit-code", "3"))
    with running(worker):
        wait_for(lambda: ended(lake, rid), timeout=20, what="the run to end")
    st = lake.status(rid)
    assert st["state"] == "failed"
    assert st["error"].startswith("trainer exited with code 3")
    assert "fake trainer exiting with code 3" in st["error"]
    assert describe_exit(-15) == "trainer killed by signal 15 (SIGTERM)"


def test_a_second_worker_refuses_to_start(lake: Lake) -> None:
    first = Worker(lake, max_parallel=1, poll=0.05, trainer_argv=fake())
    first.run_once()
    try:
        info = worker_status(lake)
        assert info is not None and info["pid"] == os.getpid() and info["max_parallel"] == 1
        second = Worker(lake, max_parallel=1, trainer_argv=fake())
        with pytest.raises(WorkerAlreadyRunning, match="already running"):
            second.run_once()
        # ... in another process too
        code = (
            "import sys; from engine.store import Lake; from engine.jobs import Worker\n"
            f"Worker(Lake({str(lake.root)!r}), max_parallel=1).run_forever()"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.returncode != 0 and "already running" in proc.stderr
        assert ensure_worker(lake) is False, "a live worker is not started twice"
    finally:
        first.close()
    assert worker_status(lake) is None
    second.run_once()  # the lock is free now
    second.close()


def test_cancel_a_queued_run(lake: Lake) -> None:
    rid = submit(cfg(), lake)
    msg = cancel(rid, lake)
    assert "cancelled" in msg
    assert state(lake, rid) == "cancelled"
    worker = Worker(lake, max_parallel=2, poll=0.05, trainer_argv=fake())
    try:
        worker.run_once()
        worker.run_once()
        assert worker.launched == [] and state(lake, rid) == "cancelled"
    finally:
        worker.close()
    assert "already ended" in cancel(rid, lake)


def test_cancel_a_running_run(lake: Lake) -> None:
    polite = submit(cfg(), lake)
    worker = Worker(lake, max_parallel=1, poll=0.05, trainer_argv=fake("--rows", "100000", "--sleep", "0.01"))
    with running(worker):
        wait_for(lambda: trainer_started(lake, polite), what="the trainer to start")
        assert "requested" in cancel(polite, lake)
        wait_for(lambda: ended(lake, polite), timeout=10, what="the trainer to honour the cancel")
    st = lake.status(polite)
    assert st["state"] == "cancelled" and st["error"] == "cancelled by request"


def test_cancel_of_a_trainer_that_ignores_it_ends_with_sigterm(lake: Lake) -> None:
    stubborn = submit(cfg(), lake)
    worker = Worker(
        lake,
        max_parallel=1,
        poll=0.05,
        trainer_argv=fake("--rows", "100000", "--sleep", "0.01", "--ignore-cancel"),
        cancel_grace=0.5,
    )
    with running(worker):
        wait_for(lambda: trainer_started(lake, stubborn), what="the trainer to start")
        pid = lake.status(stubborn)["pid"]
        cancel(stubborn, lake)
        wait_for(lambda: ended(lake, stubborn), timeout=10, what="SIGTERM after the grace period")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the trainer to be reaped")
    st = lake.status(stubborn)
    assert st["state"] == "cancelled" and "SIGTERM" in st["error"]


def test_restart_resumes_the_queue_and_fails_orphans(lake: Lake) -> None:
    queued = submit(cfg(), lake)
    abandoned = submit(cfg(), lake)
    assert lake.claim(abandoned, by="worker")  # claimed by a worker that died before launching
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 120
    orphan_dead = lake.create_run(cfg())
    lake.set_status(orphan_dead, state="running", pid=dead.pid, started=old, heartbeat=old, launched=old)
    orphan_stale = lake.create_run(cfg())  # pid alive (this test process) but no heartbeat for 2 min
    lake.set_status(orphan_stale, state="running", pid=os.getpid(), started=old, heartbeat=old, launched=old)

    worker = Worker(lake, max_parallel=2, poll=0.05, trainer_argv=fake("--rows", "5"))
    with running(worker):
        for rid in (orphan_dead, orphan_stale):
            wait_for(lambda rid=rid: ended(lake, rid), timeout=10, what="orphans to be failed")
            st = lake.status(rid)
            assert st["state"] == "failed"
            assert st["error"].startswith("worker restarted; trainer no longer alive")
        for rid in (queued, abandoned):
            wait_for(lambda rid=rid: ended(lake, rid), timeout=30, what="the queue to resume")
            assert state(lake, rid) == "finished"


def test_a_restarted_worker_adopts_a_live_trainer(lake: Lake) -> None:
    rid = submit(cfg(), lake)
    first = Worker(lake, max_parallel=1, poll=0.05, trainer_argv=fake("--rows", "100000", "--sleep", "0.01"))
    t = threading.Thread(target=first.run_forever, daemon=True)
    t.start()
    try:
        wait_for(lambda: trainer_started(lake, rid), what="the trainer to start")
        first.stop()  # the worker goes away; its trainer keeps running
        t.join(timeout=30)
        assert worker_status(lake) is None and state(lake, rid) == "running"
        second = Worker(lake, max_parallel=1, poll=0.05, trainer_argv=fake())
        with running(second):
            wait_for(lambda: rid in second.running, what="the live trainer to be adopted")
            n = len(lake.metrics([rid]))
            wait_for(lambda: len(lake.metrics([rid])) > n, what="the adopted trainer to go on writing")
            assert state(lake, rid) == "running" and rid in second.running
            assert "requested" in cancel(rid, lake)
            wait_for(lambda: ended(lake, rid), timeout=10, what="the adopted run to end")
            assert state(lake, rid) == "cancelled"
            wait_for(lambda: rid not in second.running, what="the adopted run to be released")
    finally:
        for child in first._children.values():  # reap the first worker's child (same process)
            if child.popen is not None:
                child.popen.wait(timeout=30)


def test_round_robin_across_owners(lake: Lake) -> None:
    alice = [submit(cfg("alice"), lake) for _ in range(4)]
    bob = [submit(cfg("bob"), lake) for _ in range(2)]
    carol = [submit(cfg("carol"), lake)]
    worker = Worker(lake, max_parallel=1, poll=0.05, trainer_argv=fake("--rows", "1", "--sleep", "0"))
    everyone = alice + bob + carol
    with running(worker):
        wait_for(lambda: all(ended(lake, r) for r in everyone), timeout=60, what="all runs to end")
    assert worker.launched == [alice[0], bob[0], carol[0], alice[1], bob[1], alice[2], alice[3]]
    assert all(state(lake, r) == "finished" for r in everyone)


def test_ensure_worker_starts_one_detached_worker_and_reaps_it(lake: Lake) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "engine", "worker", "--help"], cwd=REPO, capture_output=True, timeout=120
    )
    if probe.returncode != 0:
        pytest.skip("`python -m engine worker` is not available in this tree")
    assert ensure_worker(lake, max_parallel=1) is True
    popen = jobs._SPAWNED[str(lake.root)][0]
    try:
        info = wait_for(lambda: worker_status(lake), timeout=60, what="the spawned worker to take the lock")
        assert info["pid"] == popen.pid != os.getpid() and info["max_parallel"] == 1
        assert ensure_worker(lake) is False
        assert os.getsid(popen.pid) == popen.pid, "the worker runs in its own session"
    finally:
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGTERM)
    wait_for(lambda: worker_status(lake) is None, timeout=30, what="the worker to stop on SIGTERM")
    wait_for(lambda: popen.returncode is not None, what="the reaper thread to wait on it")
    assert popen.returncode == 0
