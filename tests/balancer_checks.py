"""Reusable checks for balancers: Jacobian families, step contexts and property assertions.

Every balancer in `BALANCERS` is run through these by tests/test_balancers.py; a new balancer
gets covered by adding its registry line. Two ways to step a balancer:

- `linear_context(J, losses)`: a "model" whose task losses are L_t + J_t . x + theta_t, so the
  Jacobian w.r.t. the shared parameter x is exactly the given J (any family below) and each
  task owns one task-specific parameter theta_t;
- `TinyMTL` + `tiny_context`: a real 2-3 task network (shared bottom, towers, MSE losses).

`check_step` runs one `backward(ctx)` and asserts what every balancer must do. A balancer whose
reported weights are not an exact linear combination of the task gradients (per-parameter
methods such as AdaTask or GradDrop) declares `weights_are_exact = False` on its class, and
the shared-grad == weights @ J assertion is skipped for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from engine.balancers.base import Balancer, StepContext
from engine.gradients import jacobian

FAMILIES = ("gaussian", "conflicting", "aligned", "duplicated", "zero_row", "badly_scaled", "opposite")


def jacobian_family(name: str, n_tasks: int, n_params: int = 12, seed: int = 0) -> torch.Tensor:
    """A T x P float64 Jacobian of one named shape (see `FAMILIES`)."""
    g = torch.Generator().manual_seed(seed)
    T, P = n_tasks, n_params
    J = torch.randn(T, P, generator=g, dtype=torch.float64)
    base = torch.randn(P, generator=g, dtype=torch.float64)
    noise = torch.randn(T, P, generator=g, dtype=torch.float64)
    if name == "gaussian":
        return J
    if name == "conflicting":  # rows alternate around +base / -base: many negative inner products
        signs = torch.tensor([(-1.0) ** t for t in range(T)], dtype=torch.float64)
        return signs[:, None] * base[None, :] + 0.4 * noise
    if name == "aligned":  # all rows close to one direction, different lengths
        scale = torch.linspace(0.5, 2.0, T, dtype=torch.float64)
        return scale[:, None] * (base[None, :] + 0.1 * noise)
    if name == "duplicated":  # last row repeats the first
        J[-1] = J[0]
        return J
    if name == "zero_row":
        J[0] = 0.0
        return J
    if name == "badly_scaled":  # row norms from 1e-3 to 1e3
        return torch.logspace(-3, 3, T, dtype=torch.float64)[:, None] * J
    if name == "opposite":  # g_1 = -g_0: the origin is in the convex hull
        J[1] = -J[0]
        return J
    raise ValueError(f"unknown family {name!r}; choose one of {FAMILIES}")


def jacobian_families(n_tasks: int, n_params: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """All families for one (T, P, seed)."""
    return {name: jacobian_family(name, n_tasks, n_params, seed) for name in FAMILIES}


def linear_context(
    J: torch.Tensor, losses: torch.Tensor | list[float] | None = None, step: int = 0
) -> StepContext:
    """A StepContext whose losses are L_t + J_t . x + theta_t at x = 0, theta = 0.

    The Jacobian w.r.t. the shared parameter x is exactly J; theta_t (task-specific) gets
    d/dtheta_t = its task weight. Default losses are 1 + t / T (positive, distinct).
    """
    T, P = J.shape
    if losses is None:
        losses = [1.0 + t / T for t in range(T)]
    L = torch.as_tensor(losses, dtype=J.dtype, device=J.device)
    x = nn.Parameter(torch.zeros(P, dtype=J.dtype, device=J.device))
    theta = nn.Parameter(torch.zeros(T, dtype=J.dtype, device=J.device))
    out = L + J.detach() @ x + theta
    return StepContext(
        losses=out,
        task_names=[f"t{i}" for i in range(T)],
        shared_params=[x],
        task_params=[theta],
        step=step,
        epoch=0,
    )


class TinyMTL(nn.Module):
    """Shared bottom (Linear-tanh-Linear-tanh) and one linear tower per task."""

    def __init__(self, n_tasks: int, d_in: int = 5, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.bottom = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.towers = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(n_tasks))

    def shared_params(self) -> list[nn.Parameter]:
        return list(self.bottom.parameters())

    def task_params(self) -> list[nn.Parameter]:
        return list(self.towers.parameters())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.bottom(x)
        return [tower(h).squeeze(-1) for tower in self.towers]


def tiny_batch(n_tasks: int, d_in: int = 5, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, d_in) and targets (T, n); targets differ in scale and sign across tasks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    coef = torch.randn(n_tasks, d_in, generator=g)
    y = (coef @ x.T) * torch.linspace(0.5, 3.0, n_tasks)[:, None]
    return x, y


def tiny_context(
    model: TinyMTL, batch: tuple[torch.Tensor, torch.Tensor], step: int = 0, names: list[str] | None = None
) -> StepContext:
    """Forward the tiny model; MSE loss per task."""
    x, y = batch
    outs = model(x)
    losses = torch.stack([((o - t) ** 2).mean() for o, t in zip(outs, y, strict=True)])
    T = losses.shape[0]
    return StepContext(
        losses=losses,
        task_names=names or [f"t{i}" for i in range(T)],
        shared_params=model.shared_params(),
        task_params=model.task_params(),
        step=step,
        epoch=0,
        model=model,
    )


def flat_grad(params: list[nn.Parameter]) -> torch.Tensor:
    """Concatenated .grad of `params` (zeros where None)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def weights_are_exact(balancer: Balancer) -> bool:
    return bool(getattr(type(balancer), "weights_are_exact", True))


