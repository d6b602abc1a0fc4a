"""Lesson 2 · Gradient conflict, seen in 2-D: the CAGrad toy problem (engine.toy2d), both loss
landscapes, the Pareto set, and the paths of EW, MGDA, PCGrad, CAGrad and Nash-MTL from starts
the participant clicks. Pure math on two numbers: computed in the dashboard process (cached),
no worker involved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import apply_layout
from dashboard.lessons.base import Control, Lesson, RunRequest, Settings, fmt_number

KEY = "conflict-2d"
METHODS: tuple[str, ...] = ("ew", "mgda", "pcgrad", "cagrad", "nashmtl")
METHOD_LABEL = {
    "ew": "EW (plain sum)",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "cagrad": "CAGrad",
    "nashmtl": "Nash-MTL",
}
METHOD_COLOR = {
    "ew": "#7f7f7f",
    "mgda": "#1f77b4",
    "pcgrad": "#ff7f0e",
    "cagrad": "#2ca02c",
    "nashmtl": "#9467bd",
}
DEFAULT_STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
SCALES: tuple[float, ...] = (0.1, 1.0, 10.0)
GRID_STEP = 0.5  # click targets: an invisible grid of points over both landscapes
CLICK_TRACE = "click to start here"
PARETO_TRACE = "Pareto set"
ARRIVE_TOL = 0.3
N_CONTOUR = 121


@dataclass
class Path:
    method: str
    start: tuple[float, float]
    xy: np.ndarray  # (steps + 1, 2)
    losses: np.ndarray  # (steps + 1, 2), unscaled task losses along the path
    arrived: int | None  # first step within ARRIVE_TOL of the Pareto set


@dataclass
class ToyInfo:
    xs: np.ndarray
    f1: np.ndarray
    f2: np.ndarray
    pareto: np.ndarray  # (m, 2) points of the Pareto set
    pareto_losses: np.ndarray  # (m, 2) their losses (the Pareto front)
    starts: list[tuple[float, float]]
    scale: float
    methods: list[str]
    paths: list[Path] = field(default_factory=list)
    complete: bool = True


def requests(settings: Settings, seed: int) -> list[RunRequest]:
    return []  # nothing to train: the optimisation runs on two numbers in this process


def _base(settings: Settings) -> ToyInfo:
    from dashboard import queries
    from engine.toy2d import evaluate

    scale = float(settings["scale"])
    land = queries.toy_landscape(N_CONTOUR, (scale, 1.0))
    pset = queries.toy_pareto_set()
    f1, f2, _ = evaluate(pset[:, 0], pset[:, 1])
    starts = [tuple(map(float, s)) for s in settings["starts"]]
    return ToyInfo(
        land.xs, land.f1, land.f2, pset, np.stack([f1, f2], axis=1), starts, scale, list(settings["methods"])
    )


def quick(settings: Settings, seed: int) -> ToyInfo:
    """The landscapes, the Pareto set and the starts, before any path is computed."""
    info = _base(settings)
    info.complete = False
    return info


def make_path(method: str, start: tuple[float, float], xy: np.ndarray, pset: np.ndarray) -> Path:
    from engine.toy2d import arrival_step, evaluate

    f1, f2, _ = evaluate(xy[:, 0], xy[:, 1])
    return Path(method, start, xy, np.stack([f1, f2], axis=1), arrival_step(xy, pset, ARRIVE_TOL))


def load(settings: Settings, seed: int) -> ToyInfo:
    from dashboard import queries

    info = _base(settings)
    for m in info.methods:
        for s in info.starts:
            xy = queries.toy_trajectory(m, s, (info.scale, 1.0), int(seed))
            info.paths.append(make_path(m, s, xy, info.pareto))
    return info


# ---- figure (pure) ----------------------------------------------------------------------------


def _click_grid() -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(-10.0, 10.0 + 1e-9, GRID_STEP)
    X, Y = np.meshgrid(g, g)
    return X.ravel(), Y.ravel()


def figure(info: ToyInfo) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            f"Task 1 loss{'' if info.scale == 1 else f' (× {fmt_number(info.scale)})'}",
            "Task 2 loss",
            "Loss space: task 1 vs task 2",
        ),
        horizontal_spacing=0.06,
        column_widths=[0.36, 0.36, 0.28],
    )
    gx, gy = _click_grid()
    for col, z in ((1, info.f1), (2, info.f2)):
        fig.add_trace(
            go.Contour(
                x=info.xs,
                y=info.xs,
                z=z,
                colorscale="Blues_r",
                ncontours=28,
                showscale=False,
                contours={"coloring": "heatmap", "showlines": True},
                line={"width": 0.5, "color": "rgba(255,255,255,0.5)"},
                hoverinfo="skip",
                name=f"task {col} loss",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=gx,
                y=gy,
                mode="markers",
                marker={"size": 9, "opacity": 0.0, "color": "white"},
                selected={"marker": {"opacity": 0.0}},
                unselected={"marker": {"opacity": 0.0}},
                name=CLICK_TRACE,
                meta={"role": "click"},
                showlegend=False,
                hovertemplate="start at (%{x}, %{y})<extra>click to add</extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=info.pareto[:, 0],
                y=info.pareto[:, 1],
                mode="markers",
                marker={"size": 3, "color": "#ffd700"},
                name=PARETO_TRACE,
                legendgroup="pareto",
                showlegend=col == 1,
                hoverinfo="skip",
                unselected={"marker": {"opacity": 1.0}},
            ),
            row=1,
            col=col,
        )
    order = np.argsort(info.pareto_losses[:, 0])
    fig.add_trace(
        go.Scatter(
            x=info.pareto_losses[order, 0],
            y=info.pareto_losses[order, 1],
            mode="markers",
            marker={"size": 3, "color": "#d4a017"},
            name="Pareto front",
            legendgroup="pareto",
            showlegend=False,
            hoverinfo="skip",
            unselected={"marker": {"opacity": 1.0}},
        ),
        row=1,
        col=3,
    )
    shown: set[str] = set()
    for path in info.paths:
        color = METHOD_COLOR.get(path.method, "#000")
        label = METHOD_LABEL.get(path.method, path.method)
        first = path.method not in shown
        shown.add(path.method)
        step = max(1, len(path.xy) // 400)
        for col in (1, 2):
            fig.add_trace(
                go.Scatter(
                    x=path.xy[::step, 0],
                    y=path.xy[::step, 1],
                    mode="lines",
                    line={"color": color, "width": 2.5},
                    name=label,
                    legendgroup=path.method,
                    showlegend=first and col == 1,
                    meta={"method": path.method, "start": list(path.start)},
                    hovertemplate=f"{label}<br>(%{{x:.2f}}, %{{y:.2f}})<extra></extra>",
                    unselected={"marker": {"opacity": 1.0}},
                ),
                row=1,
                col=col,
            )
        end = path.xy[-1]
        for col in (1, 2):
            fig.add_trace(
                go.Scatter(
                    x=[end[0]],
                    y=[end[1]],
                    mode="markers",
                    marker={
                        "symbol": "x",
                        "size": 10,
                        "color": color,
                        "line": {"width": 1, "color": "white"},
                    },
                    legendgroup=path.method,
                    showlegend=False,
                    hoverinfo="skip",
                    unselected={"marker": {"opacity": 1.0}},
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=path.losses[::step, 0],
                y=path.losses[::step, 1],
                mode="lines",
                line={"color": color, "width": 1.5},
                legendgroup=path.method,
                showlegend=False,
                hovertemplate=f"{label}<br>task 1 %{{x:.2f}}, task 2 %{{y:.2f}}<extra></extra>",
                unselected={"marker": {"opacity": 1.0}},
            ),
            row=1,
            col=3,
        )
        fig.add_trace(
            go.Scatter(
                x=[path.losses[-1, 0]],
                y=[path.losses[-1, 1]],
                mode="markers",
                marker={"symbol": "x", "size": 10, "color": color},
                legendgroup=path.method,
                showlegend=False,
                hoverinfo="skip",
                unselected={"marker": {"opacity": 1.0}},
            ),
            row=1,
            col=3,
        )
    if info.starts:
        sx = [s[0] for s in info.starts]
        sy = [s[1] for s in info.starts]
        for col in (1, 2):
            fig.add_trace(
                go.Scatter(
                    x=sx,
                    y=sy,
                    mode="markers",
                    marker={"size": 11, "color": "white", "line": {"width": 2, "color": "black"}},
                    name="starts",
                    legendgroup="starts",
                    showlegend=col == 1,
                    hovertemplate="start (%{x}, %{y})<extra></extra>",
                    unselected={"marker": {"opacity": 1.0}},
                ),
                row=1,
                col=col,
            )
    for col in (1, 2):
        fig.update_xaxes(title_text="θ₁", range=[-10.3, 10.3], row=1, col=col, constrain="domain")
        fig.update_yaxes(title_text="θ₂", range=[-10.3, 10.3], row=1, col=col)
    fig.update_xaxes(title_text="task 1 loss", row=1, col=3)
    fig.update_yaxes(title_text="task 2 loss", row=1, col=3)
    title = "Both loss landscapes, the Pareto set and each method's path"
    if not info.complete:
        title += " (computing the paths…)"
    fig = apply_layout(fig, title, 500, clickmode="event+select", hovermode="closest", dragmode=False)
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"})
    return fig


# ---- summary and clicks -----------------------------------------------------------------------


def method_table(info: ToyInfo) -> list[dict[str, Any]]:
    """Per method: how many starts reached the Pareto set, and the mean final losses."""
    rows = []
    for m in info.methods:
        ps = [p for p in info.paths if p.method == m]
        if not ps:
            continue
        ends = np.array([p.losses[-1] for p in ps])
        arrived = [p.arrived for p in ps if p.arrived is not None]
        rows.append(
            {
                "method": METHOD_LABEL.get(m, m),
                "reached the Pareto set": f"{len(arrived)} of {len(ps)}",
                "median steps to get there": int(np.median(arrived)) if arrived else None,
                "final task 1 loss": round(float(ends[:, 0].mean()), 2),
                "final task 2 loss": round(float(ends[:, 1].mean()), 2),
                "spread of end points (θ₁)": round(float(np.ptp([p.xy[-1, 0] for p in ps])), 2),
            }
        )
    return rows


def summary(info: ToyInfo) -> str:
    if not info.starts:
        return "Click a landscape to add a starting point."
    if not info.paths:
        return "Computing the paths…"
    rows = method_table(info)
    bits = []
    for r in rows:
        bits.append(f"{r['method']}: {r['reached the Pareto set']}")
    avg = {r["method"]: (r["final task 1 loss"] + r["final task 2 loss"]) / 2 for r in rows}
    best = min(avg, key=avg.get) if avg else ""
    return (
        f"{len(info.starts)} start(s) × {len(info.methods)} method(s). "
        "Reached the Pareto set within 1,500 steps — "
        + "; ".join(bits)
        + (f". Lowest average final loss: {best}." if best else ".")
    )


def on_click(settings: Settings, points: Sequence[Mapping[str, Any]]) -> Settings | None:
    """A click on a landscape adds that point as a start (up to 8; the oldest drops out)."""
    for pt in points:
        x, y = pt.get("x"), pt.get("y")
        if x is None or y is None:
            continue
        start = (round(float(x), 2), round(float(y), 2))
        starts = [tuple(s) for s in settings["starts"]]
        if start in starts:
            return None
        return {**settings, "starts": [*starts, start]}
    return None


LESSON = Lesson(
    key=KEY,
    number=2,
    title="Gradient conflict, seen in 2-D",
    text=(
        "A two-task problem on just two parameters θ₁, θ₂ (the toy of the CAGrad paper, reused by "
        "Nash-MTL): each landscape shows one task's loss (darker = lower). In the upper half each task "
        "has a narrow valley of its own; in the lower half each has a bowl, and the **Pareto set** "
        "(yellow) joins the two bowls' minima: on it, no step lowers one loss without raising the "
        "other. Each coloured path is one way of combining the two gradients, run with Adam for "
        "1,500 steps from the white dots; × marks where it ends. The same balancer code trains the "
        "real models.\n\n"
        "**What to look at:** where the paths end on the Pareto set. MGDA, PCGrad and Nash-MTL stop "
        "at the first Pareto point they reach, so the end depends on the start; EW and CAGrad keep "
        "moving towards the point with the lowest *average* loss (the middle), more slowly. The right "
        "panel shows the same paths in loss space, the front as a curve. **Click a landscape** to "
        "add a start; set task 1's scale to 10 or 0.1 and see which methods care about a loss's scale."
    ),
    controls=(
        Control(
            "methods",
            "Methods",
            "multiselect",
            METHODS,
            options=METHODS,
            labels=METHOD_LABEL,
            help="how the two task gradients are combined into one step",
        ),
        Control(
            "scale",
            "Scale of task 1's loss",
            "select_slider",
            1.0,
            options=SCALES,
            labels={s: f"× {fmt_number(s)}" for s in SCALES},
            help="multiply task 1's loss by this: the Pareto set does not move, some methods do",
        ),
        Control(
            "starts",
            "Starting points",
            "points",
            DEFAULT_STARTS,
            help="click a landscape to add one",
        ),
    ),
    requests=requests,
    load=load,
    figure=figure,
    summary=summary,
    table=method_table,
    quick=quick,
    on_click=on_click,
    height=500,
)
