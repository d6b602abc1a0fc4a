"""Validated run configuration.

`RunConfig` is the one description of a training run: the CLI builds it from flags or a
YAML/JSON file, the dashboard from widgets, sweeps from a grid. Validation happens here, with a
message naming the field and the allowed values, before anything is queued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration a user wrote is invalid; the message says which value and why."""


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        "synthetic-correlation", description="dataset name (see `python -m engine datasets`)"
    )
    dataset_params: dict[str, Any] = Field(default_factory=dict)
    tasks: list[str] | None = Field(None, description="subset of the dataset's tasks; default all")
    arch: str = Field("mmoe", description="architecture name")
    arch_params: dict[str, Any] = Field(default_factory=dict)
    balancer: str = Field("ew", description="balancer name")
    balancer_params: dict[str, Any] = Field(default_factory=dict)
    gradients: Literal["exact", "representation"] = Field(
        "exact",
        description="how a Gramian-based gradient balancer weighs the tasks: 'exact' (task gradients "
        "w.r.t. the shared parameters) or 'representation' (MGDA-UB: the Gramian of the task gradients "
        "at the shared representation; about the cost of an EW step, approximate weights)",
    )

    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads; 0 = library default")

    early_stopping_metric: str | None = Field(
        None, description="'task:metric' on validation; default: first task's primary metric"
    )
    patience: int = Field(0, ge=0, le=1000, description="epochs without improvement; 0 = off")
    grad_stats_every: int = Field(
        10, ge=0, le=1_000_000, description="steps between gradient statistics; 0 = never"
    )
    log_every: int = Field(1, ge=1, le=1_000_000, description="steps between train-loss rows")
    max_steps_per_epoch: int = Field(0, ge=0, description="0 = full epoch")

    name: str = Field("", max_length=200)
    tags: list[str] = Field(default_factory=list)
    sweep_id: str | None = None
    owner: str = Field("", max_length=100, description="who submitted it (dashboard session or user)")

    @model_validator(mode="after")
    def _check_registries(self) -> RunConfig:
        resolve(self)
        return self


def _fmt_validation(prefix: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{prefix}{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def resolve(cfg: RunConfig) -> dict[str, Any]:
    """Check names and parameters against the registries; return validated params objects."""
    from engine.balancers import BALANCERS
    from engine.datasets import DATASETS
    from engine.models import MODELS

    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {sorted(DATASETS)}")
    if cfg.arch not in MODELS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {sorted(MODELS)}")
    if cfg.balancer not in BALANCERS:
        raise ValueError(f"unknown balancer {cfg.balancer!r}; choose one of {sorted(BALANCERS)}")
    ds = DATASETS[cfg.dataset]
    model_cls = MODELS[cfg.arch]
    bal_cls = BALANCERS[cfg.balancer]
    try:
        dparams = ds.Params(**cfg.dataset_params)
    except ValidationError as e:
        raise ValueError(_fmt_validation("dataset_params.", e)) from None
    try:
        aparams = model_cls.Params(**cfg.arch_params)
    except ValidationError as e:
        raise ValueError(_fmt_validation("arch_params.", e)) from None
    try:
        bparams = bal_cls.Params(**cfg.balancer_params)
    except ValidationError as e:
        raise ValueError(_fmt_validation("balancer_params.", e)) from None
    if getattr(model_cls, "single_task", False) and bal_cls.kind == "gradient":
        raise ValueError(
            f"arch {cfg.arch!r} shares no parameters, so the gradient balancer {cfg.balancer!r} has nothing "
            "to aggregate; use a loss-weighting balancer such as 'ew'"
        )
    if cfg.gradients == "representation" and not getattr(bal_cls, "gramian_based", lambda: False)():
        from engine.balancers import representation_balancers

        raise ValueError(
            f"gradients 'representation' needs a balancer whose task weights come from the Gramian; "
            f"{cfg.balancer!r} is not one. Choose one of {representation_balancers()} or gradients 'exact'"
        )
    available = [t.name for t in ds.tasks(dparams)]
    tasks = cfg.tasks or available
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise ValueError(f"tasks {unknown} not in dataset {cfg.dataset!r}; available: {available}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks listed twice: {tasks}")
    check = getattr(bal_cls, "check_tasks", None)
    if check is not None:
        check(bparams, tasks)
    specs = {t.name: t for t in ds.tasks(dparams)}
    check = getattr(model_cls, "check_tasks", None)
    if check is not None:  # in the run's task order: cascades read it as the funnel order
        check(aparams, [specs[t] for t in tasks])
    check = getattr(model_cls, "check_features", None)
    if check is not None:  # e.g. sequence models need behaviour sequences; the load is cached
        from engine.datasets import load_dataset

        check(aparams, load_dataset(cfg.dataset, dparams, cfg.seed).features)
    if cfg.early_stopping_metric is not None:
        task, _, metric = cfg.early_stopping_metric.partition(":")
        if task not in tasks or not metric:
            raise ValueError(
                f"early_stopping_metric must be 'task:metric' with a task among {tasks}, "
                f"got {cfg.early_stopping_metric!r}"
            )
        spec = next(t for t in ds.tasks(dparams) if t.name == task)
        if metric not in spec.metrics:
            raise ValueError(f"task {task!r} has metrics {list(spec.metrics)}, not {metric!r}")
    return {"dataset": dparams, "arch": aparams, "balancer": bparams, "tasks": tasks}


def load_config(data: dict[str, Any]) -> RunConfig:
    """Validate a plain dict; raise ConfigError with one readable message."""
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(_fmt_validation("", e)) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (not yet validated)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(
            f"config file {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of fields, got {type(data).__name__}")
    return data
