"""Small pieces shared by the sharing-zoo architectures (hierarchical, OMoE, CGC, DSelect-k,
cross-stitch, gating-enhanced, MSSM).

- `Diagram`: builds the `MTLModel.diagram()` structure with the usual input/embedding head and
  per-task tower/output tail, so each model only draws its middle.
- `only_shared`: the `shared_blocks()` epilogue (nothing is shared with one task; no empty block).
- `field_index`: which input field every column of the `FeatureEncoder` output belongs to, for
  per-field gates and masks.
- `PenalisedModel`: a model whose forward also yields per-task penalty terms (regularisers of a
  task's own gate or mask parameters) that `task_losses` adds to that task's loss while training.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import ModelParams, MTLModel
from engine.models.shared_bottom import hidden_label, input_label


class Diagram:
    """Accumulates (id, label, kind) nodes and (src, dst) edges for `MTLModel.diagram()`."""

    def __init__(self, features: FeatureSpec, embed_dim: int) -> None:
        self.nodes: list[tuple[str, str, str]] = [
            ("in", input_label(features), "input"),
            ("embedding", f"embeddings (dim {embed_dim})", "shared"),
        ]
        self.edges: list[tuple[str, str]] = [("in", "embedding")]

    def node(self, node_id: str, label: str, kind: str, *sources: str) -> str:
        """Add a node fed by `sources`; returns its id."""
        self.nodes.append((node_id, label, kind))
        self.edges += [(s, node_id) for s in sources]
        return node_id

    def edge(self, src: str, dst: str) -> None:
        self.edges.append((src, dst))

    def towers(self, sources: dict[str, str], tower_hidden: list[int]) -> None:
        """Tower and output node per task; `sources[task]` feeds that task's tower."""
        for t, src in sources.items():
            self.node(f"tower_{t}", f"tower {t} ({hidden_label(tower_hidden)})", "task", src)
            self.node(f"out_{t}", t, "output", f"tower_{t}")

    def as_dict(self) -> dict[str, list]:
        return {"nodes": list(self.nodes), "edges": list(self.edges)}


def only_shared(
    tasks: list[TaskSpec], blocks: dict[str, list[nn.Parameter]]
) -> dict[str, list[nn.Parameter]]:
    """`blocks` without empty ones; nothing at all when there is a single task."""
    if len(tasks) < 2:
        return {}
    return {k: v for k, v in blocks.items() if v}


def field_index(features: FeatureSpec, embed_dim: int) -> torch.Tensor:
    """(encoder.out_dim,) int64: the field of every `FeatureEncoder` output column. Dense column
    j is field j; categorical column i (its `embed_dim` columns) is field n_dense + i."""
    dense = torch.arange(features.n_dense)
    cat = features.n_dense + torch.arange(features.n_cat).repeat_interleave(embed_dim)
    return torch.cat([dense, cat]).long()


def n_fields(features: FeatureSpec) -> int:
    return features.n_dense + features.n_cat


class PenalisedModel(MTLModel):
    """Base for models with per-task regularisers computed in `forward` (a DSelect-k gate's
    entropy, an MSSM task's mask density). `forward` calls `_keep_penalties(outputs, {task: term})`;
    `task_losses` on those same outputs (identity, not equality: the terms belong to that forward
    pass) adds each term to its task's loss. Only training-mode passes keep terms, so validation
    and test losses stay the plain task losses; training-loss rows include them. A term must
    depend only on that task's own parameters (and shared inputs), so it adds no sharing."""

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: ModelParams) -> None:
        super().__init__(features, tasks, params)
        self._penalties: dict[str, torch.Tensor] = {}
        self._penalised_outputs: dict[str, torch.Tensor] | None = None

    def _keep_penalties(self, outputs: dict[str, torch.Tensor], penalties: dict[str, torch.Tensor]) -> None:
        if self.training and penalties:
            self._penalties, self._penalised_outputs = penalties, outputs
        else:
            self._penalties, self._penalised_outputs = {}, None

    def task_losses(
        self,
        outputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        losses = super().task_losses(outputs, targets, masks)
        if self._penalised_outputs is outputs:
            for t, term in self._penalties.items():
                losses[t] = losses[t] + term
        return losses
