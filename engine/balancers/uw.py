"""Uncertainty weighting (Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to
Weigh Losses for Scene Geometry and Semantics", CVPR 2018).

Convention: one learnable log-variance s_t = log sigma_t^2 per task and the objective

    sum_t exp(-s_t) L_t + s_t

which is twice the paper's regression form 1/(2 sigma^2) L + log sigma (same optimum
s_t* = log L_t; many implementations use it for every task kind, LibMTL keeps the 1/2 factors).
The effective task weight on the model is exp(-s_t).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from engine.balancers.base import BalancerParams, LossWeighting, StepContext


class UW(LossWeighting):
    """Kendall et al., CVPR 2018: learned homoscedastic-uncertainty weights exp(-s_t).

    `parameters()` returns [s]; the trainer's optimiser updates it. The model gets
    exp(-s_t) dL_t (via `weights`, detached by the base class); s gets
    d/ds_t = 1 - exp(-s_t) L_t through `extra_loss`, which uses the detached losses so the
    model's gradient is not counted twice.
    """

    name = "uw"
    description = "Uncertainty weighting: learns each task's noise level and down-weights noisy tasks."

    class Params(BalancerParams):
        init_log_var: float = Field(
            0.0, ge=-10.0, le=10.0, description="initial log-variance s; weight exp(-s)"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self.log_vars = nn.Parameter(torch.full((self.n_tasks,), float(params.init_log_var)))

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def to(self, device: torch.device) -> UW:
        self.log_vars.data = self.log_vars.data.to(device)
        return self

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach()).to(device=losses.device, dtype=losses.dtype)

    def extra_loss(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        s = self.log_vars
        if s.device != losses.device:
            self.to(losses.device)
        return (torch.exp(-s) * losses.detach().to(s.dtype)).sum() + s.sum()

    def internals(self) -> dict[str, float]:
        return {f"log_var_{i}": float(v) for i, v in enumerate(self.log_vars.detach().cpu())}
