"""A report of chosen runs that people can keep: one self-contained HTML file, PNGs of its figures
and a CSV of its numbers (all three from one `Report`, so they always agree).

`build_report` takes plain data (rows of the runs table, each run's config, the chosen
'<task>/<metric>' columns, a reference run, a note) and reuses the dashboard's figure builders
(Pareto front, parallel coordinates, trade-off bars, curves, transfer). No Streamlit here: the
Report page and the tests call it directly.

- `to_html()`: one file, plotly.js inline (no CDN, no web fonts, no links out), so it opens
  offline; every point's full configuration is in a collapsible block.
- `to_pngs()`: one PNG per figure through kaleido and the system Chromium (never downloaded).
- `to_csv()`: one row per run: metadata, front/reference flags, values, changes against the
  reference with their units, the trade-off sentence and the config as JSON.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from dashboard.figures.common import run_labels
from dashboard.figures.curves import curves_figure, curves_info
from dashboard.figures.pareto import parallel_figure, parallel_info, pareto_figure, pareto_info
from dashboard.figures.tradeoff import tradeoff_figure, tradeoff_info
from dashboard.figures.transfer import TransferInfo, transfer_figure
from engine.tradeoffs import (
    PCT,
    PT,
    UNIT_TEXT,
    Objective,
    change_column,
    front_mask,
    objective,
    tradeoff_table,
)

PNG_WIDTH = 1100  # px of an exported figure (its height is the figure's own)
PNG_SCALE = 2  # device pixels per px: sharp on slides
DEFAULT_HEIGHT = 460
META_COLUMNS = ["name", "dataset", "arch", "balancer", "seed", "sweep_id", "owner", "status"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")

T = TypeVar("T")


class ReportError(ValueError):
    """The chosen runs/metrics cannot make a report; the message says why."""


@dataclass
class ReportFigure:
    name: str  # file-safe: the PNG is figures/<name>.png, the HTML div is fig-<name>
    title: str
    caption: str
    figure: go.Figure

    @property
    def height(self) -> int:
        return int(self.figure.layout.height or DEFAULT_HEIGHT)

    @property
    def width(self) -> int:
        return PNG_WIDTH


@dataclass
class Report:
    title: str
    note: str
    created: float
    objectives: list[Objective]
    reference_id: str
    points: pd.DataFrame  # one row per run: see `table()`
    tradeoffs: pd.DataFrame  # engine.tradeoffs.tradeoff_table of the front (+ the reference)
    configs: dict[str, dict[str, Any]]
    figures: list[ReportFigure] = field(default_factory=list)
    n_missing: int = 0  # chosen runs lacking a chosen metric (not on any front)

    # ---- facts ------------------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, str]:
        return dict(zip(self.points["run_id"], self.points["label"], strict=True))

    @property
    def front_ids(self) -> list[str]:
        return self.points.loc[self.points["on_front"], "run_id"].tolist()

    @property
    def seeds(self) -> list[int]:
        s = pd.to_numeric(self.points.get("seed"), errors="coerce").dropna()
        return sorted({int(x) for x in s})

    def figure(self, name: str) -> ReportFigure:
        return next(f for f in self.figures if f.name == name)

    # ---- CSV --------------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The numbers of the report, one row per run (what `to_csv` writes)."""
        return self.points.copy()

    def to_csv(self) -> bytes:
        return self.table().to_csv(index=False).encode("utf-8")

    # ---- PNG --------------------------------------------------------------------------------

    def to_pngs(self, scale: int = PNG_SCALE) -> dict[str, bytes]:
        """figure name -> PNG bytes (width PNG_WIDTH x scale, the figure's height x scale)."""
        jobs = [(f.name, f.figure, f.width, f.height) for f in self.figures]
        return render_pngs(jobs, scale=scale)

    # ---- HTML -------------------------------------------------------------------------------

    def to_html(self) -> str:
        """One self-contained HTML document (plotly.js inline; no network needed to open it)."""
        from plotly.offline import get_plotlyjs

        return _HTML.format(
            title=_e(self.title),
            css=_CSS,
            plotlyjs=get_plotlyjs(),
            body=self._html_body(),
        )

    def _html_body(self) -> str:
        parts = [f"<h1>{_e(self.title)}</h1>", f'<p class="meta">{self._meta_line()}</p>']
        if self.note.strip():
            paras = "".join(f"<p>{_e(p)}</p>" for p in self.note.strip().split("\n") if p.strip())
            parts.append(f'<section class="note"><h2>Note</h2>{paras}</section>')
        parts.append(self._reading_html())
        parts.append(self._tradeoff_html())
        for i, f in enumerate(self.figures, 1):
            parts.append(
                f'<section class="figure" id="section-{f.name}"><h2>Figure {i}. {_e(f.title)}</h2>'
                f'<p class="caption">{_e(f.caption)}</p>{_figure_div(f)}</section>'
            )
        parts.append(self._points_html())
        parts.append(self._configs_html())
        parts.append(
            "<footer>Made with Seesaw, a multi-task learning lab. The figures are interactive "
            "(hover, zoom, click legend entries); this file needs no network.</footer>"
        )
        return "\n".join(parts)

    def _meta_line(self) -> str:
        when = datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%d %H:%M UTC")
        datasets = sorted({str(d) for d in self.points.get("dataset", pd.Series(dtype=str)).dropna()})
        sweeps = sorted({str(s) for s in self.points.get("sweep_id", pd.Series(dtype=str)).dropna() if s})
        bits = [
            f"created {when}",
            f"{len(self.points)} run(s)",
            f"{len(self.front_ids)} on the front",
            "dataset " + ", ".join(datasets) if datasets else "",
            "sweep " + ", ".join(sweeps) if sweeps else "",
        ]
        return _e(" · ".join(b for b in bits if b))

    def _reading_html(self) -> str:
        rows = "".join(
            f"<tr><td><code>{_e(o.column)}</code></td><td>{_e(o.label)}</td>"
            f"<td><b>{_e(o.direction_text)}</b></td><td>{_e(o.unit)}</td></tr>"
            for o in self.objectives
        )
        units = sorted({o.unit for o in self.objectives}, key=[PT, PCT].index)
        unit_lines = "".join(f"<li><b>{_e(u)}</b>: {_e(UNIT_TEXT[u])}</li>" for u in units)
        ref = self.reference_id
        ref_vals = self.points.set_index("run_id").loc[ref]
        ref_text = ", ".join(f"{o.label} {_fmt(ref_vals[o.column])}" for o in self.objectives)
        seeds = self.seeds
        seeds_text = ", ".join(map(str, seeds)) if seeds else "not recorded"
        return (
            '<section class="reading"><h2>How to read this report</h2>'
            "<table><thead><tr><th>column</th><th>task metric</th><th>objective direction</th>"
            f"<th>unit of changes</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<ul>{unit_lines}"
            f"<li><b>Reference run</b>: {_e(self.labels[ref])} (<code>{_e(ref)}</code>): {_e(ref_text)}.</li>"
            "<li><b>Front</b>: a run is on the front when no other chosen run is at least as good on "
            f"every one of the {len(self.objectives)} metrics and better on one.</li>"
            f"<li><b>Seeds</b>: {_e(seeds_text)} (each run's seed is in the tables below).</li>"
            "<li>Values are test-split metrics of finished runs (best checkpoint by the "
            "early-stopping metric).</li></ul></section>"
        )

    def _tradeoff_html(self) -> str:
        t = self.tradeoffs
        heads = "".join(f"<th>{_e(o.label)} ({_e(o.unit)})</th>" for o in self.objectives)
        body = []
        for _, r in t.iterrows():
            cells = "".join(
                f'<td class="num">{"–" if r["reference"] else _signed(r[change_column(o)])}</td>'
                for o in self.objectives
            )
            cls = ' class="ref"' if r["reference"] else ""
            body.append(f"<tr{cls}><td>{_e(r['label'])}</td>{cells}<td>{_e(r['tradeoff'])}</td></tr>")
        return (
            '<section class="tradeoffs"><h2>Trade-offs on the front</h2>'
            f"<p>Each point of the front against the reference {_e(self.labels[self.reference_id])}: "
            "the change of every chosen metric (raw sign: + means the value went up; see the "
            "objective direction above), then the trade-off in words.</p>"
            f"<table><thead><tr><th>point</th>{heads}<th>trade-off</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></section>"
        )

    def _points_html(self) -> str:
        heads = "".join(
            f"<th>{_e(o.label)}<br><small>{_e(o.direction_text)}</small></th>" for o in self.objectives
        )
        body = []
        for _, r in self.points.iterrows():
            vals = "".join(f'<td class="num">{_fmt(r[o.column])}</td>' for o in self.objectives)
            marks = (("★ front", r["on_front"]), ("reference", r["reference"]))
            flags = " · ".join(text for text, on in marks if on)
            seed = r.get("seed")
            body.append(
                f"<tr><td>{_e(r['label'])}</td><td><code>{_e(r['run_id'])}</code></td>"
                f"<td>{_e(r.get('arch', ''))} / {_e(r.get('balancer', ''))}</td>"
                f"<td>{_e(r.get('weights', ''))}</td>"
                f'<td class="num">{"" if pd.isna(seed) else int(seed)}</td>{vals}<td>{_e(flags)}</td></tr>'
            )
        return (
            '<section class="points"><h2>Every point</h2>'
            "<table><thead><tr><th>run</th><th>id</th><th>architecture / balancer</th>"
            f"<th>task weights</th><th>seed</th>{heads}<th></th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></section>"
        )

    def _configs_html(self) -> str:
        blocks = []
        for rid, label in self.labels.items():
            cfg = self.configs.get(rid, {})
            blocks.append(
                f'<details class="config" id="config-{_e(rid)}"><summary>{_e(label)} · '
                f"<code>{_e(rid)}</code></summary><pre>{_e(json.dumps(cfg, indent=2, sort_keys=True))}"
                "</pre></details>"
            )
        return (
            '<section class="configs"><h2>Configuration of every point</h2>'
            "<p>Click a run to see its full configuration (everything needed to train it again).</p>"
            f"{''.join(blocks)}</section>"
        )

    # ---- bundle -----------------------------------------------------------------------------

    def file_stem(self) -> str:
        when = datetime.fromtimestamp(self.created, UTC).strftime("%Y%m%d-%H%M")
        return f"seesaw-report-{when}"

    def to_zip(self, pngs: Mapping[str, bytes] | None = None, with_pngs: bool = True) -> bytes:
        """report.html, numbers.csv, configs.json and figures/<name>.png in one zip."""
        if with_pngs and pngs is None:
            pngs = self.to_pngs()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("report.html", self.to_html())
            z.writestr("numbers.csv", self.to_csv())
            z.writestr("configs.json", json.dumps(self.configs, indent=2, sort_keys=True))
            for name, data in (pngs or {}).items():
                z.writestr(f"figures/{name}.png", data)
        return buf.getvalue()


