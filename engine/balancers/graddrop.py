"""GradDrop, gradient sign dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov,
"Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
Algorithm 1, lines 10-15).

Per coordinate p of the shared parameters, with g_tp the task gradients:

    P_p = (1 + sum_t g_tp / sum_t |g_tp|) / 2            positive sign purity, in [0, 1]
    U_p ~ Uniform(0, 1)                                   one draw per coordinate, shared by tasks
    M_tp = [P_p > U_p and g_tp > 0] + [P_p < U_p and g_tp < 0]
    d_p = sum_t (leak + (1 - leak) M_tp) g_tp

so each coordinate keeps only the positive or only the negative task gradients, the positive
ones with probability P_p. As in torchjd's `GradDrop`, it is applied to the Jacobian of the
shared parameters (the paper applies it to the gradients at a chosen activation layer; LibMTL
does that on the shared representation). A coordinate where every g_tp is 0 has P_p = 1/2 and
contributes nothing. `leak` (one value for all tasks) lets a fraction of every gradient through.

The direction is random and per coordinate: it is not weights @ J, so `weights_are_exact = False`.
The reported weights are the mean-equivalent ones: with q_tp = leak + (1 - leak) (P_p if
g_tp > 0, 1 - P_p if g_tp < 0) the probability that g_tp is kept, E[d] = sum_t q_t * g_t
(elementwise), and task t's weight is the coefficient of the projection of its expected kept
gradient on g_t, w_t = sum_p q_tp g_tp^2 / ||g_t||^2 (1 when g_t = 0). `kept_fraction` (internals)
is the realised share of the squared gradient mass that survived this step.

Randomness: a torch generator on the CPU, seeded once and kept across steps (U is drawn on the
CPU in float64, then moved). The masks depend on the tasks only through sums over tasks, so
listing the tasks in another order gives the same direction.
"""

from __future__ import annotations

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext


def sign_purity(J: torch.Tensor) -> torch.Tensor:
    """P_p = (1 + sum_t g_tp / sum_t |g_tp|) / 2 per column (1/2 where the column is all zero)."""
    total = J.abs().sum(dim=0)
    ratio = torch.where(total > 0, J.sum(dim=0) / total.clamp_min(torch.finfo(J.dtype).tiny), 0.0)
    return 0.5 * (1.0 + ratio)


def keep_probabilities(J: torch.Tensor, leak: float) -> torch.Tensor:
    """q_tp: probability that GradDrop keeps g_tp (leak included)."""
    P = sign_purity(J)[None, :]
    q = torch.where(J > 0, P, torch.where(J < 0, 1.0 - P, torch.zeros_like(J)))
    return leak + (1.0 - leak) * q


def kept_gradients(J: torch.Tensor, U: torch.Tensor, leak: float) -> torch.Tensor:
    """(leak + (1 - leak) M_tp) g_tp for the uniform draws U (one per column of J); the GradDrop
    direction is its sum over tasks."""
    P, U = sign_purity(J)[None, :], U[None, :]
    keep = ((U < P) & (J > 0)) | ((U > P) & (J < 0))
    return (leak + (1.0 - leak) * keep.to(J.dtype)) * J


def mean_equivalent_weights(J: torch.Tensor, leak: float) -> torch.Tensor:
    """w_t = sum_p q_tp g_tp^2 / ||g_t||^2, the weight of g_t in E[d] projected on g_t (1 if g_t = 0)."""
    sq = J * J
    norms = sq.sum(dim=1)
    kept = (keep_probabilities(J, leak) * sq).sum(dim=1)
    return torch.where(norms > 0, kept / norms.clamp_min(torch.finfo(J.dtype).tiny), torch.ones_like(norms))


class GradDrop(GradientAggregation):
    """Chen et al., NeurIPS 2020: per coordinate, keep only the positive or only the negative task
    gradients, the positive ones with probability equal to their sign purity."""

    name = "graddrop"
    description = "GradDrop: per parameter, randomly keeps one sign of the task gradients (by sign purity)."
    weights_are_exact = False  # the direction is masked per coordinate, not weights @ J

    class Params(BalancerParams):
        leak: float = Field(0.0, ge=0.0, le=1.0, description="fraction of every gradient let through")
        seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the per-coordinate draws")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._gen = torch.Generator().manual_seed(self.params.seed)

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        Jd = J.detach().double()
        leak = float(self.params.leak)
        U = torch.rand(Jd.shape[1], generator=self._gen, dtype=torch.float64).to(Jd.device)
        kept = kept_gradients(Jd, U, leak)
        w = mean_equivalent_weights(Jd, leak)
        total, survived = float((Jd * Jd).sum()), float((kept * kept).sum())
        self.last_internals = {"kept_fraction": survived / total if total > 0 else 1.0}
        return kept.sum(dim=0).to(J.dtype), w.to(J.dtype)
