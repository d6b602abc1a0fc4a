"""The balancer contract: one interface for loss weighting and gradient aggregation.

Each training step the trainer builds a `StepContext` (task losses with their graph, the model's
shared and task-specific parameters, a lazily computed Jacobian that also carries the
task-specific gradients) and calls `balancer.backward(ctx)`. The balancer must leave `.grad`
set on every parameter it trains and return its *effective task weights* (T,) for the step,
which are logged and shown.

Two base classes cover the two families:
- `LossWeighting`: implement `weights(losses, ctx) -> (T,)`; the step is
  `sum_t w_t L_t` (+ `extra_loss` for methods with learnable state, e.g. UW's log-variances).
- `GradientAggregation`: implement `aggregate(J, ctx) -> (direction (P,), weights (T,))` from the
  T x P Jacobian of the task losses w.r.t. the shared parameters; task-specific parameters get
  the plain gradient of the sum of task losses (each tower only depends on its own task).
  Where the method is a function of the Gramian G = J J^T alone, write it as
  `gramian_weights(G) -> w` (or `weights_from_gramian(G, ctx)`) and keep the default `aggregate`
  (`direction = w @ J`, torchjd's style): the method then also runs on the representation
  Gramian when a run opts in (`gramian_based()`, engine.representation). Such a method also
  says how its weights scale with the Gramian (`weights_degree`: 0 when scale-invariant): the
  weights are then solved on the Gramian of J / s, s a power of two that brings J's entries to
  order 1, and mapped back exactly, since J J^T itself underflows or overflows in float64 for
  gradients of 1e-161 or 1e155 (`weights_from_scaled_gramian`, engine.balancers.numerics,
  which also holds the zero-gradient cut-off shared by the balancers).

Optimiser-level methods (AdaTask) also override `shared_optimizer`: their `backward` writes the
final update direction of the shared parameters into `.grad`, and the trainer steps those
parameters with the plain optimiser the balancer returns instead of the run's optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from engine.balancers.numerics import rescale
from engine.gradients import jacobian, scale_gramian, scaled_gramian
from engine.representation import representation_backward


class BalancerParams(BaseModel):
    """Base class of a balancer's parameters (validated by pydantic)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepContext:
    """What a balancer sees at one training step."""

    losses: torch.Tensor  # (T,) task losses, still attached to the graph
    task_names: list[str]
    shared_params: list[nn.Parameter]
    task_params: list[nn.Parameter]
    step: int
    epoch: int
    model: nn.Module | None = None
    #: the run's opt-in: Gramian-based balancers weigh the tasks by the Gramian of the task
    #: gradients at the shared representation (MGDA-UB; engine.representation)
    representation: bool = False
    #: set by a balancer that was asked for the representation route and had to take the exact one
    representation_unavailable: bool = False
    _jacobian: torch.Tensor | None = field(default=None, repr=False)
    _task_jacobian: torch.Tensor | None = field(default=None, repr=False)
    _representation_gramian: torch.Tensor | None = field(default=None, repr=False)

    def jacobian(self) -> torch.Tensor:
        """T x P Jacobian of the task losses w.r.t. the shared parameters (computed once).

        The same backward pass also gives each task's gradient w.r.t. the task-specific
        parameters (`write_task_grads` uses it), so after this call the step needs no further
        backward pass and the autograd graph is freed as the pass goes (lower peak memory)."""
        if self._jacobian is None:
            n_shared = sum(p.numel() for p in self.shared_params)
            rep: list[torch.Tensor] | None = [] if self.representation else None
            full = jacobian(
                self.losses,
                [*self.shared_params, *self.task_params],
                retain_graph=False,
                representation_gramian_out=rep,
            )
            self._jacobian = full[:, :n_shared].contiguous()
            self._task_jacobian = full[:, n_shared:]
            self._representation_gramian = rep[0] if rep else None
        return self._jacobian

    @property
    def representation_gramian(self) -> torch.Tensor | None:
        """The representation Gramian taken from the Jacobian's pass (representation runs only)."""
        return self._representation_gramian

    @property
    def has_jacobian(self) -> bool:
        return self._jacobian is not None

    def write_task_grads(self, w: torch.Tensor) -> None:
        """Set `.grad` of the task-specific parameters to the gradient of sum_t w_t L_t: from the
        Jacobian's pass when it was computed (exact: `w @ J_task`), else by a backward pass."""
        if not self.task_params:
            return
        if self._task_jacobian is not None:
            write_flat_grad(self.task_params, w.to(self._task_jacobian.dtype) @ self._task_jacobian)
        else:
            (w.to(self.losses.dtype) * self.losses).sum().backward(inputs=self.task_params)


