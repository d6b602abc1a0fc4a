"""A two-objective toy problem on two parameters, for seeing gradient conflict in 2-D.

The problem is the one of the CAGrad paper (Liu, Liu, Jin, Stone, Liu, "Conflict-Averse
Gradient Descent for Multi-task Learning", NeurIPS 2021, Figure 1; reused by Nash-MTL, Navon et
al., ICML 2022, and FAMO, Liu et al., NeurIPS 2023), on theta = (x1, x2) in [-10, 10]^2:

    a1 = 0.5 (-x1 - 7) - tanh(-x2),        a2 = 0.5 (-x1 + 3) + tanh(-x2) + 2
    L_k = log(max(|a_k|, 5e-6)) + 6                                  (upper half: two valleys)
    Q1 = ((x1 - 7)^2 + 0.1 (x2 + 8)^2) / 10 - 20,   Q2 = ((x1 + 7)^2 + 0.1 (x2 + 8)^2) / 10 - 20
    c1 = max(tanh(x2 / 2), 0),   c2 = max(tanh(-x2 / 2), 0)
    f_k = c1 L_k + c2 Q_k

The upper half holds a narrow valley per task (x1 ~ -5 for f1, x1 ~ 5 for f2); the lower half a
bowl per task with minima near (7, -8.4) and (-7, -8.4). The Pareto set is the curve between the
two bowls' minima, at x2 ~ -8.4 (slightly below -8 because c2 < 1 rewards moving down).
Gradients are analytic (checked against finite differences and autograd in the tests).

`trajectory` runs the official toy's optimiser (Adam on the aggregated direction) with the
same aggregation code that trains Seesaw's models: each Seesaw balancer maps the 2 x 2 Gramian
of the task gradients to task weights (`gramian_weights`), and the step follows w @ J. A larger
learning rate (0.1 instead of the paper's 0.001) and a cosine decay make a trajectory a few
hundred to 1,500 steps instead of 100,000, so a lesson draws in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LOWER = 5e-6
BOUND = 10.0
TASKS: tuple[str, str] = ("task_1", "task_2")
#: The official toy's starting points (CAGrad repository, toy.py).
DEFAULT_STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
METHODS: tuple[str, ...] = ("ew", "mgda", "pcgrad", "cagrad", "nashmtl")
STEPS = 1500
LR = 0.1


def evaluate(
    x1: np.ndarray | float, x2: np.ndarray | float, scale: Sequence[float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f1, f2, J) at the points (x1, x2) (any matching shapes); J has shape (..., 2, 2) with
    J[..., k, :] the gradient of task k. `scale` multiplies each task's loss."""
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    t = np.tanh(x2)
    sech2 = 1.0 - t * t
    a1 = -0.5 * x1 - 3.5 + t
    a2 = -0.5 * x1 + 3.5 - t
    live1 = np.abs(a1) > LOWER  # where the clamp is inactive the log has a gradient
    live2 = np.abs(a2) > LOWER
    L1 = np.log(np.maximum(np.abs(a1), LOWER)) + 6.0
    L2 = np.log(np.maximum(np.abs(a2), LOWER)) + 6.0
    inv1 = np.where(live1, 1.0 / np.where(live1, a1, 1.0), 0.0)
    inv2 = np.where(live2, 1.0 / np.where(live2, a2, 1.0), 0.0)
    th = np.tanh(0.5 * x2)
    sh = 1.0 - th * th
    c1 = np.maximum(th, 0.0)
    c2 = np.maximum(-th, 0.0)
    dc1 = np.where(x2 > 0, 0.5 * sh, 0.0)
    dc2 = np.where(x2 < 0, -0.5 * sh, 0.0)
    q = 0.1 * (x2 + 8.0) ** 2
    Q1 = ((x1 - 7.0) ** 2 + q) / 10.0 - 20.0
    Q2 = ((x1 + 7.0) ** 2 + q) / 10.0 - 20.0
    f1 = c1 * L1 + c2 * Q1
    f2 = c1 * L2 + c2 * Q2
    g1 = np.stack(
        [
            -0.5 * inv1 * c1 + 0.2 * (x1 - 7.0) * c2,
            sech2 * inv1 * c1 + L1 * dc1 + 0.02 * (x2 + 8.0) * c2 + Q1 * dc2,
        ],
        axis=-1,
    )
    g2 = np.stack(
        [
            -0.5 * inv2 * c1 + 0.2 * (x1 + 7.0) * c2,
            -sech2 * inv2 * c1 + L2 * dc1 + 0.02 * (x2 + 8.0) * c2 + Q2 * dc2,
        ],
        axis=-1,
    )
    s1, s2 = float(scale[0]), float(scale[1])
    return s1 * f1, s2 * f2, np.stack([s1 * g1, s2 * g2], axis=-2)


