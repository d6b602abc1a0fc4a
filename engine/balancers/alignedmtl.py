"""Aligned-MTL (Senushkin, Patakin, Kuznetsov, Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023, Algorithm 1).

The gradient system J (T x P) is replaced by one with equal singular values: with the
eigendecomposition G = J J^T = V diag(lambda) V^T, keep the eigenvalues above
tol = max(lambda) T eps (rank r) and set

    B = sqrt(lambda_min) V_r diag(lambda_r)^(-1/2) V_r^T,   aligned system J' = B J,

whose non-zero singular values all equal sigma_min = sqrt(lambda_min) (the paper's scale: the
smallest singular value; `scale_mode` also offers the median (the lower one for an even count, as
torch.median) and the mean eigenvalue, the latter being what torchjd says the original code
used). The update is sum_t pref_t (B J)_t with
pref = 1 (LibMTL's `B.sum(0)`), so the weights are B @ 1. With no eigenvalue above tol
(all gradients zero) B = I.

torchjd's `AlignedMTLWeighting` uses the same B with pref = 1/T: its weights are these divided
by T. The weights do not depend on the gradients' scale (B is homogeneous of degree 0 in G), so
they are solved on the Gramian of J / s (`GradientAggregation.weights_from_scaled_gramian`), which
does not underflow for gradients of 1e-161 as J J^T does.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation


def balance_transformation(G: np.ndarray, scale_mode: str = "min") -> tuple[np.ndarray, int]:
    """(B, rank): B = sqrt(scale) V_r diag(lambda_r)^(-1/2) V_r^T, scale from `scale_mode`."""
    G = np.asarray(G, dtype=np.float64)
    G = 0.5 * (G + G.T)
    T = G.shape[0]
    if T == 0:
        return np.zeros((0, 0)), 0
    lam, V = np.linalg.eigh(G)
    tol = float(lam.max()) * T * np.finfo(np.float64).eps
    keep = lam > tol
    rank = int(keep.sum())
    if rank == 0:
        return np.eye(T), 0
    lam, V = lam[keep], V[:, keep]
    if scale_mode == "min":
        scale = float(lam.min())
    elif scale_mode == "median":
        scale = float(np.sort(lam)[(lam.size - 1) // 2])  # the lower median, as torch.median
    elif scale_mode == "rmse":
        scale = float(lam.mean())
    else:
        raise ValueError(f"unknown scale_mode {scale_mode!r}")
    B = np.sqrt(scale) * (V / np.sqrt(lam)) @ V.T
    return B, rank


class AlignedMTL(GradientAggregation):
    """Senushkin et al., CVPR 2023: make the task-gradient system's singular values equal (to
    the smallest one) through the eigendecomposition of G, then sum the aligned gradients."""

    name = "alignedmtl"
    description = "Aligned-MTL: rebalances the task gradients so that none dominates (equal singular values)."

    class Params(BalancerParams):
        scale_mode: Literal["min", "median", "rmse"] = Field(
            "min", description="common singular value: the smallest (paper), median or mean eigenvalue's root"
        )

    params: Params

    def weights_degree(self) -> int:
        return 0

    def internals_degrees(self) -> dict[str, int]:
        return {"sigma_min": 1}

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gd = G.detach().double().cpu().numpy()
        T = Gd.shape[0]
        if not np.all(np.isfinite(Gd)):
            return torch.full((T,), float("nan"), device=G.device, dtype=G.dtype)
        B, rank = balance_transformation(Gd, self.params.scale_mode)
        w = B @ np.ones(T)
        lam = np.linalg.eigvalsh(0.5 * (Gd + Gd.T)) if T else np.zeros(0)
        self.last_internals = {"rank": float(rank)}
        if rank:
            kept = lam[-rank:]
            self.last_internals["sigma_min"] = float(np.sqrt(max(kept.min(), 0.0)))
            self.last_internals["condition"] = float(np.sqrt(kept.max() / kept.min()))
        return torch.as_tensor(w, device=G.device, dtype=G.dtype)
