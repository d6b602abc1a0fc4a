"""Reusable checks for architectures (imported by test_models.py and later architecture tests).

- `make_data`: a tiny seeded synthetic problem (4 dense + 2 categorical columns; a binary, a
  regression and a 3-class task that share some of their signal), built here so the model tests
  depend on no dataset implementation.
- `check_output_shapes`, `check_diagram`: the output and diagram contracts.
- `params_with_multi_task_grad`, `check_shared_declaration`, `check_all_params_reached`: what a
  model declares as shared must be exactly what more than one task's loss reaches by autograd.
- `train_briefly`, `constant_predictor_metric`: a short seeded run must beat the best constant
  predictor on every task (lower-is-better metrics: logloss / MSE / multiclass logloss).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import pytest
import torch
import torch.nn.functional as F

from engine.datasets.base import FeatureSpec, Split, TaskSpec
from engine.models import MODELS, validate_params
from engine.models.base import MTLModel

DIAGRAM_KINDS = {"input", "shared", "expert", "gate", "task", "output"}

FEATURES = FeatureSpec(dense_names=("d0", "d1", "d2", "d3"), cat_names=("c0", "c1"), cat_cardinalities=(5, 7))
TASKS = [
    TaskSpec("click", "binary"),
    TaskSpec("amount", "regression"),
    TaskSpec("segment", "multiclass", n_classes=3),
]


@dataclass
class SynthData:
    features: FeatureSpec
    tasks: list[TaskSpec]
    train: Split
    test: Split


class HasTrainTest(Protocol):
    """Anything with `train` and `test` splits (SynthData here, `MTLData` in the engine)."""

    train: Split
    test: Split


def make_data(n_train: int = 1024, n_test: int = 1024, seed: int = 0, dense_only: bool = False) -> SynthData:
    """Seeded synthetic rows; targets depend on dense and categorical columns, tasks overlap."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    d = torch.randn(n, 4, generator=g)
    c0 = torch.randint(0, 5, (n,), generator=g)
    c1 = torch.randint(0, 7, (n,), generator=g)
    e0 = torch.randn(5, generator=g)
    e1 = torch.randn(7, generator=g)
    if dense_only:  # the categorical effects come through dense columns instead
        e0, e1 = torch.zeros(5), torch.zeros(7)
    z = 1.5 * d[:, 0] - d[:, 1] + e0[c0]
    click = torch.bernoulli(torch.sigmoid(1.5 * z), generator=g)
    amount = d[:, 2] + 0.5 * d[:, 0] + torch.relu(d[:, 3]) + e1[c1] + 0.3 * torch.randn(n, generator=g)
    scores = torch.stack([d[:, 0] + e0[c0], d[:, 1] - d[:, 3], e1[c1] + d[:, 2]], dim=1)
    gumbel = -torch.log(-torch.log(torch.rand(n, 3, generator=g).clamp(1e-9, 1 - 1e-9)))
    segment = (2.0 * scores + gumbel).argmax(dim=1)

    if dense_only:
        features = FeatureSpec(dense_names=FEATURES.dense_names)
        x = {"dense": d}
    else:
        features = FEATURES
        x = {"dense": d, "cat": torch.stack([c0, c1], dim=1)}
    y = {"click": click, "amount": amount, "segment": segment}
    whole = Split(x, y)
    return SynthData(
        features, list(TASKS), whole.subset(torch.arange(n_train)), whole.subset(torch.arange(n_train, n))
    )


# ---------------------------------------------------------------------------------- contracts


def check_output_shapes(
    model: MTLModel, batch: dict[str, torch.Tensor], tasks: Sequence[TaskSpec]
) -> dict[str, torch.Tensor]:
    """One finite float output per task: (B,) for binary/regression, (B, C) for multiclass."""
    B = next(iter(batch.values())).shape[0]
    outputs = model(batch)
    assert set(outputs) == {t.name for t in tasks}, f"outputs {sorted(outputs)} != tasks"
    for t in tasks:
        out = outputs[t.name]
        want = (B,) if t.output_dim == 1 else (B, t.output_dim)
        assert tuple(out.shape) == want, f"{model.name}/{t.name}: shape {tuple(out.shape)}, want {want}"
        assert out.dtype.is_floating_point, f"{model.name}/{t.name}: dtype {out.dtype}"
        assert torch.isfinite(out).all(), f"{model.name}/{t.name}: non-finite outputs"
    return outputs


