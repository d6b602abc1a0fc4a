"""Numerical agreement of Seesaw's gradient balancers with torchjd 0.18 (Quinton & Rey's
Jacobian-descent library), on the Jacobian families of `balancer_checks` (random, conflicting,
aligned, duplicated rows, a zero row, row norms from 1e-3 to 1e3, opposite rows).

Conventions, per method (where the two differ, the comparison is made after the documented
normalisation):
- PCGrad: torchjd visits tasks in `torch.randperm` order; patched to 0..T-1 it must equal ours with
  `random_order=False`, weights to 1e-10.
- MGDA: torchjd runs Frank-Wolfe (approximate); ours is exact. Ours never has a larger min-norm
  value, and the directions agree to 1e-5 M (M = largest gradient norm) wherever Frank-Wolfe's
  duality gap has closed.
- CAGrad: torchjd solves the dual with cvxpy/CLARABEL on G / trace(G) (the weights do not depend
  on that scale) and does not divide by 1 + c^2: compare with `rescale=False`, CLARABEL's
  tolerances tightened to 1e-10 (its defaults give the weights to about 1e-4 only): directions
  to 1e-5 relative, weights too where they are unique (independent rows), and ours never worse
  in the worst case. Where the dual is degenerate (g_w = 0: a zero row, the origin in the hull)
  torchjd returns zero weights (with its default norm_eps) and ours the projection of g0 onto
  the non-conflicting cone: both reach the optimal worst-case value 0, ours inside the ball.
  Every family, plus a zero row beside a strong conflict. Skipped without
  cvxpy and clarabel (`torchjd[cagrad]`, not a Seesaw requirement).
- IMTL-G (`IMTLGWeighting`): the same pinv formula; weights to 1e-6 absolute (they sum to 1).
- Aligned-MTL (`AlignedMTLWeighting`): torchjd's preference vector is 1/T, ours is 1 (LibMTL's
  `B.sum(0)`): ours == T * torchjd, to 1e-8 relative, for every scale mode.
- Nash-MTL: torchjd's `NashMTL` needs cvxpy and ECOS (`torchjd[nash_mtl]`); without them that
  test is skipped and ours is checked against a brute-force solve of G a = 1/a (scipy's
  least_squares from several starts). torchjd stops its convex iterations at
  ||G a - 1/a|| < 1e-3 and warm-starts from ones: agreement to 1e-4 relative on solvable,
  well-scaled Jacobians (on badly scaled ones ECOS stops far from the solution, and on a
  rank-one 2 x 2 Gramian it fails and torchjd returns ones; both left out).
- UPGrad (`UPGradWeighting`): torchjd's default projector needs qpsolvers/quadprog and, for a
  strictly convex QP, adds reg_eps = 1e-4 to G / trace(G) (weights shift by about reg_eps).
  We plug into torchjd's UPGradWeighting an exact projector written here (active-set enumeration
  of the KKT conditions of min v^T G v s.t. v >= u): directions to 1e-8 M. With quadprog
  installed, also against torchjd's own projector with reg_eps = 1e-10, to 1e-6 relative.
- GradDrop: seeded alike (torch's default generator seeded s, ours with seed s), the draws are the
  same stream, so every step agrees exactly; and the mean over many draws approaches the
  expectation sum_t q_t * g_t whose projections give our reported weights (5 standard errors).
- GradVac (`GradVacWeighting`): same algorithm on the Gramian; torchjd adds eps to denominators
  (set to 0 here) and shuffles with `torch.randperm` (patched to 0..T-1). Over several steps
  (the EMA targets carry over), weights to 1e-10 relative, on families where no cosine is
  undefined (no zero row, no exactly opposite rows, where the two treat 0/0 differently).
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import torch
from balancer_checks import FAMILIES, jacobian_family

from engine.balancers import build_balancer
from engine.balancers.graddrop import keep_probabilities, mean_equivalent_weights
from engine.balancers.nashmtl import nash_solution

aggregation = pytest.importorskip("torchjd.aggregation")
linalg = pytest.importorskip("torchjd._linalg")

CASES = [(family, T) for T in (2, 3, 5) for family in FAMILIES]
IDS = [f"{f}-{T}" for f, T in CASES]


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def build(name: str, n_tasks: int, **params: object):
    return build_balancer(name, [f"t{i}" for i in range(n_tasks)], params)


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


def scale_of(J: torch.Tensor) -> float:
    """M, the largest task-gradient norm."""
    return float(J.norm(dim=1).max())


def assert_same_direction(w: torch.Tensor, ref: torch.Tensor, J: torch.Tensor, tol: float) -> None:
    d, r = w.double() @ J, ref.double() @ J
    bound = tol * max(float(r.norm()), scale_of(J))
    assert float((d - r).norm()) <= bound, f"directions differ by {float((d - r).norm())} > {bound}"


@pytest.fixture
def fixed_randperm(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.randperm(n) -> 0..n-1, so torchjd's random visiting orders become the fixed one."""
    monkeypatch.setattr(torch, "randperm", lambda n, *a, **k: torch.arange(n))


