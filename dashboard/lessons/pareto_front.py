"""Lesson 4 · The Pareto front: a task-weight sweep's points and their front on click vs
purchase (recsys-sim with clickbait), and a preference slider that shows where a preference
lands: on the learned front of a preference-conditioned model (COSMOS) when one has trained,
else between the sweep's runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.common import BAD, GOOD, NEUTRAL, add_note, apply_layout
from dashboard.lessons.base import Control, Lesson, RunRequest, RunSet, Settings, fmt_number, lesson_tags

KEY = "pareto"
WEIGHTS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)  # weight on click; purchase gets 1 - w
TASKS = ("click", "purchase")
X_COL, Y_COL = "click/auc", "purchase/auc"
DATA: dict[str, Any] = {
    "n_users": 1000,
    "n_items": 500,
    "n_impressions": 20000,
    "conflict": 0.9,
    "conversion_rate": 0.1,
    "seq_len": 5,
    "data_seed": 0,
}
BASE: dict[str, Any] = {
    "dataset": "recsys-sim",
    "dataset_params": DATA,
    "tasks": list(TASKS),
    "arch": "shared-bottom",
    "arch_params": {"bottom_hidden": [16], "tower_hidden": [8]},
    "epochs": 4,
    "batch_size": 256,
    "lr": 0.003,
    "grad_stats_every": 0,
    "log_every": 5,
    "threads": 1,
    "device": "cpu",
}
COSMOS_EPOCHS = 6
COSMOS_PARAMS: dict[str, Any] = {"alpha": 1.0, "lam": 1.0, "eval_rays": 5, "conditioning": "input"}
FRONT_PREFS = 21


def sweep_config(w: float, seed: int) -> dict[str, Any]:
    return {
        **BASE,
        "balancer": "fixed",
        "balancer_params": {"weights": {"click": float(w), "purchase": round(1.0 - float(w), 6)}},
        "seed": int(seed),
        "sweep_id": f"lesson-pareto-s{int(seed)}",
        "name": f"lesson 4 · sweep w(click) = {fmt_number(w)}",
        "tags": [*lesson_tags(KEY), "sweep"],
    }


def cosmos_base(seed: int) -> dict[str, Any]:
    return {
        **BASE,
        "balancer": "ew",
        "epochs": COSMOS_EPOCHS,
        "seed": int(seed),
        "name": "lesson 4 · COSMOS (one model, every preference)",
        "tags": lesson_tags(KEY),
    }


def requests(settings: Settings, seed: int) -> list[RunRequest]:
    out = [RunRequest(sweep_config(w, seed), f"sweep w(click) = {fmt_number(w)}") for w in WEIGHTS]
    if settings.get("learned"):
        out.append(RunRequest(cosmos_base(seed), "COSMOS", cosmos=COSMOS_PARAMS))
    return out


# ---- info (pure) ----------------------------------------------------------------------------


@dataclass
class FrontInfo:
    points: pd.DataFrame  # w, run_id, state, click/auc, purchase/auc
    pref: float  # weight on click
    learned: pd.DataFrame | None = None  # COSMOS front: pref/click, click/auc, purchase/auc
    learned_wanted: bool = True
    cosmos_state: str = ""
    runs: RunSet = field(default_factory=RunSet)

    @property
    def finished(self) -> pd.DataFrame:
        p = self.points
        if p.empty:
            return p
        return p[(p["state"] == "finished") & p[X_COL].notna() & p[Y_COL].notna()].sort_values("w")


def front_mask(points: pd.DataFrame) -> np.ndarray:
    from engine.pareto import non_dominated_mask

    if points.empty:
        return np.zeros(0, dtype=bool)
    return non_dominated_mask(points[[X_COL, Y_COL]].to_numpy(float), [True, True])


def interpolate(points: pd.DataFrame, pref: float) -> tuple[float, float] | None:
    """(click AUC, purchase AUC) at weight `pref`, linear between the sweep runs that bracket
    it (clamped to the ends): the best guess without a preference-conditioned model."""
    if points.empty:
        return None
    w = points["w"].to_numpy(float)
    x = points[X_COL].to_numpy(float)
    y = points[Y_COL].to_numpy(float)
    order = np.argsort(w)
    w, x, y = w[order], x[order], y[order]
    return float(np.interp(pref, w, x)), float(np.interp(pref, w, y))


def landing(info: FrontInfo) -> tuple[float, float, str] | None:
    """Where the preference lands: (x, y, how it was found)."""
    lf = info.learned
    if lf is not None and not lf.empty:
        row = lf.iloc[int(np.argmin(np.abs(lf["pref/click"].to_numpy(float) - info.pref)))]
        return float(row[X_COL]), float(row[Y_COL]), "COSMOS"
    got = interpolate(info.finished, info.pref)
    if got is None:
        return None
    return got[0], got[1], "interpolated"


def learned_dominated(info: FrontInfo) -> int:
    """How many points of the learned front some finished sweep run beats on both tasks."""
    lf, done = info.learned, info.finished
    if lf is None or lf.empty or done.empty:
        return 0
    sx, sy = done[X_COL].to_numpy(float), done[Y_COL].to_numpy(float)
    n = 0
    for x, y in zip(lf[X_COL].to_numpy(float), lf[Y_COL].to_numpy(float), strict=True):
        if np.any((sx >= x) & (sy >= y) & ((sx > x) | (sy > y))):
            n += 1
    return n


def figure(info: FrontInfo) -> go.Figure:
    from engine.pareto import front_step_line

    fig = go.Figure()
    done = info.finished
    if not done.empty:
        mask = front_mask(done)
        fx, fy = front_step_line(done[[X_COL, Y_COL]].to_numpy(float), [True, True])
        fig.add_trace(
            go.Scatter(
                x=fx, y=fy, mode="lines", line={"color": NEUTRAL, "width": 2}, name="front of the sweep"
            )
        )
        fig.add_trace(
            go.Scatter(
                x=done[X_COL],
                y=done[Y_COL],
                mode="markers+text",
                text=[f"w = {fmt_number(w)}" for w in done["w"]],
                textposition="top center",
                marker={
                    "size": 13,
                    "color": [GOOD if m else NEUTRAL for m in mask],
                    "opacity": [1.0 if m else 0.4 for m in mask],
                },
                customdata=np.stack([done["run_id"].to_numpy(), done["w"].to_numpy()], axis=1),
                name="sweep runs (one model per weight)",
                hovertemplate="w(click) = %{customdata[1]}<br>click AUC %{x:.4f}<br>purchase AUC %{y:.4f}"
                "<extra>%{customdata[0]}</extra>",
            )
        )
    lf = info.learned
    if lf is not None and not lf.empty:
        lf = lf.sort_values("pref/click")
        fig.add_trace(
            go.Scatter(
                x=lf[X_COL],
                y=lf[Y_COL],
                mode="lines+markers",
                line={"color": "#9467bd", "width": 2, "dash": "dot"},
                marker={"size": 8, "color": "#9467bd"},
                name="learned front (COSMOS, one model)",
                customdata=lf["pref/click"],
                hovertemplate="preference %{customdata:.2f} on click<br>click AUC %{x:.4f}<br>"
                "purchase AUC %{y:.4f}<extra>COSMOS</extra>",
            )
        )
    land = landing(info)
    if land is not None:
        fig.add_trace(
            go.Scatter(
                x=[land[0]],
                y=[land[1]],
                mode="markers",
                marker={
                    "symbol": "star",
                    "size": 22,
                    "color": BAD,
                    "opacity": 0.8,
                    "line": {"width": 1, "color": "black"},
                },
                name=f"your preference ({info.pref:.0%} click)",
                hovertemplate="click AUC %{x:.4f}<br>purchase AUC %{y:.4f}<extra>"
                + ("COSMOS" if land[2] == "COSMOS" else "between sweep runs")
                + "</extra>",
            )
        )
    if done.empty:
        fig.update_xaxes(range=[0.5, 0.85])
        fig.update_yaxes(range=[0.5, 0.85])
        add_note(fig, "training the sweep: points appear as runs finish…")
    fig.update_xaxes(title_text="click AUC (higher is better)")
    fig.update_yaxes(title_text="purchase AUC (higher is better)")
    return apply_layout(fig, "Click vs purchase: what each task weighting buys", 500)


def summary(info: FrontInfo) -> str:
    done = info.finished
    land = landing(info)
    text = ""
    if land is None:
        text = f"Training {len(WEIGHTS)} sweep runs (one per weight): the points appear as they finish."
    else:
        how = (
            "the COSMOS model answers it by one forward pass"
            if land[2] == "COSMOS"
            else "read between the two sweep runs around it"
        )
        text = (
            f"Your preference, {info.pref:.0%} on click: click AUC {land[0]:.3f}, purchase AUC {land[1]:.3f} "
            f"({how})."
        )
        mid = interpolate(done, 0.5) if not done.empty else None
        if land[2] == "COSMOS" and info.learned is not None:
            lf = info.learned
            row = lf.iloc[int(np.argmin(np.abs(lf["pref/click"].to_numpy(float) - 0.5)))]
            mid = (float(row[X_COL]), float(row[Y_COL]))
        if mid is not None and abs(info.pref - 0.5) > 1e-9:
            dx, dy = land[0] - mid[0], land[1] - mid[1]
            text += f" Against equal weights that is {dx:+.3f} click AUC for {dy:+.3f} purchase AUC."
    lf = info.learned
    if lf is not None and not lf.empty:
        xs, ys = lf[X_COL].to_numpy(float), lf[Y_COL].to_numpy(float)
        text += (
            f" The learned front spans click AUC {xs.min():.3f}–{xs.max():.3f} and purchase AUC "
            f"{ys.min():.3f}–{ys.max():.3f} across preferences"
        )
        dominated = learned_dominated(info)
        if dominated:
            text += f"; {dominated} of its {len(lf)} points are beaten on both tasks by a sweep run"
        text += "."
    if info.learned_wanted and (info.learned is None or info.learned.empty):
        state = info.cosmos_state or "not started"
        text += (
            f" The learned front needs the COSMOS run ({state}); until it finishes the star is "
            "interpolated between sweep runs."
        )
    elif not info.learned_wanted:
        text += " Turn on the learned front to train one preference-conditioned model (COSMOS)."
    return text


def load(settings: Settings, seed: int) -> FrontInfo:
    from dashboard import queries

    runs_df = queries.runs()
    table = runs_df.set_index("run_id") if not runs_df.empty else None
    rows: list[dict[str, Any]] = []
    rs = RunSet()
    for w in WEIGHTS:
        rid = queries.lesson_run(sweep_config(w, seed), submit=False)
        if rid is None:
            continue
        row: dict[str, Any] = {"w": w, "run_id": rid, "state": "unknown", X_COL: np.nan, Y_COL: np.nan}
        if table is not None and rid in table.index:
            rec = table.loc[rid]
            row["state"] = str(rec["status"])
            for c in (X_COL, Y_COL):
                row[c] = rec[c] if c in rec.index else np.nan
        rows.append(row)
        rs.ids[f"w = {fmt_number(w)}"] = rid
        rs.states[f"w = {fmt_number(w)}"] = row["state"]
    points = pd.DataFrame(rows, columns=["w", "run_id", "state", X_COL, Y_COL])
    learned = None
    cosmos_state = ""
    wanted = bool(settings.get("learned"))
    if wanted:
        cid = queries.lesson_cosmos(cosmos_base(seed), COSMOS_PARAMS, submit=False)
        if cid is not None:
            cosmos_state = queries.run_states([cid])[cid]
            rs.ids["COSMOS"] = cid
            rs.states["COSMOS"] = cosmos_state
            if cosmos_state == "finished":
                prefs = tuple((round(a, 4), round(1 - a, 4)) for a in np.linspace(0.0, 1.0, FRONT_PREFS))
                try:
                    learned = queries.cosmos_front(cid, prefs, "test")
                except (FileNotFoundError, ValueError):
                    learned = None
    return FrontInfo(points, float(settings["pref"]), learned, wanted, cosmos_state, rs)


LESSON = Lesson(
    key=KEY,
    number=4,
    title="The Pareto front",
    text=(
        "In a shop where clickbait pays, predicting **clicks** and predicting **purchases** pull one "
        "model in different directions. A **weight sweep** trains one model per task weighting "
        "(w on click, 1 − w on purchase); each dot is one of them. A run is on the **front** (green) "
        "when no other run is better on both; faded runs are dominated.\n\n"
        "**What to look at:** the shape of the front: moving along it, every gain in click AUC costs "
        "purchase AUC. Drag the **preference** slider: the red star shows where that weighting lands. "
        "A sweep answers only at the weights it trained; a preference-conditioned model (COSMOS) "
        "trains once and answers any preference by a forward pass: its learned front is the dotted "
        "purple line. Compare how close it comes to the sweep."
    ),
    controls=(
        Control(
            "pref",
            "Preference: weight on click (the rest on purchase)",
            "slider",
            0.5,
            lo=0.0,
            hi=1.0,
            step=0.05,
            help="where on the trade-off you want to be",
        ),
        Control(
            "learned",
            "Learned front (one COSMOS model)",
            "toggle",
            True,
            help="also train one preference-conditioned model in the background",
        ),
    ),
    requests=requests,
    load=load,
    figure=figure,
    summary=summary,
)
