"""GradVac, gradient vaccine (Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and
Improving Multi-task Optimization in Massively Multilingual Models", ICLR 2021).

PCGrad with a target instead of orthogonality. For each task i, visit the other tasks j in random
order; with g_i' the running (already corrected) gradient of task i and phi = cos(g_i', g_j), if
phi < phi_hat_ij (the target), add the multiple of g_j that brings the cosine up to the target:

    g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2)) g_j

Then (whether or not it corrected) phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi, with phi_hat
starting at 0 (so the first step is PCGrad-like) and beta = 0.01 (the paper's value). The update
is sum_i g_i'.

Everything runs on the Gramian, as in PCGrad here (and torchjd's `GradVacWeighting`):
g_i' = C_i J, ||g_i'||^2 = C_i G C_i, g_i' . g_j = (C_i G)_j, and the weights are C.sum(0).

Per-block versus whole model: the paper keeps one target per (i, j) and per layer in its
multilingual models (LibMTL offers `whole_model`, `all_layer`, `all_matrix` groupings). Seesaw
applies GradVac to all shared parameters at once (`whole_model`, LibMTL's default): a per-block
update is not a combination weights @ J of the task gradients, which the Seesaw contract and the
logged task weights rely on, and the trainer's shared parameters carry no layer structure that
every architecture agrees on.

Degenerate pairs: no correction and no target update when a norm is (numerically) zero (the cosine
is undefined): a zero g_j (`ZERO_NORM`, the cut-off shared by the Gramian-based balancers), or a
g_i' that earlier corrections cancelled to rounding noise (||g_i'||^2 <= 1e-12 (sum_k |C_ik|
||g_k||)^2, e.g. g_j = -g_i with a target above -1); likewise when the target's
sqrt(1 - phi_hat^2) <= 1e-12 (a target cosine of 1 cannot be reached by adding a finite multiple
of g_j). Cosines are clipped to [-1, 1].

Order: for every step, T x T uniform keys are drawn from a generator seeded once; task i visits
the others by increasing key. The keys are indexed by the tasks' *names* (sorted rank), so
listing the tasks in another order changes nothing; `random_order=False` visits 0..T-1.

Scale: the coefficients are ratios of norms and the cosines scale-free, so the weights are solved
on the Gramian of J / s (`GradientAggregation.weights_from_scaled_gramian`), which does not
underflow for gradients of 1e-161 as J J^T does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from engine.balancers.base import BalancerParams, GradientAggregation
from engine.balancers.numerics import nonzero_gradients

CANCELLED = 1e-12  # ||g_i'||^2 below this times (sum_k |C_ik| ||g_k||)^2 is cancellation noise


class GradVac(GradientAggregation):
    """Wang et al., ICLR 2021: raise each pair's gradient cosine to an EMA target (beta = 0.01)
    by adding a multiple of the other gradient, then sum (whole-model variant)."""

    name = "gradvac"
    description = "GradVac: pulls each pair of task gradients toward their usual agreement (EMA target)."

    class Params(BalancerParams):
        beta: float = Field(0.01, ge=0.0, le=1.0, description="EMA rate of the target cosines")
        seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random visiting order")
        random_order: bool = Field(True, description="visit the other tasks in random order (else 0..T-1)")

    params: Params

    def __init__(self, task_names: list[str], params: BalancerParams) -> None:
        super().__init__(task_names, params)
        self._rng = np.random.default_rng(self.params.seed)
        order = sorted(range(self.n_tasks), key=lambda i: self.task_names[i])
        self._rank = np.empty(self.n_tasks, dtype=np.int64)
        self._rank[order] = np.arange(self.n_tasks)
        self.targets = np.zeros((self.n_tasks, self.n_tasks))  # phi_hat[i, j]

    def _orders(self) -> list[list[int]]:
        T = self.n_tasks
        if not self.params.random_order:
            return [[j for j in range(T) if j != i] for i in range(T)]
        keys = self._rng.random((T, T))[np.ix_(self._rank, self._rank)]
        return [sorted((j for j in range(T) if j != i), key=lambda j, i=i: keys[i, j]) for i in range(T)]

    def weights_degree(self) -> int:
        return 0

    def gramian_weights(self, G: torch.Tensor) -> torch.Tensor:
        Gn = G.detach().double().cpu().numpy()
        Gn = 0.5 * (Gn + Gn.T)
        T = Gn.shape[0]
        diag = np.clip(np.diag(Gn), 0.0, None)
        usable = nonzero_gradients(diag)
        norms = np.sqrt(diag)
        beta = self.params.beta
        C = np.eye(T)
        corrections = 0
        for i, order in enumerate(self._orders()):
            if not usable[i]:
                continue
            cG = C[i] @ Gn  # g_i' . g_k for every k
            for j in order:
                norm_sq = float(cG @ C[i])
                if not usable[j] or norm_sq <= CANCELLED * float(np.abs(C[i]) @ norms) ** 2:
                    continue  # g_j = 0, or g_i' cancelled to rounding noise: no cosine to speak of
                norm_i = math.sqrt(norm_sq)
                phi = min(max(float(cG[j]) / (norm_i * norms[j]), -1.0), 1.0)
                target = float(self.targets[i, j])
                root_target = math.sqrt(max(1.0 - target * target, 0.0))
                if phi < target and root_target > 1e-12:
                    root_phi = math.sqrt(max(1.0 - phi * phi, 0.0))
                    coef = norm_i * (target * root_phi - phi * root_target) / (norms[j] * root_target)
                    C[i, j] += coef
                    cG = cG + coef * Gn[j]
                    corrections += 1
                self.targets[i, j] = (1.0 - beta) * target + beta * phi
        self.last_internals = {"corrections": float(corrections)}
        if T > 1:
            off = ~np.eye(T, dtype=bool)
            self.last_internals["mean_target"] = float(self.targets[off].mean())
        return torch.as_tensor(C.sum(axis=0), device=G.device, dtype=G.dtype)
