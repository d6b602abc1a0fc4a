"""COSMOS: the preference-conditioned model, its loss, its run directory and the learned-front API."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import load_config
from engine.cosmos import (
    PARAMS_FILE,
    conditioned_features,
    cosmos_config,
    cosmos_loss,
    cosmos_run_ids,
    eval_rays,
    evaluate_preference,
    evaluate_preferences,
    is_cosmos_run,
    learned_front,
    load_cosmos,
    params_from,
    run_cosmos,
    train_cosmos,
    with_preference,
)
from engine.datasets import load_dataset
from engine.datasets.base import Split
from engine.models import build_model
from engine.store import Lake
from engine.train import evaluate

TINY = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 800, "dim": 8, "correlation": -0.5},
    "threads": 1,
    "arch": "mmoe",
    "epochs": 2,
    "batch_size": 64,
}


@pytest.fixture(scope="module")
def lake_and_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, str]:
    torch.set_num_threads(1)
    lake = Lake(tmp_path_factory.mktemp("cosmos") / "lake")
    rid = run_cosmos(load_config(TINY), {"alpha": 1.0, "lam": 0.5, "conditioning": "input"}, lake)
    return lake, rid


def test_cosmos_loss_is_the_scalarisation_minus_the_cosine_penalty() -> None:
    L = torch.tensor([2.0, 1.0, 4.0])
    r = torch.tensor([0.5, 0.25, 0.25])
    linear = 0.5 * 2 + 0.25 * 1 + 0.25 * 4
    cos = (1.0 + 0.25 + 1.0) / (math.sqrt(4 + 1 + 16) * math.sqrt(0.25 + 0.0625 + 0.0625))
    assert float(cosmos_loss(L, r, 2.0)) == pytest.approx(linear - 2.0 * cos)
    assert float(cosmos_loss(L, r, 0.0)) == pytest.approx(linear)


def test_the_preference_is_appended_to_the_dense_features() -> None:
    data = load_dataset("synthetic-correlation", {"n_samples": 200, "dim": 4}, 0)
    feats = conditioned_features(data.features, data.task_names)
    assert feats.dense_names[-2:] == ("pref:task_1", "pref:task_2") and feats.n_dense == 6
    batch = {"dense": torch.zeros(3, 4)}
    out = with_preference(batch, torch.tensor([0.25, 0.75]))
    assert out["dense"].shape == (3, 6)
    assert out["dense"][:, -2:].tolist() == [[0.25, 0.75]] * 3
    assert batch["dense"].shape == (3, 4)  # the caller's batch is untouched
    cat_only = with_preference({"cat": torch.zeros(2, 1, dtype=torch.long)}, torch.tensor([1.0, 0.0]))
    assert cat_only["dense"].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_the_conditioned_models_outputs_change_with_the_preference(lake_and_run: tuple[Lake, str]) -> None:
    # by construction (an untrained conditioned model) ...
    data = load_dataset("synthetic-correlation", {"n_samples": 200, "dim": 4}, 0)
    torch.manual_seed(0)
    model = build_model("mmoe", conditioned_features(data.features, data.task_names), data.tasks, {})
    x = {"dense": data.val.features["dense"][:16]}
    a = model(with_preference(x, torch.tensor([1.0, 0.0])))
    b = model(with_preference(x, torch.tensor([0.0, 1.0])))
    assert all(not torch.allclose(a[t], b[t]) for t in data.task_names)
    # ... and after training: the metrics move along a front as the preference moves
    lake, rid = lake_and_run
    front = learned_front(rid, 5, lake, split="val")
    assert front["task_1/mse"].nunique() == 5 and front["task_2/mse"].nunique() == 5
    first = evaluate_preference(rid, [1.0, 0.0], lake)
    last = evaluate_preference(rid, [0.0, 1.0], lake)
    assert first["task_1"]["mse"] != last["task_1"]["mse"]


def test_a_cosmos_run_is_an_ordinary_run_directory(lake_and_run: tuple[Lake, str]) -> None:
    lake, rid = lake_and_run
    st = lake.status(rid)
    assert st["state"] == "finished", st.get("error")
    assert set(st["summary"]) == {"task_1", "task_2"}
    assert is_cosmos_run(lake, rid) and (lake.run_dir(rid) / PARAMS_FILE).is_file()
    cfg = lake.config(rid)
    assert "cosmos" in cfg["tags"] and cfg["name"].startswith("COSMOS")
    ckpt = torch.load(lake.run_dir(rid) / "checkpoint.pt", weights_only=True)
    assert params_from(__import__("json").loads(ckpt["cosmos"])).lam == 0.5
    m = lake.metrics([rid])
    assert set(m["split"]) == {"train", "val", "test"}
    w = lake.task_weights([rid])
    sums = w.groupby("step")["weight"].sum()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)  # the sampled preferences, one per step
    assert w["weight"].nunique() > 2
    assert "val_scalarised_loss" in set(lake.balancer_stats([rid])["name"])
    assert not is_cosmos_run(lake, "20000101-000000-abcdef")
    assert rid in cosmos_run_ids(lake, dataset="synthetic-correlation")
    assert cosmos_run_ids(lake, dataset="adult") == []


def test_learned_front_matches_single_preferences_and_the_trainers_evaluate(
    lake_and_run: tuple[Lake, str],
) -> None:
    lake, rid = lake_and_run
    prefs = np.array([[0.2, 0.8], [0.5, 0.5], [3.0, 1.0]])
    front = learned_front(rid, prefs, lake, split="test")
    assert list(front.columns[:2]) == ["pref/task_1", "pref/task_2"]
    assert {"task_1/mse", "task_1/mae", "task_1/loss", "task_2/mse"} <= set(front.columns)
    np.testing.assert_allclose(front[["pref/task_1", "pref/task_2"]].iloc[2], [0.75, 0.25])
    for i, p in enumerate(prefs):
        one = evaluate_preference(rid, p, lake, split="test")
        assert front["task_2/mse"].iloc[i] == pytest.approx(one["task_2"]["mse"], rel=1e-5)
    # the same numbers as engine.train.evaluate on the split with the preference columns appended
    loaded = load_cosmos(rid, lake)
    split = loaded.splits["test"]
    r = torch.tensor([0.2, 0.8])
    with_pref = Split(with_preference(split.features, r), split.targets, split.masks)
    ref = evaluate(loaded.model, with_pref, loaded.data)
    for t in ("task_1", "task_2"):
        assert front[f"{t}/mse"].iloc[0] == pytest.approx(ref[t]["mse"], rel=1e-5)
        assert front[f"{t}/loss"].iloc[0] == pytest.approx(ref[t]["loss"], rel=1e-5)
    by_name = evaluate_preference(rid, {"task_1": 0.2, "task_2": 0.8}, lake, split="test")
    assert by_name == evaluate_preference(rid, [0.2, 0.8], lake, split="test")


def test_bad_preferences_and_non_cosmos_runs_are_refused(
    lake_and_run: tuple[Lake, str], tmp_path: Path
) -> None:
    lake, rid = lake_and_run
    for bad in ([1.0], [0.0, 0.0], [-1.0, 2.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError):
            evaluate_preference(rid, bad, lake)
    plain = lake.create_run(load_config(TINY), state="finished")
    with pytest.raises(ValueError, match="not a COSMOS run"):
        learned_front(plain, 3, lake)
    with pytest.raises(ValueError, match=r"cosmos\.lam"):
        params_from({"lam": -1})


@pytest.mark.parametrize("conditioning", ["input", "hypernet"])
def test_training_is_deterministic_and_packing_preferences_changes_nothing(conditioning: str) -> None:
    cp = {"alpha": 2.0, "lam": 1.0, "conditioning": conditioning}
    cfg = cosmos_config(load_config({**TINY, "epochs": 1}), cp)
    a = train_cosmos(cfg, cp)
    b = train_cosmos(cfg, cp)
    assert a.model is not None and b.model is not None
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k])
    data = load_dataset(TINY["dataset"], TINY["dataset_params"], 0)
    rays = eval_rays(2, 7)
    together = evaluate_preferences(a.model, data.val, data, rays)
    alone = [evaluate_preferences(a.model, data.val, data, r)[0] for r in rays]
    for x, y in zip(together, alone, strict=True):
        assert x["task_1"]["mse"] == pytest.approx(y["task_1"]["mse"], rel=1e-5)


def test_eval_rays_cover_the_simplex() -> None:
    r2 = eval_rays(2, 5)
    assert r2.shape == (5, 2) and r2[0].tolist() == [0.0, 1.0] and r2[-1].tolist() == [1.0, 0.0]
    r3 = eval_rays(3, 6)
    np.testing.assert_allclose(r3.sum(axis=1), 1.0)
    assert any(np.allclose(r, 1 / 3) for r in r3)


def test_cli_trains_a_cosmos_run_and_prints_its_front(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from engine.cli import main

    home = tmp_path / "lake"
    args = [
        "--home",
        str(home),
        "cosmos",
        "--dataset",
        "synthetic-correlation",
        "--dataset-param",
        "n_samples=400",
        "--dataset-param",
        "dim=4",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--front",
        "3",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "learned front" in out and "pref/task_1" in out
    rid = Lake(home).run_ids()[0]
    assert main(["--home", str(home), "cosmos-front", rid, "--pref", "0.3,0.7", "--split", "test"]) == 0
    assert "0.3000" in capsys.readouterr().out
