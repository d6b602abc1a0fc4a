"""Per-task training curves: train loss per step, validation values per epoch, one panel per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import apply_layout, color_map, ema, empty_figure, subplot_grid

SPLIT_DASH = {"train": "solid", "val": "dash", "test": "dot"}


@dataclass
class CurveSeries:
    run_id: str
    label: str
    task: str
    split: str
    steps: np.ndarray
    values: np.ndarray


@dataclass
class CurvesInfo:
    metric: str
    tasks: list[str]
    series: list[CurveSeries] = field(default_factory=list)
    smoothing: float = 0.0

    @property
    def n_points(self) -> int:
        return int(sum(len(s.steps) for s in self.series))


def curves_info(
    metrics: pd.DataFrame,
    metric: str = "loss",
    splits: Sequence[str] = ("train", "val"),
    labels: Mapping[str, str] | None = None,
    smoothing: float = 0.0,
    tasks: Sequence[str] | None = None,
) -> CurvesInfo:
    """Collect one series per (run, task, split) of `metric`; train series are EMA-smoothed."""
    labels = labels or {}
    if metrics is None or metrics.empty:
        return CurvesInfo(metric, list(tasks or []), [], smoothing)
    df = metrics[(metrics["metric"] == metric) & (metrics["split"].isin(list(splits)))]
    all_tasks = list(tasks) if tasks else list(dict.fromkeys(metrics["task"].tolist()))
    series: list[CurveSeries] = []
    run_order = list(dict.fromkeys(metrics["run_id"].tolist()))
    for (rid, task, split), g in df.groupby(["run_id", "task", "split"], sort=False):
        if task not in all_tasks:
            continue
        g = g.sort_values("step")
        values = g["value"].to_numpy(dtype=float)
        if split == "train" and smoothing > 0:
            values = ema(values, smoothing)
        series.append(
            CurveSeries(
                str(rid), labels.get(str(rid), str(rid)), str(task), str(split), g["step"].to_numpy(), values
            )
        )
    split_rank = {s: i for i, s in enumerate(splits)}
    series.sort(
        key=lambda s: (run_order.index(s.run_id), all_tasks.index(s.task), split_rank.get(s.split, 9))
    )
    return CurvesInfo(metric, all_tasks, series, smoothing)


def curves_figure(
    info: CurvesInfo, title: str | None = None, height: int | None = None, log_y: bool = False
) -> go.Figure:
    """One panel per task; colour = run, line style = split (train solid, val dashed)."""
    if not info.series:
        return empty_figure(f"no {info.metric} values recorded yet")
    rows, cols = subplot_grid(len(info.tasks))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=info.tasks,
        shared_xaxes=False,
        horizontal_spacing=0.07,
        vertical_spacing=0.16,
    )
    colors = color_map([s.run_id for s in info.series])
    shown: set[tuple[str, str]] = set()
    for s in info.series:
        k = info.tasks.index(s.task)
        r, c = k // cols + 1, k % cols + 1
        first = (s.run_id, s.split) not in shown
        shown.add((s.run_id, s.split))
        fig.add_trace(
            go.Scatter(
                x=s.steps,
                y=s.values,
                mode="lines+markers" if s.split != "train" else "lines",
                name=f"{s.label} · {s.split}",
                legendgroup=f"{s.run_id}-{s.split}",
                showlegend=first,
                line={"color": colors[s.run_id], "dash": SPLIT_DASH.get(s.split, "solid"), "width": 2},
                marker={"size": 6},
                customdata=np.full(len(s.steps), s.run_id, dtype=object),
                hovertemplate=f"{s.label}<br>{s.task} {s.split} {info.metric}: %{{y:.4g}}<br>"
                "step %{x}<extra></extra>",
                meta={"run_id": s.run_id, "task": s.task, "split": s.split},
            ),
            row=r,
            col=c,
        )
    fig.update_xaxes(title_text="step")
    values = np.concatenate([s.values for s in info.series]) if info.series else np.empty(0)
    values = values[np.isfinite(values)]
    log_y = log_y and len(values) > 0 and bool((values > 0).all())  # a log axis needs positive values
    fig.update_yaxes(title_text=info.metric + (" (log)" if log_y else ""), col=1)
    if log_y:
        wide = float(values.max() / values.min()) > 30
        fig.update_yaxes(type="log", **({"dtick": 1, "exponentformat": "power"} if wide else {}))
    smooth = f" (train smoothed {info.smoothing:.2f})" if info.smoothing > 0 else ""
    return apply_layout(
        fig, title if title is not None else f"{info.metric} per task{smooth}", height or max(320, 300 * rows)
    )


def metrics_table(metrics: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (run, task): latest validation values and test values of every metric."""
    if metrics is None or metrics.empty:
        return pd.DataFrame(columns=["run", "task"])
    labels = labels or {}
    parts: list[pd.DataFrame] = []
    val = metrics[metrics["split"] == "val"]
    if not val.empty:
        last = val.sort_values("step").groupby(["run_id", "task", "metric"], sort=False).tail(1)
        last = last.assign(col="val " + last["metric"])
        parts.append(last[["run_id", "task", "col", "value"]])
        ep = val.groupby(["run_id"])["epoch"].max().rename("epoch")
    else:
        ep = pd.Series(dtype=float, name="epoch")
    test = metrics[metrics["split"] == "test"]
    if not test.empty:
        parts.append(test.assign(col="test " + test["metric"])[["run_id", "task", "col", "value"]])
    if not parts:
        return pd.DataFrame(columns=["run", "task"])
    long = pd.concat(parts, ignore_index=True)
    wide = long.pivot_table(
        index=["run_id", "task"], columns="col", values="value", aggfunc="last", sort=False
    )
    wide = wide.reset_index()
    wide.columns.name = None
    wide = wide.merge(ep.reset_index(), on="run_id", how="left") if len(ep) else wide
    wide.insert(0, "run", wide["run_id"].map(lambda r: labels.get(r, r)))
    cols = ["run", "task"] + (["epoch"] if "epoch" in wide else [])
    cols += sorted(c for c in wide.columns if c.startswith("val "))
    cols += sorted(c for c in wide.columns if c.startswith("test "))
    return wide[[*cols, "run_id"]]