# ---- building ---------------------------------------------------------------------------------


def default_reference(
    points: pd.DataFrame, metrics: Sequence[str], configs: Mapping[str, Mapping[str, Any]] | None = None
) -> str | None:
    """The natural baseline among the points (those with every metric first): an equal-weights
    ('ew') multi-task run; else, in a weight sweep, the run whose fixed weights are closest to
    equal; else the first run."""
    if points is None or points.empty:
        return None
    have = [m for m in metrics if m in points]
    complete = points.dropna(subset=have) if have else points
    pool = complete if not complete.empty else points
    if "balancer" in pool:
        arch = pool["arch"] if "arch" in pool else pd.Series("", index=pool.index)
        ew = pool[(pool["balancer"] == "ew") & (arch != "single-task")]
        if not ew.empty:
            return str(ew["run_id"].iloc[0])
    spread: dict[str, float] = {}
    for rid in pool["run_id"].astype(str):
        w = ((configs or {}).get(rid, {}).get("balancer_params") or {}).get("weights")
        if isinstance(w, Mapping) and w:
            vals = [float(v) for v in w.values()]
            spread[rid] = max(vals) - min(vals)
    if spread:
        return min(spread, key=lambda r: spread[r])
    return str(pool["run_id"].iloc[0])


def _weights_text(cfg: Mapping[str, Any]) -> str:
    w = (cfg.get("balancer_params") or {}).get("weights")
    if isinstance(w, Mapping) and w:
        return "; ".join(f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in w.items())
    return ""


