"""Gradient conflicts between tasks: cosine heatmaps, cosine over time, conflict rates per task
pair and per shared block, and gradient-norm ratios.

Input is the `grad_stats` table (run_id, step, layer, task_i, task_j, cosine, norm_i, norm_j);
layer "all" is the whole set of shared parameters, other layers are named blocks; diagonal rows
(task_i == task_j) carry each task's gradient norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import (
    BAD,
    apply_layout,
    color_map,
    ema,
    empty_figure,
    pair_label,
    subplot_grid,
)

COSINE_SCALE = "RdBu"


def pairs_only(stats: pd.DataFrame) -> pd.DataFrame:
    """Off-diagonal rows (task_i != task_j) with a 'pair' column."""
    if stats is None or stats.empty:
        return pd.DataFrame(columns=[*list(stats.columns if stats is not None else []), "pair"])
    df = stats[stats["task_i"] != stats["task_j"]]
    return df.assign(pair=[pair_label(a, b) for a, b in zip(df["task_i"], df["task_j"], strict=True)])


def task_order(stats: pd.DataFrame) -> list[str]:
    """Tasks in the order the trainer logged them (first appearance)."""
    seen: dict[str, None] = {}
    for a, b in zip(stats["task_i"], stats["task_j"], strict=True):
        seen.setdefault(str(a), None)
        seen.setdefault(str(b), None)
    return list(seen)


@dataclass
class CosineMatrixInfo:
    tasks: list[str]
    matrix: np.ndarray  # T x T, symmetric, 1 on the diagonal
    step: int
    layer: str


def cosine_matrix_info(stats: pd.DataFrame, step: int | None = None, layer: str = "all") -> CosineMatrixInfo:
    """The task x task cosine matrix at `step` (nearest logged step at or before it; last if None)."""
    df = stats[stats["layer"] == layer] if stats is not None and not stats.empty else stats
    if df is None or df.empty:
        return CosineMatrixInfo([], np.zeros((0, 0)), 0, layer)
    steps = np.sort(df["step"].unique())
    if step is None:
        chosen = int(steps[-1])
    else:
        before = steps[steps <= step]
        chosen = int(before[-1]) if len(before) else int(steps[0])
    at = df[df["step"] == chosen]
    tasks = task_order(df)
    idx = {t: i for i, t in enumerate(tasks)}
    m = np.eye(len(tasks))
    for a, b, c in zip(at["task_i"], at["task_j"], at["cosine"], strict=True):
        if a != b:
            m[idx[a], idx[b]] = m[idx[b], idx[a]] = float(c)
    return CosineMatrixInfo(tasks, m, chosen, layer)


def cosine_heatmap(info: CosineMatrixInfo, title: str | None = None) -> go.Figure:
    """Red = conflicting gradients (cosine < 0), blue = aligned."""
    if not info.tasks:
        return empty_figure("no gradient statistics recorded yet")
    text = [[f"{v:+.2f}" for v in row] for row in info.matrix]
    fig = go.Figure(
        go.Heatmap(
            z=info.matrix,
            x=info.tasks,
            y=info.tasks,
            zmin=-1,
            zmax=1,
            colorscale=COSINE_SCALE,
            text=text,
            texttemplate="%{text}",
            colorbar={"title": {"text": "cosine"}},
            hovertemplate="%{y} × %{x}: %{z:.3f}<extra></extra>",
            name="cosine",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x")
    return apply_layout(
        fig,
        title or f"Gradient cosine at step {info.step} ({info.layer})",
        360,
        margin={"l": 80, "r": 20, "t": 50, "b": 60},
    )


def cosine_timeseries_figure(
    stats: pd.DataFrame,
    layer: str = "all",
    labels: Mapping[str, str] | None = None,
    smoothing: float = 0.0,
    mark_step: int | None = None,
) -> go.Figure:
    """Cosine of every task pair over steps (colour = pair, dash = run when several runs)."""
    labels = labels or {}
    df = pairs_only(stats)
    df = df[df["layer"] == layer] if not df.empty else df
    if df.empty:
        return empty_figure("no gradient statistics recorded yet")
    runs = list(dict.fromkeys(df["run_id"].tolist()))
    colors = color_map(list(dict.fromkeys(df["pair"].tolist())))
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    fig = go.Figure()
    for (rid, pair), g in df.groupby(["run_id", "pair"], sort=False):
        g = g.sort_values("step")
        name = str(pair) if len(runs) == 1 else f"{labels.get(rid, rid)} · {pair}"
        fig.add_trace(
            go.Scatter(
                x=g["step"],
                y=ema(g["cosine"].to_numpy(), smoothing),
                mode="lines",
                name=name,
                line={"color": colors[str(pair)], "dash": dashes[runs.index(rid) % len(dashes)]},
                hovertemplate=f"{name}<br>cosine %{{y:.3f}} at step %{{x}}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line={"color": "black", "width": 1})
    if mark_step is not None:
        fig.add_vline(x=mark_step, line={"color": "gray", "dash": "dot"})
    fig.update_yaxes(range=[-1.05, 1.05], title_text="cosine")
    fig.update_xaxes(title_text="step")
    return apply_layout(fig, f"Gradient cosine over training ({layer})", 340)


def norm_ratio_info(stats: pd.DataFrame, layer: str = "all") -> pd.DataFrame:
    """Per (run, step, task): the task's gradient norm, its share of the mean norm, and the
    step's max/min norm ratio."""
    if stats is None or stats.empty:
        return pd.DataFrame(columns=["run_id", "step", "task", "norm", "relative", "max_min_ratio"])
    d = stats[(stats["layer"] == layer) & (stats["task_i"] == stats["task_j"])]
    d = d.rename(columns={"task_i": "task", "norm_i": "norm"})[["run_id", "step", "task", "norm"]]
    if d.empty:
        return pd.DataFrame(columns=["run_id", "step", "task", "norm", "relative", "max_min_ratio"])
    grp = d.groupby(["run_id", "step"])["norm"]
    mean = grp.transform("mean").replace(0, np.nan)
    ratio = grp.transform("max") / grp.transform("min").replace(0, np.nan)
    return d.assign(relative=d["norm"] / mean, max_min_ratio=ratio).reset_index(drop=True)


