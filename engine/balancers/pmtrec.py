"""PMTRec (Yang, Liu, Zhang, Murthy, Heinecke, Wang, Xiong, Yu, "Personalized Multi-task
Training for Recommender System", arXiv 2407.21364, 2024).

The paper combines the task gradients separately for every user and every item (every row of
the user and item embedding tables), from each task's gradient norm on that row, steers the
combination toward the main recommendation task progressively over training (Task Focusing) and
bounds auxiliary gradients by the main task's magnitude (Gradient Magnitude Balancing). The
stored material we could read (the abstract and third-party summaries) does not give the
equations; the formulas below are our choices, each stated with the property it guarantees
(tests/test_balancers_personal.py checks them).

Per entity e (a touched user row, a touched item row, or the dense block, see below), with
g_{t,e} task t's gradient on it, n_{t,e} = ||g_{t,e}||, m the main task and a the auxiliaries:

1. Personalised task weights (from the row's gradient norms):
       alpha_{t,e} = T n_{t,e} / sum_k n_{k,e}          (1 for every task when all are zero)
   A task that moves this user's embedding more gets more of its update; weights average 1 per
   row, so two users whose task gradients differ in size get different mixes.
2. Gradient Magnitude Balancing (bound kappa = `balance_bound`): each auxiliary contribution is
   clipped to at most kappa times the main task's contribution,
       beta_{a,e} = alpha_{a,e} min(1, kappa alpha_{m,e} n_{m,e} / (alpha_{a,e} n_{a,e})),
   so ||beta_a g_a|| <= kappa ||beta_m g_m|| on every row the main task reaches. Only shrinking
   (a bound, not a target). A row the main task does not reach in this batch (n_m = 0: its
   label is masked there, say) has no magnitude of its own to compare with; its auxiliaries are
   bounded by kappa times the mean main contribution over the rows of the same table that the
   main task does reach, so auxiliary tasks still train rows the main task leaves cold (their
   point in recommendation) at the main task's typical scale. Where the main task reaches no row
   at all (or the dense block), auxiliaries are clipped to zero.
3. Task Focusing (strength lambda(step) in [0, 1] from `focus_schedule`, rising over
   `focus_steps` steps to `focus_max`): the part of each auxiliary contribution that conflicts
   with the main gradient is removed progressively,
       c_a <- c_a - lambda min(0, c_a . u_m) u_m,        u_m = g_m / n_m,
   which adds lambda max(0, -c_a . u_m) / n_m to the main task's weight. The combination is
   d = c_m + sum_a c_a = sum_t beta_t g_t. Since focusing only adds non-negative multiples of
   u_m to d, cos(d, g_m) is non-decreasing in lambda, for any number of tasks (write
   d = p u_m + q e with e orthogonal to u_m: the cosine (p + t) / sqrt((p + t)^2 + q^2) grows
   with t >= 0); and because removing a conflicting component only shortens c_a, the bound of
   step 2 still holds afterwards.

Which parameters are personalised: the embedding tables of the user and item id columns
(`FeatureSpec.user_col` / `item_col`) of every `FeatureEncoder` in `ctx.model`, when they are
shared parameters, one entity per row touched by the batch (rows no task touches keep a zero
gradient). All other shared parameters (other embedding tables, experts, bottoms) form one
entity, the dense block, combined by the same three steps on its whole gradient: the dense
network serves every user, so it gets the population-level version of the same rule. Without a
model or id tables (e.g. on adult) PMTRec is that block rule alone, and its weights are then
exact (direction == weights @ J).

Reported weights: the mean of beta over the groups (user rows, item rows, dense block), each
group averaged over its entities. `last_rows` keeps each id table's (row ids, beta (T, R)) of the
last step for inspection. Internals: focus (lambda), clipped_frac (share of auxiliary
(task, entity) pairs the bound clipped), rows (personalised rows this step), row_w_std_t
(spread of task t's weight across rows: how personal the mixes are).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from engine.balancers.base import BalancerParams, GradientAggregation, StepContext
from engine.models.base import FeatureEncoder

FocusSchedule = Literal["linear", "cosine", "constant", "none"]


def focus_strength(schedule: str, step: int, focus_steps: int, focus_max: float) -> float:
    """lambda(step): 0 -> focus_max over `focus_steps` steps (linear or half-cosine ramp),
    focus_max from the start ("constant") or 0 ("none")."""
    if schedule == "none":
        return 0.0
    if schedule == "constant":
        return focus_max
    p = min(1.0, max(step, 0) / focus_steps)
    if schedule == "cosine":
        p = 0.5 * (1.0 - math.cos(math.pi * p))
    return focus_max * p


def personal_combination(
    G: torch.Tensor, main: int, bound: float, focus: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Combine task gradients entity by entity (steps 1-3 of the module docstring).

    G: (T, R, D) gradients of T tasks on R entities. Returns the (R, D) combined gradients,
    the (T, R) effective weights beta (combined == einsum('tr,trd->rd', beta, G)) and the
    number of auxiliary (task, entity) pairs the magnitude bound clipped.
    """
    T = G.shape[0]
    n = G.norm(dim=2)  # (T, R)
    total = n.sum(dim=0, keepdim=True)
    alpha = torch.where(total > 0, T * n / torch.where(total > 0, total, torch.ones_like(total)), 1.0)
    contrib = alpha * n  # norms of the weighted contributions
    ref = contrib[main]  # (R,) the main task's contribution: the reference magnitude per entity
    reached = ref > 0
    if bool(reached.any()) and not bool(reached.all()):  # rows the main task does not reach
        ref = torch.where(reached, ref, ref[reached].mean())
    cap = bound * ref[None, :]  # (1, R)
    aux = torch.ones(T, 1, dtype=torch.bool, device=G.device)
    aux[main] = False
    clip = aux & (contrib > cap)
    scale = torch.where(clip, cap / torch.where(clip, contrib, torch.ones_like(contrib)), 1.0)
    beta = alpha * scale
    n_main = n[main]  # (R,)
    if focus > 0:
        reach = reached & (n_main > 0)  # rows with a main contribution (none if it underflowed)
        u_main = G[main] / torch.where(reach, n_main, torch.ones_like(n_main))[:, None]  # (R, D)
        dots = beta * torch.einsum("trd,rd->tr", G, u_main)  # c_t . u_m
        conflict = torch.where(aux & reach[None, :], (-dots).clamp_min(0.0), 0.0)
        extra = focus * conflict.sum(dim=0) / torch.where(reach, n_main, torch.ones_like(n_main))
        beta = beta.clone()
        beta[main] = beta[main] + torch.where(reach, extra, 0.0)
    combined = torch.einsum("tr,trd->rd", beta, G)
    return combined, beta, int(clip.sum())


