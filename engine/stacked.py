"""Hand-batched populations of the mixture-of-experts family (shared-bottom, OMoE, MMoE).

`engine.population` trains K members of one architecture as one batched model. Its general route
is `torch.func.vmap` over `functional_call`; for the architectures here this module writes the
K-member forward by hand instead, as a few large matrix products over all members at once:

- parameters live in *leaves*, one tensor per layer kind with the member dimension first and the
  experts (or tasks, for the towers and gates) second, e.g. every member's every expert's first
  layer in one (K, E, H, In + 1) tensor (the last column is the bias; the input gets a row of
  ones). `layout` maps each state-dict name of one member to (leaf, index), so a member's
  state_dict, a checkpoint or a stacked per-name dict converts both ways (`unpack`, `pack`).
  An optimiser over the leaves is K independent optimisers (Adam, AdamW and SGD are
  elementwise), so nothing about a member changes but the grouping of its numbers.
- activations are *feature-major*: (K * G, features, B) with the batch last, so every layer of
  every member and expert is one `mm` (first layer, input shared by all members: one
  (K * E * H) x (In + 1) by (In + 1) x B product) or one `bmm` over K * G, and no transposes or
  copies are needed between layers, forward or backward.
- the MLP stacks and the gate mixing are `torch.autograd.Function`s with their backward written
  out (`_StackedMLP`, `_GateMix`): ReLU masks applied in place, no per-expert or per-task
  temporaries. Softmax and the losses stay with autograd.

The arithmetic is a separate model's, in another summation order: a member trained here ends
within float rounding of `engine.train.train` on its config (tests/test_population.py).

`stack_models(models)` returns None when the models are not ones this module knows exactly (an
unknown class or subclass, dropout, buffers, towers of different shapes, an overridden
`task_losses`, ...); the population then uses vmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.datasets.base import TaskSpec
from engine.models.base import MLP, FeatureEncoder, MTLModel
from engine.models.mmoe import MMoE
from engine.models.omoe import OMoE
from engine.models.shared_bottom import SharedBottom

#: index of one member's tensor inside a leaf (after the member dimension)
Index = tuple[Any, ...]

_threshold_backward = torch.ops.aten.threshold_backward
_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input


# ------------------------------------------------------------------------- autograd pieces


def _first_layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Layer 0 of K x G MLPs: x (In, B) shared by all, (K, In, B) per member or (K, G, In, B) per
    group; w (K, G, H, In); b (K, G, H) or None. Returns (K * G, H, B)."""
    K, G, H, n_in = w.shape
    if x.dim() == 2:
        w2 = w.reshape(K * G * H, n_in)
        out = torch.mm(w2, x) if b is None else torch.addmm(b.reshape(-1, 1), w2, x)
    elif x.dim() == 3:
        w3 = w.reshape(K, G * H, n_in)
        out = torch.bmm(w3, x) if b is None else torch.baddbmm(b.reshape(K, G * H, 1), w3, x)
    else:
        xg = x.reshape(K * G, n_in, x.shape[-1])
        w3 = w.reshape(K * G, H, n_in)
        out = torch.bmm(w3, xg) if b is None else torch.baddbmm(b.reshape(K * G, H, 1), w3, xg)
    return out.view(K * G, H, -1)


