"""What every dataset provides: its tasks, its feature layout and fixed seeded splits.

A dataset is loaded fully into memory as tensors (everything Seesaw ships is small). Each split
holds a feature dict (the model's batch keys) and a target dict (one tensor per task). A task may
carry a mask: rows where its label is defined (e.g. CVR only on clicked impressions); losses and
metrics use only those rows unless a model says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

TaskKind = Literal["binary", "regression", "multiclass"]

LOSS_BY_KIND: dict[str, str] = {
    "binary": "bce",
    "regression": "mse",
    "multiclass": "cross_entropy",
}
METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "logloss"),
    "regression": ("mse", "mae"),
    "multiclass": ("multi_accuracy", "multi_logloss"),
}


@dataclass(frozen=True)
class TaskSpec:
    """One prediction target. `metrics[0]` is the task's primary metric."""

    name: str
    kind: TaskKind
    n_classes: int = 1
    metrics: tuple[str, ...] = ()
    description: str = ""
    #: tasks whose positive label this one's implies (a funnel: purchase implies cart and click);
    #: cascade models (ESMM, ESM2) read it to accept only tasks that really form a chain
    implies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.metrics:
            object.__setattr__(self, "metrics", METRICS_BY_KIND[self.kind])

    @property
    def loss(self) -> str:
        return LOSS_BY_KIND[self.kind]

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def output_dim(self) -> int:
        return self.n_classes if self.kind == "multiclass" else 1


@dataclass(frozen=True)
class SequenceSpec:
    """Typed behaviour sequences: `seq_items` (B, L) item ids (0 = padding), `seq_types` (B, L)
    behaviour-type ids (0 = padding), `seq_mask` (B, L) bool."""

    n_items: int
    n_types: int
    max_len: int
    type_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSpec:
    """Batch layout. `dense` (B, n_dense) float32; `cat` (B, n_cat) int64 where column j takes
    values in [0, cat_cardinalities[j]); optional `user`/`item` (B,) int64 ids (also present in
    `cat` when they are model inputs) and optional sequences."""

    dense_names: tuple[str, ...] = ()
    cat_names: tuple[str, ...] = ()
    cat_cardinalities: tuple[int, ...] = ()
    sequence: SequenceSpec | None = None
    user_col: str | None = None  # name of the cat column holding the user id, if any
    item_col: str | None = None  # name of the cat column holding the item id, if any

    @property
    def n_dense(self) -> int:
        return len(self.dense_names)

    @property
    def n_cat(self) -> int:
        return len(self.cat_names)


@dataclass
class Split:
    """One split: features (batch keys -> tensors, first dim = rows), targets and label masks."""

    features: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))

    def subset(self, idx: torch.Tensor) -> Split:
        return Split(
            {k: v[idx] for k, v in self.features.items()},
            {k: v[idx] for k, v in self.targets.items()},
            {k: v[idx] for k, v in self.masks.items()},
        )


@dataclass
class MTLData:
    """A loaded dataset: tasks, features and train/val/test splits."""

    name: str
    tasks: list[TaskSpec]
    features: FeatureSpec
    train: Split
    val: Split
    test: Split
    info: dict[str, object] = field(default_factory=dict)

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"dataset {self.name!r} has no task {name!r}; tasks: {self.task_names}")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def select_tasks(self, names: list[str]) -> MTLData:
        """Keep only the named tasks (in that order)."""
        tasks = [self.task(n) for n in names]

        def keep(s: Split) -> Split:
            return Split(
                s.features,
                {n: s.targets[n] for n in names},
                {n: s.masks[n] for n in names if n in s.masks},
            )

        return MTLData(
            self.name,
            tasks,
            self.features,
            keep(self.train),
            keep(self.val),
            keep(self.test),
            self.info,
        )


class DatasetParams(BaseModel):
    """Base class of a dataset's parameters; subclasses add fields with bounds."""

    model_config = ConfigDict(extra="forbid")


class Dataset:
    """A dataset source. Subclasses set the class attributes and implement `load`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[DatasetParams]] = DatasetParams

    def tasks(self, params: DatasetParams) -> list[TaskSpec]:
        """The tasks this dataset offers, without loading the data (for the UI and validation)."""
        raise NotImplementedError

    def load(self, params: DatasetParams, seed: int) -> MTLData:
        """Load and split the data. The split depends on `seed` only, never on time."""
        raise NotImplementedError


def split_indices(
    n: int, seed: int, val_frac: float = 0.1, test_frac: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed seeded train/val/test row indices."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = round(n * test_frac)
    n_val = round(n * val_frac)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]
