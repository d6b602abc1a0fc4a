"""Synthetic regression tasks with a controllable correlation (the MMoE paper's generator).

Ma, Zhao, Yi, Chen, Hong, Chi: "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018, section 3.2. For input dimension d and correlation p:
orthonormal u_1..u_T; w_1 = c u_1 and w_k = c (p u_1 + sqrt(1 - p^2) u_k) for k >= 2 (the paper
has T = 2; for T > 2 every pair (1, k) has cosine p and pairs (j, k), j, k >= 2, have p^2);
x ~ N(0, I_d); y_k = w_k.x + sum_{i=1..m} sin(alpha_i w_k.x + beta_i) + noise, with c = 1 and
alpha_i, beta_i ~ N(0, 1) fixed per dataset. The sine terms make the label correlation lower
than p, as in the paper; p is the correlation of the linear parts.

`data_seed` fixes alpha, beta, the u's and X, so two datasets that differ only in p share their
inputs. The run seed only picks the train/val/test split.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator

from engine.datasets.base import (
    Dataset,
    DatasetParams,
    FeatureSpec,
    MTLData,
    Split,
    TaskSpec,
    split_indices,
)


class SyntheticParams(DatasetParams):
    n_samples: int = Field(10_000, ge=100, le=2_000_000, description="rows generated")
    dim: int = Field(100, ge=2, le=10_000, description="input dimension d")
    correlation: float = Field(0.5, ge=-1.0, le=1.0, description="cosine p between the tasks' weight vectors")
    n_tasks: int = Field(2, ge=2, le=8, description="number of regression tasks")
    n_sines: int = Field(10, ge=0, le=100, description="sine terms m in each label")
    noise_std: float = Field(0.01, ge=0.0, le=10.0, description="label noise standard deviation")
    data_seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of alpha, beta, u's and X")

    @model_validator(mode="after")
    def _dim_fits_tasks(self) -> SyntheticParams:
        if self.dim < self.n_tasks:
            raise ValueError(f"dim ({self.dim}) must be at least n_tasks ({self.n_tasks})")
        return self


def task_weights(p: SyntheticParams) -> np.ndarray:
    """The (T, d) weight vectors w_k (c = 1), drawn from `data_seed`."""
    rng = np.random.default_rng([p.data_seed, 1])
    q, _ = np.linalg.qr(rng.standard_normal((p.dim, p.n_tasks)))
    u = q.T  # (T, d), orthonormal rows
    rho = p.correlation
    w = np.empty_like(u)
    w[0] = u[0]
    w[1:] = rho * u[0] + np.sqrt(max(0.0, 1.0 - rho * rho)) * u[1:]
    return w


def generate(p: SyntheticParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return X (N, d) float32, Y (N, T) float32 and the linear parts W X (N, T) float64."""
    w = task_weights(p)
    rng_ab = np.random.default_rng([p.data_seed, 2])
    alpha = rng_ab.standard_normal(p.n_sines)
    beta = rng_ab.standard_normal(p.n_sines)
    rng_x = np.random.default_rng([p.data_seed, 3])
    x = rng_x.standard_normal((p.n_samples, p.dim), dtype=np.float32)
    lin = (x @ w.T.astype(np.float32)).astype(np.float64)  # (N, T)
    y = lin.copy()
    for a, b in zip(alpha, beta, strict=True):
        y += np.sin(a * lin + b)
    rng_e = np.random.default_rng([p.data_seed, 4])
    y += p.noise_std * rng_e.standard_normal(y.shape)
    return x, y.astype(np.float32), lin


class SyntheticCorrelationDataset(Dataset):
    name = "synthetic-correlation"
    description = (
        "MMoE-paper synthetic regression tasks whose relatedness you set with one dial "
        "(correlation p from -1 to 1)."
    )
    Params = SyntheticParams

    def tasks(self, params: DatasetParams) -> list[TaskSpec]:
        assert isinstance(params, SyntheticParams)
        return [
            TaskSpec(
                f"task_{k + 1}",
                "regression",
                metrics=("mse", "mae"),
                description=f"y_{k + 1} = w_{k + 1}.x + sum of sines + noise",
            )
            for k in range(params.n_tasks)
        ]

    def load(self, params: DatasetParams, seed: int) -> MTLData:
        assert isinstance(params, SyntheticParams)
        x, y, lin = generate(params)
        tasks = self.tasks(params)
        features = FeatureSpec(dense_names=tuple(f"x{i}" for i in range(params.dim)))
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y)

        def split(idx: np.ndarray) -> Split:
            ti = torch.from_numpy(np.sort(idx))
            return Split(
                {"dense": xt[ti]},
                {t.name: yt[ti, k].contiguous() for k, t in enumerate(tasks)},
            )

        tr, va, te = split_indices(params.n_samples, seed)
        lin_corr = float(np.corrcoef(lin[:, 0], lin[:, 1])[0, 1])
        label_corr = float(np.corrcoef(y[:, 0], y[:, 1])[0, 1])
        info: dict[str, object] = {
            "correlation": params.correlation,
            "linear_part_correlation": lin_corr,
            "label_correlation_1_2": label_corr,
            "n_rows": params.n_samples,
            "source": "generated (Ma et al., KDD 2018, section 3.2)",
        }
        return MTLData(self.name, tasks, features, split(tr), split(va), split(te), info)
