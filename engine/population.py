"""Population training: K fixed-weight runs of one architecture trained together as one batched model.

A linear-scalarisation sweep (Miettinen, "Nonlinear Multiobjective Optimization", 1999, ch. 3.1)
trains the same architecture K times with different task-weight vectors w_k (and seeds). Here the
K members are stacked and every layer becomes one batched op over the K members: K times fewer
Python and dispatch steps, one data pipeline, one validation pass per epoch for all members. Each
member keeps its own parameters, its own optimiser state (Adam/AdamW/SGD are elementwise, so one
optimiser over the stacked tensors *is* K independent optimisers; it runs as one fused kernel),
its own data order, validation, early stopping, best checkpoint and run directory.

Two routes (`PopulationModel`):

- hand-batched (`engine.stacked`), for shared-bottom, OMoE and MMoE: parameters in a few fused
  (K, experts or tasks, ...) leaves, activations feature-major, every expert layer of every
  member one `mm`/`bmm`, the MLP stacks and the gate mixing with hand-written backward passes;
- `torch.func.stack_module_state` + `vmap(functional_call(...))` for every other architecture
  (the model-ensembling recipe of the torch.func docs).

When all members share one seed they read the same rows: the batch is gathered once and the
first layer of every member and expert is a single (K * E * H) x In by In x B product. Gradient
statistics (every `grad_stats_every` steps) take one backward pass per task over the whole
population; member k's slice of task t's gradient is its own, the per-member Gramians come out
batched (`PopulationModel.shared_grams`), and the step's gradient is their w-weighted sum (no
extra backward pass).

What it buys depends on the device. On a GPU, small members leave the device idle and batching
fills it. On a CPU one member's matrix products already run near the core's peak (they fit in
cache), so batching removes the per-op Python/dispatch/optimiser overhead, not arithmetic: the
population costs about K times one run's arithmetic (bench/RESULTS.md measures it).

Equivalence with `engine.train.train`: member k is built exactly as a separate run of its config
would be: `seed_everything(seed)` before the model is built, the same `load_dataset(..., seed)`
split, one `torch.Generator().manual_seed(seed)` drawing the epoch permutations, the same
optimiser and loss `sum_t w_t L_t`. A population member therefore ends with the same parameters
as `train(cfg_k)` up to floating-point summation order (tests/test_population.py checks it, for
both routes). Members whose seeds differ see different batches (gathered per member).

What can be batched (`batch_problem` says why not; `engine.sweeps.run_sweep` then falls back to
sequential runs and logs that reason): constant loss weights (balancers "fixed" and "ew"), an
architecture that trains on forward + `task_losses` (one that overrides `training_losses`, such
as MetaHeac's episodic meta-training, is refused), and, off the hand-batched route, a forward
that runs under `vmap` (no in-place buffer updates such as batch norm, no data-dependent shapes).
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from engine import metrics as M
from engine.balancers import build_balancer
from engine.best_epoch import BestEpoch
from engine.config import RunConfig, resolve
from engine.datasets import load_dataset
from engine.datasets.base import MTLData, Split
from engine.devices import describe, select_device
from engine.gradients import GradStatRow, cosine_matrix
from engine.models import MODELS, build_model
from engine.models.base import MTLModel
from engine.stacked import StackedMoE, batched_task_losses, stack_models
from engine.train import (
    EVAL_BATCH,
    NullWriter,
    TrainResult,
    Writer,
    _early_stopping_key,
    _make_optimizer,
    _metric_rows,
    _to_device,
    _train_loss_rows,
    save_checkpoint,
    seed_everything,
)

#: Balancers whose task weights are constants (a population member's loss is sum_t w_t L_t).
BATCHABLE_BALANCERS = ("fixed", "ew")

#: Config fields every member of one population must share (everything but seed, weights, labels).
SHARED_FIELDS = (
    "dataset",
    "dataset_params",
    "tasks",
    "arch",
    "arch_params",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "device",
    "threads",
    "early_stopping_metric",
    "patience",
    "grad_stats_every",
    "log_every",
    "max_steps_per_epoch",
)

Batch = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]


class PopulationError(ValueError):
    """These configs cannot be trained as one population; the message says why."""


def constant_weights(cfg: RunConfig, task_names: list[str]) -> torch.Tensor:
    """The (T,) float64 task weights of a constant-weight balancer ("fixed" or "ew")."""
    if cfg.balancer not in BATCHABLE_BALANCERS:
        raise PopulationError(
            f"balancer {cfg.balancer!r} changes its task weights during training from each run's own "
            f"losses or gradients; only constant weights ({', '.join(BATCHABLE_BALANCERS)}) are batched"
        )
    bal = build_balancer(cfg.balancer, task_names, cfg.balancer_params)
    w = bal.weights(torch.zeros(len(task_names), dtype=torch.float64), None)  # type: ignore[attr-defined,arg-type]
    return w.detach().to(torch.float64)


def config_problem(cfgs: Sequence[RunConfig]) -> str | None:
    """Why these configs cannot share one population (None when they can), from the configs alone."""
    if not cfgs:
        return "no runs to train"
    first = cfgs[0]
    for c in cfgs:
        if c.balancer not in BATCHABLE_BALANCERS:
            return (
                f"balancer {c.balancer!r} adapts its task weights from each run's own losses or "
                f"gradients; a population batches constant weights only ({', '.join(BATCHABLE_BALANCERS)})"
            )
        for f in SHARED_FIELDS:
            if getattr(c, f) != getattr(first, f):
                return f"the runs differ in {f!r} ({getattr(first, f)!r} vs {getattr(c, f)!r})"
    return None


# ---------------------------------------------------------------------------------- helpers


def _gather(split: Split, idx: torch.Tensor) -> Batch:
    return (
        {k: v[idx] for k, v in split.features.items()},
        {k: v[idx] for k, v in split.targets.items()},
        {k: v[idx] for k, v in split.masks.items()},
    )


def _stack_batches(batches: list[Batch], member_group: torch.Tensor | None) -> Batch:
    """One batch per seed group -> one batch with a leading member dimension (K, B, ...)."""
    if member_group is None:  # one group: the batch is shared by all members (vmap in_dims None)
        return batches[0]
    out: list[dict[str, torch.Tensor]] = []
    for part in range(3):
        keys = batches[0][part].keys()
        out.append({k: torch.stack([b[part][k] for b in batches])[member_group] for k in keys})
    return out[0], out[1], out[2]


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


@dataclass
class _Member:
    index: int
    cfg: RunConfig
    writer: Writer
    group: int  # index of its seed group
    weights: torch.Tensor  # (T,) float64
    state: str = "running"  # running | stopped (early stop) | cancelled | failed
    error: str = ""
    steps: int = 0
    best: BestEpoch = field(default_factory=BestEpoch)

    @property
    def active(self) -> bool:
        return self.state == "running"


class PopulationModel:
    """K members of one architecture as stacked parameters.

    Two routes, one interface. The hand-batched one (`engine.stacked`, for shared-bottom, OMoE and
    MMoE): the parameters live in a few fused leaves and the forward is a few large matrix
    products over all members. The general one: `torch.func.stack_module_state` and
    `vmap(functional_call(...))` over a copy of member 0 (`base`). `fast=False` forces vmap.

    `params` maps each state-dict name of one member to a (K, ...) tensor (views of the leaves on
    the hand-batched route); `optim_tensors()` are the tensors an optimiser updates.
    """

    def __init__(self, models: list[MTLModel], fast: bool = True) -> None:
        self.stacked: StackedMoE | None = stack_models(models) if fast else None
        self.base = copy.deepcopy(models[0])
        # A pristine copy for `member_model`: vmapped forward passes may leave vmap-wrapped tensors
        # on `base` (MMoE keeps its last gate values), which cannot be deep-copied. The
        # hand-batched route never runs `base`.
        self._template = copy.deepcopy(models[0]) if self.stacked is None else self.base
        if self.stacked is None:
            params, buffers = stack_module_state(models)  # type: ignore[arg-type]
            self._params: dict[str, torch.Tensor] = params
            self.buffers: dict[str, torch.Tensor] = buffers
        else:
            self._params = {}
            self.buffers = {}
        self.k = len(models)
        self.tasks = list(models[0].tasks)
        self.task_names = models[0].task_names
        names = {id(p): n for n, p in models[0].named_parameters()}
        self.shared_names = [names[id(p)] for p in models[0].shared_parameters()]
        self.blocks = {b: [names[id(p)] for p in ps] for b, ps in models[0].shared_blocks().items()}
        self.randomness = "different" if _has_dropout(self.base) else "error"
        self._loss_in_vmap = True

    @property
    def route(self) -> str:
        """ "hand-batched" or "vmap"."""
        return "vmap" if self.stacked is None else "hand-batched"

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self._params if self.stacked is None else self.stacked.unpack()

    def optim_tensors(self) -> list[torch.Tensor]:
        """The leaf tensors an optimiser updates (one optimiser over them is K optimisers)."""
        return list(self._params.values() if self.stacked is None else self.stacked.leaves.values())

    # ---- functional pieces --------------------------------------------------------------

    def _outputs_one(self, p: dict, b: dict, feats: dict) -> dict[str, torch.Tensor]:
        return functional_call(self.base, (p, b), (feats,))

    def _losses_one(
        self, p: dict, b: dict, feats: dict, targets: dict, masks: dict
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self._outputs_one(p, b, feats)
        ld = self.base.task_losses(out, targets, masks)
        return torch.stack([ld[t] for t in self.task_names]), out

    def outputs(
        self, feats: dict, batched: bool, params: dict | None = None, keep_trunk: bool = False
    ) -> dict[str, torch.Tensor]:
        """Raw outputs, task -> (K, B, ...). `keep_trunk`: the next `statistics_and_grads` may
        split the backward pass at the experts (hand-batched MMoE)."""
        if self.stacked is not None:
            leaves = None if params is None else self.stacked.pack(params)
            return self.stacked.outputs(feats, batched, leaves, keep_trunk=keep_trunk)
        p = self._params if params is None else params
        fn = vmap(self._outputs_one, in_dims=(0, 0, 0 if batched else None), randomness=self.randomness)
        return fn(p, self.buffers, feats)

    def forward(
        self, batch: Batch, batched: bool, params: dict | None = None, keep_trunk: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(K, T) task losses of every member on its batch (one shared batch when not `batched`)
        and the raw outputs, task -> (K, B, ...)."""
        feats, targets, masks = batch
        if self.stacked is not None:
            out = self.outputs(feats, batched, params, keep_trunk=keep_trunk)
            return batched_task_losses(self.tasks, out, targets, masks), out
        p = self._params if params is None else params
        d = 0 if batched else None
        if self._loss_in_vmap:
            try:
                fn = vmap(self._losses_one, in_dims=(0, 0, d, d, d), randomness=self.randomness)
                return fn(p, self.buffers, feats, targets, masks)
            except RuntimeError:
                # A loss with data-dependent shapes (label masks select rows): vmap the forward only
                # and compute each member's losses with the model's own `task_losses`.
                self._loss_in_vmap = False
        out = self.outputs(feats, batched, p)
        rows = []
        for k in range(self.k):
            ok = {t: v[k] for t, v in out.items()}
            tk = {t: v[k] for t, v in targets.items()} if batched else targets
            mk = {t: v[k] for t, v in masks.items()} if batched else masks
            ld = self.base.task_losses(ok, tk, mk)
            rows.append(torch.stack([ld[t] for t in self.task_names]))
        return torch.stack(rows), out

    def losses(
        self, batch: Batch, batched: bool, params: dict | None = None, keep_trunk: bool = False
    ) -> torch.Tensor:
        """(K, T) task losses (see `forward`)."""
        return self.forward(batch, batched, params, keep_trunk=keep_trunk)[0]

    def member_state(self, k: int, params: dict | None = None) -> dict[str, torch.Tensor]:
        """Member k's state_dict (parameters and buffers), detached copies."""
        p = self.params if params is None else params
        state = {n: v[k].detach().clone() for n, v in p.items()}
        state.update({n: v[k].detach().clone() for n, v in self.buffers.items()})
        keys = self._template.state_dict().keys()  # non-persistent buffers are not state
        return {n: state[n] for n in keys}

    def member_model(self, k: int, state: dict[str, torch.Tensor] | None = None) -> MTLModel:
        """A standalone model holding member k's weights (or the given state)."""
        model = copy.deepcopy(self._template)
        model.load_state_dict(state if state is not None else self.member_state(k))
        return model

    # ---- per-task gradients -------------------------------------------------------------

    def task_grads(self, losses: torch.Tensor, retain_graph: bool = False) -> list[list[torch.Tensor | None]]:
        """Per task t, the gradient of sum_k losses[k, t] w.r.t. each of `optim_tensors()`:
        member k's slice of it is member k's own gradient of its task-t loss (the members share no
        parameters). One backward pass per task."""
        T = losses.shape[1]
        leaves = self.optim_tensors()
        out: list[list[torch.Tensor | None]] = []
        for t in range(T):
            g = torch.autograd.grad(
                losses[:, t].sum(), leaves, retain_graph=retain_graph or t < T - 1, allow_unused=True
            )
            out.append(list(g))
        return out

    def _named_grads(self, grads: list[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """One task's per-leaf gradients as per-name (K, ...) tensors (names of unused leaves are
        left out)."""
        if self.stacked is None:
            return {n: g for n, g in zip(self._params, grads, strict=True) if g is not None}
        used = {n: g for n, g in zip(self.stacked.leaves, grads, strict=True) if g is not None}
        return self.stacked.unpack(used)

    def shared_grams(self, named: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Per-member Gramians of the task gradients w.r.t. the shared parameters, float64:
        "all" (every shared parameter) and one per shared block, each (K, T, T). `named[t]`
        maps parameter names to task t's (K, ...) gradients (a missing name: zeros)."""
        K, T = self.k, len(named)
        per_name: dict[str, torch.Tensor] = {}
        for name in self.shared_names:
            present = [nt[name] for nt in named if name in nt]
            if not present:  # no task reaches this parameter
                continue
            rows = [(nt[name] if name in nt else torch.zeros_like(present[0])).reshape(K, -1) for nt in named]
            v = torch.stack(rows, dim=1)  # (K, T, n)
            per_name[name] = torch.bmm(v, v.transpose(1, 2)).double()
        zero = torch.zeros((K, T, T), dtype=torch.float64, device=self.optim_tensors()[0].device)
        out = {"all": sum(per_name.values(), zero)}
        for block, names in self.blocks.items():
            inside = [per_name[n] for n in names if n in per_name]
            if inside:
                out[block] = sum(inside, zero)
        return out

    def statistics_and_grads(self, losses: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """For a step with gradient statistics: the per-member Gramians of the task gradients
        w.r.t. the shared parameters (`shared_grams`), and every leaf's `.grad` set to the step's
        gradient sum_t weights[:, t] grad L_t (weights (K, T)), from the same backward passes.

        Hand-batched MMoE run forward with `keep_trunk`: one pass through the heads and one per
        task through the experts (`StackedMoE.trunk_grads`); otherwise one pass per task through
        everything (`task_grads`)."""
        leaves = self.optim_tensors()
        trunk = self.stacked.trunk_grads(losses) if self.stacked is not None else None
        if trunk is None:
            grads = self.task_grads(losses)
            named = [self._named_grads(g) for g in grads]
            _set_weighted_grads(leaves, grads, weights)
            return self.shared_grams(named)
        assert self.stacked is not None
        per_task, heads = trunk
        experts = list(per_task[0])
        _set_weighted_grads(
            [self.stacked.leaves[n] for n in experts], [[pt[n] for n in experts] for pt in per_task], weights
        )
        K, T = weights.shape
        for n, g in heads.items():  # leaves (K, T, ...): slice t is reached by task t only
            leaf = self.stacked.leaves[n]
            leaf.grad = None
            if g is not None:
                w = weights.view(K, T, *([1] * (g.dim() - 2)))
                leaf.grad = torch.empty_like(leaf, memory_format=torch.preserve_format).copy_(g * w)
        named = [self.stacked.unpack({n: g for n, g in pt.items() if g is not None}) for pt in per_task]
        return self.shared_grams(named)

    def shared_jacobians(self, losses: torch.Tensor) -> torch.Tensor:
        """(K, T, P) per-member Jacobians of the task losses w.r.t. the shared parameters
        (columns in `shared_names` order, as `engine.gradients.jacobian`), graph retained."""
        K, T = losses.shape
        if self.stacked is not None:
            named = [self._named_grads(g) for g in self.task_grads(losses, retain_graph=True)]
            params = self.params
            cols = [
                [
                    nt[n].reshape(K, -1) if n in nt else params[n].new_zeros(K, params[n][0].numel())
                    for n in self.shared_names
                ]
                for nt in named
            ]
            return torch.stack([torch.cat(c, dim=1) for c in cols], dim=1)
        tensors = [self._params[n] for n in self.shared_names]
        eye = torch.eye(T, dtype=losses.dtype, device=losses.device)
        grad_out = eye[:, None, :].expand(T, K, T).contiguous()
        grads = torch.autograd.grad(
            losses,
            tensors,
            grad_outputs=grad_out,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
        )
        cols = [
            (g if g is not None else torch.zeros((T, *t.shape), dtype=t.dtype, device=t.device)).reshape(
                T, K, -1
            )
            for g, t in zip(grads, tensors, strict=True)
        ]
        return torch.cat(cols, dim=2).transpose(0, 1)


# ------------------------------------------------------------------------------- evaluation


def _batched_metric(metric: str, y: np.ndarray, P: np.ndarray) -> list[float] | None:
    """Values of `metric` for each row of predictions P (K', n[, C]) against labels y (n,), for
    the metrics numpy computes for many members at once with `engine.metrics`' float32
    arithmetic; None for the others (computed member by member with `engine.metrics.compute`)."""
    if metric == "mse":
        return [float(v) for v in np.mean((y[None, :] - P) ** 2, axis=1)]
    if metric == "mae":
        return [float(v) for v in np.mean(np.abs(P - y[None, :]), axis=1)]
    if metric == "accuracy":
        return [float(v) for v in np.mean((P >= 0.5) == (y[None, :] >= 0.5), axis=1)]
    if metric == "multi_accuracy":
        return [float(v) for v in np.mean(P.argmax(axis=2) == y[None, :], axis=1)]
    return None


@torch.no_grad()
def evaluate_population(
    pop: PopulationModel,
    splits: list[Split],
    member_group: torch.Tensor | None,
    data: MTLData,
    members: Sequence[int],
    params: dict[str, torch.Tensor] | None = None,
    rows: int = EVAL_BATCH,
) -> dict[int, dict[str, dict[str, float]]]:
    """Per-member metrics on each member's split (mirrors `engine.train.evaluate`), `rows` rows
    per forward pass.

    `splits[g]` is seed group g's split; all groups have the same number of rows.
    """
    pop.base.eval()
    try:
        n = len(splits[0])
        batched = member_group is not None
        K = pop.k
        device = next(iter(splits[0].targets.values())).device
        preds: dict[str, list[torch.Tensor]] = {t.name: [] for t in data.tasks}
        loss_sums = torch.zeros(K, len(data.tasks), dtype=torch.float64)
        counts = torch.zeros(K, len(data.tasks), dtype=torch.float64)
        for start in range(0, n, rows):
            idx = torch.arange(start, min(start + rows, n), device=device)
            batch = _stack_batches([_gather(s, idx) for s in splits], member_group)
            masks = batch[2]
            losses_t, out = pop.forward(batch, batched, params)
            losses = losses_t.double().cpu()
            for j, t in enumerate(data.tasks):
                m = masks.get(t.name)
                if m is None:
                    cnt = torch.full((K,), float(len(idx)), dtype=torch.float64)
                else:
                    cnt = m.reshape(-1, len(idx)).sum(dim=1).double().cpu().expand(K)
                loss_sums[:, j] += losses[:, j] * cnt
                counts[:, j] += cnt
            for name, p in pop.base.predict(out).items():
                preds[name].append(p.float().cpu())
        result: dict[int, dict[str, dict[str, float]]] = {k: {} for k in members}
        groups: dict[int, list[int]] = {}
        for k in members:
            groups.setdefault(int(member_group[k]) if member_group is not None else 0, []).append(k)
        for j, t in enumerate(data.tasks):
            P_all = torch.cat(preds[t.name], dim=1).numpy()  # (K, n[, C])
            for g, ks in groups.items():
                split = splits[g]
                y = split.targets[t.name].cpu().numpy()
                P = P_all[ks]
                mask = split.masks.get(t.name)
                if mask is not None:
                    keep = mask.cpu().numpy().astype(bool)
                    y, P = y[keep], P[:, keep]
                vals = [{"loss": float(loss_sums[k, j] / max(float(counts[k, j]), 1.0))} for k in ks]
                for metric in t.metrics:
                    got = _batched_metric(metric, y, P) if len(y) else [float("nan")] * len(ks)
                    if got is None:
                        got = [M.compute(metric, y, P[i]) for i in range(len(ks))]
                    for v, x in zip(vals, got, strict=True):
                        v[metric] = x
                for k, v in zip(ks, vals, strict=True):
                    result[k][t.name] = v
        return result
    finally:
        pop.base.train()


# --------------------------------------------------------------------------------- training


def population_optimizer(cfg: RunConfig, tensors: list[torch.Tensor]) -> torch.optim.Optimizer:
    """`engine.train`'s optimiser (same class and settings) over the population's stacked tensors,
    as one fused kernel per step where torch has one, else the multi-tensor (foreach) one. Adam,
    AdamW and SGD are elementwise: one optimiser over the stacked tensors is K independent ones."""
    base = _make_optimizer(cfg, tensors)  # type: ignore[arg-type]
    accepted = inspect.signature(type(base)).parameters
    settings = {k: v for k, v in base.defaults.items() if k in accepted and k not in ("foreach", "fused")}
    for extra in ({"fused": True}, {"foreach": True}):
        try:
            return type(base)(tensors, **settings, **extra)
        except (RuntimeError, TypeError, ValueError):  # no such kernel for this class/device/dtype
            continue
    return base


def _set_weighted_grads(
    leaves: list[torch.Tensor], grads: list[list[torch.Tensor | None]], weights: torch.Tensor
) -> None:
    """leaf.grad = sum_t weights[:, t] * grads[t][leaf] (member k's rows scaled by its weights)."""
    K, T = weights.shape
    for i, leaf in enumerate(leaves):
        total: torch.Tensor | None = None
        for t in range(T):
            g = grads[t][i]
            if g is None:
                continue
            part = weights[:, t].view(K, *([1] * (g.dim() - 1))) * g
            if total is None:
                # the gradient must have its parameter's memory layout (what autograd's
                # accumulation guarantees; a fused optimiser reads both as flat memory)
                total = torch.empty_like(leaf, memory_format=torch.preserve_format).copy_(part)
            else:
                total.add_(part)
        leaf.grad = total


def grad_stat_rows(
    grams: dict[str, torch.Tensor], task_names: list[str], blocks: list[str]
) -> list[list[GradStatRow]]:
    """Each member's gradient-statistics rows (as `engine.gradients.gradient_stats` makes them
    from its Jacobian) from the population's (K, T, T) Gramians: "all", then every block when
    there is more than one."""
    layers = ["all"] + (blocks if len(blocks) > 1 else [])
    G = torch.stack([grams[name] for name in layers], dim=1).detach().double().cpu()  # (K, L, T, T)
    C = cosine_matrix(G).tolist()
    N = torch.sqrt(torch.clamp(torch.diagonal(G, dim1=-2, dim2=-1), min=0.0)).tolist()
    T = len(task_names)
    out: list[list[GradStatRow]] = []
    for Ck, Nk in zip(C, N, strict=True):
        rows: list[GradStatRow] = []
        for layer, c, nrm in zip(layers, Ck, Nk, strict=True):
            for i in range(T):
                for j in range(i, T):
                    rows.append(GradStatRow(layer, task_names[i], task_names[j], c[i][j], nrm[i], nrm[j]))
        out.append(rows)
    return out


def model_problem(arch: str) -> str | None:
    """Why architecture `arch` cannot be trained as a population, from its class alone."""
    cls = MODELS.get(arch)
    if cls is not None and cls.training_losses is not MTLModel.training_losses:
        return (
            f"architecture {arch!r} trains with its own procedure ({cls.__name__} overrides "
            f"training_losses, e.g. episodic meta-training); a population trains the loss "
            f"sum_t w_t L_t of forward + task_losses only, so each run is trained on its own"
        )
    return None


def batch_problem(cfgs: Sequence[RunConfig]) -> str | None:
    """Why these configs cannot be trained as one population (None when they can).

    Checks the configs (`config_problem`) and the architecture's class (`model_problem`: one
    with its own training procedure is refused), then builds two tiny members and runs one
    batched training step on two rows the way `train_population` will (hand-batched or vmap):
    an architecture whose forward does not run under `vmap` (in-place buffer updates,
    data-dependent shapes, ...) reports the error here.
    """
    problem = config_problem(cfgs) or model_problem(cfgs[0].arch)
    if problem is not None:
        return problem
    cfg = cfgs[0]
    route = "torch.func.vmap"
    try:
        resolved = resolve(cfg)
        data = load_dataset(cfg.dataset, resolved["dataset"], cfg.seed).select_tasks(resolved["tasks"])
        with torch.random.fork_rng(devices=[]):
            models = [build_model(cfg.arch, data.features, data.tasks, resolved["arch"]) for _ in range(2)]
        pop = PopulationModel(models)
        if pop.stacked is not None:
            route = "the hand-batched population (engine.stacked)"
        pop.buffers = {k: v.clone() for k, v in pop.buffers.items()}
        idx = torch.arange(min(2, len(data.train)))
        batch = _gather(data.train, idx)
        with torch.random.fork_rng(devices=[]):
            losses = pop.losses(batch, batched=False)
            torch.autograd.grad(losses.sum(), pop.optim_tensors(), allow_unused=True)
    except Exception as e:  # any failure means "not batchable"; the reason is shown to the user
        return f"architecture {cfg.arch!r} does not run batched under {route} ({type(e).__name__}: {e})"
    return None


def train_population(
    cfgs: Sequence[RunConfig],
    writers: Sequence[Writer] | None = None,
    checkpoint_paths: Sequence[Path | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    route: str = "auto",
) -> list[TrainResult]:
    """Train the runs `cfgs` as one population; rows of member k go to `writers[k]`.

    Every member must use a constant-weight balancer and share the fields in `SHARED_FIELDS`
    (PopulationError otherwise). Returns one `TrainResult` per member: `state` is "finished",
    "cancelled" or "failed" (a member whose loss became NaN/inf fails alone; its message is in
    `error_of(result)`). `progress(step, total_steps)` is called after every step. `route`
    "auto" batches by hand where `engine.stacked` knows the architecture, else with vmap;
    "vmap" always uses vmap (tests compare the two).
    """
    problem = config_problem(cfgs) or model_problem(cfgs[0].arch)
    if problem is not None:
        raise PopulationError(problem)
    t0 = time.perf_counter()
    cfgs = list(cfgs)
    K = len(cfgs)
    writers = list(writers) if writers is not None else [NullWriter() for _ in cfgs]
    paths = list(checkpoint_paths) if checkpoint_paths is not None else [None] * K
    if len(writers) != K or len(paths) != K:
        raise ValueError("one writer and one checkpoint path per config")
    cfg = cfgs[0]
    resolved = resolve(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)

    # ---- data: one split (and one data-order generator) per distinct seed, as train() does
    seeds = list(dict.fromkeys(c.seed for c in cfgs))
    group_of = {s: g for g, s in enumerate(seeds)}
    datas: list[MTLData] = []
    for s in seeds:
        seed_everything(s)
        datas.append(load_dataset(cfg.dataset, resolved["dataset"], s).select_tasks(resolved["tasks"]))
    data = datas[0]
    sizes = {len(d.train) for d in datas}
    if len(sizes) != 1:
        raise PopulationError(f"the seeds' training splits differ in size ({sorted(sizes)})")
    trains = [_to_device(d.train, device) for d in datas]
    vals = [_to_device(d.val, device) for d in datas]
    tests = [_to_device(d.test, device) for d in datas]
    task_names = data.task_names
    member_group = torch.tensor([group_of[c.seed] for c in cfgs], device=device) if len(seeds) > 1 else None
    batched = member_group is not None

    # ---- members: each built exactly as train() builds its run's model
    models: list[MTLModel] = []
    members: list[_Member] = []
    for k, c in enumerate(cfgs):
        seed_everything(c.seed)
        models.append(build_model(c.arch, data.features, data.tasks, resolved["arch"]).to(device))
        w = constant_weights(c, task_names)
        members.append(_Member(k, c, writers[k], group_of[c.seed], w, best=BestEpoch(cfg.patience)))
    if route not in ("auto", "vmap"):
        raise ValueError(f"route must be 'auto' or 'vmap', got {route!r}")
    pop = PopulationModel(models, fast=route == "auto")  # copies the weights; `models` get the results
    W = torch.stack([m.weights for m in members]).to(device=device, dtype=torch.float32)
    leaves = pop.optim_tensors()
    optimizer = population_optimizer(cfg, leaves)
    # the shared blocks gradient statistics report (those with a shared parameter, as train() does)
    shared = set(pop.shared_names)
    stat_blocks = [b for b, names in pop.blocks.items() if any(nm in shared for nm in names)]
    n_params = sum(v[0].numel() for v in pop.params.values())
    n_shared = sum(pop.params[n][0].numel() for n in pop.shared_names)
    for m in members:
        m.writer.log_event(
            "info",
            f"training {cfg.arch} with {m.cfg.balancer} weights "
            f"{dict(zip(task_names, [round(float(x), 4) for x in m.weights], strict=True))} on {cfg.dataset} "
            f"({', '.join(task_names)}) on {describe(device)} as member {m.index + 1} of a population of {K} "
            f"(one batched model, {pop.route}): {len(data.train)} train / {len(data.val)} val / "
            f"{len(data.test)} test rows, {n_params} parameters ({n_shared} shared)",
        )
        if pop.randomness == "different":
            m.writer.log_event(
                "warning",
                "dropout is on: the population draws its dropout masks differently from a separate "
                "run, so this member matches a separate run in distribution, not bit for bit",
            )

    n = len(trains[0])
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    es_task, es_metric = _early_stopping_key(cfg, data)
    higher = M.higher_is_better(es_metric)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    log_stats_on = bool(pop.shared_names) and cfg.grad_stats_every > 0
    # evaluation rows per forward pass: K members' activations of about one training batch
    eval_rows = EVAL_BATCH if pop.stacked is None else max(cfg.batch_size, EVAL_BATCH // K)
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        perms = [torch.randperm(n, generator=g).to(device) for g in gens]
        for b in range(steps_per_epoch):
            batch = _stack_batches(
                [
                    _gather(tr, p[b * cfg.batch_size : (b + 1) * cfg.batch_size])
                    for tr, p in zip(trains, perms, strict=True)
                ],
                member_group,
            )
            stats_step = log_stats_on and step % cfg.grad_stats_every == 0
            losses = pop.losses(batch, batched, keep_trunk=stats_step)
            finite = torch.isfinite(losses).all(dim=1)
            if not bool(finite.all()):
                _fail_nonfinite(members, task_names, finite, losses, step, epoch, cfg)
            optimizer.zero_grad(set_to_none=True)
            alive = torch.tensor([m.active for m in members], device=device)
            Wa = torch.where(alive[:, None], W, torch.zeros_like(W))
            if stats_step:
                # the backward passes that give the statistics also give the step's gradient
                grams = pop.statistics_and_grads(torch.nan_to_num(losses), Wa)
                rows = grad_stat_rows(grams, task_names, stat_blocks)
                for m in members:
                    if m.active:
                        m.writer.log_grad_stats(step, rows[m.index])
            else:
                (Wa * torch.nan_to_num(losses)).sum().backward()
            optimizer.step()

            if step % cfg.log_every == 0:
                lv = losses.detach().cpu().tolist()
                for m in members:
                    if not m.active:
                        continue
                    m.writer.log_metrics(_train_loss_rows(step, epoch, task_names, lv[m.index]))
                    m.writer.log_task_weights(step, dict(zip(task_names, m.weights.tolist(), strict=True)))
            step += 1
            for m in members:
                if m.active:
                    m.steps = step
                    m.writer.set_progress(step, total_steps, epoch, cfg.epochs)
                    m.writer.maybe_flush()
                    if m.writer.cancel_requested():
                        m.state = "cancelled"
                        m.writer.log_event("info", f"cancelled at step {step} (epoch {epoch})")
            if progress is not None:
                progress(step, total_steps)
            if not any(m.active for m in members):
                break
        if not any(m.active for m in members):
            break

        active = [m.index for m in members if m.active]
        val = evaluate_population(pop, vals, member_group, data, active, rows=eval_rows)
        for m in members:
            if not m.active:
                continue
            v = val[m.index]
            m.writer.log_metrics(_metric_rows(step, epoch, "val", v))
            score = v[es_task][es_metric]
            score = score if higher else -score
            if m.best.observe(score, epoch, v, lambda m=m: pop.member_state(m.index)):
                m.state = "stopped"
                m.writer.log_event(
                    "info",
                    f"early stop after epoch {epoch}: "
                    f"no {es_task} {es_metric} gain for {m.best.bad_epochs} epochs",
                )
    seconds = time.perf_counter() - t0

    # ---- test metrics from each member's best epoch, checkpoints
    done = [m for m in members if m.state in ("running", "stopped")]
    results: list[TrainResult] = []
    test: dict[int, dict[str, dict[str, float]]] = {}
    if done:
        best = {
            name: torch.stack(
                [
                    (m.best.state[name] if m.best.state is not None else tensor[m.index].detach())
                    if m in done
                    else tensor[m.index].detach()
                    for m in members
                ]
            )
            for name, tensor in pop.params.items()
        }
        test = evaluate_population(
            pop, tests, member_group, data, [m.index for m in done], params=best, rows=eval_rows
        )
    for m in members:
        if m.state in ("running", "stopped"):
            model = models[m.index]  # member k's own model object: no deep copy per member
            model.load_state_dict(m.best.state if m.best.state is not None else pop.member_state(m.index))
            m.writer.log_metrics(_metric_rows(m.steps, m.best.epoch, "test", test[m.index]))
            if paths[m.index] is not None:
                save_checkpoint(paths[m.index], model, m.cfg, m.best.epoch)  # type: ignore[arg-type]
            m.writer.log_event(
                "info",
                f"finished in {seconds:.1f} s (the whole population of {K}); best epoch {m.best.epoch}",
            )
            res = TrainResult("finished", test[m.index], m.best.val, m.best.epoch, m.steps, seconds, model)
        else:
            res = TrainResult(m.state, {}, m.best.val, m.best.epoch, m.steps, seconds, None)
        res.error = m.error  # type: ignore[attr-defined]
        results.append(res)
    return results


def error_of(result: TrainResult) -> str:
    """The failure message of a population member's result ("" when it did not fail)."""
    return str(getattr(result, "error", ""))


def _fail_nonfinite(
    members: list[_Member],
    task_names: list[str],
    finite: torch.Tensor,
    losses: torch.Tensor,
    step: int,
    epoch: int,
    cfg: RunConfig,
) -> None:
    """Fail the members whose loss became NaN/inf (the others go on), with train()'s message."""
    lv = losses.detach().cpu().tolist()
    for m in members:
        if m.active and not bool(finite[m.index]):
            bad = [t for t, v in zip(task_names, lv[m.index], strict=True) if not np.isfinite(v)]
            m.state = "failed"
            m.error = (
                f"the loss of task(s) {', '.join(bad)} became {lv[m.index]} at step {step} (epoch {epoch}); "
                f"training stopped. Try a lower learning rate (now {cfg.lr}) or another balancer."
            )
            m.writer.log_event("error", m.error)
