"""DB-MTL, dual-balancing multi-task learning (Lin, Ye, Ye, Wang, Zhang, Kwok, "Dual-Balancing
for Multi-Task Learning", arXiv 2308.12029, 2023; LibMTL's `DB_MTL`).

Two balancing steps on the shared parameters:
- loss scale: every task is trained on log(L_t + eps), whose gradient is grad L_t / (L_t + eps),
  so a task's loss scale no longer matters;
- gradient magnitude: an EMA of the log-loss gradients, m_t <- b_k m_t + (1 - b_k) grad log L_t
  with b_k = beta / k^beta_sigma at step k (m starts at 0, no bias correction, as in LibMTL),
  and the update

      d = sum_t alpha_t m_t,   alpha_t = max_k ||m_k|| / ||m_t||,

  i.e. every task contributes its unit direction scaled to the largest gradient norm.

It needs the Jacobian of the log losses, diag(1 / (L + eps)) J, so it is a gradient method.
Choices, documented:
- The direction mixes past steps' gradients (the EMA), so it is not an exact combination of this
  step's Jacobian rows: `weights_are_exact = False`. The reported weights are
  alpha_t / (L_t + eps), the weights of the raw gradients that the update would use if the EMA
  were this step's gradient (exact for beta = 0).
- Task-specific parameters get the plain gradient of sum_t L_t, as for every gradient method in
  Seesaw (the contract in `base.py`); the paper trains them on the log losses too.
- A task whose EMA is numerically zero (||m_t|| <= 1e-12 max_k ||m_k||) gets alpha_t = 0 (the
  reference adds 1e-8 to the norm, which gives a huge alpha on a zero vector).
"""

from __future__ import annotations

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.balancers.numerics import ZERO_NORM  # relative to the largest (EMA) norm: the shared cut-off

EPS = 1e-8  # log(L + eps), as in the reference


class DBMTL(GradientAggregation):
    """Lin et al., 2023: log-transformed losses, and an EMA of their gradients rescaled so that
    every task's direction enters with the largest task-gradient norm."""

    name = "dbmtl"
    description = "DB-MTL: log losses plus gradients rescaled to a common (the largest) magnitude."
    weights_are_exact = False  # the direction includes past steps' gradients (EMA)

    class Params(BalancerParams):
        beta: float = Field(0.9, ge=0.0, lt=1.0, description="EMA factor of the log-loss gradients")
        beta_sigma: float = Field(
            0.0, ge=0.0, le=10.0, description="decay of the EMA factor: beta / step^beta_sigma"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._buffer: torch.Tensor | None = None  # float64 (T, P) EMA of log-loss gradients
        self._step = 0

    def to(self, device: torch.device) -> DBMTL:
        if self._buffer is not None:
            self._buffer = self._buffer.to(device)
        return self

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        Jd = J.detach().double()
        L = ctx.losses.detach().to(device=Jd.device, dtype=torch.float64)
        inv = 1.0 / (L.clamp_min(0.0) + EPS)
        grads = inv[:, None] * Jd  # Jacobian of log(L + eps)
        self._step += 1
        b = self.params.beta / self._step**self.params.beta_sigma
        if self._buffer is None or self._buffer.shape != grads.shape or self._buffer.device != grads.device:
            self._buffer = torch.zeros_like(grads)
        self._buffer = grads + b * (self._buffer - grads)
        norms = self._buffer.norm(dim=1)
        top = norms.max() if norms.numel() else torch.zeros((), dtype=torch.float64)
        usable = norms > ZERO_NORM * top
        alpha = torch.where(usable, top / norms.clamp_min(1e-300), torch.zeros_like(norms))
        direction = alpha @ self._buffer
        w = alpha * inv
        self.last_internals = {f"alpha_{i}": float(a) for i, a in enumerate(alpha)}
        self.last_internals["max_norm"] = float(top)
        return direction.to(J.dtype), w.to(J.dtype)
