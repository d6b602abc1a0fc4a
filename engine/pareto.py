"""Front analytics: Pareto dominance, non-dominated sorting, hypervolume, delta-m, attainment.

Pure numpy/pandas (no torch, no streamlit). Every function takes the objective values in their
original units together with the direction of each objective (`higher_is_better`, as returned by
`engine.metrics.higher_is_better`) and handles the sign flips itself, so callers never negate a
metric by hand. Internally everything is converted to minimisation with `to_minimisation`.

Conventions
-----------
- `values` is an ``(n_points, n_objectives)`` array; a row with any NaN is a missing run: it is never
  on the front, gets rank -1 and contributes no hypervolume.
- Dominance: ``a`` dominates ``b`` when ``a`` is no worse on every objective and strictly better on at
  least one. Exact duplicates do not dominate each other, so every copy of a front point is on the
  front.
- Hypervolume is measured against a reference point given in original units; only points strictly
  better than the reference on every objective contribute.
- delta-m and relative changes are signed so that positive means better than the single-task
  baseline (see `delta_m`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "attainment_summary",
    "default_reference_point",
    "delta_m",
    "front_step_line",
    "hypervolume",
    "negative_transfer",
    "non_dominated_mask",
    "non_dominated_sort",
    "pareto_table",
    "relative_change",
    "to_minimisation",
]

# Column block size for the pairwise dominance computation: bounds the temporary
# (n_points, block, n_objectives) boolean arrays to a few tens of MB for thousands of points.
_BLOCK = 256


# ----------------------------------------------------------------------------------- helpers


def _as_points(values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """`values` as a float64 2-D array (a 1-D input is read as a single point)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"values must be a 2-D (points x objectives) array, got shape {arr.shape}")
    return arr


def _directions(higher_is_better: Sequence[bool], n_obj: int) -> np.ndarray:
    hib = np.asarray(list(higher_is_better), dtype=bool).reshape(-1)
    if hib.shape[0] != n_obj:
        raise ValueError(f"higher_is_better has {hib.shape[0]} entries for {n_obj} objectives")
    return hib


def _valid_rows(m: np.ndarray) -> np.ndarray:
    """Rows without any NaN."""
    return ~np.isnan(m).any(axis=1)


