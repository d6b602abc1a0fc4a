"""Transfer: each task's test metric against its single-task baseline, and delta-m per run.

Changes are signed so that positive = better than the baseline (engine.pareto.relative_change);
a task that does worse than alone shows negative transfer and is drawn in red.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.common import BAD, GOOD, NEUTRAL, apply_layout, empty_figure
from engine.metrics import higher_is_better as _hib
from engine.pareto import delta_m, negative_transfer, relative_change

ROW_COLUMNS = [
    "run_id",
    "label",
    "baseline_id",
    "task",
    "metric",
    "value",
    "baseline",
    "change_pct",
    "negative",
]


def _direction(metric: str) -> bool:
    try:
        return _hib(metric)
    except KeyError:
        return False


@dataclass
class TransferInfo:
    rows: pd.DataFrame  # ROW_COLUMNS
    delta: pd.DataFrame  # run_id, label, baseline_id, delta_m, n_negative, n_tasks

    @property
    def empty(self) -> bool:
        return self.rows.empty


def transfer_info(
    finals: pd.DataFrame,
    baselines: Mapping[str, str | None],
    task_metric: Mapping[str, str],
    labels: Mapping[str, str] | None = None,
) -> TransferInfo:
    """Compare each run in `baselines` (run -> its baseline run id) on each task's metric.

    `finals`: final test values (run_id, task, metric, value) of the runs and their baselines.
    `task_metric`: task -> the metric compared (usually the task's primary metric).
    """
    labels = labels or {}
    rows: list[dict[str, object]] = []
    deltas: list[dict[str, object]] = []
    lookup: dict[tuple[str, str, str], float] = {}
    if finals is not None and not finals.empty:
        for r, t, m, v in zip(
            finals["run_id"], finals["task"], finals["metric"], finals["value"], strict=True
        ):
            lookup[(str(r), str(t), str(m))] = float(v)
    for rid, bid in baselines.items():
        if not bid:
            continue
        vals: dict[str, float] = {}
        base: dict[str, float] = {}
        hib: dict[str, bool] = {}
        for task, metric in task_metric.items():
            v = lookup.get((rid, task, metric))
            b = lookup.get((bid, task, metric))
            if v is None or b is None:
                continue
            vals[task], base[task], hib[task] = v, b, _direction(metric)
        if not vals:
            continue
        change = relative_change(vals, base, hib)
        neg = negative_transfer(vals, base, hib)
        for task, v in vals.items():
            rows.append(
                {
                    "run_id": rid,
                    "label": labels.get(rid, rid),
                    "baseline_id": bid,
                    "task": task,
                    "metric": task_metric[task],
                    "value": v,
                    "baseline": base[task],
                    "change_pct": change[task],
                    "negative": neg[task],
                }
            )
        deltas.append(
            {
                "run_id": rid,
                "label": labels.get(rid, rid),
                "baseline_id": bid,
                "delta_m": delta_m(vals, base, hib),
                "n_negative": int(sum(neg.values())),
                "n_tasks": len(vals),
            }
        )
    return TransferInfo(
        pd.DataFrame(rows, columns=ROW_COLUMNS),
        pd.DataFrame(deltas, columns=["run_id", "label", "baseline_id", "delta_m", "n_negative", "n_tasks"]),
    )


def transfer_figure(info: TransferInfo) -> go.Figure:
    """Per task, grouped by run: relative change vs the single-task baseline (%); red = negative
    transfer (worse than alone), green = positive."""
    if info.empty:
        return empty_figure("no run has a finished single-task baseline yet")
    fig = go.Figure()
    df = info.rows
    for rid, g in df.groupby("run_id", sort=False):
        colors = [
            BAD if n else (GOOD if c > 0 else NEUTRAL)
            for n, c in zip(g["negative"], g["change_pct"], strict=True)
        ]
        fig.add_trace(
            go.Bar(
                x=g["task"],
                y=g["change_pct"],
                name=str(g["label"].iloc[0]),
                marker={"color": colors, "line": {"color": "black", "width": 0.5}},
                text=[f"{c:+.1f}%" for c in g["change_pct"]],
                textposition="outside",
                customdata=np.stack([g["value"], g["baseline"], g["metric"], g["negative"]], axis=1),
                hovertemplate=str(g["label"].iloc[0]) + "<br>%{x} %{customdata[2]}: %{customdata[0]:.4g} vs "
                "baseline %{customdata[1]:.4g}<br>%{y:+.2f}% (positive = better)<extra></extra>",
                meta={"run_id": str(rid)},
            )
        )
    fig.add_hline(y=0, line={"color": "black", "width": 1})
    n_neg = int(df["negative"].sum())
    title = (
        f"{n_neg} task result(s) worse than single-task training (negative transfer, red)"
        if n_neg
        else "No negative transfer: every task at least as good as alone"
    )
    fig.update_yaxes(title_text="change vs single-task baseline (%)", zeroline=True)
    fig.update_xaxes(title_text="task", type="category")
    return apply_layout(
        fig,
        title,
        420,
        barmode="group",
        showlegend=True,
        legend={"orientation": "h", "x": 0, "y": -0.25, "yanchor": "top", "font": {"size": 11}},
        margin={"l": 60, "r": 20, "t": 60, "b": 90},
    )


def delta_m_figure(info: TransferInfo) -> go.Figure:
    """delta-m per run (mean signed relative change over tasks, %): positive = MTL pays off."""
    if info.delta.empty:
        return empty_figure("no run has a finished single-task baseline yet")
    d = info.delta.sort_values("delta_m")
    fig = go.Figure(
        go.Bar(
            x=d["delta_m"],
            y=d["label"],
            orientation="h",
            name="delta-m",
            marker_color=[GOOD if v > 0 else BAD for v in d["delta_m"]],
            text=[f"{v:+.2f}%" for v in d["delta_m"]],
            textposition="auto",
            customdata=np.stack([d["n_negative"], d["n_tasks"]], axis=1),
            hovertemplate="%{y}<br>delta-m %{x:+.2f}%<br>"
            "%{customdata[0]} of %{customdata[1]} tasks worse than alone<extra></extra>",
        )
    )
    fig.add_vline(x=0, line={"color": "black", "width": 1})
    fig.update_xaxes(title_text="delta-m (%): mean change over tasks, positive = better than single-task")
    fig.update_yaxes(type="category", automargin=True)
    return apply_layout(
        fig,
        "delta-m per run",
        max(220, 34 * len(d) + 120),
        showlegend=False,
        margin={"l": 10, "r": 20, "t": 60, "b": 45},
    )