def norm_ratio_figure(
    stats: pd.DataFrame, layer: str = "all", labels: Mapping[str, str] | None = None, smoothing: float = 0.0
) -> go.Figure:
    """Each task's gradient norm relative to the mean of the tasks' norms (1 = balanced)."""
    labels = labels or {}
    info = norm_ratio_info(stats, layer)
    if info.empty:
        return empty_figure("no gradient norms recorded yet")
    runs = list(dict.fromkeys(info["run_id"].tolist()))
    colors = color_map(list(dict.fromkeys(info["task"].tolist())))
    dashes = ["solid", "dash", "dot", "dashdot"]
    fig = go.Figure()
    for (rid, task), g in info.groupby(["run_id", "task"], sort=False):
        g = g.sort_values("step")
        name = str(task) if len(runs) == 1 else f"{labels.get(rid, rid)} · {task}"
        fig.add_trace(
            go.Scatter(
                x=g["step"],
                y=ema(g["relative"].to_numpy(), smoothing),
                mode="lines",
                name=name,
                line={"color": colors[str(task)], "dash": dashes[runs.index(rid) % len(dashes)]},
                customdata=np.stack([g["norm"], g["max_min_ratio"]], axis=1),
                hovertemplate=f"{name}<br>norm / mean %{{y:.2f}}<br>norm %{{customdata[0]:.3g}}, "
                "max/min %{customdata[1]:.2f}<br>step %{x}<extra></extra>",
            )
        )
    fig.add_hline(y=1, line={"color": "black", "width": 1, "dash": "dot"})
    fig.update_yaxes(title_text="norm / mean norm")
    fig.update_xaxes(title_text="step")
    return apply_layout(fig, f"Gradient-norm ratios ({layer})", 320)


