"""Shared helpers of the benchmarks: the reference workload, timing, memory, RESULTS.md sections.

Every benchmark prints ratios measured in the same process and the same rounds (variants are
interleaved round by round, so a load change on a shared machine hits all of them alike), reports
medians, and replaces its own section of bench/RESULTS.md with its latest output.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "RESULTS.md"

#: The reference workload of the issue: MMoE, 3 tasks, 100 inputs, 4 experts 100-64-32,
#: towers 32-16-1, batch 1024, Adam.
WORKLOAD: dict[str, Any] = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 20_000, "dim": 100, "n_tasks": 3, "correlation": 0.5},
    "arch": "mmoe",
    "arch_params": {"n_experts": 4, "expert_hidden": [64, 32], "tower_hidden": [16]},
    "batch_size": 1024,
    "optimizer": "adam",
    "lr": 1e-3,
}


def set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def load_avg() -> str:
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f} / {b:.2f} / {c:.2f}"
    except OSError:
        return "n/a"


def machine() -> dict[str, str]:
    """CPU, cores, load, versions, device: the header of every result."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        import torchjd  # noqa: F401

        tjd = version("torchjd")
    except Exception:
        tjd = "not installed"
    info = {
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchjd": tjd,
        "load average (1/5/15 min) at start": load_avg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


def header(title: str, command: str, info: dict[str, str]) -> str:
    threads = info.get("torch threads", "?")
    lines = [
        f"## {title} ({threads} torch thread{'s' if threads != '1' else ''})",
        "",
        f"Command: `{command}`",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- measured: {time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
    return "\n".join(lines)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def iqr(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 4:
        return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def time_calls(fn: Callable[[], Any], n: int, sync: Callable[[], None] | None = None) -> float:
    """Seconds per call of `fn`, averaged over `n` back-to-back calls."""
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if sync:
        sync()
    return (time.perf_counter() - t0) / n


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_mb() -> float:
    """Peak RSS since the last `reset_peak_rss` (MB)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def tensor_peak_mb(fn: Callable[[], Any]) -> float:
    """Peak of live tensor memory allocated during one call of `fn`, above what was live before
    (MB): CUDA's allocator statistics on a GPU, the profiler's allocation events on the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # each op's own (self) allocations net of its own frees, plus frees outside any op, in time order
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        delta = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        live += delta
        peak = max(peak, live)
    return peak / 2**20


def section_name(bench: str, args: Any) -> str:
    """RESULTS.md section of one benchmark at one device and thread count (each kept separately)."""
    return f"{bench}-{getattr(args, 'device', 'cpu')}-t{args.threads}"


def command(script: str, args: Any) -> str:
    """The command line that reproduces a result (device and threads spelled out)."""
    cmd = f"python bench/{script} --threads {args.threads}"
    if getattr(args, "device", "cpu") != "cpu":
        cmd += f" --device {args.device}"
    return cmd


def write_section(name: str, text: str) -> None:
    """Replace (or append) the section `name` of bench/RESULTS.md with `text`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    body = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    body = (
        pattern.sub(lambda _m: block, body) if pattern.search(body) else body.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS.write_text(body, encoding="utf-8")


def table(rows: list[list[str]], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
