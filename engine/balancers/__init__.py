"""Balancers: loss weighting and gradient aggregation methods, one file each.

`BALANCERS` maps a name to its class (one line per method; the dashboard reads names,
descriptions and `Params` schemas from it). `build_balancer` validates parameters and builds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from engine.balancers.adatask import AdaTask
from engine.balancers.alignedmtl import AlignedMTL
from engine.balancers.base import Balancer, BalancerParams, StepContext
from engine.balancers.cagrad import CAGrad
from engine.balancers.dbmtl import DBMTL
from engine.balancers.dwa import DWA
from engine.balancers.ew import EW
from engine.balancers.famo import FAMO
from engine.balancers.fixed import Fixed
from engine.balancers.gls import GLS
from engine.balancers.gradcraft import GradCraft
from engine.balancers.graddrop import GradDrop
from engine.balancers.gradnorm import GradNorm
from engine.balancers.gradvac import GradVac
from engine.balancers.imtl import IMTL
from engine.balancers.metabalance import MetaBalance
from engine.balancers.mgda import MGDA
from engine.balancers.nashmtl import NashMTL
from engine.balancers.pcgrad import PCGrad
from engine.balancers.pmtrec import PMTRec
from engine.balancers.rlw import RLW
from engine.balancers.upgrad import UPGrad
from engine.balancers.uw import UW

BALANCERS: dict[str, type[Balancer]] = {
    "fixed": Fixed,
    "ew": EW,
    "uw": UW,
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "dwa": DWA,
    "gls": GLS,
    "rlw": RLW,
    "famo": FAMO,
    "dbmtl": DBMTL,
    "gradvac": GradVac,
    "graddrop": GradDrop,
    "imtl": IMTL,
    "nashmtl": NashMTL,
    "alignedmtl": AlignedMTL,
    "upgrad": UPGrad,
    "gradcraft": GradCraft,
    "metabalance": MetaBalance,
    "adatask": AdaTask,
    "pmtrec": PMTRec,
}

__all__ = [
    "BALANCERS",
    "Balancer",
    "BalancerParams",
    "StepContext",
    "build_balancer",
    "representation_balancers",
]


def build_balancer(
    name: str, task_names: list[str], params: Mapping[str, Any] | BalancerParams | None = None
) -> Balancer:
    """Validate `params` against the balancer's `Params` and the task list, then build it.

    Raises ValueError naming the offending field (e.g. "balancer_params.c: ...").
    """
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; choose one of {sorted(BALANCERS)}")
    cls = BALANCERS[name]
    tasks = list(task_names)
    if not tasks:
        raise ValueError("a balancer needs at least one task")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks listed twice: {tasks}")
    if params is None:
        params = {}
    if isinstance(params, BalancerParams):
        if not isinstance(params, cls.Params):
            raise ValueError(
                f"balancer {name!r} takes {cls.Params.__qualname__}, got {type(params).__qualname__}"
            )
        validated = params
    elif isinstance(params, Mapping):
        try:
            validated = cls.Params.model_validate(dict(params))
        except ValidationError as e:
            parts = [
                f"balancer_params.{'.'.join(str(x) for x in err['loc']) or '(value)'}: {err['msg']}"
                for err in e.errors()
            ]
            raise ValueError("; ".join(parts)) from None
    else:
        raise ValueError(f"balancer_params must be a mapping, got {type(params).__name__}")
    check = getattr(cls, "check_tasks", None)
    if check is not None:
        check(validated, tasks)
    return cls(tasks, validated)


def representation_balancers() -> list[str]:
    """Balancers that can weigh the tasks by the representation Gramian (`gradients:
    representation`, MGDA-UB style): the Gramian-based gradient aggregators."""
    return [n for n, c in BALANCERS.items() if getattr(c, "gramian_based", lambda: False)()]
