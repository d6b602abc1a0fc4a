"""Pareto views of runs: a 2-D scatter with the non-dominated front as a step line, dominated
points faded and the hypervolume against a shown reference point; a parallel-coordinates view
for three or more objectives.

Like optuna's `_pareto_front.py`: `pareto_info` (data -> ParetoInfo) then `pareto_figure`
(ParetoInfo -> Figure), each pure. Every point carries `customdata = [run_id, front flag]` so a
click can be mapped back to its run; the front trace is named "Pareto front".

A preference-conditioned model (COSMOS) adds its learned front: `learned_front_info` (the
model's metrics on a grid of preferences, and at the chosen preference -> LearnedFrontInfo),
drawn by `pareto_figure(..., learned=...)` as a curve ("learned front") with the chosen
preference highlighted ("your preference").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.common import PALETTE, apply_layout, color_map, empty_figure, metric_title
from engine.pareto import (
    default_reference_point,
    front_step_line,
    hypervolume,
    non_dominated_mask,
)

FRONT_TRACE = "Pareto front"
REFERENCE_TRACE = "reference point"
LEARNED_TRACE = "learned front"
PREFERENCE_TRACE = "your preference"
PREF_PREFIX = "pref/"
ON_FRONT = "non-dominated"
DOMINATED = "dominated"
DOMINATED_OPACITY = 0.3
FRONT_OPACITY = 1.0


def metric_of(column: str) -> str:
    """'task_1/mse' -> 'mse'."""
    return column.rsplit("/", 1)[-1]


def direction_of(column: str) -> bool:
    """Higher-is-better for a '<task>/<metric>' column (engine.metrics decides)."""
    from engine.metrics import higher_is_better

    try:
        return higher_is_better(metric_of(column))
    except KeyError:
        return False


@dataclass
class ParetoInfo:
    x: str
    y: str
    hib_x: bool
    hib_y: bool
    color_by: str
    points: pd.DataFrame  # run_id, label, group, x, y, on_front
    front_x: np.ndarray = field(default_factory=lambda: np.empty(0))
    front_y: np.ndarray = field(default_factory=lambda: np.empty(0))
    region_x: np.ndarray = field(default_factory=lambda: np.empty(0))  # hypervolume polygon
    region_y: np.ndarray = field(default_factory=lambda: np.empty(0))
    reference: tuple[float, float] | None = None
    hypervolume: float | None = None
    n_missing: int = 0

    @property
    def front_run_ids(self) -> list[str]:
        return self.points.loc[self.points["on_front"], "run_id"].tolist()


def pareto_info(
    runs: pd.DataFrame,
    x: str,
    y: str,
    color_by: str = "balancer",
    labels: Mapping[str, str] | None = None,
    higher_is_better: tuple[bool, bool] | None = None,
    reference: Sequence[float] | None = None,
) -> ParetoInfo:
    """Points (one per run with both values), the front mask, step line, reference and hypervolume."""
    labels = labels or {}
    hib_x, hib_y = higher_is_better or (direction_of(x), direction_of(y))
    cols = ["run_id", "label", "group", "x", "y", "on_front"]
    if runs is None or runs.empty or x not in runs or y not in runs:
        return ParetoInfo(
            x,
            y,
            hib_x,
            hib_y,
            color_by,
            pd.DataFrame(columns=cols),
            n_missing=0 if runs is None else len(runs),
        )
    df = runs.copy()
    xs = pd.to_numeric(df[x], errors="coerce")
    ys = pd.to_numeric(df[y], errors="coerce")
    ok = np.isfinite(xs.to_numpy(dtype=float)) & np.isfinite(ys.to_numpy(dtype=float))
    df = df[ok]
    group = df[color_by].fillna("?").astype(str) if color_by in df else pd.Series("runs", index=df.index)
    pts = pd.DataFrame(
        {
            "run_id": df["run_id"].astype(str),
            "label": [labels.get(r, r) for r in df["run_id"].astype(str)],
            "group": group,
            "x": xs[ok].astype(float),
            "y": ys[ok].astype(float),
        }
    ).reset_index(drop=True)
    info = ParetoInfo(x, y, hib_x, hib_y, color_by, pts.assign(on_front=False), n_missing=int((~ok).sum()))
    if pts.empty:
        return info
    values = pts[["x", "y"]].to_numpy(dtype=float)
    mask = non_dominated_mask(values, [hib_x, hib_y])
    info.points["on_front"] = mask
    ref = (
        np.asarray(reference, dtype=float)
        if reference is not None
        else default_reference_point(values, [hib_x, hib_y])
    )
    info.reference = (float(ref[0]), float(ref[1]))
    info.hypervolume = float(hypervolume(values, [hib_x, hib_y], ref))
    fx, fy = front_step_line(values[mask], [hib_x, hib_y])
    info.front_x, info.front_y = fx, fy
    rx, ry = front_step_line(values[mask], [hib_x, hib_y], reference=ref)
    if len(rx):
        info.region_x = np.append(rx, ref[0])
        info.region_y = np.append(ry, ref[1])
    return info


@dataclass
class LearnedFrontInfo:
    """A COSMOS run's learned front on the axes (x, y) and the point of one preference."""

    run_id: str
    label: str
    tasks: list[str]
    curve: pd.DataFrame  # x, y, text: one row per grid preference, in preference order
    connected: bool  # two tasks: the front is a curve; more: a cloud of points
    point: tuple[float, float] | None = None
    preference: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)  # '<task>/<metric>' -> value at the point
    # (axis, value at preference 0, at preference 1) where a task gets worse as its preference grows
    inverted: list[tuple[str, float, float]] = field(default_factory=list)


