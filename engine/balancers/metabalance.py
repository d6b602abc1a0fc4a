"""MetaBalance (He, Feng, Cheng, Ji, Guo, Caverlee, "MetaBalance: Improving Multi-Task
Recommendations via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022).

One task is the target (`target`, default the first task); the others are auxiliary. For every
shared parameter tensor k separately, each task keeps a moving average of its gradient norm

    m_{i,k} <- beta m_{i,k} + (1 - beta) ||g_{i,k}||        (m starts at 0, no bias correction)

and each auxiliary gradient is pulled toward the target's magnitude by the relax factor r:

    g_{i,k} <- r (m_{0,k} / m_{i,k}) g_{i,k} + (1 - r) g_{i,k},

i.e. scaled by f_{i,k} = r m_{0,k} / m_{i,k} + 1 - r (the target keeps f = 1). The shared
gradient of tensor k is sum_i f_{i,k} g_{i,k}; task-specific parameters get their plain gradient.
r = 1 gives every auxiliary gradient the target's average magnitude, r = 0 is the plain sum.

As in the official code (facebookresearch/MetaBalance): the averages start at zero without bias
correction (all tasks start together, so the ratio m_0 / m_i is unbiased from the first step),
and they are updated with the current step's norms before scaling. The paper's three strategies
are the `strategy` parameter: "both" (the official code: shrink large and enlarge small
auxiliary gradients), "reduce" (only shrink those larger than the target's) and "enlarge" (only
enlarge the smaller ones).

Choices: a task whose average m_{i,k} is zero (or below 1e-12 of the largest average on tensor
k) has nothing to rescale and keeps f = 1, where the official code would divide by zero. The
reported weights are the mean of f_{i,k} over the shared tensors (exact when there is one
tensor; per tensor they differ, hence `weights_are_exact = False`).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.balancers.numerics import ZERO_NORM

ZERO_AVG = ZERO_NORM  # an average below this fraction of the tensor's largest one counts as zero


def tensor_index(params: list[torch.nn.Parameter], device: torch.device) -> torch.Tensor:
    """(P,) index of the parameter tensor each flat Jacobian column belongs to."""
    sizes = torch.tensor([p.numel() for p in params], dtype=torch.long, device=device)
    return torch.repeat_interleave(torch.arange(len(params), device=device), sizes)


def per_tensor_norms(J: torch.Tensor, seg: torch.Tensor, n_tensors: int) -> torch.Tensor:
    """(T, K) norms of each task's gradient restricted to each parameter tensor."""
    sq = torch.zeros(J.shape[0], n_tensors, dtype=J.dtype, device=J.device)
    sq.index_add_(1, seg, J * J)
    return sq.sqrt()


class MetaBalance(GradientAggregation):
    """He et al., WWW 2022: per shared tensor, auxiliary gradients are rescaled toward the
    target task's moving-average gradient magnitude (relax factor r, EMA beta)."""

    name = "metabalance"
    description = "MetaBalance: per layer, scales auxiliary-task gradients toward the main task's size."
    weights_are_exact = False

    class Params(BalancerParams):
        target: str | None = Field(None, description="the target (main) task; default the first task")
        relax_factor: float = Field(
            0.7, ge=0.0, le=1.0, description="r: 1 = auxiliary magnitudes equal the target's, 0 = plain sum"
        )
        beta: float = Field(0.9, ge=0.0, lt=1.0, description="moving-average factor of the gradient norms")
        strategy: Literal["both", "reduce", "enlarge"] = Field(
            "both", description="rescale auxiliary gradients larger than the target's, smaller, or both"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self.check_tasks(params, self.task_names)
        target = self.params.target
        self.target = 0 if target is None else self.task_names.index(target)
        self._avg: torch.Tensor | None = None  # (T, K) moving averages m_{i,k}
        self._shapes: list[tuple[int, ...]] = []

    @classmethod
    def check_tasks(cls, params: BalancerParams, tasks: list[str]) -> None:
        target = getattr(params, "target", None)
        if target is not None and target not in tasks:
            raise ValueError(f"balancer_params.target must be one of the tasks {list(tasks)}, got {target!r}")

    def to(self, device: torch.device) -> MetaBalance:
        if self._avg is not None:
            self._avg = self._avg.to(device)
        return self

    def factors(self, norms: torch.Tensor) -> torch.Tensor:
        """Update the averages with this step's (T, K) norms; return the (T, K) factors f."""
        beta = self.params.beta
        if self._avg is None or self._avg.shape != norms.shape:
            self._avg = torch.zeros_like(norms)
        avg = self._avg.to(device=norms.device, dtype=norms.dtype)
        avg = beta * avg + (1.0 - beta) * norms
        self._avg = avg
        m0 = avg[self.target : self.target + 1]  # (1, K)
        usable = avg > ZERO_AVG * avg.max(dim=0, keepdim=True).values
        ratio = torch.where(usable, m0 / torch.where(usable, avg, torch.ones_like(avg)), torch.ones_like(avg))
        if self.params.strategy == "reduce":
            ratio = ratio.clamp(max=1.0)
        elif self.params.strategy == "enlarge":
            ratio = ratio.clamp(min=1.0)
        r = self.params.relax_factor
        f = r * ratio + (1.0 - r)
        f[self.target] = 1.0
        return f

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        params = ctx.shared_params
        shapes = [tuple(p.shape) for p in params]
        if shapes != self._shapes:  # a different set of shared tensors: start the averages again
            self._avg, self._shapes = None, shapes
        if not params:
            return J.sum(0), torch.ones(J.shape[0], dtype=J.dtype, device=J.device)
        seg = tensor_index(params, J.device)
        Jd = J.detach()
        f = self.factors(per_tensor_norms(Jd, seg, len(params)))  # (T, K)
        direction = (f[:, seg] * Jd).sum(0)
        avg = self._avg if self._avg is not None else torch.zeros_like(f)
        self.last_internals = {f"avg_norm_{i}": float(v) for i, v in enumerate(avg.mean(dim=1).cpu())}
        return direction, f.mean(dim=1)
