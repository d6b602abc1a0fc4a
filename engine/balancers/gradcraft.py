"""GradCraft (Bai, Zhang, Feng, Lu, Zang, Lei, Song, "GradCraft: Elevating Multi-task
Recommendations through Holistic Gradient Crafting", KDD 2024, arXiv 2407.19682; official code
baiyimeng/GradCraft, `GlobalPCGradMagnitudePositive`).

Two steps on the task gradients g_t of the shared parameters:

1. Magnitude: with m_t = ||g_t|| (optionally an EMA, m_t <- b m_t + (1 - b) ||g_t||, m = 0 at
   the start; the official run uses b = 0), rescale every gradient toward the largest norm,

       h_t = s_t g_t,   s_t = tau max_k m_k / m_t + (1 - tau),

   so that no two norms differ by more than a factor 1 / tau.
2. Direction, globally: for each task i, N_i = {j : h_i . h_j < 0} are the tasks it conflicts
   with. Instead of PCGrad's pairwise projections, one projection against all of them at once:
   h_i' = h_i + sum_{k in N_i} c_k h_k with c chosen so that

       h_j . h_i' = eps ||h_i|| ||h_j||   for every j in N_i

   (a small positive cosine eps, the paper's epsilon; c = (H_N H_N^T)^{-1} (eps ||h_i|| ||h_N|| -
   H_N h_i), solved with a least-squares pseudo-inverse when the conflicting gradients are
   linearly dependent). The update is the mean of the h_i' (the official code's reduction).

Everything is on the Gramian (H H^T = S G S), so the weights are exact: w = (1/T) sum_i C_i with
C_i the coefficients of h_i' on the raw gradients. A zero gradient (||g_t|| <= `ZERO_NORM` of the
largest, the cut-off shared by the Gramian-based balancers) is not rescaled (s_t = 1) and
conflicts with nothing. Note h_i' can conflict with a task outside N_i (as in the paper):
GradCraft removes the conflicts it starts from, not all of them.

Scale: the factors s_t are ratios of norms and the projections scale-free, so the weights do not
depend on the gradients' scale; they are solved on the Gramian of J / sigma
(`GradientAggregation.weights_from_scaled_gramian`, which does not underflow for gradients of
1e-161 as J J^T does), with the norms mapped back to raw units for the EMA of the magnitudes (a
power of two sigma: exact), so an EMA over steps of different scales is the unscaled one.

Defaults: tau = 1 (the official configuration's default; its tuned runs range over [0, 1]),
eps = 1e-8 (the official search range is 1e-10 to 1e-8), b = 0.
The citation given to us said "Ma et al., RecSys 2024"; the paper is Bai et al., KDD 2024.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.balancers.numerics import nonzero_gradients


class GradCraft(GradientAggregation):
    """Bai et al., KDD 2024: rescale task gradients toward the largest norm, then project each
    against all the gradients it conflicts with at once (to a small positive cosine); average."""

    name = "gradcraft"
    description = "GradCraft: evens out gradient sizes, then removes each task's conflicts in one projection."

    class Params(BalancerParams):
        tau: float = Field(
            1.0, ge=0.0, le=1.0, description="how far to rescale toward the largest norm (0 = not at all)"
        )
        epsilon: float = Field(
            1e-8, ge=0.0, lt=1.0, description="target cosine with each conflicting task after projection"
        )
        beta: float = Field(
            0.0, ge=0.0, lt=1.0, description="EMA factor of the gradient norms (0 = this step's norms)"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._magnitudes = np.zeros(self.n_tasks)

    def weights_degree(self) -> int:
        return 0

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        return self.weights_from_scaled_gramian(G, 1.0, None)

    def weights_from_scaled_gramian(
        self, G: torch.Tensor, sigma: float, ctx: StepContext | None
    ) -> torch.Tensor:
        """Weights for the Gramian sigma^2 G (scale-free), the magnitudes' EMA kept in raw units."""
        Gd = G.detach().double().cpu().numpy()
        Gd = 0.5 * (Gd + Gd.T)
        T = Gd.shape[0]
        if T == 0:
            return torch.zeros(0, device=G.device, dtype=G.dtype)
        if not np.all(np.isfinite(Gd)):
            return torch.full((T,), float("nan"), device=G.device, dtype=G.dtype)
        diag = np.clip(np.diag(Gd), 0.0, None)
        nz = nonzero_gradients(diag)
        norms = np.sqrt(diag) * sigma  # raw ||g_t||: sigma is a power of two
        self._magnitudes = self.params.beta * self._magnitudes + (1.0 - self.params.beta) * norms
        m = self._magnitudes
        s = np.ones(T)
        if nz.any():
            usable = nz & (m > 0)
            s[usable] = self.params.tau * m.max() / m[usable] + (1.0 - self.params.tau)
        H = Gd * np.outer(s, s)  # Gramian of the rescaled gradients h_t = s_t g_t
        hn = np.sqrt(np.clip(np.diag(H), 0.0, None))
        C = np.eye(T)  # h_i' = sum_k C[i, k] h_k
        conflicts = 0
        for i in range(T):
            if not nz[i]:
                continue
            N = np.where((H[i] < 0.0) & nz)[0]
            if N.size == 0:
                continue
            conflicts += int(N.size)
            A = H[np.ix_(N, N)]
            rhs = self.params.epsilon * hn[i] * hn[N] - H[N, i]
            C[i, N] += np.linalg.lstsq(A, rhs, rcond=None)[0]
        w = (C * s[None, :]).sum(axis=0) / T
        self.last_internals = {"conflicts": float(conflicts)}
        self.last_internals.update({f"scale_{i}": float(v) for i, v in enumerate(s)})
        return torch.as_tensor(w, device=G.device, dtype=G.dtype)
