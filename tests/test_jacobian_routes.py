"""Every route to the per-task Jacobian gives the same matrix as separate backward passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import engine.gradients as G
from engine.gradients import jacobian, trunk_split


class _Toy(nn.Module):
    """A shared encoder read by the trunk *and* by the task gates (MMoE-like), a shared parameter
    only task 0 uses, and per-task heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(6, 8)
        self.trunk = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5))
        self.gates = nn.ModuleList(nn.Linear(8, 5) for _ in range(3))
        self.heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(3))
        self.only_task0 = nn.Parameter(torch.randn(5))

    def shared(self) -> list[nn.Parameter]:
        return [*self.enc.parameters(), *self.trunk.parameters(), self.only_task0]

    def task_params(self) -> list[nn.Parameter]:
        return [*self.gates.parameters(), *self.heads.parameters()]

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.tanh(self.enc(x))
        z = self.trunk(e)
        out = []
        for t in range(3):
            h = z * torch.sigmoid(self.gates[t](e))
            if t == 0:
                h = h + self.only_task0
            out.append(((self.heads[t](h).squeeze(-1) - x[:, t]) ** 2).mean())
        return torch.stack(out)


def _reference(model: _Toy, x: torch.Tensor) -> torch.Tensor:
    rows = []
    for t in range(3):
        g = torch.autograd.grad(model.losses(x)[t], model.shared(), allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                    for gi, p in zip(g, model.shared(), strict=True)
                ]
            )
        )
    return torch.stack(rows)


@pytest.mark.parametrize("method", ["auto", "trunk", "batched", "loop"])
@pytest.mark.parametrize("rows", ["loop", "batched"])
def test_every_route_matches_separate_backward_passes(
    method: str, rows: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(G, "TRUNK_ROWS", rows)
    model = _Toy()
    x = torch.randn(16, 6)
    J = jacobian(model.losses(x), model.shared(), method=method)  # type: ignore[arg-type]
    torch.testing.assert_close(J, _reference(model, x), rtol=1e-5, atol=1e-7)


def test_the_split_finds_the_trunk_and_the_head_only_parameter() -> None:
    model = _Toy()
    split = trunk_split(model.losses(torch.randn(4, 6)), model.shared())
    assert split is not None
    n_shared = len(model.shared())
    assert list(split.head_params) == [n_shared - 1]  # only_task0 is reached by task 0 alone
    assert split.head_params[n_shared - 1][0] == 0
    assert len(split.trunk_params) == n_shared - 1
    assert len(split.edges) == 2  # the trunk's output and the encoder's output (read by the gates)


def test_losses_that_are_not_stacked_fall_back_to_the_batched_route() -> None:
    model = _Toy()
    x = torch.randn(8, 6)
    losses = model.losses(x) * 1.0  # the graph root is a multiplication, not a stack
    assert trunk_split(losses, model.shared()) is None
    torch.testing.assert_close(jacobian(losses, model.shared()), _reference(model, x), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="trunk"):
        jacobian(losses, model.shared(), method="trunk")


def test_representation_gramian_is_the_gramian_of_the_head_gradients() -> None:
    from engine.gradients import representation_gramian

    model = _Toy()
    x = torch.randn(16, 6)
    G = representation_gramian(model.losses(x), model.shared())
    assert G is not None and G.shape == (3, 3) and G.dtype == torch.float64
    # by hand: the heads read the trunk output z and the encoder output e (the gates): cut there
    e = torch.tanh(model.enc(x))
    z = model.trunk(e)
    e_cut, z_cut = e.detach().requires_grad_(), z.detach().requires_grad_()
    rows = []
    for t in range(3):
        h = z_cut * torch.sigmoid(model.gates[t](e_cut))
        if t == 0:
            h = h + model.only_task0
        loss = ((model.heads[t](h).squeeze(-1) - x[:, t]) ** 2).mean()
        gz, ge = torch.autograd.grad(loss, [z_cut, e_cut])
        rows.append(torch.cat([gz.reshape(-1), ge.reshape(-1)]).double())
    M = torch.stack(rows)
    torch.testing.assert_close(G, M @ M.T, rtol=1e-6, atol=1e-12)
    assert representation_gramian(model.losses(x) * 1.0, model.shared()) is None
