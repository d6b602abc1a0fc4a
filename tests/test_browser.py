"""Real-browser suite: Playwright driving Debian Chromium against `streamlit run` with a real worker.

It launches the quick synthetic preset from Home, watches the Live page's curves grow without a
reload, opens Pareto and clicks a point (the run's details open), and saves a screenshot of every
page under test-artifacts/ (git-ignored). Skipped, with the reason, when /usr/bin/chromium or
Playwright is missing. The server, page and helpers live in browser_support.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (make browser-deps) to run the real-browser tests",
        allow_module_level=True,
    )

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_support import (  # noqa: E402
    ARTIFACTS,
    _assert_no_error,
    _healthy,
    _lake_states,
    _shot,
    _shot_between_reruns,
    _wait_app_idle,
    page,
    server,
)

FIXTURES = (page, server)  # module-scoped pytest fixtures from browser_support, found by name here

PAGES = ["home", "launch", "live", "runs", "conflicts", "transfer", "pareto"]


def _curve_points(pg: Any) -> int:
    """Points in the traces of the Live page's curves chart (the first plotly chart on the page)."""
    return int(
        pg.evaluate(
            """() => {
            const el = document.querySelector('.stPlotlyChart .js-plotly-plot');
            if (!el || !el._fullData) return -1;
            // _fullData holds the decoded arrays (plotly ships numpy data base64-encoded)
            return el._fullData.reduce((n, t) => n + (t.x && t.x.length ? t.x.length : 0), 0);
        }"""
        )
    )


def test_preset_live_pareto_and_screenshots(server: dict[str, Any], page: Any) -> None:
    url, home = server["url"], server["home"]
    pg = page
    pg.goto(url + "/")
    _wait_app_idle(pg)
    assert "Quick starts" in pg.inner_text("body")
    _assert_no_error(pg, "home (empty lake)")
    _shot(pg, "home-empty")

    # -- launch the quick synthetic preset from Home: the app switches to Live ----------------
    pg.get_by_role("button", name="Launch").first.click()
    pg.wait_for_url("**/live**", timeout=30_000)
    pg.evaluate("() => { window.__seesaw_no_reload = 42; }")
    assert len(_lake_states(home)) == 2

    # -- the curves grow while the run trains, with no reload --------------------------------
    seen: list[int] = []
    shot_mid = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = _curve_points(pg)
        if n > 0 and (not seen or n != seen[-1]):
            seen.append(n)
            if len(seen) == 2 and not shot_mid:  # mid-training: curves growing, progress bar
                _shot_between_reruns(pg, "live-training")
                shot_mid = True
        states = set(_lake_states(home).values())
        if len([c for c in seen if c > 0]) >= 3 or (states <= {"finished", "failed", "cancelled"} and seen):
            break
        time.sleep(0.4)
    assert pg.evaluate("() => window.__seesaw_no_reload") == 42, "the Live page reloaded"
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] > seen[0], (
        f"the Live curves did not grow by themselves: point counts seen {seen}"
    )

    # -- wait for both preset runs to finish ----------------------------------------------------
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        states = _lake_states(home)
        if states and all(s in ("finished", "failed", "cancelled") for s in states.values()):
            break
        time.sleep(0.5)
    assert set(_lake_states(home).values()) == {"finished"}, _lake_states(home)
    time.sleep(2.5)  # the Live fragment notices the end and redraws
    _wait_app_idle(pg)
    _assert_no_error(pg, "live")
    _shot(pg, "live")

    # -- Pareto: click a point, the run's details open ------------------------------------------
    pg.goto(url + "/pareto")
    _wait_app_idle(pg)
    _assert_no_error(pg, "pareto")
    pg.wait_for_selector(".stPlotlyChart .js-plotly-plot .scatterlayer .points path", timeout=30_000)
    time.sleep(1.0)
    _shot(pg, "pareto")
    point = pg.locator(".stPlotlyChart .js-plotly-plot .scatterlayer .points path").first
    box = point.bounding_box()
    assert box is not None
    run_id = pg.evaluate(
        """() => {
            const el = document.querySelector('.stPlotlyChart .js-plotly-plot');
            const t = el._fullData.find(tr => tr.customdata && tr.mode === 'markers');
            return t.customdata[0][0];
        }"""
    )
    pg.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "Open this run in Live" not in pg.inner_text("body"):
        time.sleep(0.3)
    body = pg.inner_text("body")
    assert "Open this run in Live" in body, "clicking a Pareto point did not open the run's details"
    assert run_id in body or "run=" in pg.url
    time.sleep(1.0)
    _assert_no_error(pg, "pareto details")
    _shot(pg, "pareto-clicked")

    # -- every page, with data --------------------------------------------------------------------
    for name in PAGES:
        pg.goto(f"{url}/{'' if name == 'home' else name}")
        _wait_app_idle(pg)
        time.sleep(1.5)
        _assert_no_error(pg, name)
        _shot(pg, name)
    for name in PAGES:
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000


