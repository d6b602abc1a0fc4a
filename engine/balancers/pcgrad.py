"""PCGrad (Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020).

For each task i, visit the other tasks j (in a random order, or 0..T-1 skipping i); when the
running projected gradient g_i' conflicts with the original g_j (g_i' . g_j < 0), remove that
component: g_i' -= (g_i' . g_j / ||g_j||^2) g_j. The update is sum_i g_i'.

Everything runs on the Gramian: g_i' = C_i J for a T x T coefficient matrix C (start I), and
g_i' . g_j = (C_i G)_j, so the update is exactly (C.sum(0)) @ J and C.sum(0) are the effective
weights. A task whose gradient is numerically zero (||g_j|| <= `ZERO_NORM` max_t ||g_t||, the
cut-off shared by the Gramian-based balancers, `numerics`) is never projected against: there is no
direction to remove, and 1 / ||g_j||^2 would blow the weights up. The weights are scale-invariant
(every coefficient is a ratio of Gramian entries), so they are solved on the Gramian of J / s
(`GradientAggregation.weights_from_scaled_gramian`): gradients of 1e-161 give those of 1.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation
from engine.balancers.numerics import nonzero_gradients


class PCGrad(GradientAggregation):
    """Yu et al., NeurIPS 2020: project each task gradient off the gradients it conflicts
    with, then sum. The visiting order comes from a generator seeded once and kept across steps."""

    name = "pcgrad"
    description = "PCGrad: drops the part of each task's gradient that fights another task, then sums."

    class Params(BalancerParams):
        seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random visiting order")
        random_order: bool = Field(True, description="visit the other tasks in random order (else 0..T-1)")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._rng = np.random.default_rng(self.params.seed)

    def _order(self, i: int) -> np.ndarray:
        others = np.array([j for j in range(self.n_tasks) if j != i], dtype=np.int64)
        return self._rng.permutation(others) if self.params.random_order else others

    def weights_degree(self) -> int:
        return 0

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gn = G.detach().double().cpu().numpy()
        T = Gn.shape[0]
        diag = np.diag(Gn)
        usable = nonzero_gradients(diag)
        C = np.eye(T)
        projections = 0
        for i in range(T):
            for j in self._order(i):
                dot = float(C[i] @ Gn[:, j])
                if usable[j] and dot < 0.0:
                    C[i, j] -= dot / diag[j]
                    projections += 1
        self.last_internals = {"projections": float(projections)}
        return torch.as_tensor(C.sum(axis=0), device=G.device, dtype=G.dtype)