def _task_grads(
    model: MTLModel, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> dict[str, set[int]]:
    """Task -> ids of the parameters whose gradient from that task's loss is not all zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    losses = model.task_losses(model(batch), targets, {})
    reached: dict[str, set[int]] = {}
    for task, loss in losses.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        reached[task] = {
            id(p) for p, g in zip(params, grads, strict=True) if g is not None and bool(g.ne(0).any())
        }
    return reached


def params_with_multi_task_grad(
    model: MTLModel, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> set[int]:
    """Ids of the parameters that more than one task's loss gives a non-zero gradient."""
    counts: dict[int, int] = {}
    for ids in _task_grads(model, batch, targets).values():
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    return {i for i, c in counts.items() if c > 1}


def _names(model: MTLModel, ids: set[int]) -> list[str]:
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def check_shared_declaration(
    model: MTLModel, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> None:
    """`shared_parameters()` must be exactly the parameters reached by more than one task, and
    every block must hold parameters of this model, each in one block only."""
    own = {id(p) for p in model.parameters()}
    seen: dict[int, str] = {}
    for block, ps in model.shared_blocks().items():
        assert ps, f"{model.name}: shared block {block!r} is empty"
        for p in ps:
            assert id(p) in own, f"{model.name}: block {block!r} holds a parameter not in the model"
            assert id(p) not in seen, f"{model.name}: parameter in blocks {seen[id(p)]!r} and {block!r}"
            seen[id(p)] = block
    declared = {id(p) for p in model.shared_parameters()}
    actual = params_with_multi_task_grad(model, batch, targets)
    missing, extra = actual - declared, declared - actual
    assert not missing and not extra, (
        f"{model.name}: shared declaration differs from gradient flow\n"
        f"  reached by >1 task but not declared shared: {_names(model, missing)}\n"
        f"  declared shared but reached by <=1 task: {_names(model, extra)}"
    )
    specific = {id(p) for p in model.task_specific_parameters()}
    assert specific == own - declared, f"{model.name}: task_specific_parameters() is not the complement"


def check_all_params_reached(
    model: MTLModel, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> None:
    """Every trainable parameter gets a non-zero gradient from at least one task (nothing dead)."""
    reached = set().union(*_task_grads(model, batch, targets).values())
    dead = {id(p) for p in model.parameters() if p.requires_grad} - reached
    assert not dead, f"{model.name}: parameters no task's loss reaches: {_names(model, dead)}"


def check_diagram(model: MTLModel) -> dict[str, list]:
    """Unique node ids, known kinds, edges between existing nodes, one output node `out_<task>`
    labelled with the task per task, and every output reachable from an input node."""
    d = model.diagram()
    ids = [n[0] for n in d["nodes"]]
    assert len(ids) == len(set(ids)), f"{model.name}: duplicate diagram node ids"
    kinds = {n[0]: n[2] for n in d["nodes"]}
    assert set(kinds.values()) <= DIAGRAM_KINDS, f"{model.name}: unknown kinds {set(kinds.values())}"
    for src, dst in d["edges"]:
        assert src in kinds and dst in kinds, f"{model.name}: edge {src}->{dst} to an unknown node"
    for t in model.task_names:
        node = next((n for n in d["nodes"] if n[0] == f"out_{t}"), None)
        assert node is not None and node[1] == t and node[2] == "output", f"{model.name}: no output for {t}"
    frontier = [i for i, k in kinds.items() if k == "input"]
    seen = set(frontier)
    while frontier:
        cur = frontier.pop()
        for src, dst in d["edges"]:
            if src == cur and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    unreachable = [f"out_{t}" for t in model.task_names if f"out_{t}" not in seen]
    assert not unreachable, f"{model.name}: outputs not reachable from the input: {unreachable}"
    return d


# ------------------------------------------------------------------------------ learning check


def _metric(task: TaskSpec, pred: torch.Tensor, y: torch.Tensor) -> float:
    """Lower is better: logloss (binary, on probabilities), MSE, multiclass logloss."""
    if task.kind == "binary":
        return float(F.binary_cross_entropy(pred.clamp(1e-7, 1 - 1e-7), y.float()))
    if task.kind == "regression":
        return float(F.mse_loss(pred, y.float()))
    return float(F.nll_loss(torch.log(pred.clamp_min(1e-7)), y.long()))


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore. Tiny models are faster so, and on a busy
    2-core machine the default thread pool oversubscribes the cores (measured: 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_briefly(
    model: MTLModel,
    split: HasTrainTest,
    tasks: Sequence[TaskSpec],
    steps: int = 100,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 128,
) -> dict[str, float]:
    """Adam on the equal-weight sum of task losses for `steps` seeded minibatches; returns each
    task's test metric (see `_metric`). The model's initial weights are the caller's business."""
    g = torch.Generator().manual_seed(seed)
    train = split.train
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with single_thread():
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(train), (batch_size,), generator=g)
            part = train.subset(idx)
            losses = model.task_losses(model(part.features), part.targets, part.masks)
            opt.zero_grad()
            torch.stack(list(losses.values())).sum().backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            preds = model.predict(model(split.test.features))
    return {t.name: _metric(t, preds[t.name], split.test.targets[t.name]) for t in tasks}


def constant_predictor_metric(split: HasTrainTest, tasks: Sequence[TaskSpec]) -> dict[str, float]:
    """Test metric of the best constant fitted on train: base rate (binary), mean (regression),
    class frequencies (multiclass)."""
    out: dict[str, float] = {}
    for t in tasks:
        y_train, y_test = split.train.targets[t.name], split.test.targets[t.name]
        n = y_test.shape[0]
        if t.kind == "multiclass":
            freq = torch.bincount(y_train.long(), minlength=t.n_classes).float() / y_train.shape[0]
            pred = freq.expand(n, -1)
        else:
            pred = y_train.float().mean().expand(n)
        out[t.name] = _metric(t, pred, y_test)
    return out


def skip_unless_supported(
    name: str, params: dict | None, tasks: list[TaskSpec], features: FeatureSpec
) -> None:
    """Skip a generic check for an architecture whose optional `check_tasks(params, tasks)` or
    `check_features(params, features)` classmethod rejects the generic data (e.g. cascades
    need binary funnels, sequence models need behaviour sequences); they carry their own tests."""
    cls, p = MODELS[name], validate_params(name, params)
    checks = ((getattr(cls, "check_tasks", None), tasks), (getattr(cls, "check_features", None), features))
    for check, arg in checks:
        if check is not None:
            try:
                check(p, arg)
            except ValueError as e:
                pytest.skip(f"{name} does not serve the generic test data: {e}")
