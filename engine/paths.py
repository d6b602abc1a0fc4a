"""Where things live on disk."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """Root of the run lake: `$SEESAW_HOME` when set, else `<repo>/data/runs`."""
    env = os.environ.get("SEESAW_HOME")
    root = Path(env).expanduser() if env else REPO_ROOT / "data" / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root