def test_health_endpoint(server: dict[str, Any]) -> None:
    assert _healthy(server["url"])


def _star(pg: Any) -> list[float] | None:
    """(x, y) of the Pareto chart's highlighted preference point, or None when it is not drawn."""
    return pg.evaluate(
        """() => {
            const el = document.querySelector('.stPlotlyChart .js-plotly-plot');
            if (!el || !el._fullData) return null;
            const t = el._fullData.find(tr => tr.name === 'your preference');
            return t ? [t.x[0], t.y[0]] : null;
        }"""
    )


def test_cosmos_from_launch_then_the_pareto_preference_slider(server: dict[str, Any], page: Any) -> None:
    """Launch queues a preference-conditioned model (a Pareto HyperNetwork, the default) for the
    app's worker; once trained, the Pareto page draws its learned front and the slider moves the ★
    along it."""
    url, home = server["url"], server["home"]
    pg = page
    before = set(_lake_states(home))
    pg.goto(url + "/launch")
    _wait_app_idle(pg)
    # a real capacity trade-off: two uncorrelated linear tasks through a one-unit shared bottom
    # (the bottom can follow one task's direction, not both), so the learned front spans it
    pg.get_by_text("Dataset parameters").click()
    for label, value in (
        ("N Samples", "3000"),
        ("Dim", "16"),
        ("Correlation", "0"),
        ("N Sines", "0"),
        ("Epochs", "20"),
        ("Batch size", "128"),
        ("Learning rate", "0.003"),
    ):
        box = pg.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        _wait_app_idle(pg)
    pg.get_by_label("Architecture", exact=True).click()
    pg.get_by_role("option", name="shared-bottom", exact=True).click()
    _wait_app_idle(pg)
    pg.get_by_text("Architecture parameters").click()
    box = pg.get_by_label("Bottom Hidden", exact=True)
    box.fill("1")
    box.press("Enter")
    _wait_app_idle(pg)
    _shot(pg, "launch-cosmos")
    pg.get_by_role("button", name="Train a preference-conditioned model").click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "as a COSMOS training job" not in pg.inner_text("body"):
        time.sleep(0.3)
    assert "as a COSMOS training job" in pg.inner_text("body")
    (cid,) = set(_lake_states(home)) - before
    deadline = time.monotonic() + 150  # the worker trains it (its own process, supervised)
    while time.monotonic() < deadline and _lake_states(home)[cid] not in ("finished", "failed", "cancelled"):
        time.sleep(0.5)
    assert _lake_states(home)[cid] == "finished"

    pg.goto(url + "/pareto?dataset=synthetic-correlation")
    _wait_app_idle(pg)
    _assert_no_error(pg, "pareto with a learned front")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _star(pg) is None:
        time.sleep(0.3)
    first = _star(pg)
    assert first is not None, "no highlighted preference point on the Pareto chart"
    time.sleep(1.0)
    _shot(pg, "pareto-preference")
    thumb = pg.locator('[data-testid="stSlider"] input[type="range"]').first
    thumb.focus()
    for _ in range(6):  # 0.5 -> 0.8 in steps of 0.05
        thumb.press("ArrowRight")
    deadline = time.monotonic() + 20
    moved = first
    while time.monotonic() < deadline:
        moved = _star(pg) or first
        if moved != first:
            break
        time.sleep(0.3)
    assert moved != first, "moving the preference slider did not move the highlighted point"
    _wait_app_idle(pg)
    assert "task_1 0.80 · task_2 0.20" in pg.inner_text("body")
    settled = _star(pg)
    # along a real trade-off: task_1's MSE falls by far more than noise as its preference grows
    assert settled is not None and first[0] - settled[0] > 0.1, (first, settled)
    _assert_no_error(pg, "pareto after moving the slider")
    time.sleep(1.0)
    _shot(pg, "pareto-preference-moved")
