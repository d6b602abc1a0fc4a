"""The representation-gradient step (MGDA-UB style), an opt-in for Gramian-based balancers.

Sener & Koltun ("Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018) replace the
Gramian of the task gradients w.r.t. the shared *parameters* by the Gramian of the task gradients
w.r.t. the shared *representation* Z (what the task-specific parts read): for MGDA the min-norm
problem over that Gramian minimises an upper bound of the exact one, and it costs one backward
pass through the task heads instead of T passes through the shared trunk. Seesaw offers the same
substitution to every balancer whose weights are a function of the Gramian (`GradientAggregation.
gramian_based`): MGDA (where the bound is the paper's), and as an approximation PCGrad, IMTL,
UPGrad, CAGrad, Nash-MTL, Aligned-MTL, GradVac and GradCraft.

One step (`representation_backward`):
1. one backward pass through the heads only (`engine.gradients.head_pass`): each task's gradient
   z_t at the trunk outputs, and the gradients of the task-specific parameters;
2. G = [<z_s, z_t>] and the balancer's weights w = f(G);
3. one backward pass through the trunk with the cotangent sum_t w_t z_t: the shared parameters'
   gradient is then exactly sum_t w_t grad L_t (only w is approximate), at the cost of an EW step.

Task-specific parameters get the plain gradient of sum_t L_t, as in the exact mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.graph import GradientEdge

from engine.gradients import caught_gramian, head_pass, trunk_split


def representation_backward(
    losses: torch.Tensor,
    shared: list[nn.Parameter],
    task_params: list[nn.Parameter],
    weigh: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor | None:
    """Run the step above and set `.grad` of `shared` (sum_t w_t grad L_t) and `task_params`
    (grad of sum_t L_t); return w. None when the graph has no trunk/head split (the losses are
    not stacked task roots, or nothing is shared): nothing is written, and the caller takes the
    exact route instead."""
    params = [*shared, *task_params]
    split = trunk_split(losses, params)
    if split is None or not split.edges:
        return None
    T, E = losses.shape[0], len(split.edges)
    head_inputs = [params[i] for i in split.head_params]
    caught, stage1 = head_pass(losses, split, head_inputs, retain_heads=split.nested)
    G = caught_gramian(caught, T, E, losses.device)
    w = weigh(G).detach().to(device=losses.device, dtype=losses.dtype)

    n_shared = len(shared)
    grads: dict[int, torch.Tensor] = {}
    for i, (t, k) in split.head_params.items():  # reached by one task's loss only
        g = stage1[k]
        if g is not None:
            grads[i] = g * w[t] if i < n_shared else g
    trunk_shared = [i for i in split.trunk_params if i < n_shared]
    trunk_task = [i for i in split.trunk_params if i >= n_shared]  # e.g. PLE's task experts
    live = [e for e in range(E) if any(caught[t][e] is not None for t in range(T))]
    outs = [GradientEdge(*split.edges[e]) for e in live]

    def cotangent(weights: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for e in live:
            acc = None
            for t in range(T):
                g = caught[t][e]
                if g is not None:
                    acc = g * weights[t] if acc is None else acc + g * weights[t]
            assert acc is not None
            out.append(acc)
        return out

    passes = [(trunk_shared, w)]
    if trunk_task:
        passes.append((trunk_task, torch.ones_like(w)))
    for n, (idx, weights) in enumerate(passes):
        if not idx or not outs:
            continue
        got = torch.autograd.grad(
            outs,
            [params[i] for i in idx],
            grad_outputs=cotangent(weights),
            retain_graph=n < len(passes) - 1,
            allow_unused=True,
        )
        for i, g in zip(idx, got, strict=True):
            if g is not None:
                grads[i] = g
    for i, p in enumerate(params):
        g = grads.get(i)
        p.grad = torch.zeros_like(p) if g is None else g.detach().to(p.dtype)
    return w
