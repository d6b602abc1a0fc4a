"""Equal weighting: the plain sum of task losses, every MTL paper's baseline."""

from __future__ import annotations

import torch

from engine.balancers.base import LossWeighting, StepContext


class EW(LossWeighting):
    """Equal weighting, sum_t L_t: the baseline of the MTL literature (e.g. Lin et al.,
    "Reasonable Effectiveness of Random Weighting", TMLR 2022, and LibMTL's `EW`)."""

    name = "ew"
    description = "Equal weights: every task's loss counts the same (plain sum)."

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return torch.ones_like(losses)
