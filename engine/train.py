"""The training loop: one run, one process.

`train(cfg, writer)` loads the dataset, builds the model and balancer from the registries and
trains. Each step it computes the task losses, asks the balancer to fill the gradients (the
Jacobian is computed once and shared with the gradient statistics when both need it), steps the
optimiser (and the balancer's own optimiser of the shared parameters, for an optimiser-level
balancer such as AdaTask: `Balancer.shared_optimizer`) and hands rows to the writer. Validation
runs each epoch (early stopping on a chosen metric), test metrics come from the best epoch, and a
checkpoint is saved at the end.

There is no method-specific code here: what a method needs, it asks for through its interface.
"""

from __future__ import annotations

import copy
import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from engine import metrics as M
from engine.balancers import build_balancer
from engine.balancers.base import StepContext
from engine.best_epoch import BestEpoch
from engine.config import RunConfig, resolve
from engine.datasets import load_dataset
from engine.datasets.base import MTLData, Split
from engine.devices import describe, select_device
from engine.gradients import block_slices, gradient_stats
from engine.models import build_model
from engine.models.base import MTLModel

EVAL_BATCH = 8192


class TrainingError(RuntimeError):
    """Training stopped for a reason a user should read (NaN loss, bad data, ...)."""


class Writer(Protocol):
    def log_metrics(self, rows: list[dict[str, Any]]) -> None: ...
    def log_grad_stats(self, step: int, rows: list[Any]) -> None: ...
    def log_task_weights(self, step: int, weights: dict[str, float]) -> None: ...
    def log_balancer_stats(self, step: int, stats: dict[str, float]) -> None: ...
    def log_event(self, level: str, text: str) -> None: ...
    def set_progress(self, step: int, total_steps: int, epoch: int, epochs: int) -> None: ...
    def maybe_flush(self) -> None: ...
    def cancel_requested(self) -> bool: ...


class NullWriter:
    """Writer that keeps nothing; used when training in-process for tests and sweeps."""

    def __init__(self) -> None:
        self.metric_rows: list[dict[str, Any]] = []
        self.weight_rows: list[tuple[int, dict[str, float]]] = []
        self.grad_rows: list[tuple[int, list[Any]]] = []
        self.events: list[tuple[str, str]] = []

    def log_metrics(self, rows: list[dict[str, Any]]) -> None:
        self.metric_rows += rows

    def log_grad_stats(self, step: int, rows: list[Any]) -> None:
        self.grad_rows.append((step, rows))

    def log_task_weights(self, step: int, weights: dict[str, float]) -> None:
        self.weight_rows.append((step, weights))

    def log_balancer_stats(self, step: int, stats: dict[str, float]) -> None:
        pass

    def log_event(self, level: str, text: str) -> None:
        self.events.append((level, text))

    def set_progress(self, step: int, total_steps: int, epoch: int, epochs: int) -> None:
        pass

    def maybe_flush(self) -> None:
        pass

    def cancel_requested(self) -> bool:
        return False


@dataclass
class TrainResult:
    state: str  # finished | cancelled
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    best_val: dict[str, dict[str, float]] = field(default_factory=dict)
    best_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0
    model: MTLModel | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(split: Split, device: torch.device) -> Split:
    return Split(
        {k: v.to(device) for k, v in split.features.items()},
        {k: v.to(device) for k, v in split.targets.items()},
        {k: v.to(device) for k, v in split.masks.items()},
    )


@dataclass
class RunData:
    """A run's data on its device: what every trainer prepares before building its model."""

    device: torch.device
    data: MTLData
    train: Split
    val: Split
    test: Split


