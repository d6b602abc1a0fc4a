"""Property and hand-computed tests for engine.pareto (dominance, sorting, hypervolume, delta-m)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import pareto

SETTINGS = settings(max_examples=60, deadline=None)


# ------------------------------------------------------------------------- brute force


def _dominates(a: np.ndarray, b: np.ndarray, hib: list[bool]) -> bool:
    """a dominates b, written out per objective with the direction, no sign flips."""
    no_worse = True
    strictly_better = False
    for ai, bi, h in zip(a, b, hib, strict=True):
        better = ai > bi if h else ai < bi
        worse = ai < bi if h else ai > bi
        if worse:
            no_worse = False
        if better:
            strictly_better = True
    return no_worse and strictly_better


def _brute_mask(values: np.ndarray, hib: list[bool]) -> np.ndarray:
    n = values.shape[0]
    out = np.zeros(n, dtype=bool)
    for j in range(n):
        if np.isnan(values[j]).any():
            continue
        out[j] = not any(
            _dominates(values[i], values[j], hib)
            for i in range(n)
            if i != j and not np.isnan(values[i]).any()
        )
    return out


def _inclusion_exclusion_hv(values: np.ndarray, hib: list[bool], ref: np.ndarray) -> float:
    """Exact hypervolume as the volume of a union of boxes, by inclusion-exclusion over subsets.

    Each point spans the box between itself and the reference (empty if not strictly better on every
    objective); the intersection of boxes is the box at the component-wise worst corner.
    """
    sign = np.where(hib, -1.0, 1.0)
    m, r = values * sign, ref * sign
    m = m[~np.isnan(m).any(axis=1)]
    total = 0.0
    for k in range(1, m.shape[0] + 1):
        for subset in itertools.combinations(range(m.shape[0]), k):
            corner = m[list(subset)].max(axis=0)
            vol = float(np.prod(np.clip(r - corner, 0.0, None)))
            total += vol if k % 2 == 1 else -vol
    return total


def _grid_count_hv(values: np.ndarray, hib: list[bool], ref: np.ndarray) -> int:
    """Exact hypervolume of integer points and an integer reference, by counting unit cells.

    In minimisation form a unit cell [c, c + 1] lies in the dominated region iff c + 1 <= ref and
    some point is <= c component-wise.
    """
    sign = np.where(hib, -1, 1)
    m, r = (values * sign).astype(int), (ref * sign).astype(int)
    lo = m.min(axis=0)
    axes = [np.arange(lo[j], r[j]) for j in range(m.shape[1])]
    if any(len(a) == 0 for a in axes):
        return 0
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, m.shape[1])
    covered = (m[None, :, :] <= cells[:, None, :]).all(axis=2).any(axis=1)
    return int(covered.sum())


# ----------------------------------------------------------------------------- strategies


@st.composite
def point_sets(
    draw: st.DrawFn,
    min_dim: int = 2,
    max_dim: int = 4,
    max_points: int = 25,
    with_nan: bool = True,
    integer: bool = False,
) -> tuple[np.ndarray, list[bool]]:
    """Point sets on a coarse lattice (many ties and duplicates), mixed directions, some NaN rows."""
    d = draw(st.integers(min_dim, max_dim))
    n = draw(st.integers(0, max_points))
    coord = st.integers(0, 5) if integer else st.integers(0, 6).map(lambda v: v / 2.0)
    rows = draw(st.lists(st.lists(coord, min_size=d, max_size=d), min_size=n, max_size=n))
    values = np.array(rows, dtype=float).reshape(n, d)
    if n:
        # Exact duplicates of existing rows.
        dup = draw(st.lists(st.integers(0, n - 1), max_size=4))
        values = np.vstack([values, values[dup]]) if dup else values
    if with_nan and n and draw(st.booleans()):
        nan_rows = draw(st.lists(st.integers(0, values.shape[0] - 1), max_size=3))
        for i in nan_rows:
            values[i, draw(st.integers(0, d - 1))] = np.nan
    hib = draw(st.lists(st.booleans(), min_size=d, max_size=d))
    return values, hib


def _ref_for(values: np.ndarray, hib: list[bool], pad: float) -> np.ndarray:
    """A reference `pad` beyond the worst value of the 0..3 half-step lattice in each direction.

    A negative pad puts the reference inside the cloud, a zero pad on its worst values.
    """
    hi = 3.0 + pad
    lo = 0.0 - pad
    return np.array([lo if h else hi for h in hib])


# ------------------------------------------------------------------------------ dominance


@SETTINGS
@given(point_sets())
def test_non_dominated_mask_matches_brute_force(case: tuple[np.ndarray, list[bool]]) -> None:
    values, hib = case
    np.testing.assert_array_equal(pareto.non_dominated_mask(values, hib), _brute_mask(values, hib))


@SETTINGS
@given(point_sets())
def test_duplicates_of_front_points_are_all_on_front(case: tuple[np.ndarray, list[bool]]) -> None:
    values, hib = case
    mask = pareto.non_dominated_mask(values, hib)
    for i, j in itertools.combinations(range(values.shape[0]), 2):
        if not np.isnan(values[i]).any() and np.array_equal(values[i], values[j]):
            assert mask[i] == mask[j]


@SETTINGS
@given(point_sets())
def test_non_dominated_sort_layers(case: tuple[np.ndarray, list[bool]]) -> None:
    values, hib = case
    ranks = pareto.non_dominated_sort(values, hib)
    nan_rows = np.isnan(values).any(axis=1)
    np.testing.assert_array_equal(ranks == -1, nan_rows)
    np.testing.assert_array_equal(ranks == 0, pareto.non_dominated_mask(values, hib))
    for j in np.flatnonzero(ranks >= 1):
        prev = np.flatnonzero(ranks == ranks[j] - 1)
        assert any(_dominates(values[i], values[j], hib) for i in prev)
    # Nothing is dominated by a point of the same or a worse rank.
    for i, j in itertools.permutations(np.flatnonzero(ranks >= 0), 2):
        if _dominates(values[i], values[j], hib):
            assert ranks[i] < ranks[j]
    if (ranks >= 0).any():
        assert set(np.unique(ranks[ranks >= 0])) == set(range(ranks.max() + 1))


def test_to_minimisation_flips_only_maximised_columns() -> None:
    v = np.array([[0.8, 0.3], [0.6, 0.1]])
    np.testing.assert_array_equal(pareto.to_minimisation(v, [True, False]), [[-0.8, 0.3], [-0.6, 0.1]])
    np.testing.assert_array_equal(v, [[0.8, 0.3], [0.6, 0.1]])  # input untouched


def test_mask_and_sort_small_example() -> None:
    # AUC (max) vs MSE (min)
    v = np.array([[0.80, 1.0], [0.78, 0.9], [0.75, 1.1], [0.80, 1.0], [np.nan, 0.1], [0.70, 1.2]])
    hib = [True, False]
    np.testing.assert_array_equal(pareto.non_dominated_mask(v, hib), [True, True, False, True, False, False])
    np.testing.assert_array_equal(pareto.non_dominated_sort(v, hib), [0, 0, 1, 0, -1, 2])


# ----------------------------------------------------------------------- reference point


@SETTINGS
@given(point_sets(), st.floats(0.01, 1.0))
def test_default_reference_point_dominated_by_every_finite_point(
    case: tuple[np.ndarray, list[bool]], margin: float
) -> None:
    values, hib = case
    finite = values[np.isfinite(values).all(axis=1)]
    if finite.shape[0] == 0:
        with pytest.raises(ValueError):
            pareto.default_reference_point(values, hib, margin)
        return
    ref = pareto.default_reference_point(values, hib, margin)
    for p in finite:
        for pj, rj, h in zip(p, ref, hib, strict=True):
            assert (pj > rj) if h else (pj < rj)  # strictly better on every objective
    assert pareto.hypervolume(values, hib, ref) > 0.0


def test_default_reference_point_values() -> None:
    v = np.array([[0.8, 1.0], [0.6, 2.0], [np.nan, 9.0]])
    ref = pareto.default_reference_point(v, [True, False], margin=0.5)
    np.testing.assert_allclose(ref, [0.6 - 0.5 * 0.2, 2.0 + 0.5 * 1.0])


# ---------------------------------------------------------------------------- hypervolume


@SETTINGS
@given(point_sets(min_dim=2, max_dim=3, max_points=7), st.sampled_from([-1.0, 0.0, 0.5, 1.5]))
def test_hypervolume_2d_3d_matches_inclusion_exclusion(
    case: tuple[np.ndarray, list[bool]], pad: float
) -> None:
    values, hib = case
    ref = _ref_for(values, hib, pad)  # points on or beyond the reference contribute nothing
    expected = _inclusion_exclusion_hv(values, hib, ref)
    assert pareto.hypervolume(values, hib, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@SETTINGS
@given(point_sets(min_dim=2, max_dim=3, max_points=40, integer=True), st.integers(-2, 2))
def test_hypervolume_2d_3d_matches_grid_count(case: tuple[np.ndarray, list[bool]], shift: int) -> None:
    values, hib = case
    values = values[~np.isnan(values).any(axis=1)]
    if values.shape[0] == 0:
        assert pareto.hypervolume(values, hib, np.zeros(len(hib))) == 0.0
        return
    # The reference may cut through the point cloud (shift < 0) or lie beyond it.
    ref = np.array([(-shift if h else 5 + shift) for h in hib], dtype=float)
    assert pareto.hypervolume(values, hib, ref) == pytest.approx(_grid_count_hv(values, hib, ref))


@SETTINGS
@given(point_sets(min_dim=4, max_dim=5, max_points=6), st.sampled_from([-1.0, 0.0, 0.5, 1.5]))
def test_hypervolume_moocore_4d_plus_matches_inclusion_exclusion(
    case: tuple[np.ndarray, list[bool]], pad: float
) -> None:
    values, hib = case
    ref = _ref_for(values, hib, pad)
    expected = _inclusion_exclusion_hv(values, hib, ref)
    assert pareto.hypervolume(values, hib, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@SETTINGS
@given(point_sets(max_points=15), st.data())
def test_hypervolume_invariant_to_dominated_points_and_order(
    case: tuple[np.ndarray, list[bool]], data: st.DataObject
) -> None:
    values, hib = case
    ref = _ref_for(values, hib, 1.0)
    hv = pareto.hypervolume(values, hib, ref)
    perm = data.draw(st.permutations(range(values.shape[0])))
    assert pareto.hypervolume(values[list(perm)], hib, ref) == pytest.approx(hv, rel=1e-12, abs=1e-12)
    finite = values[~np.isnan(values).any(axis=1)]
    if finite.shape[0]:
        # Worsen copies of existing points by a non-negative step in the worse direction.
        idx = data.draw(st.lists(st.integers(0, finite.shape[0] - 1), min_size=1, max_size=5))
        steps = np.array(
            data.draw(
                st.lists(
                    st.lists(st.sampled_from([0.0, 0.25, 1.0, 10.0]), min_size=len(hib), max_size=len(hib)),
                    min_size=len(idx),
                    max_size=len(idx),
                )
            )
        )
        worse = finite[idx] + steps * np.where(hib, -1.0, 1.0)
        more = np.vstack([values, worse])
        assert pareto.hypervolume(more, hib, ref) == pytest.approx(hv, rel=1e-12, abs=1e-12)


def test_hypervolume_hand_examples() -> None:
    # moocore's docstring example, minimisation: 38.
    dat = np.array([[5, 5], [4, 6], [2, 7], [7, 4]])
    assert pareto.hypervolume(dat, [False, False], [10, 10]) == pytest.approx(38.0)
    # the same data maximised against ref 0: 39.
    assert pareto.hypervolume(dat, [True, True], [0, 0]) == pytest.approx(39.0)
    # AUC (max) vs MSE (min): boxes [0.5,0.8]x[1,2] U [0.5,0.7]x[0.5,2] = 0.3 + 0.2*0.5 = 0.4
    pts = np.array([[0.8, 1.0], [0.7, 0.5], [0.4, 0.1]])  # last point is worse than ref on AUC
    assert pareto.hypervolume(pts, [True, False], [0.5, 2.0]) == pytest.approx(0.4)
    # unit cube corner
    assert pareto.hypervolume([[0.0, 0.0, 0.0]], [False] * 3, [1, 2, 3]) == pytest.approx(6.0)
    assert pareto.hypervolume(np.empty((0, 3)), [False] * 3, [1, 1, 1]) == 0.0
    assert pareto.hypervolume([[2.0, 0.0]], [False, False], [1, 1]) == 0.0
    with pytest.raises(ValueError):
        pareto.hypervolume([[0.0, 0.0]], [False, False], [1.0])


# ---------------------------------------------------------------------------- step line


@SETTINGS
@given(point_sets(min_dim=2, max_dim=2, max_points=15))
def test_front_step_line_traces_the_dominated_boundary(case: tuple[np.ndarray, list[bool]]) -> None:
    values, hib = case
    xs, ys = pareto.front_step_line(values, hib)
    assert xs.shape == ys.shape
    front = values[pareto.non_dominated_mask(values, hib)]
    if front.shape[0] == 0:
        assert xs.size == 0
        return
    vertices = np.column_stack([xs, ys])
    # passes through every front point
    for p in front:
        assert (np.abs(vertices - p).max(axis=1) < 1e-12).any()
    # sorted along x; every segment is axis-parallel
    assert (np.diff(xs) >= 0).all()
    assert ((np.diff(xs) == 0) | (np.diff(ys) == 0)).all()
    # every vertex is on the boundary: weakly dominated by a front point, strictly by none
    sign = np.where(hib, -1.0, 1.0)
    fm, vm = front * sign, vertices * sign
    assert all((fm <= v).all(axis=1).any() for v in vm)
    assert not any((fm < v).all(axis=1).any() for v in vm)


def test_front_step_line_corners_and_reference() -> None:
    # AUC (max) vs MSE (min): front (0.7, 0.5), (0.8, 1.0); (0.75, 1.2) dominated by (0.8, 1.0)
    pts = np.array([[0.8, 1.0], [0.7, 0.5], [0.75, 1.2]])
    xs, ys = pareto.front_step_line(pts, [True, False])
    np.testing.assert_allclose(xs, [0.7, 0.7, 0.8])
    np.testing.assert_allclose(ys, [0.5, 1.0, 1.0])
    xs, ys = pareto.front_step_line(pts, [True, False], reference=[0.5, 2.0])
    np.testing.assert_allclose(xs, [0.5, 0.7, 0.7, 0.8, 0.8])
    np.testing.assert_allclose(ys, [0.5, 0.5, 1.0, 1.0, 2.0])


# -------------------------------------------------------------------------------- delta-m


def test_delta_m_hand_computation() -> None:
    values = {"click/auc": 0.80, "watch/mse": 0.9}
    baselines = {"click/auc": 0.78, "watch/mse": 1.0}
    hib = {"click/auc": True, "watch/mse": False}
    expected = ((0.80 - 0.78) / 0.78 * 100 + (1.0 - 0.9) / 1.0 * 100) / 2  # = 6.2820...
    assert pareto.delta_m(values, baselines, hib) == pytest.approx(expected)
    assert expected == pytest.approx(6.282051282051282)
    changes = pareto.relative_change(values, baselines, hib)
    assert changes["click/auc"] == pytest.approx(2.564102564102564)
    assert changes["watch/mse"] == pytest.approx(10.0)
    assert pareto.negative_transfer(values, baselines, hib) == {"click/auc": False, "watch/mse": False}


def test_negative_transfer_and_negative_delta_m() -> None:
    # AUC drops 0.78 -> 0.74 (worse), MSE drops 1.0 -> 0.95 (better), log loss rises 0.40 -> 0.44 (worse)
    values = {"a/auc": 0.74, "b/mse": 0.95, "c/logloss": 0.44}
    baselines = {"a/auc": 0.78, "b/mse": 1.0, "c/logloss": 0.40, "unused": 3.0}
    hib = {"a/auc": True, "b/mse": False, "c/logloss": False}
    assert pareto.negative_transfer(values, baselines, hib) == {
        "a/auc": True,
        "b/mse": False,
        "c/logloss": True,
    }
    expected = ((0.74 - 0.78) / 0.78 * 100 - (0.95 - 1.0) / 1.0 * 100 - (0.44 - 0.40) / 0.40 * 100) / 3
    assert pareto.delta_m(values, baselines, hib) == pytest.approx(expected)
    assert expected < 0
    # ties are not negative transfer
    assert pareto.negative_transfer({"x": 1.0}, {"x": 1.0}, {"x": True}) == {"x": False}


def test_delta_m_edge_cases() -> None:
    assert math.isnan(pareto.delta_m({"x": 1.0}, {"x": 0.0}, {"x": True}))
    # negative baseline: |B| keeps "positive = better"
    assert pareto.relative_change({"x": -1.0}, {"x": -2.0}, {"x": True})["x"] == pytest.approx(50.0)
    with pytest.raises(KeyError):
        pareto.delta_m({"x": 1.0}, {}, {"x": True})
    with pytest.raises(KeyError):
        pareto.delta_m({"x": 1.0}, {"x": 1.0}, {})
    with pytest.raises(ValueError):
        pareto.delta_m({}, {}, {})


# ----------------------------------------------------------------------------- attainment


def test_attainment_summary_hand_example() -> None:
    fronts = [
        np.array([[1.0, 3.0], [2.0, 1.0]]),
        np.array([[1.5, 2.0], [3.0, 0.5]]),
        np.array([[2.0, 2.0], [np.nan, 0.0]]),
    ]
    out = pareto.attainment_summary(fronts, [False, False])
    assert list(out.columns) == ["x", "best", "median", "worst"]
    nan = np.nan
    np.testing.assert_allclose(out["x"], [1.0, 1.5, 2.0, 3.0])
    np.testing.assert_allclose(out["best"], [3.0, 2.0, 1.0, 0.5])
    np.testing.assert_allclose(out["median"], [nan, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(out["worst"], [nan, nan, 2.0, 2.0])


@SETTINGS
@given(st.lists(point_sets(min_dim=2, max_dim=2, max_points=8, with_nan=False), min_size=1, max_size=5))
def test_attainment_levels_are_ordered(cases: list[tuple[np.ndarray, list[bool]]]) -> None:
    hib = cases[0][1]
    fronts = [v for v, _ in cases]
    out = pareto.attainment_summary(fronts, hib)
    sign = -1.0 if hib[1] else 1.0
    best, med, worst = (sign * out[c].to_numpy() for c in ("best", "median", "worst"))
    filled = ~np.isnan(worst)
    assert (best[filled] <= med[filled]).all() and (med[filled] <= worst[filled]).all()
    assert (~np.isnan(best) | np.isnan(med)).all()
    if len(fronts) == 1:
        np.testing.assert_array_equal(out["best"], out["worst"])
    # Brute force: at each x, seed s reaches the best y of its points with an x at least as good;
    # level k is the k-th best of those (inf = unreached -> NaN).
    n = len(fronts)
    for i, x in enumerate(out["x"]):
        reach = []
        for f in fronts:
            ok = [p[1] for p in f if (p[0] >= x if hib[0] else p[0] <= x)]
            reach.append(min(sign * y for y in ok) if ok else np.inf)
        reach.sort()
        for col, level in (("best", 1), ("median", math.ceil(n / 2)), ("worst", n)):
            want = reach[level - 1]
            got = sign * out[col].iloc[i]
            assert (np.isnan(got) and np.isinf(want)) or got == want


# --------------------------------------------------------------------------------- table


def test_pareto_table_adds_rank_and_on_front() -> None:
    df = pd.DataFrame(
        {
            "run": ["a", "b", "c", "d"],
            "auc": [0.80, 0.78, 0.75, None],
            "mse": [1.0, 0.9, 1.1, 0.5],
        }
    )
    out = pareto.pareto_table(df, ["auc", "mse"], [True, False])
    assert list(out["rank"]) == [0, 0, 1, -1]
    assert list(out["on_front"]) == [True, True, False, False]
    assert out["on_front"].dtype == bool
    assert "rank" not in df.columns  # input untouched
