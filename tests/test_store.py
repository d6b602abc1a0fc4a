"""The run lake: atomic segments, the query API, compaction, export and multi-process safety."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from engine.recorder import SCHEMAS, TABLES, RunWriter, read_json, select_segments, write_json_atomic
from engine.store import RUN_COLUMNS, Lake, RunActiveError, RunNotFoundError

REPO = Path(__file__).resolve().parent.parent


def _cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "demo",
        "dataset": "synthetic-correlation",
        "arch": "mmoe",
        "balancer": "ew",
        "tasks": ["ctr", "cvr"],
        "seed": 0,
        "epochs": 2,
        "tags": ["a", "b"],
        "owner": "tester",
    }
    cfg.update(over)
    return cfg


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def _train_rows(start: int, n: int, task: str = "ctr") -> list[dict[str, Any]]:
    return [
        {"step": s, "epoch": 0, "split": "train", "task": task, "metric": "loss", "value": 1.0 / (s + 1)}
        for s in range(start, start + n)
    ]


def _write_run(lake: Lake, n_segments: int, rows_per_segment: int = 3, finish: bool = True) -> str:
    """A run with `n_segments` flushes of metrics, weights and grad stats (one segment each)."""
    rid = lake.create_run(_cfg())
    w = RunWriter(lake.run_dir(rid), flush_interval=3600)
    w.start()
    for k in range(n_segments):
        w.log_metrics(_train_rows(k * rows_per_segment, rows_per_segment))
        w.log_task_weights(k, {"ctr": 0.3, "cvr": 0.7})
        w.log_grad_stats(
            k,
            [{"layer": "all", "task_i": "ctr", "task_j": "cvr", "cosine": 0.1, "norm_i": 1.0, "norm_j": 2.0}],
        )
        w.flush()
    if finish:
        w.finish("finished", summary={"ctr": {"auc": 0.7}})
    return rid


# --------------------------------------------------------------------------------------------
# Segments and the file lister
# --------------------------------------------------------------------------------------------


def test_select_segments_skips_covered_and_detects_gaps() -> None:
    names = ["seg-000001.parquet", "seg-000002.parquet", ".seg-000003.parquet.1.2.tmp", "notes.txt"]
    assert select_segments(names) == (["seg-000001.parquet", "seg-000002.parquet"], True)
    compacted = [
        "seg-000000-000002.parquet",
        "seg-000001.parquet",
        "seg-000002.parquet",
        "seg-000003.parquet",
    ]
    assert select_segments(compacted) == (["seg-000000-000002.parquet", "seg-000003.parquet"], True)
    # two compacted files (a re-compaction in flight): the wider one wins
    assert select_segments(["seg-000000-000002.parquet", "seg-000000-000004.parquet"])[0] == [
        "seg-000000-000004.parquet"
    ]
    # a listing that misses segment 1 (and no compacted file) is flagged incomplete
    assert select_segments(["seg-000002.parquet"])[1] is False


def test_segments_appear_atomically_and_counts_never_decrease(lake: Lake) -> None:
    rid = lake.create_run(_cfg())
    run_dir = lake.run_dir(rid)
    (run_dir / "metrics").mkdir()
    # leftovers of a killed writer must be invisible to readers
    (run_dir / "metrics" / ".seg-000099.parquet.1.1.tmp").write_bytes(b"half a parquet file")
    writer = RunWriter(run_dir, flush_interval=0.01)
    writer.start()
    n_flushes, per_flush = 120, 5
    errors: list[BaseException] = []
    counts: list[int] = []
    done = threading.Event()

    def write() -> None:
        try:
            for k in range(n_flushes):
                writer.log_metrics(_train_rows(k * per_flush, per_flush))
                writer.flush()
                time.sleep(0.01)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                files = lake.files("metrics", [rid])
                assert all(not Path(f).name.startswith(".") and not f.endswith(".tmp") for f in files)
                counts.append(len(lake.metrics([rid])))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    writer.finish("finished")
    assert not errors, errors
    assert len(counts) > 5, "the reader should have overlapped the writer"
    assert all(b >= a for a, b in itertools.pairwise(counts)), "row counts went down"
    df = lake.metrics([rid])
    assert len(df) == n_flushes * per_flush
    assert df["step"].tolist() == list(range(n_flushes * per_flush))
    for f in lake.files("metrics", [rid]):
        pq.read_table(f)


def test_status_json_is_atomic_and_heartbeat_refreshes(lake: Lake) -> None:
    rid = lake.create_run(_cfg())
    st = lake.status(rid)
    assert st["state"] == "queued" and st["created"] > 0 and st["heartbeat"] is None
    w = RunWriter(lake.run_dir(rid), flush_interval=3600)
    w.start(4242)
    first = lake.status(rid)["heartbeat"]
    assert lake.status(rid)["state"] == "running" and lake.status(rid)["pid"] == 4242
    deadline = time.time() + 10
    while lake.status(rid)["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.1)
    assert lake.status(rid)["heartbeat"] > first, "the heartbeat thread refreshes status.json without flushes"
    w.set_progress(5, 10, 1, 2)
    w.finish("failed", error="boom")
    st = lake.status(rid)
    assert st["state"] == "failed" and st["error"] == "boom" and st["progress"] == 0.5 and st["finished"]
    assert not [p for p in lake.run_dir(rid).iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(RuntimeError, match="already ended"):
        RunWriter(lake.run_dir(rid)).start()  # a terminal run is never resurrected
    # tolerant JSON helpers
    bad = lake.root / "bad.json"
    bad.write_text("{not json")
    assert read_json(bad, default={}) == {} and read_json(lake.root / "missing.json") is None
    write_json_atomic(bad, {"x": float("nan")})
    assert json.loads(bad.read_text()) == {"x": None}


# --------------------------------------------------------------------------------------------
# Query API
# --------------------------------------------------------------------------------------------


def test_final_metrics_picks_the_last_step(lake: Lake) -> None:
    a = lake.create_run(_cfg())
    w = RunWriter(lake.run_dir(a))
    w.start()
    # the later step is written first, in an earlier segment: "last" means highest step
    w.log_metrics([{"step": 20, "epoch": 1, "split": "test", "task": "ctr", "metric": "auc", "value": 0.8}])
    w.flush()
    w.log_metrics(
        [
            {"step": 10, "epoch": 0, "split": "test", "task": "ctr", "metric": "auc", "value": 0.6},
            {"step": 10, "epoch": 0, "split": "val", "task": "ctr", "metric": "auc", "value": 0.5},
            {"step": 15, "epoch": 0, "split": "val", "task": "ctr", "metric": "auc", "value": 0.55},
            {"step": 15, "epoch": 0, "split": "test", "task": "cvr", "metric": "auc", "value": 0.4},
        ]
    )
    w.finish("finished")
    b = _write_run(lake, 1)
    fm = lake.final_metrics()
    assert list(fm.columns) == ["run_id", "task", "metric", "value"]
    got = {(r.run_id, r.task, r.metric): r.value for r in fm.itertuples()}
    assert got == {(a, "ctr", "auc"): 0.8, (a, "cvr", "auc"): 0.4}
    assert lake.final_metrics(split="val")["value"].tolist() == [0.55]
    assert lake.final_metrics([b]).empty and list(lake.final_metrics([b]).columns) == list(fm.columns)
    # the per-run cache notices new segments
    w2 = RunWriter(lake.run_dir(b))
    w2.log_metrics([{"step": 99, "epoch": 0, "split": "test", "task": "ctr", "metric": "auc", "value": 0.9}])
    w2.flush()
    assert lake.final_metrics([b])["value"].tolist() == [0.9]
    assert len(lake.final_metrics()) == 3


def test_queries_filter_and_return_typed_empty_frames(lake: Lake) -> None:
    for name in ("metrics", "grad_stats", "task_weights", "balancer_stats", "events"):
        df = getattr(lake, name)()
        assert df.empty and list(df.columns) == SCHEMAS[name].names
    a, b = _write_run(lake, 2), _write_run(lake, 3)
    assert set(lake.metrics([a])["run_id"]) == {a}
    assert len(lake.metrics([a, b])) == 15
    assert len(lake.metrics(split="train", metric="loss")) == 15
    assert lake.metrics(split="val").empty
    assert len(lake.metrics(metric=["loss", "auc"])) == 15
    assert len(lake.grad_stats(layer="all")) == 5 and lake.grad_stats(layer="nope").empty
    assert len(lake.task_weights([b])) == 6
    assert lake.events().empty
    assert lake.sql("SELECT count(*) AS n FROM metrics")["n"].iloc[0] == 15
    assert set(lake.sql("SELECT run_id FROM runs")["run_id"]) == {a, b}


def test_runs_table_columns_and_summary_columns(lake: Lake) -> None:
    empty = lake.runs()
    assert empty.empty and list(empty.columns) == RUN_COLUMNS
    from engine.config import RunConfig

    cfg = RunConfig.model_construct(
        dataset="synthetic-correlation",
        arch="mmoe",
        balancer="ew",
        tasks=["t1", "t2"],
        seed=3,
        epochs=4,
        name="constructed",
        tags=["x"],
        owner="ann",
        sweep_id="sw1",
    )
    a = lake.create_run(cfg)
    b = lake.create_run(_cfg(tasks=None))
    w = RunWriter(lake.run_dir(b))
    w.start()
    w.finish("finished", summary={"ctr": {"auc": 0.71, "logloss": 0.4}, "cvr": {"auc": 0.6}})
    df = lake.runs()
    assert list(df.columns) == [*RUN_COLUMNS, "ctr/auc", "ctr/logloss", "cvr/auc"]
    ra, rb = df.set_index("run_id").loc[a], df.set_index("run_id").loc[b]
    assert ra["tasks"] == "t1,t2" and ra["seed"] == 3 and ra["owner"] == "ann" and ra["tags"] == "x"
    assert ra["status"] == "queued" and ra["sweep_id"] == "sw1" and pd.isna(ra["ctr/auc"])
    assert rb["tasks"] == "ctr,cvr"  # falls back to the summary's tasks when the config says "all"
    assert rb["status"] == "finished" and rb["ctr/auc"] == 0.71 and rb["progress"] == 1.0
    assert lake.config(a)["name"] == "constructed"


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "..",
        "",
        "x",
        "20250101-000000-abcde",
        "20250101-000000-ABCDEF",
        "/etc/passwd",
        "20250101-000000-abcdef/../../x",
        "20250101-000000-abcdef/",
        "_worker",
    ],
)
def test_run_id_validation_rejects_escapes(lake: Lake, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        lake.run_dir(bad)
    with pytest.raises(ValueError):
        lake.status(bad)
    assert lake.metrics([bad]).empty  # query filters drop malformed ids
    assert not lake.exists(bad)


def test_unknown_run_raises_not_found(lake: Lake) -> None:
    with pytest.raises(RunNotFoundError):
        lake.status("20250101-000000-abcdef")


def test_delete_refuses_a_running_run(lake: Lake) -> None:
    rid = lake.create_run(_cfg())
    w = RunWriter(lake.run_dir(rid))
    w.start()
    with pytest.raises(RunActiveError, match="running"):
        lake.delete_run(rid)
    assert lake.exists(rid)
    w.finish("finished")
    lake.delete_run(rid)
    assert rid not in lake.run_ids() and not lake.exists(rid)
    queued = lake.create_run(_cfg())
    lake.delete_run(queued)
    assert lake.run_ids() == []
    claimed = lake.create_run(_cfg())
    assert lake.claim(claimed)  # the worker is starting it
    with pytest.raises(RunActiveError):
        lake.delete_run(claimed)


def test_export_duckdb_round_trips_row_counts(lake: Lake, tmp_path: Path) -> None:
    a, b = _write_run(lake, 2), _write_run(lake, 4)
    w = RunWriter(lake.run_dir(a))
    w.log_event("info", "hello")
    w.log_balancer_stats(1, {"projections": 2.0})
    w.flush()
    out = tmp_path / "export" / "lake.duckdb"
    counts = lake.export_duckdb(out)
    expected = {t: len(getattr(lake, t)()) for t in TABLES} | {"runs": 2}
    assert counts == expected
    con = duckdb.connect(str(out), read_only=True)
    try:
        for table, n in expected.items():
            assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == n
        assert sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()) == sorted([a, b])
        cols = [r[0] for r in con.execute("DESCRIBE metrics").fetchall()]
        assert cols == SCHEMAS["metrics"].names
    finally:
        con.close()
    with pytest.raises(FileExistsError):
        lake.export_duckdb(out)
    assert lake.export_duckdb(out, overwrite=True)["metrics"] == expected["metrics"]
    assert not [p for p in out.parent.iterdir() if p.name != "lake.duckdb"], "no temp files left"


# --------------------------------------------------------------------------------------------
# Compaction
# --------------------------------------------------------------------------------------------


def test_compact_keeps_rows_and_a_concurrent_reader_never_sees_duplicates(lake: Lake) -> None:
    runs = [_write_run(lake, 25, rows_per_segment=4) for _ in range(6)]
    total = len(lake.metrics())
    assert total == 6 * 25 * 4
    before = lake.metrics().sort_values(["run_id", "step"]).reset_index(drop=True)
    weights_before = len(lake.task_weights())
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                df = lake.metrics()
                seen.append(len(df))
                assert not df.duplicated(["run_id", "step"]).any()
        except BaseException as e:
            errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for rid in runs:
            merged = lake.compact(rid, grace=0.02)
            assert merged["metrics"] == 25
    finally:
        done.set()
        reader.join(timeout=60)
    assert not errors, errors
    assert seen and set(seen) == {total}, "a reader saw missing or duplicated rows"
    after = lake.metrics().sort_values(["run_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert len(lake.task_weights()) == weights_before
    for rid in runs:
        assert sorted(os.listdir(lake.run_dir(rid) / "metrics")) == ["seg-000000-000025.parquet"]
        assert lake.compact(rid) == {}  # idempotent


def test_a_reader_holding_a_stale_listing_retries(lake: Lake) -> None:
    rid = _write_run(lake, 5)
    stale = lake._files_by_run("metrics", [rid])
    lake.compact(rid, grace=0)  # deletes the segments the stale listing names
    table = lake._read_arrow("metrics", [rid], "count(*) AS n", files_by_run=stale)
    assert table is not None and table.column("n").to_pylist() == [15]


def test_writer_continues_numbering_after_compaction(lake: Lake) -> None:
    rid = _write_run(lake, 3, finish=False)
    lake.compact(rid, grace=0)
    w = RunWriter(lake.run_dir(rid))
    w.log_metrics(_train_rows(9, 2))
    w.flush()
    assert sorted(os.listdir(lake.run_dir(rid) / "metrics")) == [
        "seg-000000-000003.parquet",
        "seg-000004.parquet",
    ]
    assert lake.metrics([rid])["step"].tolist() == list(range(11))


# --------------------------------------------------------------------------------------------
# Several processes at once
# --------------------------------------------------------------------------------------------

WRITER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from engine.recorder import RunWriter
    run_dir, seconds = Path(sys.argv[1]), float(sys.argv[2])
    w = RunWriter(run_dir, flush_interval=0.01)
    w.start()
    n = 0
    end = time.time() + seconds
    while time.time() < end:
        row = {"step": n, "epoch": 0, "split": "train", "task": "t", "metric": "loss", "value": 0.5}
        w.log_metrics([row])
        w.log_task_weights(n, {"t": 1.0})
        w.log_event("info", f"step {n}")
        n += 1
        w.maybe_flush()
        time.sleep(0.002)
    w.finish("finished", summary={"t": {"loss": 0.5}})
    print(json.dumps({"rows": n}))
    """
)

