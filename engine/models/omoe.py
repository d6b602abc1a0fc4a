"""OMoE: One-gate Mixture-of-Experts.

The one-gate baseline of Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts" (KDD 2018), after the mixture of experts of Jacobs et al. (1991):
experts f_e(x) and ONE softmax gate g(x) = softmax(W x) shared by every task;
y_k = h_k(sum_e g_e(x) f_e(x)). All tasks see the same mixture, so the gate cannot specialise by
task; MMoE gives each task its own gate instead.

Sharing by gradient flow: embeddings, every expert and the gate; only the towers are private.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import FeatureEncoder, ModelParams, MTLModel
from engine.models.blocks import Diagram, only_shared
from engine.models.mmoe import ExpertBank, mix
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output, hidden_label, make_towers


class OMoEParams(ModelParams):
    n_experts: int = Field(4, ge=2, le=32, description="number of shared experts (a gate needs two)")
    expert_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each expert MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )


class OMoE(MTLModel):
    """One-gate Mixture-of-Experts (the OMoE baseline of Ma et al., KDD 2018)."""

    name: ClassVar[str] = "omoe"
    description: ClassVar[str] = (
        "Shared experts mixed by a single gate that all tasks share, then a tower per task."
    )
    Params: ClassVar[type[ModelParams]] = OMoEParams
    params: OMoEParams

    #: name of the one gate in `last_gates` / `gate_weights` / `gate_experts`
    GATE: ClassVar[str] = "shared"

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: OMoEParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        d = self.encoder.out_dim
        self.experts = ExpertBank(params.n_experts, d, params.expert_hidden, params.dropout)
        self.gate = nn.Linear(d, params.n_experts)
        self.towers = make_towers(self.experts.out_dim, self.tasks, params.tower_hidden, params.dropout)
        #: gate probabilities of the last forward pass, {"shared": (B, n_experts)}, detached.
        self.last_gates: dict[str, torch.Tensor] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        g = torch.softmax(self.gate(x), dim=-1)
        self.last_gates = {self.GATE: g.detach()}
        h = mix(g, self.experts(x))
        return {t.name: head_output(tower(h), t) for t, tower in zip(self.tasks, self.towers, strict=True)}

    @torch.no_grad()
    def gate_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"shared": (B, n_experts)}: the one gate's probabilities; rows sum to 1."""
        return {self.GATE: torch.softmax(self.gate(self.encoder(batch)), dim=-1)}

    def gate_experts(self) -> dict[str, list[str]]:
        return {self.GATE: [f"expert_{i}" for i in range(len(self.experts))]}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for i, e in enumerate(self.experts.experts):
            blocks[f"expert_{i}"] = list(e.parameters())
        blocks["gate"] = list(self.gate.parameters())
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        experts = [
            g.node(f"expert_{i}", f"expert {i} (MLP {hidden_label(p.expert_hidden)})", "expert", "embedding")
            for i in range(p.n_experts)
        ]
        g.node(
            "gate",
            f"one gate shared by all tasks (softmax over {p.n_experts} experts)",
            "gate",
            "embedding",
            *experts,
        )
        g.towers(dict.fromkeys(self.task_names, "gate"), p.tower_hidden)
        return g.as_dict()
