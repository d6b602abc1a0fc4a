"""The Learn page: the toy problem and its optimisers (lesson 2), find-or-submit (one run per
configuration under 30 threads and several processes), the lessons' pure pieces (controls, URL
state, info -> figure), selection bias on recsys-sim, MMoE's gate logging, and the page under
AppTest: every lesson with an empty lake and with results, the link round-trip with hidden
controls and teacher mode, and 30 sessions opening the same preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lake_factory import app_lake
from streamlit.testing.v1 import AppTest

from dashboard.lessons import LESSONS, cascades, conflict_2d, experts, lesson, negative_transfer, pareto_front
from dashboard.lessons.base import (
    RESERVED,
    SEED_KEY,
    Control,
    LessonState,
    RunSet,
    decode_state,
    encode_state,
)
from engine import toy2d
from engine.dedupe import config_key, find_or_submit, find_run, normalise
from engine.recorder import RunWriter
from engine.store import Lake

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")
TIMEOUT = 120


# ---- lesson 2: the toy problem ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pset() -> np.ndarray:
    return toy2d.pareto_set(801)


def test_toy_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-9.5, 9.5, size=(40, 2))
    eps = 1e-6
    _, _, J = toy2d.evaluate(pts[:, 0], pts[:, 1])
    for k in range(2):
        d = np.zeros(2)
        d[k] = eps
        fp = toy2d.evaluate(pts[:, 0] + d[0], pts[:, 1] + d[1])
        fm = toy2d.evaluate(pts[:, 0] - d[0], pts[:, 1] - d[1])
        for t in range(2):
            fd = (fp[t] - fm[t]) / (2 * eps)
            np.testing.assert_allclose(J[:, t, k], fd, rtol=1e-4, atol=1e-5)


def test_toy_matches_the_official_torch_definition() -> None:
    import torch

    def official(x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower = 0.000005
        f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), lower).log() + 6
        f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), lower).log() + 6
        c1 = torch.clamp(torch.tanh(x2 * 0.5), 0)
        f1_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
        f2_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
        c2 = torch.clamp(torch.tanh(-x2 * 0.5), 0)
        return f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2

    rng = np.random.default_rng(1)
    for x in rng.uniform(-10, 10, size=(25, 2)):
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        f1, f2 = official(t[0], t[1])
        g1 = torch.autograd.grad(f1, t, retain_graph=True)[0].numpy()
        g2 = torch.autograd.grad(f2, t)[0].numpy()
        a1, a2, J = toy2d.evaluate(x[0], x[1])
        assert a1 == pytest.approx(f1.item(), abs=1e-9) and a2 == pytest.approx(f2.item(), abs=1e-9)
        np.testing.assert_allclose(J[0], g1, atol=1e-9)
        np.testing.assert_allclose(J[1], g2, atol=1e-9)


def test_nondominated_2d_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=300), rng.normal(size=300)
    a[::7] = a[1::7][: len(a[::7])]  # some ties
    mask = toy2d.nondominated_2d(a, b)
    brute = np.array(
        [not np.any((a <= a[i]) & (b <= b[i]) & ((a < a[i]) | (b < b[i]))) for i in range(len(a))]
    )
    assert (mask == brute).all()
    assert (toy2d.nondominated_2d(10 * a, b) == mask).all()  # scaling a loss does not move it


def test_toy_pareto_set_joins_the_two_bowls(pset: np.ndarray) -> None:
    assert len(pset) > 500
    # the lower half's curve between the two bowls' minima (x2 slightly below -8)
    assert pset[:, 0].min() == pytest.approx(-7.0, abs=0.05)
    assert pset[:, 0].max() == pytest.approx(7.0, abs=0.05)
    assert pset[:, 1].min() > -8.7 and pset[:, 1].max() < -7.9
    # no gaps: consecutive points along x1 are close
    assert np.diff(pset[:, 0]).max() < 0.2
    # every point is Pareto-stationary (the min-norm point of the gradients' hull is ~0)
    for x in pset[:: len(pset) // 25]:
        _, _, J = toy2d.evaluate(x[0], x[1])
        assert toy2d.min_norm(J) < 0.05
    # and a point off the set is not
    _, _, J = toy2d.evaluate(0.0, -4.0)
    assert toy2d.min_norm(J) > 0.1


@pytest.mark.parametrize("method", ["mgda", "pcgrad", "nashmtl"])
def test_pareto_seeking_methods_end_on_the_pareto_set(method: str, pset: np.ndarray) -> None:
    for start in toy2d.DEFAULT_STARTS:
        path = toy2d.trajectory(method, start)
        end = path[-1]
        assert toy2d.distance_to_set(end, pset)[0] < 0.25, (method, start, end)
        _, _, J = toy2d.evaluate(end[0], end[1])
        assert toy2d.min_norm(J) < 0.05, (method, start, end)
        assert toy2d.arrival_step(path, pset) is not None


def test_ew_goes_for_the_lowest_average_loss_mgda_stops_where_it_lands(pset: np.ndarray) -> None:
    def mean_loss(p: np.ndarray) -> float:
        f1, f2, _ = toy2d.evaluate(p[0], p[1])
        return float(f1 + f2) / 2

    ew = [toy2d.trajectory("ew", s)[-1] for s in toy2d.DEFAULT_STARTS]
    mgda = [toy2d.trajectory("mgda", s)[-1] for s in toy2d.DEFAULT_STARTS]
    assert np.mean([mean_loss(p) for p in ew]) < np.mean([mean_loss(p) for p in mgda])
    assert np.ptp([p[0] for p in mgda]) > np.ptp([p[0] for p in ew])  # MGDA's ends spread along the set


def test_nash_mtl_ignores_a_loss_scale_mgda_does_not() -> None:
    start = toy2d.DEFAULT_STARTS[2]
    nash1 = toy2d.trajectory("nashmtl", start, steps=300)
    nash10 = toy2d.trajectory("nashmtl", start, steps=300, scale=(10.0, 1.0))
    np.testing.assert_allclose(nash1, nash10, atol=1e-3)  # the same path, up to solver tolerance
    mgda1 = toy2d.trajectory("mgda", start, steps=300)
    mgda10 = toy2d.trajectory("mgda", start, steps=300, scale=(10.0, 1.0))
    assert np.abs(mgda1 - mgda10).max() > 0.5


def test_lesson2_figure_and_click(pset: np.ndarray) -> None:
    land = toy2d.landscape(41)
    f1, f2, _ = toy2d.evaluate(pset[:, 0], pset[:, 1])
    info = conflict_2d.ToyInfo(
        land.xs, land.f1, land.f2, pset, np.stack([f1, f2], 1), [(-8.5, 7.5)], 1.0, ["mgda", "ew"]
    )
    for m in info.methods:
        xy = toy2d.trajectory(m, (-8.5, 7.5), steps=200)
        info.paths.append(conflict_2d.make_path(m, (-8.5, 7.5), xy, pset))
    fig = conflict_2d.figure(info)
    names = [t.name for t in fig.data]
    assert names.count(conflict_2d.CLICK_TRACE) == 2  # both landscapes take clicks
    assert sum(1 for t in fig.data if t.type == "contour") == 2
    assert {t.meta["method"] for t in fig.data if isinstance(t.meta, dict) and "method" in t.meta} == {
        "mgda",
        "ew",
    }
    assert fig.layout.clickmode == "event+select"
    rows = conflict_2d.method_table(info)
    assert [r["method"] for r in rows] == ["MGDA", "EW (plain sum)"]
    assert "start(s)" in conflict_2d.summary(info)
    # a click adds a start; the same point twice does not
    s = {"methods": ["mgda"], "scale": 1.0, "starts": [(-8.5, 7.5)]}
    new = conflict_2d.on_click(s, [{"x": 3.0, "y": -2.5, "curve_number": 1}])
    assert new is not None and new["starts"] == [(-8.5, 7.5), (3.0, -2.5)]
    assert conflict_2d.on_click(new, [{"x": 3.0, "y": -2.5}]) is None


# ---- controls and URL state -------------------------------------------------------------------


def test_controls_round_trip_and_reject_garbage() -> None:
    for les in LESSONS:
        assert not ({c.key for c in les.controls} & RESERVED)
        for c in les.controls:
            d = c.clean(c.default)
            assert c.parse(c.dump(d)) == d, (les.key, c.key)
            assert c.parse("\u2603 nonsense;;") in (d, [], False) or c.kind == "slider"
    pts = Control("starts", "s", "points", ((1.0, 2.0),))
    assert pts.parse("1,2;3.5,-4;oops;99,0") == [(1.0, 2.0), (3.5, -4.0), (10.0, 0.0)]
    sl = Control("pref", "p", "slider", 0.5, lo=0.0, hi=1.0, step=0.05)
    assert sl.parse("0.333") == pytest.approx(0.35) and sl.parse("7") == 1.0 and sl.parse("x") == 0.5
    ms = Control("m", "m", "multiselect", ("a",), options=("a", "b", "c"))
    assert ms.parse("c,a,zz") == ["a", "c"]  # option order, unknown dropped


def test_lesson_state_round_trips_through_the_url() -> None:
    for les in LESSONS:
        settings = les.defaults()
        for c in les.controls:  # a non-default value for every control
            if c.kind == "select_slider":
                settings[c.key] = c.options[0] if c.default != c.options[0] else c.options[-1]
            elif c.kind == "multiselect":
                settings[c.key] = list(c.options[:1])
            elif c.kind == "toggle":
                settings[c.key] = not c.default
            elif c.kind == "slider":
                settings[c.key] = 0.85
            elif c.kind == "points":
                settings[c.key] = [(1.5, -2.0), (0.0, 9.0)]
        st = LessonState(les.key, settings, 7, [les.controls[0].key, SEED_KEY])
        enc = encode_state(les, st)
        back = decode_state(LESSONS, enc)
        assert back.lesson == les.key and back.seed == 7
        assert back.settings == settings
        assert back.hidden == [les.controls[0].key, SEED_KEY]
    bad = decode_state(LESSONS, {"lesson": "nope", "seed": "-3", "hide": "zz"})
    assert bad.lesson == LESSONS[0].key and bad.seed == 0 and bad.hidden == []


# ---- find-or-submit ---------------------------------------------------------------------------

TINY: dict[str, Any] = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 300, "dim": 4},
    "arch": "shared-bottom",
    "epochs": 1,
    "device": "cpu",
}


def test_config_key_normalises_defaults_and_ignores_labels() -> None:
    explicit = normalise(TINY)
    assert config_key(TINY) == config_key(explicit)
    assert config_key(TINY) == config_key({**TINY, "name": "x", "tags": ["a"], "owner": "bob"})
    assert config_key(TINY) != config_key({**TINY, "lr": 0.01})
    assert config_key(TINY) != config_key({**TINY, "dataset_params": {"n_samples": 300, "dim": 5}})
    assert explicit["tasks"] == ["task_1", "task_2"] and "name" not in explicit


def test_find_or_submit_under_30_threads_and_2_processes(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    start = threading.Barrier(30)
    got: list[str] = []
    errors: list[BaseException] = []

    def user(i: int) -> None:
        try:
            start.wait()
            got.append(find_or_submit({**TINY, "owner": f"user{i}", "name": f"u{i}"}, lake)[0])
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    code = (
        "import sys, json, threading\n"
        "from engine.dedupe import find_or_submit\n"
        "from engine.store import Lake\n"
        "lake = Lake(sys.argv[1]); cfg = json.loads(sys.argv[2]); out = []\n"
        "ts = [threading.Thread(target=lambda: out.append(find_or_submit(cfg, lake)[0])) for _ in range(5)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(lake.root), json.dumps(TINY)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=user, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
        got += json.loads(out.decode().strip().splitlines()[-1])
    assert not errors, errors
    assert len(got) == 40
    assert len(set(got)) == 1
    assert lake.run_ids() == [got[0]]
    assert lake.status(got[0])["state"] == "queued"
    assert find_run(TINY, lake) == got[0]


def test_find_or_submit_keeps_a_failed_run_unless_asked_to_retry(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rid, created = find_or_submit(TINY, lake)
    assert created
    lake.set_status(rid, state="failed", error="boom")
    assert find_or_submit(TINY, lake) == (rid, False)
    rid2, created2 = find_or_submit(TINY, lake, retry_failed=True)
    assert created2 and rid2 != rid
    assert find_run(TINY, lake) == rid2
    lake.delete_run(rid2, force=True)  # a deleted run no longer answers for its config
    rid3, created3 = find_or_submit(TINY, lake)
    assert created3 and rid3 not in (rid, rid2)


# ---- pure pieces of lessons 1, 3, 4, 5 -----------------------------------------------------------


def test_lesson1_means_and_figure() -> None:
    rows = []
    for p in (-0.5, 1.0):
        for s in (0, 1, 2):
            for a, base in (("shared-bottom", 0.1 if p < 0 else 0.01), ("single-task", 0.04), ("mmoe", 0.02)):
                rows.append(
                    {
                        "arch": a,
                        "p": p,
                        "seed": s,
                        "run_id": f"r{p}{s}{a}",
                        "state": "finished",
                        "task_1/mse": base + 0.001 * s,
                        "task_2/mse": base - 0.001 * s,
                    }
                )
    rows.append(
        {
            "arch": "mmoe",
            "p": 0.5,
            "seed": 0,
            "run_id": "q",
            "state": "queued",
            "task_1/mse": np.nan,
            "task_2/mse": np.nan,
        }
    )
    info = negative_transfer.curve_info(pd.DataFrame(rows), -0.5, list(negative_transfer.ARCHS))
    means = info.means().set_index(["arch", "p"])
    assert means.loc[("shared-bottom", -0.5), "loss"] == pytest.approx(0.1)
    assert means.loc[("shared-bottom", -0.5), "n"] == 3
    text = negative_transfer.summary(info)
    assert "negative transfer" in text and "Shared-Bottom vs single-task: +150%" in text
    fig = negative_transfer.figure(info)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.meta["arch"] for t in lines] == list(negative_transfer.ARCHS)
    assert list(lines[0].x) == [-0.5, 1.0]
    pending = negative_transfer.figure(negative_transfer.curve_info(pd.DataFrame(rows), 0.5, ["mmoe"]))
    assert any("training 1 run" in a.text for a in pending.layout.annotations)
    # the runs the lesson asks for: 3 models x 3 seeds at the dial's p; the whole curve: every p
    reqs = negative_transfer.requests({"p": 0.5, "show": []}, 4)
    assert len(reqs) == 9 and {r.config["seed"] for r in reqs} == {4, 5, 6}
    assert len({json.dumps(r.config, sort_keys=True) for r in negative_transfer.whole_curve({}, 0)}) == 36


def test_lesson3_overlap_and_figure() -> None:
    steps = [0, 5, 10]
    rows = []
    for st in steps:
        sharp = st / 10
        g1 = np.array([0.25 + 0.5 * sharp, 0.25, 0.25 - 0.25 * sharp, 0.25 - 0.25 * sharp])
        g2 = g1[::-1]
        for t, g in (("task_1", g1), ("task_2", g2)):
            rows += [{"step": st, "task": t, "expert": e, "weight": float(w)} for e, w in enumerate(g)]
    gates = pd.DataFrame(rows)
    curve = experts.overlap_curve(gates)
    assert curve["overlap"].iloc[0] == pytest.approx(1.0) and curve["overlap"].iloc[-1] < 0.6
    info = experts.GateInfo(gates, -0.5)
    fig = experts.figure(info)
    assert len(fig.data) == 8 and {t.stackgroup for t in fig.data} == {"s0", "s1"}
    assert "expert 1" in experts.summary(info) and "Overlap" in experts.summary(info)
    empty = experts.figure(experts.GateInfo(pd.DataFrame(columns=gates.columns), 1.0))
    assert empty.layout.annotations and not empty.data


def test_lesson4_front_and_preference() -> None:
    pts = pd.DataFrame(
        {
            "w": [0.05, 0.25, 0.5, 0.75, 0.95],
            "run_id": list("abcde"),
            "state": ["finished"] * 4 + ["running"],
            "click/auc": [0.60, 0.70, 0.75, 0.77, np.nan],
            "purchase/auc": [0.70, 0.69, 0.66, 0.65, np.nan],
        }
    )
    info = pareto_front.FrontInfo(pts, 0.6, None, True, "running")
    assert pareto_front.interpolate(info.finished, 0.6) == pytest.approx((0.758, 0.656))
    assert pareto_front.landing(info)[2] == "interpolated"
    assert pareto_front.front_mask(info.finished).all()
    fig = pareto_front.figure(info)
    assert any(t.name and t.name.startswith("your preference") for t in fig.data)
    assert "needs the COSMOS run (running)" in pareto_front.summary(info)
    learned = pd.DataFrame(
        {
            "pref/click": np.linspace(0, 1, 5),
            "click/auc": np.linspace(0.6, 0.78, 5),
            "purchase/auc": np.linspace(0.7, 0.64, 5),
        }
    )
    info2 = pareto_front.FrontInfo(pts, 0.75, learned, True, "finished")
    x, _y, how = pareto_front.landing(info2)
    assert how == "COSMOS" and x == pytest.approx(0.735)
    assert pareto_front.learned_dominated(info2) == 3
    assert "3 of its 5 points are beaten on both tasks" in pareto_front.summary(info2)
    assert any(t.name and "COSMOS" in t.name for t in pareto_front.figure(info2).data)
    reqs = pareto_front.requests({"pref": 0.5, "learned": True}, 0)
    assert len(reqs) == 6 and reqs[-1].cosmos is not None
    assert len({r.config["sweep_id"] for r in reqs[:-1]}) == 1


def test_lesson5_bias_info_and_figure() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    p_true = rng.beta(2, 12, n)
    click = rng.random(n) < 0.2
    truth = {
        "p_cvr": p_true,
        "click": click,
        "purchase": click & (rng.random(n) < p_true),
        "p_click": np.full(n, 0.2),
    }
    perfect = {"pctr": np.full(n, 0.2), "pcvr": p_true}
    flat = {"pctr": np.full(n, 0.2), "pcvr": np.full(n, 0.05) + 1e-6 * rng.random(n)}
    info = cascades.bias_info(0.9, truth, {"esmm": perfect, "naive": flat}, RunSet())
    assert info.report["esmm"]["rank_corr_all"] == pytest.approx(1.0)
    assert abs(info.report["naive"]["rank_corr_all"]) < 0.1
    fig = cascades.figure(info)
    assert {t.meta["model"] for t in fig.data if isinstance(t.meta, dict)} == {"esmm", "naive"}
    rows = cascades.table(info)
    assert {r["model"] for r in rows} == {"ESMM (entire space)", "CVR trained on clicks"}
    assert "ESMM ranks" in cascades.summary(info)
    quick = cascades.figure(cascades.bias_info(0.9, truth))
    assert any("training both models" in a.text for a in quick.layout.annotations)


def test_recsys_clicked_label_space_masks_post_click_labels() -> None:
    from engine.cascade_eval import truth
    from engine.datasets import load_dataset

    params = {"n_users": 100, "n_items": 60, "n_impressions": 2000, "seq_len": 3, "conflict": 0.9}
    data = load_dataset("recsys-sim", {**params, "label_space": "clicked"}, 0)
    te = data.test
    assert set(te.masks) == {"cart", "purchase"}
    assert (te.masks["purchase"].numpy() == (te.targets["click"].numpy() > 0.5)).all()
    entire = load_dataset("recsys-sim", params, 0)
    assert not entire.test.masks
    t = truth(params, 0)  # the simulator's view of the same test rows, in the same order
    assert (t["click"] == (entire.test.targets["click"].numpy() > 0.5)).all()
    assert (t["purchase"] == (entire.test.targets["purchase"].numpy() > 0.5)).all()
    assert ((t["p_cvr"] > 0) & (t["p_cvr"] < 1)).all()


def test_selection_bias_from_real_tiny_runs(tmp_path: Path) -> None:
    from engine.cascade_eval import bias_report, predictions, truth
    from engine.runner import execute_run

    lake = Lake(tmp_path / "lake")
    small = {
        "n_users": 100,
        "n_items": 60,
        "n_impressions": 3000,
        "seq_len": 3,
        "conflict": 0.9,
        "click_rate": 0.3,
        "conversion_rate": 0.3,
    }
    common = {
        "dataset": "recsys-sim",
        "tasks": ["click", "purchase"],
        "epochs": 1,
        "batch_size": 256,
        "grad_stats_every": 0,
        "device": "cpu",
        "threads": 1,
    }
    esmm = lake.create_run({**common, "dataset_params": small, "arch": "esmm"}, state="queued")
    naive = lake.create_run(
        {**common, "dataset_params": {**small, "label_space": "clicked"}, "arch": "shared-bottom"},
        state="queued",
    )
    for rid in (esmm, naive):
        execute_run(lake, rid)
        assert lake.status(rid)["state"] == "finished", lake.status(rid)
    t = truth(small, 0)
    for rid in (esmm, naive):
        pred = predictions(rid, lake)
        assert pred["pcvr"].shape == t["p_cvr"].shape
        assert ((pred["pcvr"] >= 0) & (pred["pcvr"] <= 1)).all()
        rep = bias_report(pred, t)
        assert 0.0 <= rep["ctcvr_auc_all"] <= 1.0 and np.isfinite(rep["rank_corr_all"])


def test_mmoe_logs_its_gate_weights_while_training() -> None:
    from engine.config import load_config
    from engine.train import NullWriter, train

    class Keep(NullWriter):
        def __init__(self) -> None:
            super().__init__()
            self.stats: list[tuple[int, dict[str, float]]] = []

        def log_balancer_stats(self, step: int, stats: dict[str, float]) -> None:
            self.stats.append((step, dict(stats)))

    cfg = load_config(
        {
            **experts.config(-0.5, 0),
            "epochs": 1,
            "dataset_params": {**experts.DATA, "n_samples": 400, "correlation": -0.5},
        }
    )
    w = Keep()
    train(cfg, w)
    assert w.stats
    _step, last = w.stats[-1]
    for t in experts.TASKS:
        vals = [last[f"gate:{t}:{e}"] for e in range(experts.N_EXPERTS)]
        assert sum(vals) == pytest.approx(1.0, abs=1e-5)


# ---- the page under AppTest -------------------------------------------------------------------


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    root = app_lake(monkeypatch, tmp_path / "lake")
    import engine.cosmos

    def no_process(cfg: Any, params: Any = None, lake: Lake | None = None) -> tuple[str, None]:
        """A COSMOS run directory as launch_cosmos makes it, without training (no process)."""
        return engine.cosmos.create_cosmos_run(cfg, params, lake), None

    monkeypatch.setattr(engine.cosmos, "launch_cosmos", no_process)
    return Lake(root)


def _app(**query: str) -> AppTest:
    from dashboard.learn import clear_views

    clear_views()  # a fresh view of the lake (the page shares views across sessions per tick)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/learn.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _qp(at: AppTest, key: str) -> str:
    v = at.query_params.get(key, "")
    return v[-1] if isinstance(v, list) else str(v)


def _figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert charts, "no chart on the page"
    return json.loads(charts[-1].proto.spec)


def _arr(v: Any) -> np.ndarray:
    """A plotly array from a figure's JSON (plain list, or {"dtype", "bdata"} base64)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _share_link(at: AppTest) -> str:
    codes = [str(c.value) for c in at.code if "lesson=" in str(c.value)]
    assert codes, "no share link"
    return codes[0]


