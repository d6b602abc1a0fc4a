"""Lesson 3 · What experts do: MMoE's gate weights per task over training (which experts each
task uses), for related and unrelated tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import PALETTE, apply_layout, empty_figure
from dashboard.lessons.base import Control, Lesson, RunRequest, RunSet, Settings, fmt_number, lesson_tags

KEY = "experts"
P_VALUES: tuple[float, ...] = (-0.5, 0.0, 0.5, 1.0)
N_EXPERTS = 4
TASKS = ("task_1", "task_2")
#: ~660 steps; gates specialise visibly within them at lr 0.01.
TRAINING: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "lr": 0.01,
    "grad_stats_every": 0,
    "log_every": 5,
    "threads": 1,
    "device": "cpu",
}
DATA: dict[str, Any] = {"n_samples": 3000, "dim": 16, "n_sines": 4, "data_seed": 0}


def config(p: float, seed: int) -> dict[str, Any]:
    return {
        "dataset": "synthetic-correlation",
        "dataset_params": {**DATA, "correlation": float(p)},
        "arch": "mmoe",
        "arch_params": {"n_experts": N_EXPERTS, "expert_hidden": [16], "tower_hidden": [8]},
        "balancer": "ew",
        **TRAINING,
        "seed": int(seed),
        "name": f"lesson 3 · MMoE gates · p = {fmt_number(p)}",
        "tags": lesson_tags(KEY),
    }


def requests(settings: Settings, seed: int) -> list[RunRequest]:
    p = float(settings["p"])
    return [RunRequest(config(p, seed), f"MMoE at p = {fmt_number(p)}")]


@dataclass
class GateInfo:
    gates: pd.DataFrame  # step, task, expert, weight (one run)
    p: float
    runs: RunSet = field(default_factory=RunSet)


def overlap(g1: np.ndarray, g2: np.ndarray) -> float:
    """How much two tasks share experts: sum_e min(g1_e, g2_e) (1 = same mix, 0 = disjoint)."""
    return float(np.minimum(np.asarray(g1, float), np.asarray(g2, float)).sum())


def overlap_curve(gates: pd.DataFrame) -> pd.DataFrame:
    """step -> overlap of the two tasks' mean gate weights."""
    if gates.empty:
        return pd.DataFrame(columns=["step", "overlap"])
    wide = gates.pivot_table(index=["step", "expert"], columns="task", values="weight").reset_index()
    tasks = [t for t in gates["task"].unique()]
    if len(tasks) < 2:
        return pd.DataFrame(columns=["step", "overlap"])
    a, b = tasks[0], tasks[1]
    wide["m"] = np.minimum(wide[a], wide[b])
    return wide.groupby("step", as_index=False)["m"].sum().rename(columns={"m": "overlap"})


def figure(info: GateInfo) -> go.Figure:
    g = info.gates
    if g.empty:
        msg = "The MMoE run is training: its gate weights appear here as it logs them."
        title = f"MMoE gate weights over training (p = {fmt_number(info.p)})"
        return apply_layout(empty_figure(msg, height=460), title, 460)
    tasks = list(dict.fromkeys(g["task"].tolist()))
    fig = make_subplots(
        rows=1,
        cols=len(tasks),
        subplot_titles=[f"{t}: how much of each expert it uses" for t in tasks],
        horizontal_spacing=0.08,
        shared_yaxes=True,
    )
    experts = sorted(g["expert"].unique())
    for k, t in enumerate(tasks):
        gt = g[g["task"] == t]
        for e in experts:
            d = gt[gt["expert"] == e].sort_values("step")
            fig.add_trace(
                go.Scatter(
                    x=d["step"],
                    y=d["weight"],
                    mode="lines",
                    stackgroup=f"s{k}",
                    line={"width": 0.5, "color": PALETTE[int(e) % len(PALETTE)]},
                    name=f"expert {int(e) + 1}",
                    legendgroup=f"e{e}",
                    showlegend=k == 0,
                    hovertemplate=f"{t}, expert {int(e) + 1}: %{{y:.2f}}<br>step %{{x}}<extra></extra>",
                ),
                row=1,
                col=k + 1,
            )
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="mean gate weight (stacked, sums to 1)", range=[0, 1], col=1)
    return apply_layout(fig, f"MMoE gate weights over training (p = {fmt_number(info.p)})", 460)


def summary(info: GateInfo) -> str:
    g = info.gates
    if g.empty:
        return "Waiting for the MMoE run's first logged steps."
    last = g[g["step"] == g["step"].max()]
    tasks = list(dict.fromkeys(g["task"].tolist()))
    parts = []
    vecs = []
    for t in tasks:
        v = last[last["task"] == t].sort_values("expert")["weight"].to_numpy()
        vecs.append(v)
        top = int(np.argmax(v)) + 1 if len(v) else 0
        parts.append(f"{t} leans most on expert {top} ({v.max():.0%})" if len(v) else t)
    text = f"At step {int(g['step'].max())}: " + "; ".join(parts) + "."
    if len(vecs) >= 2:
        ov = overlap(vecs[0], vecs[1])
        text += f" Overlap of the two tasks' expert use: {ov:.2f} (1 = the same experts, 0 = disjoint)."
    return text


def load(settings: Settings, seed: int) -> GateInfo:
    from dashboard import queries

    p = float(settings["p"])
    rid = queries.lesson_run(config(p, seed), submit=False)
    runs = RunSet()
    gates = pd.DataFrame(columns=["step", "task", "expert", "weight"])
    if rid is not None:
        runs.ids["MMoE"] = rid
        runs.states["MMoE"] = queries.run_states([rid])[rid]
        gw = queries.gate_weights([rid])
        gates = gw.drop(columns=["run_id"]) if not gw.empty else gates
    return GateInfo(gates, p, runs)


LESSON = Lesson(
    key=KEY,
    number=3,
    title="What experts do",
    text=(
        "MMoE keeps several **experts** (small networks every task can read) and gives each task a "
        "**gate**: a softmax that decides, per example, how much of each expert the task uses. One "
        "MMoE with 4 experts trains on the lesson-1 tasks; every few steps it records each task's mean "
        "gate weights.\n\n"
        "**What to look at:** the two panels side by side. When the tasks are unrelated or opposed "
        "(p ≤ 0), the gates drift apart as training goes on: each task comes to lean on different "
        "experts, so they stop fighting over the same weights. At p = 1 (the same task) there is "
        "nothing to separate and both tasks keep a similar mix. The overlap number below sums up how "
        "much of their expert use the two tasks share."
    ),
    controls=(
        Control(
            "p",
            "Correlation between the tasks (p)",
            "select_slider",
            -0.5,
            options=P_VALUES,
            help="trains one MMoE at this p",
        ),
    ),
    requests=requests,
    load=load,
    figure=figure,
    summary=summary,
)