class _StackedMLP(torch.autograd.Function):
    """K members x G groups of same-shaped MLPs, feature-major, ReLU after every layer but the last
    (and after the last too when `relu_last`).

    forward(x, relu_last, has_bias, *tensors): `tensors` is w_0[, b_0], w_1[, b_1], ... with
    w_l (K, G, H_l, H_{l-1}) and b_l (K, G, H_l) where `has_bias[l]`; a layer without a bias has
    it folded into its weight (the input carries a row of ones). Returns (K, G, H_last, B).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, relu_last: bool, has_bias: tuple[bool, ...], *tensors: Any):  # type: ignore[override]
        layers = _split_layers(tensors, has_bias)
        K, G = layers[0][0].shape[:2]
        hs: list[torch.Tensor] = []
        h = x
        last = len(layers) - 1
        for i, (w, b) in enumerate(layers):
            if i == 0:
                h = _first_layer(x, w, b)
            else:
                w3 = w.reshape(K * G, w.shape[2], w.shape[3])
                h = torch.bmm(w3, h) if b is None else torch.baddbmm(b.reshape(K * G, -1, 1), w3, h)
            if i < last or relu_last:
                h.relu_()
            hs.append(h)
        ctx.relu_last = relu_last
        ctx.has_bias = has_bias
        ctx.save_for_backward(x, *tensors, *hs)
        return h.view(K, G, h.shape[1], h.shape[2])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        saved = ctx.saved_tensors
        has_bias = ctx.has_bias
        n_t = len(has_bias) + sum(has_bias)
        x, tensors, hs = saved[0], saved[1 : 1 + n_t], saved[1 + n_t :]
        layers = _split_layers(tensors, has_bias)
        K, G = layers[0][0].shape[:2]
        KG = K * G
        d = grad.reshape(KG, grad.shape[2], grad.shape[3])
        owned = False  # whether `d` is a buffer of ours (may be overwritten in place)
        grads: list[torch.Tensor | None] = [None] * n_t
        slot = n_t
        last = len(layers) - 1
        for i in range(last, -1, -1):
            w, b = layers[i]
            slot -= 2 if b is not None else 1
            if i < last or ctx.relu_last:
                if owned:
                    _threshold_backward_(d, hs[i], 0, grad_input=d)
                else:
                    d = _threshold_backward(d, hs[i], 0)
                    owned = True
            if b is not None:
                grads[slot + 1] = d.sum(-1).view(b.shape)
            if i > 0:
                h_in = hs[i - 1]
                grads[slot] = torch.bmm(d, h_in.transpose(1, 2)).view(w.shape)
                d = torch.bmm(w.reshape(KG, w.shape[2], w.shape[3]).transpose(1, 2), d)
                owned = True
                continue
            n_in = w.shape[3]
            B = d.shape[-1]
            if x.dim() == 2:
                flat = d.reshape(-1, B)
                grads[slot] = torch.mm(flat, x.t()).view(w.shape)
                dx = torch.mm(w.reshape(-1, n_in).t(), flat) if ctx.needs_input_grad[0] else None
            elif x.dim() == 3:
                per = d.reshape(K, -1, B)
                grads[slot] = torch.bmm(per, x.transpose(1, 2)).view(w.shape)
                dx = (
                    torch.bmm(w.reshape(K, -1, n_in).transpose(1, 2), per)
                    if ctx.needs_input_grad[0]
                    else None
                )
            else:
                xg = x.reshape(KG, n_in, B)
                grads[slot] = torch.bmm(d, xg.transpose(1, 2)).view(w.shape)
                dx = (
                    torch.bmm(w.reshape(KG, -1, n_in).transpose(1, 2), d).view(x.shape)
                    if ctx.needs_input_grad[0]
                    else None
                )
            return (dx, None, None, *grads)
        raise AssertionError("unreachable")


def _split_layers(
    tensors: Sequence[torch.Tensor], has_bias: tuple[bool, ...]
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    i = 0
    for hb in has_bias:
        w = tensors[i]
        b = tensors[i + 1] if hb else None
        out.append((w, b))
        i += 2 if hb else 1
    return out


def stacked_mlp(x: torch.Tensor, layers: Sequence[tuple[torch.Tensor, torch.Tensor | None]], relu_last: bool):
    """Run K x G MLPs (see `_StackedMLP`); returns (K, G, H_last, B)."""
    flat: list[torch.Tensor] = []
    for w, b in layers:
        flat.append(w)
        if b is not None:
            flat.append(b)
    return _StackedMLP.apply(x, relu_last, tuple(b is not None for _, b in layers), *flat)


#: Bytes of one member chunk's mixed output that the gate mixing works on at a time: each chunk
#: is read and written once per expert, so it should stay in the core's cache (L2).
MIX_CHUNK_BYTES = 1 << 20


def _mix_chunks(K: int, bytes_per_member: int) -> list[slice]:
    n = max(1, MIX_CHUNK_BYTES // max(bytes_per_member, 1))
    return [slice(a, min(a + n, K)) for a in range(0, K, n)]


class _GateMix(torch.autograd.Function):
    """Gate-weighted sum of expert outputs, feature-major: g (K, T, E, B), f (K, E, H, B) ->
    (K, T, H, B) with out[k, t, :, b] = sum_e g[k, t, e, b] f[k, e, :, b]; a few members at a
    time (`MIX_CHUNK_BYTES`)."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, f: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(g, f)
        K, T, E, B = g.shape
        out = torch.empty((K, T, f.shape[2], B), dtype=f.dtype, device=f.device)
        for c in _mix_chunks(K, out[0].numel() * out.element_size()):
            o, gc, fc = out[c], g[c], f[c]
            torch.mul(gc[:, :, 0].unsqueeze(2), fc[:, 0].unsqueeze(1), out=o)
            for e in range(1, E):
                o.addcmul_(gc[:, :, e].unsqueeze(2), fc[:, e].unsqueeze(1))
        return out

    @staticmethod
    def backward(ctx: Any, d: torch.Tensor):  # type: ignore[override]
        g, f = ctx.saved_tensors
        K, T, E = g.shape[:3]
        d = d.contiguous()
        df = torch.empty_like(f) if ctx.needs_input_grad[1] else None
        dg = torch.empty_like(g) if ctx.needs_input_grad[0] else None
        chunks = _mix_chunks(K, d[0].numel() * d.element_size())
        tmp = torch.empty_like(d[chunks[0]]) if dg is not None else None
        for c in chunks:
            dc, gc, fc = d[c], g[c], f[c]
            if df is not None:
                for e in range(E):
                    out = df[c, e]
                    torch.mul(dc[:, 0], gc[:, 0, e].unsqueeze(1), out=out)
                    for t in range(1, T):
                        out.addcmul_(dc[:, t], gc[:, t, e].unsqueeze(1))
            if dg is not None and tmp is not None:
                tc = tmp[: dc.shape[0]]
                for e in range(E):
                    torch.mul(dc, fc[:, e].unsqueeze(1), out=tc)
                    torch.sum(tc, dim=2, out=dg[c, :, e])
        return dg, df


