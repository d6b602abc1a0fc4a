"""Lesson 5 · Cascades: why ESMM trains CVR over the entire space. On recsys-sim, a conventional
CVR model (purchase labels on clicked impressions only) against ESMM (pCTCVR = pCTR x pCVR on
every impression), both scored against the simulator's true P(purchase | click) on every test
impression (engine.cascade_eval)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import NEUTRAL, add_note, apply_layout
from dashboard.lessons.base import Control, Lesson, RunRequest, RunSet, Settings, fmt_number, lesson_tags

KEY = "cascades"
CONFLICTS: tuple[float, ...] = (0.0, 0.5, 0.9)
DATA: dict[str, Any] = {
    "n_users": 1000,
    "n_items": 500,
    "n_impressions": 20000,
    "conversion_rate": 0.1,
    "seq_len": 5,
    "data_seed": 0,
}
TRAINING: dict[str, Any] = {
    "tasks": ["click", "purchase"],
    "epochs": 4,
    "batch_size": 256,
    "lr": 0.003,
    "grad_stats_every": 0,
    "log_every": 5,
    "threads": 1,
    "device": "cpu",
}
MODELS: dict[str, dict[str, Any]] = {
    "naive": {
        "arch": "shared-bottom",
        "arch_params": {"bottom_hidden": [32], "tower_hidden": [16]},
        "label_space": "clicked",
        "label": "CVR trained on clicks",
        "color": "#d62728",
    },
    "esmm": {
        "arch": "esmm",
        "arch_params": {"tower_hidden": [32, 16]},
        "label_space": "entire",
        "label": "ESMM (entire space)",
        "color": "#1f77b4",
    },
}
N_BINS = 10


def dataset_params(conflict: float, label_space: str = "entire") -> dict[str, Any]:
    return {**DATA, "conflict": float(conflict), "label_space": label_space}


def config(model: str, conflict: float, seed: int) -> dict[str, Any]:
    m = MODELS[model]
    return {
        "dataset": "recsys-sim",
        "dataset_params": dataset_params(conflict, m["label_space"]),
        "arch": m["arch"],
        "arch_params": m["arch_params"],
        "balancer": "ew",
        **TRAINING,
        "seed": int(seed),
        "name": f"lesson 5 · {m['label']} · clickbait {fmt_number(conflict)}",
        "tags": lesson_tags(KEY),
    }


def requests(settings: Settings, seed: int) -> list[RunRequest]:
    c = float(settings["conflict"])
    return [RunRequest(config(k, c, seed), MODELS[k]["label"]) for k in MODELS]


# ---- info (pure) ----------------------------------------------------------------------------


@dataclass
class BiasInfo:
    conflict: float
    truth: dict[str, np.ndarray]  # p_cvr, click, purchase, p_click (test rows)
    pred: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model key -> pctr, pcvr
    report: dict[str, dict[str, float]] = field(default_factory=dict)  # model key -> numbers
    runs: RunSet = field(default_factory=RunSet)


def bias_info(
    conflict: float,
    truth: dict[str, np.ndarray],
    pred: dict[str, dict[str, np.ndarray]] | None = None,
    runs: RunSet | None = None,
) -> BiasInfo:
    from engine.cascade_eval import bias_report

    pred = pred or {}
    report = {k: bias_report(v, truth) for k, v in pred.items()}
    return BiasInfo(float(conflict), truth, pred, report, runs or RunSet())


def figure(info: BiasInfo) -> go.Figure:
    from engine.cascade_eval import calibration_bins

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Who the CVR model learns from",
            "Predicted vs true P(purchase | click), every test impression",
        ),
        horizontal_spacing=0.1,
    )
    p_true, clicked = info.truth["p_cvr"], info.truth["click"]
    edges = np.linspace(0.0, float(np.quantile(p_true, 0.995)) if len(p_true) else 1.0, 31)
    for name, sel, color in (
        ("all impressions (where the model is used)", np.ones_like(clicked, dtype=bool), NEUTRAL),
        ("clicked impressions (the usual CVR training set)", clicked, "#d62728"),
    ):
        h, _ = np.histogram(p_true[sel], bins=edges, density=True)
        mids = 0.5 * (edges[1:] + edges[:-1])
        fig.add_trace(
            go.Scatter(
                x=mids,
                y=h,
                mode="lines",
                line={"color": color, "width": 2.5, "shape": "hvh"},
                fill="tozeroy",
                opacity=0.5,
                name=name,
                legendgroup="data",
                hovertemplate=f"{name}<br>true pCVR %{{x:.3f}}<br>density %{{y:.2f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_vline(
            x=float(p_true[sel].mean()) if sel.any() else 0.0,
            line={"color": color, "dash": "dash", "width": 1.5},
            row=1,
            col=1,
        )
    hi = float(np.quantile(p_true, 0.99)) if len(p_true) else 1.0
    fig.add_trace(
        go.Scatter(
            x=[0, hi],
            y=[0, hi],
            mode="lines",
            line={"color": "black", "dash": "dot", "width": 1},
            name="perfect (predicted = true)",
            legendgroup="models",
        ),
        row=1,
        col=2,
    )
    for key, m in MODELS.items():
        pred = info.pred.get(key)
        if pred is None:
            continue
        t, p = calibration_bins(pred["pcvr"], p_true, N_BINS)
        fig.add_trace(
            go.Scatter(
                x=t,
                y=p,
                mode="lines+markers",
                line={"color": m["color"], "width": 3},
                marker={"size": 8},
                name=m["label"],
                legendgroup="models",
                meta={"model": key},
                hovertemplate=f"{m['label']}<br>true %{{x:.3f}}<br>predicted %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    if not info.pred:
        add_note(fig, "training both models:<br>their lines appear as they finish…", x=0.8, y=0.85, size=13)
    fig.update_xaxes(title_text="true P(purchase | click)", row=1, col=1)
    fig.update_yaxes(title_text="share of impressions (density)", row=1, col=1)
    fig.update_xaxes(title_text="true P(purchase | click), 10 bins of equal size", row=1, col=2)
    fig.update_yaxes(title_text="predicted P(purchase | click)", row=1, col=2)
    fig = apply_layout(fig, f"Sample-selection bias at clickbait {fmt_number(info.conflict)}", 480)
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top"})
    return fig


def table(info: BiasInfo) -> list[dict[str, Any]]:
    """Per model: where the usual CVR model is evaluated (clicked rows) and where it is used (all)."""
    rows = []
    for key, r in info.report.items():
        rows.append(
            {
                "model": MODELS[key]["label"],
                "CVR AUC, clicked": round(r["cvr_auc_clicked"], 3),
                "rank corr. with truth, clicked": round(r["rank_corr_clicked"], 3),
                "rank corr. with truth, all": round(r["rank_corr_all"], 3),
                "mean pCVR, all (true)": f"{r['mean_pcvr_all']:.3f} ({r['true_mean_pcvr_all']:.3f})",
                "CTCVR AUC, all": round(r["ctcvr_auc_all"], 3),
            }
        )
    return rows


def summary(info: BiasInfo) -> str:
    t = info.truth
    clicked = t["click"]
    text = (
        f"Clicked impressions are {clicked.mean():.0%} of all; their mean true pCVR is "
        f"{t['p_cvr'][clicked].mean():.3f} against {t['p_cvr'].mean():.3f} over every impression"
    )
    text += (
        ": the clicked sample is biased."
        if abs(t["p_cvr"][clicked].mean() - t["p_cvr"].mean()) > 0.01
        else ": at this clickbait level the clicked sample is close to the whole."
    )
    r = info.report
    if "naive" in r and "esmm" in r:
        a, b = r["naive"], r["esmm"]
        text += (
            f" Over every impression, ESMM ranks by true pCVR with correlation {b['rank_corr_all']:.2f} "
            f"against {a['rank_corr_all']:.2f} for the model trained on clicks, and its mean pCVR is "
            f"{b['mean_pcvr_all']:.3f} against {a['mean_pcvr_all']:.3f} (true {a['true_mean_pcvr_all']:.3f})."
        )
    elif not r:
        text += " The two models are training; their lines appear as they finish."
    return text


# ---- loading ----------------------------------------------------------------------------------


def _truth(conflict: float, seed: int) -> dict[str, np.ndarray]:
    from dashboard import queries

    return queries.recsys_truth(json.dumps(dataset_params(conflict), sort_keys=True), int(seed))


def quick(settings: Settings, seed: int) -> BiasInfo:
    return bias_info(float(settings["conflict"]), _truth(float(settings["conflict"]), seed))


def load(settings: Settings, seed: int) -> BiasInfo:
    from dashboard import queries

    c = float(settings["conflict"])
    runs = RunSet()
    done: dict[str, str] = {}
    for key in MODELS:
        rid = queries.lesson_run(config(key, c, seed), submit=False)
        if rid is None:
            continue
        state = queries.run_states([rid])[rid]
        runs.ids[MODELS[key]["label"]] = rid
        runs.states[MODELS[key]["label"]] = state
        if state == "finished":
            done[key] = rid
    pred: dict[str, dict[str, np.ndarray]] = {}
    if done:
        got = queries.selection_bias(
            tuple(done.values()), json.dumps(dataset_params(c), sort_keys=True), int(seed)
        )
        pred = {key: got["pred"][rid] for key, rid in done.items()}
    return bias_info(c, _truth(c, seed), pred, runs)


LESSON = Lesson(
    key=KEY,
    number=5,
    title="Cascades: why ESMM trains CVR over the entire space",
    text=(
        "A shop shows items (impressions); some get clicked, a few clicked ones get bought. The "
        "conversion rate model (CVR, P(purchase | click)) is used to rank **every** impression, but "
        "the usual one is trained only on **clicked** impressions, the only rows with a purchase label: "
        "a sample the click itself picked (*sample-selection bias*). **ESMM** instead learns "
        "pCTCVR = pCTR × pCVR on every impression, so its CVR tower learns where it will be used. The "
        "simulator knows the true P(purchase | click) of every impression, clicked or not, so we can "
        "check both models where it matters.\n\n"
        "**What to look at:** left, the clicked impressions' true CVR against all impressions': with "
        "clickbait, clicks favour items that rarely sell, so the training sample is not the population. "
        "Right, each model's prediction against the truth, over every impression: the closer to the "
        "dotted diagonal, the better. The table compares them where the usual model is evaluated "
        "(clicked rows) and where it is used (all rows)."
    ),
    controls=(
        Control(
            "conflict",
            "Clickbait (how strongly click appeal fights purchase value)",
            "select_slider",
            0.9,
            options=CONFLICTS,
            help="recsys-sim's conflict dial: 0 = what gets clicked also sells",
        ),
    ),
    requests=requests,
    load=load,
    figure=figure,
    summary=summary,
    table=table,
    quick=quick,
)
