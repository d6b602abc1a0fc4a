"""Scale of the gradients, for the Gramian-based balancers (engine.balancers.numerics).

Regression tests for two numerical flaws:
- gradients of magnitude 1e-161 have a Gramian J J^T of 1e-322 or 0 in float64 (and 1e155 one of
  inf), so the weights came out wrong (UPGrad's and PCGrad's non-conflict property failed). The
  weights are now solved on the Gramian of J / s (s a power of two) and mapped back by the
  method's degree (`weights_degree`): the direction at scales 1e-160 and 1e150 must be the one at
  scale 1, up to the scale (c d for a scale-invariant method, d for Nash-MTL and MGDA-l2), and
  exactly so for a power-of-two scale;
- the zero-gradient cut-off differed between methods (CAGrad 5.5e-9, the others 1e-12): it is now
  one constant, `numerics.ZERO_NORM`, relative to the largest norm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from balancer_checks import flat_grad, jacobian_family, linear_context
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_balancer_properties import NON_CONFLICTING, clear_rank, jacobians, names_for, scale

from engine.balancers import build_balancer, representation_balancers
from engine.balancers.base import GradientAggregation, StepContext
from engine.balancers.numerics import ZERO_NORM, ZERO_NORM_SQ, nonzero_gradients, rescale
from engine.gradients import gramian, jacobian_scale, power_of_two_scale, scale_gramian

GRAMIAN_BASED = representation_balancers()
#: every Gramian-based method at its defaults, and the parameter settings that change its degree
#: or carry state across steps
VARIANTS: list[tuple[str, dict]] = [
    *[(n, {}) for n in GRAMIAN_BASED],
    ("mgda", {"normalization": "l2"}),
    ("mgda", {"normalization": "loss"}),
    ("mgda", {"normalization": "loss+"}),
    ("nashmtl", {"max_norm": 0.0}),
    ("cagrad", {"c": 1.5}),
    ("gradcraft", {"tau": 0.4, "beta": 0.5}),
    ("gradvac", {"beta": 0.5}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" if p else n for n, p in VARIANTS]
#: internals that scale with the gradients: (method, key prefix) -> degree in the scale of J
INTERNAL_DEGREES = {
    ("cagrad", "gw_norm"): 1,
    ("imtl", "projection"): 1,
    ("alignedmtl", "sigma_min"): 1,
    ("nashmtl", "alpha_"): -1,
}
POWER_OF_TWO_SCALES = [2.0**-530, 2.0**-600, 2.0**500]


def build(name: str, params: dict, T: int) -> GradientAggregation:
    bal = build_balancer(name, names_for(T), dict(params))
    assert isinstance(bal, GradientAggregation)
    return bal


def steps(bal: GradientAggregation, J: torch.Tensor, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(direction, weights) of the last of `n` steps on J, 1.5 J, ... (state carries over)."""
    T = J.shape[0]
    losses = torch.linspace(0.5, 2.0, T, dtype=torch.float64)
    d = w = torch.zeros(0)
    for step in range(n):
        ctx = linear_context(J * (1.0 + 0.5 * step), losses, step=step)
        ctx.task_names = names_for(T)
        w = bal.backward(ctx)
        d = flat_grad(ctx.shared_params)
    return d, w


def degree(name: str, params: dict) -> int:
    k = build(name, params, 2).weights_degree()
    assert k in (0, -1), f"{name}: a Gramian-based method declares its degree"
    return k


@st.composite
def ordinary_jacobians(draw: st.DrawFn) -> np.ndarray:
    """T x P with entries 0 or of magnitude 1e-3 .. 10 (so that scaling by 1e-160 loses none)."""
    T, P = draw(st.integers(2, 4)), draw(st.integers(1, 6))
    mag = st.floats(1e-3, 10.0)
    element = st.one_of(st.just(0.0), mag, mag.map(lambda x: -x))
    return draw(arrays(np.float64, (T, P), elements=element))


# ---------------------------------------------------------------------------------------------
# The same direction at every scale


