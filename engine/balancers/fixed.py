"""Fixed user weights: the dashboard's task-weight sliders (linear scalarisation).

Linear scalarisation minimises sum_t w_t L_t for a fixed preference vector w; sweeping w over
a simplex grid traces the convex part of the Pareto front (Miettinen, "Nonlinear
Multiobjective Optimization", Kluwer 1999, ch. 3.1).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, LossWeighting, StepContext

Weight = Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)]


class Fixed(LossWeighting):
    """Linear scalarisation with user-given task weights (Miettinen 1999); None means all 1.

    The effective weights are exactly the given ones (no renormalisation).
    """

    name = "fixed"
    description = "Your own task weights, held fixed: the loss is the weighted sum of task losses."

    class Params(BalancerParams):
        weights: dict[str, Weight] | None = Field(
            None, description="one weight per task (>= 0, not all zero); None = every task weighs 1"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self.check_tasks(params, self.task_names)
        given = self.params.weights
        self._w = torch.tensor(
            [1.0 if given is None else float(given[t]) for t in self.task_names], dtype=torch.float64
        )

    @classmethod
    def check_tasks(cls, params: BalancerParams, tasks: list[str]) -> None:
        """Raise ValueError unless the weights name exactly `tasks`, are >= 0 and not all zero."""
        w = getattr(params, "weights", None)
        if w is None:
            return
        missing = [t for t in tasks if t not in w]
        extra = [k for k in w if k not in tasks]
        if missing or extra:
            raise ValueError(
                f"balancer_params.weights must name exactly the tasks {list(tasks)}; "
                f"missing {missing}, unknown {extra}"
            )
        negative = {k: v for k, v in w.items() if not v >= 0.0}
        if negative:
            raise ValueError(f"balancer_params.weights must be >= 0, got {negative}")
        if all(v == 0.0 for v in w.values()):
            raise ValueError("balancer_params.weights are all zero: at least one task needs weight > 0")

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._w.to(device=losses.device, dtype=losses.dtype)
