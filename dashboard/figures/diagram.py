"""A small block diagram of an architecture from `MTLModel.diagram()`:
{"nodes": [(id, label, kind)], "edges": [(src, dst)]}, drawn top (inputs) to bottom (outputs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from dashboard.figures.common import apply_layout, empty_figure

KIND_COLORS: dict[str, str] = {
    "input": "#e0e0e0",
    "shared": "#aec7e8",
    "expert": "#98df8a",
    "gate": "#ffbb78",
    "task": "#c5b0d5",
    "output": "#ff9896",
}
KIND_NAMES: dict[str, str] = {
    "input": "input",
    "shared": "shared",
    "expert": "expert",
    "gate": "gate",
    "task": "task-specific",
    "output": "task output",
}


@dataclass
class DiagramInfo:
    nodes: list[tuple[str, str, str]]
    edges: list[tuple[str, str]]
    pos: dict[str, tuple[float, float]]
    n_layers: int


def diagram_info(diagram: Mapping[str, Sequence]) -> DiagramInfo:
    """Layer every node by its longest path from a source; spread each layer evenly."""
    nodes = [(str(n[0]), str(n[1]), str(n[2])) for n in diagram.get("nodes", [])]
    ids = [n[0] for n in nodes]
    edges = [(str(a), str(b)) for a, b in diagram.get("edges", []) if a in ids and b in ids]
    layer = {i: 0 for i in ids}
    for _ in range(len(ids)):  # longest path by relaxation (diagrams are small DAGs)
        changed = False
        for a, b in edges:
            if layer[b] < layer[a] + 1:
                layer[b] = layer[a] + 1
                changed = True
        if not changed:
            break
    by_layer: dict[int, list[str]] = {}
    for i in ids:
        by_layer.setdefault(layer[i], []).append(i)
    pos: dict[str, tuple[float, float]] = {}
    for lvl, members in by_layer.items():
        k = len(members)
        for j, i in enumerate(members):
            pos[i] = ((j + 1) / (k + 1), -float(lvl))
    return DiagramInfo(nodes, edges, pos, (max(layer.values()) + 1) if layer else 0)


def _node_text(label: str, crowd: int) -> str:
    """The label drawn under a node: in a crowded layer the parenthesised detail moves to the
    hover text and the rest is wrapped to the room a node has."""
    if crowd >= 2 and "(" in label:
        label = label.split("(", 1)[0].strip()
    return _wrap(label, max(10, min(28, 48 // max(crowd, 1))))


def _wrap(text: str, width: int = 22) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return "<br>".join(lines)


def diagram_figure(info: DiagramInfo, title: str | None = None) -> go.Figure:
    if not info.nodes:
        return empty_figure("no diagram for this architecture")
    fig = go.Figure()
    ex, ey = [], []
    for a, b in info.edges:
        (x0, y0), (x1, y1) = info.pos[a], info.pos[b]
        ex += [x0, x1, None]
        ey += [y0, y1, None]
    fig.add_trace(
        go.Scatter(
            x=ex,
            y=ey,
            mode="lines",
            line={"color": "#b0b0b0", "width": 1},
            hoverinfo="skip",
            showlegend=False,
            name="edges",
        )
    )
    per_row: dict[float, int] = {}
    for _x, y in info.pos.values():
        per_row[y] = per_row.get(y, 0) + 1
    layer_size = {i: per_row[info.pos[i][1]] for i in info.pos}
    widest = max(per_row.values(), default=1)
    for kind, color in KIND_COLORS.items():
        members = [n for n in info.nodes if n[2] == kind]
        if not members:
            continue
        fig.add_trace(
            go.Scatter(
                x=[info.pos[n[0]][0] for n in members],
                y=[info.pos[n[0]][1] for n in members],
                mode="markers+text",
                name=KIND_NAMES.get(kind, kind),
                marker={
                    "symbol": "square",
                    "size": 30 if widest <= 6 else 20,
                    "color": color,
                    "line": {"color": "#555", "width": 1},
                },
                text=[_node_text(n[1], layer_size[n[0]]) for n in members],
                textposition="middle right" if widest <= 2 else "bottom center",
                textfont={"size": 10 if widest > 4 else 11},
                hovertext=[n[1] for n in members],
                hoverinfo="text",
            )
        )
    fig.update_xaxes(visible=False, range=[-0.05, 1.25 if widest <= 2 else 1.05])
    fig.update_yaxes(visible=False, range=[-(info.n_layers - 1) - 0.6, 0.4])
    return apply_layout(
        fig,
        title,
        90 * info.n_layers + 110,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0},
    )
