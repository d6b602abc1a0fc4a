"""Balancers: the contract for every registered method, and each method's defining property."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from balancer_checks import (
    FAMILIES,
    TinyMTL,
    aggregate_on,
    assert_non_conflicting,
    check_step,
    direction_of,
    jacobian_family,
    linear_context,
    simplex_grid,
    tiny_batch,
    tiny_context,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.balancers import BALANCERS, build_balancer
from engine.balancers.base import Balancer, BalancerParams, GradientAggregation, LossWeighting, StepContext
from engine.balancers.cagrad import cagrad_objective
from engine.balancers.fixed import Fixed
from engine.balancers.numerics import ZERO_NORM_SQ
from engine.balancers.solvers import dual_cone_projection, min_norm_simplex, project_simplex

NAMES = sorted(BALANCERS)

# Extra parameter settings run through the generic checks besides each method's defaults.
VARIANTS: list[tuple[str, dict]] = [
    *[(n, {}) for n in NAMES],
    ("mgda", {"normalization": "l2"}),
    ("mgda", {"normalization": "loss"}),
    ("mgda", {"normalization": "loss+"}),
    ("pcgrad", {"random_order": False}),
    ("cagrad", {"c": 0.0}),
    ("cagrad", {"c": 5.0, "rescale": False}),
    ("gradnorm", {"alpha": 0.0, "lr": 1.0}),
    ("uw", {"init_log_var": 2.0}),
]

# Methods whose weights depend on the order of the tasks, not only on the set of tasks.
ORDER_DEPENDENT = {"pcgrad"}
# Gradient methods whose weights do not change when all task gradients are scaled by k > 0.
SCALE_INVARIANT = ["mgda", "pcgrad", "cagrad"]
# Non-default parameters for the permutation test (weights keyed by task name must follow the names).
PERMUTATION_PARAMS: dict[str, dict] = {"fixed": {"weights": {"ctr": 1.0, "cvr": 2.5, "like": 0.5}}}
# Methods with a main/target task (default: the first task) name it, so the weights follow the names.
PERMUTATION_PARAMS |= {"metabalance": {"target": "cvr"}, "pmtrec": {"main_task": "cvr"}}


def build(name: str, n_tasks: int, **params: object) -> Balancer:
    return build_balancer(name, [f"t{i}" for i in range(n_tasks)], params)


def gram(J: torch.Tensor) -> np.ndarray:
    Jd = J.double()
    return (Jd @ Jd.T).numpy()


# ---------------------------------------------------------------------------------------------
# The registry and the contract, for every balancer


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete(name: str) -> None:
    cls = BALANCERS[name]
    assert cls.name == name
    assert cls.description and "\n" not in cls.description and len(cls.description) <= 110
    assert cls.kind in ("loss", "gradient")
    assert issubclass(cls, LossWeighting if cls.kind == "loss" else GradientAggregation)
    assert issubclass(cls.Params, BalancerParams)
    assert re.search(r"(19|20)\d\d", cls.__doc__ or ""), "docstring must cite the paper"
    cls.Params()  # defaults are valid
    schema = cls.Params.model_json_schema()
    assert schema["type"] == "object"


@pytest.mark.parametrize("n_tasks", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_every_balancer_steps_a_tiny_model(name: str, n_tasks: int) -> None:
    model = TinyMTL(n_tasks, seed=n_tasks)
    batch = tiny_batch(n_tasks, seed=n_tasks)
    bal = build(name, n_tasks)
    opt = torch.optim.SGD([*model.parameters(), *bal.parameters()], lr=0.05)
    for step in range(4):
        w = check_step(bal, lambda s=step: tiny_context(model, batch, step=s))
        assert w.dtype == torch.float32
        opt.step()


@pytest.mark.parametrize("n_tasks", [2, 3, 5])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=[f"{n}-{p}" for n, p in VARIANTS])
def test_every_balancer_on_every_jacobian_family(name: str, params: dict, family: str, n_tasks: int) -> None:
    J = jacobian_family(family, n_tasks, seed=n_tasks)
    bal = build(name, n_tasks, **params)
    for step in range(2):
        losses = [1.0 + t / n_tasks - 0.1 * step * t for t in range(n_tasks)]
        w = check_step(bal, lambda ls=losses: linear_context(J, ls), atol=1e-9, rtol=1e-9)
        assert w.dtype == J.dtype


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ORDER_DEPENDENT])
def test_permuting_tasks_permutes_the_weights(name: str) -> None:
    names = ["ctr", "cvr", "like"]
    J = jacobian_family("conflicting", 3, seed=7)
    losses = torch.tensor([[0.9, 1.4, 0.3], [0.7, 1.35, 0.31]], dtype=torch.float64)
    params = PERMUTATION_PARAMS.get(name, {})

    def run(order: list[int]) -> torch.Tensor:
        bal = build_balancer(name, [names[i] for i in order], params)
        for step_losses in losses:
            ctx = linear_context(J[order], step_losses[order])
            ctx.task_names = [names[i] for i in order]
            w = bal.backward(ctx)
        return w

    w = run([0, 1, 2])
    for perm in ([2, 0, 1], [1, 0, 2]):
        torch.testing.assert_close(run(perm), w[perm], atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("name", SCALE_INVARIANT)
@pytest.mark.parametrize("family", ["gaussian", "conflicting", "badly_scaled"])
def test_gradient_weights_do_not_depend_on_gradient_scale(name: str, family: str) -> None:
    J = jacobian_family(family, 4, seed=3)
    w = aggregate_on(build(name, 4), J)
    for k in (1e-4, 1e4):
        torch.testing.assert_close(aggregate_on(build(name, 4), k * J), w, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# build_balancer and fixed weights


def test_build_balancer_validates_names_and_fields() -> None:
    with pytest.raises(ValueError, match="unknown balancer 'nope'"):
        build_balancer("nope", ["a", "b"], None)
    with pytest.raises(ValueError, match=r"balancer_params\.c"):
        build_balancer("cagrad", ["a", "b"], {"c": 10.0})
    with pytest.raises(ValueError, match=r"balancer_params\.c"):
        build_balancer("cagrad", ["a", "b"], {"c": -0.1})
    with pytest.raises(ValueError, match=r"balancer_params\.normalization"):
        build_balancer("mgda", ["a", "b"], {"normalization": "max"})
    with pytest.raises(ValueError, match=r"balancer_params\.typo"):
        build_balancer("ew", ["a", "b"], {"typo": 1})
    with pytest.raises(ValueError, match="takes"):
        build_balancer("mgda", ["a", "b"], BALANCERS["cagrad"].Params())
    with pytest.raises(ValueError, match="twice"):
        build_balancer("ew", ["a", "a"], None)
    bal = build_balancer("cagrad", ["a", "b"], BALANCERS["cagrad"].Params(c=0.7))
    assert bal.params.c == 0.7


def test_fixed_weights_are_the_given_weights() -> None:
    bal = build_balancer("fixed", ["ctr", "cvr"], {"weights": {"cvr": 3.0, "ctr": 0.5}})
    J = jacobian_family("gaussian", 2)
    torch.testing.assert_close(aggregate_on(bal, J), torch.tensor([0.5, 3.0], dtype=torch.float64))
    bal = build_balancer("fixed", ["ctr", "cvr"], None)
    torch.testing.assert_close(aggregate_on(bal, J), torch.ones(2, dtype=torch.float64))


def test_fixed_check_tasks_rejects_bad_weights() -> None:
    P = Fixed.Params
    Fixed.check_tasks(P(weights={"a": 1.0, "b": 0.0}), ["a", "b"])
    Fixed.check_tasks(P(), ["a", "b"])
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        Fixed.check_tasks(P(weights={"a": 1.0}), ["a", "b"])
    with pytest.raises(ValueError, match=r"unknown \['c'\]"):
        Fixed.check_tasks(P(weights={"a": 1.0, "b": 1.0, "c": 1.0}), ["a", "b"])
    with pytest.raises(ValueError, match="all zero"):
        Fixed.check_tasks(P(weights={"a": 0.0, "b": 0.0}), ["a", "b"])
    with pytest.raises(ValueError, match=">= 0"):
        Fixed.check_tasks(P.model_construct(weights={"a": -1.0, "b": 1.0}), ["a", "b"])
    with pytest.raises(ValueError, match=r"balancer_params\.weights\.a"):
        build_balancer("fixed", ["a", "b"], {"weights": {"a": -1.0, "b": 1.0}})
    with pytest.raises(ValueError, match="all zero"):
        build_balancer("fixed", ["a", "b"], {"weights": {"a": 0.0, "b": 0.0}})


# ---------------------------------------------------------------------------------------------
# UW


def test_uw_log_variances_get_their_gradient_and_train() -> None:
    bal = build("uw", 2, init_log_var=0.5)
    s = bal.parameters()[0]
    L = [0.5, 4.0]
    ctx = linear_context(jacobian_family("gaussian", 2), L)
    w = bal.backward(ctx)
    torch.testing.assert_close(w, torch.exp(-torch.tensor([0.5, 0.5], dtype=torch.float64)))
    # d/ds_t [exp(-s_t) L_t + s_t] = 1 - exp(-s_t) L_t; the towers get exp(-s_t)
    expected = 1.0 - math.exp(-0.5) * torch.tensor(L)
    torch.testing.assert_close(s.grad, expected)
    torch.testing.assert_close(ctx.task_params[0].grad, w)
    before = s.detach().clone()
    torch.optim.SGD([s], lr=0.1).step()
    assert not torch.allclose(s.detach(), before)
    # with constant losses, s converges to its optimum log L_t (weight 1 / L_t)
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        bal.backward(linear_context(jacobian_family("gaussian", 2), L))
        opt.step()
    torch.testing.assert_close(s.detach(), torch.log(torch.tensor(L)), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------
# GradNorm


def test_gradnorm_moves_weight_toward_the_slower_task() -> None:
    J = jacobian_family("gaussian", 2, seed=1)
    J = J / J.norm(dim=1, keepdim=True)  # equal gradient norms: only training rates differ
    bal = build("gradnorm", 2)
    w0 = aggregate_on(bal, J, losses=[1.0, 1.0])
    torch.testing.assert_close(w0, torch.ones(2, dtype=torch.float64))  # r = 1, G = target
    w_prev = w0
    for loss_a in (0.8, 0.6, 0.4):  # task 0's loss falls, task 1's stays: task 1 trains slower
        w = aggregate_on(bal, J, losses=[loss_a, 1.0])
        assert w[1] > w_prev[1] and w[0] < w_prev[0]
        assert math.isclose(float(w.sum()), 2.0, rel_tol=1e-12)
        w_prev = w
    # each step moves w_t by lr ||J_t|| = 0.025 before renormalising
    torch.testing.assert_close(w, torch.tensor([0.925, 1.075], dtype=torch.float64))


def test_gradnorm_equalises_gradient_norms_when_rates_are_equal() -> None:
    J = jacobian_family("gaussian", 3, seed=2)
    J = J / J.norm(dim=1, keepdim=True) * torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    bal = build("gradnorm", 3, lr=0.003)
    for _ in range(300):
        w = aggregate_on(bal, J, losses=[1.0, 1.0, 1.0])
    G = w * J.norm(dim=1)
    assert float(G.max() / G.min()) < 1.03  # weighted norms equal up to the sign steps' jitter
    expected = 3 * torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64) / 1.75  # w_t ~ 1 / ||J_t||
    torch.testing.assert_close(w, expected, atol=0.02, rtol=0)


# ---------------------------------------------------------------------------------------------
# MGDA


def _mgda_weights(J: torch.Tensor, **params: object) -> torch.Tensor:
    return aggregate_on(build("mgda", J.shape[0], **params), J)


@pytest.mark.parametrize("seed", range(6))
def test_mgda_two_tasks_matches_a_fine_line_search(seed: int) -> None:
    J = jacobian_family(("gaussian", "conflicting", "aligned")[seed % 3], 2, n_params=5, seed=seed)
    w = _mgda_weights(J)
    G = gram(J)
    g = np.linspace(0.0, 1.0, 100_001)
    grid = np.stack([g, 1 - g], axis=1)
    values = np.einsum("ni,ij,nj->n", grid, G, grid)
    best = grid[values.argmin()]
    np.testing.assert_allclose(w.numpy(), best, atol=2e-5)
    assert float(w @ torch.as_tensor(G) @ w) <= values.min() + 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_mgda_three_tasks_matches_a_fine_simplex_grid(seed: int) -> None:
    J = jacobian_family(("gaussian", "conflicting")[seed % 2], 3, n_params=6, seed=seed)
    w = _mgda_weights(J).numpy()
    G = gram(J)
    grid = simplex_grid(3, 300)
    values = np.einsum("ni,ij,nj->n", grid, G, grid)
    assert w @ G @ w <= values.min() + 1e-12
    np.testing.assert_allclose(w, grid[values.argmin()], atol=0.02)


@pytest.mark.parametrize("n_tasks", [2, 3, 4, 6, 9])
@pytest.mark.parametrize("family", FAMILIES)
def test_mgda_is_the_min_norm_point_and_conflicts_with_no_task(family: str, n_tasks: int) -> None:
    J = jacobian_family(family, n_tasks, seed=n_tasks)
    w = _mgda_weights(J)
    G = torch.as_tensor(gram(J))
    assert (w >= 0).all() and math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
    # KKT: (G w)_i >= w^T G w for every i is necessary and sufficient for the min-norm point
    Gw = G @ w
    scale = float(G.diagonal().max())
    assert float(Gw.min()) >= float(w @ Gw) - 1e-10 * scale
    assert_non_conflicting(direction_of(w, J), J)


def test_mgda_closed_form_cases() -> None:
    t = torch.tensor
    torch.testing.assert_close(
        _mgda_weights(t([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)), t([0.5, 0.5]).double()
    )
    torch.testing.assert_close(
        _mgda_weights(t([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)), t([1.0, 0.0]).double()
    )
    torch.testing.assert_close(
        _mgda_weights(t([[1.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)), t([0.75, 0.25]).double()
    )
    # three tasks: e1, e2 and their sum; min-norm point (e1 + e2) / 2 (weights not unique)
    J = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(direction_of(_mgda_weights(J), J), t([0.5, 0.5]).double())


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_mgda_normalisation_maps_weights_back_to_raw_gradients(normalization: str) -> None:
    J = jacobian_family("badly_scaled", 3, seed=5)
    losses = torch.tensor([0.3, 1.5, 4.0], dtype=torch.float64)
    norms = J.norm(dim=1)
    n = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    w = aggregate_on(build("mgda", 3, normalization=normalization), J, losses=losses.tolist())
    v = torch.as_tensor(min_norm_simplex(gram(J / n[:, None])))
    torch.testing.assert_close(w * n, v, atol=1e-9, rtol=1e-9)


def test_min_norm_solver_handles_degenerate_gramians() -> None:
    assert np.allclose(min_norm_simplex(np.zeros((3, 3))), 1 / 3)
    assert np.all(np.isnan(min_norm_simplex(np.full((3, 3), np.nan))))
    np.testing.assert_allclose(min_norm_simplex(np.ones((1, 1))), [1.0])
    np.testing.assert_allclose(project_simplex(np.array([2.0, 0.0, -1.0])), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(project_simplex(np.array([0.5, 0.5, 0.5])), [1 / 3] * 3)


def test_mgda_agrees_with_torchjd() -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    J = jacobian_family("conflicting", 2, seed=1)
    ref = aggregation.MGDAWeighting(epsilon=1e-12, max_iters=10_000)(torch.as_tensor(gram(J)))
    torch.testing.assert_close(_mgda_weights(J), ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# PCGrad


def _pcgrad_reference(J: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """The paper's algorithm on the vectors themselves (float64)."""
    out = torch.zeros(J.shape[1], dtype=torch.float64)
    top = float((J * J).sum(dim=1).max())
    for i, order in enumerate(orders):
        g = J[i].clone()
        for j in order:
            dot = g @ J[j]
            if dot < 0 and J[j] @ J[j] > ZERO_NORM_SQ * top:  # same zero-gradient rule
                g = g - dot / (J[j] @ J[j]) * J[j]
        out += g
    return out


