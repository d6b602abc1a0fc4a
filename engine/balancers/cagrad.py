"""CAGrad (Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021).

With g0 the mean gradient and phi = c^2 ||g0||^2, the update d maximises the worst task
improvement min_i g_i . d in the ball ||d - g0|| <= sqrt(phi). Its dual:

    w* = argmin_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||,   g_w = w^T J,
    d  = g0 + (sqrt(phi) / ||g_w||) g_w,

solved on the Gramian (g_w . g0 = w^T G b with b = 1/T, ||g_w||^2 = w^T G w). As in the
official code (rescale=1), d is divided by 1 + c^2 when `rescale` is on. Effective weights:
(b + sqrt(phi)/||g_w|| w) / (1 + c^2), so direction == weights @ J.

The weights w* need not be unique (duplicated or dependent gradients), but the update is:
whenever some optimal g_w is non-zero, every primal optimum maximises g_w . d over the ball,
and that maximiser is unique. The exception is the degenerate dual, g_w = 0 the only optimum
(a task with a zero gradient, or the origin in the gradients' convex hull with f >= 0 on the
rest of it, e.g. c >= 1 at a Pareto-stationary point): the closed form is undefined there (the
official code's +1e-8 returns g0, which can conflict with tasks; torchjd returns 0, outside the
ball for c < 1) and a computed g_w is rounding noise. The optimal worst-case value is then 0,
and we return the projection p of g0 onto the cone {d : g_i . d >= 0} (`dual_cone_projection`,
an exact active-set NNLS on the cosine matrix): unique, inside the ball, and worst-case value
0. When the optimal value is exactly 0 with g_w != 0, p is the (unique) primal optimum as well,
so the switch is continuous wherever the problem is well posed.

Order independence. The switch is decided on the dual value f(w) alone (reported as
`cone_projection`): degenerate when |f(w)| / ||g0|| <= (1 + c) max(DEGENERATE m_w, VALUE_FLOOR),
with m_w = sum_t w_t ||g_t|| / max_t ||g_t||. Since |f(w)| <= (1 + c) ||g0|| ||g_w||, the closed
form is used only when ||g_w|| > 1e-7 m_w, far above the resolution of ||g_w|| from a Gramian
(sqrt(eps) m_w: rounding in w^T G w is eps m_w^2), and above the solver's absolute accuracy
(1e-12). An exactly degenerate input (zeros, opposite or duplicated gradients, nice numbers)
lands at f ~ 1e-8 m_w or below, well inside the band, whatever the task order. Before, the
switch compared the closed form's worst case with p's and tested ||p - g0|| <= radius through
lam^T G lam, with lam from scipy's nnls on a square root of G / max(diag G): for opposite
gradients of different norms those multipliers ran off along G's null space (1e11), lam^T G lam
rounded to 0 and p was taken for a point of the ball, for some task orders and not others.
Three more measures keep every step independent of the order: the dual is solved on f / ||g0||
(scale-free; its solver's tolerances are absolute); the exact min-norm point of the unit
gradients' hull (MGDA's active set on the cosine matrix) is a candidate, since it reaches the
kink of f at g_w = 0 when the origin is in the hull, where the iterative solver stalls; a
gradient with ||g_t|| <= `ZERO_NORM` max_k ||g_k|| (the cut-off shared by the Gramian-based
balancers, `numerics`) counts as zero: it adds the origin to the hull (the dual value is then
min(0, the value over the other gradients), solved over those only) and constrains nothing in the
cone. Reported w_t: the dual weights, the zero gradients sharing the weight equally when the
origin is the dual optimum.

Scale: the effective weights are scale-invariant (everything above is solved on G / max_t G_tt),
so they are solved on the Gramian of J / s (`GradientAggregation.weights_from_scaled_gramian`):
gradients of 1e-161, whose J J^T underflows, give the weights of gradients of 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation
from engine.balancers.numerics import nonzero_gradients
from engine.balancers.solvers import dual_cone_projection, min_norm_simplex, minimize_on_simplex

DEGENERATE = 1e-7  # the degenerate band (module docstring), relative to m_w = sum_t w_t ||g_t||
VALUE_FLOOR = 1e-12  # and its floor, relative to max_t ||g_t||


Fn = Callable[[np.ndarray], Any]


def cagrad_objective(G: np.ndarray, sqrt_phi: float, b: np.ndarray | None = None) -> tuple[Fn, Fn, Fn]:
    """(f, gradient, Hessian) of f(w) = w^T G b + sqrt_phi sqrt(w^T G w), b = 1/T by default
    (pass the mean's weights on these rows when G is the Gramian of a subset of the tasks)."""
    T = G.shape[0]
    a = G @ (np.full(T, 1.0 / T) if b is None else np.asarray(b, dtype=np.float64))

    def f(w: np.ndarray) -> float:
        return float(a @ w + sqrt_phi * np.sqrt(max(w @ G @ w, 0.0)))

    def grad(w: np.ndarray) -> np.ndarray:
        Gw = G @ w
        norm = np.sqrt(max(w @ Gw, 0.0))
        return a + (sqrt_phi / norm) * Gw if norm > 1e-15 else a

    def hess(w: np.ndarray) -> np.ndarray:
        Gw = G @ w
        norm = np.sqrt(max(w @ Gw, 0.0))
        if norm <= 1e-15:
            return np.zeros_like(G)
        return sqrt_phi * (G / norm - np.outer(Gw, Gw) / norm**3)

    return f, grad, hess


def cagrad_weights(G: np.ndarray, c: float) -> tuple[np.ndarray, dict[str, float]]:
    """Effective weights (before the 1 + c^2 rescale) and internals, from a Gramian (float64)."""
    G = np.asarray(G, dtype=np.float64)
    G = 0.5 * (G + G.T)
    T = G.shape[0]
    b = np.full(T, 1.0 / T)
    diag = np.clip(np.diag(G), 0.0, None) if T else np.zeros(0)
    scale = float(diag.max()) if T else 0.0
    finite = bool(np.all(np.isfinite(G)))
    Gn = G / scale if scale > 0.0 and finite else np.zeros_like(G)
    g0_norm = float(np.sqrt(max(b @ Gn @ b, 0.0))) if T else 0.0
    if not g0_norm > 0.0:  # no gradient, non-finite input, or g0 = 0 (the ball is {g0}): the mean
        info = {f"w_{i}": float(v) for i, v in enumerate(b)}
        return b, {**info, "gw_norm": 0.0, "cone_projection": 0.0}
    sqrt_phi = c * g0_norm
    nz = nonzero_gradients(diag)
    n = np.sqrt(diag[nz] / scale)  # the non-zero gradients' norms, the largest = 1
    Gz = Gn[np.ix_(nz, nz)]
    k = int(nz.sum())
    # the dual objective divided by ||g0||: f(w) = g_w . g0 / ||g0|| + c ||g_w|| (scale-free)
    f, grad, hess = cagrad_objective(Gz, c, b[nz] / g0_norm)
    wz = np.ones(1)
    if k > 1:
        wz = minimize_on_simplex(f, grad, np.full(k, 1.0 / k), hess=hess)
        # f has a kink at g_w = 0, where the iterative solver stalls short of it. The origin is in
        # the hull of the g_t iff it is in the hull of the unit vectors g_t / ||g_t||, whose
        # min-norm point (MGDA's exact active set, on the well-scaled cosine matrix) gives convex
        # weights reaching it to full relative precision even when the norms differ a lot.
        y = min_norm_simplex(Gz / np.outer(n, n)) / n
        if np.all(np.isfinite(y)) and y.sum() > 0.0 and f(y / y.sum()) < f(wz):
            wz = y / y.sum()
    value = f(wz)
    w = np.zeros(T)
    if k < T and value >= 0.0:  # a zero gradient puts the origin (value 0) in the hull
        w[~nz] = 1.0 / (T - k)
        value = 0.0
    else:
        w[nz] = wz
    gw_norm = float(np.sqrt(max(wz @ Gz @ wz, 0.0))) if w[nz].any() else 0.0
    # Degenerate when |f(w)| is within the band (see the module docstring): |f(w)| <= (1 + c) ||g_w||,
    # ||g_w|| = sqrt(w^T G w) is resolved from G to about sqrt(eps) sum_t w_t ||g_t|| only, and the
    # solver reaches f to about 1e-14 (absolute, on this normalised problem) only.
    mass = float(w[nz] @ n)
    band = (1.0 + c) * max(DEGENERATE * mass, VALUE_FLOOR)
    degenerate = abs(value) <= band or not gw_norm > 0.0
    eff = b.copy()
    if degenerate:
        lam = dual_cone_projection(Gz, b[nz])
        dist = float(np.sqrt(max(lam @ Gz @ lam, 0.0)))  # ||p - g0||, within rounding of the radius
        if dist > sqrt_phi:
            lam *= sqrt_phi / dist
        eff[nz] += lam
    else:
        eff += (sqrt_phi / gw_norm) * w
    info = {f"w_{i}": float(v) for i, v in enumerate(w)}
    info["gw_norm"] = gw_norm * float(np.sqrt(scale))
    info["cone_projection"] = float(degenerate)
    return eff, info


class CAGrad(GradientAggregation):
    """Liu et al., NeurIPS 2021: the mean gradient, bent toward the task it helps least,
    within a ball of radius c ||g0|| (Algorithm 1; c = 0 gives the mean gradient)."""

    name = "cagrad"
    description = "CAGrad: the average gradient, nudged to help the worst-served task as much as possible."

    class Params(BalancerParams):
        c: float = Field(0.4, ge=0.0, lt=10.0, description="radius of the ball around g0, in units of ||g0||")
        rescale: bool = Field(True, description="divide the update by 1 + c^2 (official code's rescale=1)")

    params: Params

    def weights_degree(self) -> int:
        return 0

    def internals_degrees(self) -> dict[str, int]:
        return {"gw_norm": 1}

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        c = float(self.params.c)
        eff, self.last_internals = cagrad_weights(G.detach().double().cpu().numpy(), c)
        eff = eff / (1.0 + c**2 if self.params.rescale else 1.0)
        return torch.as_tensor(eff, device=G.device, dtype=G.dtype)
