"""Real-browser suite: Playwright driving Debian Chromium against `streamlit run` with a real worker.

It launches the quick synthetic preset from Home, watches the Live page's curves grow without a
reload, opens Pareto and clicks a point (the run's details open), and saves a screenshot of every
page under test-artifacts/ (git-ignored). Skipped, with the reason, when /usr/bin/chromium or
Playwright is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = ["home", "launch", "live", "runs", "conflicts", "transfer", "pareto"]

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (make browser-deps) to run the real-browser tests",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`streamlit run streamlit_app.py` on a free port over a fresh lake; the app starts the worker."""
    home = tmp_path_factory.mktemp("browser-lake")
    port = _free_port()
    env = {**os.environ, "SEESAW_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("SEESAW_NO_WORKER", None)
    log = open(home.parent / "streamlit.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO / "streamlit_app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            text = (home.parent / "streamlit.log").read_text(errors="replace")[-3000:]
            proc.kill()
            pytest.fail(f"streamlit did not become healthy:\n{text}")
        time.sleep(0.3)
    try:
        yield {"url": url, "home": home, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # The app started a detached worker for this lake: stop it (and its trainers) by its pid.
        info = _read_json(home / "_worker" / "worker.json")
        pid = info.get("pid")
        if isinstance(pid, int) and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def page(server: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def _wait_app_idle(pg: Any, timeout: float = 30.0) -> None:
    """Wait until the app has rendered and is not running a script."""
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = pg.locator('[data-testid="stStatusWidget"]').count()
        if not running and pg.locator('[data-testid="stMain"] h1').count():
            time.sleep(0.5)
            if not pg.locator('[data-testid="stStatusWidget"]').count():
                return
        time.sleep(0.2)


def _assert_no_error(pg: Any, name: str) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, f"{name} shows an exception: {exc.first.inner_text()[:500]}"


def _shot(pg: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def _shot_between_reruns(pg: Any, name: str, timeout: float = 3.0) -> Path:
    """Screenshot a self-updating page when no rerun is in flight (elements are not stale)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pg.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.05)
    return _shot(pg, name)


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


def _lake_states(home: Path) -> dict[str, str]:
    out = {}
    for d in home.iterdir():
        st = _read_json(d / "status.json")
        if st:
            out[d.name] = st.get("state", "?")
    return out


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
