"""DWA, dynamic weight average (Liu, Johns, Davison, "End-To-End Multi-Task Learning With
Attention", CVPR 2019, eq. 7).

With Lbar_t(e) the mean training loss of task t over epoch e, the weights used during epoch e are

    r_t = Lbar_t(e - 1) / Lbar_t(e - 2),      w_t = T exp(r_t / temperature) / sum_k exp(r_k / temperature)

(temperature 2 in the paper), and w_t = 1 until two epochs have been completed. A task whose loss
fell less (ratio closer to 1 or above) gets more weight; the weights always sum to T.

Book-keeping: the balancer keeps a running sum and count of each task's loss per epoch, keyed by
`ctx.epoch` (the trainer counts from 1), so it needs no help from the trainer; "the last two
epochs" are the two most recent epochs seen before the current one (the paper's e-1 and e-2 when
epochs are consecutive). A mean loss of zero or below gives a ratio of 1 (no information), as
does a non-finite ratio. Only the last three epochs are kept.
"""

from __future__ import annotations

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, LossWeighting, StepContext

KEEP_EPOCHS = 3


class DWA(LossWeighting):
    """Liu et al., CVPR 2019: softmax (temperature T = 2) of each task's loss ratio between the
    last two epochs, scaled to sum T; ones during the first two epochs."""

    name = "dwa"
    description = "DWA: gives more weight to tasks whose loss fell least over the last two epochs."

    class Params(BalancerParams):
        temperature: float = Field(
            2.0, ge=0.05, le=100.0, description="softmax temperature T (larger = closer to equal weights)"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._sums: dict[int, torch.Tensor] = {}  # epoch -> float64 sum of losses (T,)
        self._counts: dict[int, int] = {}

    def _record(self, epoch: int, losses: torch.Tensor) -> None:
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        if epoch in self._sums:
            self._sums[epoch] += values
            self._counts[epoch] += 1
        else:
            self._sums[epoch] = values.clone()
            self._counts[epoch] = 1
        for old in sorted(self._sums)[:-KEEP_EPOCHS]:
            del self._sums[old], self._counts[old]

    def epoch_means(self) -> dict[int, torch.Tensor]:
        """Mean loss per task of every epoch still kept (float64, CPU)."""
        return {e: self._sums[e] / self._counts[e] for e in sorted(self._sums)}

    def weights_for_epoch(self, epoch: int) -> torch.Tensor:
        """The DWA weights (float64, CPU) for `epoch`, from the epochs recorded before it."""
        means = self.epoch_means()
        done = [e for e in means if e < epoch]
        if len(done) < 2:
            self.last_internals = {}
            return torch.ones(self.n_tasks, dtype=torch.float64)
        last, before = means[done[-1]], means[done[-2]]
        ratio = torch.where(before > 0, last / before.clamp_min(1e-300), torch.ones_like(last))
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        w = self.n_tasks * torch.softmax(ratio / self.params.temperature, dim=0)
        self.last_internals = {f"ratio_{i}": float(r) for i, r in enumerate(ratio)}
        return w

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        w = self.weights_for_epoch(ctx.epoch)
        self._record(ctx.epoch, losses)
        return w.to(device=losses.device, dtype=losses.dtype)