# ---------------------------------------------------------------------------------------------
# PCGrad, MGDA, CAGrad (existing balancers)


@pytest.mark.parametrize(("family", "T"), CASES, ids=IDS)
def test_pcgrad_fixed_order_matches_torchjd(family: str, T: int, fixed_randperm: None) -> None:
    J = jacobian_family(family, T, seed=T)
    ref = aggregation.PCGradWeighting()(gram(J))
    w = build("pcgrad", T, random_order=False).gramian_weights(gram(J))
    torch.testing.assert_close(w, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(("family", "T"), [c for c in CASES if c[0] != "aligned"], ids=lambda c: str(c))
def test_mgda_is_at_least_as_good_as_torchjd_frank_wolfe(family: str, T: int) -> None:
    J = jacobian_family(family, T, seed=T)
    G = gram(J)
    ref = aggregation.MGDAWeighting(epsilon=1e-12, max_iters=3000)(G)
    w = build("mgda", T).gramian_weights(G)
    scale = float(G.diagonal().max())
    assert float(w @ G @ w) <= float(ref @ G @ ref) + 1e-12 * scale
    gap = float(ref @ G @ ref - (G @ ref).min())  # Frank-Wolfe duality gap of torchjd's answer
    if gap <= 1e-12 * scale:
        assert_same_direction(w, ref, J, 1e-5)


CAGRAD_CASES = [*CASES, ("zero_row_conflict", 3), ("zero_row_conflict", 5)]


def cagrad_jacobian(family: str, T: int) -> torch.Tensor:
    """A `jacobian_family`, or "zero_row_conflict": a zero row and a row pointing against another
    (a dual optimum other than the zero row's g_w = 0, except for T = 5, c = 0.9)."""
    if family != "zero_row_conflict":
        return jacobian_family(family, T, seed=T)
    J = jacobian_family("zero_row", T, seed=T)
    J[1] = -3.0 * J[2]
    return J


@pytest.fixture
def tight_clarabel(monkeypatch: pytest.MonkeyPatch) -> None:
    """cvxpy's Problem.solve with CLARABEL's tolerances at 1e-10 (torchjd passes none)."""
    import cvxpy as cp

    solve = cp.Problem.solve
    tight = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "tol_ktratio": 1e-8}
    tight["max_iter"] = 500
    monkeypatch.setattr(cp.Problem, "solve", lambda self, *a, **k: solve(self, *a, **{**tight, **k}))


