"""Real-browser checks of the Report (Playwright + Debian Chromium, networking off).

The exported HTML opens from a file:// URL in an offline browser context where every http(s)
request is also aborted (and recorded): every figure renders (one `.js-plotly-plot` with its
`.main-svg` and as many drawn traces as the figure has), no console errors, no request leaves the
machine. The Report page is screenshotted; the HTML its download button hands out passes the
same checks, and its zip button hands out the PNGs (rendered by kaleido inside the server).
Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"  # checked before browser_support (which needs it) is imported

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: the real-browser tests need Debian's chromium", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_support import ARTIFACTS, CHROMIUM_ARGS, serve  # noqa: E402
from lake_factory import adult_report, make_lake  # noqa: E402

from dashboard.report import PNG_SCALE, PNG_WIDTH, Report  # noqa: E402


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser-report-lake")
    make_lake(root, n_runs=24)
    return root


@pytest.fixture(scope="module")
def report(lake_root: Path) -> Report:
    return adult_report(lake_root, note="Offline check: every figure must render without a network.")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open_offline(browser: Any, path: Path) -> tuple[Any, Any, dict[str, list[str]]]:
    """A page in an offline context with every http(s) request aborted; returns (context, page,
    seen) where seen collects console errors, page errors and attempted network requests."""
    ctx = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    seen: dict[str, list[str]] = {"console": [], "pageerror": [], "network": []}

    def block(route: Any) -> None:
        seen["network"].append(route.request.url)
        route.abort()

    ctx.route("http://**/*", block)
    ctx.route("https://**/*", block)
    page = ctx.new_page()
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["pageerror"].append(str(e)))
    page.goto(path.resolve().as_uri(), wait_until="load", timeout=60_000)
    return ctx, page, seen


def _rendered(page: Any, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until `n` plotly graphs have drawn; return per graph its id, main-svg count, drawn
    trace count and size."""
    script = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
        id: el.id,
        svgs: el.querySelectorAll('.main-svg').length,
        traces: el._fullData ? el._fullData.length : -1,
        width: el.getBoundingClientRect().width,
        height: el.getBoundingClientRect().height,
    }))"""
    deadline = time.monotonic() + timeout
    graphs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        graphs = page.evaluate(script)
        if len(graphs) >= n and all(g["svgs"] > 0 and g["traces"] >= 0 for g in graphs):
            return graphs
        time.sleep(0.2)
    return graphs


def _check_report_page(page: Any, seen: dict[str, list[str]], report: Report) -> None:
    graphs = _rendered(page, len(report.figures))
    assert [g["id"] for g in graphs] == [f"fig-{f.name}" for f in report.figures]
    for g, f in zip(graphs, report.figures, strict=True):
        assert g["svgs"] >= 1, f"{f.name} drew no .main-svg"
        assert g["traces"] == len(f.figure.data), f"{f.name}: {g['traces']} of {len(f.figure.data)} traces"
        assert g["width"] > 300 and g["height"] >= f.height - 2
    # every figure's plot area holds drawn marks (points, bars, lines, parallel-coordinate axes)
    marks = page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el =>
            el.querySelectorAll('.point, .bars path, .scatterlayer .js-line, .parcoords .y-axis').length)"""
    )
    assert all(m > 0 for m in marks), marks
    assert seen["network"] == [], f"the report tried to reach the network: {seen['network'][:5]}"
    assert seen["pageerror"] == [] and seen["console"] == [], seen
    text = page.inner_text("body")
    assert "higher is better" in text and "lower is better" in text and "percentage points" in text
    assert report.tradeoffs["tradeoff"].iloc[1] in text


def test_exported_html_renders_every_figure_offline(report: Report, browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(report.to_html(), encoding="utf-8")
    ctx, page, seen = _open_offline(browser, path)
    try:
        _check_report_page(page, seen, report)
        # the configuration blocks open
        page.locator("details.config summary").first.click()
        assert '"dataset": "adult"' in page.locator("details.config pre").first.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-html.png"), full_page=True)
    finally:
        ctx.close()
    assert (ARTIFACTS / "report-html.png").stat().st_size > 50_000


# ---- the Report page in a real browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(lake_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("report-server") / "lake"
    shutil.copytree(lake_root, home)
    with serve(home, worker=False) as s:
        yield s["url"]


def _wait_idle(pg: Any, timeout: float = 60.0) -> None:
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = pg.locator('[data-testid="stStatusWidget"]').count()
        if not busy and pg.locator('[data-testid="stMain"] h1').count():
            time.sleep(0.5)
            if not pg.locator('[data-testid="stStatusWidget"]').count():
                return
        time.sleep(0.2)


def _download(pg: Any, button: Any, timeout_s: float, tries: int = 3) -> Any:
    """Click a download button and return the download. A click that lands while the page is
    rerunning can be dropped by Streamlit; after waiting for the page to be idle it is retried
    (a user would click again), up to `tries` times."""
    for attempt in range(tries):
        _wait_idle(pg)
        try:
            with pg.expect_download(timeout=timeout_s * 1000 / tries) as dl:
                button.click()
            return dl.value
        except sync_api.TimeoutError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def test_report_page_screenshot_and_its_downloads(server: str, browser: Any, tmp_path: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(f"{server}/report?dataset=adult&user=ada")
        _wait_idle(pg)
        pg.wait_for_selector(".stPlotlyChart .js-plotly-plot .main-svg")
        assert pg.locator('[data-testid="stException"]').count() == 0
        time.sleep(1.0)
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "report-page.png"), full_page=True)
        assert pg.locator(".stPlotlyChart").count() >= 3
        body = pg.inner_text("body")
        assert "Trade-offs on the front" in body and "ada" in pg.url
        saved = tmp_path / "downloaded.html"
        _download(pg, pg.get_by_role("button", name="HTML report"), 90).save_as(str(saved))
        # the zip: its PNGs are rendered by kaleido inside the server when the button is clicked
        bundle = tmp_path / "bundle.zip"
        zip_button = pg.get_by_role("button", name=re.compile(r"^Zip: HTML, CSV"))
        _download(pg, zip_button, 180).save_as(str(bundle))
    finally:
        ctx.close()
    with zipfile.ZipFile(bundle) as z:
        pngs = [n for n in z.namelist() if n.startswith("figures/") and n.endswith(".png")]
        assert {"report.html", "numbers.csv", "configs.json"} <= set(z.namelist())
        assert len(pngs) >= 3
        for n in pngs:
            img = Image.open(io.BytesIO(z.read(n)))
            assert img.format == "PNG" and img.size[0] == PNG_WIDTH * PNG_SCALE
    html = saved.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count("Plotly.newPlot(") >= 3
    n_figs = html.count("Plotly.newPlot(")
    ctx2, page, seen = _open_offline(browser, saved)
    try:
        graphs = _rendered(page, n_figs)
        assert len(graphs) == n_figs and all(g["svgs"] > 0 for g in graphs)
        assert seen["network"] == [] and seen["pageerror"] == [] and seen["console"] == [], seen
    finally:
        ctx2.close()
