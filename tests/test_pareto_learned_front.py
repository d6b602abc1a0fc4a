"""The Pareto figure's learned front (COSMOS): pure data -> info -> figure, no model needed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.figures.pareto import (
    LEARNED_TRACE,
    PREFERENCE_TRACE,
    inversion_text,
    learned_front_info,
    learned_point_text,
    pareto_figure,
    pareto_info,
    preference_grid,
    preference_inversions,
)


def _front(prefs: list[tuple[float, float]]) -> pd.DataFrame:
    """A learned front shaped like engine.cosmos.learned_front: task_1 improves as its share grows."""
    a = np.array([p[0] for p in prefs])
    return pd.DataFrame(
        {
            "pref/task_1": a,
            "pref/task_2": 1 - a,
            "task_1/mse": 1.0 - 0.5 * a,
            "task_1/loss": 1.0 - 0.5 * a,
            "task_2/mse": 0.5 + 0.5 * a,
            "task_2/loss": 0.5 + 0.5 * a,
        }
    )


def _runs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "balancer": ["fixed"] * 3,
            "task_1/mse": [0.6, 0.8, 0.9],
            "task_2/mse": [0.95, 0.7, 0.9],
        }
    )


def test_preference_grids() -> None:
    two = preference_grid(2, 21)
    assert len(two) == 21 and two[0] == (1.0, 0.0) and two[-1] == (0.0, 1.0) and two[10] == (0.5, 0.5)
    three = preference_grid(3, 70)
    assert len(three) == 66 and all(sum(p) == pytest.approx(1.0) for p in three)


def test_learned_front_info_and_the_point_of_a_preference() -> None:
    grid = preference_grid(2, 5)
    front = _front(list(grid))
    point = _front([(0.75, 0.25)])
    info = learned_front_info(front, "task_1/mse", "task_2/mse", point, "cosmos-1", "COSMOS mmoe")
    assert info is not None and info.connected and info.tasks == ["task_1", "task_2"]
    assert info.curve["x"].tolist() == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])  # preference order
    assert info.curve["text"].iloc[0] == "task_1 1.00 · task_2 0.00"
    assert info.point == pytest.approx((0.625, 0.875))
    assert info.preference == {"task_1": 0.75, "task_2": 0.25}
    assert learned_point_text(info) == "task_1 0.75 · task_2 0.25 → task_1: mse 0.625 · task_2: mse 0.875"
    assert learned_front_info(front, "task_1/auc", "task_2/mse") is None  # not a metric of the model
    assert learned_front_info(front, "task_1/mse", "task_2/mse").point is None  # type: ignore[union-attr]


def test_the_figure_draws_the_learned_front_and_the_star_next_to_the_runs() -> None:
    info = pareto_info(_runs(), "task_1/mse", "task_2/mse")
    front = _front(list(preference_grid(2, 11)))
    learned = learned_front_info(front, "task_1/mse", "task_2/mse", _front([(0.3, 0.7)]), "c1", "COSMOS")
    fig = pareto_figure(info, learned=learned)
    names = [t.name for t in fig.data]
    assert LEARNED_TRACE in names and PREFERENCE_TRACE in names and "Pareto front" in names
    star = next(t for t in fig.data if t.name == PREFERENCE_TRACE)
    assert (star.x[0], star.y[0]) == pytest.approx((0.85, 0.65)) and star.marker.symbol == "star"
    curve = next(t for t in fig.data if t.name == LEARNED_TRACE)
    assert len(curve.x) == 11 and curve.mode == "lines+markers" and curve.meta == {"cosmos": "c1"}
    assert "learned front" in fig.layout.title.text
    # without the learned front the figure is the one it was
    assert [t.name for t in pareto_figure(info).data] == [
        n for n in names if n not in (LEARNED_TRACE, PREFERENCE_TRACE)
    ]
    # with no run but a learned front, the front alone is drawn
    empty = pareto_info(_runs().iloc[0:0], "task_1/mse", "task_2/mse")
    alone = pareto_figure(empty, learned=learned)
    assert {t.name for t in alone.data} == {LEARNED_TRACE, PREFERENCE_TRACE}
    assert alone.layout.title.text == "learned front of COSMOS"


def test_a_front_whose_preference_works_backwards_is_flagged() -> None:
    grid = list(preference_grid(2, 5))
    good = _front(grid)
    info = learned_front_info(good, "task_1/mse", "task_2/mse")
    assert info is not None and info.inverted == [] and inversion_text(info) == ""
    backwards = good.assign(**{"pref/task_1": good["pref/task_2"], "pref/task_2": good["pref/task_1"]})
    assert preference_inversions(backwards, ["task_1/mse", "task_2/mse"]) == [
        ("task_1/mse", 0.5, 1.0),
        ("task_2/mse", 0.5, 1.0),
    ]
    info = learned_front_info(backwards, "task_1/mse", "task_2/mse")
    assert info is not None and [c for c, _, _ in info.inverted] == ["task_1/mse", "task_2/mse"]
    text = inversion_text(info, 1.0)
    assert "task_1 mse 0.5 at preference 0 → 1 at preference 1" in text and "λ = 1.0" in text
    # higher-is-better metrics: worse means lower; a difference within the tolerance is noise
    auc = pd.DataFrame({"pref/a": [1.0, 0.0], "pref/b": [0.0, 1.0], "a/auc": [0.7, 0.8], "b/auc": [0.9, 0.6]})
    assert [c for c, _, _ in preference_inversions(auc, ["a/auc", "b/auc"])] == ["a/auc", "b/auc"]
    assert preference_inversions(auc.assign(**{"a/auc": [0.8, 0.7]}), ["a/auc"]) == []
    assert preference_inversions(auc.assign(**{"a/auc": [0.799, 0.8]}), ["a/auc"]) == []
