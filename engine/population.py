"""Population training: K fixed-weight runs of one architecture trained together as one batched model.

A linear-scalarisation sweep (Miettinen, "Nonlinear Multiobjective Optimization", 1999, ch. 3.1)
trains the same architecture K times with different task-weight vectors w_k (and seeds). Here the
K members are stacked (`torch.func.stack_module_state`) and run through one
`vmap(functional_call(...))`, so every layer becomes one batched op over the K members (the
model-ensembling recipe of the torch.func docs): K times fewer Python and dispatch steps, one
data pipeline, one validation pass per epoch for all members. Each member keeps its own
parameters, its own optimiser state (Adam/AdamW/SGD are elementwise, so one optimiser over the
stacked tensors *is* K independent optimisers), its own data order, validation, early stopping,
best checkpoint and run directory.

What it buys depends on the device. On a GPU, small members leave the device idle and batching
fills it. On a CPU the batched matrix products are no faster per FLOP than one member's (the
small model's are already efficient), and the elementwise work (activations, gating, Adam)
grows K times and falls out of cache, so the gain over K sequential runs is modest
(bench/RESULTS.md measures it).

Equivalence with `engine.train.train`: member k is built exactly as a separate run of its config
would be: `seed_everything(seed)` before the model is built, the same `load_dataset(..., seed)`
split, one `torch.Generator().manual_seed(seed)` drawing the epoch permutations, the same
optimiser and loss `sum_t w_t L_t`. A population member therefore ends with the same parameters
as `train(cfg_k)` up to floating-point summation order (tests/test_population.py checks it).
Members whose seeds differ see different batches (their batches are gathered per member).

What can be batched: constant loss weights (balancers "fixed" and "ew") and architectures whose
forward runs under `vmap` (no in-place buffer updates such as batch norm, no data-dependent
shapes in the forward). `batch_problem` says why a set of configs cannot be batched;
`engine.sweeps.run_sweep` then falls back to sequential runs and logs that reason.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from engine import metrics as M
from engine.balancers import build_balancer
from engine.config import RunConfig, resolve
from engine.datasets import load_dataset
from engine.datasets.base import MTLData, Split
from engine.devices import describe, select_device
from engine.gradients import block_slices, gradient_stats
from engine.models import build_model
from engine.models.base import MTLModel
from engine.train import (
    EVAL_BATCH,
    NullWriter,
    TrainResult,
    Writer,
    _early_stopping_key,
    _make_optimizer,
    _metric_rows,
    _to_device,
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
    best_score: float = -math.inf
    best_epoch: int = 0
    best_val: dict[str, dict[str, float]] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0

    @property
    def active(self) -> bool:
        return self.state == "running"


class PopulationModel:
    """K members of one architecture as stacked parameters driven through `vmap`.

    `params`/`buffers` map names to (K, ...) tensors; `base` is a copy of member 0 that supplies
    the code (`forward`, `task_losses`, `predict`) for `functional_call`.
    """

    def __init__(self, models: list[MTLModel]) -> None:
        self.base = copy.deepcopy(models[0])
        # A pristine copy for `member_model`: forward passes may leave vmap-wrapped tensors on
        # `base` (MMoE keeps its last gate values), which cannot be deep-copied.
        self._template = copy.deepcopy(models[0])
        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        self.k = len(models)
        self.task_names = models[0].task_names
        names = {id(p): n for n, p in models[0].named_parameters()}
        self.shared_names = [names[id(p)] for p in models[0].shared_parameters()]
        self.blocks = {b: [names[id(p)] for p in ps] for b, ps in models[0].shared_blocks().items()}
        self.randomness = "different" if _has_dropout(self.base) else "error"
        self._loss_in_vmap = True

    # ---- functional pieces --------------------------------------------------------------

    def _outputs_one(self, p: dict, b: dict, feats: dict) -> dict[str, torch.Tensor]:
        return functional_call(self.base, (p, b), (feats,))

    def _losses_one(
        self, p: dict, b: dict, feats: dict, targets: dict, masks: dict
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self._outputs_one(p, b, feats)
        ld = self.base.task_losses(out, targets, masks)
        return torch.stack([ld[t] for t in self.task_names]), out

    def outputs(self, feats: dict, batched: bool, params: dict | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs, task -> (K, B, ...)."""
        p = self.params if params is None else params
        fn = vmap(self._outputs_one, in_dims=(0, 0, 0 if batched else None), randomness=self.randomness)
        return fn(p, self.buffers, feats)

    def forward(
        self, batch: Batch, batched: bool, params: dict | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(K, T) task losses of every member on its batch (one shared batch when not `batched`)
        and the raw outputs, task -> (K, B, ...)."""
        feats, targets, masks = batch
        p = self.params if params is None else params
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

    def losses(self, batch: Batch, batched: bool, params: dict | None = None) -> torch.Tensor:
        """(K, T) task losses (see `forward`)."""
        return self.forward(batch, batched, params)[0]

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

    def shared_jacobians(self, losses: torch.Tensor) -> torch.Tensor:
        """(K, T, P) per-member Jacobians of the task losses w.r.t. the shared parameters.

        One batched backward over the T task rows (`is_grads_batched`), graph retained."""
        K, T = losses.shape
        tensors = [self.params[n] for n in self.shared_names]
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


@torch.no_grad()
def evaluate_population(
    pop: PopulationModel,
    splits: list[Split],
    member_group: torch.Tensor | None,
    data: MTLData,
    members: Sequence[int],
    params: dict[str, torch.Tensor] | None = None,
) -> dict[int, dict[str, dict[str, float]]]:
    """Per-member metrics on each member's split (mirrors `engine.train.evaluate`).

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
        for start in range(0, n, EVAL_BATCH):
            idx = torch.arange(start, min(start + EVAL_BATCH, n), device=device)
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
        result: dict[int, dict[str, dict[str, float]]] = {}
        for k in members:
            g = int(member_group[k]) if member_group is not None else 0
            split = splits[g]
            vals_k: dict[str, dict[str, float]] = {}
            for j, t in enumerate(data.tasks):
                y = split.targets[t.name].cpu().numpy()
                p = torch.cat([c[k] for c in preds[t.name]]).numpy()
                mask = split.masks.get(t.name)
                if mask is not None:
                    keep = mask.cpu().numpy().astype(bool)
                    y, p = y[keep], p[keep]
                vals = {"loss": float(loss_sums[k, j] / max(float(counts[k, j]), 1.0))}
                for metric in t.metrics:
                    vals[metric] = M.compute(metric, y, p) if len(y) else float("nan")
                vals_k[t.name] = vals
            result[k] = vals_k
        return result
    finally:
        pop.base.train()


# --------------------------------------------------------------------------------- training


def batch_problem(cfgs: Sequence[RunConfig]) -> str | None:
    """Why these configs cannot be trained as one population (None when they can).

    Checks the configs (`config_problem`), then builds two tiny members and runs one batched
    training step on two rows: an architecture whose forward does not run under `vmap` (in-place
    buffer updates, data-dependent shapes, ...) reports the error here.
    """
    problem = config_problem(cfgs)
    if problem is not None:
        return problem
    cfg = cfgs[0]
    try:
        resolved = resolve(cfg)
        data = load_dataset(cfg.dataset, resolved["dataset"], cfg.seed).select_tasks(resolved["tasks"])
        with torch.random.fork_rng(devices=[]):
            models = [build_model(cfg.arch, data.features, data.tasks, resolved["arch"]) for _ in range(2)]
        pop = PopulationModel(models)
        pop.buffers = {k: v.clone() for k, v in pop.buffers.items()}
        idx = torch.arange(min(2, len(data.train)))
        batch = _gather(data.train, idx)
        with torch.random.fork_rng(devices=[]):
            losses = pop.losses(batch, batched=False)
            torch.autograd.grad(losses.sum(), list(pop.params.values()), allow_unused=True)
    except Exception as e:  # any failure means "not batchable"; the reason is shown to the user
        return (
            f"architecture {cfg.arch!r} does not run batched under torch.func.vmap ({type(e).__name__}: {e})"
        )
    return None


def train_population(
    cfgs: Sequence[RunConfig],
    writers: Sequence[Writer] | None = None,
    checkpoint_paths: Sequence[Path | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrainResult]:
    """Train the runs `cfgs` as one population; rows of member k go to `writers[k]`.

    Every member must use a constant-weight balancer and share the fields in `SHARED_FIELDS`
    (PopulationError otherwise). Returns one `TrainResult` per member: `state` is "finished",
    "cancelled" or "failed" (a member whose loss became NaN/inf fails alone; its message is in
    `error_of(result)`). `progress(step, total_steps)` is called after every step.
    """
    problem = config_problem(cfgs)
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
        members.append(_Member(k, c, writers[k], group_of[c.seed], w))
    pop = PopulationModel(models)
    del models
    W = torch.stack([m.weights for m in members]).to(device=device, dtype=torch.float32)
    optimizer = _make_optimizer(cfg, list(pop.params.values()))  # type: ignore[arg-type]
    # column ranges of each shared block inside one member's flat Jacobian (base holds member 0's shapes)
    base_params = dict(pop.base.named_parameters())
    blocks = block_slices(
        {b: [base_params[n] for n in names] for b, names in pop.blocks.items()},
        [base_params[n] for n in pop.shared_names],
    )
    n_params = sum(v[0].numel() for v in pop.params.values())
    n_shared = sum(pop.params[n][0].numel() for n in pop.shared_names)
    for m in members:
        m.writer.log_event(
            "info",
            f"training {cfg.arch} with {m.cfg.balancer} weights "
            f"{dict(zip(task_names, [round(float(x), 4) for x in m.weights], strict=True))} on {cfg.dataset} "
            f"({', '.join(task_names)}) on {describe(device)} as member {m.index + 1} of a population of {K} "
            f"(one batched model, torch.func.vmap): {len(data.train)} train / {len(data.val)} val / "
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
            losses = pop.losses(batch, batched)
            finite = torch.isfinite(losses).all(dim=1)
            if not bool(finite.all()):
                _fail_nonfinite(members, task_names, finite, losses, step, epoch, cfg)
            optimizer.zero_grad(set_to_none=True)
            if log_stats_on and step % cfg.grad_stats_every == 0:
                J = pop.shared_jacobians(losses)
                for m in members:
                    if m.active:
                        m.writer.log_grad_stats(step, gradient_stats(J[m.index], task_names, blocks))
            alive = torch.tensor([m.active for m in members], device=device)
            weighted = torch.where(alive[:, None], W, torch.zeros_like(W)) * torch.nan_to_num(losses)
            weighted.sum().backward()
            optimizer.step()

            if step % cfg.log_every == 0:
                lv = losses.detach().cpu().tolist()
                for m in members:
                    if not m.active:
                        continue
                    m.writer.log_metrics(
                        [
                            {
                                "step": step,
                                "epoch": epoch,
                                "split": "train",
                                "task": t,
                                "metric": "loss",
                                "value": v,
                            }
                            for t, v in zip(task_names, lv[m.index], strict=True)
                        ]
                    )
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
        val = evaluate_population(pop, vals, member_group, data, active)
        for m in members:
            if not m.active:
                continue
            v = val[m.index]
            m.writer.log_metrics(_metric_rows(step, epoch, "val", v))
            score = v[es_task][es_metric]
            score = score if higher else -score
            if m.best_state is None or score > m.best_score:
                m.best_score, m.best_val, m.best_epoch, m.bad_epochs = score, v, epoch, 0
                m.best_state = pop.member_state(m.index)
            else:
                m.bad_epochs += 1
                if cfg.patience and m.bad_epochs >= cfg.patience:
                    m.state = "stopped"
                    m.writer.log_event(
                        "info",
                        f"early stop after epoch {epoch}: "
                        f"no {es_task} {es_metric} gain for {m.bad_epochs} epochs",
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
                    (m.best_state[name] if m.best_state is not None else tensor[m.index].detach())
                    if m in done
                    else tensor[m.index].detach()
                    for m in members
                ]
            )
            for name, tensor in pop.params.items()
        }
        test = evaluate_population(pop, tests, member_group, data, [m.index for m in done], params=best)
    for m in members:
        if m.state in ("running", "stopped"):
            model = pop.member_model(m.index, m.best_state)
            m.writer.log_metrics(_metric_rows(m.steps, m.best_epoch, "test", test[m.index]))
            if paths[m.index] is not None:
                save_checkpoint(paths[m.index], model, m.cfg, m.best_epoch)  # type: ignore[arg-type]
            m.writer.log_event(
                "info",
                f"finished in {seconds:.1f} s (the whole population of {K}); best epoch {m.best_epoch}",
            )
            res = TrainResult(
                "finished", test[m.index], m.best_val or {}, m.best_epoch, m.steps, seconds, model
            )
        else:
            res = TrainResult(m.state, {}, m.best_val or {}, m.best_epoch, m.steps, seconds, None)
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
