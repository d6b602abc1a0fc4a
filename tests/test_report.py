"""The Report: trade-off words from hand-made numbers, and the three exports of a report built
from a seeded lake. The HTML is self-contained (no outside src/href, plotly.js inline, one div
per figure, directions, units, seeds and every configuration stated); the PNGs decode, have the
figure's size, are not blank and equal an independent kaleido rendering of the same figure JSON;
the CSV round-trips into pandas with the same numbers. Also the Report page under AppTest."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lake_factory import adult_report, app_lake, make_lake

from dashboard.report import PNG_SCALE, PNG_WIDTH, Report, ReportError, build_report, chromium_path
from engine.store import Lake
from engine.tradeoffs import changes, objective, sentence, tradeoff_table

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")

# ---- trade-off words from hand-made numbers ------------------------------------------------------


def _sentence(values: dict[str, float], reference: dict[str, float]) -> str:
    return sentence(changes(values, reference, [objective(c) for c in values]))


def test_auc_tradeoff_in_percentage_points() -> None:
    ref = {"income/auc": 0.90, "marital/auc": 0.95}
    pt = {"income/auc": 0.9041, "marital/auc": 0.9488}
    assert _sentence(pt, ref) == "+0.41 pt income AUC for -0.12 pt marital AUC"


def test_lower_is_better_metric_signs() -> None:
    ref = {"task_1/mse": 1.0, "task_2/mse": 2.0}
    # task_1's MSE went down 3.2% (a gain), task_2's went up 1.5% (a loss)
    pt = {"task_1/mse": 0.968, "task_2/mse": 2.03}
    assert _sentence(pt, ref) == "3.20% lower task_1 MSE for 1.50% higher task_2 MSE"
    cs = changes(pt, ref, [objective(c) for c in pt])
    assert [c.kind for c in cs] == ["gain", "loss"]
    assert cs[0].delta == pytest.approx(-3.2) and cs[0].improvement == pytest.approx(3.2)
    assert cs[1].delta == pytest.approx(1.5) and cs[1].improvement == pytest.approx(-1.5)
    assert [c.objective.unit for c in cs] == ["%", "%"]


def test_mixed_units_and_directions() -> None:
    ref = {"income/auc": 0.88, "income/logloss": 0.40}
    # better AUC but a worse (higher) log loss
    assert (
        _sentence({"income/auc": 0.8850, "income/logloss": 0.41}, ref)
        == "+0.50 pt income AUC for 2.50% higher income log loss"
    )
    # worse AUC but a better (lower) log loss
    assert (
        _sentence({"income/auc": 0.8790, "income/logloss": 0.39}, ref)
        == "2.50% lower income log loss for -0.10 pt income AUC"
    )


def test_no_loss_no_gain_same_and_missing() -> None:
    ref = {"a/auc": 0.8, "b/auc": 0.7}
    assert _sentence({"a/auc": 0.81, "b/auc": 0.71}, ref) == "+1.00 pt a AUC and +1.00 pt b AUC with no loss"
    assert _sentence({"a/auc": 0.79, "b/auc": 0.7}, ref) == "-1.00 pt a AUC with no gain"
    assert _sentence({"a/auc": 0.80001, "b/auc": 0.7}, ref) == "no change at the shown precision"
    assert (
        _sentence({"a/auc": 0.81, "b/auc": float("nan")}, ref)
        == "+1.00 pt a AUC with no loss (b AUC missing)"
    )


def test_objective_directions_and_units() -> None:
    auc, mse, loss = objective("click/auc"), objective("t/mse"), objective("t/loss")
    assert (auc.higher_is_better, auc.unit, auc.direction_text) == (True, "pt", "higher is better")
    assert (mse.higher_is_better, mse.unit, mse.direction_text) == (False, "%", "lower is better")
    assert (loss.higher_is_better, loss.unit) == (False, "%")
    with pytest.raises(ValueError):
        objective("no_slash")


def _points() -> pd.DataFrame:
    """Four hand-made runs on two AUCs: ref (equal weights), two front points, one dominated."""
    return pd.DataFrame(
        {
            "run_id": ["r-ref", "r-a", "r-b", "r-dom"],
            "label": ["equal weights", "income-heavy", "marital-heavy", "bad"],
            "arch": ["mmoe"] * 4,
            "balancer": ["ew", "fixed", "fixed", "fixed"],
            "seed": [0, 0, 1, 1],
            "dataset": ["adult"] * 4,
            "income/auc": [0.90, 0.9041, 0.895, 0.85],
            "marital/auc": [0.95, 0.9488, 0.96, 0.90],
        }
    )


def _configs() -> dict[str, dict[str, Any]]:
    return {
        r: {"dataset": "adult", "arch": "mmoe", "balancer": b, "seed": s, "balancer_params": w}
        for r, b, s, w in [
            ("r-ref", "ew", 0, {}),
            ("r-a", "fixed", 0, {"weights": {"income": 0.8, "marital": 0.2}}),
            ("r-b", "fixed", 1, {"weights": {"income": 0.2, "marital": 0.8}}),
            ("r-dom", "fixed", 1, {"weights": {"income": 0.5, "marital": 0.5}}),
        ]
    }


def test_build_report_front_reference_and_table() -> None:
    rep = build_report(_points(), ["income/auc", "marital/auc"], _configs(), note="n", created=0)
    assert rep.reference_id == "r-ref"  # the equal-weights run is the default reference
    assert set(rep.front_ids) == {"r-ref", "r-a", "r-b"}
    t = rep.tradeoffs.set_index("run_id")
    assert rep.tradeoffs["run_id"].iloc[0] == "r-ref" and t.loc["r-ref", "tradeoff"] == "the reference"
    assert t.loc["r-a", "tradeoff"] == "+0.41 pt income AUC for -0.12 pt marital AUC"
    assert t.loc["r-b", "tradeoff"] == "+1.00 pt marital AUC for -0.50 pt income AUC"
    assert "r-dom" not in t.index  # dominated: not in the trade-off table
    pts = rep.points.set_index("run_id")
    assert pts.loc["r-dom", "income/auc change (pt)"] == pytest.approx(-5.0)
    assert pts.loc["r-a", "weights"] == "income=0.8; marital=0.2"
    assert rep.seeds == [0, 1]
    assert [f.name for f in rep.figures] == ["pareto", "tradeoffs"]
    # a chosen reference, and the full table against it
    rep2 = build_report(_points(), ["income/auc", "marital/auc"], _configs(), reference="r-b")
    assert rep2.tradeoffs.set_index("run_id").loc["r-ref", "tradeoff"] == (
        "+0.50 pt income AUC for -1.00 pt marital AUC"
    )
    full = tradeoff_table(_points(), [objective("income/auc"), objective("marital/auc")], "r-dom")
    assert (
        full.set_index("run_id").loc["r-a", "tradeoff"]
        == "+5.41 pt income AUC and +4.88 pt marital AUC with no loss"
    )


def test_build_report_refuses_bad_input() -> None:
    with pytest.raises(ReportError, match="two or more"):
        build_report(_points(), ["income/auc"], _configs())
    with pytest.raises(ReportError, match="reference"):
        build_report(_points(), ["income/auc", "marital/auc"], _configs(), reference="nope")
    with pytest.raises(ReportError, match="no values"):
        build_report(_points(), ["income/auc", "x/auc"], _configs())
    with pytest.raises(ReportError, match="at least one run"):
        build_report(_points().iloc[0:0], ["income/auc", "marital/auc"], _configs())


# ---- a report of a seeded lake ------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-lake")
    make_lake(root, n_runs=24)
    return root


@pytest.fixture(scope="module")
def report(seeded: Path) -> Report:
    """Adult runs on three metrics (two AUCs, higher is better; a log loss, lower is better)."""
    return adult_report(
        seeded,
        note='Shared with the product team <script>alert("x")</script>\nSecond paragraph.',
        title="Adult: income vs never-married",
    )


@pytest.fixture(scope="module")
def pngs(report: Report) -> dict[str, bytes]:
    if chromium_path() is None:
        pytest.skip("no Chromium for kaleido: PNG export cannot run here")
    return report.to_pngs()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_and_has_every_figure(report: Report) -> None:
    html = report.to_html()
    parser = _Tags()
    parser.feed(html)
    outside = re.compile(r"^\s*(https?:)?//", re.I)
    for tag, attrs in parser.tags:
        for name in ("src", "href", "data", "poster", "srcset", "action"):
            value = attrs.get(name)
            assert value is None or not outside.match(value), f"<{tag} {name}={value!r}> reaches outside"
        assert not (tag == "link" and "stylesheet" in str(attrs.get("rel"))), "an external stylesheet"
        assert tag != "iframe"
    assert not [a for t, a in parser.tags if t == "script" and a.get("src")], "a script loaded from a URL"
    assert "@import" not in html and not re.search(r"url\(\s*['\"]?(https?:)?//", html)
    assert "cdn.plot.ly/plotly" not in html.split("<body>")[1]
    assert len(html) > 3_000_000  # plotly.js is inline
    # every figure: one div, one newPlot call
    divs = [a.get("id") for t, a in parser.tags if t == "div" and str(a.get("id", "")).startswith("fig-")]
    assert divs == [f"fig-{f.name}" for f in report.figures]
    assert [f.name for f in report.figures] == ["pareto", "parallel", "tradeoffs", "curves"]
    assert html.count("Plotly.newPlot(") == len(report.figures)
    # the note is kept as text, not markup
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    # directions, units, seeds, the reference, and the configuration of every point
    assert "higher is better" in html and "lower is better" in html
    assert "percentage points" in html and "percent of the reference value" in html
    assert f"<b>Seeds</b>: {', '.join(map(str, report.seeds))}" in html
    assert report.reference_id in html
    details = [a.get("id") for t, a in parser.tags if t == "details"]
    assert details == [f"config-{r}" for r in report.points["run_id"]]
    for rid, cfg in report.configs.items():
        block = html.split(f'id="config-{rid}"')[1].split("</details>")[0]
        assert cfg and f"&quot;balancer&quot;: &quot;{cfg['balancer']}&quot;" in block
        assert f"&quot;seed&quot;: {cfg['seed']}" in block
    for sentence_text in report.tradeoffs["tradeoff"]:
        assert sentence_text.replace("&", "&amp;") in html


def test_tradeoff_table_of_the_seeded_report(report: Report) -> None:
    t = report.tradeoffs
    assert t["reference"].iloc[0] and t["reference"].sum() == 1
    assert set(t["run_id"]) == set(report.front_ids) | {report.reference_id}
    for _, row in t[~t["reference"]].iterrows():
        assert " pt income AUC" in row["tradeoff"] and "income log loss" in row["tradeoff"]
    # the front is non-dominated over all three metrics (directions respected)
    from engine.pareto import non_dominated_mask

    cols = [o.column for o in report.objectives]
    values = report.points[cols].to_numpy(dtype=float)
    assert list(non_dominated_mask(values, [True, True, False])) == list(report.points["on_front"])


def test_pngs_decode_with_the_figure_size_and_are_not_blank(report: Report, pngs: dict[str, bytes]) -> None:
    from PIL import Image

    assert list(pngs) == [f.name for f in report.figures]
    for f in report.figures:
        data = pngs[f.name]
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.format == "PNG"
        assert img.size == (PNG_WIDTH * PNG_SCALE, f.height * PNG_SCALE)
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)[::2, ::2]
        ink = (np.abs(rgb - 255).sum(axis=2) > 60).mean()
        assert ink > 0.01, f"{f.name}: the PNG is (nearly) blank"
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        assert len(np.unique(packed)) > 50, f"{f.name}: too few colours for a chart"


def test_pngs_match_an_independent_rendering_of_the_figures(report: Report, pngs: dict[str, bytes]) -> None:
    """The exported PNG equals kaleido's own one-shot rendering of the same figure JSON."""
    import kaleido
    from PIL import Image

    for name in ("pareto", "tradeoffs"):
        f = report.figure(name)
        ref = kaleido.calc_fig_sync(
            json.loads(f.figure.to_json()),
            opts={"format": "png", "width": f.width, "height": f.height, "scale": PNG_SCALE},
            kopts={"mathjax": False, "path": chromium_path()},
        )
        a = np.asarray(Image.open(io.BytesIO(pngs[name])).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(ref)).convert("RGB"), dtype=np.int16)
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 1.0, f"{name}: the PNG differs from the figure's rendering"
    # and figures differ from each other (not one image written for all)
    assert len({pngs[n] for n in pngs}) == len(pngs)