def id_tables(model: nn.Module | None, shared: list[nn.Parameter]) -> list[tuple[str, int]]:
    """(column name, index in `shared`) of the user and item id embedding tables of every
    FeatureEncoder in `model` that are shared parameters."""
    if model is None:
        return []
    position = {id(p): k for k, p in enumerate(shared)}
    out: list[tuple[str, int]] = []
    for module in model.modules():
        if not isinstance(module, FeatureEncoder):
            continue
        spec = module.features
        for col in (spec.user_col, spec.item_col):
            if col is None or col not in spec.cat_names:
                continue
            weight = module.embeddings[spec.cat_names.index(col)].weight
            k = position.get(id(weight))
            if k is not None and weight.dim() == 2 and all(k != j for _, j in out):
                out.append((col, k))
    return out


class PMTRec(GradientAggregation):
    """Yang et al., arXiv 2407.21364 (2024): per-user and per-item task weights from row
    gradient norms, Gradient Magnitude Balancing toward the main task and progressive Task
    Focusing (formulas: module docstring)."""

    name = "pmtrec"
    description = "PMTRec: task weights per user and item from their own gradients, focused on the main task."
    weights_are_exact = False

    class Params(BalancerParams):
        main_task: str | None = Field(
            None, description="the main (recommendation) task; default the first task"
        )
        balance_bound: float = Field(
            1.0, gt=0.0, le=1e6, description="max ratio of an auxiliary gradient to the main one, per row"
        )
        focus_schedule: FocusSchedule = Field(
            "linear", description="how Task Focusing grows over training (none = off)"
        )
        focus_steps: int = Field(
            1000, ge=1, le=10_000_000, description="steps until focusing reaches focus_max"
        )
        focus_max: float = Field(
            1.0, ge=0.0, le=1.0, description="final focusing strength (1 = conflicts with main removed)"
        )

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self.check_tasks(params, self.task_names)
        main = self.params.main_task
        self.main = 0 if main is None else self.task_names.index(main)
        #: per id table of the last step: column -> (row ids (R,), weights beta (T, R))
        self.last_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def check_tasks(cls, params: BalancerParams, tasks: list[str]) -> None:
        main = getattr(params, "main_task", None)
        if main is not None and main not in tasks:
            raise ValueError(
                f"balancer_params.main_task must be one of the tasks {list(tasks)}, got {main!r}"
            )

    def focus(self, step: int) -> float:
        p = self.params
        return focus_strength(p.focus_schedule, step, p.focus_steps, p.focus_max)

    def aggregate(self, J: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        Jd = J.detach()
        T, P = Jd.shape
        lam = self.focus(ctx.step)
        bound = self.params.balance_bound
        direction = torch.zeros(P, dtype=Jd.dtype, device=Jd.device)
        rest = torch.ones(P, dtype=torch.bool, device=Jd.device)
        offsets = [0]
        for p in ctx.shared_params:
            offsets.append(offsets[-1] + p.numel())
        group_weights: list[torch.Tensor] = []
        clipped, pairs, n_rows = 0, 0, 0
        stds: list[torch.Tensor] = []
        self.last_rows = {}
        for col, k in id_tables(ctx.model, ctx.shared_params):
            start, stop = offsets[k], offsets[k + 1]
            n_ids, dim = ctx.shared_params[k].shape
            rest[start:stop] = False
            block = Jd[:, start:stop].reshape(T, n_ids, dim)
            rows = (block != 0).any(dim=2).any(dim=0).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            combined, beta, c = personal_combination(block[:, rows], self.main, bound, lam)
            direction[start:stop].view(n_ids, dim)[rows] = combined
            group_weights.append(beta.mean(dim=1))
            stds.append(beta.std(dim=1, correction=0))
            self.last_rows[col] = (rows, beta)
            clipped, pairs, n_rows = clipped + c, pairs + (T - 1) * rows.numel(), n_rows + rows.numel()
        if bool(rest.any()):
            combined, beta, c = personal_combination(Jd[:, rest][:, None, :], self.main, bound, lam)
            direction[rest] = combined[0]
            group_weights.append(beta[:, 0])
            clipped, pairs = clipped + c, pairs + T - 1
        w = torch.stack(group_weights).mean(dim=0) if group_weights else torch.ones(T, dtype=Jd.dtype)
        self.last_internals = {
            "focus": lam,
            "clipped_frac": clipped / pairs if pairs else 0.0,
            "rows": float(n_rows),
        }
        if stds:
            spread = torch.stack(stds).mean(dim=0)
            self.last_internals.update({f"row_w_std_{i}": float(v) for i, v in enumerate(spread.cpu())})
        return direction, w.to(device=J.device, dtype=J.dtype)