def preference_text(pref: Mapping[str, float]) -> str:
    """'task_1 0.30 · task_2 0.70'."""
    return " · ".join(f"{t} {float(v):.2f}" for t, v in pref.items())


def preference_grid(n_tasks: int, points: int = 21) -> tuple[tuple[float, ...], ...]:
    """Preferences the learned front is drawn at: `points` evenly spaced for two tasks (the first
    task's weight from 1 to 0), else the simplex lattice with at most about `points` points."""
    from dashboard.figures.simplex import simplex_grid

    if n_tasks < 2:
        return ((1.0,),)
    if n_tasks == 2:
        return tuple((round(1 - k / (points - 1), 6), round(k / (points - 1), 6)) for k in range(points))
    res = 1
    while len(simplex_grid(n_tasks, res + 1)) <= points:
        res += 1
    return tuple(simplex_grid(n_tasks, res))


def preference_inversions(
    front: pd.DataFrame, columns: Sequence[str], tolerance: float = 0.02
) -> list[tuple[str, float, float]]:
    """(column, value at the lowest, value at the highest preference for its task) for each
    '<task>/<metric>' column whose metric is worse where the model's preference for the task is
    highest, by more than `tolerance` of its value (COSMOS's cosine penalty pulls the losses
    towards the preference ray; when it outweighs the weighted losses, a preference works
    backwards)."""
    out: list[tuple[str, float, float]] = []
    for col in columns:
        pc = f"{PREF_PREFIX}{col.rsplit('/', 1)[0]}"
        if col not in front or pc not in front or front.empty:
            continue
        vals = pd.to_numeric(front[col], errors="coerce")
        prefs = pd.to_numeric(front[pc], errors="coerce")
        if vals.isna().all() or prefs.isna().all() or prefs.max() == prefs.min():
            continue
        hi, lo = float(vals[prefs.idxmax()]), float(vals[prefs.idxmin()])
        worse = lo - hi if direction_of(col) else hi - lo
        if np.isfinite(worse) and worse > tolerance * max(abs(lo), 1e-12):
            out.append((col, lo, hi))
    return out


def learned_front_info(
    front: pd.DataFrame,
    x: str,
    y: str,
    point: pd.DataFrame | Mapping[str, float] | None = None,
    run_id: str = "",
    label: str = "",
) -> LearnedFrontInfo | None:
    """The learned front (`engine.cosmos.learned_front` rows: `pref/<task>` and `<task>/<metric>`
    columns) on the axes x and y, and the row of the chosen preference `point` (same columns).
    None when the front lacks one of the two metrics."""
    if front is None or front.empty or x not in front or y not in front:
        return None
    tasks = [c[len(PREF_PREFIX) :] for c in front.columns if c.startswith(PREF_PREFIX)]
    df = front.copy()
    if tasks:
        df = df.sort_values([f"{PREF_PREFIX}{t}" for t in tasks], ascending=False, kind="stable")
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    texts = [preference_text({t: row[f"{PREF_PREFIX}{t}"] for t in tasks}) for _, row in df.iterrows()]
    ok = np.isfinite(xs) & np.isfinite(ys)
    curve = pd.DataFrame({"x": xs[ok], "y": ys[ok], "text": np.asarray(texts, dtype=object)[ok]})
    info = LearnedFrontInfo(run_id, label or run_id, tasks, curve.reset_index(drop=True), len(tasks) == 2)
    info.inverted = preference_inversions(front, list(dict.fromkeys([x, y])))
    if isinstance(point, pd.DataFrame):
        point = point.iloc[0].to_dict() if not point.empty else None
    if point:
        row = dict(point)
        pref_cols = {t: f"{PREF_PREFIX}{t}" for t in tasks}
        info.preference = {t: float(row[c]) for t, c in pref_cols.items() if c in row}
        info.values = {
            k: float(v)
            for k, v in row.items()
            if "/" in k and not k.startswith(PREF_PREFIX) and isinstance(v, int | float) and v == v
        }
        px, py = info.values.get(x), info.values.get(y)
        if px is not None and py is not None and np.isfinite(px) and np.isfinite(py):
            info.point = (px, py)
    return info


