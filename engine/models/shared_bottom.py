"""Shared-Bottom, and the small pieces the other architectures reuse (hidden-size type, towers).

Shared-Bottom (Caruana, "Multitask Learning", Machine Learning 1997; the hard-sharing baseline of
Ma et al., KDD 2018): one encoder and one bottom MLP shared by every task, one tower per task.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel

#: Widths of an MLP's hidden layers: 1 to 6 layers, each 1 to 4096 units.
HiddenSizes = Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=6)]


def hidden_label(hidden: list[int]) -> str:
    """'64-32' for the diagram labels."""
    return "-".join(str(h) for h in hidden)


def make_towers(in_dim: int, tasks: list[TaskSpec], hidden: list[int], dropout: float) -> nn.ModuleList:
    """One MLP per task (in task order) ending in a linear layer of the task's output size."""
    return nn.ModuleList(MLP(in_dim, hidden, out_dim=t.output_dim, dropout=dropout) for t in tasks)


def head_output(out: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """(B, 1) -> (B,) for binary and regression tasks; (B, C) stays for multiclass."""
    return out.squeeze(-1) if task.output_dim == 1 else out


def encoder_params(encoder: FeatureEncoder) -> list[nn.Parameter]:
    return [p for p in encoder.parameters() if p.requires_grad]


def input_label(features: FeatureSpec) -> str:
    return f"features ({features.n_dense} dense, {features.n_cat} categorical)"


class SharedBottomParams(ModelParams):
    bottom_hidden: HiddenSizes = Field(
        default_factory=lambda: [128, 64], description="hidden sizes of the shared bottom MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [32], description="hidden sizes of each task's tower"
    )


class SharedBottom(MTLModel):
    """Hard parameter sharing (Caruana 1997): shared encoder + bottom MLP, one tower per task."""

    name: ClassVar[str] = "shared-bottom"
    description: ClassVar[str] = (
        "One shared network for all tasks, with a small private tower per task (hard sharing)."
    )
    Params: ClassVar[type[ModelParams]] = SharedBottomParams
    params: SharedBottomParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: SharedBottomParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        self.bottom = MLP(self.encoder.out_dim, params.bottom_hidden, dropout=params.dropout)
        self.towers = make_towers(self.bottom.out_dim, self.tasks, params.tower_hidden, params.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.bottom(self.encoder(batch))
        return {t.name: head_output(tower(h), t) for t, tower in zip(self.tasks, self.towers, strict=True)}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        if len(self.tasks) < 2:
            return {}
        blocks = {"embedding": encoder_params(self.encoder), "bottom": list(self.bottom.parameters())}
        return {k: v for k, v in blocks.items() if v}

    def diagram(self) -> dict[str, list]:
        p = self.params
        nodes: list[tuple[str, str, str]] = [
            ("in", input_label(self.features), "input"),
            ("embedding", f"embeddings (dim {p.embed_dim})", "shared"),
            ("bottom", f"shared bottom MLP {hidden_label(p.bottom_hidden)}", "shared"),
        ]
        edges: list[tuple[str, str]] = [("in", "embedding"), ("embedding", "bottom")]
        for t in self.task_names:
            nodes += [
                (f"tower_{t}", f"tower {t} ({hidden_label(p.tower_hidden)})", "task"),
                (f"out_{t}", t, "output"),
            ]
            edges += [("bottom", f"tower_{t}"), (f"tower_{t}", f"out_{t}")]
        return {"nodes": nodes, "edges": edges}
