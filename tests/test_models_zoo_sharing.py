"""Sharing-zoo architectures (hierarchical, omoe, cgc, dselect-k, cross-stitch, gating-enhanced,
mssm): the wiring each paper describes, beyond the registry-wide contracts of test_models.py."""

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
    make_data,
    single_thread,
    train_briefly,
)

from engine.datasets.base import TaskSpec
from engine.models import MTLModel, build_model
from engine.models.cgc import CGC
from engine.models.cross_stitch import CrossStitch
from engine.models.dselect_k import DSelectK, DSelectKGate, binary_codes, smooth_step
from engine.models.gating_enhanced import GatingEnhanced
from engine.models.hierarchical import Hierarchical, spread_depths
from engine.models.mssm import MSSM, mask_logit, relaxed_mask
from engine.models.omoe import OMoE

DATA = make_data(n_train=512, n_test=256)
BATCH = DATA.train.subset(torch.arange(64))
X, Y = BATCH.features, BATCH.targets


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _build(
    name: str, params: dict | None = None, seed: int = 0, tasks: list[TaskSpec] | None = None
) -> MTLModel:
    torch.manual_seed(seed)
    return build_model(name, DATA.features, tasks or TASKS, params)


def _grad_reaches(model: MTLModel, task: str, params: list[torch.nn.Parameter]) -> bool:
    """Whether `task`'s loss gives any of `params` a non-zero gradient."""
    loss = model.task_losses(model(X), Y, {})[task]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return any(g is not None and bool(g.ne(0).any()) for g in grads)


# ------------------------------------------------------------- contracts on non-default params

VARIANTS = [
    ("hierarchical", {"hidden": [16, 8], "task_depths": [2, 1, 2]}),
    ("hierarchical", {"hidden": [16, 8, 8], "task_depths": [1, 1, 3]}),
    ("omoe", {"n_experts": 2}),
    ("cgc", {"n_shared_experts": 1, "n_task_experts": 3}),
    ("dselect-k", {"n_experts": 5, "k": 3}),
    ("dselect-k", {"gate_input": "static", "entropy_reg": 0.1}),
    ("dselect-k", {"n_experts": 2, "k": 1}),
    ("cross-stitch", {"hidden": [16]}),
    ("cross-stitch", {"hidden": [16, 8, 8], "self_weight": 0.5}),
    ("gating-enhanced", {"gate_granularity": "field", "hidden_gate": False}),
    ("mssm", {"field_masks": False, "n_cells": 4096}),
    ("mssm", {"hidden": [8], "n_cells": 3, "sparsity": 0.0}),
]


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)])
def test_variants_keep_the_sharing_contract(name: str, params: dict) -> None:
    model = _build(name, params)
    check_output_shapes(model, X, TASKS)
    check_shared_declaration(model, X, Y)
    check_all_params_reached(model, X, Y)
    check_diagram(model)


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("dselect-k", {"n_experts": 2, "k": 3}, "k"),
        ("hierarchical", {"hidden": [8, 8], "task_depths": [1, 3, 2]}, "task_depths"),
        ("hierarchical", {"task_depths": [1, 2]}, "task_depths"),  # 2 depths for 3 tasks
        ("hierarchical", {"hidden": [8, 8, 8], "task_depths": [1, 2, 2]}, "top layer"),
        ("cross-stitch", {"self_weight": 1.0}, "self_weight"),
        ("mssm", {"mask_init": 0.0}, "mask_init"),
    ],
)
def test_bad_params_are_named(name: str, params: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_model(name, DATA.features, TASKS, params)


# ------------------------------------------------------------------------------ hierarchical


def test_hierarchical_default_depths_spread_tasks() -> None:
    assert spread_depths(3, 3) == [1, 2, 3]
    assert spread_depths(2, 3) == [2, 3]
    assert spread_depths(1, 3) == [3]
    assert spread_depths(4, 2) == [1, 1, 2, 2]
    model = _build("hierarchical")
    assert isinstance(model, Hierarchical)
    assert model.task_depth() == {"click": 1, "amount": 2, "segment": 3}
    assert set(model.shared_blocks()) == {"embedding", "layer_1", "layer_2"}  # layer 3: segment only


@pytest.mark.parametrize("depths", [[1, 2, 3], [3, 1, 2], [2, 2, 3]])
def test_hierarchical_tasks_get_gradients_only_from_the_layers_they_read(depths: list[int]) -> None:
    model = _build("hierarchical", {"hidden": [16, 16, 8], "task_depths": depths})
    assert isinstance(model, Hierarchical)
    for t, depth in zip(model.task_names, depths, strict=True):
        for level, layer in enumerate(model.layers, start=1):
            reached = _grad_reaches(model, t, list(layer.parameters()))
            assert reached == (level <= depth), f"{t} (depth {depth}) vs layer {level}: reached={reached}"
    blocks = set(model.shared_blocks())
    for level in (1, 2, 3):
        assert (f"layer_{level}" in blocks) == (sum(d >= level for d in depths) >= 2)
    tower_in = {t: tower[0].in_features for t, tower in zip(model.task_names, model.towers, strict=True)}
    assert tower_in == {t: [16, 16, 8][d - 1] for t, d in zip(model.task_names, depths, strict=True)}


# -------------------------------------------------------------------------------------- OMoE


def test_omoe_has_exactly_one_gate_shared_by_all_tasks() -> None:
    model = _build("omoe", {"n_experts": 3})
    assert isinstance(model, OMoE)
    gate_modules = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "gate" in n]
    assert gate_modules == ["gate"]
    weights = model.gate_weights(X)
    assert list(weights) == ["shared"] and weights["shared"].shape == (64, 3)
    assert torch.allclose(weights["shared"].sum(dim=1), torch.ones(64), atol=1e-6)
    assert model.gate_experts() == {"shared": ["expert_0", "expert_1", "expert_2"]}
    gates = [n for n in model.diagram()["nodes"] if n[2] == "gate"]
    assert len(gates) == 1
    assert set(model.shared_blocks()) == {"embedding", "gate", "expert_0", "expert_1", "expert_2"}
    for t in model.task_names:  # the one gate is reached by every task
        assert _grad_reaches(model, t, list(model.gate.parameters()))