def build_report(
    runs: pd.DataFrame,
    metrics: Sequence[str],
    configs: Mapping[str, Mapping[str, Any]],
    reference: str | None = None,
    note: str = "",
    title: str = "",
    curves: pd.DataFrame | None = None,
    transfer: TransferInfo | None = None,
    color_by: str = "balancer",
    directions: Mapping[str, bool] | None = None,
    created: float | None = None,
) -> Report:
    """Assemble a Report of `runs` (rows of the runs table: run_id and the '<task>/<metric>'
    columns in `metrics`, plus optional metadata such as label, dataset, arch, balancer, seed).

    `curves`: long metric rows (train/val loss) of the runs, for a curves figure of the front;
    `transfer`: a TransferInfo of the runs against their single-task baselines (optional);
    `directions`: higher-is-better per column, overriding engine.metrics.
    """
    metrics = list(dict.fromkeys(metrics))
    if len(metrics) < 2:
        raise ReportError("choose two or more task metrics: a trade-off needs two")
    if runs is None or runs.empty:
        raise ReportError("choose at least one run (or a sweep) with finished test metrics")
    missing_cols = [m for m in metrics if m not in runs]
    if missing_cols:
        raise ReportError(f"the chosen runs have no values for {missing_cols}")
    directions = directions or {}
    try:
        objectives = [objective(m, directions.get(m)) for m in metrics]
    except KeyError as e:
        raise ReportError(f"unknown metric direction: {e}; pass its direction explicitly") from None
    configs = {str(k): dict(v) for k, v in configs.items()}

    df = runs.drop_duplicates("run_id").reset_index(drop=True).copy()
    for m in metrics:
        df[m] = pd.to_numeric(df[m], errors="coerce").astype(float)
    ids = df["run_id"].astype(str).tolist()
    if "label" in df and df["label"].notna().all():
        labels = dict(zip(ids, df["label"].astype(str), strict=True))
    else:
        labels = run_labels(df, ids)
    reference = reference or default_reference(df, metrics, configs)
    if reference not in set(ids):
        raise ReportError(f"the reference run {reference!r} is not among the chosen runs")

    on_front = front_mask(df, objectives)
    points = pd.DataFrame({"run_id": ids, "label": [labels[r] for r in ids]})
    for c in META_COLUMNS:
        if c in df:
            points[c] = df[c].to_numpy()
        else:
            points[c] = [configs.get(r, {}).get(c) for r in ids]
    points["seed"] = pd.to_numeric(points["seed"], errors="coerce").astype("Int64")
    points["weights"] = [_weights_text(configs.get(r, {})) for r in ids]
    points["on_front"] = on_front
    points["reference"] = points["run_id"] == reference
    for m in metrics:
        points[m] = df[m].to_numpy()
    table = tradeoff_table(points[["run_id", *metrics]], objectives, reference, labels)
    for o in objectives:
        points[change_column(o)] = table[change_column(o)].to_numpy()
    points["tradeoff"] = table["tradeoff"].to_numpy()
    points["config_json"] = [json.dumps(configs.get(r, {}), sort_keys=True) for r in ids]
    front_and_ref = points["on_front"] | points["reference"]
    tradeoffs = table[front_and_ref.to_numpy()].reset_index(drop=True)
    # the reference first, then the front in the order of the first objective (best first)
    first = objectives[0]
    order = points.set_index("run_id")[first.column]
    tradeoffs = (
        tradeoffs.assign(
            _ref=~tradeoffs["reference"],
            _key=[order[r] * (-1 if first.higher_is_better else 1) for r in tradeoffs["run_id"]],
        )
        .sort_values(["_ref", "_key"])
        .drop(columns=["_ref", "_key"])
        .reset_index(drop=True)
    )

    report = Report(
        title=title.strip() or _default_title(points, objectives),
        note=note,
        created=time.time() if created is None else float(created),
        objectives=objectives,
        reference_id=reference,
        points=points,
        tradeoffs=tradeoffs,
        configs={r: configs.get(r, {}) for r in ids},
        n_missing=int((~df[metrics].notna().all(axis=1)).sum()),
    )
    report.figures = _figures(report, df, color_by, curves, transfer)
    return report


