"""AdaTask (Yang, Cao, Chen, Zhou, Yu, "AdaTask: A Task-Aware Adaptive Learning Rate Approach
to Multi-Task Learning", AAAI 2023), on Adam.

Adam's moments, kept per task for the shared parameters: with g_t task t's gradient on the
shared parameters (a row of the Jacobian) and s the step count,

    m_t <- b1 m_t + (1 - b1) g_t,      v_t <- b2 v_t + (1 - b2) g_t^2,
    u_t  = (m_t / (1 - b1^s)) / (sqrt(v_t / (1 - b2^s)) + eps),

and the shared parameters move by -lr sum_t u_t (the official code applies the T task steps
in turn, which is the same sum). Because every task is normalised by its own second moment, a
task with small gradients gets a step as large as a task with large ones, where plain Adam on
the summed gradient lets the large task set the scale. Task-specific parameters get their
plain gradient and the run's optimiser.

How it plugs into the trainer (`Balancer.shared_optimizer`): `backward` writes the finished
direction sum_t u_t into the shared parameters' `.grad`, and the balancer hands the trainer a
plain SGD (no momentum) at the run's learning rate for those parameters, so the step is exactly
-lr sum_t u_t. Weight decay on the shared parameters is that SGD's, i.e. decoupled
(p <- p - lr wd p, as AdamW; the official code applies none), so with one task AdaTask is
exactly Adam (wd = 0) or AdamW (wd > 0). AdaTask is Adam-based whatever the run's optimiser.

Reported weights: with r_t = ||u_t|| / ||g_t|| (0 for a zero gradient) the factor by which
AdaTask scales task t's gradient in norm, w_t = T r_t / sum_k r_k: the relative amplification,
averaging 1 like equal weights (the absolute factor is Adam's arbitrary gradient-to-step scale,
hundreds on a typical network). The update is per-coordinate, not a linear combination of the
task gradients, hence `weights_are_exact = False`. Internals: step_norm_t = ||u_t||.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext


class AdaTask(GradientAggregation):
    """Yang et al., AAAI 2023: separate Adam moments per task on the shared parameters; the
    update is the sum of the tasks' adaptive steps (optimiser-level: owns the shared update)."""

    name = "adatask"
    description = "AdaTask: Adam with its own moments per task on shared layers; no task sets the step size."
    weights_are_exact = False

    class Params(BalancerParams):
        beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam's first-moment decay")
        beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam's second-moment decay")
        eps: float = Field(1e-8, gt=0.0, le=1.0, description="Adam's epsilon")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._m: torch.Tensor | None = None  # (T, P) first moments
        self._v: torch.Tensor | None = None  # (T, P) second moments
        self._steps = 0

    def to(self, device: torch.device) -> AdaTask:
        if self._m is not None and self._v is not None:
            self._m, self._v = self._m.to(device), self._v.to(device)
        return self

    def shared_optimizer(
        self, params: list[nn.Parameter], lr: float, weight_decay: float
    ) -> torch.optim.Optimizer | None:
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)

    def task_steps(self, J: torch.Tensor) -> torch.Tensor:
        """Update the per-task moments with the (T, P) task gradients; return the (T, P) steps u_t."""
        b1, b2, eps = self.params.beta1, self.params.beta2, self.params.eps
        if self._m is None or self._v is None or self._m.shape != J.shape:
            self._m, self._v, self._steps = torch.zeros_like(J), torch.zeros_like(J), 0
        m = self._m.to(device=J.device, dtype=J.dtype)
        v = self._v.to(device=J.device, dtype=J.dtype)
        self._steps += 1
        m = b1 * m + (1.0 - b1) * J
        v = b2 * v + (1.0 - b2) * J * J
        self._m, self._v = m, v
        m_hat = m / (1.0 - b1**self._steps)
        v_hat = v / (1.0 - b2**self._steps)
        return m_hat / (v_hat.sqrt() + eps)

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        Jd = J.detach()
        steps = self.task_steps(Jd)
        step_norms = steps.norm(dim=1)
        grad_norms = Jd.norm(dim=1)
        r = torch.where(grad_norms > 0, step_norms / grad_norms.clamp_min(torch.finfo(J.dtype).tiny), 0.0)
        r = torch.where(torch.isfinite(r), r, torch.zeros_like(r))
        total = r.sum()
        w = r * (r.numel() / total) if total > 0 else torch.ones_like(r)
        self.last_internals = {f"step_norm_{i}": float(v) for i, v in enumerate(step_norms.cpu())}
        return steps.sum(0), w.to(J.dtype)