def test_csv_round_trips_into_pandas(report: Report) -> None:
    back = pd.read_csv(io.BytesIO(report.to_csv()))
    table = report.table()
    assert list(back.columns) == list(table.columns)
    assert back["run_id"].tolist() == table["run_id"].tolist()
    numeric = [c for c in table.columns if c.endswith(("/auc", "/logloss", "(pt)", "(%)"))]
    assert len(numeric) == 6
    for c in numeric:
        np.testing.assert_allclose(
            back[c].to_numpy(float), table[c].to_numpy(float), rtol=1e-12, equal_nan=True
        )
    assert back["on_front"].tolist() == table["on_front"].tolist()
    assert back["reference"].tolist() == table["reference"].tolist()
    assert back["seed"].tolist() == table["seed"].astype(int).tolist()
    assert back["tradeoff"].tolist() == table["tradeoff"].tolist()
    for rid, text in zip(back["run_id"], back["config_json"], strict=True):
        assert json.loads(text) == report.configs[rid]


def test_zip_bundle_holds_everything(report: Report, pngs: dict[str, bytes]) -> None:
    z = zipfile.ZipFile(io.BytesIO(report.to_zip(pngs=pngs)))
    names = set(z.namelist())
    assert {"report.html", "numbers.csv", "configs.json"} <= names
    assert {f"figures/{f.name}.png" for f in report.figures} <= names
    assert z.read("numbers.csv") == report.to_csv()


