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

Meta-training (the "Meta" of MetaHeac, MAML-style), done through the trainer's
`training_losses` hook when `meta_train` is on (the default):
- audiences: the paper's tasks are advertisers' seed audiences. Seesaw's datasets have none, so
  an audience is a group of rows of the batch (`engine.models.episodes`): the rows sharing one
  value of a categorical column (`audience_feature`; "auto" takes the column whose values split
  the first training batch into the most, most even groups of at least `min_audience_rows`
  rows, id columns left out: occupation in adult and movielens-100k, item_category in
  recsys-sim), or a random partition of the batch ("random", and always when the data has no
  categorical column, as in synthetic-correlation: episodes then carry no audience structure).
  Seesaw's tasks (income, never_married, ...) stay the model's tasks: every audience is an
  episode for all of them at once, and each (audience, task) pair gets its own adapted T_t.
- each step: up to `n_audiences` usable audiences are drawn from the batch, each split into
  support (`support_fraction` of its rows) and query rows. Inner step, per audience a and task t:
  T_t,a' = T_t - inner_lr * grad_T_t L_t(support_a; T_t). Training loss of task t: the mean
  over the audiences (those with labelled query rows for t; equal weight per audience, as the
  paper's average over tasks) of L_t(query_a; T_t,a'). These are ordinary graph losses, one per
  task, so every balancer, gradient ones included, works on them unchanged; T_t still reaches
  only task t's loss. First order by default (the inner gradient is a constant of the outer
  step, as in the PaddleRec port of the authors' code); `first_order=False` differentiates
  through it (second order), which also sends gradient into the shared layers through the
  support pass. With inner_lr 0 the training loss is the audience-averaged joint loss on the
  query rows.
- what adapts: only the task embeddings. The PaddleRec port gives every linear and embedding
  layer a fast weight in the inner step; adapting T_t alone keeps the inner step cheap (one
  backward through the gates and critics of the support rows), keeps experts and critics a
  shared meta-learned body, and matches the point of the design: a new audience needs only a
  new embedding.
All audiences of a step run in one batched pass: the encoder and experts (which do not read
T_t) once over the episode's rows, the gates and critics with each row's own embedding.

Evaluation (`forward`) predicts with the meta-learned T_t, as before (the initialisation meant
to adapt well in one step; no test audience is adapted). A cold-start audience would take
`adapt_to_audience(seed_rows)` (a few labelled rows of it; inner steps on its task embeddings,
nothing else changes) and then `forward_with(candidates, adapted)`. `meta_losses(support,
query)` is the outer objective of one hand-made episode; `meta_train=False` trains the HEAC
network jointly (HEAC without meta-learning).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.episodes import Episode, choose_audience_column, sample_episode
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


