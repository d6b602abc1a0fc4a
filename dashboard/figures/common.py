"""Small shared pieces of the figure builders: colours, labels, smoothing, empty figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

PALETTE: tuple[str, ...] = tuple(qualitative.Plotly) + tuple(qualitative.D3)
#: Colours of good / bad changes (transfer, conflicts).
GOOD = "#2ca02c"
BAD = "#d62728"
NEUTRAL = "#7f7f7f"
LAYOUT = {
    "template": "plotly_white",
    "margin": {"l": 50, "r": 20, "t": 60, "b": 45},
    # legend at the right (plotly's default place): above the plot it collides with titles
    "legend": {"orientation": "v", "x": 1.02, "y": 1, "yanchor": "top", "font": {"size": 11}},
}


def color_map(keys: Sequence[str]) -> dict[str, str]:
    """A stable colour per key (in the given order)."""
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def short_id(run_id: str) -> str:
    """'20250101-120000-abc123' -> 'abc123' (the random part is enough to tell runs apart)."""
    return run_id.rsplit("-", 1)[-1] if "-" in run_id else run_id


def run_labels(runs: pd.DataFrame | None, run_ids: Sequence[str]) -> dict[str, str]:
    """A readable label per run: its name if set, else 'arch/balancer', with the short id."""
    out: dict[str, str] = {}
    meta = runs.set_index("run_id") if runs is not None and not runs.empty and "run_id" in runs else None
    for rid in run_ids:
        base = ""
        if meta is not None and rid in meta.index:
            row = meta.loc[rid]
            name = str(row.get("name") or "")
            base = name or f"{row.get('arch', '?')}/{row.get('balancer', '?')}"
        out[rid] = f"{base} ({short_id(rid)})" if base else short_id(rid)
    return out


def ema(values: Sequence[float] | np.ndarray, smoothing: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average; smoothing in [0, 1)."""
    x = np.asarray(values, dtype=float)
    if smoothing <= 0 or len(x) == 0:
        return x
    smoothing = min(float(smoothing), 0.999)
    out = np.empty_like(x)
    acc = 0.0
    weight = 0.0
    for i, v in enumerate(x):
        if not np.isfinite(v):
            out[i] = acc / weight if weight else np.nan
            continue
        acc = smoothing * acc + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out[i] = acc / weight
    return out


def add_note(fig: go.Figure, message: str, x: float = 0.5, y: float = 0.5, size: int = 14) -> None:
    """A grey message placed on the plotting area (paper coordinates): why a figure is empty, or
    what is still training. Returns nothing; the figure is changed in place."""
    fig.add_annotation(
        text=message,
        showarrow=False,
        x=x,
        y=y,
        xref="paper",
        yref="paper",
        font={"size": size, "color": NEUTRAL},
    )


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank figure that says why it is blank (pages usually show st.info instead)."""
    fig = go.Figure()
    add_note(fig, message)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, **{k: v for k, v in LAYOUT.items() if k != "legend"})
    return fig


def metric_title(column: str, higher: bool | None = None) -> str:
    """'task_1/mse' -> 'task_1 mse (lower is better)'."""
    text = column.replace("/", " ")
    if higher is None:
        return text
    return f"{text} ({'higher' if higher else 'lower'} is better)"


def pair_label(task_i: str, task_j: str) -> str:
    return f"{task_i} × {task_j}"


def apply_layout(
    fig: go.Figure, title: str | None = None, height: int | None = None, **extra: object
) -> go.Figure:
    layout: dict[str, object] = dict(LAYOUT)
    if title is not None:
        layout["title"] = {"text": title, "x": 0, "font": {"size": 15}}
    if height is not None:
        layout["height"] = height
    layout.update(extra)
    fig.update_layout(**layout)
    return fig


def subplot_grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for n panels."""
    cols = max(1, min(n, max_cols))
    rows = max(1, -(-n // cols))
    return rows, cols


def mapping_get(m: Mapping[str, str], key: str) -> str:
    return m.get(key, key)
