"""The job queue and the background worker.

A job is what one trainer process trains, recorded as queued run directories
(`Lake.create_run`):

- a plain run (`submit`, `submit_many`): one run, trained by `python -m engine _train`;
- a population (`submit_job("population", ...)`): K member runs of one weight sweep trained
  together as one batched model by `python -m engine _sweep GROUP --runs ...`;
- a COSMOS training (`submit_job("cosmos", ...)`): one preference-conditioned run trained by
  `python -m engine _cosmos RUN_ID`.

The kind is recorded in each member's `job.json` (absent for a plain run), written under the
submit lock together with the run, so the worker, which scans and claims under the same lock,
never sees a member without it. Every kind follows the same rules: the per-user limit counts
its queued runs, the owners take turns, a queued member can be cancelled alone, and a running
one stops at its next step when asked.

One worker process per lake owns scheduling: it holds an exclusive `flock` on
`<root>/_worker/worker.lock` for its lifetime, claims queued jobs with an `O_CREAT|O_EXCL`
`claim` file per run (oldest first, round-robin across owners), starts one trainer process per
job up to `max_parallel`, reaps its children, watches heartbeats, marks the runs of a dead
trainer failed with the reason (the exit code or signal), enforces cancel requests and resumes
the queue after a restart.

The trainer process owns its runs' `status.json` while it lives (engine.recorder.RunWriter); the
worker writes status only before a trainer starts and after it is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.paths import REPO_ROOT
from engine.recorder import TERMINAL_STATES, read_json_dict, write_json_atomic
from engine.store import Lake, RunNotFoundError

if TYPE_CHECKING:
    from engine.config import RunConfig

log = logging.getLogger("seesaw.worker")

HEARTBEAT_TIMEOUT = 10.0  # seconds without a heartbeat before a started trainer counts as dead
CANCEL_GRACE = 5.0  # seconds a trainer gets to honour a cancel request before SIGTERM
KILL_GRACE = 10.0  # seconds after SIGTERM before SIGKILL
STARTUP_TIMEOUT = 300.0  # seconds a launched trainer may take to call RunWriter.start
EXIT_TIMEOUT = 60.0  # seconds a trainer may linger after recording its end state
STALE_CLAIM_AGE = 30.0  # a claim on a still-queued run older than this was abandoned
LOG_TAIL_LINES = 20

TrainerArgv = Callable[[Path, str], list[str]]


class WorkerAlreadyRunning(RuntimeError):
    """Another worker holds this lake's worker lock."""


MAX_QUEUED_ENV = "SEESAW_MAX_QUEUED_PER_USER"
DEFAULT_MAX_QUEUED_PER_USER = 20


class QueueLimitError(RuntimeError):
    """The submitting user already has as many queued runs as the per-user limit allows."""

    def __init__(self, owner: str, queued: int, limit: int, adding: int = 1) -> None:
        self.owner, self.queued, self.limit, self.adding = owner, queued, limit, adding
        if adding > limit:
            msg = (
                f"{adding} runs at once is more than the limit of {limit} queued runs per user — "
                "queue fewer at a time"
            )
        else:
            more = f" and asked for {adding} more" if adding > 1 else ""
            msg = (
                f"you already have {queued} run{'s' if queued != 1 else ''} queued{more}; the limit is "
                f"{limit} per user — wait for some to start, or cancel some"
            )
        super().__init__(msg)


class NotOwnerError(PermissionError):
    """A user asked to cancel a run that someone else submitted."""


# --------------------------------------------------------------------------------------------
# Small process helpers
# --------------------------------------------------------------------------------------------


def pid_alive(pid: Any) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        state = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3]
        return state not in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def _is_trainer_of(pid: int, run_id: str) -> bool:
    """True if process `pid` looks like a trainer of `run_id` (its command line names the run).

    Guards every signal the worker sends to a process it did not start itself (pid reuse).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return run_id.encode() in f.read()
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (trainers run in their own session)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def describe_exit(returncode: int, who: str = "trainer") -> str:
    """Human text for a child's exit status ("trainer killed by signal 9 (SIGKILL)"); `who`
    names the process ("population trainer", "COSMOS trainer")."""
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        return f"{who} killed by signal {sig} ({name})"
    if returncode == 0:
        return f"{who} exited with code 0 without recording an end state"
    return f"{who} exited with code {returncode}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 16_384) -> str:
    """The last `lines` lines of a (possibly large) text file; "" if missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _child_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["SEESAW_HOME"] = str(root)
    env["PYTHONUNBUFFERED"] = "1"
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pp if pp else "")
    if extra:
        env.update(extra)
    return env


def default_trainer_argv(root: Path, run_id: str) -> list[str]:
    """`python -m engine _train --home ROOT RUN_ID`: the trainer subprocess of one run."""
    return [sys.executable, "-m", "engine", "_train", "--home", str(root), run_id]


