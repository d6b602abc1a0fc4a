"""A seeded impression-log simulator for cascaded e-commerce tasks (click -> cart -> purchase).

Generative story (every draw from `data_seed`):
- users belong to segments and items to categories; latent vectors u, v (dimension 8) are
  segment/category centres plus noise, so affinity = u.v / sqrt(8) has unit variance;
- each item has a click appeal a and a purchase value q = -conflict * a + sqrt(1 - conflict^2) z
  (z independent): at conflict 1 the most clickable items are the least worth buying (clickbait);
- each user has an activity level (how many impressions they get and how click-happy they are),
  each item a popularity (how often it is shown) and a price;
- an impression (user, item, slot position 1..10, time) is clicked with
  p_click = sigmoid(b_c + 0.8 affinity + 1.2 a - 0.15 (position - 1) + 0.3 activity),
  carted after a click with p_cart = sigmoid(b_a + 0.6 affinity + q - 0.2 price),
  purchased after a cart with p_buy = sigmoid(b_p + 0.6 affinity + q - 0.5 price)
  (price and activity standardised logs). Affinity drives both click and purchase, so at
  conflict 0 the tasks agree; at conflict 1 appeal outweighs it and they pull apart.
  The biases are solved so that the mean click rate is `click_rate`, P(cart | click) is
  sqrt(conversion_rate) and P(purchase | click) is `conversion_rate` (in expectation).

All three labels are defined on every impression (the entire space, as in ESMM): purchase <=
cart <= click. With `label_space="clicked"` the cart and purchase labels are masked to the clicked
impressions instead: the conventional post-click training set of a CVR model (its loss and
metrics see clicked rows only; a purchase label then reads P(purchase | click)), the baseline whose
sample-selection bias ESMM removes.

Behaviour sequences: per impression, the same user's strictly earlier events, one per clicked
impression, typed by how far it went (1 click, 2 cart, 3 purchase); the most recent `seq_len`
kept, oldest first, left-padded with 0. `seq_items` uses item ids 1..n_items (the same ids as the
item_id column; 0 = pad).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from engine.datasets.base import (
    Dataset,
    DatasetParams,
    FeatureSpec,
    MTLData,
    SequenceSpec,
    TaskSpec,
    split_indices,
)
from engine.datasets.csv_file import make_splits, standardise

LATENT_DIM = 8
N_SEGMENTS = 8
N_CATEGORIES = 12
N_POSITIONS = 10


class RecsysSimParams(DatasetParams):
    n_users: int = Field(2000, ge=10, le=1_000_000, description="number of users")
    n_items: int = Field(1000, ge=10, le=1_000_000, description="number of items")
    n_impressions: int = Field(50_000, ge=1000, le=5_000_000, description="rows (impressions)")
    conflict: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="how strongly click appeal is anti-correlated with purchase value (clickbait)",
    )
    conversion_rate: float = Field(
        0.05, gt=0.0, le=0.5, description="target mean P(purchase | click): the sparsity dial"
    )
    click_rate: float = Field(0.15, ge=0.01, le=0.6, description="target mean P(click)")
    seq_len: int = Field(20, ge=1, le=200, description="earlier events kept per impression")
    label_space: Literal["entire", "clicked"] = Field(
        "entire",
        description="where cart/purchase labels are defined: every impression, or clicked ones only "
        "(the conventional, selection-biased CVR training set)",
    )
    data_seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the simulated world")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _solve_bias(score: np.ndarray, weight: np.ndarray, target: float) -> float:
    """b such that sum(weight * sigmoid(score + b)) / sum(weight) = target (bisection)."""
    lo, hi = -40.0, 40.0
    total = float(weight.sum())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float((weight * _sigmoid(score + mid)).sum()) / total < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def simulate(p: RecsysSimParams) -> dict[str, np.ndarray]:
    """The impression log, sorted by (user, time): ids, features, latent probabilities, labels."""
    rng = np.random.default_rng([p.data_seed, 7])
    k = LATENT_DIM
    segment = rng.integers(0, N_SEGMENTS, p.n_users)
    category = rng.integers(0, N_CATEGORIES, p.n_items)
    seg_centre = rng.standard_normal((N_SEGMENTS, k))
    cat_centre = rng.standard_normal((N_CATEGORIES, k))
    u = math.sqrt(0.6) * seg_centre[segment] + math.sqrt(0.4) * rng.standard_normal((p.n_users, k))
    v = math.sqrt(0.6) * cat_centre[category] + math.sqrt(0.4) * rng.standard_normal((p.n_items, k))
    appeal = rng.standard_normal(p.n_items)
    value = -p.conflict * appeal + math.sqrt(max(0.0, 1.0 - p.conflict**2)) * rng.standard_normal(p.n_items)
    log_activity = rng.normal(0.0, 0.8, p.n_users)
    log_popularity = rng.normal(0.0, 1.0, p.n_items)
    log_price = rng.normal(3.0, 0.7, N_CATEGORIES)[category] + rng.normal(0.0, 0.4, p.n_items)
    activity_z = (log_activity - log_activity.mean()) / log_activity.std()
    price_z = (log_price - log_price.mean()) / log_price.std()

    n = p.n_impressions
    user_w = np.exp(log_activity)
    item_w = np.exp(log_popularity)
    user = rng.choice(p.n_users, n, p=user_w / user_w.sum())
    item = rng.choice(p.n_items, n, p=item_w / item_w.sum())
    position = rng.integers(1, N_POSITIONS + 1, n)
    time = rng.random(n)
    order = np.lexsort((time, user))
    user, item, position, time = user[order], item[order], position[order], time[order]

    affinity = np.einsum("nk,nk->n", u[user], v[item]) / math.sqrt(k)
    s_click = 0.8 * affinity + 1.2 * appeal[item] - 0.15 * (position - 1) + 0.3 * activity_z[user]
    s_cart = 0.6 * affinity + 1.0 * value[item] - 0.2 * price_z[item]
    s_buy = 0.6 * affinity + 1.0 * value[item] - 0.5 * price_z[item]
    ones = np.ones(n)
    p_click = _sigmoid(s_click + _solve_bias(s_click, ones, p.click_rate))
    p_cart = _sigmoid(s_cart + _solve_bias(s_cart, p_click, math.sqrt(p.conversion_rate)))
    # P(purchase | click) = sum(p_click p_cart p_buy) / sum(p_click) = conversion_rate
    w_buy = p_click * p_cart
    target_buy = min(1.0, p.conversion_rate * float(p_click.sum()) / float(w_buy.sum()))
    p_buy = _sigmoid(s_buy + _solve_bias(s_buy, w_buy, target_buy))

    click = rng.random(n) < p_click
    cart = click & (rng.random(n) < p_cart)
    purchase = cart & (rng.random(n) < p_buy)
    return {
        "user": user,
        "item": item,
        "position": position,
        "time": time,
        "segment": segment[user],
        "category": category[item],
        "log_price": log_price[item],
        "log_activity": log_activity[user],
        "p_click": p_click,
        "p_cart_given_click": p_cart,
        "p_purchase_given_cart": p_buy,
        "click": click,
        "cart": cart,
        "purchase": purchase,
    }


def _rate(num: np.ndarray, den: np.ndarray | None = None) -> float:
    if den is None:
        return float(num.mean())
    return float(num.sum() / den.sum()) if den.sum() else float("nan")


class RecsysSimDataset(Dataset):
    name = "recsys-sim"
    description = (
        "Simulated shop impressions with click -> cart -> purchase; dials for clickbait "
        "conflict and purchase sparsity."
    )
    Params = RecsysSimParams

    def tasks(self, params: DatasetParams) -> list[TaskSpec]:
        return [
            TaskSpec("click", "binary", metrics=("auc", "logloss"), description="impression clicked"),
            TaskSpec(
                "cart",
                "binary",
                metrics=("auc", "logloss"),
                description="added to cart (implies click)",
                implies=("click",),
            ),
            TaskSpec(
                "purchase",
                "binary",
                metrics=("auc", "logloss"),
                description="bought (implies cart)",
                implies=("cart", "click"),
            ),
        ]

    def load(self, params: DatasetParams, seed: int) -> MTLData:
        assert isinstance(params, RecsysSimParams)
        sim = simulate(params)
        click, cart, purchase = sim["click"], sim["cart"], sim["purchase"]
        ev_rows = np.flatnonzero(click)
        ev_types = (click.astype(np.int64) + cart + purchase)[ev_rows]
        seq_items, seq_types, seq_mask = _event_histories(
            sim["user"], click, sim["item"] + 1, ev_rows, ev_types, params.seq_len
        )
        indices = split_indices(params.n_impressions, seed)
        train_idx = indices[0]
        cat = np.stack(
            [sim["user"] + 1, sim["item"] + 1, sim["segment"] + 1, sim["category"] + 1, sim["position"]],
            axis=1,
        ).astype(np.int64)
        dense = np.concatenate(
            [standardise(sim["log_price"], train_idx), standardise(sim["log_activity"], train_idx)], axis=1
        )
        features = {
            "dense": dense,
            "cat": cat,
            "seq_items": seq_items,
            "seq_types": seq_types,
            "seq_mask": seq_mask,
        }
        targets = {"click": click, "cart": cart, "purchase": purchase}
        masks = {"cart": click, "purchase": click} if params.label_space == "clicked" else None
        tr, va, te = make_splits(features, targets, indices, masks)
        spec = FeatureSpec(
            dense_names=("price", "user_activity"),
            cat_names=("user_id", "item_id", "user_segment", "item_category", "position"),
            cat_cardinalities=(
                params.n_users + 1,
                params.n_items + 1,
                N_SEGMENTS + 1,
                N_CATEGORIES + 1,
                N_POSITIONS + 1,
            ),
            sequence=SequenceSpec(
                n_items=params.n_items + 1,
                n_types=4,
                max_len=params.seq_len,
                type_names=("pad", "click", "cart", "purchase"),
            ),
            user_col="user_id",
            item_col="item_id",
        )
        p_cvr = sim["p_cart_given_click"] * sim["p_purchase_given_cart"]
        info: dict[str, object] = {
            "n_rows": params.n_impressions,
            "click_rate": _rate(click),
            "cart_rate": _rate(cart),
            "purchase_rate": _rate(purchase),
            "cart_given_click": _rate(cart, click),
            "purchase_given_click": _rate(purchase, click),
            "purchase_given_cart": _rate(purchase, cart),
            "n_clicks": int(click.sum()),
            "n_carts": int(cart.sum()),
            "n_purchases": int(purchase.sum()),
            "latent_corr_click_vs_cvr": float(np.corrcoef(sim["p_click"], p_cvr)[0, 1]),
            "mean_history_length": float(seq_mask.sum(axis=1).mean()),
            "source": "generated (seeded simulator)",
        }
        return MTLData(self.name, self.tasks(params), spec, tr, va, te, info)


def _event_histories(
    user: np.ndarray,
    is_event: np.ndarray,
    item_ids: np.ndarray,
    ev_rows: np.ndarray,
    ev_types: np.ndarray,
    max_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per impression (rows sorted by (user, time)), the user's strictly earlier events."""
    n = len(user)
    before = np.cumsum(is_event) - is_event  # events in rows < i
    user_start = np.searchsorted(user, user, side="left")
    first_event = before[user_start]  # index of the user's first event
    pos = before[:, None] - max_len + np.arange(max_len)[None, :]
    mask = pos >= first_event[:, None]
    if len(ev_rows) == 0:
        z = np.zeros((n, max_len), dtype=np.int64)
        return z, z.copy(), np.zeros((n, max_len), dtype=bool)
    safe = np.clip(pos, 0, len(ev_rows) - 1)
    seq_items = np.where(mask, item_ids[ev_rows][safe], 0).astype(np.int64)
    seq_types = np.where(mask, ev_types[safe], 0).astype(np.int64)
    return seq_items, seq_types, mask


__all__ = ["RecsysSimDataset", "RecsysSimParams", "simulate"]
