"""The representation-gradient option (MGDA-UB style): weights from the Gramian of the task
gradients at the shared representation, then one trunk pass with the weighted cotangent."""

from __future__ import annotations

import pytest
import torch

from engine.balancers import BALANCERS, build_balancer, representation_balancers
from engine.balancers.base import StepContext
from engine.config import ConfigError, load_config
from engine.datasets import load_dataset
from engine.gradients import jacobian, representation_gramian
from engine.models import build_model
from engine.representation import representation_backward
from engine.train import NullWriter, train

DATA = load_dataset("synthetic-correlation", {"n_samples": 600, "dim": 12, "n_tasks": 3}, 0)


def _model(arch: str = "mmoe"):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_model(arch, DATA.features, DATA.tasks, {})


def _losses(model) -> torch.Tensor:  # type: ignore[no-untyped-def]
    batch = DATA.train.subset(torch.arange(128))
    ld = model.task_losses(model(batch.features), batch.targets, batch.masks)
    return torch.stack([ld[t] for t in DATA.task_names])


def test_the_gramian_based_balancers_are_the_ones_with_a_default_aggregate() -> None:
    names = representation_balancers()
    assert {"mgda", "pcgrad", "imtl", "upgrad", "nashmtl", "alignedmtl"} <= set(names)
    for n in ("ew", "gradnorm", "graddrop", "metabalance", "adatask", "pmtrec"):
        assert n not in names  # loss weightings and non-Gramian aggregators cannot
    for n in names:
        assert BALANCERS[n].kind == "gradient"


@pytest.mark.parametrize("arch", ["mmoe", "ple", "shared-bottom", "cross-stitch"])
def test_the_step_is_sum_w_grad_with_w_from_the_representation_gramian(arch: str) -> None:
    model = _model(arch)
    shared, task = model.shared_parameters(), model.task_specific_parameters()
    seen: list[torch.Tensor] = []

    def weigh(G: torch.Tensor) -> torch.Tensor:
        seen.append(G)
        return torch.tensor([0.2, 0.5, 1.3], dtype=torch.float64)

    model.zero_grad(set_to_none=True)
    w = representation_backward(_losses(model), shared, task, weigh)
    assert w is not None
    got = [p.grad.clone() for p in model.parameters()]
    # the Gramian it weighed is the representation Gramian
    torch.testing.assert_close(seen[0], representation_gramian(_losses(model), shared))
    # shared: sum_t w_t grad L_t exactly; task-specific: grad of sum_t L_t
    losses = _losses(model)
    J = jacobian(losses, shared, method="loop")
    want_shared = w @ J
    task_grads = torch.autograd.grad(losses.sum(), task, allow_unused=True)
    ids = {id(p): i for i, p in enumerate(model.parameters())}
    o = 0
    for p in shared:
        torch.testing.assert_close(
            got[ids[id(p)]].reshape(-1), want_shared[o : o + p.numel()], rtol=1e-4, atol=1e-6
        )
        o += p.numel()
    for p, g in zip(task, task_grads, strict=True):
        want = torch.zeros_like(p) if g is None else g
        torch.testing.assert_close(got[ids[id(p)]], want, rtol=1e-4, atol=1e-6)


def test_mgda_weights_differ_from_the_exact_ones_but_both_are_used_as_asked() -> None:
    model = _model()
    shared, task = model.shared_parameters(), model.task_specific_parameters()
    out = {}
    for rep in (False, True):
        bal = build_balancer("mgda", DATA.task_names)
        ctx = StepContext(_losses(model), DATA.task_names, shared, task, 0, 1, model, representation=rep)
        out[rep] = bal.backward(ctx)
        assert not ctx.representation_unavailable
    assert not torch.allclose(out[False], out[True])
    # on a statistics step the representation Gramian comes out of the Jacobian's pass: same weights
    bal = build_balancer("mgda", DATA.task_names)
    ctx = StepContext(_losses(model), DATA.task_names, shared, task, 0, 1, model, representation=True)
    ctx.jacobian()
    torch.testing.assert_close(bal.backward(ctx), out[True])


def test_a_graph_without_a_split_falls_back_to_the_exact_route() -> None:
    model = _model()
    shared, task = model.shared_parameters(), model.task_specific_parameters()
    losses = _losses(model) * 1.0  # not stacked task roots: no trunk/head split
    assert representation_backward(losses, shared, task, lambda G: torch.ones(3)) is None
    ctx = StepContext(losses, DATA.task_names, shared, task, 0, 1, model, representation=True)
    build_balancer("upgrad", DATA.task_names).backward(ctx)
    assert ctx.representation_unavailable and ctx.has_jacobian


def test_config_refuses_the_option_for_other_balancers() -> None:
    base = {"dataset": "synthetic-correlation", "arch": "mmoe", "gradients": "representation"}
    assert load_config({**base, "balancer": "pcgrad"}).gradients == "representation"
    with pytest.raises(ConfigError, match=r"gradients 'representation'.*'gradnorm'.*mgda"):
        load_config({**base, "balancer": "gradnorm"})
    with pytest.raises(ConfigError, match="gradients"):
        load_config({**base, "balancer": "pcgrad", "gradients": "fast"})


def test_a_representation_run_trains_and_logs_its_weights() -> None:
    cfg = load_config(
        {
            "dataset": "synthetic-correlation",
            "dataset_params": {"n_samples": 800, "dim": 12, "n_tasks": 3},
            "arch": "mmoe",
            "balancer": "mgda",
            "gradients": "representation",
            "epochs": 2,
            "batch_size": 128,
            "grad_stats_every": 3,
            "threads": 1,
        }
    )
    w = NullWriter()
    result = train(cfg, w)
    assert result.state == "finished" and result.test
    assert w.weight_rows and all(sum(r.values()) > 0 for _, r in w.weight_rows)
    assert w.grad_rows  # statistics still logged (exact Jacobian on those steps)
    assert not any(level == "warning" for level, _ in w.events)
