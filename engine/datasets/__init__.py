"""Dataset registry and the one loading entry point.

Adding a dataset: one new file with a `Dataset` subclass, one line in `DATASETS`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from engine.datasets.adult import AdultDataset
from engine.datasets.base import (
    Dataset,
    DatasetParams,
    FeatureSpec,
    MTLData,
    SequenceSpec,
    Split,
    TaskSpec,
    split_indices,
)
from engine.datasets.csv_file import CsvDataset
from engine.datasets.movielens import MovieLens100kDataset
from engine.datasets.recsys_sim import RecsysSimDataset
from engine.datasets.synthetic import SyntheticCorrelationDataset

DATASETS: dict[str, Dataset] = {
    "synthetic-correlation": SyntheticCorrelationDataset(),
    "adult": AdultDataset(),
    "movielens-100k": MovieLens100kDataset(),
    "recsys-sim": RecsysSimDataset(),
    "csv": CsvDataset(),
}

CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, str, int, str], MTLData] = OrderedDict()
_lock = threading.Lock()


def get_dataset(name: str) -> Dataset:
    """The registered dataset called `name`; a ValueError listing the choices otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def validate_params(name: str, params: Mapping[str, Any] | DatasetParams | None) -> DatasetParams:
    """Turn a dict (or None, or a params object) into the dataset's validated `Params`."""
    ds = get_dataset(name)
    if params is None:
        return ds.Params()
    if isinstance(params, ds.Params):
        return params
    if isinstance(params, DatasetParams):
        params = params.model_dump()
    return ds.Params.model_validate(dict(params))


def load_dataset(name: str, params: Mapping[str, Any] | DatasetParams | None, seed: int) -> MTLData:
    """Validate `params`, load the dataset and split it by `seed`.

    Results are cached in-process (an LRU of `CACHE_SIZE` entries keyed by name, params JSON,
    seed and, for file-backed datasets, the file's identity). The returned tensors are shared
    between callers: treat them as read-only.
    """
    ds = get_dataset(name)
    p = validate_params(name, params)
    token_fn = getattr(ds, "cache_token", None)
    token = token_fn(p) if callable(token_fn) else ""
    key = (name, p.model_dump_json(), int(seed), token)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    data = ds.load(p, int(seed))
    with _lock:
        _cache[key] = data
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return data


def clear_cache() -> None:
    """Forget every cached dataset."""
    with _lock:
        _cache.clear()


__all__ = [
    "CACHE_SIZE",
    "DATASETS",
    "Dataset",
    "DatasetParams",
    "FeatureSpec",
    "MTLData",
    "SequenceSpec",
    "Split",
    "TaskSpec",
    "clear_cache",
    "get_dataset",
    "load_dataset",
    "split_indices",
    "validate_params",
]