def _texts(at: AppTest) -> str:
    return "\n".join(
        str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in at.get(kind)
    )


EXPECTED_RUNS = {"negative-transfer": 9, "conflict-2d": 0, "experts": 1, "pareto": 6, "cascades": 2}


@pytest.mark.parametrize("key", [les.key for les in LESSONS])
def test_each_lesson_renders_with_an_empty_lake_and_queues_its_runs(lake_env: Lake, key: str) -> None:
    at = _app(lesson=key)
    les = lesson(key)
    assert at.get("subheader")[0].value.startswith(f"{les.number}.")
    assert "What to look at" in _texts(at)
    fig = _figure(at)
    assert fig["layout"]["title"]["text"]
    assert len(lake_env.run_ids()) == EXPECTED_RUNS[key]
    for rid in lake_env.run_ids():
        tags = lake_env.config(rid)["tags"]
        assert f"lesson:{key}" in tags
    at.run()  # a redraw queues nothing new
    assert len(lake_env.run_ids()) == EXPECTED_RUNS[key]
    if key == "conflict-2d":  # drawn at once: every method's path from every start
        metas = [t.get("meta") for t in fig["data"] if isinstance(t.get("meta"), dict)]
        assert len({(m["method"], tuple(m["start"])) for m in metas if "method" in m}) == 15


