"""Population sweeps: a batched member equals a separately trained run; sweeps land in the lake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from engine.config import RunConfig, load_config
from engine.datasets.base import FeatureSpec, TaskSpec
from engine.gradients import jacobian
from engine.models import MODELS
from engine.models.base import MLP, ModelParams, MTLModel
from engine.population import (
    PopulationError,
    PopulationModel,
    _batched_metric,
    batch_problem,
    config_problem,
    error_of,
    train_population,
)
from engine.store import Lake
from engine.sweeps import (
    grid_of_size,
    grid_size,
    launch_sweep,
    random_simplex,
    run_sweep,
    simplex_grid,
    sweep_info,
    sweep_runs,
    weight_vectors,
)
from engine.train import NullWriter, load_checkpoint, train

TINY = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 600, "dim": 8},
    "threads": 1,
    "epochs": 2,
    "batch_size": 64,
    "grad_stats_every": 3,
}


@pytest.fixture(autouse=True)
def _deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)
    torch.set_num_threads(threads)


def _cfg(weights: dict[str, float] | None = None, **kw: object) -> RunConfig:
    d: dict[str, object] = {**TINY, "balancer": "fixed", **kw}
    if weights is not None:
        d["balancer_params"] = {"weights": weights}
    return load_config(d)


def _max_param_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


# ------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("arch", "route"),
    [("mmoe", "auto"), ("omoe", "auto"), ("shared-bottom", "auto"), ("mmoe", "vmap")],
)
def test_each_member_equals_a_separately_trained_run(arch: str, route: str) -> None:
    # "auto" takes the hand-batched route (engine.stacked) for these three; "vmap" the general one
    weights = [{"task_1": 0.2, "task_2": 0.8}, {"task_1": 1.0, "task_2": 0.0}]
    cfgs = [_cfg(w, arch=arch, seed=s) for w in weights for s in (0, 3)]  # two seeds: per-member data
    writers = [NullWriter() for _ in cfgs]
    results = train_population(cfgs, writers, route=route)
    for k, cfg in enumerate(cfgs):
        alone_w = NullWriter()
        alone = train(cfg, alone_w)
        member = results[k]
        assert member.state == "finished" and member.steps == alone.steps
        assert member.best_epoch == alone.best_epoch
        assert alone.model is not None and member.model is not None
        assert _max_param_diff(alone.model, member.model) < 1e-5
        for task, vals in alone.test.items():
            for metric, v in vals.items():
                assert member.test[task][metric] == pytest.approx(v, rel=1e-4, abs=1e-6)
        # the member logged what the separate run logged: the same train-loss rows and steps
        ours = [(r["step"], r["task"], r["split"]) for r in writers[k].metric_rows]
        theirs = [(r["step"], r["task"], r["split"]) for r in alone_w.metric_rows]
        assert ours == theirs
        a = [r["value"] for r in writers[k].metric_rows if r["split"] == "train"]
        b = [r["value"] for r in alone_w.metric_rows if r["split"] == "train"]
        np.testing.assert_allclose(a, b, rtol=1e-4)
        assert [s for s, _ in writers[k].weight_rows] == [s for s, _ in alone_w.weight_rows]
        assert writers[k].weight_rows[0][1] == pytest.approx(weights[k // 2])
        # gradient statistics at the same steps, same values
        assert [s for s, _ in writers[k].grad_rows] == [s for s, _ in alone_w.grad_rows]
        ga = [(r.layer, r.task_i, r.task_j, r.cosine) for r in writers[k].grad_rows[-1][1]]
        gb = [(r.layer, r.task_i, r.task_j, r.cosine) for r in alone_w.grad_rows[-1][1]]
        assert [x[:3] for x in ga] == [x[:3] for x in gb]
        np.testing.assert_allclose([x[3] for x in ga], [x[3] for x in gb], atol=1e-4)


@pytest.mark.parametrize("arch", ["mmoe", "shared-bottom"])
def test_hand_batched_members_with_embeddings_and_label_masks_equal_separate_runs(arch: str) -> None:
    # recsys-sim: categorical features (per-member embedding tables), binary tasks, and with
    # label_space "clicked" label masks; one seed, so all members share each batch
    data = {"n_users": 50, "n_items": 40, "n_impressions": 2000, "label_space": "clicked"}
    base = {**TINY, "dataset": "recsys-sim", "dataset_params": data, "max_steps_per_epoch": 4}
    tasks = ["click", "cart", "purchase"]
    cfgs = [
        _cfg(dict(zip(tasks, w, strict=True)), **{**base, "arch": arch, "grad_stats_every": 2})
        for w in ([1.0, 0.5, 0.2], [0.1, 0.1, 1.0])
    ]
    assert all(c.dataset == "recsys-sim" for c in cfgs)
    writers = [NullWriter() for _ in cfgs]
    results = train_population(cfgs, writers)
    for k, cfg in enumerate(cfgs):
        alone_w = NullWriter()
        alone = train(cfg, alone_w)
        assert alone.model is not None and results[k].model is not None
        assert _max_param_diff(alone.model, results[k].model) < 1e-5
        for task, vals in alone.test.items():
            for metric, v in vals.items():  # AUC is NaN where a masked test set has one class
                assert results[k].test[task][metric] == pytest.approx(v, rel=1e-4, abs=1e-6, nan_ok=True)
        ga = [r.cosine for r in writers[k].grad_rows[-1][1]]
        gb = [r.cosine for r in alone_w.grad_rows[-1][1]]
        np.testing.assert_allclose(ga, gb, atol=1e-4)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_fused_optimiser_matches_the_separate_runs_optimiser(optimizer: str) -> None:
    cfgs = [
        _cfg(w, arch="mmoe", optimizer=optimizer, lr=0.01, weight_decay=0.01, epochs=1)
        for w in ({"task_1": 0.3, "task_2": 0.7}, {"task_1": 1.0, "task_2": 0.0})
    ]
    for cfg, member in zip(cfgs, train_population(cfgs), strict=True):
        alone = train(cfg)
        assert member.model is not None and alone.model is not None
        assert _max_param_diff(alone.model, member.model) < 1e-5


def test_the_hand_batched_route_is_taken_where_it_applies(branchy: str) -> None:
    from engine.datasets import load_dataset
    from engine.models import build_model

    data = load_dataset("synthetic-correlation", {"n_samples": 600, "dim": 8}, 0)

    def pop(arch: str, **params: object) -> PopulationModel:
        return PopulationModel([build_model(arch, data.features, data.tasks, params) for _ in range(3)])

    for arch in ("mmoe", "omoe", "shared-bottom"):
        p = pop(arch)
        assert p.route == "hand-batched"
        # the leaves hold exactly each member's state_dict
        models = [build_model(arch, data.features, data.tasks, {}) for _ in range(3)]
        p = PopulationModel(models)
        for k, m in enumerate(models):
            st = p.member_state(k)
            assert set(st) == set(m.state_dict())
            assert all(torch.equal(st[n], v) for n, v in m.state_dict().items())
    assert pop("mmoe", dropout=0.1).route == "vmap"  # dropout: not hand-batched
    assert pop("cgc").route == "vmap"
    assert pop(branchy).route == "vmap"
    assert PopulationModel([build_model("mmoe", data.features, data.tasks, {})], fast=False).route == "vmap"


def test_batched_metrics_equal_the_metric_functions() -> None:
    from engine import metrics as M

    rng = np.random.default_rng(0)
    y = rng.standard_normal(500).astype(np.float32)
    P = rng.standard_normal((4, 500)).astype(np.float32)
    yb = (rng.random(500) > 0.5).astype(np.float32)
    Pb = rng.random((4, 500)).astype(np.float32)
    for metric, yy, PP in (("mse", y, P), ("mae", y, P), ("accuracy", yb, Pb)):
        got = _batched_metric(metric, yy, PP)
        assert got is not None
        assert got == pytest.approx([M.compute(metric, yy, PP[i]) for i in range(4)], rel=1e-6)
    assert _batched_metric("auc", yb, Pb) is None  # computed member by member


def test_members_stop_early_on_their_own_like_separate_runs() -> None:
    # a large step size overfits 420 rows quickly; patience 1 stops each member when it stops gaining
    cfgs = [
        _cfg(w, arch="shared-bottom", epochs=12, lr=0.05, patience=1, grad_stats_every=0)
        for w in ({"task_1": 1.0, "task_2": 0.0}, {"task_1": 0.1, "task_2": 0.9})
    ]
    results = train_population(cfgs)
    for cfg, member in zip(cfgs, results, strict=True):
        alone = train(cfg)
        assert (member.steps, member.best_epoch) == (alone.steps, alone.best_epoch)
        assert member.model is not None and alone.model is not None
        assert _max_param_diff(alone.model, member.model) < 1e-5
    assert any(r.steps < 12 * 7 for r in results)  # early stopping did happen


def test_a_diverging_member_fails_alone() -> None:
    cfgs = [
        _cfg({"task_1": 1e5, "task_2": 1e5}, arch="shared-bottom", optimizer="sgd", lr=1.0, epochs=3),
        _cfg({"task_1": 1e-6, "task_2": 1e-6}, arch="shared-bottom", optimizer="sgd", lr=1.0, epochs=3),
    ]
    bad, good = train_population(cfgs)
    assert bad.state == "failed" and "learning rate" in error_of(bad)
    assert good.state == "finished" and good.test and error_of(good) == ""


@pytest.mark.parametrize("fast", [True, False])
def test_shared_jacobians_equal_each_members_own_jacobian(fast: bool) -> None:
    from engine.datasets import load_dataset
    from engine.models import build_model

    data = load_dataset("synthetic-correlation", {"n_samples": 600, "dim": 8}, 0)
    models = []
    for s in (0, 1, 2):
        torch.manual_seed(s)
        models.append(build_model("mmoe", data.features, data.tasks, {}))
    pop = PopulationModel(models, fast=fast)
    assert pop.route == ("hand-batched" if fast else "vmap")
    idx = torch.arange(32)
    batch = (
        {k: v[idx] for k, v in data.train.features.items()},
        {k: v[idx] for k, v in data.train.targets.items()},
        {},
    )
    J = pop.shared_jacobians(pop.losses(batch, batched=False))
    for k, m in enumerate(models):
        out = m(batch[0])
        ld = m.task_losses(out, batch[1], {})
        Jk = jacobian(torch.stack([ld[t] for t in m.task_names]), m.shared_parameters())
        torch.testing.assert_close(J[k], Jk, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- what batches


def test_config_problems_name_the_reason() -> None:
    assert config_problem([_cfg(), _cfg(seed=1)]) is None
    assert "pcgrad" in (config_problem([_cfg(), _cfg(balancer="pcgrad")]) or "")
    assert "'lr'" in (config_problem([_cfg(), _cfg(lr=0.01)]) or "")
    assert config_problem([]) == "no runs to train"


class _BranchyParams(ModelParams):
    pass


class _Branchy(MTLModel):
    """A model whose forward branches on data: vmap cannot batch it."""

    name: ClassVar[str] = "branchy-test"
    description: ClassVar[str] = "test only"
    Params: ClassVar[type[ModelParams]] = _BranchyParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: ModelParams) -> None:
        super().__init__(features, tasks, params)
        self.body = MLP(features.n_dense, [8])
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in tasks)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.body(batch["dense"])
        if h.sum() > 0:  # data-dependent control flow
            h = h * 1.0
        return {t.name: head(h).squeeze(-1) for t, head in zip(self.tasks, self.heads, strict=True)}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        return {"body": list(self.body.parameters())}


@pytest.fixture
def branchy(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(MODELS, "branchy-test", _Branchy)
    return "branchy-test"


def test_an_unbatchable_architecture_is_detected(branchy: str) -> None:
    why = batch_problem([_cfg(arch=branchy)])
    assert why is not None and "vmap" in why and branchy in why
    assert batch_problem([_cfg(arch="mmoe")]) is None


class _OwnTraining(MODELS["shared-bottom"]):  # type: ignore[misc,valid-type]
    """A model with its own training procedure (as MetaHeac's episodic meta-training)."""

    name: ClassVar[str] = "own-training-test"

    def training_losses(
        self, feats: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {t: 2.0 * v for t, v in super().training_losses(feats, targets, masks).items()}


def test_an_architecture_with_its_own_training_losses_is_not_batched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(MODELS, "own-training-test", _OwnTraining)
    why = batch_problem([_cfg(arch="own-training-test")])
    assert why is not None and "training_losses" in why and "own-training-test" in why
    assert "training_losses" in (batch_problem([_cfg(arch="metaheac")]) or "")
    with pytest.raises(PopulationError, match="training_losses"):
        train_population([_cfg(arch="own-training-test")])
    # a sweep of it falls back to separate runs, which train with the model's own losses
    lake = Lake(tmp_path / "lake")
    res = run_sweep({**TINY, "arch": "own-training-test", "epochs": 1}, [[1.0, 0.0], [0.0, 1.0]], lake=lake)
    assert res.mode == "sequential" and "training_losses" in res.reason
    assert set(res.states.values()) == {"finished"}


# ---------------------------------------------------------------------- weight vectors


def test_simplex_grids_and_random_weights() -> None:
    g = simplex_grid(3, 4)
    assert g.shape == (grid_size(3, 4), 3) == (15, 3)
    np.testing.assert_allclose(g.sum(axis=1), 1.0)
    assert len({tuple(r) for r in g}) == len(g)
    assert {tuple(r) for r in np.eye(3)} <= {tuple(r) for r in g}
    two = grid_of_size(2, 16)
    assert two.shape == (16, 2) and two[0].tolist() == [1.0, 0.0] and two[-1].tolist() == [0.0, 1.0]
    assert len(grid_of_size(3, 16)) == 15 and len(grid_of_size(5, 16)) == 15
    r = random_simplex(4, 10, seed=1)
    assert r.shape == (10, 4) and np.all(r >= 0)
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    np.testing.assert_array_equal(weight_vectors(4, 10, "random", seed=1), r)
    with pytest.raises(ValueError, match="kind"):
        weight_vectors(2, 4, "spiral")


# -------------------------------------------------------------------------- in the lake


def test_run_sweep_trains_a_population_with_one_run_per_member(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    base = {**TINY, "arch": "mmoe", "epochs": 1}
    res = run_sweep(base, grid_of_size(2, 3), seeds=(0, 1), lake=lake)
    assert res.mode == "population" and res.reason == ""
    assert len(res.run_ids) == 6 and set(res.states.values()) == {"finished"}
    runs = sweep_runs(lake, res.sweep_id)
    assert sorted(runs["run_id"]) == sorted(res.run_ids)
    assert set(runs["status"]) == {"finished"} and set(runs["balancer"]) == {"fixed"}
    assert runs["task_1/mse"].notna().all()
    assert sorted(runs["w/task_1"].round(3)) == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    info = sweep_info(lake, res.sweep_id)
    assert info["mode"] == "population" and info["seeds"] == [0, 1, 0, 1, 0, 1]
    # every member logged its own rows, events and checkpoint
    m = lake.metrics(res.run_ids, split="train")
    assert set(m["run_id"]) == set(res.run_ids)
    w = lake.task_weights([res.run_ids[0]])
    assert set(w["weight"].round(3)) == {0.0, 1.0}
    ev = lake.events([res.run_ids[2]])
    assert ev["text"].str.contains("member 3 of a population of 6").any()
    ckpt = load_checkpoint(lake.run_dir(res.run_ids[0]) / "checkpoint.pt")
    assert set(ckpt) == {"state_dict", "config", "epoch"}


def test_a_sweep_that_cannot_batch_runs_separately_and_says_why(tmp_path: Path, branchy: str) -> None:
    lake = Lake(tmp_path / "lake")
    base = {**TINY, "arch": branchy, "epochs": 1}
    res = run_sweep(base, [[1.0, 0.0], [0.0, 1.0]], lake=lake)
    assert res.mode == "sequential" and "vmap" in res.reason
    assert set(res.states.values()) == {"finished"}
    for rid in res.run_ids:
        texts = lake.events([rid])["text"]
        assert texts.str.contains("not as part of a batched population").any()
        assert texts.str.contains("vmap").any()
    queued = run_sweep(base, [[1.0, 0.0], [0.5, 0.5]], lake=lake, executor="queue")
    assert queued.mode == "queued"
    for rid in queued.run_ids:
        assert lake.status(rid)["state"] == "queued"
        assert not (lake.run_dir(rid) / "claim").exists()  # the worker may claim it
        assert lake.events([rid])["text"].str.contains("vmap").any()
    with pytest.raises(ValueError, match="vmap"):
        run_sweep(base, [[1.0, 0.0]], lake=lake, mode="population")


def test_launch_sweep_trains_in_a_detached_process(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    res = launch_sweep({**TINY, "arch": "shared-bottom", "epochs": 1}, [[1.0, 0.0], [0.0, 1.0]], lake=lake)
    assert res.mode == "population" and res.process is not None
    assert res.process.wait(timeout=120) == 0
    deadline = time.time() + 10
    while time.time() < deadline and any(lake.status(r)["state"] != "finished" for r in res.run_ids):
        time.sleep(0.1)
    assert [lake.status(r)["state"] for r in res.run_ids] == ["finished", "finished"]


def test_a_group_with_an_adaptive_balancer_is_queued_with_the_reason(tmp_path: Path) -> None:
    from engine.sweeps import plan_group, run_plan

    lake = Lake(tmp_path / "lake")
    plan = plan_group([_cfg(arch="mmoe", balancer="pcgrad", seed=s) for s in (0, 1)])
    res = run_plan(plan, lake, executor="queue")
    assert res.mode == "queued" and "pcgrad" in res.reason
    assert {lake.config(r)["sweep_id"] for r in res.run_ids} == {plan.sweep_id}
    assert all(lake.events([r])["text"].str.contains("pcgrad").any() for r in res.run_ids)
    assert sweep_info(lake, plan.sweep_id)["mode"] == "queued"


def test_cli_sweep_trains_a_population(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from engine.cli import main

    home = tmp_path / "lake"
    args = [
        "--home",
        str(home),
        "sweep",
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
        "--k",
        "3",
        "--seeds",
        "0,1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ": population" in out and "6 runs" in out
    runs = Lake(home).runs()
    assert len(runs) == 6 and runs["sweep_id"].nunique() == 1 and set(runs["status"]) == {"finished"}
