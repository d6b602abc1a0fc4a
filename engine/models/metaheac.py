"""MetaHeac: Meta Hybrid Experts and Critics.

Zhu et al., "Learning to Expand Audience via Meta Hybrid Experts and Critics for Recommendation
and Advertising", KDD 2021. Built for cold-start audience expansion: many small tasks (one per
advertiser's seed audience), few labels each.

The network (HEAC, "hybrid experts and critics"):
- shared experts f_1..f_E read the encoded features x;
- each task t has an embedding T_t; an expert gate reads [T_t, x] and mixes the experts into the
  task's user representation h_t = sum_e softmax(W_e [T_t, x])_e f_e(x);
- shared critics c_1..c_C (small classifiers) each judge h_t; a critic gate reads [T_t, x] and
  weighs them: y_t = sum_c softmax(W_c [T_t, x])_c * sigmoid(c_c(h_t)) (a mixture of the
  critics' probabilities; the output is its exact logit, computed in log space).
Both gates and all experts and critics are shared; what is task-specific is T_t, so the gates
act differently per task and a new task needs only a new embedding. Seesaw generalises the
critics beyond binary tasks: a regression task mixes the critics' values, a multiclass task
their class distributions; critics keep one output layer per task signature (kind and size),
shared by the tasks of that signature (all of them when every task is binary, as in the paper).
The gates read the whole encoded feature vector (the authors' code reads the mean field
embedding).

Meta-training (the "Meta" of MetaHeac, MAML-style): for a batch of tasks, each task's data is
split into a support and a query set; an inner step adapts the task-specific parameters on the
support loss, T_t' = T_t - lr * grad_T_t L_support (the reference implementation adapts only the
task embedding), and the outer step updates everything on the query loss under T_t', through the
inner step (second order unless `first_order`). `meta_losses(support, query)` computes that outer
objective; `adapted_task_embeddings` and `forward_with` are its two halves.

Seesaw's training loop calls `forward` and `task_losses` on one batch and has no episode
structure, so under it MetaHeac trains jointly on the task embeddings (the paper's HEAC without
meta-learning). Mapping meta-training onto Seesaw needs a trainer hook, see `meta_losses`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.mmoe import ExpertBank, mix
from engine.models.shared_bottom import HiddenSizes, encoder_params, hidden_label, input_label

Batch = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]


def signature(task: TaskSpec) -> str:
    """Tasks with the same signature can share critic output layers."""
    return f"{task.kind}_{task.output_dim}"


def mix_critics(task: TaskSpec, log_gate: torch.Tensor, critic_out: torch.Tensor) -> torch.Tensor:
    """Combine the critics' raw outputs (B, C, out_dim) with log gate weights (B, C) into the
    task's output: the logit of the probability mixture (binary), the log of the mixed class
    distribution (multiclass; a valid logit vector) or the mixed value (regression)."""
    if task.kind == "binary":
        z = critic_out.squeeze(-1)
        return torch.logsumexp(log_gate + F.logsigmoid(z), dim=1) - torch.logsumexp(
            log_gate + F.logsigmoid(-z), dim=1
        )
    if task.kind == "multiclass":
        return torch.logsumexp(log_gate.unsqueeze(-1) + F.log_softmax(critic_out, dim=-1), dim=1)
    return (log_gate.exp() * critic_out.squeeze(-1)).sum(dim=1)


class MetaHeacParams(ModelParams):
    n_experts: int = Field(4, ge=1, le=32, description="number of shared experts")
    expert_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each expert MLP"
    )
    n_critics: int = Field(3, ge=1, le=32, description="number of shared critics")
    critic_hidden: HiddenSizes = Field(
        default_factory=lambda: [16], description="hidden sizes of each critic MLP"
    )
    task_embed_dim: int = Field(8, ge=1, le=256, description="size of each task's embedding")


class MetaHeac(MTLModel):
    """MetaHeac (Zhu et al., KDD 2021): shared experts and critics, task-embedding-driven gates."""

    name: ClassVar[str] = "metaheac"
    description: ClassVar[str] = (
        "Shared experts and critics; a per-task embedding drives the gates that pick them "
        "(meta-learned for cold-start tasks)."
    )
    Params: ClassVar[type[ModelParams]] = MetaHeacParams
    params: MetaHeacParams

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: MetaHeacParams) -> None:
        super().__init__(features, tasks, params)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        d = self.encoder.out_dim
        self.experts = ExpertBank(params.n_experts, d, params.expert_hidden, params.dropout)
        self.task_embeddings = nn.ParameterList(
            nn.Parameter(0.1 * torch.randn(params.task_embed_dim)) for _ in self.tasks
        )
        gate_in = params.task_embed_dim + d
        self.expert_gate = nn.Linear(gate_in, params.n_experts)
        self.critic_gate = nn.Linear(gate_in, params.n_critics)
        self.critics = nn.ModuleList(
            MLP(self.experts.out_dim, params.critic_hidden, dropout=params.dropout)
            for _ in range(params.n_critics)
        )
        h = params.critic_hidden[-1]
        sigs = {signature(t): t.output_dim for t in self.tasks}
        self.critic_heads = nn.ModuleDict(
            {s: nn.ModuleList(nn.Linear(h, out) for _ in range(params.n_critics)) for s, out in sigs.items()}
        )
        #: task -> (expert gate (B, E), critic gate (B, C)) of the last forward pass, detached.
        self.last_gates: dict[str, torch.Tensor] = {}
        self.last_critic_gates: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------------ forward

    def forward_with(
        self, batch: dict[str, torch.Tensor], task_embeddings: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Outputs with the given task embeddings (one (task_embed_dim,) tensor per task)."""
        x = self.encoder(batch)
        expert_out = self.experts(x)
        outputs: dict[str, torch.Tensor] = {}
        gates: dict[str, torch.Tensor] = {}
        critic_gates: dict[str, torch.Tensor] = {}
        for t, emb in zip(self.tasks, task_embeddings, strict=True):
            gin = torch.cat([emb.unsqueeze(0).expand(x.shape[0], -1), x], dim=1)
            ge = torch.softmax(self.expert_gate(gin), dim=-1)
            rep = mix(ge, expert_out)
            log_gc = torch.log_softmax(self.critic_gate(gin), dim=-1)
            heads = self.critic_heads[signature(t)]
            critic_out = torch.stack(
                [head(c(rep)) for c, head in zip(self.critics, heads, strict=True)], dim=1
            )
            outputs[t.name] = mix_critics(t, log_gc, critic_out)
            gates[t.name] = ge.detach()
            critic_gates[t.name] = log_gc.detach().exp()
        self.last_gates, self.last_critic_gates = gates, critic_gates
        return outputs

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.forward_with(batch, list(self.task_embeddings))

    # ------------------------------------------------------------------------ meta-learning

    def adapted_task_embeddings(
        self, support: Batch, lr: float = 0.01, first_order: bool = False
    ) -> list[torch.Tensor]:
        """One inner SGD step of the task embeddings on the support set's task losses. Task t's
        loss depends on T_t only, so one gradient of the summed losses adapts each separately."""
        feats, targets, masks = support
        embs = list(self.task_embeddings)
        losses = self.task_losses(self.forward_with(feats, embs), targets, masks)
        total = torch.stack(list(losses.values())).sum()
        grads = torch.autograd.grad(total, embs, create_graph=not first_order, allow_unused=True)
        return [e if g is None else e - lr * g for e, g in zip(embs, grads, strict=True)]

    def meta_losses(
        self, support: Batch, query: Batch, lr: float = 0.01, first_order: bool = False
    ) -> dict[str, torch.Tensor]:
        """MAML outer objective: the query set's task losses under embeddings adapted on the
        support set. Gradients reach every parameter through the query pass and (second order)
        through the inner step.

        The trainer hook this needs (not in Seesaw's loop today): a model-provided
        `training_losses(feats, targets, masks) -> dict[str, Tensor]` that `train.py` calls
        instead of `task_losses(model(feats), ...)` during training (default: exactly that), so
        a model can split its batch into support and query and return `meta_losses`; and, for
        true audience episodes, an episodic batch sampler (rows grouped by an audience key, such
        as a user segment or campaign id) plus an evaluation hook that adapts on each test
        audience's support rows before predicting its query rows."""
        feats, targets, masks = query
        return self.task_losses(
            self.forward_with(feats, self.adapted_task_embeddings(support, lr, first_order)), targets, masks
        )

    # ----------------------------------------------------------------------------- contract

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        if len(self.tasks) < 2:
            return {}
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for i, e in enumerate(self.experts.experts):
            blocks[f"expert_{i}"] = list(e.parameters())
        blocks["gates"] = [*self.expert_gate.parameters(), *self.critic_gate.parameters()]
        for i, c in enumerate(self.critics):
            blocks[f"critic_{i}"] = list(c.parameters())
        n_per_sig: dict[str, int] = {}
        for t in self.tasks:
            n_per_sig[signature(t)] = n_per_sig.get(signature(t), 0) + 1
        for s, heads in self.critic_heads.items():
            if n_per_sig[s] > 1:
                blocks[f"critic_heads_{s}"] = list(heads.parameters())
        return {k: v for k, v in blocks.items() if v}

    def gate_experts(self) -> dict[str, list[str]]:
        return {t: [f"expert_{i}" for i in range(len(self.experts))] for t in self.task_names}

    def diagram(self) -> dict[str, list]:
        p = self.params
        nodes: list[tuple[str, str, str]] = [
            ("in", input_label(self.features), "input"),
            ("embedding", f"embeddings (dim {p.embed_dim})", "shared"),
        ]
        edges: list[tuple[str, str]] = [("in", "embedding")]
        experts = [f"expert_{i}" for i in range(p.n_experts)]
        critics = [f"critic_{i}" for i in range(p.n_critics)]
        for i, e in enumerate(experts):
            nodes.append((e, f"expert {i} (MLP {hidden_label(p.expert_hidden)})", "expert"))
            edges.append(("embedding", e))
        for i, c in enumerate(critics):
            nodes.append((c, f"critic {i} (MLP {hidden_label(p.critic_hidden)})", "shared"))
        for t in self.task_names:
            nodes += [
                (f"task_emb_{t}", f"task embedding {t} (dim {p.task_embed_dim}, meta-learned)", "task"),
                (f"gate_{t}", f"expert gate {t} (softmax over {p.n_experts})", "gate"),
                (f"critic_gate_{t}", f"critic gate {t} (softmax over {p.n_critics})", "gate"),
                (f"out_{t}", t, "output"),
            ]
            edges += [
                ("embedding", f"gate_{t}"),
                (f"task_emb_{t}", f"gate_{t}"),
                (f"task_emb_{t}", f"critic_gate_{t}"),
                ("embedding", f"critic_gate_{t}"),
                (f"critic_gate_{t}", f"out_{t}"),
            ]
            edges += [(e, f"gate_{t}") for e in experts]
            edges += [(f"gate_{t}", c) for c in critics]
            edges += [(c, f"critic_gate_{t}") for c in critics]
        return {"nodes": nodes, "edges": edges}
