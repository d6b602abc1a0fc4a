"""GLS, the geometric loss strategy (Chennupati, Sistu, Yogamani, Rawashdeh, "MultiNet++:
Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning",
CVPR Workshops 2019).

The objective is the geometric mean of the task losses, GLS = (prod_t L_t)^(1/T). Its gradient is
sum_t (dGLS/dL_t) grad L_t with

    w_t = dGLS/dL_t = GLS / (T L_t),

so the balancer is a loss weighting with exactly these (detached) weights: the step
sum_t w_t L_t has the same gradient as GLS itself. Small losses get large weights (the geometric
mean is scale-free per task: multiplying one loss by k multiplies GLS by k^(1/T) whatever its size).

GLS is computed as exp(mean_t log L_t) for range safety. Losses are clamped below at `MIN_LOSS`
first (a zero loss would make its weight infinite; GLS is meant for positive losses).
(LibMTL's `GLS` logs losses / (T prod L) as its weights; the weights here are the true
derivative, which is what reaches the model.)
"""

from __future__ import annotations

import torch

from engine.balancers.base import LossWeighting, StepContext

MIN_LOSS = 1e-8


class GLS(LossWeighting):
    """Chennupati et al., CVPRW 2019: minimise the geometric mean of the task losses; the
    effective weights are its derivatives GLS / (T L_t)."""

    name = "gls"
    description = "GLS: minimises the geometric mean of the losses, so every task's relative progress counts."

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        L = losses.detach().double().clamp_min(MIN_LOSS)
        gls = torch.exp(torch.log(L).mean())
        w = gls / (self.n_tasks * L)
        self.last_internals = {"gls": float(gls)}
        return w.to(device=losses.device, dtype=losses.dtype)
