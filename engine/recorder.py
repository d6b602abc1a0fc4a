"""Recording one run: buffered, atomic Parquet segments plus a `status.json` heartbeat.

A trainer process owns exactly one `RunWriter`. Rows are buffered in memory and written as
immutable Parquet segments, `<run_dir>/<table>/seg-<6-digit seq>.parquet`: each segment is written
to a hidden temporary name in the same folder (``.seg-....tmp``), fsynced, then `os.replace`d into
place, so a reader never sees a half-written file and a trainer killed with SIGKILL loses at most
the rows it had not flushed yet (one `flush_interval`).

`status.json` is rewritten atomically (temp file + `os.replace`) on every flush, and a daemon
thread refreshes its heartbeat every second while the run lives, so a long epoch without flushes
does not look like a dead trainer to the worker.

This module is imported by trainer processes: it needs pyarrow, never duckdb or pandas.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# --------------------------------------------------------------------------------------------
# Tables, schemas and segment names (shared with engine.store)
# --------------------------------------------------------------------------------------------

SCHEMAS: dict[str, pa.Schema] = {
    "metrics": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("epoch", pa.int64()),
            ("split", pa.string()),
            ("task", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
        ]
    ),
    "grad_stats": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("layer", pa.string()),
            ("task_i", pa.string()),
            ("task_j", pa.string()),
            ("cosine", pa.float64()),
            ("norm_i", pa.float64()),
            ("norm_j", pa.float64()),
        ]
    ),
    "task_weights": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("task", pa.string()),
            ("weight", pa.float64()),
        ]
    ),
    "balancer_stats": pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("name", pa.string()),
            ("value", pa.float64()),
        ]
    ),
    "events": pa.schema(
        [
            ("run_id", pa.string()),
            ("ts", pa.float64()),  # unix time, seconds
            ("level", pa.string()),
            ("text", pa.string()),
        ]
    ),
}
TABLES: tuple[str, ...] = tuple(SCHEMAS)

TERMINAL_STATES: frozenset[str] = frozenset({"finished", "failed", "cancelled"})
STATES: tuple[str, ...] = ("queued", "running", "finished", "failed", "cancelled")

# `seg-000012.parquet` is segment 12; `seg-000000-000042.parquet` is a compacted file that holds
# every row of segments 0..42 (see engine.store.Lake.compact).
SEGMENT_RE = re.compile(r"^seg-(\d{6})(?:-(\d{6}))?\.parquet$")

HEARTBEAT_EVERY = 1.0  # seconds between heartbeat-only rewrites of status.json


def parse_segment(name: str) -> tuple[int, int] | None:
    """Return the (first, last) segment numbers a file name covers, or None if not a segment.

    A plain segment `seg-000007.parquet` covers (7, 7); a compacted file
    `seg-000000-000042.parquet` covers (0, 42). Hidden and temporary names return None.
    """
    m = SEGMENT_RE.match(name)
    if m is None:
        return None
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    return (first, last) if last >= first else None


def segment_name(seq: int) -> str:
    """File name of plain segment number `seq`."""
    return f"seg-{seq:06d}.parquet"


def compacted_name(last: int) -> str:
    """File name of a compacted file covering segments 0..`last`."""
    return f"seg-000000-{last:06d}.parquet"


def select_segments(names: Iterable[str]) -> tuple[list[str], bool]:
    """Choose the files a reader should read from one table folder's listing.

    Returns (names, complete). The compacted file with the highest coverage wins; plain
    segments it covers (and older compacted files) are skipped, so a reader never sees a row
    twice while a compaction replaces segments. `complete` is False when the listing has a gap
    (segments must be contiguous after the compacted file); the caller may list again.
    """
    best_compacted: tuple[int, str] | None = None
    plain: list[tuple[int, str]] = []
    for name in names:
        rng = parse_segment(name)
        if rng is None:
            continue
        first, last = rng
        if first == last and not name.startswith("seg-000000-"):
            plain.append((first, name))
        elif first == 0 and (best_compacted is None or last > best_compacted[0]):
            best_compacted = (last, name)
    covered = best_compacted[0] if best_compacted else 0
    chosen = [best_compacted[1]] if best_compacted else []
    plain.sort()
    expected = covered + 1
    complete = True
    for seq, name in plain:
        if seq <= covered:
            continue
        if seq != expected:
            complete = False
        expected = seq + 1
        chosen.append(name)
    return chosen, complete


def table_to_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` atomically: hidden temp file in the same folder, fsync, rename."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


def read_json(path: Path | str, default: Any = None) -> Any:
    """Read a JSON file; return `default` if it is missing, unreadable or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_json_dict(path: Path | str) -> dict[str, Any]:
    """Read a JSON object; `{}` if the file is missing, broken or holds something else."""
    data = read_json(path, None)
    return data if isinstance(data, dict) else {}