@settings(max_examples=150, deadline=None)
@given(
    J=arrays(
        np.float64,
        st.tuples(st.just(2), st.integers(1, 6)),
        elements=st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
    ),
    conflict=st.floats(0.0, 3.0),
    use_conflict=st.booleans(),
)
def test_pcgrad_two_tasks_never_conflicts_with_either_task(
    J: np.ndarray, conflict: float, use_conflict: bool
) -> None:
    Jt = torch.as_tensor(J.copy())
    if use_conflict:  # g2 = -conflict * g1 + small noise: strongly conflicting pairs
        Jt[1] = -conflict * Jt[0] + 0.01 * Jt[1]
    w = aggregate_on(build("pcgrad", 2), Jt)
    d = direction_of(w, Jt)
    assert_non_conflicting(d, Jt)
    torch.testing.assert_close(d, _pcgrad_reference(Jt, [[1], [0]]), atol=1e-9, rtol=1e-9)


def test_pcgrad_two_task_weights_have_the_closed_form() -> None:
    J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    bal = build("pcgrad", 2)
    w = aggregate_on(bal, J)
    g12, n1, n2 = -1.0, 1.0, 2.0
    torch.testing.assert_close(w, torch.tensor([1 - g12 / n1, 1 - g12 / n2], dtype=torch.float64))
    assert bal.internals()["projections"] == 2.0
    bal = build("pcgrad", 2)
    torch.testing.assert_close(aggregate_on(bal, jacobian_family("aligned", 2)), torch.ones(2).double())
    assert bal.internals()["projections"] == 0.0