class Balancer:
    """Base of all balancers. Subclasses set `name`, `description`, `kind`, `Params`."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, shown in the dashboard
    kind: ClassVar[str]  # "loss" or "gradient"
    Params: ClassVar[type[BalancerParams]] = BalancerParams

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        self.task_names = list(task_names)
        self.n_tasks = len(task_names)
        self.params = params
        self.last_internals: dict[str, float] = {}

    def parameters(self) -> list[nn.Parameter]:
        """Learnable balancer state trained by the main optimiser (e.g. UW's log-variances)."""
        return []

    def to(self, device: torch.device) -> Balancer:
        return self

    def backward(self, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def shared_optimizer(
        self, params: list[nn.Parameter], lr: float, weight_decay: float
    ) -> torch.optim.Optimizer | None:
        """The optimiser that steps the shared parameters, for a balancer that owns their update.

        Default None: the run's optimiser (Adam, AdamW or SGD) steps them with the `.grad` that
        `backward` wrote, like every other parameter. An optimiser-level method (AdaTask keeps
        Adam moments per task) writes its finished, already preconditioned update direction into
        `.grad` and returns a plain optimiser here (SGD at `lr`, no momentum), which the trainer
        then uses for the shared parameters instead of the run's optimiser, so the direction is
        applied once and never re-preconditioned. Called once, before training.
        """
        return None

    def internals(self) -> dict[str, float]:
        """Extra numbers worth logging this step (projections made, solver values, ...)."""
        return dict(self.last_internals)


class LossWeighting(Balancer):
    kind = "loss"

    def weights(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def extra_loss(self, losses: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
        """Added to the weighted loss (the learnable-state term of UW, for instance). It must
        read the losses detached: it trains the balancer's own parameters, not the model's."""
        return None

    def backward(self, ctx: StepContext) -> torch.Tensor:
        w = self.weights(ctx.losses.detach(), ctx).detach()
        extra = self.extra_loss(ctx.losses, ctx)
        if ctx.has_jacobian:
            # a statistics step already paid for the Jacobian: the weighted gradient is w @ J
            # (exact), no second backward pass through the model
            J = ctx.jacobian()
            write_flat_grad(ctx.shared_params, w.to(J.dtype) @ J)
            ctx.write_task_grads(w)
            if extra is not None:
                extra.backward()
            return w
        total = (w * ctx.losses).sum()
        if extra is not None:
            total = total + extra
        total.backward()
        return w


class GradientAggregation(Balancer):
    kind = "gradient"

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(direction (P,), effective task weights (T,)). Default: Gramian weighting,
        w = weights_from_gramian(J J^T) and direction w @ J. The Gramian is taken of J / s (s the
        power of two of J's largest |entry|, `weights_from_scaled_gramian`), so that gradients of
        1e-161 or 1e155, whose J J^T underflows or overflows in float64, get the same weights."""
        G, s = scaled_gramian(J)
        w = self.weights_from_scaled_gramian(G, s, ctx).to(J.dtype)
        return w @ J, w

    def weights_from_gramian(self, G: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Task weights from the float64 Gramian (and the step's context). Default: `gramian_weights`."""
        return self.gramian_weights(G)

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weights_degree(self) -> int | None:
        """k with weights_from_gramian(s^2 G) = s^k weights_from_gramian(G) for every s > 0 (up to
        rounding; exactly for a power of two s): 0 for a scale-invariant method, -1 when the weights
        scale as 1 / ||g|| (Nash-MTL). None (the default): not homogeneous, or not known to be."""
        return None

    def internals_degrees(self) -> dict[str, int]:
        """Internals that scale with the gradients, key -> d with value(s J) = s^d value(J) (a
        norm: 1, a squared norm: 2); `weights_from_scaled_gramian` maps them back to raw units."""
        return {}

    def weights_from_scaled_gramian(self, G: torch.Tensor, s: float, ctx: StepContext) -> torch.Tensor:
        """Task weights for the Gramian s^2 G, given G (the Gramian of J / s, entries of order 1)
        and the power of two s. Default: a homogeneous method (`weights_degree` k) solves on G and
        multiplies the weights by s^k and its scaled internals by s^d (exact: powers of two);
        one that is not (None) solves on s^2 G itself, which may underflow or overflow."""
        k = self.weights_degree()
        if k is None:
            return self.weights_from_gramian(G * s * s if s != 1.0 else G, ctx)
        w = self.weights_from_gramian(G, ctx)
        if s != 1.0:
            if k:
                w = w * rescale(1.0, s, k)
            for key, d in self.internals_degrees().items():
                if key in self.last_internals:
                    self.last_internals[key] = rescale(self.last_internals[key], s, d)
        return w

    def weights_from_unscaled_gramian(self, G: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """`weights_from_scaled_gramian` for a Gramian computed unscaled (the representation one):
        divided by the power of two s^2 nearest its largest diagonal entry first."""
        Gs, s = scale_gramian(G)
        return self.weights_from_scaled_gramian(Gs, s, ctx)

    @classmethod
    def gramian_based(cls) -> bool:
        """Whether the update is sum_t w_t grad L_t with w a function of the Gramian alone (the
        default `aggregate`): such a method can run on the representation Gramian (MGDA-UB)."""
        base = GradientAggregation
        return cls.aggregate is base.aggregate and (
            cls.gramian_weights is not base.gramian_weights
            or cls.weights_from_gramian is not base.weights_from_gramian
        )

    def backward(self, ctx: StepContext) -> torch.Tensor:
        ones = torch.ones_like(ctx.losses.detach())
        if ctx.representation and self.gramian_based():
            if not ctx.has_jacobian:
                w = representation_backward(
                    ctx.losses,
                    ctx.shared_params,
                    ctx.task_params,
                    lambda G: self.weights_from_unscaled_gramian(G, ctx),
                )
                if w is not None:
                    return w
            J = ctx.jacobian()  # a statistics step: the representation Gramian came with J
            G = ctx.representation_gramian
            if G is not None:
                w = self.weights_from_unscaled_gramian(G, ctx).to(J.dtype)
                ctx.write_task_grads(ones)
                write_flat_grad(ctx.shared_params, w @ J)
                return w.detach()
            ctx.representation_unavailable = True
        J = ctx.jacobian()
        direction, w = self.aggregate(J, ctx)
        ctx.write_task_grads(ones)
        write_flat_grad(ctx.shared_params, direction)
        return w.detach()


def write_flat_grad(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    """Set `.grad` of `params` from one flat vector (in `params` order)."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n
