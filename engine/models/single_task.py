"""Single-task baseline: one independent network per task, trained side by side.

It defines negative transfer: a multi-task model whose task does worse than this baseline has
paid for sharing (the "delta-m" of LibMTL; Caruana, "Multitask Learning", 1997).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.shared_bottom import HiddenSizes, head_output, hidden_label, input_label


class SingleTaskParams(ModelParams):
    hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each task's own MLP"
    )


class SingleTask(MTLModel):
    """One FeatureEncoder + MLP per task, nothing shared (the baseline of Caruana 1997)."""

    name: ClassVar[str] = "single-task"
    description: ClassVar[str] = (
        "A separate network per task, nothing shared: the baseline that reveals negative transfer."
    )
    Params: ClassVar[type[ModelParams]] = SingleTaskParams
    single_task: ClassVar[bool] = True
    params: SingleTaskParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: SingleTaskParams) -> None:
        super().__init__(features, tasks, params)
        self.encoders = nn.ModuleList(FeatureEncoder(features, params.embed_dim) for _ in self.tasks)
        self.nets = nn.ModuleList(
            MLP(enc.out_dim, params.hidden, out_dim=t.output_dim, dropout=params.dropout)
            for enc, t in zip(self.encoders, self.tasks, strict=True)
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            t.name: head_output(net(enc(batch)), t)
            for t, enc, net in zip(self.tasks, self.encoders, self.nets, strict=True)
        }

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        return {}

    def diagram(self) -> dict[str, list]:
        p = self.params
        nodes: list[tuple[str, str, str]] = [("in", input_label(self.features), "input")]
        edges: list[tuple[str, str]] = []
        net = f"own embeddings (dim {p.embed_dim}) + MLP {hidden_label(p.hidden)}"
        for t in self.task_names:
            nodes += [
                (f"net_{t}", f"{t}: {net}", "task"),
                (f"out_{t}", t, "output"),
            ]
            edges += [("in", f"net_{t}"), (f"net_{t}", f"out_{t}")]
        return {"nodes": nodes, "edges": edges}