def test_pcgrad_fixed_order_equals_the_vector_algorithm() -> None:
    J = jacobian_family("conflicting", 5, seed=4)
    w = aggregate_on(build("pcgrad", 5, random_order=False), J)
    orders = [[j for j in range(5) if j != i] for i in range(5)]
    torch.testing.assert_close(direction_of(w, J), _pcgrad_reference(J, orders), atol=1e-10, rtol=1e-10)


def test_pcgrad_random_order_is_seeded_and_kept_across_steps() -> None:
    J = jacobian_family("conflicting", 4, seed=2)
    a, b, c = build("pcgrad", 4, seed=3), build("pcgrad", 4, seed=3), build("pcgrad", 4, seed=4)
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(5):
        wa, wb, _wc = aggregate_on(a, J), aggregate_on(b, J), aggregate_on(c, J)
        torch.testing.assert_close(wa, wb, atol=0, rtol=0)
        orders = [list(rng.permutation([j for j in range(4) if j != i])) for i in range(4)]
        torch.testing.assert_close(direction_of(wa, J), _pcgrad_reference(J, orders), atol=1e-10, rtol=1e-10)
        seen.add(tuple(np.round(wa.numpy(), 9)))
    assert len(seen) > 1  # the order (hence the weights) changes from step to step


def test_pcgrad_zero_gradient_is_harmless() -> None:
    J = jacobian_family("zero_row", 3, seed=1)
    J[2] = -J[1]
    bal = build("pcgrad", 3)
    w = aggregate_on(bal, J)
    assert torch.isfinite(w).all() and w[0] == 1.0
    torch.testing.assert_close(direction_of(w, J), torch.zeros(J.shape[1], dtype=torch.float64))