@pytest.mark.skipif(not has("cvxpy", "clarabel"), reason="torchjd's CAGrad needs cvxpy + clarabel")
@pytest.mark.parametrize("c", [0.4, 0.9])
@pytest.mark.parametrize(("family", "T"), CAGRAD_CASES, ids=[f"{f}-{T}" for f, T in CAGRAD_CASES])
def test_cagrad_matches_torchjd_without_rescale(family: str, T: int, c: float, tight_clarabel: None) -> None:
    J = cagrad_jacobian(family, T)
    G = gram(J)
    bal = build("cagrad", T, c=c, rescale=False)
    w = bal.gramian_weights(G)
    d, g0 = w @ J, J.mean(0)
    M = scale_of(J)
    radius = c * float(g0.norm())
    assert float((d - g0).norm()) <= radius * (1 + 1e-9) + 1e-12
    if bal.internals()["cone_projection"]:  # degenerate dual: torchjd gives up (zero weights)
        assert (aggregation.CAGradWeighting(c=c)(G) == 0).all()
        assert float((J @ d).min()) >= -1e-9 * M * max(float(d.norm()), M)  # the optimal value, 0
        return
    ref = aggregation.CAGradWeighting(c=c, norm_eps=1e-12)(G)
    assert_same_direction(w, ref, J, 1e-5)
    if family not in ("duplicated", "opposite"):  # independent rows: the weights are unique
        torch.testing.assert_close(w, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
    # ours is the better solution of the two: its worst task improvement is at least torchjd's
    assert float((J @ d).min()) >= float((J @ (ref @ J)).min()) - 1e-9 * M**2


# ---------------------------------------------------------------------------------------------
# IMTL-G and Aligned-MTL


@pytest.mark.parametrize(("family", "T"), CASES, ids=IDS)
def test_imtl_matches_torchjd(family: str, T: int) -> None:
    J = jacobian_family(family, T, seed=T)
    ref = aggregation.IMTLGWeighting()(gram(J))
    w = build("imtl", T).gramian_weights(gram(J))
    torch.testing.assert_close(w, ref, atol=1e-6, rtol=0)
    assert_same_direction(w, ref, J, 1e-6)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize(("family", "T"), CASES, ids=IDS)
def test_alignedmtl_is_T_times_torchjd(family: str, T: int, scale_mode: str) -> None:
    J = jacobian_family(family, T, seed=T)
    ref = aggregation.AlignedMTLWeighting(scale_mode=scale_mode)(gram(J))
    w = build("alignedmtl", T, scale_mode=scale_mode).gramian_weights(gram(J))
    torch.testing.assert_close(w, T * ref, atol=1e-8 * max(1.0, float(w.abs().max())), rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# Nash-MTL

SOLVABLE = [c for c in CASES if c[0] not in ("zero_row", "opposite")]


def brute_force_nash(G: np.ndarray, starts: int = 8) -> np.ndarray:
    """a > 0 with a * (G a) = 1, by scipy least squares from several random starts."""
    from scipy.optimize import least_squares

    T = G.shape[0]
    rng = np.random.default_rng(0)
    n = np.sqrt(np.diag(G))
    best, best_cost = None, np.inf
    for _ in range(starts):
        x0 = rng.uniform(0.2, 3.0, T) / n
        sol = least_squares(
            lambda a: a * (G @ a) - 1.0, x0, bounds=(1e-12 / n, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15
        )
        if sol.cost < best_cost:
            best, best_cost = sol.x, sol.cost
    assert best is not None and best_cost < 1e-18, f"no brute-force solution (cost {best_cost})"
    return best


@pytest.mark.parametrize(("family", "T"), SOLVABLE, ids=[f"{f}-{T}" for f, T in SOLVABLE])
def test_nashmtl_matches_a_brute_force_solve(family: str, T: int) -> None:
    J = jacobian_family(family, T, seed=T)
    G = gram(J).numpy()
    bal = build("nashmtl", T, max_norm=0.0)
    w = bal.gramian_weights(gram(J)).numpy()
    np.testing.assert_allclose(w, brute_force_nash(G), rtol=1e-7)
    np.testing.assert_allclose(w * (G @ w), 1.0, atol=1e-9)
    assert bal.internals()["nash_residual"] < 1e-9


@pytest.mark.parametrize("family", ["zero_row", "opposite"])
@pytest.mark.parametrize("T", [2, 3, 5])
def test_nashmtl_without_a_bargaining_solution_stays_finite(family: str, T: int) -> None:
    J = jacobian_family(family, T, seed=T)
    bal = build("nashmtl", T)
    w = bal.gramian_weights(gram(J))
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert float((w @ J).norm()) <= 1.0 + 1e-9  # max_norm = 1
    if family == "zero_row":
        assert w[0] == 0.0
    if family == "opposite":
        assert bal.internals()["nash_residual"] > 1e-3  # reported: no solution exists


# ECOS stops far from the solution on badly scaled Gramians, and fails outright on the rank-one
# 2 x 2 one (two identical rows), where torchjd then returns its initial weights (ones).
NASH_TORCHJD = [c for c in SOLVABLE if c[0] != "badly_scaled" and c != ("duplicated", 2)]


@pytest.mark.skipif(not has("cvxpy", "ecos"), reason="torchjd's NashMTL needs cvxpy + ecos")
@pytest.mark.parametrize("max_norm", [0.0, 1.0])
@pytest.mark.parametrize(("family", "T"), NASH_TORCHJD, ids=[f"{f}-{T}" for f, T in NASH_TORCHJD])
def test_nashmtl_matches_torchjd(family: str, T: int, max_norm: float) -> None:
    J = jacobian_family(family, T, seed=T)
    ref = aggregation.NashMTL(n_tasks=T, max_norm=max_norm, optim_niter=200).weighting(J)
    w = build("nashmtl", T, max_norm=max_norm).gramian_weights(gram(J))
    torch.testing.assert_close(w, ref, atol=0, rtol=1e-4)


def test_nash_solution_is_scale_free_per_task() -> None:
    J = jacobian_family("conflicting", 4, seed=2)
    k = torch.tensor([1e-3, 1.0, 10.0, 1e3], dtype=torch.float64)
    a, _ = nash_solution(gram(J).numpy())
    b, _ = nash_solution(gram(k[:, None] * J).numpy())
    np.testing.assert_allclose(b * k.numpy(), a, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# UPGrad


def exact_dual_cone_projection(u: np.ndarray, G: np.ndarray) -> np.ndarray:
    """argmin v^T G v subject to v >= u, by enumerating which constraints are free (KKT)."""
    T = u.size
    tol = 1e-9 * max(1.0, float(np.abs(G).max()))
    best, best_value = None, np.inf
    for k in range(T + 1):
        for free in itertools.combinations(range(T), k):
            S = list(free)
            F = [i for i in range(T) if i not in S]
            v = u.copy()
            if S:
                v[S] = np.linalg.lstsq(G[np.ix_(S, S)], -G[np.ix_(S, F)] @ u[F], rcond=None)[0]
            grad = G @ v
            size = tol * max(1.0, float(np.abs(v).max()))
            if np.all(v[S] >= u[S] - 1e-12) and np.all(grad[F] >= -size) and np.all(np.abs(grad[S]) <= size):
                value = float(v @ G @ v)
                if value < best_value:
                    best, best_value = v, value
    assert best is not None
    return best


class ExactProjector(linalg.DualConeProjector):
    """A torchjd DualConeProjector solving each QP exactly (small T only)."""

    def __call__(self, U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        Gn = G.detach().double().numpy()
        rows = [exact_dual_cone_projection(u, Gn) for u in U.detach().double().numpy()]
        return torch.as_tensor(np.stack(rows), dtype=G.dtype)


@pytest.mark.parametrize(("family", "T"), CASES, ids=IDS)
def test_upgrad_matches_torchjd_with_an_exact_projector(family: str, T: int) -> None:
    J = jacobian_family(family, T, seed=T)
    ref = aggregation.UPGradWeighting(projector=ExactProjector())(gram(J))
    w = build("upgrad", T).gramian_weights(gram(J))
    assert_same_direction(w, ref, J, 1e-8)


WELL_POSED = [c for c in CASES if c[0] not in ("badly_scaled", "opposite", "duplicated", "zero_row")]


@pytest.mark.skipif(not has("qpsolvers", "quadprog"), reason="torchjd's default projector needs quadprog")
@pytest.mark.parametrize(("family", "T"), WELL_POSED, ids=[f"{f}-{T}" for f, T in WELL_POSED])
def test_upgrad_matches_torchjd_quadprog_as_regularisation_vanishes(family: str, T: int) -> None:
    J = jacobian_family(family, T, seed=T)
    projector = linalg.QuadprogProjector(norm_eps=0.0, reg_eps=1e-10)
    ref = aggregation.UPGradWeighting(projector=projector)(gram(J))
    w = build("upgrad", T).gramian_weights(gram(J))
    torch.testing.assert_close(w, ref, atol=0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# GradDrop


@pytest.mark.parametrize("family", ["gaussian", "conflicting", "zero_row", "opposite"])
def test_graddrop_draws_equal_torchjd_draws_with_the_same_seed(family: str) -> None:
    from balancer_checks import flat_grad, linear_context

    J = jacobian_family(family, 3, seed=5)
    bal = build("graddrop", 3, seed=11)
    torch.manual_seed(11)
    ref = aggregation.GradDrop()
    for _ in range(3):
        expected = ref(J)
        ctx = linear_context(J)
        bal.backward(ctx)
        torch.testing.assert_close(flat_grad(ctx.shared_params), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("family", ["conflicting", "gaussian", "badly_scaled"])
def test_graddrop_mean_over_draws_matches_torchjd_and_the_expectation(family: str) -> None:
    J = jacobian_family(family, 3, seed=4)
    n = 1500
    torch.manual_seed(123)
    ref = aggregation.GradDrop()
    draws = torch.stack([ref(J) for _ in range(n)])
    q = keep_probabilities(J, 0.0)
    expected = (q * J).sum(dim=0)
    # per coordinate the draw is S+ (positives kept) w.p. P, else S-: variance P (1 - P) (S+ - S-)^2
    pos, neg = J.clamp_min(0).sum(0), J.clamp_max(0).sum(0)
    P = 0.5 * (1 + J.sum(0) / J.abs().sum(0))
    stderr = torch.sqrt(P * (1 - P) * (pos - neg) ** 2 / n)
    assert ((draws.mean(0) - expected).abs() <= 5 * stderr + 1e-12).all()
    # our mean-equivalent weights are the projections of each task's expected kept gradient
    w = mean_equivalent_weights(J, 0.0)
    torch.testing.assert_close(w, ((q * J) * J).sum(1) / (J * J).sum(1))
    assert ((w > 0) & (w <= 1)).all()


# ---------------------------------------------------------------------------------------------
# GradVac

GRADVAC_CASES = [c for c in CASES if c[0] not in ("zero_row", "opposite")]


@pytest.mark.parametrize("beta", [0.01, 0.5])
@pytest.mark.parametrize(("family", "T"), GRADVAC_CASES, ids=[f"{f}-{T}" for f, T in GRADVAC_CASES])
def test_gradvac_fixed_order_matches_torchjd_over_steps(
    family: str, T: int, beta: float, fixed_randperm: None
) -> None:
    J = jacobian_family(family, T, seed=T)
    ref = aggregation.GradVacWeighting(beta=beta, eps=0.0)
    bal = build("gradvac", T, beta=beta, random_order=False)
    for step in range(4):  # the targets carry over: the Jacobians drift a little between steps
        Js = J * (1 + 0.1 * step) + 0.3 * step * torch.roll(J, 1, dims=0)
        w = bal.gramian_weights(gram(Js))
        torch.testing.assert_close(w, ref(gram(Js)), atol=1e-10, rtol=1e-10)