def learned_point_text(learned: LearnedFrontInfo) -> str:
    """'task_1 0.70 · task_2 0.30 → task_1: mse 0.81, mae 0.7 · task_2: mse 0.9' (no losses)."""
    per_task: dict[str, list[str]] = {}
    for col, v in learned.values.items():
        task, metric = col.rsplit("/", 1)
        if metric != "loss":
            per_task.setdefault(task, []).append(f"{metric} {v:.4g}")
    shown = " · ".join(f"{t}: {', '.join(ms)}" for t, ms in per_task.items())
    return f"{preference_text(learned.preference)} → {shown}"


def inversion_text(learned: LearnedFrontInfo, lam: object = "?") -> str:
    """Why the slider works backwards for some task of this model, with the numbers ("" if not)."""
    if not learned.inverted:
        return ""
    parts = [
        f"{col.replace('/', ' ')} {lo:.4g} at preference 0 → {hi:.4g} at preference 1"
        for col, lo, hi in learned.inverted
    ]
    head = "In this model a larger preference for a task does not make it better: " + "; ".join(parts) + ". "
    if _positive(lam):
        return head + (
            f"COSMOS's cosine penalty (λ = {lam}) pulls the losses towards the preference ray, a larger "
            "loss where the preference is larger; when it outweighs the preference-weighted losses (small "
            "losses, large λ), the preference works backwards. A smaller λ lets it act as a weight."
        )
    return head + (
        "The model has not learned to follow the preference on these metrics: the tasks may hardly "
        "trade off in this model, or training was too short for the preference to matter. A Pareto "
        "HyperNetwork (conditioning hypernet) or more epochs let the preference act as a weight."
    )


def _positive(lam: object) -> bool:
    try:
        return float(lam) > 0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True  # unknown: the cosine penalty is the likely cause


def _add_learned(fig: go.Figure, info: ParetoInfo, learned: LearnedFrontInfo) -> None:
    hover = f"%{{text}}<br>{info.x}: %{{x:.4g}}<br>{info.y}: %{{y:.4g}}<extra>learned front</extra>"
    if not learned.curve.empty:
        fig.add_trace(
            go.Scatter(
                x=learned.curve["x"],
                y=learned.curve["y"],
                mode="lines+markers" if learned.connected else "markers",
                name=LEARNED_TRACE,
                text=learned.curve["text"],
                line={"color": "#d62728", "width": 2},
                marker={"color": "#d62728", "size": 5, "opacity": 0.7},
                hovertemplate="preference " + hover,
                meta={"cosmos": learned.run_id},
            )
        )
    if learned.point is not None:
        fig.add_trace(
            go.Scatter(
                x=[learned.point[0]],
                y=[learned.point[1]],
                mode="markers",
                name=PREFERENCE_TRACE,
                text=[preference_text(learned.preference)],
                marker={
                    "symbol": "star",
                    "size": 22,
                    "color": "#d62728",
                    "line": {"color": "black", "width": 1.5},
                },
                hovertemplate="your preference: " + hover,
                meta={"cosmos": learned.run_id, "preference": learned.preference},
            )
        )


def _axis_title(column: str, higher: bool) -> str:
    return f"{column.replace('/', ' ')} ({'↑' if higher else '↓'} better)"


