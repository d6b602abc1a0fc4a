"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018).

Each step, with learnable weights w_t (initialised to 1, renormalised to sum T):

    G_t = w_t ||J_t||                          weighted gradient norm of task t
    r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0))   relative inverse training rate
    target_t = mean(G) r_t^alpha               held constant (no gradient)
    L_grad = sum_t |G_t - target_t|,   dL_grad/dw_t = sign(G_t - target_t) ||J_t||

w takes one plain gradient step with its own learning rate, is floored at `MIN_WEIGHT` and
renormalised to sum T (a gap |G_t - target_t| below 1e-12 mean(G) counts as zero, so rounding
noise does not make a full sign step); then the model's gradient is that of sum_t w_t L_t with the new w.

Choice: the paper takes J on the last shared layer's weights; we use all shared parameters
(LibMTL's default, and the Jacobian the trainer already has). L_t(0) is the loss at the first
step this balancer sees.
"""

from __future__ import annotations

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, LossWeighting, StepContext, write_flat_grad

MIN_WEIGHT = 1e-4  # floor before renormalising, so no weight turns negative or exactly zero


class GradNorm(LossWeighting):
    """Chen et al., ICML 2018: weights that equalise task gradient norms, scaled by each
    task's relative training rate (tasks that learn slower get larger gradients).

    Loss weighting that needs the Jacobian: it calls `ctx.jacobian()` and does the final
    backward itself (shared gradient w @ J, task parameters the gradient of sum_t w_t L_t from
    the same pass).
    """

    name = "gradnorm"
    description = "GradNorm: learns weights so that tasks which learn slower get larger gradient norms."

    class Params(BalancerParams):
        alpha: float = Field(1.5, ge=0.0, le=10.0, description="strength of the pull toward slow tasks")
        lr: float = Field(0.025, gt=0.0, le=10.0, description="learning rate of the task weights")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._w: torch.Tensor | None = None  # float64 weights, sum T
        self._initial: torch.Tensor | None = None  # L_t(0)

    def to(self, device: torch.device) -> GradNorm:
        if self._w is not None:
            self._w = self._w.to(device)
        if self._initial is not None:
            self._initial = self._initial.to(device)
        return self

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The current weights (ones before the first step)."""
        if self._w is None:
            return torch.ones_like(losses)
        return self._w.to(device=losses.device, dtype=losses.dtype)

    def update_weights(self, losses: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """One GradNorm update of w from the task losses and gradient norms ||J_t|| (float64)."""
        T = self.n_tasks
        losses = losses.detach().double()
        if self._initial is None:
            self._initial = losses.clone()
        w = torch.ones(T, dtype=torch.float64, device=losses.device) if self._w is None else self._w
        G = w * norms
        initial = self._initial
        ratio = torch.where(initial > 0, losses / initial.clamp_min(1e-300), torch.ones_like(losses))
        mean_ratio = ratio.mean()
        r = ratio / mean_ratio if mean_ratio > 0 else torch.ones_like(ratio)
        target = G.mean() * r.pow(self.params.alpha)
        gap = G - target
        gap = torch.where(gap.abs() > 1e-12 * G.mean(), gap, torch.zeros_like(gap))  # rounding noise
        grad_w = torch.sign(gap) * norms
        w = (w - self.params.lr * grad_w).clamp_min(MIN_WEIGHT)
        self._w = w * (T / w.sum())
        self.last_internals = {"gradnorm_loss": float((G - target).abs().sum())}
        return self._w

    def backward(self, ctx: StepContext) -> torch.Tensor:
        J = ctx.jacobian()
        norms = J.detach().double().norm(dim=1)
        w = self.update_weights(ctx.losses.to(norms.device), norms).to(device=J.device, dtype=J.dtype)
        write_flat_grad(ctx.shared_params, w @ J)
        ctx.write_task_grads(w)
        return w.detach()
