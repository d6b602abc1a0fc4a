"""Unit tests of the dashboard's pure pieces: figure builders (info -> plotly Figure), the
parameter-form schema reader, the simplex helpers, launch helpers, presets and single-task
baselines. No browser, no Streamlit server."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, Field

from dashboard.figures import conflicts as C
from dashboard.figures.common import ema, run_labels
from dashboard.figures.curves import curves_figure, curves_info, metrics_table
from dashboard.figures.diagram import diagram_figure, diagram_info
from dashboard.figures.pareto import (
    DOMINATED,
    DOMINATED_OPACITY,
    FRONT_TRACE,
    ON_FRONT,
    REFERENCE_TRACE,
    parallel_figure,
    parallel_info,
    pareto_figure,
    pareto_info,
    run_at,
)
from dashboard.figures.simplex import normalise, simplex_figure, simplex_grid
from dashboard.figures.transfer import delta_m_figure, transfer_figure, transfer_info
from dashboard.figures.weights import weights_figure, weights_summary
from dashboard.launch import parse_seeds, run_configs, sweep_configs, validate
from dashboard.params_form import field_specs, parse_text
from dashboard.presets import PRESETS
from dashboard.widgets import rebalance
from engine.pareto import hypervolume, non_dominated_mask

# ---- data builders ------------------------------------------------------------------------------


def _metrics(run_ids: list[str], steps: int = 10, epochs: int = 2) -> pd.DataFrame:
    rows = []
    for r in run_ids:
        for s in range(steps):
            for t in ("a", "b"):
                rows.append((r, s, s * epochs // steps + 1, "train", t, "loss", 1.0 / (s + 1)))
        for e in range(1, epochs + 1):
            for t in ("a", "b"):
                rows.append((r, e * steps // epochs, e, "val", t, "loss", 0.5 / e))
                rows.append((r, e * steps // epochs, e, "val", t, "mse", 0.4 / e))
        for t in ("a", "b"):
            rows.append((r, steps, epochs, "test", t, "mse", 0.3))
    return pd.DataFrame(rows, columns=["run_id", "step", "epoch", "split", "task", "metric", "value"])


def _grad_stats(
    run_id: str = "r1", steps: int = 10, layers: tuple[str, ...] = ("all", "expert_0", "expert_1")
):
    rows = []
    for s in range(steps):
        for layer in layers:
            cos_ab = -0.5 if (s % 2 == 0 and layer != "expert_1") else 0.5
            rows += [
                (run_id, s, layer, "a", "a", 1.0, 2.0, 2.0),
                (run_id, s, layer, "b", "b", 1.0, 1.0, 1.0),
                (run_id, s, layer, "c", "c", 1.0, 3.0, 3.0),
                (run_id, s, layer, "a", "b", cos_ab, 2.0, 1.0),
                (run_id, s, layer, "a", "c", 0.2, 2.0, 3.0),
                (run_id, s, layer, "b", "c", -0.1 * s, 1.0, 3.0),
            ]
    return pd.DataFrame(
        rows, columns=["run_id", "step", "layer", "task_i", "task_j", "cosine", "norm_i", "norm_j"]
    )


# ---- curves ------------------------------------------------------------------------------------


def test_curves_info_and_figure_one_trace_per_run_task_split() -> None:
    m = _metrics(["r1", "r2"])
    info = curves_info(m, "loss", ("train", "val"), {"r1": "run one"})
    assert info.tasks == ["a", "b"]
    assert len(info.series) == 2 * 2 * 2
    assert info.n_points == 2 * 2 * (10 + 2)
    fig = curves_figure(info)
    assert len(fig.data) == 8
    names = {t.name for t in fig.data}
    assert "run one · train" in names and "r2 · val" in names
    # every trace carries its run id for drill-down
    assert all(set(t.customdata) == {t.meta["run_id"]} for t in fig.data)
    assert all(t.line.dash == "dash" for t in fig.data if t.meta["split"] == "val")


def test_curves_smoothing_only_touches_train_and_keeps_length() -> None:
    m = _metrics(["r1"])
    raw = curves_info(m, "loss", ("train", "val"))
    smooth = curves_info(m, "loss", ("train", "val"), smoothing=0.9)
    for a, b in zip(raw.series, smooth.series, strict=True):
        assert len(a.values) == len(b.values)
        if a.split == "val":
            np.testing.assert_allclose(a.values, b.values)
        else:
            assert not np.allclose(a.values, b.values)
    assert ema([1.0, 1.0, 1.0], 0.9).tolist() == pytest.approx([1.0, 1.0, 1.0])  # debiased
    assert curves_figure(curves_info(m, "loss"), log_y=True).layout.yaxis.type == "log"


def test_curves_empty_gives_a_message_figure() -> None:
    info = curves_info(pd.DataFrame(columns=["run_id", "step", "epoch", "split", "task", "metric", "value"]))
    fig = curves_figure(info)
    assert len(fig.data) == 0 and fig.layout.annotations


def test_metrics_table_has_latest_val_and_test() -> None:
    t = metrics_table(_metrics(["r1"]), {"r1": "one"})
    assert list(t["task"]) == ["a", "b"]
    assert t["val mse"].tolist() == pytest.approx([0.2, 0.2])  # epoch 2 of 2
    assert t["test mse"].tolist() == pytest.approx([0.3, 0.3])
    assert set(t["run"]) == {"one"}


def test_weights_figure_panel_per_run() -> None:
    w = pd.DataFrame(
        {
            "run_id": ["r1"] * 4 + ["r2"] * 4,
            "step": [0, 0, 1, 1] * 2,
            "task": ["a", "b"] * 4,
            "weight": [0.5, 0.5, 0.6, 0.4, 1, 1, 1, 1],
        }
    )
    fig = weights_figure(w, {"r1": "one"})
    assert len(fig.data) == 4
    assert [a.text for a in fig.layout.annotations][:2] == ["one", "r2"]
    s = weights_summary(w)
    assert s.loc[(s.run_id == "r1") & (s.task == "a"), "last"].item() == pytest.approx(0.6)


def test_run_labels_use_name_or_arch_balancer() -> None:
    runs = pd.DataFrame(
        {
            "run_id": ["20250101-000000-aaaaaa", "20250101-000000-bbbbbb"],
            "name": ["mine", ""],
            "arch": ["mmoe", "ple"],
            "balancer": ["ew", "pcgrad"],
        }
    )
    labels = run_labels(runs, runs["run_id"].tolist())
    assert labels == {
        "20250101-000000-aaaaaa": "mine (aaaaaa)",
        "20250101-000000-bbbbbb": "ple/pcgrad (bbbbbb)",
    }


# ---- conflicts ---------------------------------------------------------------------------------


def test_cosine_matrix_is_symmetric_with_unit_diagonal_at_nearest_earlier_step() -> None:
    gs = _grad_stats()
    info = C.cosine_matrix_info(gs, step=5, layer="all")
    assert info.tasks == ["a", "b", "c"] and info.step == 5
    np.testing.assert_allclose(info.matrix, info.matrix.T)
    np.testing.assert_allclose(np.diag(info.matrix), 1.0)
    assert info.matrix[0, 1] == pytest.approx(0.5)  # odd step: aligned
    assert C.cosine_matrix_info(gs, step=None).step == 9
    sparse = gs[gs["step"] % 4 == 0]
    assert C.cosine_matrix_info(sparse, step=7).step == 4
    fig = C.cosine_heatmap(info)
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1


def test_conflict_rate_counts_negative_steps() -> None:
    rates = C.conflict_rate_info(_grad_stats())
    ab = rates[rates["pair"] == "a × b"].iloc[0]
    assert ab["conflict_rate"] == pytest.approx(0.5)
    assert ab["n_steps"] == 10
    bc = rates[rates["pair"] == "b × c"].iloc[0]
    assert bc["conflict_rate"] == pytest.approx(0.9)  # -0.1*s < 0 for s >= 1
    by_layer = C.conflict_rate_info(_grad_stats(), by_layer=True)
    e1 = by_layer[(by_layer["layer"] == "expert_1") & (by_layer["pair"] == "a × b")]
    assert e1["conflict_rate"].item() == 0.0
    fig = C.conflict_rate_figure(rates)
    assert fig.data[0].type == "bar" and list(fig.data[0].x) == ["a × b", "a × c", "b × c"]


def test_layer_heatmap_excludes_all_and_shows_blocks() -> None:
    fig = C.layer_conflict_figure(_grad_stats())
    assert list(fig.data[0].y) == ["expert_0", "expert_1"]
    assert C.grad_layers(_grad_stats()) == ["all", "expert_0", "expert_1"]
    assert C.layer_conflict_figure(_grad_stats(layers=("all",))).layout.annotations  # empty message


def test_norm_ratios_relative_to_mean() -> None:
    info = C.norm_ratio_info(_grad_stats())
    at0 = info[info["step"] == 0].set_index("task")
    assert at0.loc["a", "relative"] == pytest.approx(1.0)  # norms 2, 1, 3 -> mean 2
    assert at0.loc["c", "max_min_ratio"] == pytest.approx(3.0)
    assert len(C.norm_ratio_figure(_grad_stats()).data) == 3


def test_cosine_distribution_and_timeseries() -> None:
    gs = _grad_stats()
    dist = C.cosine_distribution_figure(gs, "all")
    assert {t.type for t in dist.data} == {"box"} and len(dist.data) == 3
    assert set(dist.data[0].x) == {"early", "middle", "late"}
    ts = C.cosine_timeseries_figure(gs, "all", mark_step=3)
    assert len(ts.data) == 3


# ---- pareto ------------------------------------------------------------------------------------

# x = task_1/mse (lower is better), y = task_2/auc (higher is better)
PARETO_RUNS = pd.DataFrame(
    {
        "run_id": [f"r{i}" for i in range(6)],
        "balancer": ["ew", "ew", "pcgrad", "pcgrad", "uw", "uw"],
        "arch": ["mmoe"] * 6,
        "task_1/mse": [1.0, 2.0, 1.5, 3.0, 2.5, np.nan],
        "task_2/auc": [0.70, 0.90, 0.80, 0.60, 0.85, 0.99],
    }
)
EXPECTED_FRONT = {"r0", "r1", "r2"}  # r3 dominated by r0/r2, r4 by r1, r5 missing x


def test_pareto_info_marks_the_front_with_correct_directions() -> None:
    info = pareto_info(PARETO_RUNS, "task_1/mse", "task_2/auc")
    assert (info.hib_x, info.hib_y) == (False, True)
    assert set(info.front_run_ids) == EXPECTED_FRONT
    assert info.n_missing == 1
    vals = PARETO_RUNS[["task_1/mse", "task_2/auc"]].to_numpy()[:5]
    assert info.hypervolume == pytest.approx(hypervolume(vals, [False, True], info.reference))
    assert info.hypervolume > 0
    # reference is worse than every point in both directions
    assert info.reference[0] > 3.0 and info.reference[1] < 0.6
    # the step line is monotone: x rises, y rises (lower x better, higher y better)
    assert np.all(np.diff(info.front_x) >= 0) and np.all(np.diff(info.front_y) >= 0)


def test_pareto_figure_marks_non_dominated_points() -> None:
    info = pareto_info(PARETO_RUNS, "task_1/mse", "task_2/auc", color_by="balancer")
    fig = pareto_figure(info)
    names = [t.name for t in fig.data]
    assert FRONT_TRACE in names and REFERENCE_TRACE in names
    front_ids, dominated_ids = set(), set()
    for t in fig.data:
        if t.customdata is None or t.mode != "markers":
            continue
        flags = {row[1] for row in t.customdata}
        assert len(flags) == 1
        ids = {row[0] for row in t.customdata}
        if flags == {ON_FRONT}:
            assert t.marker.opacity == 1.0 and t.marker.symbol == "circle"
            front_ids |= ids
        else:
            assert flags == {DOMINATED}
            assert t.marker.opacity == DOMINATED_OPACITY and t.marker.symbol == "circle-open"
            assert t.name.endswith("(dominated)")
            dominated_ids |= ids
    assert front_ids == EXPECTED_FRONT
    assert dominated_ids == {"r3", "r4"}
    assert "hypervolume" in fig.layout.title.text
    # a click maps back to its run, by customdata or by coordinates
    assert run_at({"customdata": ["r2", ON_FRONT]}, info) == "r2"
    assert run_at({"x": 2.0, "y": 0.9}, info) == "r1"
    assert run_at({"x": 9.0, "y": 0.1}, info) is None


def test_pareto_agrees_with_engine_mask_on_random_points() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(60)],
            "balancer": "ew",
            "a/auc": rng.random(60),
            "b/logloss": rng.random(60),
        }
    )
    info = pareto_info(df, "a/auc", "b/logloss")
    mask = non_dominated_mask(df[["a/auc", "b/logloss"]].to_numpy(), [True, False])
    assert set(info.front_run_ids) == set(df.loc[mask, "run_id"])


def test_pareto_empty_and_missing_columns() -> None:
    info = pareto_info(PARETO_RUNS, "task_1/mse", "nope/auc")
    assert info.points.empty and pareto_figure(info).layout.annotations


def test_parallel_coordinates_orient_axes_up_is_better() -> None:
    df = PARETO_RUNS.assign(**{"task_3/logloss": [0.3, 0.2, 0.25, 0.5, 0.4, 0.1]})
    info = parallel_info(df, ["task_1/mse", "task_2/auc", "task_3/logloss"], "balancer")
    assert info.higher_is_better == [False, True, False]
    assert len(info.points) == 5  # r5 lacks task_1
    fig = parallel_figure(info)
    dims = fig.data[0].dimensions
    assert dims[0].range[0] > dims[0].range[1]  # lower-is-better axis flipped
    assert dims[1].range[0] < dims[1].range[1]
    assert dims[-1].label == "Pareto front"
    assert {t.name for t in fig.data[1:]} == {"ew", "pcgrad", "uw"}


# ---- transfer ----------------------------------------------------------------------------------


def test_transfer_signs_negative_transfer_and_delta_m() -> None:
    finals = pd.DataFrame(
        [
            ("m1", "a", "auc", 0.80),
            ("m1", "b", "mse", 1.2),
            ("s1", "a", "auc", 0.75),
            ("s1", "b", "mse", 1.0),
        ],
        columns=["run_id", "task", "metric", "value"],
    )
    info = transfer_info(finals, {"m1": "s1", "m2": None}, {"a": "auc", "b": "mse"}, {"m1": "MTL"})
    rows = info.rows.set_index("task")
    assert rows.loc["a", "change_pct"] == pytest.approx((0.80 - 0.75) / 0.75 * 100)
    assert rows.loc["b", "change_pct"] == pytest.approx(-20.0)
    assert not rows.loc["a", "negative"] and rows.loc["b", "negative"]
    assert info.delta["delta_m"].item() == pytest.approx((rows.loc["a", "change_pct"] - 20.0) / 2)
    fig = transfer_figure(info)
    assert list(fig.data[0].marker.color) == ["#2ca02c", "#d62728"]
    assert "negative transfer" in fig.layout.title.text
    assert delta_m_figure(info).data[0].x[0] == pytest.approx(info.delta["delta_m"].item())
    assert transfer_info(finals, {"m1": None}, {"a": "auc"}).empty


# ---- diagram, simplex, params form -------------------------------------------------------------


def test_diagram_layers_inputs_on_top_outputs_at_the_bottom() -> None:
    from dashboard.registry import arch_diagram, dataset_tasks

    tasks, err = dataset_tasks("synthetic-correlation", {"n_tasks": 3})
    assert err is None and len(tasks) == 3
    for arch in ("mmoe", "shared-bottom", "single-task"):
        d, err = arch_diagram(arch, tasks, {})
        assert err is None
        info = diagram_info(d)
        ys = {n[0]: info.pos[n[0]][1] for n in info.nodes}
        inputs = [i for i, _, k in info.nodes if k == "input"]
        outputs = [i for i, _, k in info.nodes if k == "output"]
        assert len(outputs) == 3
        assert min(ys[i] for i in inputs) > max(ys[o] for o in outputs)
        fig = diagram_figure(info)
        assert fig.data[0].name == "edges"
    d, _ = arch_diagram("mmoe", tasks, {"n_experts": 5})
    assert sum(1 for n in d["nodes"] if n[2] == "expert") == 5
    _, err = arch_diagram("mmoe", tasks, {"n_experts": 0})
    assert err and "n_experts" in err


@pytest.mark.parametrize(("n", "res", "count"), [(2, 4, 5), (3, 4, 15), (3, 2, 6), (2, 1, 2)])
def test_simplex_grid_counts_and_sums(n: int, res: int, count: int) -> None:
    grid = simplex_grid(n, res)
    assert len(grid) == count == math.comb(res + n - 1, n - 1)
    assert all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in grid)
    inner = simplex_grid(n, res, include_corners=False)
    assert all(min(w) > 0 for w in inner)
    assert len(simplex_figure(grid, [f"t{i}" for i in range(n)]).data) >= 1


def test_rebalance_keeps_weights_on_the_simplex() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 5))
        vals = list(rng.dirichlet(np.ones(n)))
        i = int(rng.integers(0, n))
        vals[i] = float(rng.random())
        out = rebalance(vals, i)
        assert sum(out) == pytest.approx(1.0, abs=1e-6)
        assert all(-1e-9 <= v <= 1 + 1e-9 for v in out)
        assert out[i] == pytest.approx(vals[i], abs=0.011)
    assert rebalance([1.0, 0.0, 0.0], 0) == [1.0, 0.0, 0.0]
    assert rebalance([0.4, 0.0, 0.0], 0) == pytest.approx([0.4, 0.3, 0.3])
    assert normalise([0, 0]) == [0.5, 0.5] and normalise([1, 3]) == [0.25, 0.75]


def test_field_specs_cover_every_registry_entry() -> None:
    from engine.balancers import BALANCERS
    from engine.datasets import DATASETS
    from engine.models import MODELS

    kinds = {"bool", "int", "float", "enum", "text", "list", "json", "weights"}
    for reg in (DATASETS, MODELS, BALANCERS):
        for entry in reg.values():
            for spec in field_specs(entry.Params):
                assert spec.kind in kinds
    fixed = {s.name: s for s in field_specs(BALANCERS["fixed"].Params)}
    assert fixed["weights"].kind == "weights" and fixed["weights"].nullable
    mmoe = {s.name: s for s in field_specs(MODELS["mmoe"].Params)}
    assert mmoe["n_experts"].kind == "int" and mmoe["n_experts"].minimum == 1
    assert mmoe["expert_hidden"].kind == "list" and mmoe["expert_hidden"].item_type == "integer"
    assert mmoe["expert_hidden"].default == [64, 32]


def test_field_specs_generic_types_and_parsing() -> None:
    from typing import Literal

    class P(BaseModel):
        flag: bool = True
        mode: Literal["a", "b"] = "b"
        rate: float = Field(0.1, gt=0, le=1)
        sizes: list[int] = Field(default_factory=lambda: [4, 2])
        name: str = "x"
        extra: dict[str, list[int]] | None = None

    specs = {s.name: s for s in field_specs(P)}
    assert [specs[k].kind for k in ("flag", "mode", "rate", "sizes", "name", "extra")] == [
        "bool",
        "enum",
        "float",
        "list",
        "text",
        "json",
    ]
    assert specs["mode"].options == ("a", "b") and specs["rate"].maximum == 1
    assert parse_text(specs["sizes"], "64, 32 ,16") == [64, 32, 16]
    assert parse_text(specs["sizes"], "") is None
    with pytest.raises(ValueError, match="whole numbers"):
        parse_text(specs["sizes"], "64, x")
    assert parse_text(specs["extra"], '{"k": [1]}') == {"k": [1]}
    with pytest.raises(ValueError, match="JSON"):
        parse_text(specs["extra"], "{bad")


# ---- launch helpers, presets ------------------------------------------------------------------


def test_parse_seeds() -> None:
    assert parse_seeds("0") == [0]
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    assert parse_seeds("3-5, 3") == [3, 4, 5]
    for bad in ("", "a", "5-3", "-1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_sweep_configs_are_valid_fixed_runs_with_one_sweep_id() -> None:
    base = {
        "dataset": "synthetic-correlation",
        "dataset_params": {"n_samples": 200, "dim": 4},
        "arch": "shared-bottom",
        "balancer": "pcgrad",
        "epochs": 1,
        "tags": ["x"],
    }
    cfgs = sweep_configs(base, ["task_1", "task_2"], 4, [0, 1])
    assert len(cfgs) == 10
    assert len({c["sweep_id"] for c in cfgs}) == 1
    assert all(c["balancer"] == "fixed" and "sweep" in c["tags"] for c in cfgs)
    assert validate(cfgs) == []
    with pytest.raises(ValueError):
        sweep_configs(base, ["a"], 4, [0])
    assert [c["seed"] for c in run_configs({**base, "name": "n"}, [0, 1])] == [0, 1]
    assert validate([{**base, "arch": "nope"}])[0].startswith("unknown arch")


def test_presets_are_small_valid_configs() -> None:
    assert len(PRESETS) == 3
    assert validate([c for p in PRESETS for c in p.configs]) == []
    quick = PRESETS[0].configs
    assert all(c["dataset"] == "synthetic-correlation" for c in quick)
    assert all(c["dataset_params"]["n_samples"] <= 5000 for c in quick)


# ---- baselines ---------------------------------------------------------------------------------


def test_baselines_find_match_and_queue_missing(tmp_path: Path) -> None:
    from engine import baselines as B
    from engine.config import load_config
    from engine.store import Lake

    lake = Lake(tmp_path)
    base = {
        "dataset": "synthetic-correlation",
        "dataset_params": {"n_samples": 500, "dim": 8},
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.01,
        "seed": 3,
    }
    mtl = lake.create_run(load_config({**base, "arch": "mmoe", "balancer": "pcgrad"}))
    other_seed = lake.create_run(load_config({**base, "seed": 4, "arch": "mmoe", "balancer": "ew"}))
    st_ok = lake.create_run(
        load_config({**base, "arch": "single-task", "balancer": "ew", "tasks": ["task_1", "task_2"]})
    )
    lake.set_status(st_ok, state="finished")
    lake.create_run(load_config({**base, "lr": 0.02, "arch": "single-task", "balancer": "ew"}))  # lr differs
    found = B.find_baselines(lake, [mtl, other_seed, st_ok])
    assert found == {mtl: st_ok, other_seed: None, st_ok: st_ok}
    made = B.ensure_baselines(lake, [mtl, other_seed])
    assert made[mtl] == (st_ok, False)
    new_id, created = made[other_seed]
    assert created and new_id
    cfg = lake.config(new_id)
    assert (cfg["arch"], cfg["balancer"], cfg["seed"]) == ("single-task", "ew", 4)
    assert B.baseline_key(cfg) == B.baseline_key(lake.config(other_seed))
    assert B.ensure_baselines(lake, [other_seed])[other_seed] == (new_id, False)  # no duplicate
