"""Trade-offs in plain words: what a point gains and loses on each task metric against a
reference run ("+0.41 pt income AUC for -0.12 pt never_married AUC").

Units are explicit. Metrics that are fractions on [0, 1] (AUC, accuracy) change in
**percentage points** (pt: the difference of the two values x 100). Every other metric (log loss,
MSE, MAE, the training loss) changes in **percent of the reference value** (relative %, written
"3.20% lower task_1 MSE"). A change is a *gain* when it moves the metric in its better direction
(engine.metrics decides the direction) and a *loss* otherwise; a change that rounds to zero at the
shown precision is neither.

Pure functions over plain numbers: the Report page and its exports read them, tests check them
with hand-made values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.metrics import METRICS, higher_is_better

#: Metrics bounded on [0, 1]: their changes are reported in percentage points.
FRACTION_METRICS: frozenset[str] = frozenset({"auc", "accuracy", "multi_accuracy"})
PT = "pt"
PCT = "%"
UNIT_TEXT: dict[str, str] = {
    PT: "percentage points: the difference of the two values x 100",
    PCT: "percent of the reference value: (value - reference) / |reference| x 100",
}
DECIMALS = 2


def metric_label(metric: str) -> str:
    """'auc' -> 'AUC', 'mse' -> 'MSE', 'loss' -> 'loss' (unknown names are kept)."""
    m = METRICS.get(metric)
    return m.label if m is not None else metric


def unit_of(metric: str) -> str:
    """'pt' for fraction metrics (AUC, accuracy), '%' (relative change) for everything else."""
    return PT if metric in FRACTION_METRICS else PCT


@dataclass(frozen=True)
class Objective:
    """One chosen '<task>/<metric>' column with its direction and the unit of its changes."""

    column: str
    task: str
    metric: str
    higher_is_better: bool
    unit: str

    @property
    def label(self) -> str:
        """'income AUC'."""
        return f"{self.task} {metric_label(self.metric)}"

    @property
    def direction_text(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def unit_text(self) -> str:
        return UNIT_TEXT[self.unit]


def objective(column: str, higher: bool | None = None) -> Objective:
    """The Objective of a '<task>/<metric>' column; the direction comes from engine.metrics
    unless given (an unknown metric without a given direction is a KeyError)."""
    task, sep, metric = column.rpartition("/")
    if not sep or not task or not metric:
        raise ValueError(f"a metric column is '<task>/<metric>', got {column!r}")
    hib = higher_is_better(metric) if higher is None else bool(higher)
    return Objective(column, task, metric, hib, unit_of(metric))


def change(value: float, reference: float, unit: str) -> float:
    """The change of `value` from `reference` in `unit` (raw sign: + means the value went up).

    pt: (value - reference) x 100; %: (value - reference) / |reference| x 100 (NaN when the
    reference is 0 or either value is missing).
    """
    v, r = float(value), float(reference)
    if not (math.isfinite(v) and math.isfinite(r)):
        return float("nan")
    if unit == PT:
        return (v - r) * 100.0
    if unit == PCT:
        return (v - r) / abs(r) * 100.0 if r != 0 else float("nan")
    raise ValueError(f"unknown unit {unit!r}; expected {PT!r} or {PCT!r}")


@dataclass(frozen=True)
class Change:
    """One objective of one point against the reference."""

    objective: Objective
    value: float
    reference: float
    delta: float  # in objective.unit, raw sign

    @property
    def improvement(self) -> float:
        """The delta signed so that positive = better (for bars: up is better)."""
        return self.delta if self.objective.higher_is_better else -self.delta

    @property
    def shown(self) -> float:
        """The delta at the shown precision (what the words say)."""
        return round(self.delta, DECIMALS) if math.isfinite(self.delta) else float("nan")

    @property
    def kind(self) -> str:
        """'gain', 'loss', 'same' (rounds to zero) or 'missing'."""
        if not math.isfinite(self.delta):
            return "missing"
        if self.shown == 0:
            return "same"
        return "gain" if self.improvement > 0 else "loss"

    @property
    def text(self) -> str:
        """'+0.41 pt income AUC', '3.20% lower task_1 MSE', 'task_2 MSE missing'."""
        o = self.objective
        if self.kind == "missing":
            return f"{o.label} missing"
        if o.unit == PT:
            return f"{self.shown:+.{DECIMALS}f} pt {o.label}"
        word = "higher" if self.delta > 0 else "lower"
        return f"{abs(self.shown):.{DECIMALS}f}% {word} {o.label}"


def changes(
    values: Mapping[str, float], reference: Mapping[str, float], objectives: Sequence[Objective]
) -> list[Change]:
    """One Change per objective (columns missing from either side give a 'missing' change)."""
    out = []
    for o in objectives:
        v = float(values.get(o.column, float("nan")))
        r = float(reference.get(o.column, float("nan")))
        out.append(Change(o, v, r, change(v, r, o.unit)))
    return out


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def sentence(cs: Sequence[Change]) -> str:
    """The trade-off of one point in plain words: gains 'for' losses.

    "+0.41 pt income AUC for -0.12 pt never_married AUC"; "+0.41 pt income AUC with no loss";
    "-0.12 pt income AUC with no gain"; "no change at the shown precision".
    """
    gains = [c.text for c in cs if c.kind == "gain"]
    losses = [c.text for c in cs if c.kind == "loss"]
    missing = [c.objective.label for c in cs if c.kind == "missing"]
    if gains and losses:
        text = f"{_join(gains)} for {_join(losses)}"
    elif gains:
        text = f"{_join(gains)} with no loss"
    elif losses:
        text = f"{_join(losses)} with no gain"
    else:
        text = "no change at the shown precision" if not missing else "nothing to compare"
    if missing:
        text += f" ({_join(missing)} missing)"
    return text


def front_mask(points: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Non-dominated rows of `points` over every objective (rows missing one are never on it)."""
    from engine.pareto import non_dominated_mask

    if points.empty:
        return np.zeros(0, dtype=bool)
    values = points[[o.column for o in objectives]].apply(pd.to_numeric, errors="coerce")
    ok = np.isfinite(values.to_numpy(dtype=float)).all(axis=1)
    mask = np.zeros(len(points), dtype=bool)
    if ok.any():
        mask[ok] = non_dominated_mask(
            values.to_numpy(dtype=float)[ok], [o.higher_is_better for o in objectives]
        )
    return mask