# --------------------------------------------------------------------------------- losses


def batched_task_losses(
    tasks: Sequence[TaskSpec],
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
) -> torch.Tensor:
    """(K, T) per-member task losses, `MTLModel.task_losses` over a leading member dimension.

    outputs: task -> (K, B) or (K, B, C); targets and masks: task -> (B,) (one batch for all
    members) or (K, B). Rows outside a task's mask do not count (mean over the rows that do)."""
    cols = []
    for task in tasks:
        out = outputs[task.name]
        K, B = out.shape[0], out.shape[1]
        y = targets[task.name]
        if task.kind == "binary":
            loss = F.binary_cross_entropy_with_logits(out, y.float().expand(K, B), reduction="none")
        elif task.kind == "regression":
            loss = F.mse_loss(out, y.float().expand(K, B), reduction="none")
        else:
            loss = F.cross_entropy(
                out.reshape(K * B, -1), y.long().expand(K, B).reshape(-1), reduction="none"
            ).view(K, B)
        mask = masks.get(task.name)
        if mask is None:
            cols.append(loss.sum(dim=1) / max(B, 1))
        else:
            m = mask.bool().expand(K, B)
            count = m.sum(dim=1).clamp_min(1).to(loss.dtype)
            cols.append(torch.where(m, loss, torch.zeros_like(loss)).sum(dim=1) / count)
    return torch.stack(cols, dim=1)


# ------------------------------------------------------------------------------ the model


def _mlp_linears(mlp: nn.Module, prefix: str, relu_last: bool) -> list[str] | None:
    """State-dict prefixes of an `MLP`'s linear layers, in order; None unless it is exactly
    Linear (ReLU Linear)* with a ReLU after the last when `relu_last` (no dropout, no others)."""
    if not isinstance(mlp, MLP):
        return None
    kids = list(mlp.named_children())
    names: list[str] = []
    i = 0
    while i < len(kids):
        name, mod = kids[i]
        if type(mod) is not nn.Linear or mod.bias is None:
            return None
        names.append(f"{prefix}.{name}")
        i += 1
        if i < len(kids):
            if type(kids[i][1]) is not nn.ReLU:
                return None
            i += 1
            if i == len(kids) and not relu_last:
                return None
        elif relu_last:
            return None
    return names or None


