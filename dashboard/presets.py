"""Quick-start presets for the Home page: small experiments that train in seconds on a laptop CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    description: str
    configs: list[dict[str, Any]] = field(default_factory=list)
    page: str = "pages/live.py"


_TINY_SYNTH = {"n_samples": 3000, "dim": 16, "correlation": -0.6, "n_sines": 4, "data_seed": 0}
_SYNTH_COMMON: dict[str, Any] = {
    "dataset": "synthetic-correlation",
    "dataset_params": _TINY_SYNTH,
    "epochs": 30,
    "batch_size": 32,
    "lr": 0.003,
    "seed": 0,
    "grad_stats_every": 4,
    "threads": 1,
    "device": "cpu",
}
_SMALL_MLP = {"bottom_hidden": [32, 16], "tower_hidden": [8]}

_REAL_COMMON: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 512,
    "lr": 0.003,
    "seed": 0,
    "grad_stats_every": 5,
    "max_steps_per_epoch": 30,
    "threads": 1,
    "device": "cpu",
}

PRESETS: list[Preset] = [
    Preset(
        "negative-transfer",
        "Negative transfer on synthetic data",
        "Two regression tasks whose true weights point against each other (correlation −0.6), one "
        "shared network vs. a separate network per task. Watch the gradients conflict.",
        [
            {
                **_SYNTH_COMMON,
                "arch": "shared-bottom",
                "arch_params": _SMALL_MLP,
                "balancer": "ew",
                "name": "shared-bottom, anti-correlated tasks",
                "tags": ["preset", "negative-transfer"],
            },
            {
                **_SYNTH_COMMON,
                "arch": "single-task",
                "arch_params": {"hidden": [32, 16]},
                "balancer": "ew",
                "name": "single-task baseline",
                "tags": ["preset", "negative-transfer", "baseline"],
            },
        ],
    ),
    Preset(
        "mmoe-vs-sb-adult",
        "MMoE vs Shared-Bottom on Adult",
        "The MMoE paper's real-data pair: income and never-married on UCI Adult. Does a gate per task "
        "beat one shared bottom?",
        [
            {
                **_REAL_COMMON,
                "dataset": "adult",
                "arch": "mmoe",
                "balancer": "ew",
                "arch_params": {"n_experts": 4, "expert_hidden": [32, 16], "tower_hidden": [8]},
                "name": "MMoE on Adult",
                "tags": ["preset", "adult"],
            },
            {
                **_REAL_COMMON,
                "dataset": "adult",
                "arch": "shared-bottom",
                "balancer": "ew",
                "arch_params": {"bottom_hidden": [32, 16], "tower_hidden": [8]},
                "name": "Shared-Bottom on Adult",
                "tags": ["preset", "adult"],
            },
        ],
    ),
    Preset(
        "pcgrad-vs-ew-movielens",
        "PCGrad vs EW on MovieLens",
        "Rating regression and a binary like-task on MovieLens-100k: does projecting away conflicting "
        "gradients (PCGrad) help over the plain sum (EW)?",
        [
            {
                **_REAL_COMMON,
                "dataset": "movielens-100k",
                "arch": "shared-bottom",
                "balancer": "pcgrad",
                "arch_params": {"bottom_hidden": [32, 16], "tower_hidden": [8]},
                "name": "PCGrad on MovieLens",
                "tags": ["preset", "movielens"],
            },
            {
                **_REAL_COMMON,
                "dataset": "movielens-100k",
                "arch": "shared-bottom",
                "balancer": "ew",
                "arch_params": {"bottom_hidden": [32, 16], "tower_hidden": [8]},
                "name": "EW on MovieLens",
                "tags": ["preset", "movielens"],
            },
        ],
    ),
]


def preset(key: str) -> Preset:
    for p in PRESETS:
        if p.key == key:
            return p
    raise KeyError(f"no preset {key!r}; presets: {[p.key for p in PRESETS]}")