def test_pcgrad_agrees_with_torchjd_for_two_tasks() -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    J = jacobian_family("conflicting", 2, seed=8)
    ref = aggregation.PCGradWeighting()(torch.as_tensor(gram(J)))
    torch.testing.assert_close(aggregate_on(build("pcgrad", 2), J), ref, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# CAGrad


def _cagrad(J: torch.Tensor, **params: object) -> tuple[torch.Tensor, np.ndarray, dict[str, float]]:
    bal = build("cagrad", J.shape[0], **params)
    eff = aggregate_on(bal, J)
    info = bal.internals()
    w = np.array([info[f"w_{i}"] for i in range(J.shape[0])])
    return eff, w, info


def _cagrad_objective_values(G: np.ndarray, c: float, points: np.ndarray) -> np.ndarray:
    T = G.shape[0]
    b = np.full(T, 1.0 / T)
    sqrt_phi = c * math.sqrt(b @ G @ b)
    quad = np.einsum("ni,ij,nj->n", points, G, points)
    return points @ (G @ b) + sqrt_phi * np.sqrt(np.clip(quad, 0, None))


@pytest.mark.parametrize("c", [0.2, 0.4, 0.9, 3.0])
@pytest.mark.parametrize(("n_tasks", "steps"), [(2, 20_000), (3, 200)])
@pytest.mark.parametrize("family", ["gaussian", "conflicting", "aligned", "badly_scaled"])
def test_cagrad_solution_beats_every_grid_point(family: str, n_tasks: int, steps: int, c: float) -> None:
    J = jacobian_family(family, n_tasks, n_params=6, seed=n_tasks)
    _, w, _ = _cagrad(J, c=c)
    G = gram(J)
    scale = G.diagonal().max()
    grid_values = _cagrad_objective_values(G, c, simplex_grid(n_tasks, steps))
    mine = _cagrad_objective_values(G, c, w[None, :])[0]
    assert mine <= grid_values.min() + 1e-9 * scale


@pytest.mark.parametrize("c", [0.5, 2.0])
@pytest.mark.parametrize("n_tasks", [2, 3, 5])
@pytest.mark.parametrize("family", FAMILIES)
def test_cagrad_update_is_the_best_worst_case_step_in_its_ball(family: str, n_tasks: int, c: float) -> None:
    J = jacobian_family(family, n_tasks, seed=10 + n_tasks)
    eff, w, info = _cagrad(J, c=c, rescale=False)
    d = direction_of(eff, J)
    g0 = J.mean(0)
    radius = c * float(g0.norm())
    G = gram(J)
    scale = G.diagonal().max()
    gw = torch.as_tensor(w) @ J
    assert math.isclose(info["gw_norm"], float(gw.norm()), rel_tol=1e-6, abs_tol=1e-9 * math.sqrt(scale))
    if info["cone_projection"] == 0.0 and float(gw.norm()) > 1e-9 * math.sqrt(scale):  # the closed form
        torch.testing.assert_close(eff, 1 / n_tasks + radius / gw.norm() * torch.as_tensor(w))
    assert float((d - g0).norm()) <= radius * (1 + 1e-9) + 1e-12
    # strong duality: min_i g_i . d equals the dual objective at w (a certificate of optimality)
    dual = _cagrad_objective_values(G, c, w[None, :])[0]
    worst = float((J @ d).min())
    assert math.isclose(worst, dual, rel_tol=1e-6, abs_tol=1e-8 * scale)
    # and no point of the ball does better in the worst case
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2000, J.shape[1], generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True) * radius * torch.rand(2000, 1, generator=gen, dtype=torch.float64)
    others = ((g0 + u) @ J.T).min(dim=1).values
    assert worst >= float(others.max()) - 1e-9 * scale


