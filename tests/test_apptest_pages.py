"""Every dashboard page under Streamlit's AppTest (no browser): it renders with an empty lake
and with a seeded one, and the main controls work (launch a run and find it in Runs, launch a
sweep, launch a preset from Home, URL state, cancel, delete, baselines, the Pareto figure's
non-dominated marking). The worker is off (SEESAW_NO_WORKER=1): queued runs stay queued."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lake_factory import app_lake, make_lake

from engine.pareto import non_dominated_mask
from engine.store import Lake

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
PAGES = ["home", "launch", "live", "runs", "conflicts", "transfer", "pareto"]
TIMEOUT = 90  # the first run imports torch and friends


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeded-template")
    make_lake(root, n_runs=24, running=1)
    return root


@pytest.fixture(scope="module")
def cosmos_template(tmp_path_factory: pytest.TempPathFactory, seeded_template: Path) -> Path:
    """The seeded lake plus one finished COSMOS run on the weight sweep's data (trained here)."""
    from engine.config import load_config
    from engine.cosmos import run_cosmos

    root = tmp_path_factory.mktemp("cosmos-template") / "lake"
    shutil.copytree(seeded_template, root)
    cfg = {
        "dataset": "synthetic-correlation",
        "dataset_params": {"n_samples": 2000, "dim": 16, "correlation": 0.5},
        "arch": "mmoe",
        "epochs": 2,
        "batch_size": 64,
        "threads": 1,
        "owner": "factory",
    }
    rid = run_cosmos(load_config(cfg), {"alpha": 1.0, "lam": 0.5}, Lake(root))
    assert Lake(root).status(rid)["state"] == "finished"
    return root


