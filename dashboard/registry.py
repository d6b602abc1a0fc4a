"""What the registries offer, for the Launch page: names, descriptions, tasks and diagrams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    params: type[BaseModel]
    kind: str = ""


def _fmt(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'value'}: {err['msg']}" for err in e.errors())


def datasets() -> list[Entry]:
    from engine.datasets import DATASETS

    return [Entry(n, d.description, d.Params) for n, d in DATASETS.items()]


def architectures() -> list[Entry]:
    from engine.models import MODELS

    return [
        Entry(n, m.description, m.Params, "single-task" if getattr(m, "single_task", False) else "")
        for n, m in MODELS.items()
    ]


def balancers() -> list[Entry]:
    from engine.balancers import BALANCERS

    return [Entry(n, b.description, b.Params, getattr(b, "kind", "")) for n, b in BALANCERS.items()]


def representation_balancers() -> list[str]:
    """Balancers that can weigh tasks by the representation Gramian (MGDA-UB style)."""
    from engine.balancers import representation_balancers as names

    return names()


def dataset_tasks(name: str, params: dict[str, Any]) -> tuple[list[Any], str | None]:
    """(TaskSpec list, error text) for a dataset and its params, without loading the data."""
    from engine.datasets import DATASETS

    ds = DATASETS.get(name)
    if ds is None:
        return [], f"unknown dataset {name!r}"
    try:
        p = ds.Params(**params)
    except ValidationError as e:
        return [], _fmt(e)
    try:
        return list(ds.tasks(p)), None
    except (ValueError, OSError) as e:
        return [], str(e)


def arch_diagram(arch: str, tasks: list[Any], params: dict[str, Any]) -> tuple[dict[str, list], str | None]:
    """The architecture's `diagram()` for these tasks and params (built on a placeholder input)."""
    from engine.datasets.base import FeatureSpec, SequenceSpec
    from engine.models import MODELS

    cls = MODELS.get(arch)
    if cls is None:
        return {"nodes": [], "edges": []}, f"unknown architecture {arch!r}"
    try:
        p = cls.Params(**params)
    except ValidationError as e:
        return {"nodes": [], "edges": []}, _fmt(e)
    try:
        features = FeatureSpec(
            dense_names=("x",),
            cat_names=("user", "item"),
            cat_cardinalities=(4, 4),
            sequence=SequenceSpec(n_items=4, n_types=3, max_len=4, type_names=("click", "cart", "buy")),
            user_col="user",
            item_col="item",
        )
        model = cls(features, tasks, p)
        d = model.diagram()
    except Exception as e:  # a model refusing these tasks explains why
        return {"nodes": [], "edges": []}, str(e)
    nodes = [
        (i, "input features" if kind == "input" else label, kind) for i, label, kind in d.get("nodes", [])
    ]
    return {"nodes": nodes, "edges": list(d.get("edges", []))}, None


def is_single_task(arch: str) -> bool:
    from engine.models import MODELS

    cls = MODELS.get(arch)
    return bool(getattr(cls, "single_task", False))
