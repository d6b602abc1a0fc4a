"""Hierarchical sharing: one shared stack of layers, each task reading out at its own depth.

Tasks sit at different depths of one network: a task of depth d feeds its tower from the output
of shared layer d, so layers 1..d serve it and deeper layers never see its loss. This is the
"hierarchical" family of the survey (seed 000), whose recommender example is MFH (Liu et al.,
"Multi-Faceted Hierarchical Multi-Task Learning for Recommender Systems", CIKM 2022). MFH nests
task groups in a tree of shared and group-specific sub-networks ("switchers") over several task
dimensions; what is implemented here is the single-path special case that the readout-at-depth
idea reduces to (Søgaard & Goldberg, "Deep multi-task learning with low level tasks supervised at
lower layers", ACL 2016), not MFH's full tree.

Sharing by gradient flow: the embeddings, and shared layer l exactly when at least two tasks
have depth >= l. A layer only the deepest task reaches is that task's own.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.blocks import Diagram, only_shared
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output


def spread_depths(n_tasks: int, n_layers: int) -> list[int]:
    """Default depths: tasks spread evenly over 1..n_layers, the last task at the top
    (3 tasks on 3 layers: [1, 2, 3]; 2 tasks on 3 layers: [2, 3])."""
    return [max(1, math.ceil((k + 1) * n_layers / n_tasks)) for k in range(n_tasks)]


class HierarchicalParams(ModelParams):
    hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 64, 32], description="widths of the shared stack's layers, bottom first"
    )
    task_depths: list[Annotated[int, Field(ge=1, le=6)]] | None = Field(
        None,
        description="per task, in the run's task order: the shared layer its tower reads "
        "(1 = first layer); default spreads the tasks over the depths, the last task on top",
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )

    @model_validator(mode="after")
    def _depths_within_stack(self) -> HierarchicalParams:
        if self.task_depths is not None:
            too_deep = [d for d in self.task_depths if d > len(self.hidden)]
            if too_deep:
                raise ValueError(
                    f"task_depths {self.task_depths} go deeper than the {len(self.hidden)} layers of hidden"
                )
        return self


class Hierarchical(MTLModel):
    """Hierarchical sharing, tasks read out at different depths of one shared stack (the
    hierarchical family of MFH, Liu et al., CIKM 2022; Søgaard & Goldberg, ACL 2016)."""

    name: ClassVar[str] = "hierarchical"
    description: ClassVar[str] = (
        "One shared stack of layers; simpler tasks read out low, harder ones higher up (hierarchical)."
    )
    Params: ClassVar[type[ModelParams]] = HierarchicalParams
    params: HierarchicalParams

    @classmethod
    def check_tasks(cls, params: HierarchicalParams, tasks: list[TaskSpec]) -> None:
        depths = params.task_depths
        if depths is None:
            return
        if len(depths) != len(tasks):
            raise ValueError(
                f"hierarchical: task_depths has {len(depths)} entries for {len(tasks)} tasks "
                f"({', '.join(t.name for t in tasks)}); give one depth per task, in task order"
            )
        if max(depths) != len(params.hidden):
            raise ValueError(
                f"hierarchical: no task reads the top layer ({len(params.hidden)}) of hidden "
                f"{params.hidden} with task_depths {depths}; remove the unused layers"
            )

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: HierarchicalParams) -> None:
        super().__init__(features, tasks, params)
        self.check_tasks(params, self.tasks)
        self.depths: list[int] = list(
            params.task_depths or spread_depths(len(self.tasks), len(params.hidden))
        )
        self.encoder = FeatureEncoder(features, params.embed_dim)
        layers: list[MLP] = []
        d = self.encoder.out_dim
        for h in params.hidden:
            layers.append(MLP(d, [h], dropout=params.dropout))
            d = h
        self.layers = nn.ModuleList(layers)
        self.towers = nn.ModuleList(
            MLP(params.hidden[depth - 1], params.tower_hidden, out_dim=t.output_dim, dropout=params.dropout)
            for t, depth in zip(self.tasks, self.depths, strict=True)
        )

    def task_depth(self) -> dict[str, int]:
        """Task -> the shared layer (1-based) its tower reads."""
        return dict(zip(self.task_names, self.depths, strict=True))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encoder(batch)
        by_depth: list[torch.Tensor] = []
        for layer in self.layers:
            h = layer(h)
            by_depth.append(h)
        return {
            t.name: head_output(tower(by_depth[depth - 1]), t)
            for t, tower, depth in zip(self.tasks, self.towers, self.depths, strict=True)
        }

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for level, layer in enumerate(self.layers, start=1):
            if sum(d >= level for d in self.depths) >= 2:
                blocks[f"layer_{level}"] = list(layer.parameters())
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        src = "embedding"
        for level, width in enumerate(p.hidden, start=1):
            readers = [t for t, d in zip(self.task_names, self.depths, strict=True) if d >= level]
            kind = "shared" if len(readers) >= 2 else "task"
            src = g.node(
                f"layer_{level}", f"layer {level} ({width} units; serves {', '.join(readers)})", kind, src
            )
        g.towers({t: f"layer_{d}" for t, d in zip(self.task_names, self.depths, strict=True)}, p.tower_hidden)
        return g.as_dict()
