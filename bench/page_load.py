"""Page-load benchmark: every dashboard page's server time with 200 finished runs in the lake.

Builds a lake of N runs with tests/lake_factory.py (realistic rows through the real RunWriter),
then runs each page with Streamlit's AppTest (the same script run a browser request triggers,
minus the network) and reports the median of 3 timed runs after one warm-up run. The target is
under 2 s per page.

    python bench/page_load.py                 # 200 runs in a temporary lake
    python bench/page_load.py --runs 500 --lake /tmp/big-lake --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

PAGES = ["home", "launch", "live", "runs", "conflicts", "transfer", "pareto"]
#: Heavier views: (label, page, how many finished multi-task runs to put in ?runs=).
LOADED = [("live, 4 runs", "live", 4), ("runs, 10 ticked", "runs", 10), ("conflicts, 6 runs", "conflicts", 6)]
BUDGET_S = 2.0


def measure(lake: Path, repeats: int = 3) -> dict[str, list[float]]:
    os.environ["SEESAW_HOME"] = str(lake)
    os.environ["SEESAW_NO_WORKER"] = "1"
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.run()
    times: dict[str, list[float]] = {}
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()  # warm-up (imports, caches)
        if at.exception:
            raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
        times[page] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            at.run()
            times[page].append(time.perf_counter() - t0)
    from engine.store import Lake

    runs = Lake(lake).runs()
    mtl = runs[(runs["status"] == "finished") & (runs["arch"] != "single-task")]["run_id"].tolist()
    for label, page, n in LOADED:
        at.query_params["runs"] = ",".join(mtl[:n])
        at.switch_page(f"pages/{page}.py").run()
        if at.exception:
            raise RuntimeError(f"{label}: {[e.value for e in at.exception]}")
        times[label] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            at.run()
            times[label].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--lake", type=Path, default=None, help="lake folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the generated lake")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from lake_factory import make_lake

    lake = args.lake or Path(tempfile.mkdtemp(prefix="seesaw-bench-"))
    try:
        t0 = time.perf_counter()
        if not any(lake.glob("2*")):
            make_lake(lake, n_runs=args.runs, running=1)
        n = sum(1 for _ in lake.glob("2*"))
        print(f"lake {lake}: {n} runs ({time.perf_counter() - t0:.1f} s to prepare)")
        times = measure(lake, args.repeats)
    finally:
        if args.lake is None and not args.keep:
            shutil.rmtree(lake, ignore_errors=True)
    print(f"\n{'page':<20}{'median s':>10}{'min s':>8}{'max s':>8}  (AppTest, {args.repeats} runs)")
    worst = 0.0
    for page, ts in times.items():
        med = statistics.median(ts)
        worst = max(worst, med)
        flag = "" if med < BUDGET_S else "  OVER BUDGET"
        print(f"{page:<20}{med:>10.3f}{min(ts):>8.3f}{max(ts):>8.3f}{flag}")
    print(f"\nslowest page median {worst:.3f} s (budget {BUDGET_S:.1f} s)")
    return 0 if worst < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