# --------------------------------------------------------------------------------------- CGC


def test_cgc_equals_single_level_ple_and_gates_own_plus_shared_experts() -> None:
    params = {"n_shared_experts": 2, "n_task_experts": 2}
    cgc = _build("cgc", params, seed=1)
    ple = _build("ple", {**params, "n_levels": 1}, seed=2)
    assert isinstance(cgc, CGC)
    ple.load_state_dict({k.replace("level.", "levels.0."): v for k, v in cgc.state_dict().items()})
    out_c, out_p = cgc(X), ple(X)
    assert all(torch.allclose(out_c[t], out_p[t]) for t in out_c)
    w = cgc.gate_weights(X)
    cols = cgc.gate_experts()
    for t in cgc.task_names:
        assert w[t].shape == (64, 4) and torch.allclose(w[t].sum(dim=1), torch.ones(64), atol=1e-6)
        assert cols[t] == [f"task_{t}_expert_0", f"task_{t}_expert_1", "shared_expert_0", "shared_expert_1"]
    assert set(cgc.shared_blocks()) == {"embedding", "shared_expert_0", "shared_expert_1"}
    assert not any(n[0] == "shared_gate" or "shared gate" in n[1] for n in cgc.diagram()["nodes"])


# --------------------------------------------------------------------------------- DSelect-k


