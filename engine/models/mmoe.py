"""MMoE, and the expert bank / softmax gate that PLE reuses.

Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task Learning
with Multi-gate Mixture-of-Experts", KDD 2018): experts f_e(x) shared by all tasks; each task k
has its own softmax gate g_k(x) = softmax(W_k x) and tower h_k; y_k = h_k(sum_e g_k,e(x) f_e(x)).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.shared_bottom import (
    HiddenSizes,
    encoder_params,
    head_output,
    hidden_label,
    input_label,
    make_towers,
)

#: prefix of the balancer-statistics names under which MMoE records its gate weights
GATE_STAT_PREFIX = "gate:"


class ExpertBank(nn.Module):
    """`n` MLP experts of the same shape reading one input; forward: (B, in) -> (B, n, D)."""

    def __init__(self, n: int, in_dim: int, hidden: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.experts = nn.ModuleList(MLP(in_dim, hidden, dropout=dropout) for _ in range(n))
        self.out_dim = hidden[-1]

    def __len__(self) -> int:
        return len(self.experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([e(x) for e in self.experts], dim=1)


def mix(gate: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum of expert outputs: (B, E) x (B, E, D) -> (B, D).

    A broadcast multiply and a sum over E: on a CPU about 3x faster than the equivalent
    `bmm` of B (1 x E) @ (E x D) products, forward and backward."""
    return (gate.unsqueeze(-1) * experts).sum(1)


class MMoEParams(ModelParams):
    n_experts: int = Field(4, ge=1, le=32, description="number of shared experts")
    expert_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each expert MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )


class MMoE(MTLModel):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018)."""

    name: ClassVar[str] = "mmoe"
    description: ClassVar[str] = (
        "Shared experts; each task has its own gate choosing how much of each expert it uses."
    )
    Params: ClassVar[type[ModelParams]] = MMoEParams
    params: MMoEParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: MMoEParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        d = self.encoder.out_dim
        self.experts = ExpertBank(params.n_experts, d, params.expert_hidden, params.dropout)
        self.gates = nn.ModuleList(nn.Linear(d, params.n_experts) for _ in self.tasks)
        self.towers = make_towers(self.experts.out_dim, self.tasks, params.tower_hidden, params.dropout)
        #: gate probabilities of the last forward pass, task -> (B, n_experts), detached.
        self.last_gates: dict[str, torch.Tensor] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        expert_out = self.experts(x)
        outputs: dict[str, torch.Tensor] = {}
        gates: dict[str, torch.Tensor] = {}
        for t, gate, tower in zip(self.tasks, self.gates, self.towers, strict=True):
            g = torch.softmax(gate(x), dim=-1)
            gates[t.name] = g.detach()
            outputs[t.name] = head_output(tower(mix(g, expert_out)), t)
        self.last_gates = gates
        return outputs

    @torch.no_grad()
    def gate_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's gate probabilities over the experts, task -> (B, n_experts); rows sum to 1."""
        x = self.encoder(batch)
        return {
            t.name: torch.softmax(gate(x), dim=-1) for t, gate in zip(self.tasks, self.gates, strict=True)
        }

    def internals(self) -> dict[str, float]:
        """Mean gate weight of every (task, expert) over the last batch, named
        `gate:<task>:<expert index>` (which experts each task uses, over training)."""
        return {
            f"{GATE_STAT_PREFIX}{t}:{e}": float(v)
            for t, g in self.last_gates.items()
            for e, v in enumerate(g.float().mean(0).tolist())
        }

    def gate_experts(self) -> dict[str, list[str]]:
        """Gate name (as in `last_gates`) -> the expert block names of its columns, in order."""
        return {t: [f"expert_{i}" for i in range(len(self.experts))] for t in self.task_names}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        if len(self.tasks) < 2:
            return {}
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for i, e in enumerate(self.experts.experts):
            blocks[f"expert_{i}"] = list(e.parameters())
        return {k: v for k, v in blocks.items() if v}

    def diagram(self) -> dict[str, list]:
        p = self.params
        nodes: list[tuple[str, str, str]] = [
            ("in", input_label(self.features), "input"),
            ("embedding", f"embeddings (dim {p.embed_dim})", "shared"),
        ]
        edges: list[tuple[str, str]] = [("in", "embedding")]
        experts = [f"expert_{i}" for i in range(p.n_experts)]
        for i, e in enumerate(experts):
            nodes.append((e, f"expert {i} (MLP {hidden_label(p.expert_hidden)})", "expert"))
            edges.append(("embedding", e))
        for t in self.task_names:
            nodes += [
                (f"gate_{t}", f"gate {t} (softmax over {p.n_experts} experts)", "gate"),
                (f"tower_{t}", f"tower {t} ({hidden_label(p.tower_hidden)})", "task"),
                (f"out_{t}", t, "output"),
            ]
            edges.append(("embedding", f"gate_{t}"))
            edges += [(e, f"gate_{t}") for e in experts]
            edges += [(f"gate_{t}", f"tower_{t}"), (f"tower_{t}", f"out_{t}")]
        return {"nodes": nodes, "edges": edges}