# --------------------------------------------------------------------------------------------
# Jobs: what one trainer process trains
# --------------------------------------------------------------------------------------------

JOB_FILE = "job.json"  # in each member run of a population / COSMOS job; absent for a plain run
JOBS_DIR = "_jobs"  # <root>/_jobs/<group>.log: the output of a population's trainer
JOB_KINDS = ("run", "population", "cosmos")
_WHO = {"run": "trainer", "population": "population trainer", "cosmos": "COSMOS trainer"}


@dataclass(frozen=True)
class Job:
    """One trainer process's work: `kind` "run", "population" or "cosmos"; `key` is the run id
    (the group id of a population); `run_ids` the runs it trains."""

    kind: str
    key: str
    run_ids: tuple[str, ...]

    @property
    def who(self) -> str:
        """The trainer's name in messages: "trainer", "population trainer", "COSMOS trainer"."""
        return _WHO.get(self.kind, "trainer")


def _safe_group(group: str) -> bool:
    return bool(group) and len(group) <= 120 and group.replace("-", "").replace("_", "").isalnum()


def job_of(lake: Lake, run_id: str) -> Job:
    """The job a run belongs to, from its `job.json` (a plain run when there is none)."""
    try:
        info = read_json_dict(lake.run_dir(run_id) / JOB_FILE)
    except (OSError, ValueError):
        info = {}
    kind = info.get("kind")
    if kind == "population":
        group = str(info.get("group") or "")
        members = tuple(
            str(m) for m in (info.get("members") or []) if isinstance(m, str) and Lake.valid_run_id(m)
        )
        if _safe_group(group) and run_id in members:
            return Job("population", group, members)
    elif kind == "cosmos":
        return Job("cosmos", run_id, (run_id,))
    return Job("run", run_id, (run_id,))


def default_job_argv(root: Path, job: Job, trainer_argv: TrainerArgv = default_trainer_argv) -> list[str]:
    """The trainer command of a job: `_train RUN_ID` (through `trainer_argv`), `_cosmos RUN_ID` or
    `_sweep GROUP --runs ID,ID,...` (the run ids on the command line also let a restarted worker
    check that a process it adopts really is their trainer)."""
    if job.kind == "population":
        return [
            sys.executable,
            "-m",
            "engine",
            "_sweep",
            "--home",
            str(root),
            job.key,
            "--runs",
            ",".join(job.run_ids),
        ]
    if job.kind == "cosmos":
        return [sys.executable, "-m", "engine", "_cosmos", "--home", str(root), job.key]
    return trainer_argv(root, job.key)


JobArgv = Callable[[Path, Job], list[str]]


def _visible_gpus() -> list[str]:
    """CUDA devices a worker may hand out, one per trainer ([] without CUDA)."""
    try:
        import torch
    except ImportError:
        return []
    try:
        if not torch.cuda.is_available():
            return []
        n = torch.cuda.device_count()
    except Exception:  # broken driver: behave as CPU-only
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        return ids[:n]
    return [str(i) for i in range(n)]


