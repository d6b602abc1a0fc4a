"""Task metrics with their directions, computed with scikit-learn.

Every metric knows whether higher or lower is better; Pareto fronts, early stopping,
delta-m and the dashboard read the direction from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    fn: Callable[[np.ndarray, np.ndarray], float]
    label: str

    @property
    def direction(self) -> str:
        return "max" if self.higher_is_better else "min"


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(y, p))


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(skm.log_loss(y, p, labels=[0, 1]))


def _accuracy_binary(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p >= 0.5) == (y >= 0.5)))


def _mse(y: np.ndarray, p: np.ndarray) -> float:
    return float(skm.mean_squared_error(y, p))


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(skm.mean_absolute_error(y, p))


def _multi_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == y))


def _multi_logloss(y: np.ndarray, p: np.ndarray) -> float:
    return float(skm.log_loss(y, np.clip(p, 1e-7, 1.0), labels=list(range(p.shape[1]))))


METRICS: dict[str, Metric] = {
    "auc": Metric("auc", True, _auc, "AUC"),
    "logloss": Metric("logloss", False, _logloss, "log loss"),
    "accuracy": Metric("accuracy", True, _accuracy_binary, "accuracy"),
    "mse": Metric("mse", False, _mse, "MSE"),
    "mae": Metric("mae", False, _mae, "MAE"),
    "multi_accuracy": Metric("multi_accuracy", True, _multi_accuracy, "accuracy"),
    "multi_logloss": Metric("multi_logloss", False, _multi_logloss, "log loss"),
}

# The "loss" metric is the training objective of a task; always lower is better.
LOSS_METRIC = "loss"


def higher_is_better(metric: str) -> bool:
    """Direction of a metric name; the training 'loss' is lower-is-better."""
    if metric == LOSS_METRIC:
        return False
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    return METRICS[metric].higher_is_better


def compute(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Value of `metric` for labels and predictions (probabilities for binary tasks)."""
    return METRICS[metric].fn(np.asarray(y_true), np.asarray(y_pred))