def _json_default(obj: Any) -> Any:
    """Make numpy scalars, paths and sets JSON-serialisable."""
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _clean_floats(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the file stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean_floats(v) for v in obj]
    return obj


def write_json_atomic(path: Path | str, obj: Any, fsync: bool = False) -> None:
    """Write `obj` as JSON to `path` atomically (hidden temp file in the same folder + os.replace)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    text = json.dumps(_clean_floats(obj), indent=1, default=_json_default, allow_nan=False)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on a directory (serialises status.json read-modify-writes)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def new_status(created: float | None = None, epochs: int | None = None) -> dict[str, Any]:
    """The status.json of a freshly queued run."""
    return {
        "state": "queued",
        "pid": None,
        "created": time.time() if created is None else created,
        "started": None,
        "finished": None,
        "heartbeat": None,
        "step": 0,
        "total_steps": None,
        "epoch": 0,
        "epochs": epochs,
        "progress": 0.0,
        "error": None,
        "summary": {},
    }


# --------------------------------------------------------------------------------------------
# RunWriter
# --------------------------------------------------------------------------------------------


def _field(row: Any, name: str) -> Any:
    """Read `name` from a dict or an object with attributes."""
    if isinstance(row, Mapping):
        return row[name]
    return getattr(row, name)


def _float(x: Any) -> float | None:
    """Float or None (tensors and numpy scalars accepted)."""
    if x is None:
        return None
    if hasattr(x, "item"):
        x = x.item()
    return float(x)


class RunWriter:
    """Buffered writer of one run's tables and status (one per trainer process).

    Thread-safe: the trainer's main loop logs and flushes while a daemon thread refreshes the
    heartbeat. Typical use::

        w = RunWriter(run_dir)
        w.start(os.getpid())
        for step ...:
            w.log_metrics([...]); w.set_progress(step, total, epoch, epochs); w.maybe_flush()
            if w.cancel_requested(): w.finish("cancelled"); return
        w.finish("finished", summary={...})

    Used as a context manager, an exception escaping the block finishes the run as failed with
    the traceback as error text.
    """

    def __init__(self, run_dir: Path | str, flush_interval: float = 1.0) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self.flush_interval = float(flush_interval)
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"run directory {self.run_dir} does not exist")
        self._lock = threading.RLock()
        self._buffers: dict[str, dict[str, list[Any]]] = {t: self._empty(t) for t in TABLES}
        self._next_seq: dict[str, int] = {t: self._scan_next_seq(t) for t in TABLES}
        self._last_flush = time.monotonic()
        status = read_json_dict(self.run_dir / "status.json")
        self._status: dict[str, Any] = {**new_status(created=status.get("created")), **status}
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._finished = False

    # ---- internals ------------------------------------------------------------------------

    @staticmethod
    def _empty(table: str) -> dict[str, list[Any]]:
        return {name: [] for name in SCHEMAS[table].names}

    def _scan_next_seq(self, table: str) -> int:
        """Continue numbering after any segment already on disk (a resumed writer)."""
        top = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.run_dir / table):
                rng = parse_segment(name)
                if rng is not None:
                    top = max(top, rng[1])
        return top + 1

    def _append(self, table: str, **cols: Any) -> None:
        buf = self._buffers[table]
        buf["run_id"].append(self.run_id)
        for k, v in cols.items():
            buf[k].append(v)

    def _write_status_locked(self, heartbeat_only: bool = False) -> None:
        """Rewrite status.json from memory (caller holds self._lock)."""
        self._status["heartbeat"] = time.time()
        if heartbeat_only and self._finished:
            return
        with dir_lock(self.run_dir):
            # Keep fields other processes own (e.g. `launched` from the worker).
            on_disk = read_json_dict(self.run_dir / "status.json")
            merged = {**on_disk, **self._status}
            write_json_atomic(self.run_dir / "status.json", merged)

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(HEARTBEAT_EVERY):
            try:
                with self._lock:
                    if self._finished:
                        return
                    self._write_status_locked(heartbeat_only=True)
            except OSError:
                # The run directory may have been deleted under us; keep the trainer alive.
                continue

    # ---- logging --------------------------------------------------------------------------

    def log_metrics(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer metric rows: dicts with step, epoch, split, task, metric, value."""
        with self._lock:
            for r in rows:
                self._append(
                    "metrics",
                    step=int(r["step"]),
                    epoch=None if r.get("epoch") is None else int(r["epoch"]),
                    split=str(r["split"]),
                    task=str(r["task"]),
                    metric=str(r["metric"]),
                    value=_float(r["value"]),
                )

    def log_grad_stats(self, step: int, rows: Iterable[Any]) -> None:
        """Buffer gradient statistics: objects or dicts with layer, task_i, task_j, cosine, norm_i, norm_j."""
        with self._lock:
            for r in rows:
                self._append(
                    "grad_stats",
                    step=int(step),
                    layer=str(_field(r, "layer")),
                    task_i=str(_field(r, "task_i")),
                    task_j=str(_field(r, "task_j")),
                    cosine=_float(_field(r, "cosine")),
                    norm_i=_float(_field(r, "norm_i")),
                    norm_j=_float(_field(r, "norm_j")),
                )

    def log_task_weights(self, step: int, weights: Mapping[str, Any]) -> None:
        """Buffer the balancer's effective task weights at `step`."""
        with self._lock:
            for task, w in weights.items():
                self._append("task_weights", step=int(step), task=str(task), weight=_float(w))

    def log_balancer_stats(self, step: int, stats: Mapping[str, Any]) -> None:
        """Buffer named scalar statistics a balancer reports at `step`."""
        with self._lock:
            for name, v in stats.items():
                self._append("balancer_stats", step=int(step), name=str(name), value=_float(v))

    def log_event(self, level: str, text: str) -> None:
        """Buffer a log event (level: debug/info/warning/error) stamped with the current time."""
        with self._lock:
            self._append("events", ts=time.time(), level=str(level), text=str(text))

    def set_progress(self, step: int, total_steps: int | None, epoch: int, epochs: int | None) -> None:
        """Record progress; written to status.json at the next flush or heartbeat."""
        with self._lock:
            s = self._status
            s["step"], s["total_steps"], s["epoch"], s["epochs"] = int(step), total_steps, int(epoch), epochs
            if total_steps:
                prog = step / total_steps
            elif epochs:
                prog = epoch / epochs
            else:
                prog = 0.0
            s["progress"] = min(1.0, max(0.0, float(prog)))

    # ---- flushing -------------------------------------------------------------------------

    def maybe_flush(self) -> bool:
        """Flush if `flush_interval` seconds passed since the last flush; True if it flushed."""
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write every non-empty buffer as a new segment, then rewrite status.json (heartbeat)."""
        with self._lock:
            for table in TABLES:
                buf = self._buffers[table]
                if not buf["run_id"]:
                    continue
                folder = self.run_dir / table
                folder.mkdir(exist_ok=True)
                arrow = pa.Table.from_pydict(buf, schema=SCHEMAS[table])
                seq = self._next_seq[table]
                table_to_parquet_atomic(arrow, folder / segment_name(seq))
                # Only advance and clear once the segment is in place: numbering stays contiguous.
                self._next_seq[table] = seq + 1
                self._buffers[table] = self._empty(table)
            self._last_flush = time.monotonic()
            self._write_status_locked()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, pid: int | None = None) -> None:
        """Mark the run running (pid, started) and start the heartbeat thread.

        Raises RuntimeError if status.json already holds a terminal state.
        """
        with self._lock:
            on_disk = read_json_dict(self.run_dir / "status.json").get("state")
            if on_disk in TERMINAL_STATES:
                # E.g. cancelled while queued, or failed by the worker: never resurrect a run.
                raise RuntimeError(f"run {self.run_id} already ended ({on_disk}); not starting it")
            now = time.time()
            self._status.update(
                state="running",
                pid=os.getpid() if pid is None else int(pid),
                started=now,
                finished=None,
                error=None,
            )
            self._finished = False
            self._write_status_locked()
        if self._hb_thread is None or not self._hb_thread.is_alive():
            self._hb_stop.clear()
            self._hb_thread = threading.Thread(
                target=self._heartbeat_loop, name=f"heartbeat-{self.run_id}", daemon=True
            )
            self._hb_thread.start()

    def finish(
        self,
        state: str,
        error: str | None = None,
        summary: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """Final flush, stop the heartbeat, then write the terminal state.

        `state` is "finished", "failed" or "cancelled"; `summary` maps task -> metric -> value
        (the test metrics the Runs table shows).
        """
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish state must be one of {sorted(TERMINAL_STATES)}, got {state!r}")
        self._hb_stop.set()
        if self._hb_thread is not None and self._hb_thread is not threading.current_thread():
            self._hb_thread.join(timeout=5)
        with self._lock:
            self.flush()
            s = self._status
            s["state"] = state
            s["finished"] = time.time()
            s["error"] = error
            if summary is not None:
                s["summary"] = {
                    str(t): {str(m): _float(v) for m, v in ms.items()} for t, ms in summary.items()
                }
            if state == "finished":
                s["progress"] = 1.0
            self._write_status_locked()
            self._finished = True

    def cancel_requested(self) -> bool:
        """True when someone asked to cancel this run (the `cancel` file exists)."""
        return (self.run_dir / "cancel").exists()

    @property
    def status(self) -> dict[str, Any]:
        """A copy of the in-memory status."""
        with self._lock:
            return dict(self._status)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finished:
            return
        if exc is None:
            self.finish("finished")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("cancelled", error="interrupted")
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            self.finish("failed", error=text[-4000:])