def check_step(
    balancer: Balancer,
    make_ctx: Callable[[], StepContext],
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> torch.Tensor:
    """One balancer step with the contract's assertions; returns the weights.

    `make_ctx` must build a fresh context each call (the same forward each time): one is used
    to compute the reference Jacobian, one is handed to the balancer.
    """
    ref = make_ctx()
    J = jacobian(ref.losses, ref.shared_params, retain_graph=False).detach()
    ctx = make_ctx()
    params = [*ctx.shared_params, *ctx.task_params, *balancer.parameters()]
    for p in params:
        p.grad = None
    w = balancer.backward(ctx)
    T = len(ctx.task_names)
    assert isinstance(w, torch.Tensor), f"{balancer.name}: backward must return a tensor"
    assert w.shape == (T,), f"{balancer.name}: weights shape {tuple(w.shape)} != ({T},)"
    assert not w.requires_grad, f"{balancer.name}: returned weights must be detached"
    assert torch.isfinite(w).all(), f"{balancer.name}: non-finite weights {w}"
    for p in params:
        assert p.grad is not None, f"{balancer.name}: a parameter of shape {tuple(p.shape)} has no .grad"
        assert torch.isfinite(p.grad).all(), f"{balancer.name}: non-finite .grad"
    for k, v in balancer.internals().items():
        assert isinstance(k, str) and np.isfinite(v), f"{balancer.name}: internals[{k!r}] = {v}"
    if weights_are_exact(balancer):
        expected = w.to(J.dtype) @ J
        got = flat_grad(ctx.shared_params).to(J.dtype)
        torch.testing.assert_close(
            got, expected, atol=atol, rtol=rtol, msg=lambda m: f"{balancer.name}: shared grad != w @ J\n{m}"
        )
    return w


def aggregate_on(balancer: Balancer, J: torch.Tensor, losses: list[float] | None = None) -> torch.Tensor:
    """Step `balancer` on the linear context of J (all contract checks); returns the weights."""
    return check_step(balancer, lambda: linear_context(J, losses), atol=1e-8, rtol=1e-8)


def direction_of(weights: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    return weights.to(J.dtype) @ J


def assert_non_conflicting(direction: torch.Tensor, J: torch.Tensor, rel_tol: float = 1e-9) -> None:
    """Every task gradient has a non-negative inner product with `direction`, up to
    rel_tol * M * max(|d|, M) with M the largest task-gradient norm (the problem's scale)."""
    dots = J @ direction
    M = float(J.norm(dim=1).max())
    bound = rel_tol * M * max(float(direction.norm()), M)
    assert (dots >= -bound).all(), f"conflicts with a task: inner products {dots.tolist()}"


def simplex_grid(n_tasks: int, steps: int) -> np.ndarray:
    """All points of the simplex with coordinates k / steps (rows)."""
    if n_tasks == 1:
        return np.ones((1, 1))
    pts = [
        (*c, steps - sum(c))
        for c in itertools.product(range(steps + 1), repeat=n_tasks - 1)
        if sum(c) <= steps
    ]
    return np.asarray(pts, dtype=np.float64) / steps


def permuted(J: torch.Tensor, perm: list[int]) -> torch.Tensor:
    return J[torch.as_tensor(perm)]