def _default_title(points: pd.DataFrame, objectives: Sequence[Objective]) -> str:
    ds = sorted({str(d) for d in points.get("dataset", pd.Series(dtype=str)).dropna()})
    what = " vs ".join(o.label for o in objectives)
    return f"Trade-off report: {what}" + (f" on {', '.join(ds)}" if ds else "")


def _figures(
    report: Report,
    df: pd.DataFrame,
    color_by: str,
    curves: pd.DataFrame | None,
    transfer: TransferInfo | None,
) -> list[ReportFigure]:
    objs = report.objectives
    labels = report.labels
    ref = report.reference_id
    figs: list[ReportFigure] = []
    x, y = objs[0], objs[1]
    pinfo = pareto_info(df, x.column, y.column, color_by, labels, (x.higher_is_better, y.higher_is_better))
    pfig = pareto_figure(pinfo, selected=ref)
    pfig.update_traces(name="reference run", selector={"name": "selected"})
    extra = (
        f" The front drawn here is over these two axes; the report's front uses all {len(objs)} metrics."
        if len(objs) > 2
        else ""
    )
    figs.append(
        ReportFigure(
            "pareto",
            f"Pareto front: {x.label} vs {y.label}",
            f"Each point is a run. Solid points are non-dominated, faded ones dominated; the dashed "
            f"step line is the front, the orange ring the reference run. {x.label}: "
            f"{x.direction_text}; {y.label}: {y.direction_text}.{extra}",
            pfig,
        )
    )
    if len(objs) >= 3:
        par = parallel_info(df, [o.column for o in objs], color_by, labels)
        figs.append(
            ReportFigure(
                "parallel",
                "All chosen metrics at once",
                "Parallel coordinates: one line per run, each axis oriented so that up is better; "
                "the last axis marks the runs on the front over all chosen metrics.",
                parallel_figure(par),
            )
        )
    tinfo = tradeoff_info(report.points, objs, ref, report.front_ids, labels)
    figs.append(
        ReportFigure(
            "tradeoffs",
            "Gains and losses of the front against the reference",
            "Bars are signed so that up is better (a hatched bar is a loss); labels carry the raw "
            "change in its unit (pt = percentage points for AUC/accuracy, % = relative change "
            "for losses and errors).",
            tradeoff_figure(tinfo),
        )
    )
    if curves is not None and not curves.empty:
        keep = [*report.front_ids, ref]
        c = curves[curves["run_id"].isin(keep)]
        cinfo = curves_info(c, "loss", ("train", "val"), labels, smoothing=0.6)
        if cinfo.series:
            figs.append(
                ReportFigure(
                    "curves",
                    "Training curves of the front and the reference",
                    "Per-task loss (lower is better): train per step (smoothed 0.6, solid), "
                    "validation per epoch (dashed); log scale.",
                    curves_figure(cinfo, log_y=True),
                )
            )
    if transfer is not None and not transfer.empty:
        figs.append(
            ReportFigure(
                "transfer",
                "Against single-task baselines",
                "Each task's test metric relative to the same task trained alone (positive = "
                "sharing helped, red = negative transfer).",
                transfer_figure(transfer),
            )
        )
    return figs


