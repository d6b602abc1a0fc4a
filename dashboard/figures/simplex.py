"""The task-weight simplex: grid points for a weight sweep and a picture of them."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import plotly.graph_objects as go

from dashboard.figures.common import apply_layout, empty_figure


def simplex_grid(n_tasks: int, resolution: int, include_corners: bool = True) -> list[tuple[float, ...]]:
    """All weight vectors with entries k/resolution (k integer) summing to 1.

    2 tasks, resolution 4: (0, 1), (0.25, 0.75), ..., (1, 0). `include_corners=False` drops the
    points where a task has weight 0 (those runs train only some tasks)."""
    if n_tasks < 1 or resolution < 1:
        raise ValueError("need at least one task and a resolution of at least 1")
    out: list[tuple[float, ...]] = []
    for ks in product(range(resolution + 1), repeat=n_tasks - 1):
        last = resolution - sum(ks)
        if last < 0:
            continue
        full = (*ks, last)
        if not include_corners and min(full) == 0:
            continue
        out.append(tuple(round(k / resolution, 6) for k in full))
    out.sort(reverse=True)
    return out


def normalise(weights: Sequence[float]) -> list[float]:
    """Scale non-negative weights to sum 1 (equal weights when all are zero)."""
    w = [max(0.0, float(x)) for x in weights]
    s = sum(w)
    if s <= 0:
        return [1.0 / len(w)] * len(w) if w else []
    return [x / s for x in w]


def simplex_figure(
    points: Sequence[Sequence[float]], tasks: Sequence[str], current: Sequence[float] | None = None
) -> go.Figure:
    """2 tasks: points on a segment; 3 tasks: a ternary plot."""
    if not points or len(tasks) not in (2, 3):
        return empty_figure("a weight sweep needs 2 or 3 tasks")
    fig = go.Figure()
    if len(tasks) == 3:
        fig.add_trace(
            go.Scatterternary(
                a=[p[0] for p in points],
                b=[p[1] for p in points],
                c=[p[2] for p in points],
                mode="markers",
                name="sweep runs",
                marker={"size": 9, "color": "#1f77b4"},
            )
        )
        if current is not None:
            fig.add_trace(
                go.Scatterternary(
                    a=[current[0]],
                    b=[current[1]],
                    c=[current[2]],
                    mode="markers",
                    name="sliders",
                    marker={"size": 14, "symbol": "x", "color": "#d62728"},
                )
            )
        fig.update_layout(
            ternary={
                "aaxis": {"title": {"text": tasks[0]}},
                "baxis": {"title": {"text": tasks[1]}},
                "caxis": {"title": {"text": tasks[2]}},
            }
        )
        return apply_layout(fig, f"{len(points)} runs on the weight simplex", 340)
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in points],
            y=[0] * len(points),
            mode="markers",
            name="sweep runs",
            marker={"size": 11, "color": "#1f77b4"},
            hovertemplate=f"{tasks[0]} %{{x:.2f}}, {tasks[1]} %{{customdata:.2f}}<extra></extra>",
            customdata=[p[1] for p in points],
        )
    )
    if current is not None:
        fig.add_trace(
            go.Scatter(
                x=[current[0]],
                y=[0],
                mode="markers",
                name="sliders",
                marker={"size": 15, "symbol": "x", "color": "#d62728"},
            )
        )
    fig.update_yaxes(visible=False, range=[-1, 1])
    fig.update_xaxes(range=[-0.05, 1.05], title_text=f"weight of {tasks[0]} (weight of {tasks[1]} = 1 − x)")
    return apply_layout(
        fig, f"{len(points)} runs on the weight simplex", 180, margin={"l": 20, "r": 20, "t": 45, "b": 45}
    )
