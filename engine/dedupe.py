"""Find-or-submit: one run per distinct configuration, however many people ask at once.

A workshop has 30 people clicking the same preset within seconds; they must share one run, not
start 30 identical ones. `find_or_submit(config, lake)` returns the run of that configuration if
one exists (queued, running or finished) and otherwise queues it, atomically across threads
and processes:

- the key is a content hash of the *normalised* config (`config_key`): defaults filled in by
  validation, the dataset/architecture/balancer parameters expanded by their schemas, the task
  list made explicit, and the fields that do not change what is trained dropped (`name`,
  `tags`, `owner`), so `{"epochs": 3}` and a config spelling out every default share a key;
- `<lake>/_dedupe/<key>.json` names the run of the key (written by atomic rename), and
  `<key>.lock` is an exclusive `flock` held while one caller looks the marker up and, when it
  names no usable run, creates the run and the marker. flock excludes every other open file
  description, so 30 threads of one process and any number of processes serialise on it;
  readers that only look (`find_run`) never take it.

A marker whose run was deleted counts as absent. A failed or cancelled run is returned as it is
(a page that re-submits on every redraw must not loop over a broken config) unless the caller
asks for a retry (`retry_failed=True`), which queues a fresh run and re-points the marker.

`find_or_create` is the same lock-and-marker protocol for other kinds of work (a COSMOS run
launched in its own process, say): the caller supplies the key material and the create step.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.recorder import read_json_dict, write_json_atomic
from engine.store import Lake, RunNotFoundError

if TYPE_CHECKING:
    from engine.config import RunConfig

DEDUPE_DIR = "_dedupe"
#: RunConfig fields that label a run without changing what is trained.
COSMETIC_FIELDS: tuple[str, ...] = ("name", "tags", "owner")
RETRY_STATES = ("failed", "cancelled")


def _as_dict(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    if hasattr(config, "model_dump"):
        return dict(config.model_dump(mode="json"))  # type: ignore[union-attr]
    return dict(config)


def normalise(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as validated JSON with defaults filled in and cosmetic fields dropped.

    Raises engine.config.ConfigError for an invalid config (nothing is queued then).
    """
    from engine.config import load_config, resolve

    cfg = load_config(_as_dict(config))
    resolved = resolve(cfg)
    out = cfg.model_dump(mode="json")
    for k in COSMETIC_FIELDS:
        out.pop(k, None)
    out["dataset_params"] = resolved["dataset"].model_dump(mode="json")
    out["arch_params"] = resolved["arch"].model_dump(mode="json")
    out["balancer_params"] = resolved["balancer"].model_dump(mode="json")
    out["tasks"] = list(resolved["tasks"])
    return out


def key_of(material: Mapping[str, Any]) -> str:
    """A 24-hex content hash of JSON-able key material (sorted keys, compact separators)."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def config_key(config: RunConfig | Mapping[str, Any]) -> str:
    """The content hash of a run config (see `normalise`)."""
    return key_of(normalise(config))


def _dir(lake: Lake) -> Path:
    d = lake.root / DEDUPE_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked(lake: Lake, key: str) -> Iterator[None]:
    fd = os.open(_dir(lake) / f"{key}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _marked(lake: Lake, key: str) -> str | None:
    """The run id the marker of `key` names, if that run still exists."""
    rid = read_json_dict(_dir(lake) / f"{key}.json").get("run_id")
    if isinstance(rid, str) and lake.exists(rid):
        return rid
    return None


def _state(lake: Lake, run_id: str) -> str:
    try:
        return str(lake.status(run_id).get("state", "unknown"))
    except (RunNotFoundError, ValueError):
        return "unknown"


def find_by_key(key: str, lake: Lake | None = None) -> str | None:
    """The run recorded for `key`, or None (no lock taken: a lookup only)."""
    return _marked(lake or Lake(), key)


def find_or_create(
    key: str,
    create: Callable[[], str],
    lake: Lake | None = None,
    retry_failed: bool = False,
    material: Mapping[str, Any] | None = None,
) -> tuple[str, bool]:
    """(run id, created): the run recorded for `key`, or the one `create()` makes now.

    `create` runs under the key's lock, so it is called at most once per key however many
    threads and processes ask together. `material` (what the key hashes) is stored in the
    marker for people reading the lake.
    """
    lake = lake or Lake()
    with _locked(lake, key):
        rid = _marked(lake, key)
        if rid is not None and not (retry_failed and _state(lake, rid) in RETRY_STATES):
            return rid, False
        new = create()
        write_json_atomic(
            _dir(lake) / f"{key}.json",
            {"run_id": new, "created": time.time(), "previous": rid, "key": dict(material or {})},
        )
        return new, True


def find_run(config: RunConfig | Mapping[str, Any], lake: Lake | None = None) -> str | None:
    """The run of this configuration if one was submitted through `find_or_submit`, else None."""
    return find_by_key(config_key(config), lake)


def find_or_submit(
    config: RunConfig | Mapping[str, Any], lake: Lake | None = None, retry_failed: bool = False
) -> tuple[str, bool]:
    """(run id, created): the run of this configuration, queued for the worker if there was none.

    The config is validated first (ConfigError otherwise). The queued run keeps the caller's
    name, tags and owner; later callers with other labels share it.
    """
    from engine.config import load_config
    from engine.jobs import submit

    lake = lake or Lake()
    cfg = load_config(_as_dict(config))
    material = normalise(cfg)
    return find_or_create(
        key_of(material), lambda: submit(cfg, lake), lake, retry_failed=retry_failed, material=material
    )


# ---- COSMOS runs (trained in their own process by engine.cosmos) ----------------------------


def cosmos_material(
    config: RunConfig | Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Key material of a COSMOS run: the normalised config and the validated COSMOS parameters."""
    from engine.cosmos import params_from

    cosmos = params_from(dict(params or {})).model_dump()
    return {"kind": "cosmos", "config": normalise(config), "cosmos": cosmos}


def find_cosmos(
    config: RunConfig | Mapping[str, Any], params: Mapping[str, Any] | None = None, lake: Lake | None = None
) -> str | None:
    return find_by_key(key_of(cosmos_material(config, params)), lake)


def find_or_launch_cosmos(
    config: RunConfig | Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    lake: Lake | None = None,
    retry_failed: bool = False,
) -> tuple[str, bool]:
    """(run id, created): the COSMOS run of this config and parameters, launched in a detached
    trainer process (engine.cosmos.launch_cosmos) if there was none."""
    from engine.config import load_config
    from engine.cosmos import launch_cosmos

    lake = lake or Lake()
    cfg = load_config(_as_dict(config))
    material = cosmos_material(cfg, params)
    return find_or_create(
        key_of(material),
        lambda: launch_cosmos(cfg, dict(params or {}), lake)[0],
        lake,
        retry_failed=retry_failed,
        material=material,
    )
