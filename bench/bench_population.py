"""A K = 16 task-weight sweep trained as one population vs 16 sequential runs vs one run.

Workload: the issue's MMoE (3 tasks, 100 inputs, 4 experts 100-64-32, towers 32-16-1, batch 1024,
Adam), 16 weight vectors (simplex grid), the same epochs for every run. Three things are timed in
one process, interleaved round by round: one `train()` run; the 16 runs one after another
(`train()` each); the 16 as one population (`train_population`, on its hand-batched route for
MMoE, `engine.stacked`). All in-process with writers that keep rows in memory, so the numbers are
the training engine's, not the disk's. Also: one training step of the population against one
step of one model (with GFLOP/s from torch's FLOP counter), the same single-model step on a
16 x larger batch (what 16 models' arithmetic costs in PyTorch's own kernels once per-step
overhead is amortised: the floor a population of separate-parameter members approaches on a
CPU), and the population's step tensor peak against the memory budget (16 x parameters,
gradients and Adam state + 16 x one model's step activations).

    python bench/bench_population.py            # writes its section of bench/RESULTS.md
    python bench/bench_population.py --rounds 1 --epochs 1 --no-write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    WORKLOAD,
    command,
    header,
    load_avg,
    machine,
    median,
    section_name,
    set_threads,
    table,
    tensor_peak_mb,
    time_calls,
    write_section,
)

K = 16


def configs(epochs: int, threads: int, k: int = K) -> list:  # type: ignore[type-arg]
    from engine.config import load_config
    from engine.sweeps import plan_sweep, weight_vectors

    base = load_config({**WORKLOAD, "epochs": epochs, "threads": threads, "grad_stats_every": 10})
    return plan_sweep(base, weight_vectors(3, k, "random", seed=0)).configs


def step_bench(threads: int, rounds: int) -> tuple[dict[str, float], str]:
    """One population step vs one single-model step (same batch), and their FLOPs; also one model's
    step on a K times larger batch (K models' arithmetic in PyTorch's own kernels)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.config import load_config
    from engine.datasets import load_dataset
    from engine.models import build_model
    from engine.population import PopulationModel, population_optimizer

    data = load_dataset(WORKLOAD["dataset"], WORKLOAD["dataset_params"], 0)
    idx = torch.arange(WORKLOAD["batch_size"])
    batch = (
        {k: v[idx] for k, v in data.train.features.items()},
        {k: v[idx] for k, v in data.train.targets.items()},
        {},
    )
    models = []
    for s in range(K):
        torch.manual_seed(s)
        models.append(build_model(WORKLOAD["arch"], data.features, data.tasks, WORKLOAD["arch_params"]))
    single = models[0]
    opt1 = torch.optim.Adam(single.parameters(), lr=1e-3)
    pop = PopulationModel(models[:K])
    optk = population_optimizer(load_config({**WORKLOAD, "threads": threads}), pop.optim_tensors())
    W = torch.rand(K, 3)
    torch.manual_seed(0)
    big_model = build_model(WORKLOAD["arch"], data.features, data.tasks, WORKLOAD["arch_params"])
    opt_big = torch.optim.Adam(big_model.parameters(), lr=1e-3)
    big_idx = torch.arange(K * WORKLOAD["batch_size"]) % len(data.train)
    big = (
        {k: v[big_idx] for k, v in data.train.features.items()},
        {k: v[big_idx] for k, v in data.train.targets.items()},
    )

    def one_big() -> None:
        ld = big_model.task_losses(big_model(big[0]), big[1], {})
        opt_big.zero_grad(set_to_none=True)
        torch.stack(list(ld.values())).sum().backward()
        opt_big.step()

    def one() -> None:
        out = single(batch[0])
        ld = single.task_losses(out, batch[1], {})
        opt1.zero_grad(set_to_none=True)
        torch.stack(list(ld.values())).sum().backward()
        opt1.step()

    def many() -> None:
        losses = pop.losses(batch, batched=False)
        optk.zero_grad(set_to_none=True)
        (W * losses).sum().backward()
        optk.step()

    with FlopCounterMode(display=False) as fc:
        one()
    flops1 = fc.get_total_flops()
    for f in (one, many, one_big):
        for _ in range(3):
            f()
    t1, tk, tb = [], [], []
    for _ in range(rounds):
        t1.append(time_calls(one, 20))
        tk.append(time_calls(many, 5))
        tb.append(time_calls(one_big, 5))
    p_bytes = sum(p.numel() * p.element_size() for p in single.parameters())
    mem1 = tensor_peak_mb(one)
    memk = tensor_peak_mb(many)
    return {
        "t1": median(t1),
        "tk": median(tk),
        "ratio": median([b / a for a, b in zip(t1, tk, strict=True)]),
        "tbig": median(tb),
        "ratio_big": median([b / a for a, b in zip(t1, tb, strict=True)]),
        "gflopsbig": K * flops1 / median(tb) / 1e9,
        "gflops1": flops1 / median(t1) / 1e9,
        "gflopsk": K * flops1 / median(tk) / 1e9,
        "flops1": flops1,
        "mem1": mem1,
        "memk": memk,
        "param_mb": p_bytes / 2**20,
    }, pop.route


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    set_threads(args.threads)
    info = machine()
    from engine.population import train_population
    from engine.train import train

    cfgs = configs(args.epochs, args.threads)
    train(cfgs[0])  # warm-up: data cache, imports
    one_t, seq_t, pop_t = [], [], []
    ratios_pop, ratios_seq = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        train(cfgs[0])
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        for c in cfgs:
            train(c)
        b = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = train_population(cfgs)
        c_ = time.perf_counter() - t0
        assert all(x.state == "finished" for x in results)
        one_t.append(a)
        seq_t.append(b)
        pop_t.append(c_)
        ratios_pop.append(c_ / a)
        ratios_seq.append(b / a)
        print(
            f"round {r + 1}: one {a:.2f} s, 16 sequential {b:.2f} s, population {c_:.2f} s", file=sys.stderr
        )
    steps, route = step_bench(args.threads, max(3, args.rounds))
    info["load average at end"] = load_avg()
    n_train = int(WORKLOAD["dataset_params"]["n_samples"] * 0.7)
    steps_per_run = args.epochs * -(-n_train // WORKLOAD["batch_size"])
    pop_ratio = median(ratios_pop)
    budget = K * (4 * steps["param_mb"] + steps["mem1"])
    rows = [
        ["one run", f"{median(one_t):.2f}", "1.00x", ""],
        ["16 runs, one after another", f"{median(seq_t):.2f}", f"{median(ratios_seq):.2f}x", "(about 16x)"],
        [
            "**16 runs as one population**",
            f"{median(pop_t):.2f}",
            f"**{pop_ratio:.2f}x**",
            f"<= 4x: {'met' if pop_ratio <= 4 else 'MISSED'}",
        ],
    ]
    text = header(
        "K = 16 population sweep vs sequential runs",
        command("bench_population.py", args),
        info,
    )
    text += (
        f"\nMMoE workload, 3 tasks, 16 Dirichlet weight vectors, {args.epochs} epochs of "
        f"{steps_per_run // args.epochs} steps (batch 1024) per run, validation every epoch, "
        f"test at the end, "
        f"gradient statistics every 10 steps; {args.rounds} interleaved rounds, medians; ratios against "
        f"one run in the same round. Population route: {route}.\n\n"
    )
    text += table(rows, ["what", "wall s", "vs one run", "target"])
    text += "\n\nOne training step (same batch):\n\n"
    text += table(
        [
            [
                "one model",
                f"{steps['t1'] * 1e3:.2f}",
                "1.00x",
                f"{steps['gflops1']:.0f}",
                f"{steps['mem1']:.1f}",
            ],
            [
                "population of 16",
                f"{steps['tk'] * 1e3:.2f}",
                f"{steps['ratio']:.2f}x",
                f"{steps['gflopsk']:.0f}",
                f"{steps['memk']:.1f}",
            ],
            [
                "one model, 16 x batch (16 models' arithmetic)",
                f"{steps['tbig'] * 1e3:.2f}",
                f"{steps['ratio_big']:.2f}x",
                f"{steps['gflopsbig']:.0f}",
                "",
            ],
        ],
        ["step", "ms", "vs one model", "GFLOP/s", "step tensor peak MB"],
    )
    text += (
        f"\n\nFLOPs of one model's step (torch FLOP counter): {steps['flops1'] / 1e9:.3f} GFLOP. "
        f"Memory budget for the population (16 x (parameters + gradients + 2 Adam moments) + 16 x one "
        f"model's step peak) = {budget:.1f} MB; population step peak {steps['memk']:.1f} MB: "
        f"{'met' if steps['memk'] <= budget else 'MISSED'}."
    )
    print(text)
    if not args.no_write:
        write_section(section_name("population", args), text)


if __name__ == "__main__":
    main()
