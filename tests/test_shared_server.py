"""Several people on one server: every run submitted from a browser session carries that session's
user as its owner; everyone sees every run but only the owner may cancel (or delete) it, in the
UI and in the query layer; a per-user limit on queued runs refuses more with a clear message
(engine, CLI and dashboard); the worker serves owners round robin."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lake_factory import app_lake, make_lake

from dashboard.identity import clean, owns
from engine import cli, jobs
from engine.jobs import NotOwnerError, QueueLimitError, Worker, cancel, submit, submit_many
from engine.store import Lake

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
LIMIT_ENV = "SEESAW_MAX_QUEUED_PER_USER"


def cfg(owner: str, **over: Any) -> dict[str, Any]:
    return {"name": "job", "dataset": "synthetic-correlation", "epochs": 1, "owner": owner, **over}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared-template")
    make_lake(root, n_runs=6, running=1)  # owner "factory" everywhere
    return root


@pytest.fixture
def seeded(tmp_path: Path, seeded_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return app_lake(monkeypatch, tmp_path / "seeded", seeded_template)


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return app_lake(monkeypatch, tmp_path / "empty")


def _open(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _qp(at: AppTest, key: str) -> str:
    v = at.query_params.get(key, "")
    return v[-1] if isinstance(v, list) else str(v)


def _texts(at: AppTest) -> str:
    kinds = ("error", "warning", "info", "success", "caption")
    return "\n".join(str(e.value) for k in kinds for e in at.get(k))


# ---- identity and owner stamping ----------------------------------------------------------------


def test_clean_names_and_ownership_rule() -> None:
    assert clean("  Ada   Lovelace <script> ") == "Ada Lovelace script"
    assert clean("x" * 80) == "x" * 40
    assert owns("alice", "alice") and not owns("alice", "bob")
    assert owns("", "bob") and owns(None, "bob")  # runs from before owners: anyone


def test_launch_stamps_the_session_user_as_owner(empty: Path) -> None:
    at = _open("launch", user="alice")
    at.number_input(key="launch_epochs").set_value(1).run()
    at.button(key="launch_run").click().run()
    assert not at.exception
    (rid,) = Lake(empty).run_ids()
    assert Lake(empty).config(rid)["owner"] == "alice"  # not the page's placeholder "dashboard"
    # the name typed in the sidebar replaces it and stays in the URL
    at.text_input(key="identity_name").input("Bob Smith").run()
    assert _qp(at, "user") == "Bob Smith"
    at.button(key="launch_run").click().run()
    owners = sorted(Lake(empty).config(r)["owner"] for r in Lake(empty).run_ids())
    assert owners == ["Bob Smith", "alice"]


def test_anonymous_sessions_get_a_random_owner(empty: Path) -> None:
    at = _open("home")
    user = _qp(at, "user")
    assert user.startswith("anon-") and len(user) == len("anon-") + 6
    at.button(key="preset:negative-transfer").click().run()
    assert not at.exception
    owners = {Lake(empty).config(r)["owner"] for r in Lake(empty).run_ids()}
    assert owners == {user}
    other = _open("home")
    assert _qp(other, "user").startswith("anon-") and _qp(other, "user") != user


# ---- cancel only your own --------------------------------------------------------------------------


def _running(root: Path) -> str:
    runs = Lake(root).runs()
    return str(runs.loc[runs["status"] == "running", "run_id"].item())


def test_live_cancel_refused_for_someone_elses_run(seeded: Path) -> None:
    rid = _running(seeded)
    at = _open("live", runs=rid, user="mallory")
    button = at.button(key=f"cancel:{rid}")
    assert button.disabled
    assert "Only factory can cancel this run" in str(button.help) and "you are mallory" in str(button.help)
    with pytest.raises(Exception, match="disabled"):
        button.click().run()
    assert not (Lake(seeded).run_dir(rid) / "cancel").exists()


def test_live_cancel_allowed_for_your_own_run(seeded: Path) -> None:
    rid = _running(seeded)
    at = _open("live", runs=rid, user="factory")
    button = at.button(key=f"cancel:{rid}")
    assert not button.disabled
    button.click().run()
    assert not at.exception
    assert (Lake(seeded).run_dir(rid) / "cancel").exists()


def test_runs_page_cancel_and_delete_only_your_own(seeded: Path) -> None:
    lake = Lake(seeded)
    rid = _running(seeded)
    finished = lake.runs().query("status == 'finished'")["run_id"].iloc[0]
    at = _open("runs", runs=f"{rid},{finished}", user="mallory")
    btn = at.button(key="runs_cancel")
    assert btn.disabled and "Only their owners can cancel" in str(btn.help)
    at.button(key="runs_delete").click().run()  # the popover's delete: refused per run
    assert not at.exception
    assert finished in lake.run_ids()
    assert any("belongs to factory; only they can delete it" in str(e.value) for e in at.error)

    at = _open("runs", runs=rid, user="factory")
    btn = at.button(key="runs_cancel")
    assert not btn.disabled and btn.label == "Cancel 1 of mine"
    btn.click().run()
    assert not at.exception
    assert (lake.run_dir(rid) / "cancel").exists()


def test_engine_cancel_checks_the_owner(lake: Lake) -> None:
    rid = submit(cfg("alice"), lake)
    with pytest.raises(NotOwnerError, match="belongs to alice"):
        cancel(rid, lake, by="bob")
    assert lake.status(rid)["state"] == "queued"
    assert "cancelled queued run" in cancel(rid, lake, by="alice")
    assert lake.status(rid)["state"] == "cancelled"
    # the CLI (whoever runs the server) passes no user and may cancel anything
    other = submit(cfg("carol"), lake)
    assert "cancelled" in cancel(other, lake)
    # runs without an owner: anyone
    anon = submit(cfg(""), lake)
    assert "cancelled" in cancel(anon, lake, by="bob")


# ---- the per-user queue limit ----------------------------------------------------------------------


def test_queue_limit_per_user(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMIT_ENV, "2")
    a1, _a2 = submit(cfg("alice"), lake), submit(cfg("alice"), lake)
    with pytest.raises(QueueLimitError) as err:
        submit(cfg("alice"), lake)
    assert str(err.value) == (
        "you already have 2 runs queued; the limit is 2 per user — wait for some to start, or cancel some"
    )
    submit(cfg("bob"), lake)  # other users are not affected
    # a batch is all or nothing
    with pytest.raises(QueueLimitError, match="asked for 2 more"):
        submit_many([cfg("bob"), cfg("bob")], lake)
    assert len(jobs.queued_runs(lake, "bob")) == 1
    # a run that leaves the queue frees a place
    cancel(a1, lake)
    submit(cfg("alice"), lake)
    assert len(jobs.queued_runs(lake, "alice")) == 2
    with pytest.raises(QueueLimitError, match="3 runs at once is more than the limit of 2"):
        submit_many([cfg("carol")] * 3, lake)
    monkeypatch.setenv(LIMIT_ENV, "0")  # 0 = no limit
    submit_many([cfg("alice")] * 3, lake)
    monkeypatch.delenv(LIMIT_ENV)
    assert jobs.max_queued_per_user() == 20


def test_cli_shows_the_queue_limit_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "1")
    monkeypatch.setenv("USER", "dana")
    home = str(tmp_path / "cli-lake")
    argv = ["--home", home, "submit", "--dataset", "synthetic-correlation", "--epochs", "1"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "you already have 1 run queued; the limit is 1 per user" in err and "'dana'" in err


def test_dashboard_shows_the_queue_limit_message(empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMIT_ENV, "1")
    submit(cfg("erin"), Lake(empty))
    at = _open("launch", user="erin")
    at.number_input(key="launch_epochs").set_value(1).run()
    at.button(key="launch_run").click().run()
    assert not at.exception
    assert any("the limit is 1 per user" in str(e.value) for e in at.error)
    assert len(Lake(empty).run_ids()) == 1
    # someone else may still queue
    at = _open("launch", user="frank")
    at.number_input(key="launch_epochs").set_value(1).run()
    at.button(key="launch_run").click().run()
    assert len(Lake(empty).run_ids()) == 2 and "Queued 1 run" in _texts(at)


# ---- round robin ----------------------------------------------------------------------------------


def test_worker_serves_owners_round_robin(lake: Lake) -> None:
    """Alice queues five runs before Bob queues two and Carol one: with one slot, the worker
    alternates between owners (oldest run first within an owner) instead of draining Alice."""
    alice = [submit(cfg("alice"), lake) for _ in range(5)]
    bob = [submit(cfg("bob"), lake) for _ in range(2)]
    carol = [submit(cfg("carol"), lake)]
    everyone = alice + bob + carol
    worker = Worker(
        lake, max_parallel=1, poll=0.01, trainer_argv=lambda root, rid: ["true", rid], compact=False
    )
    with worker:
        deadline = time.monotonic() + 60
        while len(worker.launched) < len(everyone) or worker.running:
            assert time.monotonic() < deadline, f"only launched {worker.launched}"
            worker.run_once()
            time.sleep(0.01)
    assert worker.launched == [alice[0], bob[0], carol[0], alice[1], bob[1], alice[2], alice[3], alice[4]]
    # at no time did one owner hold two turns while another waited
    owners = [lake.config(r)["owner"] for r in worker.launched]
    assert owners[:6] == ["alice", "bob", "carol", "alice", "bob", "alice"]