def pareto_figure(
    info: ParetoInfo,
    selected: str | None = None,
    height: int = 480,
    learned: LearnedFrontInfo | None = None,
) -> go.Figure:
    """Scatter of runs: front points solid, dominated ones faded; the front as a step line. With
    `learned`, a COSMOS model's learned front as a curve and the chosen preference as a star."""
    if info.points.empty and learned is None:
        return empty_figure("no runs with both metrics yet")
    fig = go.Figure()
    colors = color_map(sorted(info.points["group"].unique()))
    if len(info.region_x):
        fig.add_trace(
            go.Scatter(
                x=info.region_x,
                y=info.region_y,
                mode="lines",
                fill="toself",
                name="hypervolume region",
                fillcolor="rgba(31, 119, 180, 0.08)",
                line={"width": 0},
                hoverinfo="skip",
            )
        )
    if len(info.front_x):
        fig.add_trace(
            go.Scatter(
                x=info.front_x,
                y=info.front_y,
                mode="lines",
                name=FRONT_TRACE,
                line={"color": "black", "width": 1.5, "dash": "dash"},
                hoverinfo="skip",
            )
        )
    for grp in colors:
        g = info.points[info.points["group"] == grp]
        for on_front in (True, False):
            part = g[g["on_front"] == on_front]
            if part.empty:
                continue
            flag = ON_FRONT if on_front else DOMINATED
            fig.add_trace(
                go.Scatter(
                    x=part["x"],
                    y=part["y"],
                    mode="markers",
                    name=f"{grp}" if on_front else f"{grp} ({DOMINATED})",
                    legendgroup=grp,
                    customdata=np.stack([part["run_id"].to_numpy(), np.full(len(part), flag)], axis=1),
                    text=part["label"],
                    marker={
                        "color": colors[grp],
                        "size": 13 if on_front else 10,
                        "opacity": FRONT_OPACITY if on_front else DOMINATED_OPACITY,
                        "symbol": "circle" if on_front else "circle-open",
                        "line": {"color": "black" if on_front else colors[grp], "width": 1.5},
                    },
                    hovertemplate="%{text}<br>" + f"{info.x}: %{{x:.4g}}<br>{info.y}: %{{y:.4g}}<br>{flag}"
                    "<extra>click for details</extra>",
                    meta={"front": on_front, "group": grp},
                )
            )
    if info.reference is not None:
        fig.add_trace(
            go.Scatter(
                x=[info.reference[0]],
                y=[info.reference[1]],
                mode="markers",
                name=REFERENCE_TRACE,
                marker={"symbol": "x", "size": 11, "color": "gray"},
                hovertemplate="reference point<br>(%{x:.4g}, %{y:.4g})<extra></extra>",
            )
        )
    if selected is not None:
        sel = info.points[info.points["run_id"] == selected]
        if not sel.empty:
            fig.add_trace(
                go.Scatter(
                    x=sel["x"],
                    y=sel["y"],
                    mode="markers",
                    name="selected",
                    hoverinfo="skip",
                    marker={"size": 22, "symbol": "circle-open", "color": "#ff7f0e", "line": {"width": 3}},
                )
            )
    if learned is not None:
        _add_learned(fig, info, learned)
    hv = f" · hypervolume {info.hypervolume:.4g}" if info.hypervolume is not None else ""
    n_front = int(info.points["on_front"].sum())
    title = f"{n_front} of {len(info.points)} runs on the front{hv}"
    if info.points.empty and learned is not None:
        title = f"learned front of {learned.label}"
    elif learned is not None:
        title += " · with a learned front"
    fig.update_xaxes(title_text=_axis_title(info.x, info.hib_x))
    fig.update_yaxes(title_text=_axis_title(info.y, info.hib_y))
    return apply_layout(
        fig,
        title,
        height,
        legend={"orientation": "v", "x": 1.02, "y": 1, "yanchor": "top"},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )


def run_at(fig_points: Mapping[str, object], info: ParetoInfo) -> str | None:
    """The run id of a selected point (Streamlit selection dict): customdata first, else x/y."""
    cd = fig_points.get("customdata")
    if isinstance(cd, list | tuple) and cd:
        rid = cd[0]
        if isinstance(rid, str) and rid in set(info.points["run_id"]):
            return rid
    x, y = fig_points.get("x"), fig_points.get("y")
    if isinstance(x, int | float) and isinstance(y, int | float):
        d = (info.points["x"] - x).abs() + (info.points["y"] - y).abs()
        if len(d) and float(d.min()) < 1e-9 + 1e-6 * float(np.abs(info.points[["x", "y"]]).to_numpy().max()):
            return str(info.points.loc[d.idxmin(), "run_id"])
    return None


