"""The run lake: run directories on disk and the query API over them (DuckDB).

Layout (docs/ARCHITECTURE.md): `<root>/<run_id>/` holds `config.json`, `status.json`, optional
`claim` / `cancel` files and one folder of immutable Parquet segments per table. Trainers write
segments (engine.recorder.RunWriter); everything else reads them through `Lake`.

Reads never touch a shared `.duckdb` file: every query runs on an in-memory DuckDB connection
over an explicit list of segment files built here in Python (hidden/temporary names skipped,
segments covered by a compacted file skipped). If a file vanishes between listing and reading
(a compaction or a deletion won the race) the query lists again and retries.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import paths
from engine.recorder import (
    SCHEMAS,
    TABLES,
    TERMINAL_STATES,
    compacted_name,
    dir_lock,
    new_status,
    parse_segment,
    read_json_dict,
    select_segments,
    table_to_parquet_atomic,
    write_json_atomic,
)

if TYPE_CHECKING:
    from engine.config import RunConfig

RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")

RUN_COLUMNS: list[str] = [
    "run_id",
    "name",
    "dataset",
    "arch",
    "balancer",
    "tasks",
    "seed",
    "epochs",
    "status",
    "created",
    "started",
    "finished",
    "heartbeat",
    "progress",
    "step",
    "total_steps",
    "error",
    "sweep_id",
    "tags",
    "owner",
]

RUN_DTYPES: dict[str, str] = {
    **{c: "str" for c in RUN_COLUMNS},
    **{c: "float64" for c in ("created", "started", "finished", "heartbeat", "progress")},
    **{c: "Int64" for c in ("seed", "epochs", "step", "total_steps")},
}

FINAL_SCHEMA = pa.schema(
    [("run_id", pa.string()), ("task", pa.string()), ("metric", pa.string()), ("value", pa.float64())]
)

READ_RETRIES = 5  # re-list and retry this many times when a listed file disappeared
COMPACT_GRACE = 0.25  # seconds between publishing a compacted file and deleting what it replaces
STALE_TMP_AGE = 60.0  # a temp file this old in an ended run is garbage from a killed writer


class RunNotFoundError(LookupError):
    """No run with this id in the lake."""


class RunActiveError(RuntimeError):
    """The operation needs the run to have ended (or not started) first."""


def _empty_df(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _sql_list(items: Iterable[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


class Lake:
    """A run lake rooted at `root` (default: `engine.paths.home()`).

    Safe to share between threads (each query uses its own DuckDB cursor) and to use from any
    number of processes at once: writers only ever add files by atomic rename.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else paths.home().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_pid = -1
        self._con_lock = threading.Lock()
        self._config_cache: dict[str, dict[str, Any]] = {}
        # split -> (run_id -> file tuple it was computed from, table of final values)
        self._final_cache: dict[str, tuple[dict[str, tuple[str, ...]], pa.Table]] = {}
        self._final_lock = threading.Lock()
        self._union: dict[str, bool] = {}  # table -> needs union_by_name (mixed schema versions)

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ---- run ids and directories ----------------------------------------------------------

    @staticmethod
    def new_run_id() -> str:
        """A fresh id: `YYYYmmdd-HHMMSS-<6 hex>`, UTC. The hex is the microsecond (5 digits) plus one
        random digit, so ids sort by creation time even within one second."""
        now = datetime.now(UTC)
        return now.strftime("%Y%m%d-%H%M%S") + f"-{now.microsecond:05x}" + secrets.token_hex(1)[0]

    @staticmethod
    def valid_run_id(run_id: Any) -> bool:
        """True if `run_id` has the strict run-id shape (no path separators, no dots)."""
        return isinstance(run_id, str) and RUN_ID_RE.fullmatch(run_id) is not None

    def run_dir(self, run_id: str) -> Path:
        """The directory of `run_id`; ValueError for anything that is not a well-formed run id.

        The strict pattern keeps URL parameters such as "../x" from escaping the lake. The
        directory may not exist (see `exists`).
        """
        if not self.valid_run_id(run_id):
            raise ValueError(f"invalid run id {run_id!r}: expected YYYYmmdd-HHMMSS-<6 hex>")
        return self.root / run_id

    def exists(self, run_id: str) -> bool:
        """True if the run exists (False, not an error, for malformed ids)."""
        return self.valid_run_id(run_id) and (self.root / run_id / "status.json").is_file()

    def _existing_dir(self, run_id: str) -> Path:
        d = self.run_dir(run_id)
        if not d.is_dir():
            raise RunNotFoundError(f"no run {run_id!r} in {self.root}")
        return d

    def run_ids(self) -> list[str]:
        """Every run id in the lake, oldest first."""
        try:
            names = [e.name for e in os.scandir(self.root) if RUN_ID_RE.fullmatch(e.name) and e.is_dir()]
        except FileNotFoundError:
            return []
        return sorted(names)

    # ---- creating runs, config and status -------------------------------------------------

    def create_run(self, config: RunConfig | dict[str, Any], state: str = "queued") -> str:
        """Create a run directory (config.json + status.json) and return its id.

        The directory is assembled under a hidden name and renamed into place, so nobody (the
        worker included) ever sees a run without its config and status.
        """
        if hasattr(config, "model_dump"):
            cfg = config.model_dump(mode="json")  # type: ignore[union-attr]
        elif isinstance(config, dict):
            cfg = dict(config)
        else:
            raise TypeError(f"config must be a RunConfig or a dict, got {type(config).__name__}")
        if state not in ("queued", "running", "finished", "failed", "cancelled"):
            raise ValueError(f"unknown state {state!r}")
        for _ in range(100):
            run_id = self.new_run_id()
            final = self.root / run_id
            if final.exists():
                continue
            staging = self.root / f".new-{run_id}-{secrets.token_hex(4)}"
            staging.mkdir()
            try:
                write_json_atomic(staging / "config.json", cfg, fsync=True)
                status = new_status(epochs=cfg.get("epochs"))
                status["state"] = state
                write_json_atomic(staging / "status.json", status, fsync=True)
                if final.exists():
                    continue
                os.rename(staging, final)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return run_id
        raise RuntimeError("could not allocate a unique run id")

    def config(self, run_id: str) -> dict[str, Any]:
        """The run's config.json as a dict (cached: it is written once)."""
        cached = self._config_cache.get(run_id)
        if cached is not None:
            return dict(cached)
        d = self._existing_dir(run_id)
        cfg = read_json_dict(d / "config.json")
        if cfg:
            self._config_cache[run_id] = cfg
        return dict(cfg)

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's status.json as a dict ({"state": "unknown"} if unreadable)."""
        d = self._existing_dir(run_id)
        st = read_json_dict(d / "status.json")
        return st if st else {"state": "unknown"}

    def set_status(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Update fields of status.json atomically (locked read-modify-write); return the new status."""
        d = self._existing_dir(run_id)
        with dir_lock(d):
            st = read_json_dict(d / "status.json")
            st.update(fields)
            write_json_atomic(d / "status.json", st)
        return st

    def claim(self, run_id: str, by: str = "worker") -> bool:
        """Atomically create the run's `claim` file (O_CREAT|O_EXCL); True if this caller won it."""
        d = self._existing_dir(run_id)
        try:
            fd = os.open(d / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, f'{{"by": "{by}", "pid": {os.getpid()}, "ts": {time.time()}}}\n'.encode())
        finally:
            os.close(fd)
        return True

    def claim_info(self, run_id: str) -> dict[str, Any] | None:
        """The content of the claim file (by, pid, ts), or None if the run is not claimed."""
        p = self._existing_dir(run_id) / "claim"
        if not p.exists():
            return None
        return read_json_dict(p)

    def request_cancel(self, run_id: str) -> None:
        """Create the `cancel` file (the trainer polls it; the worker enforces it)."""
        p = self._existing_dir(run_id) / "cancel"
        with open(p, "a", encoding="utf-8") as f:
            f.write(f"{time.time()}\n")

    # ---- the runs table -------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """One row per run: config fields, status fields and one column per test metric.

        Summary columns are named "<task>/<metric>" (from status.json's summary).
        """
        records: list[dict[str, Any]] = []
        summary_cols: dict[str, None] = {}
        for rid in self.run_ids():
            d = self.root / rid
            st = read_json_dict(d / "status.json")
            if not st:
                continue  # being deleted, or not a complete run
            cfg = self._config_cache.get(rid)
            if cfg is None:
                cfg = read_json_dict(d / "config.json")
                if cfg:
                    self._config_cache[rid] = cfg
            summary = st.get("summary") or {}
            tasks = cfg.get("tasks") or list(summary) or []
            rec: dict[str, Any] = {
                "run_id": rid,
                "name": cfg.get("name") or "",
                "dataset": cfg.get("dataset"),
                "arch": cfg.get("arch"),
                "balancer": cfg.get("balancer"),
                "tasks": ",".join(map(str, tasks)),
                "seed": cfg.get("seed"),
                "epochs": cfg.get("epochs"),
                "status": st.get("state", "unknown"),
                "created": st.get("created"),
                "started": st.get("started"),
                "finished": st.get("finished"),
                "heartbeat": st.get("heartbeat"),
                "progress": st.get("progress"),
                "step": st.get("step"),
                "total_steps": st.get("total_steps"),
                "error": st.get("error"),
                "sweep_id": cfg.get("sweep_id"),
                "tags": ",".join(map(str, cfg.get("tags") or [])),
                "owner": cfg.get("owner") or "",
            }
            if isinstance(summary, dict):
                for task, metrics in summary.items():
                    if not isinstance(metrics, dict):
                        continue
                    for metric, value in metrics.items():
                        col = f"{task}/{metric}"
                        summary_cols[col] = None
                        rec[col] = value
            records.append(rec)
        columns = RUN_COLUMNS + sorted(summary_cols)
        df = pd.DataFrame.from_records(records, columns=columns)
        for c in columns:
            kind = RUN_DTYPES.get(c, "float64")  # summary columns are floats
            if kind == "str":
                df[c] = df[c].astype("str")  # missing -> NaN (pandas' str dtype)
            else:
                df[c] = pd.to_numeric(df[c], errors="coerce").astype(kind)
        return df

    # ---- file listing ---------------------------------------------------------------------

    def _table_files(self, run_dir: Path, table: str) -> tuple[list[str], bool]:
        """Readable segment files of one table of one run (absolute paths) and completeness."""
        folder = run_dir / table
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return [], True
        chosen, complete = select_segments(names)
        base = str(folder)
        return [f"{base}/{n}" for n in chosen], complete

    def _files_by_run(self, table: str, run_ids: Sequence[str] | None) -> dict[str, list[str]]:
        """run_id -> segment files of `table`, pruned by run directory before DuckDB sees them."""
        if table not in SCHEMAS:
            raise ValueError(f"unknown table {table!r}; tables are {list(TABLES)}")
        if run_ids is None:
            ids = self.run_ids()
        else:
            if isinstance(run_ids, str):
                run_ids = [run_ids]
            ids = [r for r in dict.fromkeys(run_ids) if self.valid_run_id(r)]
        out: dict[str, list[str]] = {}
        for rid in ids:
            files: list[str] = []
            for _attempt in range(3):
                files, complete = self._table_files(self.root / rid, table)
                if complete:
                    break
                time.sleep(0.005)  # a gap: a compaction is mid-flight; look again
            if files:
                out[rid] = files
        return out

    def files(self, table: str, run_ids: Sequence[str] | None = None) -> list[str]:
        """Absolute paths of the segment files a query of `table` would read right now."""
        return [f for fs in self._files_by_run(table, run_ids).values() for f in fs]

    # ---- DuckDB ---------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on this process's cached in-memory connection (never a .duckdb file)."""
        with self._con_lock:
            if self._con is None or self._con_pid != os.getpid():
                self._con = duckdb.connect(":memory:")
                self._con_pid = os.getpid()
            return self._con.cursor()

    def _read_arrow(
        self,
        table: str,
        run_ids: Sequence[str] | None,
        select: str = "*",
        where: str = "",
        params: Sequence[Any] = (),
        tail: str = "",
        files_by_run: dict[str, list[str]] | None = None,
    ) -> pa.Table | None:
        """Run one SELECT over the table's current files; None when there are no files.

        Retries (re-listing) when a file disappears between listing and reading. Every segment is
        written with the table's fixed schema, so the fast path reads with union_by_name=false
        (DuckDB matches columns by name and raises on any mismatch, never silently); on a schema
        mismatch (files from another schema version) it switches to union_by_name=true for good.
        """
        last_err: Exception | None = None
        union = self._union.get(table, False)
        attempt = 0
        while attempt <= READ_RETRIES:
            fbr = files_by_run if (files_by_run is not None and attempt == 0) else None
            if fbr is None:
                fbr = self._files_by_run(table, run_ids)
            files = [f for fs in fbr.values() for f in fs]
            if not files:
                return None
            query = (
                f"SELECT {select} FROM read_parquet(?, union_by_name={'true' if union else 'false'}) "
                f"{where} {tail}"
            )
            cur = self._cursor()
            try:
                return cur.sql(query, params=[files, *params]).to_arrow_table()
            except (duckdb.BinderException, duckdb.InvalidInputException) as e:
                if union:
                    raise
                union = self._union[table] = True  # mixed schemas: read by name from now on
                last_err = e
                continue
            except (duckdb.IOException, FileNotFoundError) as e:
                last_err = e  # a listed file vanished (compaction, deletion): list again
                attempt += 1
                time.sleep(0.002 * attempt)
            finally:
                cur.close()
        raise RuntimeError(f"could not read table {table!r} after {READ_RETRIES} retries: {last_err}")

    def _query(
        self,
        table: str,
        run_ids: Sequence[str] | None,
        filters: dict[str, Any],
        order: str,
    ) -> pd.DataFrame:
        conds, params = [], []
        for col, val in filters.items():
            if val is None:
                continue
            if isinstance(val, str):
                conds.append(f"{col} = ?")
                params.append(val)
            else:
                vals = list(val)
                conds.append(f"list_contains(?, {col})")
                params.append(vals)
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        cols = ", ".join(SCHEMAS[table].names)
        arrow = self._read_arrow(table, run_ids, cols, where, params, f"ORDER BY {order}")
        if arrow is None:
            return _empty_df(SCHEMAS[table])
        return arrow.to_pandas()

    def metrics(
        self,
        run_ids: Sequence[str] | None = None,
        split: str | Sequence[str] | None = None,
        metric: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Metric rows (run_id, step, epoch, split, task, metric, value), ordered by run and step."""
        return self._query(
            "metrics", run_ids, {"split": split, "metric": metric}, "run_id, step, split, task, metric"
        )

    def grad_stats(
        self, run_ids: Sequence[str] | None = None, layer: str | Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Gradient statistics (run_id, step, layer, task_i, task_j, cosine, norm_i, norm_j)."""
        return self._query("grad_stats", run_ids, {"layer": layer}, "run_id, step, layer, task_i, task_j")

    def task_weights(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Effective task weights (run_id, step, task, weight)."""
        return self._query("task_weights", run_ids, {}, "run_id, step, task")

    def balancer_stats(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Balancer statistics (run_id, step, name, value)."""
        return self._query("balancer_stats", run_ids, {}, "run_id, step, name")

    def events(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Log events (run_id, ts, level, text), oldest first per run."""
        return self._query("events", run_ids, {}, "run_id, ts")

    def final_metrics(self, run_ids: Sequence[str] | None = None, split: str = "test") -> pd.DataFrame:
        """The last step's value per (run_id, task, metric) of `split`: columns run_id, task, metric, value.

        Results are cached per run keyed by the exact file list they were computed from, so only
        runs whose segments changed since the last call are read again (finished, compacted runs
        are read once per process).
        """
        fbr = self._files_by_run("metrics", run_ids)
        keys = {rid: tuple(fs) for rid, fs in fbr.items()}
        with self._final_lock:
            cached_keys, cached = self._final_cache.get(split, ({}, FINAL_SCHEMA.empty_table()))
            stale = [rid for rid, k in keys.items() if cached_keys.get(rid) != k]
            if stale:
                fresh = self._read_arrow(
                    "metrics",
                    stale,
                    "run_id, task, metric, arg_max(value, step) AS value",
                    "WHERE split = ?",
                    [split],
                    "GROUP BY run_id, task, metric",
                    files_by_run={rid: fbr[rid] for rid in stale},
                )
                # If the read had to re-list (a file vanished), the values are newer than the keys;
                # the next call sees a different file list and simply recomputes those runs.
                keep_mask = pc.invert(pc.is_in(cached["run_id"], pa.array(stale, pa.string())))
                parts = [cached.filter(keep_mask)]
                if fresh is not None and fresh.num_rows:
                    parts.append(fresh.select(FINAL_SCHEMA.names).cast(FINAL_SCHEMA))
                cached = pa.concat_tables(parts)
                new_keys = {rid: k for rid, k in cached_keys.items() if rid not in stale}
                new_keys.update({rid: keys[rid] for rid in stale})
                cached_keys = new_keys
                if run_ids is None:
                    # A full listing tells us which runs are gone; drop them from the cache.
                    gone = [rid for rid in cached_keys if rid not in keys]
                    if gone:
                        cached = cached.filter(
                            pc.invert(pc.is_in(cached["run_id"], pa.array(gone, pa.string())))
                        )
                        for rid in gone:
                            cached_keys.pop(rid, None)
                self._final_cache[split] = (cached_keys, cached)
        result = cached.filter(pc.is_in(cached["run_id"], pa.array(list(keys), pa.string())))
        if result.num_rows == 0:
            return _empty_df(FINAL_SCHEMA)
        result = result.sort_by([("run_id", "ascending"), ("task", "ascending"), ("metric", "ascending")])
        return result.to_pandas()

    def sql(self, query: str) -> pd.DataFrame:
        """Run ad-hoc SQL with every table (and `runs`) as a view. For the CLI and benchmarks only."""
        for attempt in range(READ_RETRIES + 1):
            cur = self._cursor()
            try:
                self._define_views(cur)
                return cur.execute(query).df()
            except duckdb.IOException:
                if attempt == READ_RETRIES:
                    raise
                time.sleep(0.002 * (attempt + 1))
            finally:
                cur.close()
        raise AssertionError("unreachable")

    def _define_views(self, cur: duckdb.DuckDBPyConnection, temp: bool = True) -> None:
        kind = "TEMP VIEW" if temp else "VIEW"
        for table, schema in SCHEMAS.items():
            files = self.files(table)
            if files:
                body = f"SELECT * FROM read_parquet({_sql_list(files)}, union_by_name=true)"
            else:
                cols = ", ".join(
                    f"CAST(NULL AS {'DOUBLE' if pa.types.is_floating(f.type) else 'BIGINT' if pa.types.is_integer(f.type) else 'VARCHAR'}) AS {f.name}"  # noqa: E501
                    for f in schema
                )
                body = f"SELECT {cols} WHERE false"
            cur.execute(f"CREATE OR REPLACE {kind} {table} AS {body}")
        runs_df = self.runs()
        cur.register("runs", runs_df)

    # ---- maintenance ----------------------------------------------------------------------

    def delete_run(self, run_id: str, force: bool = False) -> None:
        """Delete a run directory. Refuses a running run (or one the worker is starting).

        The directory is first renamed to a hidden name (readers stop seeing it at once), then
        removed. `force=True` deletes regardless of state (for dead runs stuck in 'running').
        """
        d = self._existing_dir(run_id)
        st = read_json_dict(d / "status.json")
        state = st.get("state")
        if not force:
            if state == "running":
                raise RunActiveError(
                    f"run {run_id} is running (pid {st.get('pid')}); cancel it and wait for it to end "
                    "before deleting it"
                )
            if state == "queued" and not self.claim(run_id, by="delete"):
                raise RunActiveError(f"run {run_id} is being started by the worker; cancel it first")
        trash = self.root / f".trash-{run_id}-{secrets.token_hex(4)}"
        os.rename(d, trash)
        self._config_cache.pop(run_id, None)
        shutil.rmtree(trash, ignore_errors=True)

    def export_duckdb(self, path: Path | str, overwrite: bool = False) -> dict[str, int]:
        """Write every table plus `runs` into one DuckDB file; return rows per table.

        The file is built under a temporary name beside `path`, closed, then renamed into place,
        so nobody ever opens a half-written export. Refuses to replace an existing file unless
        `overwrite`.
        """
        path = Path(path).expanduser().resolve()
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            counts = self._export_to(tmp)
        except BaseException:
            for p in (tmp, Path(f"{tmp}.wal")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            raise
        os.replace(tmp, path)
        return counts

    def _export_to(self, tmp: Path) -> dict[str, int]:
        """Build the export at `tmp` (retrying from scratch if a segment vanished mid-copy)."""
        for attempt in range(READ_RETRIES + 1):
            for p in (tmp, Path(f"{tmp}.wal")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            counts: dict[str, int] = {}
            con = duckdb.connect(str(tmp))
            try:
                for table, schema in SCHEMAS.items():
                    files = self.files(table)
                    cols = ", ".join(schema.names)
                    if files:
                        con.execute(
                            f"CREATE TABLE {table} AS SELECT {cols} FROM read_parquet(?, union_by_name=true)",
                            [files],
                        )
                    else:
                        con.register("_empty", schema.empty_table())
                        con.execute(f"CREATE TABLE {table} AS SELECT {cols} FROM _empty")
                        con.unregister("_empty")
                    counts[table] = int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
                runs_df = self.runs()
                con.register("_runs", runs_df)
                con.execute("CREATE TABLE runs AS SELECT * FROM _runs")
                con.unregister("_runs")
                counts["runs"] = len(runs_df)
                con.execute("CHECKPOINT")
                return counts
            except duckdb.IOException:
                if attempt == READ_RETRIES:
                    raise
            finally:
                con.close()
        raise AssertionError("unreachable")

    def _compact_publish(self, run_id: str) -> tuple[dict[str, int], list[Path]]:
        """Compaction phase 1: publish merged files; return (segments merged per table, files to delete)."""
        d = self._existing_dir(run_id)
        ended = read_json_dict(d / "status.json").get("state") in TERMINAL_STATES
        merged: dict[str, int] = {}
        to_delete: list[Path] = []
        for table, schema in SCHEMAS.items():
            folder = d / table
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            if ended:
                for n in names:
                    if n.startswith(".") and n.endswith(".tmp"):
                        with contextlib.suppress(OSError):
                            if time.time() - (folder / n).stat().st_mtime > STALE_TMP_AGE:
                                (folder / n).unlink()
            chosen, complete = select_segments(names)
            if not complete or not chosen:
                continue  # a gap (someone removed a segment by hand?): leave the folder alone
            if len(chosen) > 1:
                parts = [pq.read_table(folder / n, schema=schema) for n in chosen]
                last = max(parse_segment(n)[1] for n in chosen)  # type: ignore[index]
                combined = pa.concat_tables(parts).combine_chunks()
                table_to_parquet_atomic(combined, folder / compacted_name(last))
                merged[table] = len(chosen)
                chosen = [compacted_name(last)]
            kept = chosen[0]
            rng = parse_segment(kept)
            if len(chosen) == 1 and rng is not None and kept.startswith("seg-000000-"):
                top = rng[1]
                for n in names:
                    r = parse_segment(n)
                    if r is not None and n != kept and r[1] <= top:
                        to_delete.append(folder / n)
        return merged, to_delete

    @staticmethod
    def _delete_covered(files: list[Path]) -> None:
        # Oldest first: a listing that missed the merged file sees a gap and lists again.
        files.sort(key=lambda p: (str(p.parent), parse_segment(p.name) or (0, 0)))
        for p in files:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def compact(self, run_id: str, grace: float = COMPACT_GRACE) -> dict[str, int]:
        """Merge each table's segments of one run into one file; return segments merged per table.

        Safe with concurrent readers: the merged file `seg-000000-<last>.parquet` is published by
        atomic rename first, and from then on the lister skips every segment it covers, so no
        reader sees a row twice; after `grace` seconds (listings in flight finish) the covered
        segments are deleted, oldest first (a reader that listed them retries and finds the
        merged file). Meant for ended runs; on a live run it is still safe (the writer numbers
        new segments after the covered ones). Also removes stale temp files of a killed writer.
        Idempotent: a run already compacted is left as is.
        """
        merged, to_delete = self._compact_publish(run_id)
        if to_delete:
            if merged and grace > 0:
                time.sleep(grace)
            self._delete_covered(to_delete)
        return merged

    def compact_all(self, run_ids: Sequence[str] | None = None, grace: float = COMPACT_GRACE) -> int:
        """Compact every ended run (or the given ones) with one shared grace period; return runs merged."""
        ids = list(run_ids) if run_ids is not None else self.run_ids()
        n_merged = 0
        to_delete: list[Path] = []
        for rid in ids:
            if read_json_dict(self.root / rid / "status.json").get("state") not in TERMINAL_STATES:
                continue
            merged, dels = self._compact_publish(rid)
            n_merged += bool(merged)
            to_delete.extend(dels)
        if to_delete:
            if n_merged and grace > 0:
                time.sleep(grace)
            self._delete_covered(to_delete)
        return n_merged
