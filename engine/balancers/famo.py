"""FAMO, fast adaptive multitask optimisation (Liu, Liang, Liu, Stone, Liu, "FAMO: Fast
Adaptive Multitask Optimization", NeurIPS 2023; official code Cranial-XIX/FAMO, LibMTL's `FAMO`).

FAMO keeps task logits xi (init 0) and z = softmax(xi). With D_t = L_t + eps (the official code's
L_t - L*_t + 1e-8 with L*_t = 0) its step minimises

    sum_t z_t log D_t / c,   c = sum_t z_t / D_t   (c held constant),

whose gradient is sum_t w_t grad L_t with the effective weights

    w_t = (z_t / D_t) / sum_k (z_k / D_k)          (they sum to 1).

After a step the logits learn from the log-loss decrease delta_t = log D_t(before) - log D_t(after):
the gradient of xi is (dz/dxi)^T delta = z * (delta - z . delta), applied with Adam (lr `lr`,
L2 weight decay `gamma`, as torch.optim.Adam(weight_decay=gamma) in the official code). Tasks whose
log loss fell most lose weight. One O(T) update per step, no per-task backward.

Exactly what is done here, and the one difference from the official loop: the official code
recomputes the losses on the same batch after the optimiser step to get L(after), an extra
forward pass that the balancer contract does not offer. Here, at step k the balancer receives
L_k; it first updates xi from delta = log D(L_{k-1}) - log D(L_k) (the previous step's losses,
kept inside the balancer, against the current ones: the same parameter update, measured on the
next batch instead of the same batch), then forms the weights of step k from the updated z and
L_k. The first step only records L_1 (weights from z = 1/T). Losses are clamped at 0 before
adding eps (the log needs D > 0).
"""

from __future__ import annotations

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, LossWeighting, StepContext

EPS = 1e-8  # the official code's 1e-8 in D = L - L* + 1e-8


class FAMO(LossWeighting):
    """Liu et al., NeurIPS 2023: task weights from logits that learn, with Adam, to favour the
    tasks whose log loss decreases least; O(1) work per step."""

    name = "famo"
    description = "FAMO: cheaply steers weight toward tasks whose log loss is falling slowest."

    class Params(BalancerParams):
        lr: float = Field(0.025, gt=0.0, le=10.0, description="Adam learning rate of the task logits")
        gamma: float = Field(0.01, ge=0.0, le=10.0, description="weight decay of the task logits")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self.logits = torch.zeros(self.n_tasks, dtype=torch.float64, requires_grad=True)
        self._opt = torch.optim.Adam([self.logits], lr=self.params.lr, weight_decay=self.params.gamma)
        self._prev: torch.Tensor | None = None  # float64 CPU losses of the previous step

    def probabilities(self) -> torch.Tensor:
        """z = softmax(xi) (float64, detached)."""
        return torch.softmax(self.logits.detach(), dim=0)

    def update_logits(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """One Adam step on xi from the log-loss decrease between two loss vectors."""
        delta = torch.log(before.clamp_min(0.0) + EPS) - torch.log(after.clamp_min(0.0) + EPS)
        z = self.probabilities()
        self._opt.zero_grad(set_to_none=False)
        self.logits.grad = z * (delta - z @ delta)
        self._opt.step()

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        L = losses.detach().to(device="cpu", dtype=torch.float64)
        if self._prev is not None:
            self.update_logits(self._prev, L)
        self._prev = L.clone()
        z = self.probabilities()
        ratio = z / (L.clamp_min(0.0) + EPS)
        w = ratio / ratio.sum()
        self.last_internals = {f"z_{i}": float(v) for i, v in enumerate(z)}
        return w.to(device=losses.device, dtype=losses.dtype)
