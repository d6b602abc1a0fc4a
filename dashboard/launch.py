"""Pure helpers of the Launch page: seeds, run configs, weight-sweep configs and validation."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from dashboard.figures.simplex import simplex_grid

MAX_SEEDS = 20
MAX_SWEEP_RUNS = 60


def parse_seeds(text: str) -> list[int]:
    """'0' -> [0]; '0, 1, 2' -> [0, 1, 2]; '0-3' -> [0, 1, 2, 3]. ValueError with a reason otherwise."""
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo.strip():
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError(f"seed range {part!r} runs backwards")
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError as e:
            if "backwards" in str(e):
                raise
            raise ValueError(f"seeds: {part!r} is not a whole number or a range like 0-3") from None
    if not out:
        raise ValueError("seeds: give at least one seed (e.g. 0, or 0, 1, 2, or 0-4)")
    if any(s < 0 for s in out):
        raise ValueError("seeds must be >= 0")
    out = list(dict.fromkeys(out))
    if len(out) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seeds at once (got {len(out)})")
    return out


def parse_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run_configs(base: dict[str, Any], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One config per seed."""
    out = []
    for s in seeds:
        cfg = dict(base)
        cfg["seed"] = int(s)
        if len(seeds) > 1 and cfg.get("name"):
            cfg["name"] = f"{cfg['name']} (seed {s})"
        out.append(cfg)
    return out


def new_sweep_id() -> str:
    return time.strftime("sweep-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def sweep_configs(
    base: dict[str, Any],
    tasks: Sequence[str],
    resolution: int,
    seeds: Sequence[int],
    include_corners: bool = True,
    sweep_id: str | None = None,
) -> list[dict[str, Any]]:
    """Fixed-balancer runs on a simplex grid of task weights, grouped by one sweep_id."""
    if len(tasks) not in (2, 3):
        raise ValueError(f"a weight sweep needs 2 or 3 tasks, got {len(tasks)}")
    sweep_id = sweep_id or new_sweep_id()
    grid = simplex_grid(len(tasks), resolution, include_corners)
    out: list[dict[str, Any]] = []
    for w in grid:
        weights = {t: float(x) for t, x in zip(tasks, w, strict=True)}
        label = "/".join(f"{x:.2f}" for x in w)
        for s in seeds:
            cfg = dict(base)
            cfg.update(
                balancer="fixed",
                balancer_params={"weights": weights},
                seed=int(s),
                sweep_id=sweep_id,
                name=f"w={label}" + (f" (seed {s})" if len(seeds) > 1 else ""),
                tags=[*base.get("tags", []), "sweep"],
            )
            out.append(cfg)
    return out


def validate(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Error texts of configs that engine.config.load_config rejects (deduplicated)."""
    from engine.config import ConfigError, load_config

    errors: list[str] = []
    for c in configs:
        try:
            load_config(c)
        except ConfigError as e:
            if str(e) not in errors:
                errors.append(str(e))
    return errors
