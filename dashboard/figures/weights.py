"""Task weights chosen by the balancer over training, one panel per run."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import apply_layout, color_map, ema, empty_figure, subplot_grid

MAX_PANELS = 6


def weights_figure(
    weights: pd.DataFrame, labels: Mapping[str, str] | None = None, smoothing: float = 0.0
) -> go.Figure:
    """Lines of each task's effective weight (colour = task), one panel per run."""
    if weights is None or weights.empty:
        return empty_figure("no task weights recorded yet")
    labels = labels or {}
    run_ids = list(dict.fromkeys(weights["run_id"].tolist()))[:MAX_PANELS]
    rows, cols = subplot_grid(len(run_ids), max_cols=2)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[labels.get(r, r) for r in run_ids],
        vertical_spacing=0.18,
        horizontal_spacing=0.08,
    )
    colors = color_map(list(dict.fromkeys(weights["task"].tolist())))
    for k, rid in enumerate(run_ids):
        g = weights[weights["run_id"] == rid]
        for task, gt in g.groupby("task", sort=False):
            gt = gt.sort_values("step")
            fig.add_trace(
                go.Scatter(
                    x=gt["step"],
                    y=ema(gt["weight"].to_numpy(), smoothing),
                    mode="lines",
                    name=str(task),
                    legendgroup=str(task),
                    showlegend=k == 0,
                    line={"color": colors[str(task)], "width": 2},
                    hovertemplate=f"{task}: %{{y:.3f}}<br>step %{{x}}<extra>{labels.get(rid, rid)}</extra>",
                ),
                row=k // cols + 1,
                col=k % cols + 1,
            )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="weight", col=1)
    return apply_layout(fig, "Task weights chosen by the balancer", max(300, 260 * rows))


def weights_summary(weights: pd.DataFrame) -> pd.DataFrame:
    """Mean and last weight per (run, task)."""
    if weights is None or weights.empty:
        return pd.DataFrame(columns=["run_id", "task", "mean", "last"])
    g = weights.sort_values("step").groupby(["run_id", "task"], sort=False)["weight"]
    return pd.DataFrame({"mean": g.mean(), "last": g.last()}).reset_index()
