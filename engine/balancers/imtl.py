"""IMTL-G, impartial multi-task learning, gradient part (Liu, Li, Kuang, Xue, Chen, Yang, Liao,
Zhang, "Towards Impartial Multi-task Learning", ICLR 2021).

The update d = sum_t a_t g_t, sum_t a_t = 1, has equal projections on every task's unit gradient:
d . u_t is the same for all t (u_t = g_t / ||g_t||). The paper's closed form,
a_{2:T} = g_1 U^T (D U^T)^{-1} with D, U the differences g_1 - g_t and u_1 - u_t, is the same as
the generalised form of Quinton & Rey ("Jacobian Descent for Multi-Objective Optimization", 2024;
torchjd's `IMTLG`)

    v = G^+ n,   a = v / sum(v),     n_t = ||g_t|| = sqrt(G_tt),

since G v = n means g_t . (v^T J) = ||g_t|| for every t. That form is used here (it is defined
for linearly dependent gradients too; a = 0 when |sum(v)| is below 1e-12 on the normalised
Gramian, as in torchjd).

Numerics: the weights do not depend on the gradients' scale, so they are solved on the Gramian of
J / s (`GradientAggregation.weights_from_scaled_gramian`: J J^T underflows for gradients of
1e-161), and G is divided by its largest diagonal entry first. Gradients with ||g_t|| <=
`ZERO_NORM` max_k ||g_k|| count as zero (the cut-off shared by the Gramian-based balancers).
When the cosine matrix of the non-zero gradients is well conditioned, v is computed as
v_t = (C^{-1} 1)_t / n_t with C_ij = G_ij / (n_i n_j) (mathematically equal to G^{-1} n, and
accurate when gradient norms differ by orders of magnitude); otherwise G^+ n with a
pseudo-inverse. Zero gradients get weight 0 either way (their row and column of G are zero).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.balancers.base import GradientAggregation
from engine.balancers.numerics import nonzero_gradients

WELL_CONDITIONED = 1e-8  # smallest eigenvalue of the cosine matrix for the scaled solve
ZERO_SUM = 1e-12


def imtl_weights(G: np.ndarray) -> np.ndarray:
    """IMTL-G weights a (sum 1, or all 0 in the degenerate case) from a Gramian (float64)."""
    G = np.asarray(G, dtype=np.float64)
    G = 0.5 * (G + G.T)
    T = G.shape[0]
    if T == 0 or not np.all(np.isfinite(G)):
        return np.zeros(T) if T == 0 else np.full(T, np.nan)
    scale = float(np.max(np.diag(G)))
    if scale <= 0.0:
        return np.zeros(T)
    Gn = G / scale
    diag = np.clip(np.diag(Gn), 0.0, None)
    nz = nonzero_gradients(diag)
    n = np.sqrt(diag)
    v = np.zeros(T)
    sub = Gn[np.ix_(nz, nz)]
    C = sub / np.outer(n[nz], n[nz])
    if np.linalg.eigvalsh(C).min() > WELL_CONDITIONED:
        v[nz] = np.linalg.solve(C, np.ones(int(nz.sum()))) / n[nz]
    else:
        v[nz] = np.linalg.pinv(sub, hermitian=True) @ n[nz]
    total = float(v.sum())
    if abs(total) < ZERO_SUM:
        return np.zeros(T)
    return v / total


class IMTL(GradientAggregation):
    """Liu et al., ICLR 2021 (IMTL-G): the combination of task gradients, weights summing to 1,
    whose projections on all task-gradient directions are equal."""

    name = "imtl"
    description = "IMTL-G: the combined step projects equally onto every task's gradient direction."

    def weights_degree(self) -> int:
        return 0

    def internals_degrees(self) -> dict[str, int]:
        return {"projection": 1}

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gd = G.detach().double().cpu().numpy()
        w = imtl_weights(Gd)
        norms = np.sqrt(np.clip(np.diag(Gd), 0.0, None))
        nz = nonzero_gradients(np.diag(Gd))
        # the common projection d . u_t (over the non-zero gradients)
        common = (Gd @ w)[nz] / norms[nz] if np.all(np.isfinite(w)) else np.zeros(0)
        self.last_internals = {"projection": float(common.mean()) if common.size else 0.0}
        return torch.as_tensor(w, device=G.device, dtype=G.dtype)
