"""The batched Jacobian and the statistics logged from it agree with separate backward passes."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.gradients import block_slices, cosine_matrix, gradient_stats, jacobian


def _toy(seed: int = 0) -> tuple[nn.Module, nn.ModuleList, torch.Tensor]:
    torch.manual_seed(seed)
    shared = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(3))
    x = torch.randn(32, 6)
    return shared, heads, x


def _losses(shared: nn.Module, heads: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    h = shared(x)
    targets = [torch.sin(x[:, 0]), x[:, 1] ** 2, -x[:, 2]]
    return torch.stack(
        [((head(h).squeeze(-1) - y) ** 2).mean() for head, y in zip(heads, targets, strict=True)]
    )


def test_jacobian_rows_equal_separate_backward_passes() -> None:
    shared, heads, x = _toy()
    params = list(shared.parameters())
    J = jacobian(_losses(shared, heads, x), params)
    for t in range(3):
        grads = torch.autograd.grad(_losses(shared, heads, x)[t], params)
        row = torch.cat([g.reshape(-1) for g in grads])
        torch.testing.assert_close(J[t], row, rtol=1e-5, atol=1e-7)


def test_logged_cosines_and_norms_equal_hand_computation() -> None:
    shared, heads, x = _toy(1)
    params = list(shared.parameters())
    names = ["a", "b", "c"]
    blocks = {"layer0": list(shared[0].parameters()), "layer2": list(shared[2].parameters())}
    J = jacobian(_losses(shared, heads, x), params)
    rows = gradient_stats(J, names, block_slices(blocks, params))

    per_task: dict[str, dict[str, torch.Tensor]] = {}
    for t, name in enumerate(names):
        g = torch.autograd.grad(_losses(shared, heads, x)[t], params)
        per_task[name] = {
            "all": torch.cat([v.reshape(-1) for v in g]),
            "layer0": torch.cat([v.reshape(-1) for v in g[:2]]),
            "layer2": torch.cat([v.reshape(-1) for v in g[2:]]),
        }
    assert {r.layer for r in rows} == {"all", "layer0", "layer2"}
    assert len(rows) == 3 * 6  # 3 layers x (3 pairs + 3 diagonal)
    for r in rows:
        gi, gj = per_task[r.task_i][r.layer], per_task[r.task_j][r.layer]
        expected = float(gi @ gj / (gi.norm() * gj.norm()))
        assert math.isclose(r.cosine, expected, rel_tol=1e-4, abs_tol=1e-6)
        assert math.isclose(r.norm_i, float(gi.norm()), rel_tol=1e-5)
        assert math.isclose(r.norm_j, float(gj.norm()), rel_tol=1e-5)


def test_unused_parameters_get_zero_rows_and_zero_cosine() -> None:
    a = nn.Parameter(torch.tensor([1.0, 2.0]))
    b = nn.Parameter(torch.tensor([3.0]))
    losses = torch.stack([(a**2).sum(), (a * 0).sum() + b.sum() * 0])
    J = jacobian(losses, [a, b])
    assert J.shape == (2, 3)
    torch.testing.assert_close(J[1], torch.zeros(3))
    C = cosine_matrix(J @ J.T)
    assert C[0, 1] == 0.0 and C[1, 1] == 0.0 and torch.isclose(C[0, 0], torch.tensor(1.0))