def _finish(
    lake: Lake, rid: str, summary: dict[str, dict[str, float]], stats: list[dict[str, float]] = ()
) -> None:
    w = RunWriter(lake.run_dir(rid))
    w.start(os.getpid())
    for i, s in enumerate(stats):
        w.log_balancer_stats(i * 5, s)
    w.finish("finished", summary=summary)


def test_lessons_draw_finished_results(lake_env: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    # lesson 1: every queued run finishes with test MSEs (Shared-Bottom worst)
    _app(lesson="negative-transfer")
    for rid in lake_env.run_ids():
        arch = lake_env.config(rid)["arch"]
        v = {"shared-bottom": 0.12, "mmoe": 0.02, "single-task": 0.05}[arch]
        _finish(lake_env, rid, {"task_1": {"mse": v}, "task_2": {"mse": v}})
    at = _app(lesson="negative-transfer")
    fig = _figure(at)
    lines = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    assert len(lines) == 3 and all(list(_arr(t["x"])) == [-0.5] for t in lines)
    assert "negative transfer" in _texts(at)

    # lesson 3: gate weights over training
    at = _app(lesson="experts")
    (rid,) = [r for r in lake_env.run_ids() if "lesson:experts" in lake_env.config(r)["tags"]]
    stats = [
        {
            f"gate:{t}:{e}": (0.7 if e == (0 if t == "task_1" else 3) else 0.1)
            for t in ("task_1", "task_2")
            for e in range(4)
        }
        for _ in range(5)
    ]
    _finish(lake_env, rid, {"task_1": {"mse": 0.01}, "task_2": {"mse": 0.01}}, stats)
    at = _app(lesson="experts")
    fig = _figure(at)
    assert len(fig["data"]) == 8
    assert "task_1 leans most on expert 1" in _texts(at)

    # lesson 4: the sweep finishes; the COSMOS run is still "running" (no process in this test)
    at = _app(lesson="pareto")
    for r in lake_env.run_ids():
        cfg = lake_env.config(r)
        if "lesson:pareto" in cfg["tags"] and cfg["balancer"] == "fixed":
            w = cfg["balancer_params"]["weights"]["click"]
            _finish(lake_env, r, {"click": {"auc": 0.6 + 0.18 * w}, "purchase": {"auc": 0.7 - 0.07 * w}})
    at = _app(lesson="pareto")
    fig = _figure(at)
    assert any(t.get("name", "").startswith("your preference") for t in fig["data"])
    assert "interpolated between sweep runs" in _texts(at)

    # lesson 5: both models finish; their predictions come from the (patched) inference
    import engine.cascade_eval

    at = _app(lesson="cascades")

    def fake_predictions(run_id: str, lake: Any = None, split: str = "test") -> dict[str, np.ndarray]:
        cfg = Lake(os.environ["SEESAW_HOME"]).config(run_id)
        t = engine.cascade_eval.truth({**cfg["dataset_params"], "label_space": "entire"}, cfg["seed"])
        noise = 0.0 if cfg["arch"] == "esmm" else 0.05
        return {"pctr": t["p_click"], "pcvr": np.clip(t["p_cvr"] * 0.5 + noise, 0, 1)}

    monkeypatch.setattr(engine.cascade_eval, "predictions", fake_predictions)
    for r in lake_env.run_ids():
        if "lesson:cascades" in lake_env.config(r)["tags"]:
            _finish(lake_env, r, {"click": {"auc": 0.7}, "purchase": {"auc": 0.6}})
    at = _app(lesson="cascades")
    fig = _figure(at)
    assert {t["meta"]["model"] for t in fig["data"] if isinstance(t.get("meta"), dict)} == {"esmm", "naive"}
    assert at.dataframe and len(at.dataframe[0].value) == 2


def test_link_round_trip_with_hidden_controls_and_teacher_mode(lake_env: Lake) -> None:
    query = {
        "lesson": "conflict-2d",
        "methods": "mgda,pcgrad",
        "scale": "10",
        "starts": "-8.5,7.5;4,-2",
        "seed": "3",
        "hide": "scale,seed",
    }
    at = _app(**query)
    # participants: the hidden controls are not drawn, the visible ones hold the link's values
    assert at.multiselect(key="learn:conflict-2d:methods").value == ["mgda", "pcgrad"]
    keys = {w.key for w in at.select_slider} | {w.key for w in at.selectbox}
    assert "learn:conflict-2d:scale" not in keys and "learn:conflict-2d:seed" not in keys
    assert "2 setting(s) fixed by your teacher" in _texts(at)
    link = _share_link(at)
    for k, v in query.items():
        assert f"{k}={v}".replace(",", "%2C").replace(";", "%3B") in link, (k, link)
    fig = _figure(at)
    assert "× 10" in fig["layout"]["annotations"][0]["text"]

    # the link opened in a fresh session reproduces the same state and the same picture
    from urllib.parse import parse_qsl, urlsplit

    params = dict(parse_qsl(urlsplit(link).query))
    at2 = _app(**params)
    assert _share_link(at2) == link
    assert _figure(at2)["data"] == fig["data"]

    # teacher mode: every control is drawn, with a visibility checkbox; unticking hides it
    at2.toggle(key="learn_teacher").set_value(True).run()
    keys = {w.key for w in at2.select_slider} | {w.key for w in at2.selectbox}
    assert {"learn:conflict-2d:scale", "learn:conflict-2d:seed"} <= keys
    at2.checkbox(key="learn_vis:conflict-2d:methods").uncheck().run()
    assert set(_qp(at2, "hide").split(",")) == {"methods", "scale", "seed"}
    at2.checkbox(key="learn_vis:conflict-2d:seed").check().run()
    assert set(_qp(at2, "hide").split(",")) == {"methods", "scale"}
    assert "teacher" not in _share_link(at2)
    at2.select_slider(key="learn:conflict-2d:scale").set_value(0.1).run()
    assert _qp(at2, "scale") == "0.1" and "scale=0.1" in _share_link(at2)


def test_thirty_sessions_opening_the_same_preset_share_one_run_per_config(lake_env: Lake) -> None:
    """30 participants (30 AppTest sessions, each its own user) open lesson 1 with the same
    settings: its 9 configurations (3 models x 3 seeds) are queued once each and nobody sees an
    error. (AppTest itself is not thread-safe, so the sessions take turns; the engine test above
    and the browser suite cover simultaneous submitters.)"""
    for i in range(30):
        at = _app(lesson="negative-transfer", p="0", seed="2", user=f"participant-{i}")
        assert not at.error, [e.value for e in at.error]
    configs = [lake_env.config(r) for r in lake_env.run_ids()]
    assert len(configs) == 9
    assert len({(c["arch"], c["seed"]) for c in configs}) == 9
    assert {c["dataset_params"]["correlation"] for c in configs} == {0.0}
    assert {c["seed"] for c in configs} == {2, 3, 4}
    assert {c["owner"] for c in configs} == {"participant-0"}  # the first one queued them