def test_cagrad_degenerate_dual_falls_back_to_a_conflict_free_step() -> None:
    # 0 inside the hull of three 2-D gradients, c >= 1: Pareto-stationary, the best step is 0
    J = torch.tensor([[1.0, 0.0], [-0.5, 1.0], [-0.5, -1.2]], dtype=torch.float64)
    eff, _, info = _cagrad(J, c=2.0)
    assert info["cone_projection"] == 1.0
    torch.testing.assert_close(direction_of(eff, J), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # a task with a zero gradient makes g_w = 0 optimal; the update must still conflict with no task
    J = torch.tensor([[0.0, 0.0], [1.0, 0.2], [-0.3, 1.0]], dtype=torch.float64)
    eff, _, _ = _cagrad(J, c=0.4, rescale=False)
    d = direction_of(eff, J)
    assert_non_conflicting(d, J)
    assert float((d - J.mean(0)).norm()) <= 0.4 * float(J.mean(0).norm()) + 1e-12


def test_cagrad_with_c_zero_is_the_mean_gradient() -> None:
    J = jacobian_family("conflicting", 4, seed=1)
    eff, _, _ = _cagrad(J, c=0.0)
    torch.testing.assert_close(eff, torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(direction_of(eff, J), J.mean(0))


def test_cagrad_rescale_divides_by_one_plus_c_squared() -> None:
    J = jacobian_family("gaussian", 3, seed=4)
    on, _, _ = _cagrad(J, c=0.7)
    off, _, _ = _cagrad(J, c=0.7, rescale=False)
    torch.testing.assert_close(on * (1 + 0.49), off)


def test_cagrad_objective_gradient_matches_finite_differences() -> None:
    G = gram(jacobian_family("gaussian", 3, seed=6))
    f, grad, hess = cagrad_objective(G, 0.8)
    w = np.array([0.2, 0.3, 0.5])
    h = 1e-6
    fd = np.array([(f(w + h * e) - f(w - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(grad(w), fd, rtol=1e-6, atol=1e-8)
    fd2 = np.array([(grad(w + h * e) - grad(w - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(hess(w), fd2, rtol=1e-5, atol=1e-7)


# Inputs on which CAGrad's direction once depended on the task order (issue #5). The first two:
# opposite gradients make G singular with a positive null vector, the old NNLS on the Gramian's root
# let the cone-projection multipliers run off along it (1e11), and lam^T G lam, rounded to 0, let the
# projection pass as a point of the ball. The others: an opposite pair puts the origin in the hull,
# where the dual's kink at g_w = 0 stalled the iterative solver on a g_w of rounding size, with a
# gradient 1e-8 times smaller than the rest or (c = 1) a dual optimum flat along a ray.
CAGRAD_ORDER_CASES = [
    ([[1.25, 1.0], [10.0, 0.0], [-1.625, 0.0]], 0.4),
    (
        [
            [3.1330414240796203e-207, 0.13493412124941193],
            [-0.420881057836282, 3.1330414240796203e-207],
            [0.0, -50.514478373655116],
            [3.1330414240796203e-207, 0.8118739327793592],
        ],
        0.4,
    ),
    ([[150.0, 200.0, -100.0, -50.0], [1e-05, 0.0, 0.0, 1e-05], [-3.0, -4.0, 2.0, 1.0]], 5.0),
    ([[0.02, 0.01], [0.0, 1.0], [20.0, 20.0], [0.0, -2e-07]], 2.0),
    (
        [
            [-5e-7, 2e-6, 3e-6, -2e-6, -3e-6],
            [-1.5, 0.75, 2.75, 0, -2.75],
            [0.225, -0.15, -0.275, -0.15, -0.075],
            [150.0, -75.0, -275.0, 0.0, 275.0],
        ],
        1.0,
    ),
]


@pytest.mark.parametrize(("rows", "c"), CAGRAD_ORDER_CASES)
def test_cagrad_direction_does_not_depend_on_the_task_order(rows: list[list[float]], c: float) -> None:
    J0 = torch.tensor(rows, dtype=torch.float64)
    T = J0.shape[0]
    row_scales = itertools.product([0.1, 1.0, 10.0], repeat=T) if T == 3 else [(1.0,) * T]
    for k in row_scales:
        J = J0 * torch.tensor(k, dtype=torch.float64)[:, None]
        d = direction_of(_cagrad(J, c=c)[0], J)
        M = float(J.norm(dim=1).max())
        for perm in itertools.permutations(range(T)):
            Jp = J[list(perm)]
            dp = direction_of(_cagrad(Jp, c=c)[0], Jp)
            assert float((dp - d).norm()) <= 1e-9 * max(float(d.norm()), M), (k, perm)


def test_dual_cone_projection_keeps_multipliers_bounded_on_a_singular_gramian() -> None:
    """Opposite gradients (G has a null vector with positive entries) and norms 80 apart: the
    multipliers of a basic solution are O(1), and lam^T G lam keeps its precision."""
    J0 = np.array([[1.25, 1.0], [10.0, 0.0], [-1.625, 0.0]]) * np.array([[0.1], [1.0], [1.0]])
    b = np.full(3, 1.0 / 3.0)
    g0 = J0.mean(0)
    expected = np.array([0.0, g0[1]])  # the cone is {d : d_x = 0, d_y >= 0}
    for perm in itertools.permutations(range(3)):
        J = J0[list(perm)]
        G = J @ J.T
        for Gs in (G, G / np.max(np.diag(G))):
            lam = dual_cone_projection(Gs, b)
            assert (lam >= 0).all() and lam.max() < 10.0
            np.testing.assert_allclose((b + lam) @ J, expected, atol=1e-14)
            np.testing.assert_allclose(lam @ G @ lam, g0[0] ** 2, rtol=1e-12)


def test_upgrad_with_duplicated_and_opposite_gradients_conflicts_with_no_task() -> None:
    """Three equal gradients, one nearly opposite, one a little off: the old NNLS on the Gramian's
    root (before the active-set `dual_cone_projection`) left inner products of -0.002 here."""
    J = torch.full((5, 5), -9.5, dtype=torch.float64)
    J[2, 0] = -9.40625
    J[1] = -0.99 * J[0]
    w = aggregate_on(build("upgrad", 5), J)
    assert (w >= 0.2 - 1e-12).all()
    assert_non_conflicting(direction_of(w, J), J)


@pytest.mark.parametrize("name", NAMES)
def test_every_balancer_works_without_shared_parameters(name: str) -> None:
    """Single-task architectures share nothing: the Jacobian is T x 0."""
    theta = torch.nn.Parameter(torch.zeros(3))
    losses = torch.tensor([0.5, 1.0, 2.0]) + theta
    ctx = StepContext(losses, ["t0", "t1", "t2"], [], [theta], step=0, epoch=0)
    bal = build(name, 3)
    w = bal.backward(ctx)
    assert w.shape == (3,) and torch.isfinite(w).all()
    # loss weighting scales each task's own parameters by its weight; gradient aggregation
    # gives task-specific parameters the plain gradient of the sum of losses (the contract)
    expected = w if bal.kind == "loss" else torch.ones(3)
    torch.testing.assert_close(theta.grad, expected)