def prepare_run(cfg: RunConfig, resolved: dict[str, Any]) -> RunData:
    """Set the torch threads, pick the device, seed, load the run's data (its tasks selected)
    and move the splits to the device; then seed again, so the model built next starts from
    the same state whatever the data loading drew (`train` and `train_cosmos` share this)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    seed_everything(cfg.seed)
    data = load_dataset(cfg.dataset, resolved["dataset"], cfg.seed).select_tasks(resolved["tasks"])
    run = RunData(
        device,
        data,
        _to_device(data.train, device),
        _to_device(data.val, device),
        _to_device(data.test, device),
    )
    seed_everything(cfg.seed)
    return run


def _batch(split: Split, idx: torch.Tensor) -> tuple[dict, dict, dict]:
    return (
        {k: v[idx] for k, v in split.features.items()},
        {k: v[idx] for k, v in split.targets.items()},
        {k: v[idx] for k, v in split.masks.items()},
    )


@torch.no_grad()
def evaluate(model: MTLModel, split: Split, data: MTLData) -> dict[str, dict[str, float]]:
    """Per-task metrics plus the task loss on a split, in eval mode."""
    model.eval()
    n = len(split)
    preds: dict[str, list[torch.Tensor]] = {t.name: [] for t in data.tasks}
    loss_sums = {t.name: 0.0 for t in data.tasks}
    loss_counts = {t.name: 0 for t in data.tasks}
    for start in range(0, n, EVAL_BATCH):
        idx = torch.arange(
            start, min(start + EVAL_BATCH, n), device=next(iter(split.targets.values())).device
        )
        feats, targets, masks = _batch(split, idx)
        outputs = model(feats)
        losses = model.task_losses(outputs, targets, masks)
        for t in data.tasks:
            m = masks.get(t.name)
            cnt = int(m.sum()) if m is not None else len(idx)
            loss_sums[t.name] += float(losses[t.name]) * cnt
            loss_counts[t.name] += cnt
        for name, p in model.predict(outputs).items():
            preds[name].append(p.float().cpu())
    model.train()
    out: dict[str, dict[str, float]] = {}
    for t in data.tasks:
        y = split.targets[t.name].cpu().numpy()
        p = torch.cat(preds[t.name]).numpy()
        mask = split.masks.get(t.name)
        if mask is not None:
            keep = mask.cpu().numpy().astype(bool)
            y, p = y[keep], p[keep]
        vals = {"loss": loss_sums[t.name] / max(loss_counts[t.name], 1)}
        for metric in t.metrics:
            vals[metric] = M.compute(metric, y, p) if len(y) else float("nan")
        out[t.name] = vals
    return out


def _metric_rows(step: int, epoch: int, split: str, values: dict[str, dict[str, float]]) -> list[dict]:
    return [
        {"step": step, "epoch": epoch, "split": split, "task": task, "metric": metric, "value": float(v)}
        for task, ms in values.items()
        for metric, v in ms.items()
    ]


def _train_loss_rows(step: int, epoch: int, task_names: list[str], losses: list[float]) -> list[dict]:
    """The per-task training-loss rows of one logged step."""
    values = {t: {"loss": v} for t, v in zip(task_names, losses, strict=True)}
    return _metric_rows(step, epoch, "train", values)


def _early_stopping_key(cfg: RunConfig, data: MTLData) -> tuple[str, str]:
    if cfg.early_stopping_metric:
        task, _, metric = cfg.early_stopping_metric.partition(":")
        return task, metric
    first = data.tasks[0]
    return first.name, first.primary_metric


def _make_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def train(
    cfg: RunConfig,
    writer: Writer | None = None,
    progress: bool = False,
    checkpoint_path: Path | None = None,
) -> TrainResult:
    """Train one run described by `cfg`; rows go to `writer`. Raises TrainingError on NaN/inf."""
    writer = writer or NullWriter()
    resolved = resolve(cfg)
    t0 = time.perf_counter()
    run = prepare_run(cfg, resolved)
    device, data = run.device, run.data
    train_split, val_split, test_split = run.train, run.val, run.test
    task_names = data.task_names
    model = build_model(cfg.arch, data.features, data.tasks, resolved["arch"]).to(device)
    balancer = build_balancer(cfg.balancer, task_names, resolved["balancer"]).to(device)
    shared = model.shared_parameters()
    task_params = model.task_specific_parameters()
    # an optimiser-level balancer (AdaTask) may own the update of the shared parameters
    shared_opt = balancer.shared_optimizer(shared, cfg.lr, cfg.weight_decay) if shared else None
    owned = {id(p) for p in shared} if shared_opt is not None else set()
    optimizer = _make_optimizer(
        cfg, [p for p in model.parameters() if id(p) not in owned] + balancer.parameters()
    )
    optimizers = [optimizer] if shared_opt is None else [optimizer, shared_opt]
    blocks = block_slices(model.shared_blocks(), shared) if shared else {}
    writer.log_event(
        "info",
        f"training {cfg.arch} with {cfg.balancer} on {cfg.dataset} ({', '.join(task_names)}) on "
        f"{describe(device)}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test rows, "
        f"{sum(p.numel() for p in model.parameters())} parameters ({sum(p.numel() for p in shared)} shared)",
    )

    representation = cfg.gradients == "representation"
    warned_representation = False
    n = len(train_split)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    es_task, es_metric = _early_stopping_key(cfg, data)
    higher = M.higher_is_better(es_metric)
    best = BestEpoch(cfg.patience)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    state = "finished"
    stop_signal = {"term": False}

    def _on_term(signum: int, frame: object) -> None:
        stop_signal["term"] = True

    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread
        old_handler = None

    bar = tqdm(total=total_steps, desc=f"{cfg.arch}/{cfg.balancer}", unit="step", disable=not progress)
    model.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            perm = torch.randperm(n, generator=gen).to(device)
            for b in range(steps_per_epoch):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                feats, targets, masks = _batch(train_split, idx)
                loss_dict = model.training_losses(feats, targets, masks)
                losses = torch.stack([loss_dict[t] for t in task_names])
                if not torch.isfinite(losses).all():
                    bad = [t for t, v in zip(task_names, losses.tolist(), strict=True) if not np.isfinite(v)]
                    raise TrainingError(
                        f"the loss of task(s) {', '.join(bad)} became {losses.tolist()} at step {step} "
                        f"(epoch {epoch}); training stopped. Try a lower learning rate (now {cfg.lr}) "
                        f"or another balancer."
                    )
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                ctx = StepContext(
                    losses, task_names, shared, task_params, step, epoch, model, representation=representation
                )
                log_stats = bool(shared) and cfg.grad_stats_every > 0 and step % cfg.grad_stats_every == 0
                if log_stats:
                    ctx.jacobian()
                weights = balancer.backward(ctx)
                if ctx.representation_unavailable and not warned_representation:
                    warned_representation = True
                    writer.log_event(
                        "warning",
                        f"gradients 'representation': {cfg.arch}'s graph has no shared representation "
                        "that the task heads read (no trunk/head split), so the exact Jacobian is used",
                    )
                if log_stats:
                    writer.log_grad_stats(step, gradient_stats(ctx.jacobian(), task_names, blocks))
                for opt in optimizers:
                    opt.step()

                if step % cfg.log_every == 0:
                    lv = losses.detach().cpu().tolist()
                    wv = weights.detach().cpu().tolist()
                    rows = _train_loss_rows(step, epoch, task_names, lv)
                    writer.log_metrics(rows)
                    writer.log_task_weights(step, dict(zip(task_names, wv, strict=True)))
                    internals = {**balancer.internals(), **model.internals()}
                    if internals:
                        writer.log_balancer_stats(step, internals)
                step += 1
                bar.update(1)
                writer.set_progress(step, total_steps, epoch, cfg.epochs)
                writer.maybe_flush()
                if stop_signal["term"] or writer.cancel_requested():
                    state = "cancelled"
                    break
            if state == "cancelled":
                writer.log_event("info", f"cancelled at step {step} (epoch {epoch})")
                break

            val = evaluate(model, val_split, data)
            writer.log_metrics(_metric_rows(step, epoch, "val", val))
            score = val[es_task][es_metric]
            score = score if higher else -score
            bar.set_postfix({f"val {es_task} {es_metric}": f"{val[es_task][es_metric]:.4f}"})
            if best.observe(score, epoch, val, lambda: copy.deepcopy(model.state_dict())):
                writer.log_event(
                    "info",
                    f"early stop after epoch {epoch}: "
                    f"no {es_task} {es_metric} gain for {best.bad_epochs} epochs",
                )
                break
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)

    result = TrainResult(state=state, steps=step, best_val=best.val, best_epoch=best.epoch, model=model)
    if state == "cancelled":
        result.seconds = time.perf_counter() - t0
        return result

    if best.state is not None:
        model.load_state_dict(best.state)
    test = evaluate(model, test_split, data)
    writer.log_metrics(_metric_rows(step, best.epoch, "test", test))
    result.test = test
    result.seconds = time.perf_counter() - t0
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, model, cfg, best.epoch)
    writer.log_event("info", f"finished in {result.seconds:.1f} s; best epoch {best.epoch}")
    return result


def save_checkpoint(path: Path, model: MTLModel, cfg: RunConfig, epoch: int) -> None:
    """Tensors and plain types only, so `torch.load(path, weights_only=True)` reads it."""
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "config": json.dumps(cfg.model_dump()), "epoch": epoch}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickle of arbitrary objects)."""
    return torch.load(path, map_location="cpu", weights_only=True)
