"""Architecture contracts, run over every entry of the registry, plus MMoE/PLE specifics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from model_checks import (
    TASKS,
    check_all_params_reached,
    check_diagram,
    check_output_shapes,
    check_shared_declaration,
    constant_predictor_metric,
    make_data,
    params_with_multi_task_grad,
    single_thread,
    skip_unless_supported,
    train_briefly,
)

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models import MODELS, MTLModel, build_model, validate_params
from engine.models.base import ModelParams
from engine.models.mmoe import MMoE
from engine.models.ple import PLE

NAMES = sorted(MODELS)
DATA = make_data()
BATCH = DATA.train.subset(torch.arange(64))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():  # tiny models; avoids thread oversubscription on a busy 2-core box
        yield


def _build(
    name: str,
    params: dict | None = None,
    seed: int = 0,
    tasks: list[TaskSpec] | None = None,
    features: FeatureSpec = DATA.features,
) -> MTLModel:
    skip_unless_supported(name, params, tasks or TASKS, features)
    torch.manual_seed(seed)
    return build_model(name, features, tasks or TASKS, params)


def _hidden_fields(cls: type[MTLModel]) -> list[str]:
    """Params fields whose default is a list of layer sizes."""
    out = []
    for field_name, f in cls.Params.model_fields.items():
        default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
        if isinstance(default, list):
            out.append(field_name)
    return out


# ------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete(name: str) -> None:
    cls = MODELS[name]
    assert cls.name == name
    assert cls.description and "\n" not in cls.description
    assert issubclass(cls.Params, ModelParams)
    assert cls.Params.model_json_schema()["properties"]  # the dashboard renders widgets from it
    assert (cls.__doc__ or "").strip(), "one docstring citing the paper"
    assert _hidden_fields(cls), "every architecture has at least one list of hidden sizes"


def test_registry_has_the_first_architectures() -> None:
    assert {"single-task", "shared-bottom", "mmoe", "ple"} <= set(MODELS)
    assert MODELS["single-task"].single_task is True
    assert not any(MODELS[n].single_task for n in ("shared-bottom", "mmoe", "ple"))


# -------------------------------------------------------------------- contracts per model


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_per_task_kind(name: str) -> None:
    model = _build(name)
    outputs = check_output_shapes(model, BATCH.features, TASKS)
    assert outputs["segment"].shape == (64, 3)
    preds = model.predict(outputs)
    assert torch.all((preds["click"] >= 0) & (preds["click"] <= 1))
    assert torch.allclose(preds["segment"].sum(dim=1), torch.ones(64))


@pytest.mark.parametrize("name", NAMES)
def test_shared_parameters_match_gradient_flow(name: str) -> None:
    model = _build(name)
    check_shared_declaration(model, BATCH.features, BATCH.targets)
    check_all_params_reached(model, BATCH.features, BATCH.targets)
    shared = model.shared_parameters()
    if model.single_task:
        assert model.shared_blocks() == {} and shared == []
    else:
        assert next(iter(model.shared_blocks())) == "embedding"
        assert 0 < len(shared) < len(list(model.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_shared_declaration_without_categorical_columns(name: str) -> None:
    data = make_data(n_train=64, n_test=8, dense_only=True)
    model = _build(name, features=data.features)
    check_output_shapes(model, data.train.features, TASKS)
    check_shared_declaration(model, data.train.features, data.train.targets)
    assert "embedding" not in model.shared_blocks()


@pytest.mark.parametrize("name", NAMES)
def test_one_task_shares_nothing(name: str) -> None:
    tasks = [TASKS[0]]
    model = _build(name, tasks=tasks)
    check_output_shapes(model, BATCH.features, tasks)
    assert model.shared_parameters() == []
    assert params_with_multi_task_grad(model, BATCH.features, {"click": BATCH.targets["click"]}) == set()


@pytest.mark.parametrize("name", NAMES)
def test_short_seeded_run_beats_constant_predictor(name: str) -> None:
    model = _build(name, seed=0)
    got = train_briefly(model, DATA, TASKS, steps=100, lr=1e-2, seed=0)
    base = constant_predictor_metric(DATA, TASKS)
    for task in base:
        assert got[task] < 0.8 * base[task], f"{name}/{task}: {got[task]:.4f} vs constant {base[task]:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_diagram_shows_every_task(name: str) -> None:
    d = check_diagram(_build(name))
    kinds = {n[2] for n in d["nodes"]}
    assert {"input", "output"} <= kinds
    if name in ("mmoe", "ple"):
        assert {"expert", "gate", "task"} <= kinds


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_and_checkpoint_roundtrip(name: str) -> None:
    a, b = _build(name, seed=3), _build(name, seed=3)
    out_a, out_b = a(BATCH.features), b(BATCH.features)
    assert all(torch.equal(out_a[t], out_b[t]) for t in out_a)
    c = _build(name, seed=4)
    c.load_state_dict(a.state_dict())
    out_c = c(BATCH.features)
    assert all(torch.equal(out_a[t], out_c[t]) for t in out_a)


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("name", NAMES)
def test_params_validation_names_the_field(name: str) -> None:
    cls = MODELS[name]
    for field_name in _hidden_fields(cls):
        for bad in ([64, -1], [], [8] * 7, [5000]):
            with pytest.raises(ValueError, match=field_name):
                build_model(name, DATA.features, TASKS, {field_name: bad})
    with pytest.raises(ValueError, match="no_such_knob"):
        build_model(name, DATA.features, TASKS, {"no_such_knob": 1})
    with pytest.raises(ValueError, match="embed_dim"):
        build_model(name, DATA.features, TASKS, {"embed_dim": 0})
    p = cls.Params()
    assert validate_params(name, p) is p
    assert validate_params(name, None) == p
    assert validate_params(name, ModelParams(embed_dim=4)).embed_dim == 4


def test_build_model_rejects_bad_names_and_tasks() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'nope'.*mmoe"):
        build_model("nope", DATA.features, TASKS, None)
    with pytest.raises(ValueError, match="at least one task"):
        build_model("mmoe", DATA.features, [], None)
    with pytest.raises(ValueError, match="unique"):
        build_model("mmoe", DATA.features, [TASKS[0], TASKS[0]], None)


def test_layer_sizes_follow_params() -> None:
    model = _build("shared-bottom", {"bottom_hidden": [20, 10, 5], "tower_hidden": [3]})
    linears = [m for m in model.bottom if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [20, 10, 5]
    assert model.encoder.out_dim == 4 + 2 * 8


def test_shared_declaration_check_catches_wrong_declarations() -> None:
    """The checker itself: declaring a task-specific gate shared, or forgetting an expert, fails."""

    class GateDeclaredShared(MMoE):
        def shared_blocks(self) -> dict[str, list[torch.nn.Parameter]]:
            return {**super().shared_blocks(), "gate_0": list(self.gates[0].parameters())}

    class ExpertForgotten(MMoE):
        def shared_blocks(self) -> dict[str, list[torch.nn.Parameter]]:
            blocks = super().shared_blocks()
            del blocks["expert_1"]
            return blocks

    x, y, params = BATCH.features, BATCH.targets, MMoE.Params()
    with pytest.raises(AssertionError, match=r"declared shared but reached by <=1 task: \['gates.0.bias"):
        check_shared_declaration(GateDeclaredShared(DATA.features, TASKS, params), x, y)
    with pytest.raises(AssertionError, match=r"not declared shared: \['experts.experts.1.0.bias"):
        check_shared_declaration(ExpertForgotten(DATA.features, TASKS, params), x, y)


# ----------------------------------------------------------------------------------- MMoE


def test_mmoe_gates_are_distributions_and_kept_for_the_dashboard() -> None:
    model = _build("mmoe", {"n_experts": 5})
    assert isinstance(model, MMoE)
    model(BATCH.features)
    weights = model.gate_weights(BATCH.features)
    assert set(weights) == set(model.task_names) == set(model.last_gates)
    for t, w in weights.items():
        assert w.shape == (64, 5)
        assert torch.all(w >= 0)
        assert torch.allclose(w.sum(dim=1), torch.ones(64), atol=1e-6)
        assert torch.allclose(model.last_gates[t], w)
        assert not model.last_gates[t].requires_grad
        assert model.gate_experts()[t] == [f"expert_{i}" for i in range(5)]
    assert set(model.shared_blocks()) == {"embedding"} | {f"expert_{i}" for i in range(5)}


def test_mmoe_gates_differ_between_tasks() -> None:
    model = _build("mmoe")
    w = model.gate_weights(BATCH.features)
    assert not torch.allclose(w["click"], w["amount"])


# ------------------------------------------------------------------------------------ PLE


@pytest.mark.parametrize("n_levels", [1, 2, 3])
def test_ple_levels_and_shared_declaration(n_levels: int) -> None:
    model = _build("ple", {"n_levels": n_levels, "n_shared_experts": 2, "n_task_experts": 2})
    assert isinstance(model, PLE)
    assert model.n_levels == len(model.levels) == n_levels
    # a shared gate between levels, none after the last one
    assert [lv.shared_gate is not None for lv in model.levels] == [j < n_levels - 1 for j in range(n_levels)]
    check_output_shapes(model, BATCH.features, TASKS)
    check_shared_declaration(model, BATCH.features, BATCH.targets)
    check_all_params_reached(model, BATCH.features, BATCH.targets)
    blocks = set(model.shared_blocks())
    last = n_levels - 1
    for t in model.task_names:
        # last level's task experts and gates (and the gates one level below) reach one task only
        assert f"level{last}_task_{t}_expert_0" not in blocks
        assert f"level{last}_task_{t}_gate" not in blocks
        if n_levels >= 2:
            assert f"level{last - 1}_task_{t}_gate" not in blocks
            assert f"level0_task_{t}_expert_1" in blocks  # feeds the shared gate of level 0
        if n_levels >= 3:
            assert f"level0_task_{t}_gate" in blocks  # -> level 1 task experts -> level 1 shared gate
    assert {f"level{j}_shared_expert_1" for j in range(n_levels)} <= blocks


def test_ple_outputs_depend_on_every_level() -> None:
    model = _build("ple", {"n_levels": 3})
    base = model(BATCH.features)
    losses = model.task_losses(base, BATCH.targets, {})
    for j, level in enumerate(model.levels):
        params = list(level.parameters())
        for t, loss in losses.items():
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            total = sum(float(g.abs().sum()) for g in grads if g is not None)
            assert total > 0, f"task {t} gets no gradient from level {j}"
        with torch.no_grad():
            saved = [p.clone() for p in params]
            for p in level.shared_experts.parameters():
                p.mul_(1.5)
            changed = model(BATCH.features)
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        for t in model.task_names:
            assert not torch.allclose(changed[t], base[t]), f"task {t} ignores level {j}'s shared experts"


def test_ple_gates_sum_to_one_and_name_their_experts() -> None:
    model = _build("ple", {"n_levels": 2, "n_shared_experts": 3, "n_task_experts": 2})
    model(BATCH.features)
    weights = model.gate_weights(BATCH.features)
    columns = model.gate_experts()
    assert set(weights) == set(columns) == set(model.last_gates)
    assert "level0/shared" in weights and "level1/shared" not in weights
    for key, w in weights.items():
        assert w.shape == (64, len(columns[key]))
        assert torch.allclose(w.sum(dim=1), torch.ones(64), atol=1e-6)
    assert weights["level1/click"].shape[1] == 2 + 3
    assert weights["level0/shared"].shape[1] == 3 * 2 + 3
    diagram_ids = {n[0] for n in model.diagram()["nodes"]}
    assert {e for cols in columns.values() for e in cols} <= diagram_ids
