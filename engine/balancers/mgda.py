"""MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018;
after Desideri's multiple-gradient descent algorithm, C. R. Math. 2012).

The update is the min-norm point of the convex hull of the task gradients:
w = argmin_{w in simplex} ||w^T J||^2 = w^T G w, direction w^T J. A zero direction means the
shared parameters are Pareto-stationary; otherwise it has a positive inner product with every
task gradient.

Normalisation (LibMTL's `mgda_gn`): before solving, gradient t is divided by n_t, with
n_t = 1 ("none"), ||g_t|| ("l2"), L_t ("loss") or L_t ||g_t|| ("loss+"). The solution v on the
normalised gradients is mapped back to raw-gradient weights w_t = v_t / n_t, so that
direction == w @ J. A normaliser that is zero or not finite is replaced by 1.

Scale: v does not depend on the gradients' scale (the min-norm solver normalises G), so w does not
either for "none" and "loss", and scales as 1 / ||g|| for "l2" and "loss+". The weights are solved
on the Gramian of J / s (`GradientAggregation.weights_from_scaled_gramian`), which does not
underflow for gradients of 1e-161 as J J^T does, with the norms mapped back to raw units (a
power of two s: exact), so w is what the unscaled Gramian gives wherever that is representable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.balancers.numerics import rescale
from engine.balancers.solvers import min_norm_simplex

Normaliser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: n_t from the gradient norms ||g_t|| and the losses L_t
NORMALISERS: dict[str, Normaliser] = {
    "none": lambda norms, L: torch.ones_like(L),
    "l2": lambda norms, L: norms,
    "loss": lambda norms, L: L,
    "loss+": lambda norms, L: L * norms,
}
#: the power of the gradient norm in each normaliser (n_t is homogeneous of this degree in g_t)
NORM_DEGREE: dict[str, int] = {"none": 0, "l2": 1, "loss": 0, "loss+": 1}


class MGDA(GradientAggregation):
    """Sener & Koltun, NeurIPS 2018: the min-norm element of the task gradients' convex hull
    (exact for T = 2, active-set NNLS certified by KKT for T > 2; see `solvers`)."""

    name = "mgda"
    description = "MGDA: the smallest step that improves every task at once (min-norm gradient combination)."

    class Params(BalancerParams):
        normalization: Literal["none", "l2", "loss", "loss+"] = Field(
            "none", description="divide task gradients by 1, their norm, their loss, or both before solving"
        )

    params: Params

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        w = min_norm_simplex(G.detach().double().cpu().numpy())
        return torch.as_tensor(w, device=G.device, dtype=G.dtype)

    def weights_degree(self) -> int:
        return -NORM_DEGREE[self.params.normalization]  # w = v / n, v scale-free

    def weights_from_gramian(self, G: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.weights_from_scaled_gramian(G, 1.0, ctx)

    def weights_from_scaled_gramian(self, G: torch.Tensor, s: float, ctx: StepContext) -> torch.Tensor:
        """w = v / n for the Gramian s^2 G, computed on G: with p the normaliser's degree in the
        gradients, m = n / s^p is the normaliser of J / s and G / (m m^T) is the normalised Gramian
        G / (n n^T) up to the factor s^(2p - 2), which v does not depend on."""
        p = NORM_DEGREE[self.params.normalization]
        norms = torch.diagonal(G).clamp_min(0.0).sqrt()
        m = NORMALISERS[self.params.normalization](norms, ctx.losses.detach().double().to(G.device))
        unit = rescale(1.0, s, -p)  # a replaced n_t = 1, in the units of m
        m = torch.where(torch.isfinite(m) & (m > 0), m, torch.full_like(m, unit))
        Gn = G / (m[:, None] * m[None, :])
        v = self.gramian_weights(Gn)
        w = (v / m) * unit
        self.last_internals = {"min_norm_sq": rescale(float(v @ Gn @ v), s, 2 - 2 * p)}
        return w
