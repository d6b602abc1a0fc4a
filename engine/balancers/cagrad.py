"""CAGrad (Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021).

With g0 the mean gradient and phi = c^2 ||g0||^2, the update d maximises the worst task
improvement min_i g_i . d in the ball ||d - g0|| <= sqrt(phi). Its dual:

    w* = argmin_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||,   g_w = w^T J,
    d  = g0 + (sqrt(phi) / ||g_w||) g_w,

solved on the Gramian (g_w . g0 = w^T G b with b = 1/T, ||g_w||^2 = w^T G w). As in the
official code (rescale=1), d is divided by 1 + c^2 when `rescale` is on. Effective weights:
(b + sqrt(phi)/||g_w|| w) / (1 + c^2), so direction == weights @ J.

Degenerate case: when the dual optimum has g_w = 0 (a task with a zero gradient, or, for
c >= 1, the origin inside the gradients' convex hull, i.e. a Pareto-stationary point), the
closed form is undefined; the official code's +1e-8 then returns g0, which can conflict with
tasks. We take the primal view instead: the optimal worst-case value is then 0, and the
projection of g0 onto the cone {d : g_i . d >= 0} (an NNLS on the Gramian) attains it inside
the ball. It is used whenever it lies in the ball and beats the closed form's worst-case inner
product min_i g_i . d (reported as `cone_projection`); otherwise the closed form stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.balancers.solvers import dual_cone_projection, minimize_on_simplex
from engine.gradients import gramian

ZERO_GW = 1e-10  # ||g_w|| below this fraction of the largest task-gradient norm counts as zero


Fn = Callable[[np.ndarray], Any]


def cagrad_objective(G: np.ndarray, sqrt_phi: float) -> tuple[Fn, Fn, Fn]:
    """(f, gradient, Hessian) of f(w) = w^T G b + sqrt_phi sqrt(w^T G w), b = 1/T."""
    T = G.shape[0]
    a = G @ np.full(T, 1.0 / T)

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


class CAGrad(GradientAggregation):
    """Liu et al., NeurIPS 2021: the mean gradient, bent toward the task it helps least,
    within a ball of radius c ||g0|| (Algorithm 1; c = 0 gives the mean gradient)."""

    name = "cagrad"
    description = "CAGrad: the average gradient, nudged to help the worst-served task as much as possible."

    class Params(BalancerParams):
        c: float = Field(0.4, ge=0.0, lt=10.0, description="radius of the ball around g0, in units of ||g0||")
        rescale: bool = Field(True, description="divide the update by 1 + c^2 (official code's rescale=1)")

    params: Params

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gd = G.detach().double().cpu().numpy()
        Gd = 0.5 * (Gd + Gd.T)
        T = Gd.shape[0]
        b = np.full(T, 1.0 / T)
        c = float(self.params.c)
        scale = float(np.max(np.diag(Gd))) if T else 0.0
        finite = bool(np.all(np.isfinite(Gd)))
        Gn = Gd / scale if scale > 0 and finite else np.zeros_like(Gd)
        sqrt_phi = c * np.sqrt(max(b @ Gn @ b, 0.0))
        f, grad, hess = cagrad_objective(Gn, sqrt_phi)
        w = minimize_on_simplex(f, grad, b, hess=hess) if scale > 0 and finite else b
        gw_norm = np.sqrt(max(w @ Gn @ w, 0.0))
        eff = b + (sqrt_phi / gw_norm) * w if gw_norm > ZERO_GW else b
        # Degenerate dual (g_w = 0: a zero task gradient, or 0 inside the hull with c >= 1): the
        # closed form above is undefined or noise. The projection of g0 onto the cone of
        # non-conflicting directions is then a primal optimum whenever it lies in the ball.
        lam = dual_cone_projection(Gn, b) if finite else np.zeros(T)
        in_ball = np.sqrt(max(lam @ Gn @ lam, 0.0)) <= sqrt_phi * (1 + 1e-9) + 1e-15
        projected = bool(in_ball and (Gn @ (b + lam)).min() > (Gn @ eff).min() + 1e-12)
        if projected:
            eff = b + lam
        eff = eff / (1.0 + c**2 if self.params.rescale else 1.0)
        self.last_internals = {f"w_{i}": float(v) for i, v in enumerate(w)}
        self.last_internals["gw_norm"] = float(gw_norm * np.sqrt(max(scale, 0.0)))
        self.last_internals["cone_projection"] = float(projected)
        return torch.as_tensor(eff, device=G.device, dtype=G.dtype)

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.gramian_weights(gramian(J)).to(J.dtype)
        return w @ J, w
