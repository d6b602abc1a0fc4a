"""MSSM: Multiple-level Sparse Sharing Model, with learned relaxed per-task masks.

Ding, Dong, He, Cheng, Fu, Huan, Li, Yan, Zhang, Zhang and Mo, "MSSM: A Multiple-level Sparse
Sharing Model for Efficient Multi-Task Learning", SIGIR 2021 (Ant Group). Its two levels:
a field-level sparse connection module (each task learns which input feature fields it uses)
and a cell-level sparse sharing module (learned coding variables choose which cells of the
shared layers each task routes through). The short paper leaves the relaxation open; this one:

- every task k has one mask value per input field and one per cell of every shared layer (a
  layer's units are split into `n_cells` contiguous cells; n_cells >= width means one per unit);
- task k runs the shared stack on its own masked input and masks each layer's cells:
  x_k = x * m_k^field,  h_k^l = m_k^l * relu(W^l h_k^(l-1) + b^l),  y_k = tower_k(h_k^L);
- a mask is the deterministic hard-concrete gate of Louizos, Welling and Kingma ("Learning
  Sparse Neural Networks through L0 Regularization", ICLR 2018) without its noise:
  m = clamp(sigmoid(a) * (zeta - gamma) + gamma, 0, 1) with zeta = 1.1, gamma = -0.1. It lies in
  [0, 1] and, unlike a plain sigmoid, reaches exactly 0 (the task stops using that field or
  cell: sparse sharing) and exactly 1; at either end it stops learning;
- all masks start at `mask_init` (identical for every task: they diverge through their tasks'
  gradients) and `sparsity` * (mean of task k's masks) is added to task k's training loss.

Sharing by gradient flow: embeddings and the shared layers (structurally: every task routes
through every layer; a cell all but one task have masked to exactly 0 becomes private, which the
per-block gradient statistics then show). Masks and towers are per task. Layers count from 1
in block and mask names (`layer_1` is the first shared layer).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams
from engine.models.blocks import Diagram, PenalisedModel, field_index, n_fields, only_shared
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output, make_towers

ZETA, GAMMA = 1.1, -0.1


def relaxed_mask(logits: torch.Tensor) -> torch.Tensor:
    """Deterministic hard-concrete mask in [0, 1] (exact 0 and 1 reachable)."""
    return (torch.sigmoid(logits) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def mask_logit(value: float) -> float:
    """The logit whose `relaxed_mask` is `value` (0 < value < 1)."""
    s = (value - GAMMA) / (ZETA - GAMMA)
    return math.log(s / (1.0 - s))


def cell_index(width: int, n_cells: int) -> torch.Tensor:
    """(width,) int64: the cell of every unit, `min(n_cells, width)` contiguous near-equal cells."""
    c = min(n_cells, width)
    return (torch.arange(width) * c // width).long()


class MSSMParams(ModelParams):
    hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="widths of the shared layers, bottom first"
    )
    n_cells: int = Field(
        8,
        ge=1,
        le=4096,
        description="cells per shared layer, each with one mask value per task (>= width: per unit)",
    )
    field_masks: bool = Field(True, description="learn a per-task mask over the input fields (field level)")
    mask_init: float = Field(0.9, gt=0.0, lt=1.0, description="initial value of every mask")
    sparsity: float = Field(
        0.01, ge=0.0, le=10.0, description="weight of the mean mask value added to each task's training loss"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )


class MSSM(PenalisedModel):
    """Multiple-level Sparse Sharing Model (Ding et al., SIGIR 2021): per-task relaxed masks over
    input fields and over the cells of shared layers."""

    name: ClassVar[str] = "mssm"
    description: ClassVar[str] = (
        "Shared layers; each task learns masks choosing which input fields and shared units it uses."
    )
    Params: ClassVar[type[ModelParams]] = MSSMParams
    params: MSSMParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: MSSMParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        self.register_buffer("fields", field_index(features, params.embed_dim), persistent=False)
        widths = [self.encoder.out_dim, *params.hidden]
        self.layers = nn.ModuleList(
            MLP(widths[l], [widths[l + 1]], dropout=params.dropout) for l in range(len(params.hidden))
        )
        cells = [cell_index(w, params.n_cells) for w in params.hidden]
        for l, idx in enumerate(cells):
            self.register_buffer(f"cells_{l}", idx, persistent=False)
        a0 = mask_logit(params.mask_init)
        sizes = ([n_fields(features)] if params.field_masks else []) + [int(c.max()) + 1 for c in cells]
        #: mask_logits[k]: task k's logits, fields first (if field_masks), then one per layer
        self.mask_logits = nn.ModuleList(
            nn.ParameterList(nn.Parameter(torch.full((n,), a0)) for n in sizes) for _ in self.tasks
        )
        self.towers = make_towers(params.hidden[-1], self.tasks, params.tower_hidden, params.dropout)

    def _cell_idx(self, l: int) -> torch.Tensor:
        idx = getattr(self, f"cells_{l}")
        assert isinstance(idx, torch.Tensor)
        return idx

    def _task_masks(self, k: int) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        logits = list(self.mask_logits[k])
        field = relaxed_mask(logits.pop(0)) if self.params.field_masks else None
        return field, [relaxed_mask(a) for a in logits]

    @torch.no_grad()
    def masks(self) -> dict[str, dict[str, torch.Tensor]]:
        """Task -> {"fields": (n_fields,) if field masks, "layer_l": (cells of layer l,)} with l
        1-based (layer_1 is the first shared layer), values in [0, 1]."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for k, t in enumerate(self.task_names):
            field, cells = self._task_masks(k)
            out[t] = {f"layer_{l}": m for l, m in enumerate(cells, start=1)}
            if field is not None:
                out[t] = {"fields": field, **out[t]}
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        outputs: dict[str, torch.Tensor] = {}
        penalties: dict[str, torch.Tensor] = {}
        for k, (t, tower) in enumerate(zip(self.tasks, self.towers, strict=True)):
            field, cells = self._task_masks(k)
            h = x if field is None else x * field[self.fields]
            for l, (layer, m) in enumerate(zip(self.layers, cells, strict=True)):
                h = layer(h) * m[self._cell_idx(l)]
            outputs[t.name] = head_output(tower(h), t)
            if self.training and self.params.sparsity > 0:
                every = torch.cat(([field] if field is not None else []) + cells)
                penalties[t.name] = self.params.sparsity * every.mean()
        self._keep_penalties(outputs, penalties)
        return outputs

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for l, layer in enumerate(self.layers, start=1):
            blocks[f"layer_{l}"] = list(layer.parameters())
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        src = dict.fromkeys(self.task_names, "embedding")
        if p.field_masks:
            src = {
                t: g.node(
                    f"field_mask_{t}",
                    f"field mask {t} ({n_fields(self.features)} fields)",
                    "gate",
                    "embedding",
                )
                for t in self.task_names
            }
        for l, width in enumerate(p.hidden, start=1):
            layer = g.node(
                f"layer_{l}",
                f"shared layer {l} ({width} units, {min(p.n_cells, width)} cells)",
                "shared",
                *dict.fromkeys(src.values()),
            )
            src = {
                t: g.node(f"cell_mask_{t}_{l}", f"cell mask {t}, layer {l}", "gate", layer)
                for t in self.task_names
            }
        g.towers(src, p.tower_hidden)
        return g.as_dict()