@dataclass
class ParallelInfo:
    objectives: list[str]
    higher_is_better: list[bool]
    points: pd.DataFrame  # run_id, label, group, <objectives...>, on_front
    color_by: str


def parallel_info(
    runs: pd.DataFrame,
    objectives: Sequence[str],
    color_by: str = "balancer",
    labels: Mapping[str, str] | None = None,
) -> ParallelInfo:
    """Runs with every objective, flagged on/off the front over all objectives."""
    labels = labels or {}
    objectives = [o for o in objectives if runs is not None and o in runs]
    hib = [direction_of(o) for o in objectives]
    if runs is None or runs.empty or not objectives:
        return ParallelInfo(list(objectives), hib, pd.DataFrame(), color_by)
    df = runs[["run_id", *([color_by] if color_by in runs else []), *objectives]].copy()
    for o in objectives:
        df[o] = pd.to_numeric(df[o], errors="coerce")
    df = df.dropna(subset=objectives).reset_index(drop=True)
    df["label"] = [labels.get(r, r) for r in df["run_id"]]
    df["group"] = df[color_by].fillna("?").astype(str) if color_by in df else "runs"
    df["on_front"] = (
        non_dominated_mask(df[objectives].to_numpy(dtype=float), hib) if len(df) else np.zeros(0, dtype=bool)
    )
    return ParallelInfo(list(objectives), hib, df, color_by)


def parallel_figure(info: ParallelInfo, height: int = 460) -> go.Figure:
    """Parallel coordinates; each axis is oriented so that up is better; last axis = on the front."""
    if info.points.empty:
        return empty_figure("no runs with all chosen metrics yet")
    groups = sorted(info.points["group"].unique())
    code = {g: i for i, g in enumerate(groups)}
    n = max(len(groups), 1)
    scale = []
    for i, _g in enumerate(groups):
        c = PALETTE[i % len(PALETTE)]
        lo, hi = i / n, (i + 1) / n
        scale += [[lo, c], [hi, c]]
    dims = []
    for o, h in zip(info.objectives, info.higher_is_better, strict=True):
        v = info.points[o].to_numpy(dtype=float)
        lo, hi = float(np.min(v)), float(np.max(v))
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
        rng = [lo - pad, hi + pad] if h else [hi + pad, lo - pad]
        dims.append({"label": f"{o} ({'↑' if h else '↓'})", "values": v, "range": rng})
    dims.append(
        {
            "label": "Pareto front",
            "values": info.points["on_front"].astype(int).to_numpy(),
            "tickvals": [0, 1],
            "ticktext": [DOMINATED, ON_FRONT],
            "range": [-0.1, 1.1],
        }
    )
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": [code[g] for g in info.points["group"]],
                "colorscale": scale,
                "cmin": -0.5,
                "cmax": n - 0.5,
                "showscale": False,
            },
            dimensions=dims,
            customdata=info.points["run_id"].to_numpy(),
            name="runs",
        )
    )
    for g in groups:  # a legend for the colours (parcoords has none)
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=g,
                marker={"color": PALETTE[code[g] % len(PALETTE)], "size": 10},
            )
        )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    n_front = int(info.points["on_front"].sum())
    return apply_layout(
        fig,
        f"{n_front} of {len(info.points)} runs non-dominated over "
        f"{len(info.objectives)} metrics (each axis: up is better)",
        height,
        margin={"l": 80, "r": 80, "t": 90, "b": 40},
        plot_bgcolor="white",
    )


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """'<task>/<metric>' columns of the runs table (test metrics), excluding the 'loss'."""
    if runs is None:
        return []
    return [c for c in runs.columns if "/" in c and not c.endswith("/loss")]


__all__ = [
    "DOMINATED",
    "FRONT_TRACE",
    "LEARNED_TRACE",
    "ON_FRONT",
    "PREFERENCE_TRACE",
    "LearnedFrontInfo",
    "ParallelInfo",
    "ParetoInfo",
    "inversion_text",
    "learned_front_info",
    "learned_point_text",
    "metric_columns",
    "metric_title",
    "parallel_figure",
    "parallel_info",
    "pareto_figure",
    "pareto_info",
    "preference_grid",
    "preference_inversions",
    "preference_text",
    "run_at",
]