def conflict_rate_info(stats: pd.DataFrame, by_layer: bool = False) -> pd.DataFrame:
    """Fraction of logged steps with negative cosine per (run, [layer,] task pair), with the mean
    and the 10th percentile of the cosine."""
    keys = ["run_id", "layer", "pair"] if by_layer else ["run_id", "pair"]
    cols = [*keys, "conflict_rate", "mean_cosine", "p10_cosine", "n_steps"]
    df = pairs_only(stats)
    if not by_layer and not df.empty:
        df = df[df["layer"] == "all"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby(keys, sort=False)["cosine"]
    out = pd.DataFrame(
        {
            "conflict_rate": g.apply(lambda s: float((s < 0).mean())),
            "mean_cosine": g.mean(),
            "p10_cosine": g.quantile(0.1),
            "n_steps": g.size(),
        }
    ).reset_index()
    return out[cols]


def conflict_rate_figure(rates: pd.DataFrame, labels: Mapping[str, str] | None = None) -> go.Figure:
    """Bars: share of steps where a task pair's gradients point against each other."""
    labels = labels or {}
    if rates is None or rates.empty:
        return empty_figure("no gradient statistics recorded yet")
    fig = go.Figure()
    colors = color_map(list(dict.fromkeys(rates["run_id"].tolist())))
    for rid, g in rates.groupby("run_id", sort=False):
        fig.add_trace(
            go.Bar(
                x=g["pair"],
                y=g["conflict_rate"],
                name=labels.get(str(rid), str(rid)),
                marker_color=colors[str(rid)],
                customdata=np.stack([g["mean_cosine"], g["n_steps"]], axis=1),
                text=[f"{v:.0%}" for v in g["conflict_rate"]],
                textposition="outside",
                hovertemplate="%{x}: %{y:.0%} of %{customdata[1]} steps conflict<br>"
                "mean cosine %{customdata[0]:.3f}<extra></extra>",
            )
        )
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", title_text="steps with cosine < 0")
    fig.update_xaxes(title_text="task pair", type="category")
    return apply_layout(fig, "Conflict rate per task pair", 340, barmode="group")


def cosine_distribution_figure(
    stats: pd.DataFrame, layer: str = "all", phases: int = 3, labels: Mapping[str, str] | None = None
) -> go.Figure:
    """Box plots of each pair's cosine in equal phases of training (early / middle / late)."""
    labels = labels or {}
    df = pairs_only(stats)
    df = df[df["layer"] == layer] if not df.empty else df
    if df.empty:
        return empty_figure("no gradient statistics recorded yet")
    names = {3: ["early", "middle", "late"], 2: ["first half", "second half"]}.get(
        phases, [f"phase {i + 1}" for i in range(phases)]
    )
    out = []
    for _rid, g in df.groupby("run_id", sort=False):
        lo, hi = g["step"].min(), g["step"].max()
        span = max(hi - lo, 1)
        idx = np.minimum(((g["step"] - lo) / span * phases).astype(int), phases - 1)
        out.append(g.assign(phase=[names[i] for i in idx]))
    df = pd.concat(out)
    runs = list(dict.fromkeys(df["run_id"].tolist()))
    several = len(runs) > 1
    colors = color_map(list(dict.fromkeys(df["pair"].tolist())))
    fig = go.Figure()
    for (rid, pair), g in df.groupby(["run_id", "pair"], sort=False):
        name = f"{labels.get(rid, rid)} · {pair}" if several else str(pair)
        fig.add_trace(
            go.Box(x=g["phase"], y=g["cosine"], name=name, marker_color=colors[str(pair)], boxmean=True)
        )
    fig.add_hline(y=0, line={"color": BAD, "width": 1, "dash": "dot"})
    fig.update_yaxes(range=[-1.05, 1.05], title_text="cosine")
    fig.update_xaxes(categoryorder="array", categoryarray=names, title_text="phase of training")
    return apply_layout(fig, f"Cosine distribution over training ({layer})", 360, boxmode="group")


def layer_conflict_figure(
    stats: pd.DataFrame, run_ids: Sequence[str] | None = None, labels: Mapping[str, str] | None = None
) -> go.Figure:
    """Heatmap: rows = shared blocks (embedding, experts, ...), columns = task pairs (per run),
    colour = conflict rate. Shows which experts or layers conflict most."""
    labels = labels or {}
    rates = conflict_rate_info(stats, by_layer=True)
    rates = rates[rates["layer"] != "all"] if not rates.empty else rates
    if run_ids is not None and not rates.empty:
        rates = rates[rates["run_id"].isin(list(run_ids))]
    if rates.empty:
        return empty_figure("no per-block statistics (the model has one shared block or none)")
    runs = list(dict.fromkeys(rates["run_id"].tolist()))
    several = len(runs) > 1
    rates = rates.assign(
        col=[
            f"{labels.get(r, r)} · {p}" if several else p
            for r, p in zip(rates["run_id"], rates["pair"], strict=True)
        ]
    )
    z = rates.pivot_table(index="layer", columns="col", values="conflict_rate", sort=False)
    mc = rates.pivot_table(index="layer", columns="col", values="mean_cosine", sort=False)
    mc = mc.reindex(index=z.index, columns=z.columns)
    fig = go.Figure(
        go.Heatmap(
            z=z.to_numpy(),
            x=list(z.columns),
            y=list(z.index),
            zmin=0,
            zmax=1,
            colorscale="Reds",
            customdata=mc.to_numpy(),
            text=[[f"{v:.0%}" if np.isfinite(v) else "" for v in row] for row in z.to_numpy()],
            texttemplate="%{text}",
            colorbar={"title": {"text": "conflict rate"}},
            hovertemplate="%{y}, %{x}<br>conflict rate %{z:.0%}<br>"
            "mean cosine %{customdata:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return apply_layout(
        fig,
        "Conflict rate per shared block",
        max(260, 40 * len(z.index) + 140),
        margin={"l": 100, "r": 20, "t": 50, "b": 80},
    )


def grad_layers(stats: pd.DataFrame) -> list[str]:
    """Layers present, 'all' first."""
    if stats is None or stats.empty:
        return []
    layers = list(dict.fromkeys(stats["layer"].tolist()))
    return (["all"] if "all" in layers else []) + [x for x in layers if x != "all"]


def multi_panel_heatmaps(infos: Sequence[CosineMatrixInfo], titles: Sequence[str]) -> go.Figure:
    """Several cosine matrices side by side (one per run)."""
    infos = [i for i in infos if i.tasks]
    if not infos:
        return empty_figure("no gradient statistics recorded yet")
    rows, cols = subplot_grid(len(infos), max_cols=3)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles)[: len(infos)])
    for k, info in enumerate(infos):
        fig.add_trace(
            go.Heatmap(
                z=info.matrix,
                x=info.tasks,
                y=info.tasks,
                zmin=-1,
                zmax=1,
                colorscale=COSINE_SCALE,
                showscale=k == 0,
                text=[[f"{v:+.2f}" for v in row] for row in info.matrix],
                texttemplate="%{text}",
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    fig.update_yaxes(autorange="reversed")
    return apply_layout(fig, None, 340 * rows)
