"""Nash-MTL (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task Learning
as a Bargaining Game", ICML 2022).

The Nash bargaining solution of the tasks' utilities g_t . d in the unit ball is d = sum_t a_t g_t
with a > 0 solving

    G a = 1 / a     (elementwise: a_t (G a)_t = 1),

which makes every task improve (g_t . d = 1 / a_t > 0). The reference code solves it with a
sequence of convex programs in CVXPY (ECOS, 20 concave-convex iterations, stopping when
||G a - 1/a|| < 1e-3); here it is solved exactly:

- G a = 1/a is the stationarity condition of the strictly convex function
  f(a) = 1/2 a^T G a - sum_t log a_t on a > 0, so a is its unique minimiser when one exists;
- the problem is scale-free per task: with n_t = ||g_t|| and C = G / (n n^T) the cosine matrix,
  a_t = b_t / n_t where b solves C b = 1 / b. Newton's method runs on b (damped, with a
  backtracking line search that keeps b > 0; full steps once the Newton decrement is below 1e-2,
  where f, being self-concordant, converges quadratically), from b = sqrt(T / 1^T C 1) 1, until
  the decrement is below 1e-24: a handful of iterations.

When no solution exists (a task with a zero gradient, or a non-negative combination of gradients
that is zero, e.g. g_2 = -g_1: no direction improves every task) f is unbounded below. Two guards
keep the answer finite and documented: zero gradients (||g_t|| <= `ZERO_NORM` max_k ||g_k||, the
cut-off shared by the Gramian-based balancers) get weight 0 and take no part; and f gets a ridge
1/2 RIDGE ||b||^2 (1e-10 on the unit-diagonal C), which makes an unsolvable problem bounded. Newton
steps without the ridge then polish the ridged solution, and the polished one is kept when its
residual falls below 1e-9 (a solution exists; when none does, the residual stays of order 1 however
large b grows).
`nash_residual` (internals) is max_t |b_t (C b)_t - 1| without the ridge: about 0 when the
bargaining solution exists, of order 1 when it does not.

Scaling as in the reference: it divides G by ||G||_F for conditioning but keeps the raw scale in
its constraint (a_t (G a)_t >= 1 in raw units), so its weights are the solution a for the raw
gradients, and the direction has norm sqrt(a^T G a) = sqrt(T) whenever the solution exists. If
`max_norm` > 0 and ||sum_t a_t g_t|| > max_norm, the weights are then scaled down so that the norm
is max_norm (the reference clips the shared gradient norm, default 1; torchjd folds the clipping
into the weights the same way). The reference re-solves every `update_weights_every` steps
(default 1) warm-started from the last solution; the solution here does not depend on the start,
so every step solves afresh. `alpha_t` in internals are the weights before clipping.

Scale: the weights are not scale-invariant. For the Gramian c G the solution is a / sqrt(c)
(a_t (c G a / c)_t = 1) and the unclipped update norm sqrt(a^T G a) (sqrt(T) when the solution
exists) does not change, so the clipping factor does not either: the weights, clipped or not,
scale as 1 / sqrt(c), exactly (the solve is on the cosine matrix). They are therefore solved on
the Gramian of J / s, which does not underflow for gradients of 1e-161 as J J^T does, and
multiplied by 1 / s (`weights_degree` = -1, `GradientAggregation.weights_from_scaled_gramian`):
the direction w @ J is the same as at scale 1, and the same as the unscaled solve wherever J J^T
is representable.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation
from engine.balancers.numerics import nonzero_gradients

RIDGE = 1e-10  # on the cosine matrix (unit diagonal)
POLISHED = 1e-9  # residual below which the ridge-free polish is accepted
MAX_NEWTON = 200
PURE_NEWTON = 1e-2  # Newton decrement below which full steps are taken


def _nash_newton(
    C: np.ndarray, ridge: float, b0: np.ndarray | None = None, iters: int = MAX_NEWTON
) -> np.ndarray:
    """b > 0 minimising 1/2 b^T (C + ridge I) b - sum log b (so (C + ridge I) b = 1 / b), by damped
    Newton from b0 (default sqrt(T / 1^T A 1) 1, the best multiple of 1)."""
    T = C.shape[0]
    A = C + ridge * np.eye(T)

    def f(b: np.ndarray) -> float:
        return float(0.5 * b @ A @ b - np.log(b).sum())

    if b0 is None:
        s = float(np.ones(T) @ A @ np.ones(T))
        b0 = np.full(T, np.sqrt(T / s) if s > 0 else 1.0)
    b = b0.copy()
    fb = f(b)
    pure_steps = 0
    for _ in range(iters):
        grad = A @ b - 1.0 / b
        H = A + np.diag(1.0 / b**2)
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, grad, rcond=None)[0]
        decrement = float(-grad @ step)
        if not np.isfinite(decrement) or decrement < 1e-24:
            break
        if decrement < PURE_NEWTON and np.all(b + step > 0):
            # f is self-concordant: below this decrement full steps converge quadratically (and the
            # decrease of f would be lost in rounding, so no line search)
            b = b + step
            fb = f(b)
            pure_steps += 1
            if pure_steps >= 8:
                break
            continue
        t = 1.0
        shrinking = step < 0
        if shrinking.any():
            t = min(1.0, 0.99 * float(np.min(-b[shrinking] / step[shrinking])))
        while t > 1e-16:
            nb = b + t * step
            fn = f(nb)
            if np.all(nb > 0) and fn <= fb - 0.25 * t * decrement:
                break
            t *= 0.5
        else:
            break
        b, fb = nb, fn
    return b


def nash_solution(G: np.ndarray) -> tuple[np.ndarray, float]:
    """(a, residual): a >= 0 with (G a)_t a_t = 1 for every non-zero gradient (a_t = 0 for zero
    ones), solved on the cosine matrix; residual = max_t |b_t (C b)_t - 1| (0 when it exists)."""
    G = np.asarray(G, dtype=np.float64)
    G = 0.5 * (G + G.T)
    T = G.shape[0]
    a = np.zeros(T)
    if T == 0 or not np.all(np.isfinite(G)):
        return (a if T == 0 else np.full(T, np.nan)), 0.0
    diag = np.clip(np.diag(G), 0.0, None)
    nz = nonzero_gradients(diag)
    if not nz.any():
        return a, 0.0
    n = np.sqrt(diag[nz])
    C = G[np.ix_(nz, nz)] / np.outer(n, n)
    b = _nash_newton(C, RIDGE)
    residual = float(np.max(np.abs(b * (C @ b) - 1.0)))
    # polish without the ridge; kept only if it converges (a solution exists: when none does,
    # the residual stays of order 1 as b grows)
    polished = _nash_newton(C, 0.0, b0=b, iters=30)
    polished_residual = float(np.max(np.abs(polished * (C @ polished) - 1.0)))
    if polished_residual < min(residual, POLISHED):
        b, residual = polished, polished_residual
    a[nz] = b / n
    return a, residual


class NashMTL(GradientAggregation):
    """Navon et al., ICML 2022: the Nash bargaining step, sum_t a_t g_t with G a = 1/a, a > 0
    (exact Newton solve; reference scaling and norm clipping)."""

    name = "nashmtl"
    description = "Nash-MTL: the bargaining step every task agrees to (task t gains 1 / weight_t)."

    class Params(BalancerParams):
        max_norm: float = Field(
            1.0, ge=0.0, le=1e6, description="clip the shared update's norm to this (0 = no clipping)"
        )

    params: Params

    def weights_degree(self) -> int:
        return -1  # a(c G) = a(G) / sqrt(c); the clipping factor is scale-free (module docstring)

    def internals_degrees(self) -> dict[str, int]:
        return {f"alpha_{i}": -1 for i in range(self.n_tasks)}

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gd = G.detach().double().cpu().numpy()
        Gd = 0.5 * (Gd + Gd.T)
        alpha, residual = nash_solution(Gd)
        w = alpha
        norm = float(np.sqrt(max(alpha @ Gd @ alpha, 0.0))) if np.all(np.isfinite(alpha)) else 0.0
        if self.params.max_norm > 0 and norm > self.params.max_norm:
            w = alpha * (self.params.max_norm / norm)
        self.last_internals = {f"alpha_{i}": float(v) for i, v in enumerate(alpha)}
        self.last_internals["nash_residual"] = residual
        clipped = self.params.max_norm > 0 and norm > self.params.max_norm
        self.last_internals["update_norm"] = self.params.max_norm if clipped else norm
        return torch.as_tensor(w, device=G.device, dtype=G.dtype)
