"""Preference conditioning for Pareto-front learning: input columns (COSMOS) or a hypernetwork.

Both wrap an ordinary `MTLModel` so that `forward(batch, pref)` answers for a preference vector
r (a point of the simplex):

- `InputConditioned` (COSMOS; Ruchte & Grabocka, ICDM 2021): r is appended to the dense inputs.
  Cheap, and many preferences can share one forward pass (one r per row), but r enters the
  network additively: a narrow shared layer cannot change *which* features it extracts, so on
  tabular models the learned front can collapse to one point.
- `HyperConditioned` (Pareto HyperNetwork; Navon, Shamsian, Chechik & Fetaya, "Learning the
  Pareto Front with Hypernetworks", ICLR 2021): r generates the network's weights,
  theta(r) = theta_0 + H e(r), where e is a small MLP of r (the paper's ray embedding) and H the
  linear heads (one per parameter tensor, `rank` columns each: the paper's per-layer heads with a
  narrow embedding, so the heads cost `rank` x the model's parameters instead of 100 x).
  theta_0 is the heads' bias: the model's own parameters. The preference acts multiplicatively,
  so it can rotate what each layer computes. Embedding tables are shared across preferences
  (the heads would multiply their size by `rank` for little gain).

Training (engine.cosmos) draws one r per batch and minimises sum_t r_t L_t (- lambda cos(r, L)).
"""

from __future__ import annotations

import threading
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from engine.models.base import MLP, MTLModel

#: prefix of the extra dense input columns that carry the preference (input conditioning)
PREF_PREFIX = "pref:"


def with_preference(feats: dict[str, torch.Tensor], pref: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch dict whose dense features carry the preference (T,) (or one per row, (B, T))."""
    n = len(next(iter(feats.values())))
    rows = pref.expand(n, -1) if pref.dim() == 1 else pref
    out = dict(feats)
    dense = feats.get("dense")
    out["dense"] = rows if dense is None else torch.cat([dense, rows.to(dense.dtype)], dim=1)
    return out


class InputConditioned(nn.Module):
    """COSMOS input conditioning: the model reads T extra dense columns `pref:<task>`."""

    #: several preferences can share one forward pass (a preference per row)
    packs_preferences: ClassVar[bool] = True

    def __init__(self, model: MTLModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], pref: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(with_preference(batch, pref))

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores (the model's own state dict: the layout of older runs)."""
        return self.model.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def conditioned_names(model: nn.Module) -> list[str]:
    """Names of the parameters a hypernetwork generates: all but embedding tables."""
    skip = {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, m in model.named_modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag)
    }
    return [n for n, _ in model.named_parameters() if n not in skip]


class HyperConditioned(nn.Module):
    """Pareto HyperNetwork (Navon et al., ICLR 2021): theta(r) = theta_0 + H e(r)."""

    packs_preferences: ClassVar[bool] = False

    def __init__(self, model: MTLModel, n_tasks: int, rank: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.model = model
        self.names = conditioned_names(model)
        self.embed = MLP(n_tasks, [hidden], out_dim=rank)
        own = dict(model.named_parameters())
        self.shapes = [own[n].shape for n in self.names]
        self.sizes = [own[n].numel() for n in self.names]
        # all heads in one (rank, P) matrix: one tensor for the optimiser, one product per step.
        # They start at zero: the untrained hypernetwork is the plain model at every preference.
        self.heads = nn.Parameter(torch.zeros(rank, sum(self.sizes), dtype=next(model.parameters()).dtype))
        # functional_call swaps the generated weights into the model for the pass: one pass at a
        # time (the dashboard evaluates one cached model from several sessions' threads)
        self._lock = threading.Lock()

    def head(self, name: str) -> torch.Tensor:
        """The (rank, *shape) head of one generated parameter (a view of `heads`)."""
        i = self.names.index(name)
        start = sum(self.sizes[:i])
        return self.heads[:, start : start + self.sizes[i]].reshape(-1, *self.shapes[i])

    def weights(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generated parameters at one preference (T,): name -> tensor."""
        if pref.dim() != 1:
            raise ValueError("a hypernetwork takes one preference per forward pass, shape (T,)")
        delta = self.embed(pref.to(self.heads.dtype)) @ self.heads  # (P,)
        own = dict(self.model.named_parameters())
        out: dict[str, torch.Tensor] = {}
        for n, d, shape in zip(self.names, delta.split(self.sizes), self.shapes, strict=True):
            out[n] = own[n] + d.view(shape)
        return out

    def forward(self, batch: dict[str, torch.Tensor], pref: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._lock:  # `weights` reads the model's own parameters: not while they are swapped
            return functional_call(self.model, self.weights(pref), (batch,), strict=False)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)


Conditioned = InputConditioned | HyperConditioned
