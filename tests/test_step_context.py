"""One backward pass per gradient-balancer step: `StepContext.jacobian()` also yields the
task-specific gradients, and a statistics step of a loss weighting reuses its Jacobian. Both must
write exactly the gradients the plain two-pass step writes, on every architecture (nested trunks
such as PLE's levels and cascades such as ESMM's included)."""

from __future__ import annotations

import pytest
import torch

from engine.balancers import build_balancer
from engine.balancers.base import StepContext
from engine.datasets import load_dataset
from engine.gradients import jacobian
from engine.models import MODELS, build_model

SYNTH = load_dataset("synthetic-correlation", {"n_samples": 600, "dim": 12, "n_tasks": 3}, 0)
SIM = load_dataset(
    "recsys-sim", {"n_users": 80, "n_items": 60, "n_impressions": 1500, "click_rate": 0.3, "seq_len": 6}, 0
)
FUNNEL = {"esmm", "esm2", "aitm", "dtrn"}
ARCHS = [a for a in MODELS if a != "single-task"]


def _setup(arch: str, seed: int = 0):  # type: ignore[no-untyped-def]
    data = SIM if arch in FUNNEL else SYNTH
    if arch == "esmm":
        data = data.select_tasks(["click", "purchase"])
    torch.manual_seed(seed)
    model = build_model(arch, data.features, data.tasks, {})
    idx = torch.arange(96)
    batch = data.train.subset(idx)
    return model, data, batch


def _losses(model, data, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    out = model(batch.features)
    ld = model.task_losses(out, batch.targets, batch.masks)
    return torch.stack([ld[t] for t in data.task_names])


def _grads(model) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    return [(p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for p in model.parameters()]


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_balancer_step_writes_what_two_passes_write(arch: str) -> None:
    model, data, batch = _setup(arch)
    model.train()
    shared, task = model.shared_parameters(), model.task_specific_parameters()
    if not shared:
        pytest.skip(f"{arch} declares no shared parameters on this data")
    bal = build_balancer("mgda", data.task_names)
    torch.manual_seed(1)
    losses = _losses(model, data, batch)
    model.zero_grad(set_to_none=True)
    bal.backward(StepContext(losses, data.task_names, shared, task, 0, 1, model))
    got = _grads(model)

    # reference: the Jacobian with the graph kept, then a separate backward for the towers
    torch.manual_seed(1)
    losses = _losses(model, data, batch)
    model.zero_grad(set_to_none=True)
    J = jacobian(losses, shared, retain_graph=True, method="loop")
    direction, _ = bal.aggregate(J, StepContext(losses, data.task_names, shared, task, 0, 1, model))
    if task:
        losses.sum().backward(inputs=task)
    o = 0
    for p in shared:
        p.grad = direction[o : o + p.numel()].view_as(p).clone()
        o += p.numel()
    want = _grads(model)
    for (name, _), a, b in zip(model.named_parameters(), got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-6, msg=f"{arch}: {name}")


@pytest.mark.parametrize("arch", ["mmoe", "ple", "esmm", "aitm", "cross-stitch"])
@pytest.mark.parametrize("balancer", ["ew", "dwa", "uw", "gradnorm"])
def test_statistics_step_of_a_loss_weighting_reuses_the_jacobian(arch: str, balancer: str) -> None:
    model, data, batch = _setup(arch)
    model.train()
    shared, task = model.shared_parameters(), model.task_specific_parameters()
    results = []
    for with_stats in (False, True):
        bal = build_balancer(balancer, data.task_names)
        torch.manual_seed(1)
        losses = _losses(model, data, batch)
        model.zero_grad(set_to_none=True)
        for p in bal.parameters():
            p.grad = None
        ctx = StepContext(losses, data.task_names, shared, task, 0, 1, model)
        if with_stats:
            ctx.jacobian()  # what the trainer does on a statistics step
        w = bal.backward(ctx)
        extra = [p.grad.clone() for p in bal.parameters() if p.grad is not None]
        results.append((w, _grads(model), extra))
    (w0, g0, e0), (w1, g1, e1) = results
    torch.testing.assert_close(w0, w1)
    for (name, _), a, b in zip(model.named_parameters(), g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-6, msg=f"{arch}/{balancer}: {name}")
    for a, b in zip(e0, e1, strict=True):
        torch.testing.assert_close(a, b)


def test_the_jacobian_pass_frees_the_graph() -> None:
    """After `ctx.jacobian()` nothing backpropagates through the step's graph again: it is freed
    during the pass (the memory the balancer benchmark measures)."""
    model, data, batch = _setup("mmoe")
    losses = _losses(model, data, batch)
    ctx = StepContext(
        losses, data.task_names, model.shared_parameters(), model.task_specific_parameters(), 0, 1, model
    )
    ctx.jacobian()
    with pytest.raises(RuntimeError, match=r"second time|freed"):
        losses.sum().backward()
