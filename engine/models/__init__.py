"""Architecture registry and the one construction entry point.

Adding an architecture: one new file with an `MTLModel` subclass, one line in `MODELS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from engine.datasets.base import FeatureSpec, TaskSpec
from engine.models.aitm import AITM
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.cgc import CGC
from engine.models.cross_stitch import CrossStitch
from engine.models.dselect_k import DSelectK
from engine.models.dtrn import DTRN
from engine.models.esm2 import ESM2
from engine.models.esmm import ESMM
from engine.models.gating_enhanced import GatingEnhanced
from engine.models.hierarchical import Hierarchical
from engine.models.metaheac import MetaHeac
from engine.models.mmoe import MMoE
from engine.models.mssm import MSSM
from engine.models.omoe import OMoE
from engine.models.ple import PLE
from engine.models.shared_bottom import SharedBottom
from engine.models.single_task import SingleTask

MODELS: dict[str, type[MTLModel]] = {
    "single-task": SingleTask,
    "shared-bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "hierarchical": Hierarchical,
    "omoe": OMoE,
    "cgc": CGC,
    "dselect-k": DSelectK,
    "cross-stitch": CrossStitch,
    "gating-enhanced": GatingEnhanced,
    "mssm": MSSM,
    "esmm": ESMM,
    "esm2": ESM2,
    "aitm": AITM,
    "dtrn": DTRN,
    "metaheac": MetaHeac,
}

__all__ = [
    "MLP",
    "MODELS",
    "FeatureEncoder",
    "MTLModel",
    "ModelParams",
    "build_model",
    "validate_params",
]


def _model_class(name: str) -> type[MTLModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(MODELS)}") from None


def validate_params(name: str, params: Mapping[str, Any] | ModelParams | None = None) -> ModelParams:
    """The architecture's validated `Params`; ValueError naming each bad field otherwise."""
    cls = _model_class(name)
    if isinstance(params, cls.Params):
        return params
    if params is None:
        raw: dict[str, Any] = {}
    elif isinstance(params, ModelParams):
        raw = params.model_dump(exclude_unset=True)
    elif isinstance(params, Mapping):
        raw = dict(params)
    else:
        raise ValueError(f"{name} params must be a dict or a ModelParams, got {type(params).__name__}")
    try:
        return cls.Params(**raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(value)'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"invalid {name} params: {problems}") from None


def build_model(
    name: str,
    features: FeatureSpec,
    tasks: Sequence[TaskSpec],
    params: Mapping[str, Any] | ModelParams | None = None,
) -> MTLModel:
    """Construct the architecture `name` for these features and tasks, validating `params`."""
    cls = _model_class(name)
    p = validate_params(name, params)
    task_list = list(tasks)
    if not task_list:
        raise ValueError(f"{name}: at least one task is needed")
    names = [t.name for t in task_list]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: task names must be unique, got {names}")
    check = getattr(cls, "check_tasks", None)
    if check is not None:
        check(p, task_list)
    return cls(features, task_list, p)