def test_lower_is_better_sweep_report(seeded: Path) -> None:
    """The synthetic weight sweep: two MSEs (lower is better), changes in relative %."""
    lake = Lake(seeded)
    runs = lake.runs()
    sweep = runs[runs["sweep_id"] == "sweep-factory"]
    rep = build_report(sweep, ["task_1/mse", "task_2/mse"], {r: lake.config(r) for r in sweep["run_id"]})
    assert [o.unit for o in rep.objectives] == ["%", "%"]
    ref_weights = rep.configs[rep.reference_id]["balancer_params"]["weights"]
    assert ref_weights == {"task_1": 0.333, "task_2": 0.667} or ref_weights == {
        "task_1": 0.667,
        "task_2": 0.333,
    }
    assert all(w for w in rep.points["weights"])  # the sweep's weights are stated per point
    pts = rep.points.set_index("run_id")
    ref = pts.loc[rep.reference_id]
    for rid, row in rep.tradeoffs.set_index("run_id").iterrows():
        if rid == rep.reference_id:
            continue
        for task in ("task_1", "task_2"):
            v, r = pts.loc[rid, f"{task}/mse"], ref[f"{task}/mse"]
            change = (v - r) / abs(r) * 100
            if round(change, 2) < 0:  # lower MSE: a gain, written before "for"
                assert f"{abs(change):.2f}% lower {task} MSE" in row["tradeoff"].split(" for ")[0]
            elif round(change, 2) > 0:
                assert f"{change:.2f}% higher {task} MSE" in row["tradeoff"]