def test_smooth_step_is_a_c1_step_from_0_to_1() -> None:
    gamma = 2.0
    t = torch.linspace(-2, 2, 401, dtype=torch.float64)
    s = smooth_step(t, gamma)
    assert torch.all(s[t <= -1] == 0) and torch.all(s[t >= 1] == 1)
    assert torch.all((s >= 0) & (s <= 1)) and torch.all(s[1:] >= s[:-1])
    assert float(smooth_step(torch.tensor(0.0), gamma)) == pytest.approx(0.5)
    edge = torch.tensor([-1.0, -1 + 1e-6, -1e-9, 1 - 1e-6, 1.0], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(smooth_step(edge, gamma).sum(), edge)
    # slope 3/(2 gamma) at 0 and (continuously) 0 at +-gamma/2: a C^1 step
    assert slope.tolist() == pytest.approx([0.0, 0.0, 1.5 / gamma, 0.0, 0.0], abs=1e-5)
    assert float(smooth_step(torch.tensor(1 - 1e-6, dtype=torch.float64), gamma)) == pytest.approx(1.0)


def test_binary_codes_enumerate_the_experts() -> None:
    codes = binary_codes(5)
    assert codes.shape == (5, 3)
    values = (codes.long() * (2 ** torch.arange(3))).sum(dim=1)
    assert values.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("per_example", [True, False])
@pytest.mark.parametrize(("n", "k"), [(8, 2), (4, 1), (4, 4)])
def test_dselect_k_selects_at_most_k_experts_once_saturated(per_example: bool, n: int, k: int) -> None:
    torch.manual_seed(0)
    gate = DSelectKGate(12, n_experts=n, k=k, gamma=1.0, per_example=per_example)
    x = torch.randn(256, 12)
    w, selectors = gate(x)
    # near initialisation every smooth step sits close to 1/2: dense weights, a distribution
    assert torch.all(w > 0) and torch.allclose(w.sum(dim=1), torch.ones(256), atol=1e-5)
    assert torch.allclose(selectors.sum(dim=-1), torch.ones(256, k), atol=1e-5)
    with torch.no_grad():  # push every z out of the cubic region: the selectors become one-hot
        if isinstance(gate.z, torch.nn.Linear):
            gate.z.weight.mul_(1e4)
            gate.z.bias.mul_(1e4)
        else:
            gate.z.mul_(1e4)
    w, selectors = gate(x)
    z, _ = gate.logits(x)
    saturated = (z.abs() >= gate.gamma / 2).flatten(1).all(dim=1)  # rows whose every z left the cubic
    assert float(saturated.float().mean()) > 0.9
    assert torch.all(w >= 0) and torch.allclose(w.sum(dim=1), torch.ones(256), atol=1e-5)
    assert torch.all((selectors[saturated] == 0) | (selectors[saturated] == 1))
    assert int((w[saturated] > 0).sum(dim=1).max()) <= k
    if per_example:  # different examples pick different experts
        assert len({tuple(r.tolist()) for r in (w > 0)}) > 1


def test_dselect_k_penalties_count_in_training_losses_only() -> None:
    model = _build("dselect-k", {"n_experts": 5, "k": 2, "entropy_reg": 0.5})
    assert isinstance(model, DSelectK)
    assert not model.gates[0].power_of_two
    model.train()
    train_losses = model.task_losses(model(X), Y, {})
    model.eval()
    eval_losses = model.task_losses(model(X), Y, {})
    x = model.encoder(X)
    for t, gate in zip(model.task_names, model.gates, strict=True):
        _, selectors = gate(x)
        pen = gate.penalty(selectors, 0.5)
        assert pen is not None and float(pen.detach()) > 0
        assert float((train_losses[t] - eval_losses[t]).detach()) == pytest.approx(
            float(pen.detach()), rel=1e-4
        )
    # no penalty configured (power of two, entropy off): train loss == eval loss
    plain = _build("dselect-k")
    plain.train()
    a = plain.task_losses(plain(X), Y, {})
    plain.eval()
    b = plain.task_losses(plain(X), Y, {})
    assert all(torch.allclose(a[t], b[t]) for t in a)


def test_dselect_k_entropy_regulariser_drives_gates_towards_saturation() -> None:
    @torch.no_grad()
    def mean_entropy(model: DSelectK) -> float:
        x = model.encoder(DATA.test.features)
        sel = torch.cat([gate(x)[1] for gate in model.gates])
        return float(-(sel * torch.log(sel + 1e-6)).sum(dim=-1).mean())

    model = _build("dselect-k", {"entropy_reg": 1.0, "gamma": 0.5})
    assert isinstance(model, DSelectK)
    before = mean_entropy(model)
    train_briefly(model, DATA, TASKS, steps=60, lr=1e-2, seed=0)
    after = mean_entropy(model)
    assert after < 0.5 * before, (before, after)
    if after < 1e-3:  # saturated: every task now uses at most k experts on every example
        for w in model.gate_weights(DATA.test.features).values():
            assert int((w > 0).sum(dim=1).max()) <= model.params.k


# ------------------------------------------------------------------------------ cross-stitch


def test_cross_stitch_starts_near_identity_rows_summing_to_one() -> None:
    model = _build("cross-stitch")
    assert isinstance(model, CrossStitch)
    for alpha in model.stitch_matrices():
        assert torch.allclose(alpha.diagonal(), torch.full((3,), 0.9))
        assert torch.allclose(alpha.sum(dim=1), torch.ones(3))
    blocks = model.shared_blocks()
    assert "stitch_1" in blocks and "stitch_2" not in blocks  # the last stitch's rows are per task


def test_cross_stitch_with_identity_stitches_equals_independent_columns() -> None:
    model = _build("cross-stitch", {"hidden": [16, 8]})
    assert isinstance(model, CrossStitch)
    with torch.no_grad():
        for rows in model.stitches:
            for i, row in enumerate(rows):
                row.copy_(torch.eye(len(rows))[i])
    out = model(X)
    x = model.encoder(X)
    for t, col, tower in zip(model.tasks, model.columns, model.towers, strict=True):
        h = x
        for layer in col:
            h = layer(h)
        assert torch.allclose(out[t.name], tower(h).squeeze(-1) if t.output_dim == 1 else tower(h))
    for i, t in enumerate(model.task_names):  # task i's loss no longer reaches the other columns
        for j, col in enumerate(model.columns):
            assert _grad_reaches(model, t, list(col.parameters())) == (i == j)
    # and with the default (non-identity) stitches every column reaches every task
    mixed = _build("cross-stitch", {"hidden": [16, 8]})
    assert isinstance(mixed, CrossStitch)
    for t in mixed.task_names:
        assert all(_grad_reaches(mixed, t, list(col.parameters())) for col in mixed.columns)


# --------------------------------------------------------------------------- gating-enhanced


def test_gating_enhanced_with_open_gates_is_shared_bottom() -> None:
    gated = _build("gating-enhanced", {"hidden_gate": False}, seed=1)
    plain = _build("shared-bottom", seed=2)
    assert isinstance(gated, GatingEnhanced)
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("embedding_gates.") for k in missing)
    with torch.no_grad():
        for gate in gated.embedding_gates:
            gate.weight.zero_()
            gate.bias.fill_(40.0)  # sigmoid(40) == 1 in float32
    a, b = gated(X), plain(X)
    assert all(torch.equal(a[t], b[t]) for t in a)