@dataclass(frozen=True)
class Landscape:
    xs: np.ndarray  # (n,) grid of x1 (and x2)
    f1: np.ndarray  # (n, n): f1[i, j] at (x1 = xs[j], x2 = xs[i])
    f2: np.ndarray


def landscape(n: int = 121, scale: Sequence[float] = (1.0, 1.0)) -> Landscape:
    xs = np.linspace(-BOUND, BOUND, n)
    X1, X2 = np.meshgrid(xs, xs)
    f1, f2, _ = evaluate(X1, X2, scale)
    return Landscape(xs, f1, f2)


def nondominated_2d(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point beats on both objectives (minimisation),
    in O(n log n): sort by f1 (then f2) and keep each point whose f2 is a new running minimum."""
    a = np.asarray(f1, dtype=np.float64).ravel()
    b = np.asarray(f2, dtype=np.float64).ravel()
    order = np.lexsort((b, a))
    best = np.minimum.accumulate(b[order])
    keep_sorted = np.empty(len(order), dtype=bool)
    keep_sorted[0] = True
    keep_sorted[1:] = b[order][1:] < best[:-1]
    mask = np.zeros(len(a), dtype=bool)
    mask[order[keep_sorted]] = True
    return mask


def pareto_set(n: int = 801) -> np.ndarray:
    """(m, 2) grid points of [-10, 10]^2 that are Pareto-optimal among the grid, ordered by x1.

    On an 801 x 801 grid (spacing 0.025) this traces the Pareto set to within a grid step.
    Scaling a task's loss by a positive constant does not move the Pareto set.
    """
    xs = np.linspace(-BOUND, BOUND, n)
    X1, X2 = np.meshgrid(xs, xs)
    f1, f2, _ = evaluate(X1, X2)
    mask = nondominated_2d(f1, f2)
    pts = np.stack([X1.ravel()[mask], X2.ravel()[mask]], axis=1)
    return pts[np.argsort(pts[:, 0], kind="stable")]


def distance_to_set(points: np.ndarray, pset: np.ndarray) -> np.ndarray:
    """Euclidean distance of each point (k, 2) to the nearest point of `pset` (m, 2)."""
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    d = np.sqrt(((p[:, None, :] - pset[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1)


def min_norm(J: np.ndarray) -> float:
    """Norm of the min-norm point of the convex hull of the two task gradients: 0 exactly when
    the point is Pareto-stationary (no direction improves both tasks)."""
    from engine.balancers.solvers import min_norm_simplex

    G = J @ J.T
    w = min_norm_simplex(G)
    return float(np.sqrt(max(float(w @ G @ w), 0.0)))


def _weights_fn(method: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """G (2x2 numpy) -> task weights (2,), from the Seesaw balancer `method`."""
    import torch

    from engine.balancers import build_balancer

    params = {"seed": seed} if method == "pcgrad" else None
    bal = build_balancer(method, list(TASKS), params)
    gram = getattr(bal, "gramian_weights", None)
    if gram is None:  # a loss weighting: constant weights here (EW: the sum of the losses)
        losses = torch.ones(len(TASKS), dtype=torch.float64)
        w = bal.weights(losses, None).detach().double().numpy()  # type: ignore[attr-defined]
        return lambda G: w

    def fn(G: np.ndarray) -> np.ndarray:
        return gram(torch.as_tensor(G, dtype=torch.float64)).detach().double().numpy()

    return fn


def trajectory(
    method: str,
    start: Sequence[float],
    steps: int = STEPS,
    lr: float = LR,
    scale: Sequence[float] = (1.0, 1.0),
    seed: int = 0,
) -> np.ndarray:
    """The (steps + 1, 2) path of Adam (betas 0.9, 0.999) on the direction of balancer `method`
    from `start`, with a cosine-decayed learning rate, kept inside [-10, 10]^2."""
    weights = _weights_fn(method, seed)
    x = np.asarray(start, dtype=np.float64).copy()
    m = np.zeros(2)
    v = np.zeros(2)
    b1, b2, eps = 0.9, 0.999, 1e-8
    out = np.empty((steps + 1, 2))
    out[0] = x
    for k in range(1, steps + 1):
        _, _, J = evaluate(x[0], x[1], scale)
        w = weights(J @ J.T)
        g = np.nan_to_num(np.asarray(w, dtype=np.float64) @ J)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_lr = lr * 0.5 * (1.0 + np.cos(np.pi * k / steps))
        x = x - step_lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
        x = np.clip(x, -BOUND, BOUND)
        out[k] = x
    return out


def arrival_step(path: np.ndarray, pset: np.ndarray, tol: float = 0.3) -> int | None:
    """First step at which the path comes within `tol` of the Pareto set (None: never)."""
    d = distance_to_set(path[:: max(1, len(path) // 300)], pset)
    hit = np.flatnonzero(d <= tol)
    if not len(hit):
        return None
    stride = max(1, len(path) // 300)
    return int(hit[0] * stride)
