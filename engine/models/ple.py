"""PLE: Progressive Layered Extraction, stacked CGC levels.

Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations", RecSys 2020. One CGC (Customized Gate Control) level holds
task-specific experts per task and shared experts. Task k's gate (read from task k's input)
mixes task k's experts and the shared experts into task k's output. Every level but the last
also has a shared gate (read from the shared input) mixing ALL experts of the level into the
shared output. Level j+1's task-k experts and gate read task k's output of level j; its shared
experts and shared gate read the shared output. Level 0 reads the encoded features everywhere.
Towers read the last level's task outputs.

Which parameters are shared follows from that wiring (and is checked against autograd by the
tests): shared experts of every level; task-specific experts of every level but the last (they
feed the shared gate); shared gates; task gates of levels j < n_levels - 2 (their output feeds
level j+1's task experts, which feed level j+1's shared gate). The last level's task experts and
task gates, and level n_levels - 2's task gates, reach only their own task.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import FeatureEncoder, ModelParams, MTLModel
from engine.models.mmoe import ExpertBank, mix
from engine.models.shared_bottom import (
    HiddenSizes,
    encoder_params,
    head_output,
    hidden_label,
    input_label,
    make_towers,
)


class CGCLevel(nn.Module):
    """One Customized Gate Control level: per-task experts, shared experts, per-task gates and
    (unless it is the last level) a shared gate over all experts."""

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_task_experts: int,
        n_shared_experts: int,
        hidden: list[int],
        dropout: float,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        self.task_experts = nn.ModuleList(
            ExpertBank(n_task_experts, in_dim, hidden, dropout) for _ in range(n_tasks)
        )
        self.shared_experts = ExpertBank(n_shared_experts, in_dim, hidden, dropout)
        self.task_gates = nn.ModuleList(
            nn.Linear(in_dim, n_task_experts + n_shared_experts) for _ in range(n_tasks)
        )
        self.shared_gate: nn.Linear | None = (
            nn.Linear(in_dim, n_tasks * n_task_experts + n_shared_experts) if shared_gate else None
        )
        self.out_dim = hidden[-1]

    def forward(
        self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, list[torch.Tensor], torch.Tensor | None]:
        """-> (task outputs, shared output or None, task gate probs, shared gate probs or None)."""
        shared = self.shared_experts(shared_input)  # (B, S, D)
        own = [bank(h) for bank, h in zip(self.task_experts, task_inputs, strict=True)]  # (B, n, D)
        task_out: list[torch.Tensor] = []
        task_gates: list[torch.Tensor] = []
        for gate, h, mine in zip(self.task_gates, task_inputs, own, strict=True):
            g = torch.softmax(gate(h), dim=-1)
            task_gates.append(g)
            task_out.append(mix(g, torch.cat([mine, shared], dim=1)))
        if self.shared_gate is None:
            return task_out, None, task_gates, None
        g = torch.softmax(self.shared_gate(shared_input), dim=-1)
        return task_out, mix(g, torch.cat([*own, shared], dim=1)), task_gates, g


class PLEParams(ModelParams):
    n_levels: int = Field(2, ge=1, le=6, description="number of stacked CGC levels (1 = CGC)")
    n_shared_experts: int = Field(2, ge=1, le=16, description="shared experts per level")
    n_task_experts: int = Field(1, ge=1, le=16, description="task-specific experts per task and level")
    expert_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each expert MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )


class PLE(MTLModel):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): stacked CGC levels."""

    name: ClassVar[str] = "ple"
    description: ClassVar[str] = (
        "Stacked levels of private experts per task plus shared experts, each task gating its own "
        "and the shared ones (PLE)."
    )
    Params: ClassVar[type[ModelParams]] = PLEParams
    params: PLEParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: PLEParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        levels: list[CGCLevel] = []
        d = self.encoder.out_dim
        for j in range(params.n_levels):
            level = CGCLevel(
                d,
                len(self.tasks),
                params.n_task_experts,
                params.n_shared_experts,
                params.expert_hidden,
                params.dropout,
                shared_gate=j < params.n_levels - 1,
            )
            levels.append(level)
            d = level.out_dim
        self.levels = nn.ModuleList(levels)
        self.towers = make_towers(d, self.tasks, params.tower_hidden, params.dropout)
        #: gate probabilities of the last forward pass, gate name -> (B, n_inputs), detached;
        #: names "level{j}/{task}" and "level{j}/shared" (see `gate_experts`).
        self.last_gates: dict[str, torch.Tensor] = {}

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def _run(self, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        x = self.encoder(batch)
        task_h: list[torch.Tensor] = [x] * len(self.tasks)
        shared_h = x
        gates: dict[str, torch.Tensor] = {}
        for j, level in enumerate(self.levels):
            task_h, next_shared, task_g, shared_g = level(task_h, shared_h)
            if next_shared is not None:  # None after the last level
                shared_h = next_shared
            for t, g in zip(self.task_names, task_g, strict=True):
                gates[f"level{j}/{t}"] = g
            if shared_g is not None:
                gates[f"level{j}/shared"] = shared_g
        return task_h, gates

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_h, gates = self._run(batch)
        self.last_gates = {k: g.detach() for k, g in gates.items()}
        return {
            t.name: head_output(tower(h), t)
            for t, tower, h in zip(self.tasks, self.towers, task_h, strict=True)
        }

    @torch.no_grad()
    def gate_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every gate's probabilities, gate name -> (B, n_inputs); rows sum to 1."""
        return self._run(batch)[1]

    def _expert_names(self, j: int) -> tuple[dict[str, list[str]], list[str]]:
        p = self.params
        own = {t: [f"level{j}_task_{t}_expert_{i}" for i in range(p.n_task_experts)] for t in self.task_names}
        shared = [f"level{j}_shared_expert_{i}" for i in range(p.n_shared_experts)]
        return own, shared

    def gate_experts(self) -> dict[str, list[str]]:
        """Gate name (as in `last_gates`) -> the expert names of its columns, in order."""
        out: dict[str, list[str]] = {}
        for j, level in enumerate(self.levels):
            own, shared = self._expert_names(j)
            for t in self.task_names:
                out[f"level{j}/{t}"] = own[t] + shared
            if level.shared_gate is not None:
                out[f"level{j}/shared"] = [e for t in self.task_names for e in own[t]] + shared
        return out

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        if len(self.tasks) < 2:
            return {}
        L = self.n_levels
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for j, level in enumerate(self.levels):
            for i, e in enumerate(level.shared_experts.experts):
                blocks[f"level{j}_shared_expert_{i}"] = list(e.parameters())
            if j < L - 1:  # task experts feed this level's shared gate -> every task
                for t, bank in zip(self.task_names, level.task_experts, strict=True):
                    for i, e in enumerate(bank.experts):
                        blocks[f"level{j}_task_{t}_expert_{i}"] = list(e.parameters())
            if j < L - 2:  # task gate -> next level's task experts -> next level's shared gate
                for t, gate in zip(self.task_names, level.task_gates, strict=True):
                    blocks[f"level{j}_task_{t}_gate"] = list(gate.parameters())
            if level.shared_gate is not None:
                blocks[f"level{j}_shared_gate"] = list(level.shared_gate.parameters())
        return {k: v for k, v in blocks.items() if v}

    def diagram(self) -> dict[str, list]:
        p = self.params
        nodes: list[tuple[str, str, str]] = [
            ("in", input_label(self.features), "input"),
            ("embedding", f"embeddings (dim {p.embed_dim})", "shared"),
        ]
        edges: list[tuple[str, str]] = [("in", "embedding")]
        mlp = hidden_label(p.expert_hidden)
        task_src = dict.fromkeys(self.task_names, "embedding")  # what feeds each task's branch
        shared_src = "embedding"
        for j, level in enumerate(self.levels):
            own, shared = self._expert_names(j)
            for i, e in enumerate(shared):
                nodes.append((e, f"L{j} shared expert {i} (MLP {mlp})", "expert"))
                edges.append((shared_src, e))
            for t in self.task_names:
                for i, e in enumerate(own[t]):
                    nodes.append((e, f"L{j} {t} expert {i} (MLP {mlp})", "expert"))
                    edges.append((task_src[t], e))
                g = f"level{j}_task_{t}_gate"
                nodes.append((g, f"L{j} gate {t}", "gate"))
                edges.append((task_src[t], g))
                edges += [(e, g) for e in own[t] + shared]
            if level.shared_gate is not None:
                g = f"level{j}_shared_gate"
                nodes.append((g, f"L{j} shared gate (all experts)", "gate"))
                edges.append((shared_src, g))
                edges += [(e, g) for t in self.task_names for e in own[t]]
                edges += [(e, g) for e in shared]
                shared_src = g
            task_src = {t: f"level{j}_task_{t}_gate" for t in self.task_names}
        for t in self.task_names:
            nodes += [
                (f"tower_{t}", f"tower {t} ({hidden_label(p.tower_hidden)})", "task"),
                (f"out_{t}", t, "output"),
            ]
            edges += [(task_src[t], f"tower_{t}"), (f"tower_{t}", f"out_{t}")]
        return {"nodes": nodes, "edges": edges}
