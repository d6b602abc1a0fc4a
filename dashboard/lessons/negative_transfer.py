"""Lesson 1 · Negative transfer: Shared-Bottom vs MMoE vs single-task networks as the tasks'
correlation p moves (the MMoE paper's synthetic data, section 3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.common import NEUTRAL, apply_layout
from dashboard.lessons.base import Control, Lesson, RunRequest, RunSet, Settings, fmt_number, lesson_tags

KEY = "negative-transfer"
P_VALUES: tuple[float, ...] = (-0.5, 0.0, 0.5, 1.0)
#: each point is the mean over this many seeds (seed, seed + 1, ...): one short run is noisy
N_SEEDS = 3
ARCHS: tuple[str, ...] = ("shared-bottom", "mmoe", "single-task")
ARCH_LABEL = {"shared-bottom": "Shared-Bottom", "mmoe": "MMoE", "single-task": "single-task (baseline)"}
ARCH_COLOR = {"shared-bottom": "#d62728", "mmoe": "#1f77b4", "single-task": "#7f7f7f"}
ARCH_PARAMS: dict[str, dict[str, Any]] = {
    "shared-bottom": {"bottom_hidden": [32], "tower_hidden": [8]},
    "mmoe": {"n_experts": 4, "expert_hidden": [16], "tower_hidden": [8]},
    "single-task": {"hidden": [32, 8]},
}
#: ~450 steps on 1,800 rows: a few seconds per run on one laptop core.
DATA: dict[str, Any] = {"n_samples": 3000, "dim": 16, "n_sines": 4, "data_seed": 0}
TRAINING: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 64,
    "lr": 0.005,
    "grad_stats_every": 0,
    "log_every": 5,
    "threads": 1,
    "device": "cpu",
}
METRIC = "mse"


def config(arch: str, p: float, seed: int) -> dict[str, Any]:
    return {
        "dataset": "synthetic-correlation",
        "dataset_params": {**DATA, "correlation": float(p)},
        "arch": arch,
        "arch_params": ARCH_PARAMS[arch],
        "balancer": "ew",
        **TRAINING,
        "seed": int(seed),
        "name": f"lesson 1 · {ARCH_LABEL[arch]} · p = {fmt_number(p)}",
        "tags": lesson_tags(KEY),
    }


def seeds_of(seed: int) -> list[int]:
    return [int(seed) + k for k in range(N_SEEDS)]


def _role(arch: str, p: float, s: int) -> str:
    return f"{ARCH_LABEL[arch]} at p = {fmt_number(p)}, seed {s}"


def requests(settings: Settings, seed: int) -> list[RunRequest]:
    p = float(settings["p"])
    return [RunRequest(config(a, p, s), _role(a, p, s)) for s in seeds_of(seed) for a in ARCHS]


def whole_curve(settings: Settings, seed: int) -> list[RunRequest]:
    return [
        RunRequest(config(a, p, s), _role(a, p, s)) for p in P_VALUES for s in seeds_of(seed) for a in ARCHS
    ]


# ---- info (pure) ----------------------------------------------------------------------------


@dataclass
class CurveInfo:
    points: pd.DataFrame  # arch, p, seed, run_id, state, loss (mean test MSE of the tasks; NaN until done)
    p: float
    shown: list[str]
    runs: RunSet = field(default_factory=RunSet)

    def means(self) -> pd.DataFrame:
        """arch, p, loss (mean over the finished seeds), n (how many finished)."""
        done = self.points[self.points["loss"].notna()] if not self.points.empty else self.points
        if done.empty:
            return pd.DataFrame(columns=["arch", "p", "loss", "n"])
        g = done.groupby(["arch", "p"], as_index=False)["loss"]
        return g.mean().merge(g.count().rename(columns={"loss": "n"}), on=["arch", "p"])


def curve_info(rows: pd.DataFrame, p: float, shown: list[str], runs: RunSet | None = None) -> CurveInfo:
    """rows: arch, p, seed, run_id, state and one column per task metric ('task_1/mse', ...)."""
    cols = [c for c in rows.columns if c.endswith(f"/{METRIC}")]
    base = ["arch", "p", "seed", "run_id", "state"]
    pts = rows[base].copy() if not rows.empty else pd.DataFrame(columns=base)
    if not rows.empty and cols:
        vals = rows[cols].apply(pd.to_numeric, errors="coerce")
        pts["loss"] = vals.mean(axis=1, skipna=False).where(rows["state"] == "finished")
    else:
        pts["loss"] = np.nan
    return CurveInfo(pts.reset_index(drop=True), float(p), list(shown), runs or RunSet())


def figure(info: CurveInfo) -> go.Figure:
    fig = go.Figure()
    pts = info.points
    means = info.means()
    for arch in ARCHS:
        if arch not in info.shown:
            continue
        d = pts[(pts["arch"] == arch) & pts["loss"].notna()] if not pts.empty else pts
        fig.add_trace(
            go.Scatter(
                x=d["p"] if not d.empty else [],
                y=d["loss"] if not d.empty else [],
                mode="markers",
                marker={"size": 7, "color": ARCH_COLOR[arch], "opacity": 0.35},
                name=f"{ARCH_LABEL[arch]}, one run",
                legendgroup=arch,
                showlegend=False,
                customdata=d[["seed", "run_id"]].to_numpy() if not d.empty else None,
                hovertemplate=f"{ARCH_LABEL[arch]}, seed %{{customdata[0]}}<br>p = %{{x}}<br>"
                "test MSE %{y:.4f}<extra>%{customdata[1]}</extra>",
            )
        )
        m = means[means["arch"] == arch].sort_values("p") if not means.empty else means
        fig.add_trace(
            go.Scatter(
                x=m["p"] if not m.empty else [],
                y=m["loss"] if not m.empty else [],
                mode="lines+markers",
                name=ARCH_LABEL[arch],
                legendgroup=arch,
                line={
                    "color": ARCH_COLOR[arch],
                    "width": 3,
                    "dash": "dot" if arch == "single-task" else "solid",
                },
                marker={"size": 11},
                meta={"arch": arch},
                customdata=m["n"] if not m.empty else None,
                hovertemplate=f"{ARCH_LABEL[arch]}<br>p = %{{x}}<br>mean test MSE %{{y:.4f}}"
                "<br>over %{customdata} seed(s)<extra></extra>",
            )
        )
    pending = pts[(pts["p"] == info.p) & pts["loss"].isna()] if not pts.empty else pts
    fig.add_vline(x=info.p, line={"color": NEUTRAL, "dash": "dash", "width": 1})
    if not pending.empty:
        fig.add_annotation(
            x=info.p,
            y=1.0,
            yref="paper",
            text=f"training {len(pending)} run{'s' if len(pending) != 1 else ''} "
            f"at p = {fmt_number(info.p)}…",
            showarrow=False,
            yshift=10,
            font={"color": NEUTRAL, "size": 12},
        )
    fig.update_xaxes(
        title_text="p: correlation between the two tasks (1 = the same task)",
        range=[min(P_VALUES) - 0.1, max(P_VALUES) + 0.1],
        tickvals=list(P_VALUES),
        zeroline=False,
    )
    fig.update_yaxes(title_text="test MSE, mean of the two tasks (lower is better)", rangemode="tozero")
    return apply_layout(fig, f"Loss after training (lines: mean of {N_SEEDS} seeds; dots: single runs)", 480)


def summary(info: CurveInfo) -> str:
    means = info.means()
    at = means[means["p"] == info.p] if not means.empty else means
    done = {r.arch: (float(r.loss), int(r.n)) for r in at.itertuples()}
    p = fmt_number(info.p)
    if not done:
        return (
            f"Training Shared-Bottom, MMoE and single-task networks at p = {p} ({N_SEEDS} seeds each): "
            "the points appear as they finish."
        )
    parts = [f"{ARCH_LABEL[a]} {done[a][0]:.3f}" for a in ARCHS if a in done]
    text = f"At p = {p}, mean test MSE: " + ", ".join(parts) + "."
    base = done.get("single-task")
    if base and base[0] > 0:
        for a in ("shared-bottom", "mmoe"):
            if a in done:
                change = (done[a][0] - base[0]) / base[0]
                verdict = (
                    "negative transfer" if change > 0.05 else ("helps" if change < -0.05 else "about even")
                )
                text += f" {ARCH_LABEL[a]} vs single-task: {change:+.0%} ({verdict})."
    if any(n < N_SEEDS for _, n in done.values()):
        text += " (Not every seed has finished yet.)"
    n_p = len(set(means["p"])) if not means.empty else 0
    if n_p < len(P_VALUES):
        text += " Move the dial, or train the whole curve, to fill in the other p values."
    return text


# ---- loading (through dashboard.queries) --------------------------------------------------------


def load(settings: Settings, seed: int) -> CurveInfo:
    from dashboard import queries

    rows: list[dict[str, Any]] = []
    runs = queries.runs()
    table = runs.set_index("run_id") if not runs.empty else None
    current = RunSet()
    for p in P_VALUES:
        for s in seeds_of(seed):
            for a in ARCHS:
                rid = queries.lesson_run(config(a, p, s), submit=False)
                if rid is None:
                    continue
                row: dict[str, Any] = {"arch": a, "p": p, "seed": s, "run_id": rid, "state": "unknown"}
                if table is not None and rid in table.index:
                    rec = table.loc[rid]
                    row["state"] = str(rec["status"])
                    for t in ("task_1", "task_2"):
                        col = f"{t}/{METRIC}"
                        row[col] = rec[col] if col in rec.index else np.nan
                rows.append(row)
                if p == float(settings["p"]):
                    current.ids[_role(a, p, s)] = rid
                    current.states[_role(a, p, s)] = row["state"]
    df = pd.DataFrame(rows, columns=["arch", "p", "seed", "run_id", "state", "task_1/mse", "task_2/mse"])
    return curve_info(df, float(settings["p"]), list(settings["show"]), current)


LESSON = Lesson(
    key=KEY,
    number=1,
    title="Negative transfer",
    text=(
        "Training tasks together can make a task **worse** than training it alone: *negative transfer*. "
        "Two regression tasks come from the MMoE paper's generator, and the dial **p** sets how related "
        "they are (p = 1: the same underlying task; p = 0: unrelated; p < 0: pulling apart). Each faint "
        "dot is one small model the worker trains in a few seconds: **Shared-Bottom** (one shared network, a "
        "tower per task), **MMoE** (shared experts, a gate per task) and a **single-task** network per "
        "task, the baseline.\n\n"
        "**What to look at:** the red Shared-Bottom line against the grey single-task line as p falls. "
        "Above the baseline means sharing hurt: negative transfer. MMoE's gates let each task use "
        "its own experts, so it should stay near or below the baseline at every p. One short run is "
        "noisy (the faint dots), so each line point is the mean of three seeds."
    ),
    controls=(
        Control(
            "p",
            "Correlation between the tasks (p)",
            "select_slider",
            -0.5,
            options=P_VALUES,
            help="cosine between the two tasks' true weight vectors; trains the three models at this p",
        ),
        Control(
            "show",
            "Lines",
            "multiselect",
            list(ARCHS),
            options=ARCHS,
            labels=ARCH_LABEL,
            help="which models to draw",
        ),
    ),
    requests=requests,
    load=load,
    figure=figure,
    summary=summary,
    more=("Train the whole curve (all p)", whole_curve),
)
