"""Best-epoch bookkeeping and patience early stopping, one piece for every trainer
(engine.train, engine.population per member, engine.cosmos): the best validation score so far,
its epoch, metrics and a snapshot of the weights, and how many epochs have passed without gain."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class BestEpoch:
    """Higher scores are better (pass -loss for a loss). `patience` 0 never stops early."""

    patience: int = 0
    score: float = -math.inf
    epoch: int = 0
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0

    def observe(
        self,
        score: float,
        epoch: int,
        val: dict[str, dict[str, float]],
        snapshot: Callable[[], dict[str, torch.Tensor]],
    ) -> bool:
        """Record one epoch's validation. A gain (or the first epoch) keeps `snapshot()`; returns
        True when the patience is used up: the caller stops training."""
        if self.state is None or score > self.score:
            self.score, self.epoch, self.val, self.bad_epochs = score, epoch, val, 0
            self.state = snapshot()
            return False
        self.bad_epochs += 1
        return bool(self.patience) and self.bad_epochs >= self.patience
