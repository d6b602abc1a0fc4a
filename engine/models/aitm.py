"""AITM: Adaptive Information Transfer Multi-task framework.

Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with
Multi-task Learning in Targeted Display Advertising", KDD 2021. Tasks form a sequence (e.g.
click -> cart -> purchase). Over one shared embedding, each task t has a tower giving its own
representation q_t. Between consecutive tasks an Adaptive Information Transfer (AIT) module
decides how much of what task t-1 learned to take:

    p_{t-1} = transfer_{t-1}(z_{t-1})                    (a small MLP; z_1 = q_1)
    z_t     = sum_{u in {p_{t-1}, q_t}} w_u h1(u),  w_u = softmax_u(<h2(u), h3(u)> / sqrt(k))

(h1, h2, h3: value, query and key projections of size k). Task t predicts from z_t with a small
head. The behavioural expectation calibrator adds alpha * mean(max(y_t - y_{t-1}, 0)) for every
consecutive pair: a later step of a funnel should not be more likely than the one before it.
Seesaw adds each pair's penalty to the later task's loss in `task_losses` (so balancers see it
as part of task t); alpha is `calibrator_weight` (0.6, the authors' default).

Tasks of any kind are accepted (the transfer works on representations); the calibrator applies
to consecutive pairs of binary tasks only. Which parameters are shared follows from the wiring:
tower s and the transfer/AIT modules into task s reach tasks s.. T; task t's head also reaches
task t+1 through the calibrator when both are binary and the weight is > 0. The attention
weights of the last forward pass are kept in `last_transfer_weights` for the dashboard.
"""

from __future__ import annotations

import math
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
)


def calibration_penalty(p_later: torch.Tensor, p_earlier: torch.Tensor) -> torch.Tensor:
    """mean(max(p_later - p_earlier, 0)): zero when the later step is never more likely."""
    return torch.relu(p_later - p_earlier).mean() if p_later.numel() else p_later.sum()


