"""Per-task gradients: the T x P Jacobian, its Gramian, cosines and norms.

`jacobian(losses, params)` returns the exact T x P Jacobian of the task losses w.r.t. the shared
parameters by the cheapest route the autograd graph allows:

- "trunk" (the default when it applies): the autograd graph of a multi-task model splits into a
  *trunk* (nodes that two or more task losses reach, e.g. MMoE's experts) and one *head* per task
  (nodes only that task's loss reaches: its gate, mixing and tower). One backward pass through the
  heads alone (hooks on the head nodes that feed the trunk catch each task's gradient at the
  trunk's outputs) gives every task's gradient w.r.t. the shared representation; one batched
  backward (`is_grads_batched`) carries the T rows through the trunk to the parameters. Each
  head is traversed once instead of T times (a plain batched backward pushes all T rows, mostly
  zeros, through every head). This is the chain rule split at the shared representation, as in
  MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018)
  and torchjd's `mtl_backward`, but exact: the trunk is found in the graph, not declared, and
  the Jacobian is still w.r.t. the parameters. It needs the losses stacked (`torch.stack`, so
  each task's loss is its own graph root).
- "batched": one `torch.autograd.grad(..., is_grads_batched=True)` over an identity matrix (vmap
  over the backward): the fallback for any other graph.
- "loop": T separate `torch.autograd.grad` calls (reference and benchmark).

Nothing here copies to the host: the Jacobian, Gramians and statistics stay on the device until
`gradient_stats` returns plain floats (one transfer of a few small matrices).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.autograd.graph import GradientEdge

Method = Literal["auto", "trunk", "batched", "loop"]

#: The route `jacobian` takes when none is given ("auto": trunk when the graph allows, else batched).
DEFAULT_METHOD: Method = "auto"
#: How the trunk route carries the T rows through the trunk: "loop" (T plain backward passes,
#: dense kernels: the faster on CPU, where vmap's batched kernels for broadcast/strided layouts are
#: slow), "batched" (one vmapped backward: fewer kernel launches, the faster on a GPU) or "auto".
TRUNK_ROWS: Literal["auto", "loop", "batched"] = "auto"


def jacobian(
    losses: torch.Tensor,
    params: list[nn.Parameter],
    retain_graph: bool = True,
    method: Method | None = None,
    representation_gramian_out: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """(T, P) matrix whose row t is d losses[t] / d params, flattened in `params` order.

    Parameters a task does not depend on get zeros in its row. `method` picks the route (see the
    module docstring); every route gives the same matrix up to float rounding. With
    `representation_gramian_out`, the trunk route also appends the representation Gramian
    (`representation_gramian`) taken from its head pass (nothing is appended on other routes).
    """
    T = losses.shape[0]
    if not params:  # nothing shared: an empty Jacobian, not an error
        return torch.zeros((T, 0), device=losses.device, dtype=losses.dtype)
    method = method or DEFAULT_METHOD
    if method in ("auto", "trunk"):
        J = _trunk_jacobian(losses, params, retain_graph, representation_gramian_out)
        if J is not None:
            return J
        if method == "trunk":
            raise ValueError("the losses are not stacked task roots; the trunk route does not apply")
    if method == "loop":
        rows = []
        for t in range(T):
            g = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
            rows.append(_flat(g, params, None))
        return torch.stack(rows)
    eye = torch.eye(T, device=losses.device, dtype=losses.dtype)
    grads = torch.autograd.grad(
        losses,
        params,
        grad_outputs=eye,
        is_grads_batched=True,
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return _flat(grads, params, T)


def _zeros(spec: tuple[torch.Size, torch.dtype, torch.device]) -> torch.Tensor:
    shape, dtype, device = spec
    return torch.zeros(shape, dtype=dtype, device=device)


def _flat(grads: Any, params: list[nn.Parameter], T: int | None) -> torch.Tensor:
    """Concatenate per-parameter gradients (zeros for None) into one flat (T, P) or (P,) tensor."""
    lead = () if T is None else (T,)
    cols = []
    for g, p in zip(grads, params, strict=True):
        if g is None:
            g = torch.zeros((*lead, *p.shape), device=p.device, dtype=p.dtype)
        cols.append(g.reshape(*lead, -1))
    return torch.cat(cols, dim=-1)


# ------------------------------------------------------------------------ the trunk route


@dataclass
class TrunkSplit:
    """The graph of one step cut between the trunk (nodes >= 2 task roots reach) and the heads."""

    roots: list[tuple[Any, int]]  # (node, output_nr) of each task's loss
    edges: list[tuple[Any, int]]  # trunk outputs that some head consumes, (node, output_nr)
    boundary: list[tuple[Any, int, list[tuple[int, int]]]]  # (head node, task, [(input idx, edge idx)])
    head_params: dict[int, tuple[int, int]]  # params index -> (task, stage-1 input index)
    trunk_params: list[int]  # params indices reached through the trunk
    nested: bool = False  # some trunk output lies below another (the head pass runs trunk nodes)


def trunk_split(losses: torch.Tensor, params: list[nn.Parameter]) -> TrunkSplit | None:
    """Find the trunk/head cut of the graph behind `losses` (None when it does not apply)."""
    fn = losses.grad_fn
    T = losses.shape[0]
    if fn is None or type(fn).__name__ != "StackBackward0" or len(fn.next_functions) != T:
        return None
    roots = [(n, nr) for n, nr in fn.next_functions]
    reach: list[set[Any]] = []
    acc_of: dict[int, Any] = {}  # id(param) -> its AccumulateGrad node
    for node, _ in roots:
        seen: set[Any] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if n is None or n in seen:
                continue
            seen.add(n)
            var = getattr(n, "variable", None)
            if var is not None:
                acc_of[id(var)] = n
            stack.extend(nf for nf, _ in n.next_functions)
        reach.append(seen)
    counts = Counter(n for r in reach for n in r)
    trunk = {n for n, c in counts.items() if c >= 2}
    edge_index: dict[tuple[Any, int], int] = {}
    boundary: list[tuple[Any, int, list[tuple[int, int]]]] = []
    for t, r in enumerate(reach):
        for h in r:
            if h in trunk:
                continue
            slots = []
            for i, (nf, nr) in enumerate(h.next_functions):
                if nf is not None and nf in trunk:
                    slots.append((i, edge_index.setdefault((nf, nr), len(edge_index))))
            if slots:
                boundary.append((h, t, slots))
    head_params: dict[int, tuple[int, int]] = {}
    trunk_params: list[int] = []
    n_head = 0
    for i, p in enumerate(params):
        node = acc_of.get(id(p))
        if node is None:
            continue  # no task reaches it: zero column
        if node in trunk:
            trunk_params.append(i)
        else:
            t = next(t for t, r in enumerate(reach) if node in r)
            head_params[i] = (t, n_head)
            n_head += 1
    return TrunkSplit(
        roots, list(edge_index), boundary, head_params, trunk_params, _nested({n for n, _ in edge_index})
    )


def _nested(edge_nodes: set[Any]) -> bool:
    """Whether a trunk output node lies below another one (PLE's levels, for instance): the head
    pass then has to run the trunk nodes between them, so it must keep their saved tensors."""
    if len(edge_nodes) < 2:
        return False
    seen: set[Any] = set()
    stack = [nf for n in edge_nodes for nf, _ in n.next_functions if nf is not None]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        if n in edge_nodes:
            return True
        seen.add(n)
        stack.extend(nf for nf, _ in n.next_functions if nf is not None)
    return False


def head_pass(
    losses: torch.Tensor, split: TrunkSplit, inputs: list[nn.Parameter], retain_heads: bool = True
) -> tuple[list[list[torch.Tensor | None]], tuple[torch.Tensor | None, ...]]:
    """Stage 1: one backward pass through the heads only (it stops at the trunk's outputs).

    Returns each task's gradient at each trunk output (caught by hooks on the head nodes that
    feed the trunk) and the gradients of sum(losses) w.r.t. `inputs` (parameters in the heads).
    With `retain_heads=False` the heads' saved tensors are freed as the pass goes (the trunk's
    are kept: the pass never runs a trunk node), which lowers the step's peak memory."""
    T = losses.shape[0]
    E = len(split.edges)
    caught: list[list[torch.Tensor | None]] = [[None] * E for _ in range(T)]

    def catcher(t: int, slots: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
        def hook(grad_inputs: tuple[torch.Tensor | None, ...], _grad_outputs: Any) -> None:
            for i, e in slots:
                g = grad_inputs[i]
                if g is not None:
                    prev = caught[t][e]
                    caught[t][e] = g if prev is None else prev + g

        return hook

    handles = [h.register_hook(catcher(t, slots)) for h, t, slots in split.boundary]
    roots = [GradientEdge(n, nr) for n, nr in split.roots if n is not None]
    try:
        out = torch.autograd.grad(
            roots,
            [GradientEdge(n, nr) for n, nr in split.edges] + inputs,
            grad_outputs=[torch.ones((), dtype=losses.dtype, device=losses.device)] * len(roots),
            retain_graph=retain_heads,
            allow_unused=True,
        )
    finally:
        for handle in handles:
            handle.remove()
    return caught, out[E:]  # the sums over tasks at the trunk outputs are not needed: drop them


def representation_gramian(losses: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor | None:
    """T x T Gramian of the task gradients w.r.t. the shared representation (the trunk's outputs
    that the heads read), from one backward pass through the heads; None when the graph has no
    trunk/head split.

    This is MGDA-UB's approximation (Sener & Koltun, NeurIPS 2018): the Gramian of the parameter
    Jacobian is approximated by that of the representation Jacobian, which costs no trunk pass.
    Opt-in only: weights from it are not the exact method's; the update built from them,
    sum_t w_t grad L_t, costs one ordinary backward pass."""
    split = trunk_split(losses, params)
    if split is None:
        return None
    caught, _ = head_pass(losses, split, [])
    return caught_gramian(caught, losses.shape[0], len(split.edges), losses.device)


def caught_gramian(
    caught: list[list[torch.Tensor | None]], T: int, E: int, device: torch.device
) -> torch.Tensor:
    """float64 T x T Gramian of the tasks' gradients at the E trunk outputs (`head_pass`)."""
    G = torch.zeros((T, T), dtype=torch.float64, device=device)
    for e in range(E):
        rows = [None if (g := caught[t][e]) is None else g.reshape(-1) for t in range(T)]
        for i in range(T):
            for j in range(i, T):
                a, b = rows[i], rows[j]
                if a is not None and b is not None:  # dot products: no stacked or float64 copies
                    G[i, j] += torch.dot(a, b).double()
    return G + torch.triu(G, diagonal=1).T


def _trunk_jacobian(
    losses: torch.Tensor,
    params: list[nn.Parameter],
    retain_graph: bool,
    representation_gramian_out: list[torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """The trunk route (see the module docstring)."""
    split = trunk_split(losses, params)
    if split is None:
        return None
    T = losses.shape[0]
    E = len(split.edges)
    head_inputs = [params[i] for i in split.head_params]
    caught, stage1 = head_pass(losses, split, head_inputs, retain_heads=retain_graph or split.nested)
    if representation_gramian_out is not None:
        representation_gramian_out.append(caught_gramian(caught, T, E, losses.device))
    # J is filled in place, row by row or block by block (no per-task copies, no final concatenation)
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + p.numel())
    J = torch.zeros((T, offsets[-1]), device=losses.device, dtype=losses.dtype)
    if split.trunk_params and E:
        # stage 2: the T rows of trunk-output gradients through the trunk
        live = [e for e in range(E) if any(caught[t][e] is not None for t in range(T))]
        outs = [GradientEdge(*split.edges[e]) for e in live]
        refs = [
            next((g.shape, g.dtype, g.device) for t in range(T) if (g := caught[t][e]) is not None)
            for e in live
        ]
        trunk_inputs = [params[i] for i in split.trunk_params]
        rows_mode = TRUNK_ROWS
        if rows_mode == "auto":
            rows_mode = "batched" if losses.device.type == "cuda" else "loop"
        if outs and rows_mode == "batched":
            gouts = [
                torch.stack([caught[t][e] if caught[t][e] is not None else _zeros(r) for t in range(T)])
                for e, r in zip(live, refs, strict=True)
            ]
            got = torch.autograd.grad(
                outs,
                trunk_inputs,
                grad_outputs=gouts,
                is_grads_batched=True,
                retain_graph=retain_graph,
                allow_unused=True,
            )
            for i, g in zip(split.trunk_params, got, strict=True):
                if g is not None:
                    J[:, offsets[i] : offsets[i + 1]] = g.reshape(T, -1)
        elif outs:  # one plain backward per task through the trunk: dense kernels, no vmap
            for t in range(T):
                gouts_t = [
                    caught[t][e] if caught[t][e] is not None else _zeros(r)
                    for e, r in zip(live, refs, strict=True)
                ]
                caught[t] = [None] * E  # free this task's trunk-output gradients as soon as used
                got = torch.autograd.grad(
                    outs,
                    trunk_inputs,
                    grad_outputs=gouts_t,
                    retain_graph=retain_graph or t < T - 1,
                    allow_unused=True,
                )
                del gouts_t
                for i, g in zip(split.trunk_params, got, strict=True):
                    if g is not None:
                        J[t, offsets[i] : offsets[i + 1]] = g.reshape(-1)
    for i, (t, k) in split.head_params.items():
        g = stage1[k]
        if g is not None:
            J[t, offsets[i] : offsets[i + 1]] = g.reshape(-1)
    return J


#: Columns of J converted to float64 at a time by `gramian` (bounds the temporary copy).
GRAMIAN_CHUNK = 8192


#: A float64 Gramian whose largest diagonal entry lies in this range was computed without
#: underflow or overflow of the products that matter (entries of J between about 1e-100 and 1e100)
SAFE_GRAMIAN = (1e-200, 1e200)


def _gram(J: torch.Tensor, s: float) -> torch.Tensor:
    """Sum over column chunks of (J_c / s)(J_c / s)^T in float64 (s a power of two: exact)."""
    G: torch.Tensor | None = None
    for a in range(0, J.shape[1], GRAMIAN_CHUNK):
        # a float64 copy (never J itself, even when J is float64), divided in place (1 / s may
        # overflow where s is subnormal)
        Jc = (
            J[:, a : a + GRAMIAN_CHUNK].to(torch.float64, copy=True).div_(s)
            if s != 1.0
            else J[:, a : a + GRAMIAN_CHUNK].double()
        )
        g = Jc @ Jc.T
        G = g if G is None else G + g
    return G if G is not None else J.new_zeros((J.shape[0], J.shape[0]), dtype=torch.float64)


def power_of_two_scale(x: float) -> float:
    """The power of two s with x / s in [0.5, 1) (1.0 when x is 0, negative or not finite; at
    most 2^1023): dividing by it is exact and brings x to order 1."""
    if not (math.isfinite(x) and x > 0.0):
        return 1.0
    return math.ldexp(1.0, min(math.frexp(x)[1], 1023))


def jacobian_scale(J: torch.Tensor) -> float:
    """`power_of_two_scale` of J's largest |entry| (no copy of J)."""
    if J.numel() == 0:
        return 1.0
    lo, hi = torch.aminmax(J.detach())
    return power_of_two_scale(max(-float(lo), float(hi)))


def scale_gramian(G: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(G / s^2, s) with s = `power_of_two_scale` of sqrt(max_t G_tt), for a Gramian computed
    unscaled: exact, but it cannot restore what already underflowed."""
    diag = torch.diagonal(G.detach(), dim1=-2, dim2=-1)
    top = float(diag.max()) if diag.numel() else 0.0
    s = power_of_two_scale(math.sqrt(top)) if math.isfinite(top) and top > 0.0 else 1.0
    return (G / s / s if s != 1.0 else G), s


def scaled_gramian(J: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(G, s): G the float64 Gramian of J / s, s a power of two that brings G's largest
    diagonal entry to order 1, so that G s^2 = J J^T exactly (powers of two only move exponents).

    Gramian-based balancers solve on G (`engine.balancers.numerics`): J J^T itself underflows
    or overflows in float64 for gradient entries of 1e-161 or 1e155. For ordinary magnitudes
    J J^T is computed once and rescaled (`scale_gramian`, a T x T division); only outside
    `SAFE_GRAMIAN` is it recomputed from J / s, s from J's largest |entry| (`jacobian_scale`)."""
    J = J.detach()
    G = _gram(J, 1.0)
    top = float(torch.diagonal(G).max()) if G.numel() else 0.0
    if SAFE_GRAMIAN[0] < top < SAFE_GRAMIAN[1]:
        return scale_gramian(G)
    s = jacobian_scale(J)
    return (_gram(J, s) if s != 1.0 else G), s


def gramian(J: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """G = J J^T in float64, without a full float64 copy of J: the columns are converted and
    multiplied in chunks of `GRAMIAN_CHUNK` and the chunk Gramians summed (on J's device).

    Entries of J so small or large that their products leave float64's range (1e-161, 1e155)
    are handled by `scaled_gramian` (G = s^2 (J/s)(J/s)^T, exact); only G itself can still
    leave the range. With `scale` = s given (a power of two), the Gramian of J / s is returned
    instead, without the s^2 factor."""
    J = J.detach()
    if scale is not None:
        return _gram(J, scale)
    G, s = scaled_gramian(J)
    return G * (s * s) if s != 1.0 else G


# ----------------------------------------------------------------------------- statistics


def cosine_matrix(G: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise cosines G_ij / sqrt(G_ii G_jj) from a Gramian; 0 where a norm is zero."""
    d = torch.sqrt(torch.clamp(torch.diagonal(G, dim1=-2, dim2=-1), min=0.0))
    denom = d[..., :, None] * d[..., None, :]
    return torch.where(denom > eps, G / denom.clamp_min(eps), torch.zeros_like(G))


@dataclass
class GradStatRow:
    layer: str
    task_i: str
    task_j: str
    cosine: float
    norm_i: float
    norm_j: float


def block_slices(
    blocks: dict[str, list[nn.Parameter]], params: list[nn.Parameter]
) -> dict[str, torch.Tensor]:
    """Column indices of each named block inside the flat Jacobian over `params`."""
    offsets: dict[int, tuple[int, int]] = {}
    o = 0
    for p in params:
        offsets[id(p)] = (o, o + p.numel())
        o += p.numel()
    out: dict[str, torch.Tensor] = {}
    for name, ps in blocks.items():
        idx = [torch.arange(*offsets[id(p)]) for p in ps if id(p) in offsets]
        if idx:
            out[name] = torch.cat(idx)
    return out


def _block_ranges(idx: torch.Tensor) -> list[tuple[int, int]]:
    """Contiguous [start, stop) runs of a sorted index vector (so blocks are views, not gathers)."""
    if idx.numel() == 0:
        return []
    breaks = (torch.nonzero(idx[1:] - idx[:-1] != 1).flatten() + 1).tolist()
    starts = [0, *breaks]
    stops = [*breaks, idx.numel()]
    lo = idx[starts].tolist()
    hi = idx[[s - 1 for s in stops]].tolist()
    return [(a, b + 1) for a, b in zip(lo, hi, strict=True)]


def gradient_stats(
    J: torch.Tensor,
    task_names: list[str],
    blocks: dict[str, torch.Tensor] | None = None,
) -> list[GradStatRow]:
    """Rows of (layer, task_i, task_j, cosine, norm_i, norm_j) for i < j, overall ("all") and per
    block. Diagonal rows (i == j, cosine 1) carry each task's own norm.

    Each block's Gramian is computed on the device from contiguous column views of J (blocks are
    runs of whole parameters); all Gramians travel to the host together, once.
    """
    parts: dict[str, torch.Tensor] = {}
    block_list = list((blocks or {}).items()) if len(blocks or {}) > 1 else []
    grams = []
    for _name, idx in block_list:
        G = None
        for a, b in _block_ranges(idx):
            Jb = J[:, a:b]
            G = Jb @ Jb.T if G is None else G + Jb @ Jb.T
        grams.append(G if G is not None else J.new_zeros((J.shape[0], J.shape[0])))
    G_all = J @ J.T
    stacked = torch.stack([G_all, *grams]).detach().double().cpu()
    parts["all"] = stacked[0]
    for (name, _idx), G in zip(block_list, stacked[1:], strict=True):
        parts[name] = G
    rows: list[GradStatRow] = []
    T = len(task_names)
    for layer, G in parts.items():
        C = cosine_matrix(G).tolist()
        n = torch.sqrt(torch.clamp(torch.diagonal(G), min=0.0)).tolist()
        for i in range(T):
            for j in range(i, T):
                rows.append(GradStatRow(layer, task_names[i], task_names[j], C[i][j], n[i], n[j]))
    return rows