# ---- the Report page under AppTest ----------------------------------------------------------------


def _app(monkeypatch: pytest.MonkeyPatch, root: Path, **query: str) -> Any:
    from streamlit.testing.v1 import AppTest

    app_lake(monkeypatch, root)
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page("pages/report.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_report_page_with_an_empty_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    at = _app(monkeypatch, tmp_path / "empty")
    assert any("The run lake is empty" in str(i.value) for i in at.info)


def test_report_page_previews_and_offers_downloads(
    seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lake"
    shutil.copytree(seeded, root)
    at = _app(monkeypatch, root, dataset="synthetic-correlation", sweep="sweep-factory")
    assert not at.error, [e.value for e in at.error]
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(figs) >= 3 and all(f["data"] for f in figs)  # pareto, trade-offs, curves
    table = at.dataframe[0].value
    assert table["trade-off"].iloc[0] == "the reference" and len(table) >= 2
    assert any("% lower" in t or "% higher" in t for t in table["trade-off"])
    labels = [b.label for b in at.get("download_button")]
    assert labels[:2] == ["HTML report", "CSV of the numbers"] and labels[2].startswith("Zip")
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "lower is better" in text and "percent of the reference" in text
    # one metric only: the page says a trade-off needs two
    at.multiselect(key="report_metrics:synthetic-correlation").set_value(["task_1/mse"]).run()
    assert any("two or more" in str(w.value) for w in at.warning)