def row_losses(task: TaskSpec, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row loss of `MTLModel.task_losses` (BCE with logits, squared error, cross-entropy)."""
    if task.kind == "binary":
        return F.binary_cross_entropy_with_logits(out, y.to(out.dtype), reduction="none")
    if task.kind == "regression":
        return F.mse_loss(out, y.to(out.dtype), reduction="none")
    return F.cross_entropy(out, y.long(), reduction="none")


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
    meta_train: bool = Field(
        True,
        description="meta-train over audiences of each batch (inner step on the task embeddings, "
        "loss on the query rows); off: plain joint training",
    )
    audience_feature: str = Field(
        "auto",
        min_length=1,
        max_length=200,
        description="what an audience is: 'auto' (the categorical column that splits the batch most "
        "evenly), 'random' (a random partition of the batch) or a categorical column's name",
    )
    n_audiences: int = Field(16, ge=1, le=256, description="audiences drawn from each batch per step")
    min_audience_rows: int = Field(
        4, ge=2, le=100_000, description="rows an audience needs in the batch to be drawn"
    )
    support_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of each audience's rows in its support set"
    )
    inner_lr: float = Field(
        0.5, ge=0.0, le=100.0, description="step size of the inner SGD step on the task embeddings"
    )
    first_order: bool = Field(
        True, description="first-order meta-gradient (off: differentiate through the inner step)"
    )


class MetaHeac(MTLModel):
    """MetaHeac (Zhu et al., KDD 2021): shared experts and critics, task-embedding-driven gates."""

    name: ClassVar[str] = "metaheac"
    description: ClassVar[str] = (
        "Shared experts and critics; a per-task embedding drives the gates that pick them, "
        "meta-trained over audiences (groups of rows) so that it adapts to a new one in a step."
    )
    Params: ClassVar[type[ModelParams]] = MetaHeacParams
    params: MetaHeacParams

    @classmethod
    def check_features(cls, params: ModelParams, features: FeatureSpec) -> None:
        """ValueError unless `audience_feature` is 'auto', 'random' or a categorical column."""
        name = getattr(params, "audience_feature", "auto")
        if name not in ("auto", "random") and name not in features.cat_names:
            raise ValueError(
                f"metaheac: audience_feature {name!r} is not a categorical column of this dataset; "
                f"choose 'auto', 'random' or one of {list(features.cat_names)}"
            )

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: MetaHeacParams) -> None:
        super().__init__(features, tasks, params)
        self.check_features(params, features)
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
        #: index of the categorical column that defines audiences (None: random partitions, or
        #: "auto" not decided yet; it is decided on the first training batch and then kept).
        self.audience_col: int | None = (
            features.cat_names.index(params.audience_feature)
            if params.audience_feature in features.cat_names
            else None
        )
        self._episode_stats: dict[str, float] = {}

    # ------------------------------------------------------------------------------ forward

    def _encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The part that does not read the task embeddings: encoded features (B, d) and expert
        outputs (B, E, D)."""
        x = self.encoder(batch)
        return x, self.experts(x)

    def _heads(
        self, x: torch.Tensor, expert_out: torch.Tensor, task_embeddings: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Gates and critics. Each task's embedding is (task_embed_dim,) for all rows or
        (B, task_embed_dim), one per row (rows of different audiences in one pass)."""
        outputs: dict[str, torch.Tensor] = {}
        gates: dict[str, torch.Tensor] = {}
        critic_gates: dict[str, torch.Tensor] = {}
        for t, emb in zip(self.tasks, task_embeddings, strict=True):
            rows = emb.expand(x.shape[0], -1) if emb.dim() == 1 else emb
            gin = torch.cat([rows, x], dim=1)
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

    def forward_with(
        self, batch: dict[str, torch.Tensor], task_embeddings: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Outputs with the given task embeddings (one (task_embed_dim,) tensor per task, or one
        (B, task_embed_dim) tensor: an embedding per row)."""
        x, expert_out = self._encode(batch)
        return self._heads(x, expert_out, task_embeddings)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.forward_with(batch, list(self.task_embeddings))

    # ------------------------------------------------------------------------ meta-learning

    def audience_losses(
        self,
        outputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        audience: torch.Tensor,
        n_audiences: int,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Task -> (each audience's mean loss (K,), its labelled rows (K,)). `audience` (B,) gives
        each row's audience; rows outside a task's mask do not count (as in `task_losses`); an
        audience without labelled rows has loss 0 and count 0."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for task in self.tasks:
            o, y, a = outputs[task.name], targets[task.name], audience
            mask = masks.get(task.name)
            if mask is not None:
                o, y, a = o[mask], y[mask], a[mask]
            rl = row_losses(task, o, y)
            sums = rl.new_zeros(n_audiences).index_add(0, a, rl)
            counts = rl.new_zeros(n_audiences).index_add(0, a, torch.ones_like(rl.detach()))
            out[task.name] = (sums / counts.clamp_min(1.0), counts)
        return out

    def _inner_step(
        self,
        x: torch.Tensor,
        expert_out: torch.Tensor,
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        audience: torch.Tensor,
        n_audiences: int,
        lr: float,
        first_order: bool,
        start: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """One SGD step of every task's embedding per audience on the support rows given (their
        encoded features, expert outputs, targets and audiences): one (K, task_embed_dim) tensor
        per task, row a = T_t - lr * grad L_t(support_a). Every (audience, task) loss depends on
        its own row of its own copy of T_t only, so one gradient of their sum gives all K x T
        inner gradients. First order: the inner gradient is a constant (taken on detached
        features, so the support pass is not part of the outer graph); second order: it is
        differentiated through (graph kept)."""
        base = [e.unsqueeze(0).repeat(n_audiences, 1) for e in (start or list(self.task_embeddings))]
        if lr == 0.0:
            return base
        if first_order:
            x, expert_out = x.detach(), expert_out.detach()
        outputs = self._heads(x, expert_out, [b[audience] for b in base])
        per = self.audience_losses(outputs, targets, masks, audience, n_audiences)
        total = torch.stack([loss.sum() for loss, _ in per.values()]).sum()
        if not total.requires_grad:
            return base
        grads = torch.autograd.grad(total, base, create_graph=not first_order, allow_unused=True)
        return [b if g is None else b - lr * g for b, g in zip(base, grads, strict=True)]

    def episode_losses(
        self,
        feats: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        episode: Episode,
        lr: float | None = None,
        first_order: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """The meta-training losses of one episode over a batch: per task, the mean over the
        episode's audiences (those with labelled query rows for the task) of the audience's
        query loss under its adapted task embedding. `lr` and `first_order` default to params."""
        p = self.params
        lr = p.inner_lr if lr is None else lr
        first_order = p.first_order if first_order is None else first_order
        ns = int(episode.support.numel())
        rows = torch.cat([episode.support, episode.query])
        x, expert_out = self._encode({k: v[rows] for k, v in feats.items()})

        def part(d: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
            return {k: v[idx] for k, v in d.items()}

        adapted = self._inner_step(
            x[:ns],
            expert_out[:ns],
            part(targets, episode.support),
            part(masks, episode.support),
            episode.support_audience,
            episode.n_audiences,
            lr,
            first_order,
        )
        outputs = self._heads(x[ns:], expert_out[ns:], [a[episode.query_audience] for a in adapted])
        per = self.audience_losses(
            outputs,
            part(targets, episode.query),
            part(masks, episode.query),
            episode.query_audience,
            episode.n_audiences,
        )
        losses: dict[str, torch.Tensor] = {}
        for name, (loss, counts) in per.items():
            has = (counts > 0).to(loss.dtype)
            losses[name] = (loss * has).sum() / has.sum().clamp_min(1.0)
        return losses

    @property
    def audience_column(self) -> str | None:
        """Name of the categorical column whose values define the audiences (None: random)."""
        return None if self.audience_col is None else self.features.cat_names[self.audience_col]

    def _audience_keys(self, feats: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Each row's audience key, or None for a random partition. "auto" decides the column
        on the first batch that has a usable group and keeps it, so that an audience means the
        same thing all run long; id columns (user, item) are left out of the automatic choice
        (at Seesaw's batch sizes most ids have too few rows for support and query)."""
        if self.params.audience_feature == "random" or self.features.n_cat == 0:
            return None
        if self.audience_col is None:
            names = self.features.cat_names
            ids = [names.index(c) for c in (self.features.user_col, self.features.item_col) if c in names]
            self.audience_col = choose_audience_column(feats["cat"], self.params.min_audience_rows, ids)
            if self.audience_col is None:
                return None
        return feats["cat"][:, self.audience_col]

    def draw_episode(
        self, feats: dict[str, torch.Tensor], n_rows: int, device: torch.device | None = None
    ) -> Episode | None:
        """Draw this step's audiences from a batch and split them (None: fewer than two rows)."""
        p = self.params
        episode = sample_episode(
            self._audience_keys(feats), n_rows, p.n_audiences, p.support_fraction, p.min_audience_rows
        )
        if episode is None or device is None:
            return episode
        return episode.to(device)

    def training_losses(
        self,
        feats: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Meta-training (see the module docstring): sample audiences from the batch, adapt the
        task embeddings on each one's support rows, return the per-task query losses averaged
        over the audiences. Joint training when `meta_train` is off or the batch has one row."""
        if not self.params.meta_train:
            return super().training_losses(feats, targets, masks)
        y = next(iter(targets.values()))
        n = int(y.shape[0])
        episode = self.draw_episode(feats, n, y.device)
        if episode is None:
            self._episode_stats = {"meta:audiences": 0.0, "meta:rows_used": 0.0}
            return super().training_losses(feats, targets, masks)
        self._episode_stats = {
            "meta:audiences": float(episode.n_audiences),
            "meta:rows_used": episode.n_rows / n,
        }
        return self.episode_losses(feats, targets, masks, episode)

    def internals(self) -> dict[str, float]:
        """Audiences drawn and the share of the batch's rows used by the last meta-training step."""
        return dict(self._episode_stats)

    def adapted_task_embeddings(
        self, support: Batch, lr: float | None = None, first_order: bool = False
    ) -> list[torch.Tensor]:
        """One inner SGD step of the task embeddings on one audience's support set (all its rows):
        T_t' = T_t - lr * grad_T_t L_t(support). `lr` defaults to `inner_lr`; second order
        (graph kept) unless `first_order`."""
        feats, targets, masks = support
        x, expert_out = self._encode(feats)
        audience = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        lr = self.params.inner_lr if lr is None else lr
        adapted = self._inner_step(x, expert_out, targets, masks, audience, 1, lr, first_order)
        return [a[0] for a in adapted]

    def meta_losses(
        self, support: Batch, query: Batch, lr: float | None = None, first_order: bool = False
    ) -> dict[str, torch.Tensor]:
        """MAML outer objective of one hand-made episode (one audience): the query set's task
        losses under embeddings adapted on the support set. Gradients reach every parameter
        through the query pass and (second order, the default here) through the inner step."""
        feats = _concat(support[0], query[0])
        targets = _concat(support[1], query[1])
        n_s, n_q = _rows(support), _rows(query)
        masks = {
            t: torch.cat([_mask(support, t, n_s), _mask(query, t, n_q)]) for t in {*support[2], *query[2]}
        }
        device = next(iter(targets.values())).device
        zeros = torch.zeros
        episode = Episode(
            torch.arange(n_s, device=device),
            zeros(n_s, dtype=torch.long, device=device),
            torch.arange(n_s, n_s + n_q, device=device),
            zeros(n_q, dtype=torch.long, device=device),
            1,
        )
        return self.episode_losses(feats, targets, masks, episode, lr, first_order)

    def adapt_to_audience(
        self, support: Batch, steps: int = 1, lr: float | None = None
    ) -> list[torch.Tensor]:
        """Cold start: task embeddings for a new audience from a few labelled rows of it
        (`steps` inner SGD steps from the meta-learned T_t, nothing else changes); predict its
        candidates with `forward_with(batch, embeddings)`. Works under `torch.no_grad()`;
        returns detached tensors."""
        feats, targets, masks = support
        lr = self.params.inner_lr if lr is None else lr
        embs = [e.detach() for e in self.task_embeddings]
        with torch.enable_grad():
            x, expert_out = self._encode(feats)
            audience = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            for _ in range(steps):
                start = [e.requires_grad_() for e in embs]
                adapted = self._inner_step(x, expert_out, targets, masks, audience, 1, lr, True, start)
                embs = [a[0].detach() for a in adapted]
        return embs

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


def _rows(batch: Batch) -> int:
    return int(next(iter(batch[1].values())).shape[0])


def _concat(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def _mask(batch: Batch, task: str, n: int) -> torch.Tensor:
    """A task's label mask in a batch; all rows when the batch has none for it."""
    m = batch[2].get(task)
    return torch.ones(n, dtype=torch.bool, device=next(iter(batch[1].values())).device) if m is None else m