def test_every_gramian_based_method_declares_its_degree() -> None:
    for name in GRAMIAN_BASED:
        assert degree(name, {}) in (0, -1)
    assert degree("nashmtl", {}) == -1 and degree("mgda", {"normalization": "l2"}) == -1
    assert degree("mgda", {}) == 0 and degree("upgrad", {}) == 0 and degree("pcgrad", {}) == 0


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
@settings(max_examples=20, deadline=None)
@given(J=ordinary_jacobians(), c=st.sampled_from([1e-160, 1e-161, 1e-165, 1e150, 1e155]))
def test_direction_at_tiny_and_huge_scales_is_the_one_at_scale_one(
    name: str, params: dict, J: np.ndarray, c: float
) -> None:
    Jt = torch.as_tensor(J)
    assume(clear_rank(Jt))  # c J is J up to rounding: nearly dependent gradients would amplify it
    T = Jt.shape[0]
    k = degree(name, params)
    d1, _ = steps(build(name, params, T), Jt)
    dc, wc = steps(build(name, params, T), Jt * c)
    assert torch.isfinite(wc).all() and torch.isfinite(dc).all()
    back = dc / c ** (1 + k)  # d(c J) = c^(1 + k) d(J)
    bound = 1e-6 * max(float(d1.norm()), scale(Jt) ** (1 + k)) + 1e-300
    assert float((back - d1).norm()) <= bound, f"{name} at scale {c}: {back.tolist()} vs {d1.tolist()}"


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("family", ["gaussian", "conflicting", "badly_scaled", "opposite", "zero_row"])
def test_a_power_of_two_scale_gives_the_same_weights_exactly(name: str, params: dict, family: str) -> None:
    """J and c J have the same scaled Gramian bit for bit: the weights are c^k w, exactly, and the
    internals are mapped back to raw units."""
    J = jacobian_family(family, 3, seed=4)
    k = degree(name, params)
    ref = build(name, params, 3)
    d1, w1 = steps(ref, J)
    for c in POWER_OF_TWO_SCALES:
        bal = build(name, params, 3)
        dc, wc = steps(bal, J * c)
        # MGDA's normaliser n_t of a zero gradient is replaced by 1 in raw units: its weight v_t
        # does not scale (and multiplies a zero row)
        ck = torch.tensor(c**k, dtype=torch.float64)
        factor = torch.where(J.abs().amax(dim=1) > 0, ck, torch.ones_like(ck))
        torch.testing.assert_close(wc, w1 * factor, rtol=0, atol=0)
        torch.testing.assert_close(dc, d1 * c ** (1 + k), rtol=0, atol=0)
        for key, value in ref.internals().items():
            deg = next((d for (n, p), d in INTERNAL_DEGREES.items() if n == name and key.startswith(p)), 0)
            if name == "mgda" and key == "min_norm_sq":
                deg = 2 * (1 + degree(name, params))  # ||v^T J / n||^2
            assert math.isclose(bal.internals()[key], rescale(value, c, deg), rel_tol=1e-15), (key, value)


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("family", ["gaussian", "conflicting", "badly_scaled", "duplicated", "zero_row"])
def test_ordinary_magnitudes_give_the_weights_of_the_unscaled_gramian(
    name: str, params: dict, family: str
) -> None:
    """The scaled solve is exact: at scale 1 it gives the weights of J J^T itself."""
    J = jacobian_family(family, 3, seed=7) * 3.7
    _, w = steps(build(name, params, 3), J, n=1)
    ctx = linear_context(J, torch.linspace(0.5, 2.0, 3, dtype=torch.float64))
    ctx.task_names = names_for(3)
    ref = build(name, params, 3).weights_from_gramian(J @ J.T, ctx)
    torch.testing.assert_close(w, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_an_unscaled_tiny_gramian_is_rescaled_before_the_solve(name: str, params: dict) -> None:
    """The representation route gets G itself: it is divided by a power of two first."""
    J = jacobian_family("conflicting", 3, seed=2)
    G = J @ J.T
    ctx = StepContext(torch.ones(3, dtype=torch.float64), names_for(3), [], [], step=0, epoch=0)
    k = degree(name, params)
    ref = build(name, params, 3).weights_from_gramian(G, ctx)
    for c in (2.0**-500, 2.0**480):
        w = build(name, params, 3).weights_from_unscaled_gramian(G * c * c, ctx)
        torch.testing.assert_close(w, ref * c**k, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# Non-conflict at tiny scales (the property that failed at 1e-161)


def _up(x: torch.Tensor) -> torch.Tensor:
    """x divided by the power of two of its largest |entry| (exact, subnormals included)."""
    return x / jacobian_scale(x)


@pytest.mark.parametrize("name", sorted(NON_CONFLICTING))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), c=st.sampled_from([1e-160, 1e-161, 1e-165, 1e-200, 1e-290, 1e150, 1e155]))
def test_non_conflicting_methods_at_tiny_and_huge_scales(name: str, data: st.DataObject, c: float) -> None:
    J = torch.as_tensor(data.draw(jacobians(*NON_CONFLICTING[name])))
    if data.draw(st.booleans()):  # a strongly conflicting pair: g_1 = -k g_0 + noise
        J[1] = -data.draw(st.floats(0.1, 3.0)) * J[0] + 0.01 * J[1]
    Jc = J * c
    T = Jc.shape[0]
    bal = build_balancer(name, names_for(T))
    ctx = linear_context(Jc, torch.ones(T, dtype=torch.float64))
    ctx.task_names = names_for(T)
    bal.backward(ctx)
    d = flat_grad(ctx.shared_params)
    # the property on the gradients the method saw, c J, brought back to order 1 exactly
    s = jacobian_scale(Jc)
    Ju, du = Jc / s, d / s
    assume(clear_rank(Ju))
    M = scale(Ju)
    dots = Ju @ du
    assert (dots >= -1e-6 * M * max(float(du.norm()), M)).all(), f"{name}: inner products {dots.tolist()}"