# ---- rendering helpers ------------------------------------------------------------------------


def _e(x: object) -> str:
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return ""
    return html.escape(str(x), quote=True)


def _number(v: object) -> float | None:
    """`v` as a float (NaN included); None when it is not a number."""
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _fmt(v: object) -> str:
    f = _number(v)
    return "" if f is None or pd.isna(f) else f"{f:.4f}"


def _signed(v: object) -> str:
    f = _number(v)
    if f is None:
        return ""
    return "n/a" if pd.isna(f) else f"{f:+.2f}"


def _figure_div(f: ReportFigure) -> str:
    return pio.to_html(
        f.figure,
        include_plotlyjs=False,
        full_html=False,
        div_id=f"fig-{f.name}",
        default_width="100%",
        default_height=f"{f.height}px",
        config={
            "displaylogo": False,
            "responsive": True,
            "toImageButtonOptions": {"format": "png", "filename": f.name, "scale": PNG_SCALE},
        },
    )


def chromium_path() -> str | None:
    """The browser kaleido drives: $BROWSER_PATH, else the system Chromium, else one on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env
    for p in CHROMIUM_CANDIDATES:
        if Path(p).is_file() and os.access(p, os.X_OK):
            return p
    for name in ("chromium", "chromium-browser", "google-chrome"):
        hit = shutil.which(name)
        if hit:
            return hit
    return None


class PngExportError(RuntimeError):
    """PNG export is not possible here (no Chromium, or it failed); the message says what to do."""


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a fresh event loop on its own thread (works whether or not
    the caller already runs a loop, as Streamlit's script thread and pytest may)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, name="seesaw-kaleido", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def render_pngs(
    jobs: Sequence[tuple[str, go.Figure | Mapping[str, Any], int, int]], scale: int = PNG_SCALE
) -> dict[str, bytes]:
    """name -> PNG of each (name, figure, width, height), all in one headless Chromium session."""
    import kaleido

    path = chromium_path()
    if path is None:
        raise PngExportError(
            "PNG export needs Chromium: install the system package (Debian: `apt install chromium`) "
            "or point $BROWSER_PATH at a Chrome/Chromium binary"
        )

    async def go_render() -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async with kaleido.Kaleido(n=1, timeout=90, mathjax=False, path=path) as k:
            for name, fig, w, h in jobs:
                spec = fig.to_plotly_json() if isinstance(fig, go.Figure) else dict(fig)
                opts = {"format": "png", "width": int(w), "height": int(h), "scale": scale}
                out[name] = bytes(await k.calc_fig(spec, opts=opts))
        return out

    try:
        return _run_coroutine(go_render())
    except PngExportError:
        raise
    except Exception as e:
        raise PngExportError(f"PNG export with kaleido and {path} failed: {e}") from e


# ---- the page skeleton ------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 0 auto;
  max-width: 1180px; padding: 24px 32px 60px; color: #1f2430; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
.meta { color: #666; margin-top: 0; } .caption { color: #444; margin: 0.2em 0 0.6em; }
.note { background: #f6f8fb; border-left: 4px solid #1f77b4; padding: 4px 16px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.ref td { background: #fff7e6; } code { font-size: 0.9em; }
details.config { margin: 4px 0; } details.config pre { background: #f6f8fb; padding: 8px 12px;
  overflow-x: auto; font-size: 0.85em; }
section.figure { margin-top: 1.4em; } footer { margin-top: 3em; color: #888; font-size: 0.85em; }
"""

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
{body}
</body>
</html>
"""


__all__ = [
    "PngExportError",
    "Report",
    "ReportError",
    "ReportFigure",
    "build_report",
    "chromium_path",
    "default_reference",
    "render_pngs",
]
