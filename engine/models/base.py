"""The model contract and the building blocks every architecture shares.

A model maps a batch dict (see `engine.datasets.base.FeatureSpec`) to one output per task:
logits for binary tasks (B,), values for regression (B,), logits (B, C) for multiclass. It
declares which of its parameters are shared between tasks, grouped into named blocks so that
gradient statistics can be reported per block (embedding, expert_0, ...).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec


class ModelParams(BaseModel):
    """Base class of an architecture's hyper-parameters (validated by pydantic)."""

    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(8, ge=1, le=256, description="embedding size per categorical feature")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout in hidden layers")


class MLP(nn.Sequential):
    """Linear -> ReLU (-> Dropout) stack; `out_dim` adds a final linear layer with no activation."""

    def __init__(
        self, in_dim: int, hidden: list[int], out_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        super().__init__(*layers)
        self.out_dim = d


class FeatureEncoder(nn.Module):
    """Embeds every categorical column and concatenates it with the dense inputs.

    Output: (B, n_dense + n_cat * embed_dim). Sequence-aware models read `seq_*` keys
    themselves; this encoder ignores them.
    """

    def __init__(self, features: FeatureSpec, embed_dim: int) -> None:
        super().__init__()
        self.features = features
        self.embeddings = nn.ModuleList(nn.Embedding(card, embed_dim) for card in features.cat_cardinalities)
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
        self.out_dim = features.n_dense + features.n_cat * embed_dim

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if self.features.n_dense:
            parts.append(batch["dense"])
        if self.features.n_cat:
            cat = batch["cat"]
            parts += [emb(cat[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)


class MTLModel(nn.Module):
    """Base class of all architectures. Subclasses set `name`, `description`, `Params`, build
    their layers in `__init__`, implement `forward` and `shared_blocks`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[ModelParams]] = ModelParams
    #: True for architectures with one independent network per task (no sharing).
    single_task: ClassVar[bool] = False

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: ModelParams) -> None:
        super().__init__()
        self.features = features
        self.tasks = list(tasks)
        self.params = params

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of parameters that more than one task's loss depends on."""
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        out: list[nn.Parameter] = []
        for params in self.shared_blocks().values():
            for p in params:
                if id(p) not in seen and p.requires_grad:
                    seen.add(id(p))
                    out.append(p)
        return out

    def task_specific_parameters(self) -> list[nn.Parameter]:
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared and p.requires_grad]

    # Hooks a model may override (cascaded models compute their own losses) -----------------

    def training_losses(
        self,
        feats: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The per-task losses one training step minimises (the trainer calls this, evaluation
        calls `forward` + `task_losses`). Default: forward the batch, then `task_losses`. A model
        with its own training procedure (MetaHeac's episodic meta-training) overrides it."""
        return self.task_losses(self(feats), targets, masks)

    def task_losses(
        self,
        outputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Per-task mean loss; rows outside a task's mask do not count."""
        losses: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            out, y = outputs[task.name], targets[task.name]
            mask = masks.get(task.name)
            if mask is not None:
                out, y = out[mask], y[mask]
            if task.kind == "binary":
                loss = F.binary_cross_entropy_with_logits(out, y.float(), reduction="sum")
            elif task.kind == "regression":
                loss = F.mse_loss(out, y.float(), reduction="sum")
            else:
                loss = F.cross_entropy(out, y.long(), reduction="sum")
            losses[task.name] = loss / max(int(y.shape[0]), 1)
        return losses

    def predict(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn raw outputs into what metrics read: probabilities or values."""
        preds: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            out = outputs[task.name]
            if task.kind == "binary":
                preds[task.name] = torch.sigmoid(out)
            elif task.kind == "multiclass":
                preds[task.name] = torch.softmax(out, dim=-1)
            else:
                preds[task.name] = out
        return preds

    def internals(self) -> dict[str, float]:
        """Scalars about the last training forward pass worth recording (logged with the balancer
        statistics each logged step); e.g. MMoE's mean gate weight per task and expert."""
        return {}

    def diagram(self) -> dict[str, list]:
        """Structure for the dashboard: {"nodes": [(id, label, kind)], "edges": [(src, dst)]}.
        kind is one of input, shared, expert, gate, task, output. Override for a detailed one."""
        nodes: list[tuple[str, str, str]] = [("in", "features", "input"), ("body", self.name, "shared")]
        edges: list[tuple[str, str]] = [("in", "body")]
        for t in self.task_names:
            nodes.append((f"out_{t}", t, "output"))
            edges.append(("body", f"out_{t}"))
        return {"nodes": nodes, "edges": edges}