def test_gating_enhanced_field_gates_are_constant_within_a_field() -> None:
    model = _build("gating-enhanced", {"gate_granularity": "field", "embed_dim": 4})
    assert isinstance(model, GatingEnhanced)
    for g in model.gate_values(X).values():
        assert g.shape == (64, 4 + 2 * 4)
        assert torch.all((g > 0) & (g < 1))
        cat = g[:, 4:].reshape(64, 2, 4)
        assert torch.equal(cat, cat[:, :, :1].expand_as(cat))
    bit = _build("gating-enhanced").gate_values(X)
    assert not torch.allclose(bit["click"], bit["amount"])  # each task its own gate


# -------------------------------------------------------------------------------------- MSSM


def test_mssm_relaxed_mask_spans_exact_zero_and_one() -> None:
    a = torch.linspace(-10, 10, 201)
    m = relaxed_mask(a)
    assert torch.all((m >= 0) & (m <= 1)) and float(m[0]) == 0.0 and float(m[-1]) == 1.0
    assert float(relaxed_mask(torch.tensor(mask_logit(0.9)))) == pytest.approx(0.9)


def test_mssm_masks_in_unit_interval_and_differ_by_task_after_training() -> None:
    model = _build("mssm", {"hidden": [32, 16], "n_cells": 8, "sparsity": 0.05})
    assert isinstance(model, MSSM)
    start = model.masks()
    for t in model.task_names:
        assert set(start[t]) == {"fields", "layer_1", "layer_2"}
        assert start[t]["fields"].shape == (6,) and start[t]["layer_1"].shape == (8,)
        assert all(torch.allclose(m, torch.full_like(m, 0.9)) for m in start[t].values())
    train_briefly(model, DATA, TASKS, steps=60, lr=5e-2, seed=0)
    end = model.masks()
    for t in model.task_names:
        for m in end[t].values():
            assert torch.all((m >= 0) & (m <= 1))
    flat = {t: torch.cat(list(end[t].values())) for t in model.task_names}
    names = model.task_names
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            diff = float((flat[names[i]] - flat[names[j]]).abs().max())
            assert diff > 0.05, f"masks of {names[i]} and {names[j]} barely differ ({diff:.4f})"
    # the sparsity pressure lowered the masks on average
    assert float(torch.cat(list(flat.values())).mean()) < 0.9


def test_mssm_zero_mask_makes_a_cell_private() -> None:
    """A cell that every task but one masks to exactly 0 is reached by that task only."""
    model = _build("mssm", {"hidden": [8], "n_cells": 8, "field_masks": False}, tasks=TASKS[:2])
    assert isinstance(model, MSSM)
    with torch.no_grad():
        model.mask_logits[1][0][0] = -20.0  # task 'amount' drops cell 0 of layer 1
    unit0 = model.layers[0][0].weight
    grads = {}
    for t in model.task_names:
        loss = model.task_losses(model(X), Y, {})[t]
        (g,) = torch.autograd.grad(loss, [unit0])
        grads[t] = g[0]
    assert bool(grads["click"].ne(0).any()) and not bool(grads["amount"].ne(0).any())
