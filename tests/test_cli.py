"""The command line as a user types it: run, ls, show, submit + worker, cancel, export, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from engine.store import Lake

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--dataset",
    "synthetic-correlation",
    "--dataset-param",
    "n_samples=500",
    "--dataset-param",
    "dim=8",
    "--threads",
    "1",
]


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEESAW_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_ls_show_and_export(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    r = cli(home, "run", *TINY, "--arch", "mmoe", "--balancer", "pcgrad", "--epochs", "2", "--name", "first")
    assert r.returncode == 0, r.stderr
    assert "finished" in r.stdout and "test task_1:" in r.stdout
    run_id = Lake(home).run_ids()[0]
    assert "100%" in r.stderr  # the progress bar went to stderr

    ls = cli(home, "ls")
    assert ls.returncode == 0 and run_id in ls.stdout and "finished" in ls.stdout and "pcgrad" in ls.stdout

    show = cli(home, "show", run_id, "--json")
    info = json.loads(show.stdout)
    assert info["config"]["arch"] == "mmoe" and info["status"]["state"] == "finished"
    assert set(info["status"]["summary"]) == {"task_1", "task_2"}

    out = tmp_path / "lake.duckdb"
    exp = cli(home, "export-duckdb", str(out))
    assert exp.returncode == 0, exp.stderr
    con = duckdb.connect(str(out), read_only=True)
    n_metrics = con.execute("select count(*) from metrics where run_id = ?", [run_id]).fetchone()[0]
    n_grad = con.execute("select count(*) from grad_stats").fetchone()[0]
    con.close()
    assert n_metrics == len(Lake(home).metrics([run_id])) > 0
    assert n_grad > 0


def test_bad_values_exit_2_with_a_message(tmp_path: Path) -> None:
    r = cli(tmp_path, "run", *TINY, "--arch", "mmoe", "--epochs", "0")
    assert r.returncode == 2
    assert "epochs" in r.stderr and "greater than or equal to 1" in r.stderr
    r = cli(tmp_path, "run", *TINY, "--balancer", "pcgrad", "--weights", "task_1=abc")
    assert r.returncode == 2 and "not a number" in r.stderr
    r = cli(tmp_path, "run", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_config_file_and_flag_override(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "dataset: synthetic-correlation\n"
        "dataset_params: {n_samples: 400, dim: 8}\n"
        "arch: shared-bottom\nbalancer: fixed\n"
        "balancer_params: {weights: {task_1: 0.8, task_2: 0.2}}\n"
        "epochs: 3\nthreads: 1\n"
    )
    r = cli(tmp_path / "lake", "run", "--config", str(cfg), "--epochs", "1")
    assert r.returncode == 0, r.stderr
    lake = Lake(tmp_path / "lake")
    (run_id,) = lake.run_ids()
    assert lake.config(run_id)["epochs"] == 1
    w = lake.task_weights([run_id])
    assert sorted(w.groupby("task")["weight"].first().round(6).to_dict().items()) == [
        ("task_1", 0.8),
        ("task_2", 0.2),
    ]


@pytest.mark.slow
def test_submit_then_worker_runs_it_and_cancel(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    sub = cli(home, "submit", *TINY, "--arch", "mmoe", "--epochs", "1")
    assert sub.returncode == 0, sub.stderr
    run_id = sub.stdout.strip()
    assert "no worker is running" in sub.stderr
    queued = cli(home, "submit", *TINY, "--arch", "mmoe", "--epochs", "1")
    second = queued.stdout.strip()
    assert "cancelled" in cli(home, "cancel", second).stdout

    env = {**os.environ, "SEESAW_HOME": str(home)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lake = Lake(home)
        deadline = time.time() + 90
        while time.time() < deadline and lake.status(run_id).get("state") not in ("finished", "failed"):
            time.sleep(0.5)
        assert lake.status(run_id)["state"] == "finished", lake.status(run_id)
        assert lake.status(second)["state"] == "cancelled"
    finally:
        worker.terminate()
        worker.wait(timeout=20)
