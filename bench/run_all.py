"""Run every benchmark, one after another; each replaces its own section of bench/RESULTS.md.

python -m bench.run_all            # or: make bench
python bench/run_all.py --threads 1
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_balancers.py",
    "bench_population.py",
    "bench_cosmos.py",
    "bench_logging.py",
    "bench_queries.py",
]


def main() -> int:
    extra = sys.argv[1:]
    failed = []
    for name in SCRIPTS:
        print(f"== {name} {' '.join(extra)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / name), *extra])
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