def tradeoff_table(
    points: pd.DataFrame,
    objectives: Sequence[Objective],
    reference_id: str,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per point of `points` (columns run_id and the objectives' columns) against the
    reference run: its change per objective (column '<label> (<unit>)'), gains, losses and the
    sentence. The reference row says 'reference'."""
    labels = labels or {}
    by_id = points.set_index("run_id")
    if reference_id not in by_id.index:
        raise KeyError(f"reference run {reference_id!r} is not among the points")
    ref = {o.column: _num(by_id.loc[reference_id, o.column]) for o in objectives}
    rows = []
    for rid in points["run_id"]:
        vals = {o.column: _num(by_id.loc[rid, o.column]) for o in objectives}
        cs = changes(vals, ref, objectives)
        row: dict[str, object] = {
            "run_id": rid,
            "label": labels.get(rid, rid),
            "reference": rid == reference_id,
        }
        for c in cs:
            row[change_column(c.objective)] = c.delta
        if rid == reference_id:
            row.update(gains="", losses="", tradeoff="the reference")
        else:
            row.update(
                gains=_join([c.text for c in cs if c.kind == "gain"]),
                losses=_join([c.text for c in cs if c.kind == "loss"]),
                tradeoff=sentence(cs),
            )
        rows.append(row)
    cols = ["run_id", "label", "reference", *[change_column(o) for o in objectives], "gains", "losses"]
    return pd.DataFrame(rows, columns=[*cols, "tradeoff"])


def change_column(o: Objective) -> str:
    """'income/auc change (pt)'."""
    return f"{o.column} change ({o.unit})"


def _num(x: object) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