def _dominance_matrix(m: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when point i dominates point j (minimisation, no NaN rows)."""
    n = m.shape[0]
    dom = np.zeros((n, n), dtype=bool)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        a = m[:, None, :]  # candidate dominators, (n, 1, d)
        b = m[None, start:stop, :]  # dominated candidates, (1, block, d)
        no_worse = (a <= b).all(axis=2)
        better = (a < b).any(axis=2)
        dom[:, start:stop] = no_worse & better
    return dom


# ------------------------------------------------------------------------------ dominance


def to_minimisation(values: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Return a float copy of `values` with the maximised objectives negated.

    After this every objective is "lower is better", which is what the dominance and hypervolume
    code (and `moocore`) assume. NaN stays NaN. ``higher_is_better[j]`` is the direction of column j.
    """
    arr = _as_points(values)
    if arr.size == 0:  # no points: the shape follows the directions
        return np.empty((0, len(list(higher_is_better))))
    hib = _directions(higher_is_better, arr.shape[1])
    out = arr.copy()
    out[:, hib] = -out[:, hib]
    return out


def non_dominated_mask(values: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the points on the Pareto front.

    A point is on the front when no other point dominates it (no worse on every objective and
    strictly better on at least one, directions taken from `higher_is_better`). Duplicates of a
    non-dominated point are all non-dominated. Rows containing NaN are never on the front and are
    ignored as potential dominators. Vectorised O(n^2 * d) in time, O(n^2) booleans in memory: fine for
    a few thousand points.
    """
    m = to_minimisation(values, higher_is_better)
    mask = np.zeros(m.shape[0], dtype=bool)
    valid = _valid_rows(m)
    if valid.any():
        dom = _dominance_matrix(m[valid])
        mask[valid] = ~dom.any(axis=0)
    return mask


def non_dominated_sort(values: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Front rank of each point: 0 for the Pareto front, 1 for the front of the rest, and so on.

    Non-dominated sorting by successive peeling (Deb's domination counts, vectorised). Rank 0 equals
    `non_dominated_mask`; every point of rank k >= 1 is dominated by some point of rank k - 1. Rows
    containing NaN get rank -1.
    """
    m = to_minimisation(values, higher_is_better)
    ranks = np.full(m.shape[0], -1, dtype=int)
    valid = _valid_rows(m)
    if not valid.any():
        return ranks
    dom = _dominance_matrix(m[valid])
    counts = dom.sum(axis=0)  # how many (still unranked) points dominate each point
    sub = np.full(dom.shape[0], -1, dtype=int)
    rank = 0
    while (sub < 0).any():
        front = (counts == 0) & (sub < 0)
        sub[front] = rank
        counts = counts - dom[front].sum(axis=0)
        rank += 1
    ranks[valid] = sub
    return ranks


def default_reference_point(
    values: np.ndarray, higher_is_better: Sequence[bool], margin: float = 0.1
) -> np.ndarray:
    """A hypervolume reference point: the nadir of the finite points pushed outward by a margin.

    The nadir is the worst value of each objective over the rows whose values are all finite (the
    maximum for a lower-is-better objective, the minimum for a higher-is-better one). It is moved
    `margin` * (max - min) further in the worse direction, so the result is in original units and
    directions: above the worst value of a minimised objective, below the worst value of a maximised
    one. When an objective has zero range, its span is taken as ``|nadir|`` (or 1.0 when the nadir is
    0), so with ``margin > 0`` every finite point is strictly better than the reference on every
    objective and contributes to the hypervolume.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    arr = _as_points(values)
    hib = _directions(higher_is_better, arr.shape[1])
    finite = arr[np.isfinite(arr).all(axis=1)]
    if finite.shape[0] == 0:
        raise ValueError("no finite points to derive a reference point from")
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    nadir = np.where(hib, lo, hi)
    span = hi - lo
    span = np.where(span > 0, span, np.where(nadir != 0, np.abs(nadir), 1.0))
    return np.where(hib, nadir - margin * span, nadir + margin * span)


# ----------------------------------------------------------------------------- hypervolume


def _hv2d(m: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume by a sweep over x (minimisation, all points strictly inside ref)."""
    order = np.lexsort((m[:, 1], m[:, 0]))
    x, y = m[order, 0], m[order, 1]
    best = np.minimum.accumulate(y)
    prev = np.concatenate(([ref[1]], best[:-1]))
    return float(np.sum((ref[0] - x) * (prev - best)))


def _hv3d(m: np.ndarray, ref: np.ndarray) -> float:
    """Exact 3-D hypervolume by slicing along z.

    Between two consecutive distinct z levels the dominated region is a prism whose cross-section is
    the 2-D hypervolume of the points with z at or below the lower level; the 2-D areas are computed
    with a vectorised sweep over the points pre-sorted by (x, y). O(n^2) numpy work.
    """
    order = np.lexsort((m[:, 1], m[:, 0]))
    x, y, z = m[order, 0], m[order, 1], m[order, 2]
    levels = np.unique(z)
    tops = np.concatenate((levels[1:], [ref[2]]))
    total = 0.0
    for level, top in zip(levels, tops, strict=True):
        active = z <= level
        xa, ya = x[active], y[active]
        best = np.minimum.accumulate(ya)
        prev = np.concatenate(([ref[1]], best[:-1]))
        area = float(np.sum((ref[0] - xa) * (prev - best)))
        total += area * float(top - level)
    return total


def hypervolume(values: np.ndarray, higher_is_better: Sequence[bool], reference: Sequence[float]) -> float:
    """Hypervolume dominated by `values` and bounded by `reference` (both in original units).

    Only points strictly better than the reference on every objective contribute; rows with NaN are
    dropped; dominated points and duplicates change nothing. Returns 0.0 for an empty set.

    Algorithms (all exact): 1-D is ``ref - best``; 2-D a sort-and-sweep; 3-D slicing along the third
    objective with vectorised 2-D sweeps (after discarding dominated points); 4 or more objectives use
    ``moocore.hypervolume`` on the minimisation-transformed points (moocore assumes minimisation; it
    supports up to 31 objectives).
    """
    m = to_minimisation(values, higher_is_better)
    d = m.shape[1]
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if ref.shape[0] != d:
        raise ValueError(f"reference has {ref.shape[0]} entries for {d} objectives")
    if np.isnan(ref).any():
        raise ValueError("reference point contains NaN")
    hib = _directions(higher_is_better, d)
    ref = np.where(hib, -ref, ref)
    if m.shape[0] == 0:
        return 0.0
    m = m[_valid_rows(m)]
    m = m[(m < ref).all(axis=1)]
    if m.shape[0] == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - m[:, 0].min())
    if d == 2:
        return _hv2d(m, ref)
    m = m[non_dominated_mask(m, [False] * d)]
    m = np.unique(m, axis=0)
    if d == 3:
        return _hv3d(m, ref)
    import moocore  # imported lazily: only the 4+-objective case needs the C library

    return float(moocore.hypervolume(np.ascontiguousarray(m), ref=ref))


# ------------------------------------------------------------------------------ plotting


def front_step_line(
    front_xy: np.ndarray,
    higher_is_better_xy: Sequence[bool],
    reference: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Explicit corner points of the staircase through a 2-D front, for a plotly line.

    The points are sorted along x (ascending, in original units) and consecutive front points are
    joined through the corner that both of them weakly dominate (x of one, y of the other), which is
    the reflex corner of the dominated region. The polyline drawn with ``mode="lines"`` (no
    ``line_shape`` needed) is therefore exactly the boundary of the region the front dominates. Rows
    with NaN, dominated points and duplicates are dropped first, so passing a whole run table is fine.

    If `reference` (x, y in original units) is given, the staircase is closed at both ends: it starts
    on the reference's y-level below/above the first point and ends on the reference's x-level,
    outlining the hypervolume region. Returns two float arrays ``(xs, ys)`` of equal length (empty for
    an empty front).
    """
    pts = _as_points(front_xy)
    if pts.shape[0] == 0:
        return np.empty(0), np.empty(0)
    if pts.shape[1] != 2:
        raise ValueError(f"front_xy must have 2 columns, got {pts.shape[1]}")
    hib = _directions(higher_is_better_xy, 2)
    m = to_minimisation(pts, hib)
    m = m[non_dominated_mask(m, [False, False])]
    if m.shape[0] == 0:
        return np.empty(0), np.empty(0)
    m = np.unique(m, axis=0)  # sorted by x then y; on a front x rises and y falls strictly
    k = m.shape[0]
    corners = np.empty((2 * k - 1, 2))
    corners[0::2] = m
    corners[1::2, 0] = m[1:, 0]
    corners[1::2, 1] = m[:-1, 1]
    if reference is not None:
        r = np.asarray(reference, dtype=float).reshape(-1)
        if r.shape[0] != 2:
            raise ValueError("reference must have 2 entries (x, y)")
        r = np.where(hib, -r, r)
        corners = np.vstack(([m[0, 0], r[1]], corners, [r[0], m[-1, 1]]))
    out = np.where(hib, -corners, corners)
    if out[0, 0] > out[-1, 0]:
        out = out[::-1]
    return out[:, 0].copy(), out[:, 1].copy()


# ---------------------------------------------------------------------------------- delta-m


def _signed_changes(
    values: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if key not in baselines:
            raise KeyError(f"no single-task baseline for {key!r}")
        if key not in higher_is_better:
            raise KeyError(f"no direction (higher_is_better) for {key!r}")
        base = float(baselines[key])
        sign = 1.0 if higher_is_better[key] else -1.0
        if base == 0.0 or math.isnan(base):
            out[key] = float("nan")
        else:
            out[key] = sign * (float(value) - base) / abs(base) * 100.0
    return out


def relative_change(
    values: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> dict[str, float]:
    """Signed relative change in percent per metric, positive = better than the baseline.

    For each key of `values`: ``sign * (M - B) / |B| * 100`` with sign +1 when higher is better and -1
    when lower is better. A zero or NaN baseline gives NaN. Every key of `values` needs an entry in
    `baselines` and `higher_is_better` (KeyError otherwise); extra baseline keys are ignored.
    """
    return _signed_changes(values, baselines, higher_is_better)


def delta_m(
    values: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """delta-m in percent, as in LibMTL and the MTL literature (Maninis et al. 2019).

    The literature writes ``delta_m = 1/T * sum_i (-1)^{h_i} (M_i - B_i) / B_i * 100`` with h_i = 1 when
    higher is better, which is *negative* for an improvement. Here the sign is flipped so that a
    positive delta-m means better than single-task training: we return the mean over the metrics
    (the keys of `values`, one per task or per task-metric pair) of

        sign_i * (M_i - B_i) / |B_i| * 100,   sign_i = +1 if higher is better, -1 if lower is better,

    where M_i is the multi-task value and B_i the single-task baseline. (Dividing by ``|B_i|`` instead
    of ``B_i`` keeps the sign meaningful for negative baselines; for the usual positive metrics it is
    the same.) NaN if any change is NaN (zero or missing baseline value); ValueError for no metrics.
    """
    changes = _signed_changes(values, baselines, higher_is_better)
    if not changes:
        raise ValueError("delta_m needs at least one metric")
    return float(np.mean(list(changes.values())))


def negative_transfer(
    values: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> dict[str, bool]:
    """Per key of `values`: True where the multi-task value is strictly worse than its baseline.

    "Worse" follows the direction: lower for a higher-is-better metric, higher for a lower-is-better
    one. Ties and NaN comparisons are not flagged. Works for zero baselines too (no division).
    """
    out: dict[str, bool] = {}
    for key, value in values.items():
        if key not in baselines:
            raise KeyError(f"no single-task baseline for {key!r}")
        if key not in higher_is_better:
            raise KeyError(f"no direction (higher_is_better) for {key!r}")
        value_f, base = float(value), float(baselines[key])
        out[key] = bool(value_f < base) if higher_is_better[key] else bool(value_f > base)
    return out


# ------------------------------------------------------------------------------- attainment


def attainment_summary(
    fronts: list[np.ndarray],
    higher_is_better: Sequence[bool],
    x_grid: np.ndarray | None = None,
) -> pd.DataFrame:
    """Best / median / worst empirical attainment surfaces of 2-D fronts from several seeds.

    For seed s and an x value, the seed's front attains y_s(x) = the best y among its points whose x
    is at least as good as that x value (its staircase evaluated at x; unattained if none). At each
    x the level-k attainment surface is the k-th best of the y_s(x) over the n seeds, i.e. the y
    that at least k seeds reach: `best` is level 1, `median` level ceil(n/2), `worst` level n (the
    empirical attainment function's 1/n, 50 % and 100 % surfaces, sliced vertically).

    The x grid defaults to the sorted union of every seed's x values, which is exact because each
    staircase only changes at its own points; pass `x_grid` to evaluate elsewhere. Values are in
    original units; a level that fewer than k seeds reach at that x is NaN. NaN rows are dropped.
    Returns a DataFrame with columns ``x, best, median, worst`` sorted by x ascending.
    """
    if len(fronts) == 0:
        raise ValueError("attainment_summary needs at least one front")
    hib = _directions(higher_is_better, 2)
    mins = []
    for f in fronts:
        pts = _as_points(f)
        if pts.shape[0] == 0:
            pts = pts.reshape(0, 2)
        if pts.shape[1] != 2:
            raise ValueError(f"each front must have 2 columns, got {pts.shape[1]}")
        m = to_minimisation(pts, hib)
        mins.append(m[_valid_rows(m)])
    if x_grid is None:
        grid = np.unique(np.concatenate([m[:, 0] for m in mins]))
        grid = -grid if hib[0] else grid  # back to original units
    else:
        grid = np.asarray(x_grid, dtype=float).reshape(-1)
    grid = np.sort(grid)
    gmin = -grid if hib[0] else grid

    n = len(mins)
    surf = np.full((n, grid.shape[0]), np.inf)
    for s, m in enumerate(mins):
        if m.shape[0] == 0:
            continue
        order = np.lexsort((m[:, 1], m[:, 0]))
        xs, ys = m[order, 0], np.minimum.accumulate(m[order, 1])
        idx = np.searchsorted(xs, gmin, side="right") - 1
        ok = idx >= 0
        surf[s, ok] = ys[idx[ok]]
    surf = np.sort(surf, axis=0)
    levels = {"best": 0, "median": math.ceil(n / 2) - 1, "worst": n - 1}
    data: dict[str, np.ndarray] = {"x": grid}
    for name, row in levels.items():
        y = surf[row].copy()
        y[np.isinf(y)] = np.nan
        data[name] = -y if hib[1] else y
    return pd.DataFrame(data)


# ------------------------------------------------------------------------------------ table


def pareto_table(df: pd.DataFrame, objectives: list[str], higher_is_better: list[bool]) -> pd.DataFrame:
    """A copy of `df` with columns ``rank`` (non-dominated sort rank, -1 for rows with a missing
    objective) and ``on_front`` (bool, rank == 0) over the given objective columns."""
    if len(objectives) != len(higher_is_better):
        raise ValueError("objectives and higher_is_better must have the same length")
    values = df[objectives].to_numpy(dtype=float, na_value=np.nan)
    ranks = non_dominated_sort(values, higher_is_better)
    out = df.copy()
    out["rank"] = ranks
    out["on_front"] = ranks == 0
    return out
