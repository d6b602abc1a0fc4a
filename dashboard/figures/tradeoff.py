"""The trade-off chart of a report: for each point of the front, its change on every chosen task
metric against the reference run, as grouped bars signed so that up = better (a hatched bar is a loss). Bar
labels carry the raw change in its unit (pt for AUC-like metrics, % relative for losses).

Data -> TradeoffInfo -> Figure, each step pure (engine.tradeoffs does the numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.common import apply_layout, color_map, empty_figure
from engine.tradeoffs import PT, Change, Objective, changes


@dataclass
class TradeoffInfo:
    objectives: list[Objective]
    reference_id: str
    reference_label: str
    rows: list[tuple[str, str, list[Change]]]  # (run_id, label, changes) per compared point

    @property
    def empty(self) -> bool:
        return not self.rows


def tradeoff_info(
    points: pd.DataFrame,
    objectives: Sequence[Objective],
    reference_id: str,
    run_ids: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> TradeoffInfo:
    """Changes of `run_ids` (the front, usually) against `reference_id`; `points` holds run_id and
    the objectives' columns."""
    labels = labels or {}
    by_id = points.set_index("run_id")
    cols = [o.column for o in objectives]
    ref = by_id.loc[reference_id, cols].astype(float).to_dict()
    rows = []
    for rid in run_ids:
        if rid == reference_id or rid not in by_id.index:
            continue
        vals = by_id.loc[rid, cols].astype(float).to_dict()
        rows.append((rid, labels.get(rid, rid), changes(vals, ref, objectives)))
    return TradeoffInfo(list(objectives), reference_id, labels.get(reference_id, reference_id), rows)


def _bar_text(c: Change) -> str:
    if c.kind == "missing":
        return "n/a"
    return f"{c.shown:+.2f} pt" if c.objective.unit == PT else f"{c.shown:+.2f}%"


def tradeoff_figure(info: TradeoffInfo, height: int = 440) -> go.Figure:
    """Grouped bars: x = task metric (with its unit), one bar per front point, y = change against
    the reference signed so that positive = better; colour = point, hatched = loss."""
    if info.empty:
        return empty_figure("no other point to compare with the reference")
    fig = go.Figure()
    x = [f"{o.label} ({o.unit}, {'↑' if o.higher_is_better else '↓'} better)" for o in info.objectives]
    colors = color_map([rid for rid, _, _ in info.rows])
    for rid, label, cs in info.rows:
        fig.add_trace(
            go.Bar(
                x=x,
                y=[c.improvement if c.kind != "missing" else 0.0 for c in cs],
                name=label,
                marker={
                    "color": colors[rid],
                    "line": {"color": "black", "width": 0.5},
                    "pattern": {"shape": ["/" if c.kind == "loss" else "" for c in cs], "solidity": 0.45},
                },
                text=[_bar_text(c) for c in cs],
                textposition="outside",
                customdata=[[c.text, c.value, c.reference] for c in cs],
                hovertemplate=f"{label}<br>%{{customdata[0]}}<br>"
                "%{customdata[1]:.4g} vs reference %{customdata[2]:.4g}<extra></extra>",
                meta={"run_id": rid},
            )
        )
    fig.add_hline(y=0, line={"color": "black", "width": 1})
    fig.update_yaxes(title_text="change vs reference (up = better)", zeroline=True)
    fig.update_xaxes(type="category")
    return apply_layout(
        fig,
        f"Each front point against the reference {info.reference_label}",
        height,
        barmode="group",
        legend={"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top", "font": {"size": 11}},
        margin={"l": 60, "r": 20, "t": 60, "b": 90},
    )