@pytest.fixture
def cosmos_lake(tmp_path: Path, cosmos_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return app_lake(monkeypatch, tmp_path / "with-cosmos", cosmos_template)


@pytest.fixture
def empty_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return app_lake(monkeypatch, tmp_path / "lake")


@pytest.fixture
def seeded_lake(tmp_path: Path, seeded_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return app_lake(monkeypatch, tmp_path / "seeded", seeded_template)


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    # AppTest's first run goes through Streamlit's legacy pages/ path, which gives widgets other
    # ids than every later run: run once more so clicks on the first page are not lost.
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _open(at: AppTest, page: str, **query: str) -> AppTest:
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts: list[str] = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader"):
        parts += [str(e.value) for e in at.get(kind)]
    return "\n".join(parts)


def _qp(at: AppTest, key: str) -> str:
    """A query parameter's value (AppTest may hold a string or a list of strings)."""
    v = at.query_params.get(key, "")
    return v[-1] if isinstance(v, list) else str(v)


def _figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _arr(v: Any) -> list[float]:
    """A plotly array from a figure's JSON (plain list, or {"dtype", "bdata"} base64)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def _trace(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found = [t for t in spec["data"] if t.get("name") == name]
    assert len(found) == 1, [t.get("name") for t in spec["data"]]
    return found[0]


# ---- every page, empty and seeded ------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_an_empty_lake(empty_lake: Path, page: str) -> None:
    at = _open(_app(), page)
    text = _texts(at)
    assert "Traceback" not in text
    if page in ("live", "runs", "conflicts", "transfer", "pareto"):
        assert "The run lake is empty" in text  # says what to do next
    if page == "home":
        assert len([b for b in at.button if b.key and b.key.startswith("preset:")]) == 3


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_seeded_runs(seeded_lake: Path, page: str) -> None:
    at = _open(_app(), page)
    assert not at.error, [e.value for e in at.error]
    figs = _figures(at)
    minimum = {"home": 0, "launch": 2, "live": 4, "runs": 0, "conflicts": 4, "transfer": 2, "pareto": 1}[page]
    assert len(figs) >= minimum, f"{page}: {len(figs)} charts"
    for fig in figs:  # no empty chart where data exists
        assert fig["data"], f"{page}: a chart without traces"
    if page == "runs":
        table = at.dataframe[0].value
        assert len(table) == 25
    if page == "home":
        assert "Running now" in _texts(at) and at.dataframe


# ---- Launch -> Runs ----------------------------------------------------------------------------


def test_launch_submits_a_run_that_shows_in_runs(empty_lake: Path) -> None:
    at = _open(_app(), "launch")
    at.selectbox(key="sel:launch_dataset").select("synthetic-correlation").run()
    at.number_input(key="ds:synthetic-correlation:n_samples").set_value(500).run()
    at.number_input(key="launch_epochs").set_value(1).run()
    at.text_input(key="launch_name").input("tiny launch test").run()
    assert not at.exception
    run_button = at.button(key="launch_run")
    assert not run_button.disabled
    run_button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    lake = Lake(empty_lake)
    ids = lake.run_ids()
    assert len(ids) == 1
    cfg = lake.config(ids[0])
    assert (
        cfg["dataset"] == "synthetic-correlation" and cfg["epochs"] == 1 and cfg["name"] == "tiny launch test"
    )
    assert cfg["dataset_params"]["n_samples"] == 500
    assert lake.status(ids[0])["state"] == "queued"
    assert "Queued 1 run" in _texts(at)
    assert _qp(at, "runs") == ids[0]

    _open(at, "runs")
    table = at.dataframe[0].value
    assert ids[0] in set(table["run_id"])
    assert table.loc[table["run_id"] == ids[0], "name"].item() == "tiny launch test"


def test_launch_offers_representation_gradients_for_gramian_balancers(empty_lake: Path) -> None:
    at = _open(_app(), "launch")
    assert not [r for r in at.radio if r.key == "launch_gradients"]  # ew: not offered
    at.selectbox(key="launch_balancer").select("mgda").run()
    at.radio(key="launch_gradients").set_value("representation").run()
    at.button(key="launch_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    lake = Lake(empty_lake)
    (rid,) = lake.run_ids()
    assert lake.config(rid)["gradients"] == "representation"
    at.selectbox(key="launch_balancer").select("gradnorm").run()
    assert not [r for r in at.radio if r.key == "launch_gradients"]


def test_launch_explains_invalid_choices_before_submitting(empty_lake: Path) -> None:
    at = _open(_app(), "launch")
    at.number_input(key="ds:synthetic-correlation:n_tasks").set_value(5).run()
    at.number_input(key="ds:synthetic-correlation:dim").set_value(3).run()
    assert any("dim (3) must be at least n_tasks (5)" in str(e.value) for e in at.error)
    assert at.button(key="launch_run").disabled
    at.number_input(key="ds:synthetic-correlation:dim").set_value(16).run()
    at.text_input(key="launch_seeds").input("zero").run()
    assert any("seeds" in str(e.value) for e in at.error)
    assert at.button(key="launch_run").disabled
    at.text_input(key="launch_seeds").input("0").run()
    # a 5-task sweep is not offered; the reason is shown
    assert "needs 2 or 3 tasks" in _texts(at)
    assert not at.button(key="launch_run").disabled
    assert Lake(empty_lake).run_ids() == []


def test_launch_fixed_weights_and_sweep(empty_lake: Path) -> None:
    at = _open(_app(), "launch")
    at.selectbox(key="launch_balancer").select("fixed").run()
    sliders = [s for s in at.slider if s.key and s.key.startswith("w:")]
    assert len(sliders) == 2 and sum(s.value for s in sliders) == pytest.approx(1.0)
    sliders[0].set_value(0.8).run()
    sliders = [s for s in at.slider if s.key and s.key.startswith("w:")]
    assert [s.value for s in sliders] == pytest.approx([0.8, 0.2])  # stays on the simplex
    at.button(key="launch_run").click().run()
    lake = Lake(empty_lake)
    (rid,) = lake.run_ids()
    assert lake.config(rid)["balancer_params"]["weights"] == pytest.approx({"task_1": 0.8, "task_2": 0.2})

    at.slider(key="sweep_res").set_value(2).run()
    assert at.toggle(key="sweep_population").value is True  # batchable: one population by default
    at.button(key="launch_sweep").click().run()
    assert not at.exception
    members = [r for r in lake.run_ids() if r != rid]
    sweep = [lake.config(r) for r in members]
    assert len(sweep) == 3 and len({c["sweep_id"] for c in sweep}) == 1
    assert sorted(c["balancer_params"]["weights"]["task_1"] for c in sweep) == [0.0, 0.5, 1.0]
    from engine.jobs import job_of

    jobs = {job_of(lake, r) for r in members}
    assert len(jobs) == 1 and next(iter(jobs)).kind == "population"  # one job: the worker trains it
    assert {lake.status(r)["state"] for r in members} == {"queued"}
    assert "as one population job" in _texts(at)
    assert _qp(at, "sweep") == sweep[0]["sweep_id"]

    # turned off: separate runs, each saying why in its log
    at.toggle(key="sweep_population").set_value(False).run()
    at.button(key="launch_sweep").click().run()
    separate = [r for r in lake.run_ids() if r != rid and r not in members]
    assert len(separate) == 3 and {job_of(lake, r).kind for r in separate} == {"run"}
    assert lake.events([separate[0]])["text"].str.contains("not as part of a batched population").any()


def test_launch_explains_why_a_sweep_is_not_one_population(
    empty_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.population
    from dashboard import queries

    # every registered architecture batches on the default dataset: stand in for one that does not
    monkeypatch.setattr(engine.population, "batch_problem", lambda cfgs: "it does not run under vmap")
    queries._batch_problem.clear()
    try:
        at = _open(_app(), "launch")
        at.slider(key="sweep_res").set_value(2).run()
        assert at.toggle(key="sweep_population_off").disabled
        assert "will train as separate runs: it does not run under vmap" in _texts(at)
        at.button(key="launch_sweep").click().run()
        lake = Lake(empty_lake)
        assert len(lake.run_ids()) == 3
        assert lake.events([lake.run_ids()[0]])["text"].str.contains("it does not run under vmap").any()
    finally:
        queries._batch_problem.clear()


def test_launch_trains_a_preference_conditioned_model(empty_lake: Path) -> None:
    at = _open(_app(), "launch")
    at.number_input(key="cosmos:alpha").set_value(0.0).run()
    assert any("cosmos.alpha" in str(e.value) for e in at.error)
    assert at.button(key="launch_cosmos").disabled
    at.number_input(key="cosmos:alpha").set_value(2.0).run()
    at.number_input(key="cosmos:lam").set_value(0.5).run()
    assert not at.button(key="launch_cosmos").disabled
    at.button(key="launch_cosmos").click().run()
    assert not at.exception, [e.value for e in at.exception]
    lake = Lake(empty_lake)
    (rid,) = lake.run_ids()
    from engine.jobs import job_of
    from engine.recorder import read_json_dict

    assert job_of(lake, rid).kind == "cosmos" and lake.status(rid)["state"] == "queued"
    assert read_json_dict(lake.run_dir(rid) / "cosmos.json")["alpha"] == 2.0
    cfg = lake.config(rid)
    assert "cosmos" in cfg["tags"] and cfg["balancer"] == "ew"
    assert cfg["name"].startswith("Pareto HyperNetwork")  # the default conditioning
    assert read_json_dict(lake.run_dir(rid) / "cosmos.json")["conditioning"] == "hypernet"
    assert "as a COSMOS training job" in _texts(at) and _qp(at, "runs") == rid
    _open(at, "runs")  # it shows in Runs like any run
    assert rid in set(at.dataframe[0].value["run_id"])


# ---- Home presets ------------------------------------------------------------------------------


def test_home_preset_queues_runs_and_opens_live(empty_lake: Path) -> None:
    at = _app()
    at.button(key="preset:negative-transfer").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ids = Lake(empty_lake).run_ids()
    assert len(ids) == 2
    assert at.title[0].value == "Live"
    assert sorted(_qp(at, "runs").split(",")) == sorted(ids)
    assert sum(1 for b in at.button if b.key and b.key.startswith("cancel:")) == 2


# ---- URL state, Live --------------------------------------------------------------------------


def test_url_state_reproduces_the_view_and_reports_unknown_runs(seeded_lake: Path) -> None:
    lake = Lake(seeded_lake)
    runs = lake.runs()
    real = runs.loc[runs["status"] == "finished", "run_id"].iloc[0]
    ghost = "20000101-000000-abcdef"
    at = _open(_app(), "live", runs=f"{ghost},{real}")
    assert any(ghost in str(w.value) and "do not exist" in str(w.value) for w in at.warning)
    assert at.multiselect(key="picker:live").value == [real]
    spec = _figures(at)[0]
    assert {t["meta"]["run_id"] for t in spec["data"]} == {real}
    # the view follows the user to another page (query params survive the switch)
    _open(at, "conflicts")
    assert _qp(at, "runs") == real


def test_live_cancel_button_requests_cancel(seeded_lake: Path) -> None:
    lake = Lake(seeded_lake)
    runs = lake.runs()
    running = runs.loc[runs["status"] == "running", "run_id"].item()
    at = _open(_app(), "live", runs=running, user="factory")  # the seeded runs' owner
    at.button(key=f"cancel:{running}").click().run()
    assert not at.exception
    assert (lake.run_dir(running) / "cancel").exists()


# ---- Runs: delete ------------------------------------------------------------------------------


def test_runs_delete_selected(seeded_lake: Path) -> None:
    lake = Lake(seeded_lake)
    runs = lake.runs()
    victim = runs.loc[runs["status"] == "finished", "run_id"].iloc[0]
    at = _open(_app(), "runs", runs=victim, user="factory")  # the seeded runs' owner
    at.button(key="runs_delete").click().run()
    assert not at.exception
    assert victim not in lake.run_ids()
    assert len(lake.run_ids()) == len(runs) - 1


# ---- Transfer ----------------------------------------------------------------------------------


def test_transfer_queues_missing_baselines(empty_lake: Path) -> None:
    import numpy as np
    from lake_factory import _config, write_run

    lake = Lake(empty_lake)
    rng = np.random.default_rng(0)
    mtl = write_run(lake, _config(rng, 0, "adult", "mmoe", "pcgrad"), rng)
    at = _open(_app(), "transfer")
    assert not at.exception
    ids = lake.run_ids()
    assert len(ids) == 2
    baseline = next(r for r in ids if r != mtl)
    cfg = lake.config(baseline)
    assert (cfg["arch"], cfg["balancer"], cfg["dataset"]) == ("single-task", "ew", "adult")
    assert "Waiting for 1 baseline" in _texts(at)


def test_transfer_shows_negative_transfer_with_seeded_baselines(seeded_lake: Path) -> None:
    at = _open(_app(), "transfer")
    figs = _figures(at)
    bars = [t for t in figs[0]["data"] if t["type"] == "bar"]
    assert bars and all(len(t["x"]) >= 2 for t in bars)
    assert at.dataframe  # the per-task table


# ---- Pareto ------------------------------------------------------------------------------------


def test_pareto_figure_marks_non_dominated_points(seeded_lake: Path) -> None:
    at = _open(_app(), "pareto")
    spec = _figures(at)[0]
    ds, x, y = _qp(at, "dataset"), _qp(at, "x"), _qp(at, "y")
    runs = Lake(seeded_lake).runs()
    pool = runs[(runs["status"] == "finished") & (runs["dataset"] == ds)].dropna(subset=[x, y])
    from engine.metrics import higher_is_better

    hib = [higher_is_better(x.split("/")[1]), higher_is_better(y.split("/")[1])]
    mask = non_dominated_mask(pool[[x, y]].to_numpy(dtype=float), hib)
    expected_front = set(pool.loc[mask, "run_id"])
    assert expected_front and len(expected_front) < len(pool)

    names = [t.get("name") for t in spec["data"]]
    assert "Pareto front" in names and "reference point" in names
    front, dominated = set(), set()
    for t in spec["data"]:
        if t.get("mode") != "markers" or not t.get("customdata"):
            continue
        for run_id, flag in t["customdata"]:
            if flag == "non-dominated":
                assert t["marker"]["opacity"] == 1.0
                front.add(run_id)
            else:
                assert flag == "dominated" and t["marker"]["opacity"] < 1.0
                dominated.add(run_id)
    assert front == expected_front
    assert front | dominated == set(pool["run_id"])
    assert "hypervolume" in spec["layout"]["title"]["text"]


def test_pareto_pick_a_run_opens_its_details(seeded_lake: Path) -> None:
    at = _open(_app(), "pareto")
    picker = at.selectbox(key="sel:pareto_run")
    assert picker.value == "" and len(picker.options) > 2
    picker.select_index(1).run()  # the same path a click on a point takes: run -> URL -> details
    assert not at.exception
    chosen = _qp(at, "run")
    assert chosen
    assert any(chosen in str(m.value) for m in at.markdown)
    assert at.code and json.loads(at.code[0].value)["dataset"] == _qp(at, "dataset")
    assert len(_figures(at)) >= 2  # the front + the run's curves


def test_pareto_sweep_and_parallel_coordinates(seeded_lake: Path) -> None:
    at = _open(_app(), "pareto", dataset="synthetic-correlation", sweep="sweep-factory")
    spec = _figures(at)[0]
    points = [
        row
        for t in spec["data"]
        if t.get("mode") == "markers" and t.get("customdata")
        for row in t["customdata"]
    ]
    assert len(points) == 4  # the factory's weight sweep on 24 runs
    at2 = _open(_app(), "pareto", dataset="recsys-sim")
    kinds = [t["type"] for f in _figures(at2) for t in f["data"]]
    assert "parcoords" in kinds  # 3 tasks -> parallel coordinates too


def test_pareto_preference_slider_moves_a_point_along_the_learned_front(cosmos_lake: Path) -> None:
    lake = Lake(cosmos_lake)
    (cid,) = [r for r in lake.run_ids() if "cosmos" in lake.config(r)["tags"]]
    at = _open(_app(), "pareto", dataset="synthetic-correlation", sweep="sweep-factory")
    assert _qp(at, "cosmos") == cid and _qp(at, "x") == "task_1/mse" and _qp(at, "y") == "task_2/mse"
    spec = _figures(at)[0]
    curve = _trace(spec, "learned front")
    xs, ys = _arr(curve["x"]), _arr(curve["y"])
    assert len(xs) == len(ys) == 21 and len(set(xs)) > 10  # the front, on a grid of preferences
    star = _trace(spec, "your preference")
    before = (_arr(star["x"])[0], _arr(star["y"])[0])
    assert star["meta"]["preference"] == {"task_1": 0.5, "task_2": 0.5}
    assert before == pytest.approx((xs[10], ys[10]), rel=1e-6)  # on the curve, at preference 0.5
    # the sweep's points are there too; the COSMOS run is drawn as its front, not as a point
    points = [row[0] for t in spec["data"] if t.get("customdata") for row in t["customdata"]]
    assert len(points) == 4 and cid not in points
    assert "Your preference" in _texts(at) and "task_1 0.50 · task_2 0.50" in _texts(at)
    # a model whose preference works backwards on an axis (COSMOS's cosine penalty) says so
    # mse: lower is better; the curve runs from preference (1, 0) to (0, 1); 2% tolerance
    backwards = xs[0] - xs[-1] > 0.02 * abs(xs[-1]) or ys[-1] - ys[0] > 0.02 * abs(ys[0])
    assert ("the preference works backwards" in _texts(at)) == backwards

    at.slider(key=f"pareto_pref:{cid}").set_value(0.9).run()
    assert not at.exception
    spec = _figures(at)[0]
    star = _trace(spec, "your preference")
    after = (_arr(star["x"])[0], _arr(star["y"])[0])
    assert after != before, "moving the slider moves the highlighted point"
    assert star["meta"]["preference"] == {"task_1": 0.9, "task_2": 0.1}
    assert after == pytest.approx((xs[2], ys[2]), rel=1e-6)  # on the curve, at preference 0.9
    assert "task_1 0.90 · task_2 0.10" in _texts(at)

    # no learned front when the axes are not the model's tasks' metrics: "none" hides it
    at.selectbox(key="sel:pareto_cosmos").select("").run()
    names = [t.get("name") for t in _figures(at)[0]["data"]]
    assert "learned front" not in names and "your preference" not in names


# ---- page-load budget --------------------------------------------------------------------------


def test_every_page_loads_under_2s_with_200_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's measurement (bench/page_load.py) on a generated 200-run lake: median AppTest
    script time of every page (and of heavier multi-run views) stays under 2 s."""
    import importlib.util
    import statistics

    spec = importlib.util.spec_from_file_location(
        "page_load", APP.replace("streamlit_app.py", "bench/page_load.py")
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lake = tmp_path / "lake200"
    make_lake(lake, n_runs=200, running=1)
    app_lake(monkeypatch, lake)
    times = bench.measure(lake, repeats=3)
    medians = {page: statistics.median(ts) for page, ts in times.items()}
    assert set(PAGES) <= set(medians)
    slow = {p: round(t, 3) for p, t in medians.items() if t >= bench.BUDGET_S}
    assert not slow, f"pages over {bench.BUDGET_S} s: {slow} (all: {medians})"
