"""RLW, random loss weighting (Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of
Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022).

Every step draws fresh weights w = softmax(z), z ~ N(0, I_T) (the paper's default distribution,
as in LibMTL's `RLW`), and the step is sum_t w_t L_t. The weights sum to 1 (EW's sum to T), as in
the paper.

Seeding: one numpy generator seeded once and kept across steps, so a run is reproducible. The T
draws of a step are handed out by task *name* (the k-th draw goes to the k-th name in sorted
order), so listing the tasks in another order gives every task the same weight.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, LossWeighting, StepContext


class RLW(LossWeighting):
    """Lin et al., TMLR 2022: random weights each step, the softmax of standard normal draws."""

    name = "rlw"
    description = "RLW: fresh random task weights every step (softmax of normal draws), a litmus test."

    class Params(BalancerParams):
        seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random weights")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._rng = np.random.default_rng(self.params.seed)
        order = sorted(range(self.n_tasks), key=lambda i: self.task_names[i])
        self._rank = np.empty(self.n_tasks, dtype=np.int64)
        self._rank[order] = np.arange(self.n_tasks)

    def draw(self) -> torch.Tensor:
        """The next step's weights (float64): softmax of T standard normals, by task-name rank."""
        z = self._rng.standard_normal(self.n_tasks)[self._rank]
        return torch.softmax(torch.as_tensor(z, dtype=torch.float64), dim=0)

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.draw().to(device=losses.device, dtype=losses.dtype)