class AITModule(nn.Module):
    """Self-attention over the two inputs [transferred info, own representation] -> (B, k).
    Forward returns the output and the attention weights (B, 2) (column 0: the transferred info)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, info: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.stack([info, own], dim=1)  # (B, 2, k)
        scores = (self.query(u) * self.key(u)).sum(dim=-1) * self.scale  # (B, 2)
        w = torch.softmax(scores, dim=1)
        return (w.unsqueeze(-1) * self.value(u)).sum(dim=1), w


class AITMParams(ModelParams):
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32],
        description="hidden sizes of each task's tower (the last one is the AIT width k)",
    )
    head_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each task's prediction head"
    )
    calibrator_weight: float = Field(
        0.6, ge=0.0, le=100.0, description="alpha: weight of the calibrator penalty max(p_t - p_{t-1}, 0)"
    )


class AITM(MTLModel):
    """AITM (Xi et al., KDD 2021): attention-based transfer between consecutive tasks + calibrator."""

    name: ClassVar[str] = "aitm"
    description: ClassVar[str] = (
        "Sequential tasks: each step attends over what the previous step learned, and a calibrator "
        "keeps later steps less likely."
    )
    Params: ClassVar[type[ModelParams]] = AITMParams
    params: AITMParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: AITMParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        k = params.tower_hidden[-1]
        self.towers = nn.ModuleList(
            MLP(self.encoder.out_dim, params.tower_hidden, dropout=params.dropout) for _ in self.tasks
        )
        n_links = len(self.tasks) - 1
        self.transfers = nn.ModuleList(nn.Sequential(nn.Linear(k, k), nn.ReLU()) for _ in range(n_links))
        self.aits = nn.ModuleList(AITModule(k) for _ in range(n_links))
        self.heads = nn.ModuleList(
            MLP(k, params.head_hidden, out_dim=t.output_dim, dropout=params.dropout) for t in self.tasks
        )
        #: task -> attention weights (B, 2) over [info from the previous task, own], detached.
        self.last_transfer_weights: dict[str, torch.Tensor] = {}

    def calibrated_pairs(self) -> list[tuple[str, str]]:
        """(earlier, later) consecutive pairs the calibrator constrains."""
        if self.params.calibrator_weight <= 0:
            return []
        return [
            (a.name, b.name)
            for a, b in zip(self.tasks, self.tasks[1:], strict=False)
            if a.kind == "binary" and b.kind == "binary"
        ]

    def representations(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """z_t per task, in task order."""
        x = self.encoder(batch)
        z: list[torch.Tensor] = []
        weights: dict[str, torch.Tensor] = {}
        for i, (t, tower) in enumerate(zip(self.tasks, self.towers, strict=True)):
            q = tower(x)
            if i == 0:
                z.append(q)
                continue
            out, w = self.aits[i - 1](self.transfers[i - 1](z[i - 1]), q)
            weights[t.name] = w.detach()
            z.append(out)
        self.last_transfer_weights = weights
        return z

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.representations(batch)
        return {
            t.name: head_output(head(zt), t) for t, head, zt in zip(self.tasks, self.heads, z, strict=True)
        }

    def calibrator_penalties(
        self, outputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Later task -> alpha * mean over rows (where both labels are defined) of
        max(p_later - p_earlier, 0)."""
        out: dict[str, torch.Tensor] = {}
        for earlier, later in self.calibrated_pairs():
            p_e, p_l = torch.sigmoid(outputs[earlier]), torch.sigmoid(outputs[later])
            keep = None
            for name in (earlier, later):
                m = masks.get(name)
                if m is not None:
                    keep = m if keep is None else keep & m
            if keep is not None:
                p_e, p_l = p_e[keep], p_l[keep]
            out[later] = self.params.calibrator_weight * calibration_penalty(p_l, p_e)
        return out

    def task_losses(
        self,
        outputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Each task's own loss; a later task's loss also carries its calibrator penalty."""
        losses = super().task_losses(outputs, targets, masks)
        for later, penalty in self.calibrator_penalties(outputs, masks).items():
            losses[later] = losses[later] + penalty
        return losses

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        T = len(self.tasks)
        if T < 2:
            return {}
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for i, t in enumerate(self.task_names):
            if i < T - 1:  # z_i feeds task i+1 through the transfer
                blocks[f"tower_{t}"] = list(self.towers[i].parameters())
                if i >= 1:
                    blocks[f"transfer_{t}"] = [
                        *self.transfers[i - 1].parameters(),
                        *self.aits[i - 1].parameters(),
                    ]
        calibrated = {earlier for earlier, _ in self.calibrated_pairs()}
        for i, t in enumerate(self.task_names):
            if t in calibrated:
                blocks[f"head_{t}"] = list(self.heads[i].parameters())
        return {k: v for k, v in blocks.items() if v}

    def diagram(self) -> dict[str, list]:
        p = self.params
        shared = self.shared_blocks()
        nodes: list[tuple[str, str, str]] = [
            ("in", input_label(self.features), "input"),
            ("embedding", f"embeddings (dim {p.embed_dim})", "shared"),
        ]
        edges: list[tuple[str, str]] = [("in", "embedding")]
        names = self.task_names
        for i, t in enumerate(names):
            kind = "shared" if f"tower_{t}" in shared else "task"
            nodes.append((f"tower_{t}", f"tower {t} ({hidden_label(p.tower_hidden)})", kind))
            edges.append(("embedding", f"tower_{t}"))
            rep = f"tower_{t}"
            if i >= 1:
                kind = "shared" if f"transfer_{t}" in shared else "gate"
                nodes.append((f"ait_{t}", f"AIT {names[i - 1]} -> {t} (attention)", kind))
                edges += [(f"tower_{t}", f"ait_{t}"), (f"rep_{names[i - 1]}", f"ait_{t}")]
                rep = f"ait_{t}"
            nodes.append((f"rep_{t}", f"z {t}", "task"))
            edges.append((rep, f"rep_{t}"))
            nodes += [
                (f"head_{t}", f"head {t} ({hidden_label(p.head_hidden)})", "task"),
                (f"out_{t}", t, "output"),
            ]
            edges += [(f"rep_{t}", f"head_{t}"), (f"head_{t}", f"out_{t}")]
        return {"nodes": nodes, "edges": edges}
