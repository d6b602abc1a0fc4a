"""DSelect-k: differentiable sparse top-k expert selection per task.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong and Chi, "DSelect-k:
Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning",
NeurIPS 2021. Experts f_1..f_n are shared; each task has its own DSelect-k gate in place of
MMoE's softmax gate. With m = ceil(log2 n) binary variables:

- smooth step  S(t) = 0 for t <= -gamma/2, 1 for t >= gamma/2, and
  -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2 in between (continuously differentiable);
- single-expert selector  r(z)_j = prod_l [S(z_l) if bit l of j is 1 else 1 - S(z_l)],
  a distribution over the experts that is one-hot once every S(z_l) is 0 or 1;
- gate  q = sum_{i=1..k} softmax(alpha)_i r(z^(i)): a convex combination of k selectors, so at
  most k experts get non-zero weight once the smooth steps saturate;
- per-example ("example-conditioned") gate: z^(i)(x) = Z_i x + b_i, alpha(x) = A x + c;
  static ("task-only") gate: z^(i) and alpha are plain parameters, one selection per task.
  The paper defines both; k = 1 needs no alpha.

Training-only penalties added to the task's own loss (`PenalisedModel`): the optional entropy
regulariser lambda * sum_i H(r(z^(i))) (averaged over the batch; it speeds up saturation), and,
when n is not a power of two, sum_i (1 / sum_j r(z^(i))_j - 1), the official implementation's
term that keeps a selector's mass off the 2^m - n codes that name no expert (it is 0 once the
real experts hold all the mass). The mixture is not renormalised, so an example the penalty
never saw may keep a little weight on such codes; powers of two avoid the question.
Initialisation as in the official code: z weights and biases uniform in +-gamma/100 (smooth
steps start near 1/2, every expert reachable), alpha in +-0.05.

Sharing by gradient flow: embeddings and every expert; gates and towers are per task.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import FeatureEncoder, ModelParams
from engine.models.blocks import Diagram, PenalisedModel, only_shared
from engine.models.mmoe import ExpertBank, mix
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output, hidden_label, make_towers

_EPS = 1e-6


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cubic smooth step: 0 below -gamma/2, 1 above gamma/2, C^1 in between."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(
        t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic)
    )


def binary_codes(n_experts: int) -> torch.Tensor:
    """(n_experts, m) bool, row j = the m-bit binary code of j (least significant bit first)."""
    m = max(1, math.ceil(math.log2(n_experts)))
    j = torch.arange(n_experts).unsqueeze(1)
    return ((j >> torch.arange(m)) & 1).bool()


class DSelectKGate(nn.Module):
    """One task's DSelect-k gate over `n_experts`; forward(x) -> (weights (B, n), selectors
    (B, k, n)). Static gates ignore x's values (only its batch size)."""

    def __init__(self, in_dim: int, n_experts: int, k: int, gamma: float, per_example: bool) -> None:
        super().__init__()
        self.n_experts, self.k, self.gamma, self.per_example = n_experts, k, gamma, per_example
        codes = binary_codes(n_experts)
        self.m = codes.shape[1]
        self.register_buffer("codes", codes, persistent=False)
        self.z: nn.Linear | nn.Parameter
        #: selector-weight logits; None for k = 1 (the one selector has weight 1)
        self.alpha: nn.Linear | nn.Parameter | None = None
        if per_example:
            self.z = nn.Linear(in_dim, k * self.m)
            for p in self.z.parameters():
                nn.init.uniform_(p, -gamma / 100, gamma / 100)
            if k > 1:
                self.alpha = nn.Linear(in_dim, k)
                for p in self.alpha.parameters():
                    nn.init.uniform_(p, -0.05, 0.05)
        else:
            self.z = nn.Parameter(torch.empty(k, self.m).uniform_(-gamma / 100, gamma / 100))
            if k > 1:
                self.alpha = nn.Parameter(torch.empty(k).uniform_(-0.05, 0.05))

    @property
    def power_of_two(self) -> bool:
        return self.n_experts == 2**self.m

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (B, k, m), alpha (B, k))."""
        B = x.shape[0]
        z = self.z(x).view(B, self.k, self.m) if isinstance(self.z, nn.Linear) else self.z.expand(B, -1, -1)
        if self.alpha is None:
            alpha = x.new_zeros(B, 1)
        elif isinstance(self.alpha, nn.Linear):
            alpha = self.alpha(x)
        else:
            alpha = self.alpha.expand(B, -1)
        return z, alpha

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, alpha = self.logits(x)
        s = smooth_step(z, self.gamma).unsqueeze(2)  # (B, k, 1, m)
        selectors = torch.where(self.codes, s, 1.0 - s).prod(dim=-1)  # (B, k, n)
        weights = (torch.softmax(alpha, dim=-1).unsqueeze(-1) * selectors).sum(dim=1)  # (B, n)
        return weights, selectors

    def penalty(self, selectors: torch.Tensor, entropy_reg: float) -> torch.Tensor | None:
        """The training penalty of this gate (see the module docstring), or None when there is none."""
        terms: list[torch.Tensor] = []
        if entropy_reg > 0:
            entropy = -(selectors * torch.log(selectors + _EPS)).sum(dim=(1, 2))
            terms.append(entropy_reg * entropy.mean())
        if not self.power_of_two:
            terms.append((1.0 / selectors.sum(dim=-1).clamp_min(_EPS) - 1.0).sum(dim=1).mean())
        return torch.stack(terms).sum() if terms else None


class DSelectKParams(ModelParams):
    n_experts: int = Field(4, ge=2, le=32, description="number of shared experts")
    k: int = Field(2, ge=1, le=32, description="most experts each task's gate may select")
    gamma: float = Field(1.0, gt=0.0, le=100.0, description="width of the smooth step's cubic region")
    gate_input: Literal["example", "static"] = Field(
        "example",
        description="example: gates read the features (per-example choice); static: one choice per task",
    )
    entropy_reg: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="weight of the selectors' entropy penalty (0 = off); speeds up saturation",
    )
    expert_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each expert MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's tower"
    )

    @model_validator(mode="after")
    def _k_at_most_n(self) -> DSelectKParams:
        if self.k > self.n_experts:
            raise ValueError(f"k ({self.k}) cannot exceed n_experts ({self.n_experts})")
        return self


class DSelectK(PenalisedModel):
    """DSelect-k mixture of experts (Hazimeh et al., NeurIPS 2021): per-task sparse top-k gates."""

    name: ClassVar[str] = "dselect-k"
    description: ClassVar[str] = (
        "Shared experts; each task's gate learns to pick at most k of them (differentiable top-k)."
    )
    Params: ClassVar[type[ModelParams]] = DSelectKParams
    params: DSelectKParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: DSelectKParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        d = self.encoder.out_dim
        self.experts = ExpertBank(params.n_experts, d, params.expert_hidden, params.dropout)
        self.gates = nn.ModuleList(
            DSelectKGate(d, params.n_experts, params.k, params.gamma, params.gate_input == "example")
            for _ in self.tasks
        )
        self.towers = make_towers(self.experts.out_dim, self.tasks, params.tower_hidden, params.dropout)
        #: expert weights of the last forward pass, task -> (B, n_experts), detached.
        self.last_gates: dict[str, torch.Tensor] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        expert_out = self.experts(x)
        outputs: dict[str, torch.Tensor] = {}
        gates: dict[str, torch.Tensor] = {}
        penalties: dict[str, torch.Tensor] = {}
        for t, gate, tower in zip(self.tasks, self.gates, self.towers, strict=True):
            w, selectors = gate(x)
            gates[t.name] = w.detach()
            outputs[t.name] = head_output(tower(mix(w, expert_out)), t)
            if self.training:
                pen = gate.penalty(selectors, self.params.entropy_reg)
                if pen is not None:
                    penalties[t.name] = pen
        self.last_gates = gates
        self._keep_penalties(outputs, penalties)
        return outputs

    @torch.no_grad()
    def gate_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task -> (B, n_experts) expert weights: non-negative, at most k non-zero once saturated."""
        x = self.encoder(batch)
        return {t: gate(x)[0] for t, gate in zip(self.task_names, self.gates, strict=True)}

    def gate_experts(self) -> dict[str, list[str]]:
        return {t: [f"expert_{i}" for i in range(len(self.experts))] for t in self.task_names}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for i, e in enumerate(self.experts.experts):
            blocks[f"expert_{i}"] = list(e.parameters())
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        experts = [
            g.node(f"expert_{i}", f"expert {i} (MLP {hidden_label(p.expert_hidden)})", "expert", "embedding")
            for i in range(p.n_experts)
        ]
        how = "per example" if p.gate_input == "example" else "static"
        for t in self.task_names:
            gate = g.node(
                f"gate_{t}",
                f"DSelect-k gate {t} ({how}: at most {p.k} of {p.n_experts} experts)",
                "gate",
                *experts,
            )
            if p.gate_input == "example":
                g.edge("embedding", gate)
        g.towers({t: f"gate_{t}" for t in self.task_names}, p.tower_hidden)
        return g.as_dict()
