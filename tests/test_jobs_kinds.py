"""Population sweeps and COSMOS trainings as jobs of the worker (engine.jobs.submit_job): queued
like runs (per-user limit, round robin, cancel), one trainer process per job that the worker
starts and watches, and a killed trainer fails its runs with the signal in the reason while
every flushed row stays. tests/fake_trainer.py stands in for the trainers (several run ids: a
population); tests/test_jobs_real.py runs the real `_sweep` and `_cosmos` trainers."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_jobs import FAKE, cfg, ended, running, state, trainer_started, wait_for

from engine import jobs
from engine.jobs import (
    JOB_FILE,
    Job,
    QueueLimitError,
    Worker,
    cancel,
    default_job_argv,
    job_of,
    submit,
    submit_job,
    worker_status,
)
from engine.recorder import TABLES, parse_segment, read_json_dict
from engine.store import Lake


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def fake_jobs(*args: str) -> Callable[[Path, Job], list[str]]:
    """job_argv running the fake trainer over every run of the job (one process per job)."""
    return lambda root, job: [sys.executable, FAKE, str(root), *job.run_ids, *args]


def population(lake: Lake, n: int = 3, owner: str = "", group: str = "sw-test-000001") -> list[str]:
    return submit_job("population", [cfg(owner, seed=i) for i in range(n)], lake, group=group)


def cosmos_job(lake: Lake, owner: str = "") -> str:
    return submit_job("cosmos", [cfg(owner)], lake, files={"cosmos.json": {"alpha": 1.0}})[0]


def pids(lake: Lake, ids: list[str]) -> set[Any]:
    return {lake.status(r).get("pid") for r in ids}


def assert_whole_segments(lake: Lake, rid: str) -> None:
    for table in TABLES:
        folder = lake.run_dir(rid) / table
        if not folder.exists():
            continue
        for name in os.listdir(folder):
            if parse_segment(name) is not None:
                pq.read_table(folder / name)  # every visible segment is a whole Parquet file


# ---- submitting ---------------------------------------------------------------------------------


def test_a_job_is_queued_runs_with_their_job_file(lake: Lake) -> None:
    seen: list[list[str]] = []
    ids = submit_job(
        "population", [cfg(seed=s) for s in (0, 1)], lake, group="sw-a-1", prepare=lambda r: seen.append(r)
    )
    assert seen == [ids]
    for rid in ids:
        assert state(lake, rid) == "queued" and not (lake.run_dir(rid) / "claim").exists()
        assert read_json_dict(lake.run_dir(rid) / JOB_FILE)["members"] == ids
        assert job_of(lake, rid) == Job("population", "sw-a-1", tuple(ids))
    cid = cosmos_job(lake)
    assert job_of(lake, cid) == Job("cosmos", cid, (cid,))
    assert read_json_dict(lake.run_dir(cid) / "cosmos.json") == {"alpha": 1.0}
    plain = submit(cfg(), lake)
    assert job_of(lake, plain) == Job("run", plain, (plain,))
    # the trainer commands the worker runs for each kind
    root = lake.root
    assert default_job_argv(root, job_of(lake, ids[0]))[3:] == [
        "_sweep",
        "--home",
        str(root),
        "sw-a-1",
        "--runs",
        ",".join(ids),
    ]
    assert default_job_argv(root, job_of(lake, cid))[3:] == ["_cosmos", "--home", str(root), cid]
    assert default_job_argv(root, job_of(lake, plain))[3] == "_train"
    for bad in (
        lambda: submit_job("spiral", [cfg()], lake),
        lambda: submit_job("cosmos", [cfg(), cfg()], lake),
        lambda: submit_job("population", [cfg()], lake, group="../x"),
        lambda: submit_job("cosmos", [cfg()], lake, files={"status.json": {}}),
    ):
        with pytest.raises(ValueError):
            bad()


def test_every_member_counts_against_the_per_user_limit(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jobs.MAX_QUEUED_ENV, "4")
    submit(cfg("alice"), lake)
    submit(cfg("alice"), lake)
    with pytest.raises(QueueLimitError, match="you already have 2 runs queued and asked for 3 more"):
        population(lake, 3, owner="alice")
    assert len(lake.run_ids()) == 2, "all or nothing"
    population(lake, 2, owner="alice")
    with pytest.raises(QueueLimitError):
        cosmos_job(lake, owner="alice")
    cosmos_job(lake, owner="bob")  # the limit is per user
    assert len(lake.run_ids()) == 5


# ---- the worker runs them -------------------------------------------------------------------------


def test_a_population_is_one_trainer_process_in_one_slot(lake: Lake) -> None:
    members = population(lake, 3)
    cid = cosmos_job(lake)
    plain = submit(cfg(), lake)
    worker = Worker(lake, max_parallel=2, poll=0.05, job_argv=fake_jobs("--rows", "40", "--sleep", "0.02"))
    with running(worker):
        wait_for(lambda: all(trainer_started(lake, r) for r in members), what="the population to start")
        info = worker_status(lake)
        assert info is not None
        kinds = [j["kind"] for j in info["jobs"]]
        assert kinds[0] == "population" and len(kinds) <= 2, "a population takes one slot"
        assert set(info["jobs"][0]["runs"]) == set(members)
        assert len(pids(lake, members)) == 1, "one process trains every member"
        everyone = [*members, cid, plain]
        wait_for(lambda: all(ended(lake, r) for r in everyone), timeout=60, what="every job to end")
    assert [state(lake, r) for r in everyone] == ["finished"] * 5
    assert [j.kind for j in worker.launched_jobs] == ["population", "cosmos", "run"]
    assert worker.launched_jobs[0] == Job("population", "sw-test-000001", tuple(members))
    assert lake.metrics(members, split="train").groupby("run_id").size().to_dict() == dict.fromkeys(
        members, 40
    )
    assert (lake.root / jobs.JOBS_DIR / "sw-test-000001.log").exists()
    assert (lake.run_dir(cid) / "trainer.log").exists()


@pytest.mark.parametrize("kind", ["population", "cosmos"])
def test_sigkill_of_a_job_trainer_fails_its_runs_and_keeps_flushed_rows(lake: Lake, kind: str) -> None:
    ids = population(lake, 2) if kind == "population" else [cosmos_job(lake)]
    worker = Worker(
        lake, max_parallel=1, poll=0.05, job_argv=fake_jobs("--rows", "100000", "--sleep", "0.005")
    )
    with running(worker):
        wait_for(lambda: all(trainer_started(lake, r) for r in ids), what="the trainer to start")
        wait_for(lambda: all(len(lake.metrics([r])) >= 40 for r in ids), what="some rows")
        before = {r: len(lake.metrics([r])) for r in ids}
        (pid,) = pids(lake, ids)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: all(ended(lake, r) for r in ids), timeout=10, what="the runs to be marked failed")
        assert time.monotonic() - killed < 5, "noticed within seconds"
    who = "population trainer" if kind == "population" else "COSMOS trainer"
    for rid in ids:
        st = lake.status(rid)
        assert st["state"] == "failed"
        assert st["error"].startswith(f"{who} killed by signal 9 (SIGKILL)"), st["error"]
        if kind == "population":
            assert "trained 2 runs together" in st["error"]
        df = lake.metrics([rid])
        assert len(df) >= before[rid], "rows flushed before the kill are still there"
        assert df["step"].tolist() == list(range(len(df))), "no hole, no duplicate"
        assert_whole_segments(lake, rid)


def test_exit_code_and_log_tail_of_a_population(lake: Lake) -> None:
    ids = population(lake, 2)
    worker = Worker(lake, max_parallel=1, poll=0.05, job_argv=fake_jobs("--rows", "3", "--exit-code", "4"))
    with running(worker):
        wait_for(lambda: all(ended(lake, r) for r in ids), timeout=20, what="the runs to end")
    for rid in ids:
        err = lake.status(rid)["error"]
        assert err.startswith("population trainer exited with code 4")
        assert "fake trainer exiting with code 4" in err and "sw-test-000001.log" in err


def test_round_robin_counts_a_population_as_one_turn(lake: Lake) -> None:
    alice_pop = population(lake, 3, owner="alice")
    alice_run = submit(cfg("alice"), lake)
    bob_run = submit(cfg("bob"), lake)
    carol_cosmos = cosmos_job(lake, owner="carol")
    worker = Worker(lake, max_parallel=1, poll=0.05, job_argv=fake_jobs("--rows", "1", "--sleep", "0"))
    everyone = [*alice_pop, alice_run, bob_run, carol_cosmos]
    with running(worker):
        wait_for(lambda: all(ended(lake, r) for r in everyone), timeout=60, what="every job to end")
    assert [j.key for j in worker.launched_jobs] == ["sw-test-000001", bob_run, carol_cosmos, alice_run]
    assert all(state(lake, r) == "finished" for r in everyone)


def test_a_cancelled_queued_member_is_left_out_of_its_population(lake: Lake) -> None:
    ids = population(lake, 3)
    assert "cancelled queued run" in cancel(ids[1], lake)
    worker = Worker(lake, max_parallel=1, poll=0.05, job_argv=fake_jobs("--rows", "5"))
    with running(worker):
        wait_for(lambda: all(ended(lake, r) for r in ids), timeout=30, what="the population to end")
    assert [state(lake, r) for r in ids] == ["finished", "cancelled", "finished"]
    assert worker.launched_jobs == [Job("population", "sw-test-000001", (ids[0], ids[2]))]


def test_cancelling_one_running_member_stops_only_that_member(lake: Lake) -> None:
    ids = population(lake, 2)
    worker = Worker(lake, max_parallel=1, poll=0.05, job_argv=fake_jobs("--rows", "300", "--sleep", "0.01"))
    with running(worker):
        wait_for(lambda: all(trainer_started(lake, r) for r in ids), what="the population to start")
        assert "requested" in cancel(ids[0], lake)
        wait_for(lambda: all(ended(lake, r) for r in ids), timeout=30, what="the population to end")
    assert [state(lake, r) for r in ids] == ["cancelled", "finished"]


def test_a_population_that_ignores_every_cancel_gets_sigterm(lake: Lake) -> None:
    ids = population(lake, 2)
    worker = Worker(
        lake,
        max_parallel=1,
        poll=0.05,
        job_argv=fake_jobs("--rows", "100000", "--sleep", "0.01", "--ignore-cancel"),
        cancel_grace=0.5,
    )
    with running(worker):
        wait_for(lambda: all(trainer_started(lake, r) for r in ids), what="the population to start")
        cancel(ids[0], lake)
        time.sleep(1.0)
        assert not any(ended(lake, r) for r in ids), "one member's cancel does not stop the others"
        cancel(ids[1], lake)
        wait_for(lambda: all(ended(lake, r) for r in ids), timeout=10, what="SIGTERM after the grace period")
    for rid in ids:
        st = lake.status(rid)
        assert st["state"] == "cancelled" and "SIGTERM" in st["error"], st["error"]


def test_a_restarted_worker_adopts_a_population_and_fails_it_when_it_dies(lake: Lake) -> None:
    ids = population(lake, 2)
    first = Worker(lake, max_parallel=1, poll=0.05, job_argv=fake_jobs("--rows", "100000", "--sleep", "0.01"))
    t = threading.Thread(target=first.run_forever, daemon=True)
    t.start()
    try:
        wait_for(lambda: all(trainer_started(lake, r) for r in ids), what="the population to start")
        first.stop()  # the worker goes away; its trainer keeps running
        t.join(timeout=30)
        (pid,) = pids(lake, ids)
        second = Worker(lake, max_parallel=1, poll=0.05, job_argv=fake_jobs())
        plain = submit(cfg(), lake)
        with running(second):
            wait_for(lambda: set(ids) <= set(second.running), what="the population to be adopted")
            info = worker_status(lake)
            assert info is not None and [j["key"] for j in info["jobs"]] == ["sw-test-000001"]
            time.sleep(0.5)
            assert state(lake, plain) == "queued", "the adopted population holds the only slot"
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: all(ended(lake, r) for r in ids), timeout=10, what="the adopted runs to fail")
            for rid in ids:
                st = lake.status(rid)
                assert st["state"] == "failed" and "population trainer no longer alive" in st["error"]
            wait_for(lambda: ended(lake, plain), timeout=30, what="the queue to go on")
    finally:
        for child in first._children.values():  # reap the first worker's child (same process)
            if child.popen is not None:
                child.popen.wait(timeout=30)


def test_cli_queues_a_population_sweep_and_a_cosmos_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    home = tmp_path / "lake"
    data = [
        "--dataset",
        "synthetic-correlation",
        "--dataset-param",
        "n_samples=400",
        "--dataset-param",
        "dim=4",
    ]
    assert main(["--home", str(home), "sweep", *data, "--k", "3", "--queue"]) == 0
    assert "3 runs queued for the worker as one population job" in capsys.readouterr().out
    lake = Lake(home)
    members = lake.run_ids()
    assert len(members) == 3 and {job_of(lake, r).kind for r in members} == {"population"}
    assert {state(lake, r) for r in members} == {"queued"}
    assert main(["--home", str(home), "cosmos", *data, "--lam", "0.1", "--queue"]) == 0
    (rid,) = set(lake.run_ids()) - set(members)
    assert capsys.readouterr().out.strip() == rid
    assert (
        job_of(lake, rid).kind == "cosmos" and read_json_dict(lake.run_dir(rid) / "cosmos.json")["lam"] == 0.1
    )
