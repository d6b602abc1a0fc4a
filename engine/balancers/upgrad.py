"""UPGrad, unconflicting projection of gradients (Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", arXiv 2406.16232, 2024; torchjd's `UPGrad`).

Each task gradient, scaled by its preference p_t = 1/T, is projected onto the dual cone of the
rows of J, {d : J d >= 0} (the directions that conflict with no task), and the projections are
summed. On the Gramian: the projection of (p_i e_i)^T J is v_i^T J with

    v_i = argmin_{v >= p_i e_i} v^T G v        (equivalently p_i e_i + lambda, lambda >= 0),

and the weights are sum_i v_i, so direction == weights @ J conflicts with no task (each
projection lies in the cone, and the cone is convex). Weights are at least 1/T each.

Gradients with ||g_t|| <= `ZERO_NORM` max_k ||g_k|| count as zero (the cut-off shared by the
Gramian-based balancers, `numerics`): they constrain nothing and keep their weight 1/T (they add
nothing to the direction). Without this, a gradient of norm 1e-160 next to one of norm 1 would
forbid any move, or not, depending on rounding. The weights are scale-invariant, so they are solved
on the Gramian of J / s (`GradientAggregation.weights_from_scaled_gramian`): when all the gradients
are of norm 1e-161, J J^T underflows, but that Gramian does not. The inner problem is the
`dual_cone_projection` NNLS of `solvers` (exact active-set), solved in the variables n_t v_t
(n_t = ||g_t||), i.e. on the cosine matrix G / (n n^T): the same QP, but well scaled when gradient
norms differ by orders of magnitude (a multiplier on a tiny gradient can be huge, and is then computed to
full relative precision); the weights do not depend on the gradients' scale.
torchjd solves the same quadratic program with quadprog after normalising G by its trace and
adding 1e-4 I (`reg_eps`) for positive definiteness: its weights differ from these by about
reg_eps relatively, and agree to solver precision with reg_eps -> 0 (tests/test_balancers_torchjd.py).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.balancers.base import GradientAggregation
from engine.balancers.numerics import nonzero_gradients
from engine.balancers.solvers import dual_cone_projection


def upgrad_weights(G: np.ndarray) -> np.ndarray:
    """sum_i (e_i / T + lambda_i), lambda_i the dual-cone multipliers of e_i / T (float64)."""
    G = np.asarray(G, dtype=np.float64)
    G = 0.5 * (G + G.T)
    T = G.shape[0]
    if T == 0:
        return np.zeros(0)
    if not np.all(np.isfinite(G)):
        return np.full(T, np.nan)
    w = np.full(T, 1.0 / T)
    diag = np.clip(np.diag(G), 0.0, None)
    nz = nonzero_gradients(diag)
    n = np.sqrt(diag[nz])
    C = G[np.ix_(nz, nz)] / np.outer(n, n)  # cosines: the QP in the variables n_t v_t
    for i in range(n.size):
        u = np.zeros(n.size)
        u[i] = n[i] / T
        w[nz] += dual_cone_projection(C, u) / n
    return w


class UPGrad(GradientAggregation):
    """Quinton & Rey, 2024: project every (1/T-scaled) task gradient onto the dual cone of all
    task gradients and sum; the update conflicts with no task."""

    name = "upgrad"
    description = "UPGrad: projects each task's gradient so it hurts no task, then averages (torchjd)."

    def weights_degree(self) -> int:
        return 0

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gd = G.detach().double().cpu().numpy()
        w = upgrad_weights(Gd)
        T = Gd.shape[0]
        self.last_internals = {"projected_mass": float(w.sum() - 1.0) if T else 0.0}
        return torch.as_tensor(w, device=G.device, dtype=G.dtype)
