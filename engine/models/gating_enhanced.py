"""Gating-enhanced multi-task network: per-task gates over shared embeddings and bottom units.

After GemNN (Fei, Zhang, Zhou, Zhao, Qi and Li, "GemNN: Gating-enhanced Multi-task Neural
Networks with Feature Interaction Learning for CTR Prediction", SIGIR 2021, Baidu), which puts a
learned sigmoid gate between the embedding layer and the MLP so that each task controls what
information flows into its MLP, with the gate computed from all the features (which is how it
models feature interactions), and shares embeddings from upstream to downstream tasks. The gate
family is that of GateNet (Huang, She, Wang and Zhang, "GateNet: Gating-Enhanced Deep Network
for Click-Through Rate Prediction", arXiv 2007.03519, 2020): an embedding gate and a hidden gate.

What is implemented (GemNN's coarse-to-fine candidate funnel across ranking stages is not):
  x = embeddings + dense inputs (shared)
  embedding gate of task k:  x_k = x * sigmoid(W_k x + b_k)       (per bit of x, or per field)
  shared bottom MLP:         h_k = bottom(x_k)
  hidden gate of task k:     h'_k = h_k * sigmoid(V_k h_k + c_k)  (optional)
  y_k = tower_k(h'_k)
so each task sees its own gated view of the shared embeddings and of the shared bottom's units.

Sharing by gradient flow: embeddings and the bottom MLP; gates and towers are per task.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.blocks import Diagram, field_index, n_fields, only_shared
from engine.models.shared_bottom import HiddenSizes, encoder_params, head_output, hidden_label, make_towers


class GatingEnhancedParams(ModelParams):
    gate_granularity: Literal["bit", "field"] = Field(
        "bit", description="bit: one gate value per embedding coordinate; field: one per input field"
    )
    hidden_gate: bool = Field(True, description="also gate the shared bottom's output units per task")
    bottom_hidden: HiddenSizes = Field(
        default_factory=lambda: [128, 64], description="hidden sizes of the shared bottom MLP"
    )
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [32], description="hidden sizes of each task's tower"
    )


class GatingEnhanced(MTLModel):
    """Per-task sigmoid gates over shared embeddings and bottom units, after GemNN (Fei et al.,
    SIGIR 2021) and GateNet's embedding/hidden gates (Huang et al., 2020)."""

    name: ClassVar[str] = "gating-enhanced"
    description: ClassVar[str] = (
        "Shared embeddings and bottom; each task's own gates decide which inputs and units reach it."
    )
    Params: ClassVar[type[ModelParams]] = GatingEnhancedParams
    params: GatingEnhancedParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: GatingEnhancedParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        d = self.encoder.out_dim
        gate_out = d if params.gate_granularity == "bit" else n_fields(features)
        self.register_buffer("fields", field_index(features, params.embed_dim), persistent=False)
        self.embedding_gates = nn.ModuleList(nn.Linear(d, gate_out) for _ in self.tasks)
        self.bottom = MLP(d, params.bottom_hidden, dropout=params.dropout)
        h = self.bottom.out_dim
        self.hidden_gates: nn.ModuleList | None = (
            nn.ModuleList(nn.Linear(h, h) for _ in self.tasks) if params.hidden_gate else None
        )
        self.towers = make_towers(h, self.tasks, params.tower_hidden, params.dropout)

    def _embedding_gate(self, k: int, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.embedding_gates[k](x))
        return g if self.params.gate_granularity == "bit" else g[:, self.fields]

    @torch.no_grad()
    def gate_values(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task -> (B, encoder.out_dim) embedding-gate values in (0, 1) (per field: repeated over
        each field's columns)."""
        x = self.encoder(batch)
        return {t: self._embedding_gate(k, x) for k, t in enumerate(self.task_names)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        outputs: dict[str, torch.Tensor] = {}
        for k, (t, tower) in enumerate(zip(self.tasks, self.towers, strict=True)):
            h = self.bottom(x * self._embedding_gate(k, x))
            if self.hidden_gates is not None:
                h = h * torch.sigmoid(self.hidden_gates[k](h))
            outputs[t.name] = head_output(tower(h), t)
        return outputs

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        blocks = {"embedding": encoder_params(self.encoder), "bottom": list(self.bottom.parameters())}
        return only_shared(self.tasks, blocks)

    def diagram(self) -> dict[str, list]:
        p = self.params
        g = Diagram(self.features, p.embed_dim)
        per = "per embedding bit" if p.gate_granularity == "bit" else "per field"
        gates = [
            g.node(f"embedding_gate_{t}", f"embedding gate {t} (sigmoid, {per})", "gate", "embedding")
            for t in self.task_names
        ]
        g.node("bottom", f"shared bottom MLP {hidden_label(p.bottom_hidden)}", "shared", *gates)
        src = dict.fromkeys(self.task_names, "bottom")
        if p.hidden_gate:
            src = {
                t: g.node(f"hidden_gate_{t}", f"hidden gate {t} (sigmoid per unit)", "gate", "bottom")
                for t in self.task_names
            }
        g.towers(src, p.tower_hidden)
        return g.as_dict()