@pytest.mark.parametrize("name", ["upgrad", "pcgrad", "mgda"])
def test_the_failing_magnitude_is_fixed(name: str) -> None:
    """Gradients of 1e-161 (hypothesis' counterexample): J J^T is 1e-322 or 0 in float64."""
    J = torch.tensor([[1.0, 0.5], [-2.0, 0.3]], dtype=torch.float64) * 1e-161
    assert float((J @ J.T).abs().max()) < 1e-300  # the unscaled Gramian: subnormal rubbish
    bal = build_balancer(name, names_for(2))
    ctx = linear_context(J)
    bal.backward(ctx)
    d = flat_grad(ctx.shared_params) / 1e-161
    assert ((J / 1e-161) @ d > 0.1).all()  # strictly improves both tasks, as at scale 1


# ---------------------------------------------------------------------------------------------
# The Gramian and the scale helpers


def test_gramian_scales_exactly_and_keeps_its_contract() -> None:
    J = jacobian_family("badly_scaled", 4, n_params=20_000, seed=1)  # more columns than a chunk
    exact = J @ J.T
    torch.testing.assert_close(gramian(J), exact, rtol=1e-13, atol=1e-13 * float(exact.abs().max()))
    J32 = J.float().double()
    torch.testing.assert_close(gramian(J.float()), J32 @ J32.T, rtol=1e-13, atol=0)
    s = jacobian_scale(J)
    # the same up to rounding (exactly, but for entries that scaling makes subnormal)
    G = gramian(J)
    torch.testing.assert_close(
        gramian(J, scale=s), G / s / s, rtol=1e-13, atol=1e-13 * float(G.abs().max()) / s / s
    )
    assert gramian(torch.zeros(2, 0, dtype=torch.float64)).shape == (2, 2)


@pytest.mark.parametrize("c", [1e-161, 1e-200, 1e155, 1e200])
def test_the_scaled_gramian_does_not_underflow_or_overflow(c: float) -> None:
    J = jacobian_family("conflicting", 3, seed=3)
    G = J @ J.T
    Jc = J * c
    naive = Jc @ Jc.T
    assert not torch.allclose(naive / naive.diagonal().max(), G / G.diagonal().max())
    s = jacobian_scale(Jc)
    Gs = gramian(Jc, scale=s)
    assert 0.25 <= float(Gs.abs().max()) <= 12.0 * 20  # entries of order 1 (at most P = 12 products)
    torch.testing.assert_close(Gs / Gs.diagonal().max(), G / G.diagonal().max(), rtol=1e-13, atol=1e-15)