class StackedMoE:
    """K members of one shared-bottom, OMoE or MMoE model as leaves and a hand-batched forward.

    `bottom` is the expert bank (E experts; shared-bottom's bottom is one expert), `gates` is
    "none" (shared-bottom), "shared" (OMoE: one gate for all tasks) or "task" (MMoE)."""

    def __init__(
        self, models: Sequence[MTLModel], gates: str, expert_prefixes: list[str], n_gates: int
    ) -> None:
        m0 = models[0]
        self.k = len(models)
        self.tasks = list(m0.tasks)
        self.gates = gates
        self.n_experts = len(expert_prefixes)
        enc: FeatureEncoder = m0.encoder  # type: ignore[assignment]
        self.features = enc.features
        self.n_in = enc.out_dim
        self.layout: dict[str, tuple[str, Index]] = {}
        self.leaf_shapes: dict[str, tuple[int, ...]] = {}
        # embeddings: one leaf per categorical column
        for j, emb in enumerate(enc.embeddings):
            self._add(f"emb{j}", tuple(emb.weight.shape), {f"encoder.embeddings.{j}.weight": ()})
        # experts (or the bottom): layer 0 with the bias folded in as the last input column
        expert_layers = [_mlp_linears(_get(m0, p), p, relu_last=True) for p in expert_prefixes]
        tower_layers = [
            _mlp_linears(m0.towers[t], f"towers.{t}", relu_last=False) for t in range(len(self.tasks))
        ]  # type: ignore[index]
        if any(x is None for x in expert_layers + tower_layers):
            raise _NotStackable("an expert or tower is not a plain ReLU MLP")
        self.n_expert_layers = len(expert_layers[0])  # type: ignore[arg-type]
        self.n_tower_layers = len(tower_layers[0])  # type: ignore[arg-type]
        params = dict(m0.named_parameters())
        for layer in range(self.n_expert_layers):
            names = [e[layer] for e in expert_layers]  # type: ignore[index]
            self._add_linear(f"expert{layer}", names, params, fold_bias=layer == 0)
        if gates != "none":
            gate_names = ["gates." + str(t) for t in range(n_gates)] if gates == "task" else ["gate"]
            self._add_linear("gate", gate_names, params, fold_bias=True)
        for layer in range(self.n_tower_layers):
            names = [t[layer] for t in tower_layers]  # type: ignore[index]
            self._add_linear(f"tower{layer}", names, params, fold_bias=False)
        state_keys = set(m0.state_dict().keys())
        if state_keys != set(self.layout):
            raise _NotStackable(f"state entries not covered: {sorted(state_keys ^ set(self.layout))}")
        self.leaves: dict[str, torch.Tensor] = self.pack_states([m.state_dict() for m in models])
        self._trunk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        for v in self.leaves.values():
            v.requires_grad_(True)

    # ---- layout ---------------------------------------------------------------------------

    def _add(self, leaf: str, shape: tuple[int, ...], entries: dict[str, Index]) -> None:
        self.leaf_shapes[leaf] = shape
        for name, idx in entries.items():
            self.layout[name] = (leaf, idx)

    def _add_linear(
        self, leaf: str, prefixes: list[str], params: dict[str, nn.Parameter], fold_bias: bool
    ) -> None:
        shapes = {tuple(params[f"{p}.weight"].shape) for p in prefixes}
        if len(shapes) != 1:
            raise _NotStackable(f"{leaf}: layers of different shapes {sorted(shapes)}")
        out_dim, in_dim = shapes.pop()
        G = len(prefixes)
        if fold_bias:
            entries: dict[str, Index] = {}
            for g, p in enumerate(prefixes):
                entries[f"{p}.weight"] = (g, slice(None), slice(0, in_dim))
                entries[f"{p}.bias"] = (g, slice(None), in_dim)
            self._add(leaf, (G, out_dim, in_dim + 1), entries)
        else:
            self._add(
                leaf + ".w", (G, out_dim, in_dim), {f"{p}.weight": (g,) for g, p in enumerate(prefixes)}
            )
            self._add(leaf + ".b", (G, out_dim), {f"{p}.bias": (g,) for g, p in enumerate(prefixes)})

    def pack_states(self, states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Leaves from K state_dicts (one per member)."""
        ref = next(iter(states[0].values()))
        leaves = {
            leaf: torch.zeros((len(states), *shape), dtype=ref.dtype, device=ref.device)
            for leaf, shape in self.leaf_shapes.items()
        }
        with torch.no_grad():
            for k, st in enumerate(states):
                for name, (leaf, idx) in self.layout.items():
                    leaves[leaf][(k, *idx)] = st[name]
        return leaves

    def pack(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Leaves from a per-name dict of (K, ...) tensors."""
        ref = next(iter(named.values()))
        K = ref.shape[0]
        leaves = {
            leaf: torch.zeros((K, *shape), dtype=ref.dtype, device=ref.device)
            for leaf, shape in self.leaf_shapes.items()
        }
        with torch.no_grad():
            for name, (leaf, idx) in self.layout.items():
                leaves[leaf][(slice(None), *idx)] = named[name]
        return leaves

    def unpack(self, leaves: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per-name (K, ...) views of the leaves (state-dict names of one member); with `leaves`
        given, of those leaves only (names in other leaves are left out)."""
        lv = self.leaves if leaves is None else leaves
        return {
            name: lv[leaf][(slice(None), *idx)] for name, (leaf, idx) in self.layout.items() if leaf in lv
        }

    # ---- forward --------------------------------------------------------------------------

    def _input(
        self, feats: dict[str, torch.Tensor], batched: bool, lv: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The encoder output with a row of ones, feature-major: (In + 1, B) when every member
        reads the same rows through the same (no) embeddings, else (K, In + 1, B)."""
        fs = self.features
        K = self.k
        if not fs.n_cat:
            dense = feats["dense"]
            ones = torch.ones((*dense.shape[:-1], 1), dtype=dense.dtype, device=dense.device)
            return torch.cat([dense, ones], dim=-1).transpose(-1, -2)
        parts: list[torch.Tensor] = []
        cat = feats["cat"]
        B = cat.shape[-2]
        if fs.n_dense:
            dense = feats["dense"]
            parts.append(dense if batched else dense.unsqueeze(0).expand(K, B, dense.shape[-1]))
        for j in range(fs.n_cat):
            table = lv[f"emb{j}"]  # (K, card, d)
            if batched:
                rows = torch.arange(K, device=cat.device).unsqueeze(1)
                parts.append(table[rows, cat[:, :, j]])
            else:
                parts.append(table[:, cat[:, j]])
        ref = parts[0]
        parts.append(torch.ones((K, B, 1), dtype=ref.dtype, device=ref.device))
        return torch.cat(parts, dim=-1).transpose(1, 2)

    def outputs(
        self,
        feats: dict[str, torch.Tensor],
        batched: bool,
        leaves: dict[str, torch.Tensor] | None = None,
        keep_trunk: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Raw outputs of every member, task -> (K, B) (or (K, B, C) for multiclass). With
        `keep_trunk` (MMoE, no embeddings) the expert outputs and gates are kept for
        `trunk_grads`."""
        lv = self.leaves if leaves is None else leaves
        K = self.k
        self._trunk = None
        x = self._input(feats, batched, lv)
        layers = [(lv["expert0"], None)] + [
            (lv[f"expert{i}.w"], lv[f"expert{i}.b"]) for i in range(1, self.n_expert_layers)
        ]
        f = stacked_mlp(x, layers, relu_last=True)  # (K, E, H, B)
        if self.gates == "none":
            h = f.view(K, f.shape[2], f.shape[3])
        else:
            logits = stacked_mlp(x, [(lv["gate"], None)], relu_last=False)  # (K, T or 1, E, B)
            g = torch.softmax(logits, dim=2)
            mixed = _GateMix.apply(g, f)  # (K, T or 1, H, B)
            h = mixed.view(K, mixed.shape[2], mixed.shape[3]) if self.gates == "shared" else mixed
            if keep_trunk and self.gates == "task" and not self.features.n_cat and leaves is None:
                self._trunk = (f, g, mixed)
        towers = [(lv[f"tower{i}.w"], lv[f"tower{i}.b"]) for i in range(self.n_tower_layers)]
        o = stacked_mlp(h, towers, relu_last=False)  # (K, T, C, B)
        out: dict[str, torch.Tensor] = {}
        for t, task in enumerate(self.tasks):
            ot = o[:, t]
            out[task.name] = ot[:, 0] if task.output_dim == 1 else ot.transpose(1, 2)
        return out

    def trunk_grads(
        self, losses: torch.Tensor
    ) -> tuple[list[dict[str, torch.Tensor | None]], dict[str, torch.Tensor | None]] | None:
        """Per-task gradients of the experts and the summed gradients of the heads (gates and
        towers, whose slice t only task t reaches), for the `losses` of the last forward pass run
        with `keep_trunk` (None when there is no kept trunk; the caller then takes one backward
        pass per task).

        The chain rule split at the experts' outputs (as `engine.gradients`' trunk route): one
        backward pass through the heads gives every task's gradient at its mixture,
        d mix_t; task t's gradient at expert e's output is then g_{t,e} * d mix_t, and one
        backward pass per task through the experts carries it to their parameters. Each head
        is traversed once instead of once per task."""
        if self._trunk is None:
            return None
        f, g, mixed = self._trunk
        self._trunk = None
        experts = [n for n in self.leaves if n.startswith("expert")]
        heads = [n for n in self.leaves if not n.startswith("expert")]
        got = torch.autograd.grad(
            losses.sum(), [mixed] + [self.leaves[n] for n in heads], retain_graph=True, allow_unused=True
        )
        d_mix = got[0]
        T = g.shape[1]
        per_task: list[dict[str, torch.Tensor | None]] = []
        for t in range(T):
            d_f = g[:, t].unsqueeze(2) * d_mix[:, t].unsqueeze(1)  # (K, E, H, B)
            gt = torch.autograd.grad(
                f,
                [self.leaves[n] for n in experts],
                grad_outputs=d_f,
                retain_graph=t < T - 1,
                allow_unused=True,
            )
            per_task.append(dict(zip(experts, gt, strict=True)))
        return per_task, dict(zip(heads, got[1:], strict=True))


class _NotStackable(Exception):
    pass


def _get(model: nn.Module, path: str) -> nn.Module:
    mod = model
    for part in path.split("."):
        mod = getattr(mod, part) if not part.isdigit() else mod[int(part)]  # type: ignore[index]
    return mod


def stack_models(models: Sequence[MTLModel]) -> StackedMoE | None:
    """The hand-batched population of these models, or None when this module does not know them
    exactly (the caller then batches with vmap)."""
    if not models:
        return None
    cls = type(models[0])
    if any(type(m) is not cls for m in models):
        return None
    if cls.task_losses is not MTLModel.task_losses or cls.training_losses is not MTLModel.training_losses:
        return None
    m0 = models[0]
    if any(True for _ in m0.buffers()) or not isinstance(getattr(m0, "encoder", None), FeatureEncoder):
        return None
    if type(m0.encoder) is not FeatureEncoder:  # type: ignore[attr-defined]
        return None
    try:
        if cls is MMoE:
            n = len(m0.experts)  # type: ignore[arg-type]
            return StackedMoE(models, "task", [f"experts.experts.{i}" for i in range(n)], len(m0.tasks))
        if cls is OMoE:
            n = len(m0.experts)  # type: ignore[arg-type]
            return StackedMoE(models, "shared", [f"experts.experts.{i}" for i in range(n)], 1)
        if cls is SharedBottom:
            return StackedMoE(models, "none", ["bottom"], 0)
    except _NotStackable:
        return None
    return None
