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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.balancers.solvers import min_norm_simplex

Normaliser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NORMALISERS: dict[str, Normaliser] = {
    "none": lambda G, L: torch.ones_like(L),
    "l2": lambda G, L: torch.diagonal(G).clamp_min(0.0).sqrt(),
    "loss": lambda G, L: L,
    "loss+": lambda G, L: L * torch.diagonal(G).clamp_min(0.0).sqrt(),
}


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

    def weights_from_gramian(self, G: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        n = NORMALISERS[self.params.normalization](G, ctx.losses.detach().double().to(G.device))
        n = torch.where(torch.isfinite(n) & (n > 0), n, torch.ones_like(n))
        Gn = G / (n[:, None] * n[None, :])
        v = self.gramian_weights(Gn)
        w = v / n
        self.last_internals = {"min_norm_sq": float(v @ Gn @ v)}
        return w
