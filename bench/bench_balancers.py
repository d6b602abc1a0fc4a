"""Step time and memory of each gradient balancer against the EW step, torchjd and a plain loop.

Workload (the issue's): MMoE on 3 synthetic tasks, 100 inputs, 4 experts 100-64-32, towers
32-16-1, batch 1024, Adam. For every method three ways to take one training step:

- ours: what engine.train does (StepContext + balancer.backward: the exact Jacobian by the trunk
  route of engine.gradients);
- ours, representation Gramian (the run option `gradients: representation`, MGDA-UB's
  approximation, engine.representation): weights from the Gramian of the task gradients at the
  shared representation (one pass through the heads), then one pass through the trunk with the
  weighted cotangent;
- loop: T separate `torch.autograd.grad` calls for the Jacobian, then the same aggregation;
- torchjd 0.18: `mtl_backward(losses, features=expert outputs)` + `jac_to_grad(shared, aggregator)`
  with torchjd's aggregator of the same method.

Variants are interleaved round by round and each ratio is the median over rounds of
(variant time / EW time in the same round). Memory: the peak of live tensor memory during one
step above what was live before it (profiler allocation events on CPU, the CUDA allocator on a
GPU), and the process peak RSS of a fresh process doing only that variant (`--rss`).

    python bench/bench_balancers.py                      # CPU, all methods, writes RESULTS.md
    python bench/bench_balancers.py --rounds 3 --steps 10 --no-write
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    WORKLOAD,
    command,
    header,
    hwm_mb,
    machine,
    median,
    reset_peak_rss,
    section_name,
    set_threads,
    table,
    tensor_peak_mb,
    time_calls,
    write_section,
)

METHODS = ["pcgrad", "mgda", "imtl", "upgrad", "cagrad", "nashmtl"]
TARGETS = {"pcgrad": 1.35, "mgda": 1.35, "imtl": 1.35, "upgrad": 1.35, "cagrad": 1.5, "nashmtl": 2.5}


def _torchjd_aggregator(method: str):  # type: ignore[no-untyped-def]
    from torchjd import aggregation as A

    if method == "pcgrad":
        return A.PCGrad()
    if method == "mgda":
        return A.MGDA()
    if method == "imtl":
        return A.IMTLG()
    if method == "upgrad":
        return A.UPGrad()
    if method == "cagrad":
        return A.CAGrad(c=0.4)
    if method == "nashmtl":
        return A.NashMTL(n_tasks=3)
    raise KeyError(method)


class Bench:
    """One model + optimiser + batch per variant (same initialisation), and its step function."""

    def __init__(self, device: str) -> None:
        import torch

        from engine.datasets import load_dataset

        self.torch = torch
        self.device = torch.device(device)
        p = WORKLOAD
        self.data = load_dataset(p["dataset"], p["dataset_params"], 0)
        idx = torch.arange(p["batch_size"])
        self.feats = {k: v[idx].to(self.device) for k, v in self.data.train.features.items()}
        self.targets = {k: v[idx].to(self.device) for k, v in self.data.train.targets.items()}
        self.names = self.data.task_names

    def _model(self):  # type: ignore[no-untyped-def]
        from engine.models import build_model

        self.torch.manual_seed(0)
        m = build_model(WORKLOAD["arch"], self.data.features, self.data.tasks, WORKLOAD["arch_params"])
        m = m.to(self.device)
        opt = self.torch.optim.Adam(m.parameters(), lr=WORKLOAD["lr"])
        return m, opt

    def _loss_list(self, model):  # type: ignore[no-untyped-def]
        out = model(self.feats)
        ld = model.task_losses(out, self.targets, {})
        return [ld[t] for t in self.names]

    def _losses(self, model):  # type: ignore[no-untyped-def]
        return self.torch.stack(self._loss_list(model))

    def step_fn(self, variant: str) -> Callable[[], None]:
        torch = self.torch
        from engine.balancers import build_balancer
        from engine.balancers.base import StepContext, write_flat_grad

        kind, _, method = variant.partition(":")
        model, opt = self._model()
        shared, task_params = model.shared_parameters(), model.task_specific_parameters()
        names = self.names
        if kind in ("ours", "loop", "repr"):
            bal = build_balancer(method, names)

        if kind == "ours":

            def step() -> None:
                losses = self._losses(model)
                opt.zero_grad(set_to_none=True)
                ctx = StepContext(losses, names, shared, task_params, 0, 1, model)
                bal.backward(ctx)
                opt.step()

            return step
        if kind == "repr":

            def step() -> None:
                losses = self._losses(model)
                opt.zero_grad(set_to_none=True)
                ctx = StepContext(losses, names, shared, task_params, 0, 1, model, representation=True)
                bal.backward(ctx)
                opt.step()

            return step
        if kind == "loop":

            def step() -> None:
                losses = self._losses(model)
                opt.zero_grad(set_to_none=True)
                rows = []
                for t in range(len(names)):
                    gs = torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
                    rows.append(
                        torch.cat(
                            [
                                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                                for g, p in zip(gs, shared, strict=True)
                            ]
                        )
                    )
                J = torch.stack(rows)
                ctx = StepContext(losses, names, shared, task_params, 0, 1, model)
                direction, _w = bal.aggregate(J, ctx)
                losses.sum().backward(inputs=task_params)
                write_flat_grad(shared, direction)
                opt.step()

            return step
        if kind == "torchjd":
            from torchjd.autojac import jac_to_grad, mtl_backward

            agg = _torchjd_aggregator(method)
            captured: dict[str, torch.Tensor] = {}
            model.experts.register_forward_hook(lambda _m, _i, out: captured.__setitem__("z", out))

            def step() -> None:
                losses = self._loss_list(model)  # separate tensors: torchjd walks each task's graph
                opt.zero_grad(set_to_none=True)
                mtl_backward(losses, features=captured["z"])
                jac_to_grad(shared, agg)
                opt.step()

            return step
        raise KeyError(variant)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def variants(methods: list[str], with_torchjd: bool) -> list[str]:
    out = ["ours:ew"]
    for m in methods:
        out += [f"ours:{m}", f"repr:{m}", f"loop:{m}"]
        if with_torchjd:
            out.append(f"torchjd:{m}")
    return out


def torchjd_ok(method: str) -> str | None:
    try:
        _torchjd_aggregator(method)
    except Exception as e:  # torchjd missing, or an optional dependency of one aggregator
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None


def rss_child(variant: str, device: str, threads: int, steps: int) -> dict[str, float]:
    """Process peak RSS of a fresh process doing only `variant` (runs this file with --only)."""
    cmd = [
        sys.executable,
        __file__,
        "--only",
        variant,
        "--device",
        device,
        "--threads",
        str(threads),
        "--steps",
        str(steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def only(variant: str, device: str, steps: int) -> None:
    b = Bench(device)
    step = b.step_fn(variant)
    for _ in range(3):
        step()
    before = hwm_mb()
    reset_peak_rss()
    for _ in range(steps):
        step()
    b.sync()
    print(json.dumps({"peak_rss_mb": max(before, hwm_mb()), "step_hwm_mb": hwm_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-torchjd", action="store_true")
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process peak RSS")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    set_threads(args.threads)
    if args.only:
        only(args.only, args.device, args.steps)
        return
    info = machine()
    methods = [m for m in args.methods.split(",") if m]
    skipped: dict[str, str] = {}
    if not args.no_torchjd:
        for m in methods:
            why = torchjd_ok(m)
            if why:
                skipped[m] = why
    b = Bench(args.device)
    names = [
        v
        for v in variants(methods, not args.no_torchjd)
        if not (v.startswith("torchjd:") and v.split(":")[1] in skipped)
    ]
    steps = {v: b.step_fn(v) for v in names}
    for f in steps.values():  # warm-up (allocations, solver imports)
        for _ in range(3):
            f()
    times: dict[str, list[float]] = {v: [] for v in names}
    ratios: dict[str, list[float]] = {v: [] for v in names}
    for r in range(args.rounds):
        this: dict[str, float] = {}
        for v in names:
            steps[v]()
            this[v] = time_calls(steps[v], args.steps, b.sync)
            times[v].append(this[v])
        for v in names:
            ratios[v].append(this[v] / this["ours:ew"])
        print(f"round {r + 1}/{args.rounds}: ew {this['ours:ew'] * 1e3:.2f} ms", file=sys.stderr)
    mem = {v: tensor_peak_mb(steps[v]) for v in names}
    rss: dict[str, float] = {}
    if not args.no_rss:
        for v in names:
            try:
                rss[v] = rss_child(v, args.device, args.threads, 5)["peak_rss_mb"]
            except Exception as e:
                print(f"rss of {v} failed: {e}", file=sys.stderr)
    info["load average at end"] = __import__("_common").load_avg()

    ew_t, ew_m = median(times["ours:ew"]), mem["ours:ew"]
    rows = []
    for v in names:
        kind, _, m = v.partition(":")
        ratio = median(ratios[v])
        target = ""
        if kind in ("ours", "repr") and m in TARGETS:
            target = f"<= {TARGETS[m]:.2f}x: {'met' if ratio <= TARGETS[m] else 'MISSED'}"
        mem_ratio = mem[v] / ew_m if ew_m > 0 else float("nan")
        mem_note = ""
        if kind in ("ours", "repr") and m != "ew":
            mem_note = f" ({'met' if mem_ratio <= 1.5 else 'MISSED'} <= 1.5x)"
        rows.append(
            [
                m,
                {"ours": "**ours** (exact)", "repr": "**ours**, representation (opt-in)"}.get(kind, kind),
                f"{median(times[v]) * 1e3:.2f}",
                f"**{ratio:.2f}x**" if kind in ("ours", "repr") else f"{ratio:.2f}x",
                target,
                f"{mem[v]:.1f}",
                f"{mem_ratio:.2f}x{mem_note}",
                f"{rss[v]:.0f}" if v in rss else "–",
            ]
        )
    text = header(
        "Gradient balancers: step time and memory vs the EW step",
        command("bench_balancers.py", args),
        info,
    )
    text += (
        f"\nMMoE, 3 tasks, 100 inputs, 4 experts 100-64-32, towers 32-16-1, batch 1024, Adam; "
        f"{args.rounds} rounds x {args.steps} steps per variant, interleaved; ratio = median over rounds of "
        f"(step time / EW step time in the same round). EW step: {ew_t * 1e3:.2f} ms, "
        f"step tensor peak {ew_m:.1f} MB.\n\n"
    )
    text += table(
        rows,
        [
            "method",
            "how",
            "step ms",
            "vs EW",
            "target",
            "step tensor peak MB",
            "vs EW",
            "process peak RSS MB",
        ],
    )
    if skipped:
        text += "\n\ntorchjd variants not run: " + "; ".join(f"{m}: {w}" for m, w in skipped.items())
    print(text)
    if not args.no_write:
        write_section(section_name("balancers", args), text)


if __name__ == "__main__":
    main()
