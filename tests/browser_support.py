"""Shared pieces of the real-browser suites (Playwright + Debian Chromium): the Chromium
flags, a `streamlit run` server over a fresh lake with the app's own worker (`server`, module
scoped: each suite gets its own), a page (`page`), and small waits and screenshot helpers.

Import it after checking that /usr/bin/chromium exists (the suites skip otherwise).
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

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

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
    with serve(tmp_path_factory.mktemp("browser-lake")) as s:
        yield s


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; waits for the process either way."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serve(home: Path, worker: bool = True) -> Iterator[dict[str, Any]]:
    """`streamlit run streamlit_app.py` on a free port over the lake `home`; on exit the server
    and the lake's worker (the app's, or one started beforehand) are stopped. `worker=False`
    serves read-only pages with no worker (SEESAW_NO_WORKER=1)."""
    port = _free_port()
    env = {**os.environ, "SEESAW_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("SEESAW_NO_WORKER", None)
    if not worker:
        env["SEESAW_NO_WORKER"] = "1"
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
        stop_process(proc, timeout=10)
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


def _lake_states(home: Path) -> dict[str, str]:
    out = {}
    for d in home.iterdir():
        st = _read_json(d / "status.json")
        if st:
            out[d.name] = st.get("state", "?")
    return out