def test_scale_helpers_handle_edge_cases() -> None:
    assert power_of_two_scale(0.75) == 1.0 and power_of_two_scale(1.0) == 2.0
    assert power_of_two_scale(3e-161) == 2.0 ** math.frexp(3e-161)[1]
    for bad in (0.0, -1.0, math.inf, math.nan):
        assert power_of_two_scale(bad) == 1.0
    assert power_of_two_scale(1.7e308) == 2.0**1023  # not 2^1024, which is not a float
    assert jacobian_scale(torch.zeros(2, 3)) == 1.0 and jacobian_scale(torch.zeros(2, 0)) == 1.0
    assert jacobian_scale(torch.tensor([[-3.0, 1.0]])) == 4.0
    assert rescale(3.0, 2.0**-300, -2) == 3.0 * 2.0**600 and rescale(3.0, 2.0**-300, 2) == 3.0 * 2.0**-600
    assert rescale(1.0, 2.0**-600, -2) == math.inf  # outside float64: inf, not an error
    assert rescale(1.0, 2.0**600, 2) == math.inf and rescale(-1.0, 2.0**600, 2) == -math.inf
    G = torch.tensor([[1e-300, 0.0], [0.0, 4e-301]], dtype=torch.float64)
    Gs, s = scale_gramian(G)
    assert 0.25 <= float(Gs.diagonal().max()) < 1.0 and torch.equal(Gs * s * s, G)
    assert scale_gramian(torch.zeros(2, 2))[1] == 1.0


# ---------------------------------------------------------------------------------------------
# One zero-gradient cut-off


def test_the_zero_cut_off_is_relative_to_the_largest_norm() -> None:
    assert ZERO_NORM_SQ == ZERO_NORM**2
    for top in (1e-300, 1.0, 1e300):
        diag = np.array([top, top * (0.5 * ZERO_NORM) ** 2, top * (2.0 * ZERO_NORM) ** 2, 0.0])
        assert nonzero_gradients(diag).tolist() == [True, False, True, False]
    assert not nonzero_gradients(np.array([1.0, np.nan])).any()
    assert nonzero_gradients(np.zeros(0)).shape == (0,)


CUT_OFF_METHODS = ["pcgrad", "upgrad", "cagrad", "imtl", "nashmtl", "gradvac", "gradcraft", "mgda"]


@pytest.mark.parametrize("name", CUT_OFF_METHODS)
@pytest.mark.parametrize("magnitude", [1.0, 1e-161, 1e150])
def test_every_method_uses_the_shared_cut_off(name: str, magnitude: float) -> None:
    """A gradient at 0.5 ZERO_NORM of the largest acts as a zero one; at 2 ZERO_NORM the
    non-conflict methods treat it as the (conflicting) gradient it is. At any scale."""
    g1 = torch.tensor([1.0, 0.0, 0.3], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(2.0)

    def direction(r: float) -> torch.Tensor:
        J = torch.stack([g1, r * g2]) * magnitude
        d, _ = steps(build(name, {}, 2), J, n=1)
        return d / magnitude ** (1 + degree(name, {}))

    zero = direction(0.0)
    below = direction(0.5 * ZERO_NORM)
    torch.testing.assert_close(below, zero, rtol=1e-9, atol=1e-9)
    if name in ("pcgrad", "upgrad", "cagrad"):
        above = direction(2.0 * ZERO_NORM)
        assert float((above - zero).norm()) > 0.1  # the tiny gradient now counts
    if name in ("pcgrad", "upgrad"):
        assert float(g2 @ above) >= -1e-9  # the constraint g2 . d >= 0 binds
    if name == "cagrad":
        # the worst task is the tiny one: CAGrad's d = g0 + c ||g0|| g2 / ||g2||, over 1 + c^2
        c, g0 = 0.4, 0.5 * g1  # (+ 1e-12 g2, below rounding)
        torch.testing.assert_close(above, (g0 + c * g0.norm() * g2) / (1 + c**2), rtol=1e-9, atol=1e-9)
