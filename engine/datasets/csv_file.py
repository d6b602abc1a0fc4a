"""A user's own table (CSV or Parquet) as a multi-task dataset, plus the tabular helpers the
built-in datasets share (train-only vocabularies, train-statistics standardisation, splits).

Columns named in `label_columns` become tasks (binary when every value is 0 or 1, else
regression, unless `task_kinds` says otherwise); every other column is a feature: numeric ones
are standardised with train-split statistics (missing -> train mean), string/bool ones are
categorical with a train-split vocabulary (0 = unknown, missing or unseen). Files are read with
pandas/pyarrow only (never pickle).
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from engine.datasets.base import (
    Dataset,
    DatasetParams,
    FeatureSpec,
    MTLData,
    Split,
    TaskSpec,
    split_indices,
)

# ---------------------------------------------------------------------------------------------
# Shared tabular helpers


def fit_vocab(values: pd.Series, min_count: int = 1, max_size: int = 100_000) -> list[str]:
    """Sorted category values seen at least `min_count` times (most frequent `max_size` kept).
    Index j of the list is encoded as j + 1; 0 stays free for unknown/rare/missing."""
    counts = values.dropna().astype(str).value_counts()
    counts = counts[counts >= min_count]
    if len(counts) > max_size:
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_size]
        return sorted(k for k, _ in order)
    return sorted(str(k) for k in counts.index)


def encode(values: pd.Series, vocab: Sequence[str]) -> np.ndarray:
    """Codes in [0, len(vocab)]: position in `vocab` + 1, or 0 when missing or unknown."""
    codes = pd.Index(list(vocab), dtype="string").get_indexer(values.astype("string"))
    return codes.astype(np.int64) + 1  # -1 (missing or unknown) -> 0


def standardise(x: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """Column-wise (x - mean) / std with train-row statistics; NaN -> train mean (i.e. 0)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    out = np.empty(x.shape, dtype=np.float32)
    train = x[train_idx]
    for j in range(x.shape[1]):
        col = train[:, j]
        finite = col[np.isfinite(col)]
        mean = float(finite.mean()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 1.0
        if not math.isfinite(std) or std < 1e-12:
            std = 1.0
        c = np.where(np.isfinite(x[:, j]), x[:, j], mean)
        out[:, j] = (c - mean) / std
    return out


def make_splits(
    features: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
    masks: Mapping[str, np.ndarray] | None = None,
) -> tuple[Split, Split, Split]:
    """Cut full-length arrays into train/val/test Splits (rows in ascending index order)."""
    feats = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in features.items()}
    tgts = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in targets.items()}
    msks = {k: torch.from_numpy(np.asarray(v, dtype=bool)) for k, v in (masks or {}).items()}

    def cut(idx: np.ndarray) -> Split:
        ti = torch.from_numpy(np.sort(idx).astype(np.int64))
        return Split(
            {k: v[ti] for k, v in feats.items()},
            {k: v[ti] for k, v in tgts.items()},
            {k: v[ti] for k, v in msks.items()},
        )

    tr, va, te = indices
    return cut(tr), cut(va), cut(te)


# ---------------------------------------------------------------------------------------------
# The csv dataset

SUPPORTED = {".csv": "CSV", ".tsv": "TSV", ".parquet": "Parquet", ".pq": "Parquet"}
MIN_ROWS = 10
_READ_CACHE: OrderedDict[tuple[str, int, int], pd.DataFrame] = OrderedDict()
_READ_LOCK = threading.Lock()


class CsvParams(DatasetParams):
    path: str = Field(..., min_length=1, description="path of a .csv, .tsv, .parquet or .pq file")
    label_columns: list[str] = Field(..., min_length=1, description="columns to predict, one task each")
    task_kinds: dict[str, Literal["binary", "regression"]] | None = Field(
        None, description="kind per label column; default: 0/1 values -> binary, else regression"
    )
    max_mb: float = Field(200.0, gt=0, le=100_000, description="refuse larger files (MB)")


def _kind_of(path: Path) -> tuple[str, str]:
    name = path.name.lower()
    for ext in (".gz", ".bz2", ".zip", ".xz", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    suffix = Path(name).suffix
    if suffix not in SUPPORTED:
        raise ValueError(
            f"File {path} has unsupported extension {suffix or '(none)'!r}; use .csv, .tsv, .parquet or .pq."
        )
    return suffix, SUPPORTED[suffix]


def _check_file(p: CsvParams) -> tuple[Path, os.stat_result]:
    path = Path(p.path).expanduser()
    if not path.exists():
        raise ValueError(f"File {path} does not exist.")
    if not path.is_file():
        raise ValueError(f"Path {path} is not a file.")
    _kind_of(path)
    st = path.stat()
    size_mb = st.st_size / 1e6
    if size_mb > p.max_mb:
        raise ValueError(
            f"File {path} is {size_mb:.1f} MB, larger than max_mb={p.max_mb:g}; "
            "raise max_mb or use a sample of the file."
        )
    return path.resolve(), st


def read_table(p: CsvParams) -> pd.DataFrame:
    """Read the file (cached by path, mtime and size); ValueError with a one-line reason."""
    path, st = _check_file(p)
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _READ_LOCK:
        if key in _READ_CACHE:
            _READ_CACHE.move_to_end(key)
            return _READ_CACHE[key]
    suffix, kind = _kind_of(path)
    if st.st_size == 0:
        raise ValueError(f"File {path} is empty.")
    try:
        if kind == "Parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", low_memory=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"File {path} is empty.") from None
    except Exception as e:  # pyarrow/pandas raise many types for corrupt files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"Could not read {path} as {kind}: {reason}.") from None
    df.columns = [str(c) for c in df.columns]
    if len(df) == 0:
        raise ValueError(f"File {path} has no rows.")
    with _READ_LOCK:
        _READ_CACHE[key] = df
        while len(_READ_CACHE) > 2:
            _READ_CACHE.popitem(last=False)
    return df