READER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, traceback
    from engine.store import Lake
    lake = Lake(sys.argv[1])
    ids = sys.argv[3:]
    errors, queries, last = [], 0, {}
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        try:
            df = lake.metrics()
            counts = df.groupby("run_id").size().to_dict()
            for rid, c in counts.items():
                if c < last.get(rid, 0):
                    errors.append(f"count of {rid} went down: {last[rid]} -> {c}")
                last[rid] = c
            lake.task_weights(ids[:1]); lake.events(); lake.final_metrics(split="train")
            lake.runs(); [lake.status(r) for r in ids]
            queries += 1
        except Exception:
            errors.append(traceback.format_exc())
    print(json.dumps({"errors": errors[:5], "n_errors": len(errors), "queries": queries}))
    """
)


def test_two_writers_and_a_reader_in_separate_processes(lake: Lake) -> None:
    ids = [lake.create_run(_cfg()) for _ in range(2)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seconds = 3.0
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(lake.run_dir(rid)), str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        for rid in ids
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(lake.root), str(seconds + 0.5), *ids],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    outs = [p.communicate(timeout=60) for p in [*writers, reader]]
    for p, (_out, err) in zip([*writers, reader], outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    rows = [json.loads(out)["rows"] for out, _ in outs[:2]]
    result = json.loads(outs[2][0])
    assert result["n_errors"] == 0, result["errors"]
    assert result["queries"] > 3
    counts = lake.metrics().groupby("run_id").size().to_dict()
    assert counts == dict(zip(ids, rows, strict=True))
    assert all(lake.status(r)["state"] == "finished" for r in ids)
