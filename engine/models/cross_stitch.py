"""Cross-stitch networks: one column per task, mixed after every layer by learned weights.

Misra, Shrivastava, Gupta and Hebert, "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
Each task has its own column (an MLP here, over shared embeddings). After layer l, a cross-stitch
unit with a learned T x T matrix alpha^l replaces every column's activation by a linear
combination of all columns' activations: x~_i^l = sum_j alpha^l_ij x_j^l, and column i's next
layer (or tower i, after the last layer) reads x~_i^l. alpha is initialised near the identity as
in the paper (alpha_S = 0.9 on the diagonal, the remaining 0.1 spread over the other columns, so
rows sum to 1): training starts close to independent columns and learns how much to share.
The paper also trains the stitch units with a learning rate scaled up by orders of magnitude;
Seesaw's trainer has one learning rate for all parameters, so stitches learn at the base rate.

Each row of alpha^l is its own parameter (`stitches[l][i]` = row i), because rows differ in whom
they reach. Block names count layers from 1 (`column_<task>_layer_1`, `stitch_1`, ...).
Sharing by gradient flow (with non-zero off-diagonal weights): embeddings; every column layer
(its output reaches every task through the stitches); every row of every stitch but the last
(row i feeds column i's next layer, which the following stitch spreads to all tasks).
The last stitch's row i and tower i reach task i only. `self_weight` lies strictly between 0 and
1 so that this holds from the first step: an exact identity stitch would make the columns
independent (only the embeddings shared), which the tests use to check the wiring.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.blocks import Diagram, only_shared
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output, make_towers


class CrossStitchParams(ModelParams):
    hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32],
        description="layer widths of each task's column; a stitch follows each layer",
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )
    self_weight: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="initial diagonal weight of the stitches; the rest of each row goes to the other columns",
    )


class CrossStitch(MTLModel):
    """Cross-stitch networks (Misra et al., CVPR 2016): task columns mixed by learned T x T units."""

    name: ClassVar[str] = "cross-stitch"
    description: ClassVar[str] = (
        "One network column per task; after each layer a learned matrix mixes the columns (cross-stitch)."
    )
    Params: ClassVar[type[ModelParams]] = CrossStitchParams
    params: CrossStitchParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: CrossStitchParams) -> None:
        super().__init__(features, tasks, params)
        T = len(self.tasks)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        widths = [self.encoder.out_dim, *params.hidden]
        #: columns[i][l]: task i's layer l
        self.columns = nn.ModuleList(
            nn.ModuleList(
                MLP(widths[l], [widths[l + 1]], dropout=params.dropout) for l in range(len(params.hidden))
            )
            for _ in self.tasks
        )
        init = self.initial_stitch(T, params.self_weight)
        #: stitches[l][i]: row i of the stitch after layer l, (T,)
        self.stitches = nn.ModuleList(
            nn.ParameterList(nn.Parameter(init[i].clone()) for i in range(T)) for _ in params.hidden
        )
        self.towers = make_towers(params.hidden[-1], self.tasks, params.tower_hidden, params.dropout)

    @staticmethod
    def initial_stitch(n_tasks: int, self_weight: float) -> torch.Tensor:
        """(T, T): self_weight on the diagonal, the rest of each row spread evenly (rows sum to 1)."""
        if n_tasks == 1:
            return torch.ones(1, 1)
        other = (1.0 - self_weight) / (n_tasks - 1)
        return torch.full((n_tasks, n_tasks), other) + (self_weight - other) * torch.eye(n_tasks)

    def stitch_matrices(self) -> list[torch.Tensor]:
        """Current alpha^l per layer, each (T, T) with row i = how task i mixes the columns; detached."""
        return [torch.stack([row.detach() for row in rows]) for rows in self.stitches]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        hs: list[torch.Tensor] = [x] * len(self.tasks)
        for l, rows in enumerate(self.stitches):
            outs = torch.stack(
                [col[l](h) for col, h in zip(self.columns, hs, strict=True)], dim=0
            )  # (T, B, D)
            alpha = torch.stack(list(rows))  # (T, T)
            hs = list(torch.einsum("ij,jbd->ibd", alpha, outs).unbind(0))
        return {
            t.name: head_output(tower(h), t) for t, tower, h in zip(self.tasks, self.towers, hs, strict=True)
        }

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for t, col in zip(self.task_names, self.columns, strict=True):
            for l, layer in enumerate(col, start=1):
                blocks[f"column_{t}_layer_{l}"] = list(layer.parameters())
        for l, rows in enumerate(list(self.stitches)[:-1], start=1):
            blocks[f"stitch_{l}"] = list(rows)
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        T = len(self.tasks)
        src = dict.fromkeys(self.task_names, "embedding")
        for l, width in enumerate(p.hidden, start=1):
            layer_ids = [
                g.node(f"column_{t}_layer_{l}", f"{t} column, layer {l} ({width} units)", "task", src[t])
                for t in self.task_names
            ]
            stitch = g.node(
                f"stitch_{l}", f"cross-stitch {l} ({T}x{T} mixing, init ~identity)", "shared", *layer_ids
            )
            src = dict.fromkeys(self.task_names, stitch)
        g.towers(src, p.tower_hidden)
        return g.as_dict()