def _label_values(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("float64")
    if pd.api.types.is_numeric_dtype(s):
        num = pd.to_numeric(s, errors="coerce").astype("float64")
    else:
        num = pd.to_numeric(s, errors="coerce")
        bad = s[num.isna() & s.notna()]
        if len(bad):
            raise ValueError(
                f"Label column {col!r} in {path} has non-numeric values such as {bad.iloc[0]!r}; "
                "labels must be numbers (0/1 for binary tasks)."
            )
        num = num.astype("float64")
    values = num.to_numpy(dtype=np.float64)
    n_missing = int((~np.isfinite(values)).sum())
    if n_missing:
        raise ValueError(
            f"Label column {col!r} in {path} has missing or infinite values in {n_missing} rows; "
            "drop or fill those rows first."
        )
    return values


def _task_specs(df: pd.DataFrame, p: CsvParams, path: Path) -> tuple[list[TaskSpec], dict[str, np.ndarray]]:
    labels = list(dict.fromkeys(p.label_columns))
    missing = [c for c in labels if c not in df.columns]
    if missing:
        raise ValueError(
            f"Label column(s) {missing} not found in {path}; available columns: {list(df.columns)}."
        )
    kinds = p.task_kinds or {}
    extra = [k for k in kinds if k not in labels]
    if extra:
        raise ValueError(f"task_kinds names {extra}, which are not among label_columns {labels}.")
    specs: list[TaskSpec] = []
    values: dict[str, np.ndarray] = {}
    for col in labels:
        v = _label_values(df, col, path)
        is01 = bool(np.isin(v, (0.0, 1.0)).all())
        kind = kinds.get(col) or ("binary" if is01 else "regression")
        if kind == "binary" and not is01:
            example = v[~np.isin(v, (0.0, 1.0))][0]
            raise ValueError(
                f"Label column {col!r} in {path} is declared binary but has the value {example:g}; "
                "binary labels must be 0 or 1."
            )
        specs.append(TaskSpec(col, kind, description=f"column {col!r} of {path.name}"))
        values[col] = v.astype(np.float32)
    return specs, values


class CsvDataset(Dataset):
    name = "csv"
    description = "Your own CSV or Parquet table: pick the label columns, every other column is a feature."
    Params = CsvParams

    def cache_token(self, params: DatasetParams) -> str:
        """Identity of the file on disk, so that load_dataset's cache notices edits."""
        assert isinstance(params, CsvParams)
        try:
            st = Path(params.path).expanduser().stat()
        except OSError:
            return "missing"
        return f"{st.st_mtime_ns}:{st.st_size}"

    def tasks(self, params: DatasetParams) -> list[TaskSpec]:
        assert isinstance(params, CsvParams)
        df = read_table(params)
        return _task_specs(df, params, Path(params.path).expanduser().resolve())[0]

    def load(self, params: DatasetParams, seed: int) -> MTLData:
        assert isinstance(params, CsvParams)
        path = Path(params.path).expanduser().resolve()
        df = read_table(params)
        tasks, targets = _task_specs(df, params, path)
        if len(df) < MIN_ROWS:
            raise ValueError(f"File {path} has only {len(df)} rows; at least {MIN_ROWS} are needed.")
        label_set = {t.name for t in tasks}
        feature_cols = [c for c in df.columns if c not in label_set]
        if not feature_cols:
            raise ValueError(
                f"File {path} has no feature columns besides the label columns {sorted(label_set)}."
            )
        indices = split_indices(len(df), seed)
        train_idx = indices[0]
        dense_names: list[str] = []
        dense_cols: list[np.ndarray] = []
        cat_names: list[str] = []
        cat_cards: list[int] = []
        cat_cols: list[np.ndarray] = []
        for c in feature_cols:
            s = df[c]
            if pd.api.types.is_bool_dtype(s) or not (
                pd.api.types.is_numeric_dtype(s)
                or pd.api.types.is_datetime64_any_dtype(s)
                or pd.api.types.is_timedelta64_dtype(s)
            ):
                vocab = fit_vocab(s.iloc[train_idx])
                cat_names.append(c)
                cat_cards.append(len(vocab) + 1)
                cat_cols.append(encode(s, vocab))
                continue
            if pd.api.types.is_datetime64_any_dtype(s):
                x = (s - pd.Timestamp("1970-01-01", tz=s.dt.tz)).dt.total_seconds()
            elif pd.api.types.is_timedelta64_dtype(s):
                x = s.dt.total_seconds()
            else:
                x = s.astype("float64")
            dense_names.append(c)
            dense_cols.append(x.to_numpy(dtype=np.float64, na_value=np.nan))
        features: dict[str, np.ndarray] = {}
        if dense_cols:
            features["dense"] = standardise(np.stack(dense_cols, axis=1), train_idx)
        if cat_cols:
            features["cat"] = np.stack(cat_cols, axis=1).astype(np.int64)
        tr, va, te = make_splits(features, targets, indices)
        spec = FeatureSpec(
            dense_names=tuple(dense_names), cat_names=tuple(cat_names), cat_cardinalities=tuple(cat_cards)
        )
        info: dict[str, object] = {
            "path": str(path),
            "n_rows": len(df),
            "dense_columns": dense_names,
            "categorical_columns": cat_names,
            "positive_rate": {t.name: float(targets[t.name].mean()) for t in tasks if t.kind == "binary"},
        }
        return MTLData(self.name, tasks, spec, tr, va, te, info)
