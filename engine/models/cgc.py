"""CGC: Customized Gate Control, the single-level building block of PLE.

Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations", RecSys 2020, section 4.2. Each task k has its own experts E_k and
all tasks share experts E_s; task k's gate g_k(x) = softmax(W_k x) mixes [E_k(x), E_s(x)] only
(no shared gate, no second level) and feeds tower k: y_k = t_k(g_k(x) . [E_k(x); E_s(x)]).
PLE (`ple`, n_levels=1 is the same network) stacks such levels with a shared gate between them.

Sharing by gradient flow: embeddings and the shared experts. Task experts, task gates and towers
reach their own task only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import FeatureEncoder, ModelParams, MTLModel
from engine.models.blocks import Diagram, only_shared
from engine.models.ple import CGCLevel
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output, hidden_label, make_towers


class CGCParams(ModelParams):
    n_shared_experts: int = Field(2, ge=1, le=16, description="experts shared by all tasks")
    n_task_experts: int = Field(1, ge=1, le=16, description="private experts per task")
    expert_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each expert MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )


class CGC(MTLModel):
    """Customized Gate Control (Tang et al., RecSys 2020): private + shared experts, task gates."""

    name: ClassVar[str] = "cgc"
    description: ClassVar[str] = (
        "Each task has private experts plus experts shared by all; its own gate mixes the two (CGC)."
    )
    Params: ClassVar[type[ModelParams]] = CGCParams
    params: CGCParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: CGCParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        self.level = CGCLevel(
            self.encoder.out_dim,
            len(self.tasks),
            params.n_task_experts,
            params.n_shared_experts,
            params.expert_hidden,
            params.dropout,
            shared_gate=False,
        )
        self.towers = make_towers(self.level.out_dim, self.tasks, params.tower_hidden, params.dropout)
        #: gate probabilities of the last forward pass, task -> (B, n_task + n_shared), detached.
        self.last_gates: dict[str, torch.Tensor] = {}

    def _run(self, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        x = self.encoder(batch)
        task_h, _, task_g, _ = self.level([x] * len(self.tasks), x)
        return task_h, dict(zip(self.task_names, task_g, strict=True))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_h, gates = self._run(batch)
        self.last_gates = {t: g.detach() for t, g in gates.items()}
        return {
            t.name: head_output(tower(h), t)
            for t, tower, h in zip(self.tasks, self.towers, task_h, strict=True)
        }

    @torch.no_grad()
    def gate_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task -> (B, n_task_experts + n_shared_experts) gate probabilities; rows sum to 1."""
        return self._run(batch)[1]

    def _own(self, t: str) -> list[str]:
        return [f"task_{t}_expert_{i}" for i in range(self.params.n_task_experts)]

    def _shared(self) -> list[str]:
        return [f"shared_expert_{i}" for i in range(self.params.n_shared_experts)]

    def gate_experts(self) -> dict[str, list[str]]:
        """Gate (task) -> the expert names of its columns: its own experts, then the shared ones."""
        return {t: self._own(t) + self._shared() for t in self.task_names}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for name, e in zip(self._shared(), self.level.shared_experts.experts, strict=True):
            blocks[name] = list(e.parameters())
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        mlp = hidden_label(p.expert_hidden)
        shared = [
            g.node(e, f"shared expert {i} (MLP {mlp})", "expert", "embedding")
            for i, e in enumerate(self._shared())
        ]
        for t in self.task_names:
            own = [
                g.node(e, f"{t} expert {i} (MLP {mlp})", "expert", "embedding")
                for i, e in enumerate(self._own(t))
            ]
            g.node(
                f"gate_{t}",
                f"gate {t} (softmax over its {len(own)} + {len(shared)} shared experts)",
                "gate",
                "embedding",
                *own,
                *shared,
            )
        g.towers({t: f"gate_{t}" for t in self.task_names}, p.tower_hidden)
        return g.as_dict()