def default_max_parallel() -> int:
    """Number of CUDA GPUs if any, else half the CPU cores (at least 1)."""
    gpus = _visible_gpus()
    if gpus:
        return len(gpus)
    return max(1, (os.cpu_count() or 2) // 2)


# --------------------------------------------------------------------------------------------
# Queue operations
# --------------------------------------------------------------------------------------------


def max_queued_per_user() -> int | None:
    """The per-user limit on queued runs: $SEESAW_MAX_QUEUED_PER_USER (default 20; 0 = no limit)."""
    raw = os.environ.get(MAX_QUEUED_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_QUEUED_PER_USER
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_QUEUED_ENV} must be a whole number (0 = no limit), got {raw!r}") from None
    return limit if limit > 0 else None


def _owner_of(config: RunConfig | dict[str, Any]) -> str:
    owner = config.get("owner") if isinstance(config, dict) else getattr(config, "owner", "")
    return str(owner or "")


def queued_runs(lake: Lake, owner: str) -> list[str]:
    """Ids of the runs of `owner` that wait in the queue (not yet started)."""
    out = []
    for rid in lake.run_ids():
        try:
            if lake.status(rid).get("state") == "queued" and (lake.config(rid).get("owner") or "") == owner:
                out.append(rid)
        except (RunNotFoundError, ValueError):
            continue  # deleted under us
    return out


def check_queue_limit(lake: Lake, owner: str, adding: int = 1) -> None:
    """Raise QueueLimitError if `owner` may not queue `adding` more runs now."""
    limit = max_queued_per_user()
    if limit is None:
        return
    queued = len(queued_runs(lake, owner))
    if queued + adding > limit:
        raise QueueLimitError(owner, queued, limit, adding)


@contextlib.contextmanager
def _submit_lock(lake: Lake) -> Iterator[None]:
    """Serialise check-and-queue across processes (two submits must not both pass the limit)."""
    fd = os.open(lake.root / ".submit.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def submit(config: RunConfig | dict[str, Any], lake: Lake | None = None) -> str:
    """Queue a run; return its id. Validation is the config object's job (RunConfig).

    Raises QueueLimitError when the run's owner already has the per-user limit of queued runs.
    """
    return submit_many([config], lake)[0]


def submit_many(configs: Sequence[RunConfig | dict[str, Any]], lake: Lake | None = None) -> list[str]:
    """Queue several runs at once, all or none: the per-user limit is checked for the whole batch
    (per owner) before anything is queued."""
    lake = lake or Lake()
    with _submit_lock(lake):
        _check_limits(lake, configs)
        return [lake.create_run(c, state="queued") for c in configs]


def _check_limits(lake: Lake, configs: Sequence[RunConfig | dict[str, Any]]) -> None:
    """The per-user queue limit for a batch of new runs, per owner (call under the submit lock)."""
    adding: dict[str, int] = {}
    for c in configs:
        adding[_owner_of(c)] = adding.get(_owner_of(c), 0) + 1
    for owner, n in adding.items():
        check_queue_limit(lake, owner, n)


def submit_job(
    kind: str,
    configs: Sequence[RunConfig | dict[str, Any]],
    lake: Lake | None = None,
    *,
    group: str | None = None,
    files: dict[str, dict[str, Any]] | None = None,
    prepare: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Queue a job that one trainer process trains: a "population" (the member runs `configs`,
    trained together; `group` names it, e.g. the sweep id) or a "cosmos" training (one config).

    Like `submit_many`: all or nothing, and QueueLimitError when the owner's queued runs (each
    member counts) would pass the per-user limit. `files` (name -> JSON) are written into every
    member's directory and `prepare(run_ids)` runs before the submit lock is released, so the
    worker never sees a member without them.
    """
    if kind not in ("population", "cosmos"):
        raise ValueError(f"job kind must be 'population' or 'cosmos', got {kind!r}")
    if not configs:
        raise ValueError("a job needs at least one run")
    if kind == "cosmos" and len(configs) != 1:
        raise ValueError("a COSMOS job trains exactly one run")
    if kind == "population" and not (group and _safe_group(group)):
        raise ValueError(f"a population needs a group id of letters, digits, '-' and '_', got {group!r}")
    files = dict(files or {})
    if {"config.json", "status.json", "claim", "cancel", JOB_FILE} & set(files):
        raise ValueError(f"a job may not write {sorted(files)} into its runs")
    lake = lake or Lake()
    with _submit_lock(lake):
        _check_limits(lake, configs)
        run_ids = [lake.create_run(c, state="queued") for c in configs]
        desc = {
            "kind": kind,
            "group": group if kind == "population" else run_ids[0],
            "members": run_ids,
            "created": time.time(),
        }
        for rid in run_ids:
            rdir = lake.run_dir(rid)
            for name, data in files.items():
                write_json_atomic(rdir / name, data)
            write_json_atomic(rdir / JOB_FILE, desc)
        if prepare is not None:
            prepare(run_ids)
    return run_ids


def cancel(run_id: str, lake: Lake | None = None, by: str | None = None) -> str:
    """Cancel a run; return a message saying what happened.

    A queued run is cancelled at once (its claim is taken so no worker can start it); a running
    run gets a `cancel` file (the trainer stops at its next step; the worker sends SIGTERM after
    `CANCEL_GRACE` seconds if it does not); an ended run is left alone.

    `by`: the user asking (the dashboard passes its user; the CLI, run by whoever owns the
    server, passes none). A run with another owner raises NotOwnerError; runs without an owner
    may be cancelled by anyone.
    """
    lake = lake or Lake()
    if by is not None:
        owner = str(lake.config(run_id).get("owner") or "")
        if owner and owner != by:
            raise NotOwnerError(f"run {run_id} belongs to {owner}; only they can cancel it")
    st = lake.status(run_id)
    state = st.get("state")
    if state in TERMINAL_STATES:
        return f"run {run_id} already ended ({state}); nothing to cancel"
    if state == "queued" and lake.claim(run_id, by="cancel"):
        lake.set_status(run_id, state="cancelled", finished=time.time(), error="cancelled before it started")
        return f"cancelled queued run {run_id}"
    lake.request_cancel(run_id)
    return (
        f"cancel requested for run {run_id}; the trainer stops at its next step "
        f"(the worker terminates it after {CANCEL_GRACE:.0f} s if it does not)"
    )


# --------------------------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------------------------


@dataclass
class _Child:
    """A job this worker watches: its own subprocess, or one adopted from an earlier worker.

    `key` is the job's key (the run id, or a population's group id); `members` the runs the
    process trains (one, or a population's members)."""

    key: str
    popen: subprocess.Popen[bytes] | None
    pid: int | None
    launched: float
    gpu: str | None = None
    kind: str = "run"
    members: tuple[str, ...] = ()
    cancel_seen: dict[str, float] = field(default_factory=dict)  # member -> when its cancel was seen
    term_sent: float | None = None
    kill_sent: float | None = None
    ended_seen: float | None = None  # when status.json first showed every member ended

    def __post_init__(self) -> None:
        if not self.members:
            self.members = (self.key,)

    @property
    def run_id(self) -> str:
        """The job key (the run id of a one-run job)."""
        return self.key

    @property
    def who(self) -> str:
        return _WHO.get(self.kind, "trainer")


class Worker:
    """Schedules queued jobs of one lake onto trainer subprocesses.

    `trainer_argv(root, run_id)` builds the command of a plain run's trainer (default: `python
    -m engine _train --home ROOT RUN_ID`); `job_argv(root, job)`, when given, builds every job's
    command (default: `default_job_argv`). Use `run_forever()` in a worker process, or
    `run_once()` in a loop (tests); either takes the worker lock first and raises
    `WorkerAlreadyRunning` if another worker holds it. `stop()` ends `run_forever`; `close()`
    releases the lock.
    """

    def __init__(
        self,
        lake: Lake | None = None,
        max_parallel: int | None = None,
        poll: float = 0.5,
        trainer_argv: TrainerArgv | None = None,
        *,
        job_argv: JobArgv | None = None,
        cancel_grace: float = CANCEL_GRACE,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        compact: bool = True,
    ) -> None:
        self.lake = lake or Lake()
        self._gpus: list[str] = []
        if max_parallel is None:
            self._gpus = _visible_gpus()
            max_parallel = len(self._gpus) or default_max_parallel()
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
        self.max_parallel = int(max_parallel)
        self.poll = float(poll)
        self.trainer_argv: TrainerArgv = trainer_argv or default_trainer_argv
        self.job_argv: JobArgv | None = job_argv
        self.cancel_grace = float(cancel_grace)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.compact = compact
        self.started = time.time()
        self._children: dict[str, _Child] = {}  # job key -> child
        self._done: set[str] = set()  # run ids seen in a terminal state (terminal is final)
        self._served: dict[str, int] = {}  # owner -> tick of the last claim (round-robin)
        self._tick = 0
        self._stop = threading.Event()
        self._terminate_on_stop = False
        self._lock_fd: int | None = None
        self._compactor: ThreadPoolExecutor | None = None
        self.launched: list[str] = []  # run ids in launch order (for the CLI and tests)
        self.launched_jobs: list[Job] = []  # jobs in launch order

    # ---- paths ----------------------------------------------------------------------------

    @property
    def worker_dir(self) -> Path:
        """`<root>/_worker`."""
        return self.lake.root / "_worker"

    @property
    def running(self) -> list[str]:
        """Run ids this worker is watching now (every member of every job)."""
        return sorted(self._watched())

    def _watched(self) -> set[str]:
        return {rid for c in self._children.values() for rid in c.members}

    # ---- lock and lifecycle ---------------------------------------------------------------

    def acquire(self) -> None:
        """Take the worker lock (retrying briefly), then resume the queue.

        Raises WorkerAlreadyRunning if another worker holds the lock.
        """
        if self._lock_fd is not None:
            return
        self.worker_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.worker_dir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
        for _ in range(10):  # a `worker_status` probe holds a shared lock for microseconds
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            os.close(fd)
            info = read_json_dict(self.worker_dir / "worker.json")
            raise WorkerAlreadyRunning(
                f"another Seesaw worker (pid {info.get('pid', '?')}) is already running for "
                f"{self.lake.root}; not starting a second one"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self.started = time.time()
        self._resume()
        self._write_worker_json()

    def close(self) -> None:
        """Finish background compaction and release the worker lock (trainers keep running)."""
        if self._compactor is not None:
            self._compactor.shutdown(wait=True)
            self._compactor = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                write_json_atomic(
                    self.worker_dir / "worker.json",
                    {**self._worker_info(), "stopped": time.time(), "running": [], "jobs": []},
                )
            os.close(self._lock_fd)
            self._lock_fd = None

    def stop(self, terminate_trainers: bool = False) -> None:
        """Ask `run_forever` to return after the current loop.

        With `terminate_trainers`, running trainers get SIGTERM (then SIGKILL) and are reaped
        first; otherwise they keep running and the next worker adopts them.
        """
        self._terminate_on_stop = terminate_trainers
        self._stop.set()

    def run_forever(self) -> None:
        """Take the lock and loop (`run_once` every `poll` seconds) until `stop()` or SIGTERM."""
        self.acquire()
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, lambda *_: self.stop())
        log.info("worker %s started on %s (max_parallel=%d)", os.getpid(), self.lake.root, self.max_parallel)
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:  # one bad run directory must not kill the worker
                    log.exception("worker loop failed; continuing")
                self._stop.wait(self.poll)
            if self._terminate_on_stop:
                self.terminate_all()
        finally:
            self.close()
            log.info("worker %s stopped", os.getpid())

    def __enter__(self) -> Worker:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one loop -------------------------------------------------------------------------

    def run_once(self) -> None:
        """One scheduling pass: reap, watch, enforce cancels, claim and launch, write worker.json."""
        self.acquire()
        now = time.time()
        for child in list(self._children.values()):
            try:
                self._watch(child, now)
            except RunNotFoundError:
                self._children.pop(child.key, None)  # deleted under us
        self._claim_and_launch()
        self._write_worker_json()

    def _worker_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "root": str(self.lake.root),
            "started": self.started,
            "heartbeat": time.time(),
            "max_parallel": self.max_parallel,
            "running": self.running,
            "jobs": [
                {"kind": c.kind, "key": c.key, "runs": list(c.members), "pid": c.pid}
                for c in sorted(self._children.values(), key=lambda c: c.launched)
            ],
        }

    def _write_worker_json(self) -> None:
        write_json_atomic(self.worker_dir / "worker.json", self._worker_info())

    # ---- resume ---------------------------------------------------------------------------

    def _resume(self) -> None:
        """On start-up: requeue abandoned claims, adopt live trainers, fail dead ones."""
        now = time.time()
        for rid in self.lake.run_ids():
            try:
                st = self.lake.status(rid)
            except RunNotFoundError:
                continue
            state = st.get("state")
            if state in TERMINAL_STATES:
                self._done.add(rid)
            elif state == "running":
                if rid in self._watched():
                    continue  # adopted with its population
                ok, why = self._liveness(st, now, resuming=True)
                if ok:
                    self._adopt(rid, st)
                else:
                    self._kill_foreign(st.get("pid"), rid, signal.SIGKILL)
                    self._fail(rid, f"worker restarted; {job_of(self.lake, rid).who} no longer alive ({why})")
            elif state == "queued":
                self._handle_claimed_queued(rid, resuming=True)

    def _adopt(self, rid: str, st: dict[str, Any]) -> None:
        """Watch a running run this worker did not start (with the rest of its population)."""
        pid = st.get("pid")
        job = job_of(self.lake, rid)
        members: tuple[str, ...] = (rid,)
        if job.kind == "population":
            if job.key in self._children:  # another member already brought the population in
                child = self._children[job.key]
                if rid not in child.members:
                    child.members = (*child.members, rid)
                return
            members = tuple(r for r in job.run_ids if r == rid or self._state_of(r) == "running")
        key = job.key if job.kind != "run" else rid
        if key in self._children:
            return
        self._children[key] = _Child(
            key,
            None,
            pid if isinstance(pid, int) else None,
            float(st.get("launched") or time.time()),
            kind=job.kind,
            members=members,
        )
        log.info("adopted running %s %s (pid %s)", job.kind, key, pid)

    def _state_of(self, rid: str) -> str:
        try:
            return str(self.lake.status(rid).get("state"))
        except (RunNotFoundError, ValueError):
            return "deleted"

    def _handle_claimed_queued(self, rid: str, resuming: bool) -> None:
        """A queued run that has a claim but no trainer: requeue or finish what the claimer began."""
        try:
            info = self.lake.claim_info(rid)
        except RunNotFoundError:
            return
        if info is None:
            return
        age = time.time() - float(info.get("ts") or 0)
        by = info.get("by")
        claimer_alive = pid_alive(info.get("pid"))
        if by in ("cancel", "delete"):
            if (resuming and not claimer_alive) or age > STALE_CLAIM_AGE:
                # A cancel/delete that died between taking the claim and finishing: honour it.
                self.lake.set_status(
                    rid, state="cancelled", finished=time.time(), error=f"cancelled ({by} did not complete)"
                )
                self._done.add(rid)
        elif (by == "worker" or not claimer_alive) and (resuming or age > STALE_CLAIM_AGE):
            # We hold the worker lock, so the worker that claimed it is gone (or failed
            # mid-launch); a claim of unknown origin whose process is dead is abandoned too.
            # (A claim held by some other live process is left alone.)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lake.run_dir(rid) / "claim")
            log.info("requeued run %s (abandoned claim)", rid)

    # ---- watching children ----------------------------------------------------------------

    def _liveness(
        self, st: dict[str, Any], now: float, resuming: bool = False, check_pid: bool = True
    ) -> tuple[bool, str]:
        """(alive, reason if not) for a run marked running, from its pid and heartbeat.

        `check_pid=False` for our own children, whose exit `Popen.poll` reports exactly.
        """
        pid = st.get("pid") if check_pid else None
        if st.get("started"):
            if check_pid and not pid_alive(pid):
                return False, f"pid {pid} is not alive"
            hb = st.get("heartbeat")
            age = now - float(hb) if hb else float("inf")
            if age > self.heartbeat_timeout:
                return False, f"no heartbeat for {age:.0f} s (timeout {self.heartbeat_timeout:.0f} s)"
            return True, ""
        # Launched but the trainer has not called RunWriter.start yet (imports, data loading).
        if pid is not None and not pid_alive(pid):
            return False, f"pid {pid} is not alive"
        if check_pid and pid is None and resuming and st.get("launched"):
            return False, "the previous worker died while launching it"
        ref = float(st.get("launched") or st.get("created") or now)
        if now - ref > STARTUP_TIMEOUT:
            return False, f"trainer did not start within {STARTUP_TIMEOUT:.0f} s"
        return True, ""

    def _kill_foreign(self, pid: Any, rid: str, sig: int) -> None:
        """Signal a trainer this worker did not start, only if it really is that run's trainer."""
        if isinstance(pid, int) and pid_alive(pid) and _is_trainer_of(pid, rid):
            _signal_group(pid, sig)

    def _live_members(self, child: _Child) -> dict[str, dict[str, Any]] | None:
        """Status of the members that have not ended (None when every member was deleted)."""
        live: dict[str, dict[str, Any]] = {}
        found = False
        for rid in child.members:
            try:
                st = self.lake.status(rid)
            except RunNotFoundError:
                continue
            found = True
            if st.get("state") not in TERMINAL_STATES:
                live[rid] = st
        return live if found else None

    def _watch(self, child: _Child, now: float) -> None:
        if child.popen is not None:
            rc = child.popen.poll()  # reaps: no zombies
            if rc is not None:
                self._on_exit(child, rc)
                return
        live = self._live_members(child)
        if live is None:  # deleted under us
            if child.popen is None:
                self._children.pop(child.key, None)
            return
        if not live:
            if child.popen is None:
                self._ended(child)  # an adopted trainer finished by itself
                return
            # Our own child: reaped on a later pass once the process has exited; one that hangs
            # on its way out (a stuck non-daemon thread) is killed so it does not hold a slot.
            child.ended_seen = child.ended_seen or now
            if now - child.ended_seen > EXIT_TIMEOUT and child.kill_sent is None:
                self._signal(child, signal.SIGKILL)
                child.kill_sent = now
            return
        # cancel requests: each member stops at its next step; the process is stopped by signal
        # only when every member it still trains was asked to stop and has not
        for rid in live:
            if rid not in child.cancel_seen and (self.lake.run_dir(rid) / "cancel").exists():
                child.cancel_seen[rid] = now
        if all(rid in child.cancel_seen for rid in live):
            asked = max(child.cancel_seen[rid] for rid in live)
            if child.term_sent is None and now - asked >= self.cancel_grace:
                log.info(
                    "%s %s ignored its cancel request for %.0f s: SIGTERM", child.who, child.key, now - asked
                )
                self._signal(child, signal.SIGTERM)
                child.term_sent = now
            elif (
                child.term_sent is not None
                and child.kill_sent is None
                and now - child.term_sent >= KILL_GRACE
            ):
                self._signal(child, signal.SIGKILL)
                child.kill_sent = now
        if child.popen is None:
            for rid, st in live.items():
                ok, why = self._liveness(st, now)
                if ok:
                    continue
                self._kill_foreign(child.pid, rid, signal.SIGKILL)
                for other in child.members:
                    if self._state_of(other) in TERMINAL_STATES or self._state_of(other) == "deleted":
                        continue  # it may have just finished
                    if other in child.cancel_seen:
                        self._finalize(other, "cancelled", f"cancel requested; {child.who} gone ({why})")
                    else:
                        self._fail(other, f"{child.who} no longer alive ({why})")
                self._ended(child)
                return
            return
        # our own child, still running: is it hung?
        if child.kill_sent is not None or child.term_sent is not None:
            return
        for st in live.values():
            ok, why = self._liveness(st, now, check_pid=False)
            if ok:
                continue
            log.warning("%s %s: %s; killing it", child.who, child.key, why)
            self._signal(child, signal.SIGKILL)
            child.kill_sent = now
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)
            for rid in live:
                self._fail(rid, f"{child.who} killed by the worker: {why}")
            return

    def _signal(self, child: _Child, sig: int) -> None:
        if child.popen is not None:
            if child.popen.poll() is None:
                _signal_group(child.popen.pid, sig)
        else:
            for rid in child.members:
                if self._state_of(rid) not in TERMINAL_STATES:
                    self._kill_foreign(child.pid, rid, sig)
                    return

    def _log_path(self, job: Job) -> Path:
        if job.kind == "population":
            return self.lake.root / JOBS_DIR / f"{job.key}.log"
        return self.lake.run_dir(job.key) / "trainer.log"

    def _on_exit(self, child: _Child, rc: int) -> None:
        """Our trainer exited: record why for every member that did not record an end state."""
        live = self._live_members(child)
        if live:
            reason = describe_exit(rc, child.who)
            if child.kind == "population":
                reason += f" (it trained {len(child.members)} runs together: {', '.join(child.members)})"
            logfile = self._log_path(Job(child.kind, child.key, child.members))
            tail = log_tail(logfile)
            for rid in live:
                if rid in child.cancel_seen:
                    how = f"{child.who} stopped by the worker ({reason})" if child.term_sent else reason
                    self._finalize(rid, "cancelled", f"cancel requested; {how}")
                else:
                    msg = reason + (f"\n--- last lines of {logfile.name} ---\n{tail}" if tail else "")
                    self._fail(rid, msg)
        log.info("%s %s ended (exit %s)", child.kind, child.key, rc)
        self._ended(child)

    def _ended(self, child: _Child) -> None:
        self._children.pop(child.key, None)
        self._done.update(child.members)
        if self.compact:
            if self._compactor is None:
                self._compactor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compact")
            for rid in child.members:
                self._compactor.submit(self._compact_quietly, rid)

    def _compact_quietly(self, rid: str) -> None:
        try:
            self.lake.compact(rid)
        except RunNotFoundError:
            pass
        except Exception:
            log.exception("compacting run %s failed", rid)

    def _fail(self, rid: str, reason: str) -> None:
        self._finalize(rid, "failed", reason)

    def _finalize(self, rid: str, state: str, reason: str) -> None:
        with contextlib.suppress(RunNotFoundError):
            self.lake.set_status(rid, state=state, finished=time.time(), error=reason)
        log.info("run %s -> %s: %s", rid, state, reason.splitlines()[0] if reason else "")

    def terminate_all(self, timeout: float = 5.0) -> None:
        """SIGTERM every own trainer, SIGKILL what is left after `timeout`, reap and record them."""
        own = [c for c in self._children.values() if c.popen is not None]
        for c in own:
            self._signal(c, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in own:
            assert c.popen is not None
            try:
                c.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(c, signal.SIGKILL)
                c.popen.wait()
            self._on_exit(c, c.popen.returncode)

    # ---- claiming and launching -----------------------------------------------------------

    def _candidates(self) -> list[tuple[float, str, str, Job]]:
        """Claimable queued jobs as (created, key, owner, job with its queued members); also
        adopts stray running runs."""
        out: list[tuple[float, str, str, Job]] = []
        groups: dict[str, tuple[float, str, Job, set[str]]] = {}
        watched = self._watched()
        for rid in self.lake.run_ids():
            if rid in self._done or rid in watched:
                continue
            try:
                st = self.lake.status(rid)
                state = st.get("state")
                if state in TERMINAL_STATES:
                    self._done.add(rid)
                elif state == "running":
                    # Started elsewhere (a foreground CLI run): watch its heartbeat too.
                    self._adopt(rid, st)
                    watched = self._watched()
                elif state == "queued":
                    if (self.lake.run_dir(rid) / "claim").exists():
                        self._handle_claimed_queued(rid, resuming=False)
                        continue
                    owner = str(self.lake.config(rid).get("owner") or "")
                    created = float(st.get("created") or 0.0)
                    job = job_of(self.lake, rid)
                    if job.kind == "population":
                        if job.key in self._children:
                            continue  # a member left over while its population trains: later
                        first, own, j, queued = groups.get(job.key, (created, owner, job, set()))
                        queued.add(rid)
                        groups[job.key] = (min(first, created), own, j, queued)
                    else:
                        out.append((created, job.key, owner, job))
            except RunNotFoundError:
                continue
        for key, (created, owner, job, queued) in groups.items():
            members = tuple(r for r in job.run_ids if r in queued)
            out.append((created, key, owner, Job("population", key, members)))
        out.sort(key=lambda c: (c[0], c[1]))
        return out

    def _claim_and_launch(self) -> None:
        free = self.max_parallel - len(self._children)
        if free <= 0:
            return
        # Under the submit lock: a job's runs and their job.json appear together (submit_job).
        with _submit_lock(self.lake):
            queues: dict[str, list[tuple[float, Job]]] = {}
            for created, _key, owner, job in self._candidates():
                queues.setdefault(owner, []).append((created, job))
            free = self.max_parallel - len(self._children)  # adoption may have used slots
            while free > 0 and queues:
                # Round-robin: the owner served least recently goes next; ties -> oldest queued job.
                owner = min(queues, key=lambda o: (self._served.get(o, -1), queues[o][0][0]))
                _, job = queues[owner].pop(0)
                if not queues[owner]:
                    del queues[owner]
                claimed = tuple(r for r in job.run_ids if self._claim(r))
                if not claimed:
                    continue
                self._tick += 1
                self._served[owner] = self._tick
                if self._launch(Job(job.kind, job.key, claimed)):
                    free -= 1

    def _claim(self, rid: str) -> bool:
        try:
            return self.lake.claim(rid, by="worker")
        except RunNotFoundError:
            return False

    def _launch(self, job: Job) -> bool:
        """Start the trainer of a job whose runs we just claimed; False if it did not start."""
        members: list[str] = []
        for rid in job.run_ids:
            try:
                st = self.lake.status(rid)
            except RunNotFoundError:
                continue
            if st.get("state") != "queued":
                continue
            if (self.lake.run_dir(rid) / "cancel").exists():
                self._finalize(rid, "cancelled", "cancelled before it started")
                self._done.add(rid)
                continue
            members.append(rid)
        if not members:
            return False
        job = Job(job.kind, job.key, tuple(members))
        now = time.time()
        # Mark running *before* the process exists: a worker dying right here leaves runs the
        # next worker fails ("died while launching"), never runs that are started twice.
        for rid in members:
            self.lake.set_status(
                rid, state="running", pid=None, launched=now, heartbeat=now, worker_pid=os.getpid()
            )
        gpu = self._free_gpu()
        # Share the CPU cores between concurrent trainers instead of oversubscribing them.
        threads = max(1, (os.cpu_count() or 1) // max(1, self.max_parallel))
        extra = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpu is not None:
            extra["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            if self.job_argv is not None:
                argv = self.job_argv(self.lake.root, job)
            else:
                argv = default_job_argv(self.lake.root, job, self.trainer_argv)
            logfile = self._log_path(job)
            logfile.parent.mkdir(parents=True, exist_ok=True)
            with open(logfile, "ab") as logf:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=str(REPO_ROOT),
                    env=_child_env(self.lake.root, extra),
                )
        except (OSError, ValueError, TypeError) as e:
            for rid in members:
                self._fail(rid, f"could not start the {job.who}: {e}")
                self._done.add(rid)
            return False
        for rid in members:
            with contextlib.suppress(RunNotFoundError):
                self.lake.set_status(rid, pid=popen.pid)
        self._children[job.key] = _Child(
            job.key, popen, popen.pid, now, gpu=gpu, kind=job.kind, members=tuple(members)
        )
        self.launched.extend(members)
        self.launched_jobs.append(job)
        log.info("launched %s %s (pid %d, %d run(s))", job.kind, job.key, popen.pid, len(members))
        return True

    def _free_gpu(self) -> str | None:
        if not self._gpus:
            return None
        used = {c.gpu for c in self._children.values()}
        return next((g for g in self._gpus if g not in used), None)


# --------------------------------------------------------------------------------------------
# Worker discovery for the dashboard
# --------------------------------------------------------------------------------------------


def worker_status(lake: Lake | None = None) -> dict[str, Any] | None:
    """worker.json of the live worker (plus `heartbeat_age`), or None if no worker holds the lock.

    Liveness is tested by trying a non-blocking shared flock on the lock file.
    """
    lake = lake or Lake()
    lock = lake.root / "_worker" / "worker.lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = read_json_dict(lake.root / "_worker" / "worker.json")
            info["alive"] = True
            hb = info.get("heartbeat")
            info["heartbeat_age"] = time.time() - float(hb) if hb else None
            return info
        return None
    finally:
        os.close(fd)  # also drops the probe lock if we got it


_SPAWN_LOCK = threading.Lock()
_SPAWNED: dict[str, tuple[subprocess.Popen[bytes], float]] = {}


def ensure_worker(lake: Lake | None = None, max_parallel: int | None = None) -> bool:
    """Start a detached `python -m engine worker --home ROOT` unless one is alive; True if started.

    The child runs in its own session (it outlives the dashboard); a daemon thread waits on it so
    it never lingers as a zombie of this process.
    """
    lake = lake or Lake()
    key = str(lake.root)
    with _SPAWN_LOCK:
        if worker_status(lake) is not None:
            return False
        prev = _SPAWNED.get(key)
        if prev is not None and prev[0].poll() is None and time.time() - prev[1] < 30:
            return False  # spawned moments ago and still starting up
        argv = [sys.executable, "-m", "engine", "worker", "--home", key]
        if max_parallel is not None:
            argv += ["--max-parallel", str(int(max_parallel))]
        wdir = lake.root / "_worker"
        wdir.mkdir(parents=True, exist_ok=True)
        with open(wdir / "worker.log", "ab") as logf:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(REPO_ROOT),
                env=_child_env(lake.root),
            )
        _SPAWNED[key] = (popen, time.time())
        threading.Thread(target=popen.wait, name=f"reap-worker-{popen.pid}", daemon=True).start()
        return True
