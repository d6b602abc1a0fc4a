"""Building blocks for behaviour-sequence models (DTRN and later sequence-aware architectures).

- `conditional_layer_norm` / `ConditionalLayerNorm`: layer norm whose scale and shift are
  modulated per condition: CLN(X) = gamma_c * gamma * (X - mu) / sigma + beta_c + beta, with
  gamma_c = 1 + h_gamma and beta_c = h_beta, so a zero modulation (h = 0) is exactly the plain
  layer norm with the module's own gamma and beta.
- `HyperNetwork`: two 2-layer ReLU MLPs mapping a condition vector to (h_gamma, h_beta) for
  every conditional layer norm of a network.
- `ConditionalTransformerEncoder`: post-LN transformer encoder layers (self-attention, FFN) whose
  layer norms are conditional; with no condition they are plain layer norms.
- `masked_mean`, `TargetAttentionPooling`: sequence pooling with a key mask.
- `type_key_mask`: per behaviour type, which positions of a typed sequence hold that type.

Sequences follow `engine.datasets.base.SequenceSpec`: left-padded, 0 = padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conditional_layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    h_gamma: torch.Tensor | None = None,
    h_beta: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """CLN over the last dimension of x (N, ..., d). h_gamma, h_beta: (N, d) per-row modulation
    (broadcast over the middle dimensions) or None for the plain layer norm."""
    d = x.shape[-1]
    if h_gamma is None and h_beta is None:
        return F.layer_norm(x, (d,), weight, bias, eps)
    normed = F.layer_norm(x, (d,), None, None, eps)
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (d,)
    gamma_c = 1.0 + (h_gamma.reshape(shape) if h_gamma is not None else 0.0)
    beta_c = h_beta.reshape(shape) if h_beta is not None else 0.0
    return gamma_c * weight * normed + beta_c + bias


class ConditionalLayerNorm(nn.Module):
    """Layer norm with its own gamma (ones) and beta (zeros), optionally modulated per row."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(
        self, x: torch.Tensor, h_gamma: torch.Tensor | None = None, h_beta: torch.Tensor | None = None
    ) -> torch.Tensor:
        return conditional_layer_norm(x, self.weight, self.bias, h_gamma, h_beta, self.eps)


class HyperNetwork(nn.Module):
    """Two 2-layer ReLU MLPs: condition (N, c) -> h_gamma, h_beta, each (N, n_norms, d).

    The output layers start small (weights scaled by `init_scale`), so training starts near the
    plain layer norm while every condition already gets its own modulation."""

    def __init__(self, cond_dim: int, hidden: int, n_norms: int, dim: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.n_norms, self.dim = n_norms, dim
        self.gamma_net = nn.Sequential(
            nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_norms * dim)
        )
        self.beta_net = nn.Sequential(
            nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_norms * dim)
        )
        with torch.no_grad():
            for net in (self.gamma_net, self.beta_net):
                out = net[-1]
                assert isinstance(out, nn.Linear)
                out.weight.mul_(init_scale)
                out.bias.mul_(init_scale)

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (cond.shape[0], self.n_norms, self.dim)
        return self.gamma_net(cond).reshape(shape), self.beta_net(cond).reshape(shape)


class ConditionalEncoderLayer(nn.Module):
    """Post-LN transformer encoder layer: X = CLN1(X + MHA(X)); X = CLN2(X + FFN(X)).

    Split in two so that inputs shared by several conditions attend once: `attend` (the
    unconditioned part, X + MHA(X)) and `finish` (the two conditional norms and the FFN)."""

    def __init__(self, dim: int, n_heads: int, ff_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, dim))
        self.norm1 = ConditionalLayerNorm(dim)
        self.norm2 = ConditionalLayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """x (N, L, d); key_padding_mask (N, L) True = ignore (every row keeps >= 1 key)."""
        a, _ = self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)
        return x + self.drop(a)

    def finish(
        self, y: torch.Tensor, h_gamma: torch.Tensor | None = None, h_beta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """y = attend(x); h_gamma, h_beta (N, 2, d) or None (plain layer norms)."""
        x = self.norm1(y, _norm(h_gamma, 0), _norm(h_beta, 0))
        return self.norm2(x + self.drop(self.ff(x)), _norm(h_gamma, 1), _norm(h_beta, 1))

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor,
        h_gamma: torch.Tensor | None = None,
        h_beta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.finish(self.attend(x, key_padding_mask), h_gamma, h_beta)


def _norm(h: torch.Tensor | None, i: int) -> torch.Tensor | None:
    return h[:, i] if h is not None else None


class ConditionalTransformerEncoder(nn.Module):
    """A stack of `ConditionalEncoderLayer`s; layer norm l (2 per layer) reads h[:, l]."""

    def __init__(self, dim: int, n_heads: int, ff_dim: int, n_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConditionalEncoderLayer(dim, n_heads, ff_dim, dropout) for _ in range(n_layers)
        )

    @property
    def n_norms(self) -> int:
        return 2 * len(self.layers)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor,
        h_gamma: torch.Tensor | None = None,
        h_beta: torch.Tensor | None = None,
        repeats: int = 1,
    ) -> torch.Tensor:
        """x (N, L, d), key_padding_mask (N, L). With `repeats` R > 1 every input row serves R
        conditions: h_gamma, h_beta are (N * R, n_norms, d) with row n * R + r for condition r
        of input n, and the output is (N * R, L, d). The first attention, which no condition
        touches, then runs once per input row: the result equals repeating x R times first."""
        for i, layer in enumerate(self.layers):
            y = layer.attend(x, key_padding_mask)
            if i == 0 and repeats > 1:
                y = y.repeat_interleave(repeats, dim=0)
                key_padding_mask = key_padding_mask.repeat_interleave(repeats, dim=0)
            sl = slice(2 * i, 2 * i + 2)
            x = layer.finish(
                y,
                h_gamma[:, sl] if h_gamma is not None else None,
                h_beta[:, sl] if h_beta is not None else None,
            )
        return x


def type_key_mask(seq_types: torch.Tensor, seq_mask: torch.Tensor, n_types: int) -> torch.Tensor:
    """(B, L) typed sequence -> (B, K, L) bool: position holds behaviour type k+1 (K = n_types - 1;
    type 0 is padding)."""
    kinds = torch.arange(1, n_types, device=seq_types.device)
    return seq_mask.bool().unsqueeze(1) & (seq_types.unsqueeze(1) == kinds.view(1, -1, 1))


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of x (N, L, d) over positions where keep (N, L) is True; 0 for rows with none."""
    w = keep.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class TargetAttentionPooling(nn.Module):
    """Attention pooling with the target item as query: softmax_l(<W q, x_l> / sqrt(d)) over the
    kept positions; rows with no kept position pool to 0."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (N, L, d), target (N, d), keep (N, L) bool -> (N, d)."""
        scores = torch.einsum("nld,nd->nl", x, self.query(target)) * self.scale
        any_kept = keep.any(dim=1, keepdim=True)
        safe = keep | ~any_kept  # avoid an all -inf softmax; those rows are zeroed below
        w = torch.softmax(scores.masked_fill(~safe, float("-inf")), dim=1)
        return torch.einsum("nl,nld->nd", w, x) * any_kept.to(x.dtype)
