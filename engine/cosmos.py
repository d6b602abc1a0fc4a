"""Pareto-front learning: one model conditioned on the preference vector, trained once.

The preference reaches the model by `CosmosParams.conditioning` (engine.hypernet): "hypernet"
(the default; a Pareto HyperNetwork, Navon et al., ICLR 2021, generates the weights from the
preference) or "input" (COSMOS, below). The run kind, files and training loop are COSMOS's for
both; only the conditioning differs. lambda defaults to 0 (linear scalarisation, PHN-LS).

COSMOS (Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep Multi-Objective
Learning", ICDM 2021; official code github.com/ruchtem/cosmos): the preference ray r (a point of
the simplex) is appended to every input row ("input conditioning"; for tabular data the rays are
concatenated to the features), and for each batch one r is drawn from a Dirichlet(alpha). The
batch loss is the linear scalarisation plus a cosine penalty that pulls the loss vector L towards
the ray:

    loss = sum_t r_t L_t  -  lambda * cos(r, L).

After one training run, the model answers any preference by a forward pass: `evaluate_preference`
gives the per-task metrics of one preference, `learned_front` those of many (the Pareto page's
slider moves a point along this learned front).

A COSMOS run is an ordinary run directory: `config.json` holds a RunConfig (the architecture,
data, optimiser and epochs; balancer "ew", tag "cosmos"), `cosmos.json` the COSMOS parameters,
and the trainer writes the usual tables: per-step train losses and the sampled preference (as
task weights), per-epoch validation metrics at the uniform preference, test metrics at the
uniform preference, and `checkpoint.pt` (with the COSMOS parameters). The model sees the
dataset's features plus T extra dense columns named `pref:<task>`.

Early stopping and the best epoch use the validation loss scalarised by each preference of a
fixed set of evaluation rays (`eval_rays`), averaged over the rays: the whole front, not one
point of it, has to improve.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import metrics as M
from engine.best_epoch import BestEpoch
from engine.config import RunConfig, load_config, resolve
from engine.datasets import load_dataset
from engine.datasets.base import FeatureSpec, MTLData, Split
from engine.devices import describe
from engine.hypernet import PREF_PREFIX, Conditioned, HyperConditioned, InputConditioned
from engine.hypernet import with_preference as with_preference  # re-exported
from engine.models import build_model
from engine.models.base import MTLModel
from engine.recorder import RunWriter, read_json_dict, write_json_atomic
from engine.store import Lake
from engine.train import (
    EVAL_BATCH,
    NullWriter,
    TrainingError,
    TrainResult,
    Writer,
    _make_optimizer,
    _metric_rows,
    _train_loss_rows,
    prepare_run,
)

PARAMS_FILE = "cosmos.json"
TAG = "cosmos"
#: rows per forward pass when many preferences are evaluated at once
FRONT_ROWS = 65_536


class CosmosParams(BaseModel):
    """COSMOS hyper-parameters (the paper's alpha and lambda)."""

    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(
        1.0, gt=0.0, le=100.0, description="Dirichlet concentration of the sampled preferences (1 = uniform)"
    )
    lam: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="weight lambda of the cosine penalty -lambda * cos(r, L) (COSMOS; 0 = linear "
        "scalarisation, as PHN-LS)",
    )
    eval_rays: int = Field(
        5, ge=2, le=101, description="preferences on which validation (best epoch, early stopping) is scored"
    )
    conditioning: Literal["hypernet", "input"] = Field(
        "hypernet",
        description="how the preference reaches the model: hypernet (a Pareto HyperNetwork generates "
        "the weights) or input (COSMOS: extra input columns)",
    )
    rank: int = Field(
        8, ge=1, le=64, description="hypernet: size of the preference embedding (heads per weight)"
    )


def params_from(data: dict[str, Any] | CosmosParams | None, stored: bool = False) -> CosmosParams:
    """Validate COSMOS parameters; ValueError naming the field otherwise. `stored`: parameters
    read back from a run written before `conditioning` existed mean input conditioning."""
    if isinstance(data, CosmosParams):
        return data
    if stored and data is not None and "conditioning" not in data:
        data = {**data, "conditioning": "input"}
    try:
        return CosmosParams(**(data or {}))
    except ValidationError as e:
        parts = [f"cosmos.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ValueError("; ".join(parts)) from None


# ------------------------------------------------------------------------ conditioning


def conditioned_features(features: FeatureSpec, task_names: Sequence[str]) -> FeatureSpec:
    """The feature layout the conditioned model sees: T extra dense columns `pref:<task>`."""
    extra = tuple(f"{PREF_PREFIX}{t}" for t in task_names)
    return dataclasses.replace(features, dense_names=tuple(features.dense_names) + extra)


def build_conditioned(arch: str, data: MTLData, arch_params: dict[str, Any], cp: CosmosParams) -> Conditioned:
    """The preference-conditioned model of a run: the architecture wrapped by `cp.conditioning`."""
    names = data.task_names
    if cp.conditioning == "input":
        features = conditioned_features(data.features, names)
        return InputConditioned(build_model(arch, features, data.tasks, arch_params))
    model = build_model(arch, data.features, data.tasks, arch_params)
    return HyperConditioned(model, len(names), rank=cp.rank)


#: how each conditioning is named in run names, logs and benchmark tables
CONDITIONING_LABELS = {"hypernet": "Pareto HyperNetwork", "input": "COSMOS input conditioning"}


def cosmos_loss(losses: torch.Tensor, pref: torch.Tensor, lam: float) -> torch.Tensor:
    """sum_t r_t L_t - lambda * cos(r, L) (Ruchte & Grabocka 2021, eq. 3)."""
    linear = (pref * losses).sum()
    if lam == 0:
        return linear
    cos = torch.nn.functional.cosine_similarity(losses, pref, dim=0)
    return linear - lam * cos


def eval_rays(n_tasks: int, n: int) -> np.ndarray:
    """Fixed preferences for validation: `n` evenly spaced for two tasks, else the simplex grid
    with at most `n` points plus the centre."""
    from engine.sweeps import grid_of_size

    if n_tasks == 2:
        a = np.linspace(0.0, 1.0, n)
        return np.stack([a, 1.0 - a], axis=1)
    grid = grid_of_size(n_tasks, n)
    centre = np.full((1, n_tasks), 1.0 / n_tasks)
    return np.unique(np.vstack([grid, centre]), axis=0)


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_preferences(
    conditioned: Conditioned | MTLModel, split: Split, data: MTLData, prefs: np.ndarray | torch.Tensor
) -> list[dict[str, dict[str, float]]]:
    """Per-task metrics and task loss of the conditioned model at each preference, in eval mode.

    Mirrors `engine.train.evaluate` (loss from the model's own `task_losses`, averaged over
    labelled rows; metrics from `engine.metrics`). With input conditioning (a plain `MTLModel`
    that reads the preference columns, or `InputConditioned`) the rows of several preferences are
    packed into one forward pass (up to `FRONT_ROWS` rows at a time); a hypernetwork generates
    its weights once per preference.
    """
    if isinstance(conditioned, MTLModel):
        conditioned = InputConditioned(conditioned)
    model = conditioned.model
    was_training = conditioned.training
    conditioned.eval()
    try:
        device = next(iter(split.targets.values())).device
        P = torch.as_tensor(np.asarray(prefs, dtype=np.float32), device=device)
        if P.dim() == 1:
            P = P[None]
        n = len(split)
        names = [t.name for t in data.tasks]
        per_chunk = max(1, FRONT_ROWS // max(n, 1)) if conditioned.packs_preferences else 1
        preds: list[dict[str, list[torch.Tensor]]] = [{t: [] for t in names} for _ in range(len(P))]
        loss_sums = np.zeros((len(P), len(names)))
        counts = np.zeros((len(P), len(names)))
        for p0 in range(0, len(P), per_chunk):
            ps = P[p0 : p0 + per_chunk]
            k = len(ps)
            rows_per_pass = n if k > 1 else min(n, EVAL_BATCH)  # k > 1 only when k * n <= FRONT_ROWS
            for start in range(0, n, max(rows_per_pass, 1)):
                stop = min(start + rows_per_pass, n)
                m = stop - start
                feats = {key: v[start:stop] for key, v in split.features.items()}
                targets = {key: v[start:stop] for key, v in split.targets.items()}
                masks = {key: v[start:stop] for key, v in split.masks.items()}
                if k == 1:
                    outputs = conditioned(feats, ps[0])
                else:
                    rep = {key: v.repeat(k, *([1] * (v.dim() - 1))) for key, v in feats.items()}
                    outputs = conditioned(rep, ps.repeat_interleave(m, dim=0))
                probs = model.predict(outputs)
                for j in range(k):
                    out_j = {t: v[j * m : (j + 1) * m] for t, v in outputs.items()}
                    losses = model.task_losses(out_j, targets, masks)
                    for i, t in enumerate(names):
                        mask = masks.get(t)
                        cnt = int(mask.sum()) if mask is not None else m
                        loss_sums[p0 + j, i] += float(losses[t]) * cnt
                        counts[p0 + j, i] += cnt
                        preds[p0 + j][t].append(probs[t][j * m : (j + 1) * m].float().cpu())
        results: list[dict[str, dict[str, float]]] = []
        for i_pref in range(len(P)):
            out: dict[str, dict[str, float]] = {}
            for i, t in enumerate(data.tasks):
                y = split.targets[t.name].cpu().numpy()
                p = torch.cat(preds[i_pref][t.name]).numpy()
                mask = split.masks.get(t.name)
                if mask is not None:
                    keep = mask.cpu().numpy().astype(bool)
                    y, p = y[keep], p[keep]
                vals = {"loss": float(loss_sums[i_pref, i] / max(counts[i_pref, i], 1.0))}
                for metric in t.metrics:
                    vals[metric] = M.compute(metric, y, p) if len(y) else float("nan")
                out[t.name] = vals
            results.append(out)
        return results
    finally:
        conditioned.train(was_training)


# ------------------------------------------------------------------------------ training


def train_cosmos(
    cfg: RunConfig,
    params: CosmosParams | dict[str, Any] | None = None,
    writer: Writer | None = None,
    checkpoint_path: Path | None = None,
) -> TrainResult:
    """Train one preference-conditioned model (COSMOS) described by `cfg` and `params`.

    Same data, seeding, batching, optimiser and epochs as `engine.train.train`; the balancer in
    `cfg` is ignored (the COSMOS loss replaces it). Raises TrainingError on NaN/inf losses.
    """
    cp = params_from(params)
    writer = writer or NullWriter()
    resolved = resolve(cfg)
    t0 = time.perf_counter()
    run = prepare_run(cfg, resolved)
    device, data = run.device, run.data
    train_split, val_split, test_split = run.train, run.val, run.test
    task_names = data.task_names
    T = len(task_names)
    cond = build_conditioned(cfg.arch, data, resolved["arch"], cp).to(device)
    model = cond.model
    optimizer = _make_optimizer(cfg, list(cond.parameters()))
    rng = np.random.default_rng([cfg.seed, 7919])  # the preference stream, independent of torch's
    rays = eval_rays(T, cp.eval_rays)
    uniform = np.full(T, 1.0 / T)
    writer.log_event(
        "info",
        f"training a preference-conditioned {cfg.arch} ({CONDITIONING_LABELS[cp.conditioning]}, "
        f"alpha {cp.alpha}, lambda {cp.lam}) on "
        f"{cfg.dataset} ({', '.join(task_names)}) on {describe(device)}: {len(data.train)} train / "
        f"{len(data.val)} val / {len(data.test)} test rows, {sum(p.numel() for p in cond.parameters())} "
        f"parameters; validation scored on {len(rays)} preferences",
    )
    n = len(train_split)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    best = BestEpoch(cfg.patience)  # the score is minus the ray-averaged validation loss
    step = 0
    state = "finished"
    cond.train()
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen).to(device)
        prefs = torch.as_tensor(
            rng.dirichlet(np.full(T, cp.alpha), size=steps_per_epoch), dtype=torch.float32
        )
        prefs = prefs.to(device)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            feats = {k: v[idx] for k, v in train_split.features.items()}
            targets = {k: v[idx] for k, v in train_split.targets.items()}
            masks = {k: v[idx] for k, v in train_split.masks.items()}
            r = prefs[b]
            outputs = cond(feats, r)
            ld = model.task_losses(outputs, targets, masks)
            losses = torch.stack([ld[t] for t in task_names])
            loss = cosmos_loss(losses, r, cp.lam)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the COSMOS loss became {float(loss)} (task losses {losses.tolist()}) at step {step} "
                    f"(epoch {epoch}); training stopped. Try a lower learning rate (now {cfg.lr})."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % cfg.log_every == 0:
                lv = losses.detach().cpu().tolist()
                writer.log_metrics(_train_loss_rows(step, epoch, task_names, lv))
                writer.log_task_weights(step, dict(zip(task_names, r.cpu().tolist(), strict=True)))
            step += 1
            writer.set_progress(step, total_steps, epoch, cfg.epochs)
            writer.maybe_flush()
            if writer.cancel_requested():
                state = "cancelled"
                break
        if state == "cancelled":
            writer.log_event("info", f"cancelled at step {step} (epoch {epoch})")
            break
        evals = evaluate_preferences(cond, val_split, data, np.vstack([uniform, rays]))
        writer.log_metrics(_metric_rows(step, epoch, "val", evals[0]))
        score = float(
            np.mean(
                [
                    sum(r[j] * ev[t]["loss"] for j, t in enumerate(task_names))
                    for r, ev in zip(rays, evals[1:], strict=True)
                ]
            )
        )
        writer.log_balancer_stats(step, {"val_scalarised_loss": score})
        if best.observe(-score, epoch, evals[0], lambda: copy.deepcopy(cond.checkpoint_state())):
            writer.log_event(
                "info",
                f"early stop after epoch {epoch}: no gain of the ray-averaged validation loss "
                f"for {best.bad_epochs} epochs",
            )
            break
    result = TrainResult(
        state=state,
        steps=step,
        best_val=best.val,
        best_epoch=best.epoch,
        model=cond.model if isinstance(cond, InputConditioned) else cond,  # type: ignore[arg-type]
    )
    if state == "cancelled":
        result.seconds = time.perf_counter() - t0
        return result
    if best.state is not None:
        cond.load_checkpoint_state(best.state)
    test = evaluate_preferences(cond, test_split, data, uniform)[0]
    writer.log_metrics(_metric_rows(step, best.epoch, "test", test))
    result.test = test
    result.seconds = time.perf_counter() - t0
    if checkpoint_path is not None:
        save_cosmos_checkpoint(checkpoint_path, cond, cfg, cp, best.epoch)
    writer.log_event(
        "info",
        f"finished in {result.seconds:.1f} s; best epoch {best.epoch}; "
        "test metrics at the uniform preference",
    )
    return result


def save_cosmos_checkpoint(
    path: Path, cond: Conditioned, cfg: RunConfig, cp: CosmosParams, epoch: int
) -> None:
    """Tensors and strings only (`torch.load(path, weights_only=True)` reads it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().cpu() for k, v in cond.checkpoint_state().items()}
    torch.save(
        {
            "state_dict": state,
            "config": json.dumps(cfg.model_dump()),
            "cosmos": cp.model_dump_json(),
            "epoch": epoch,
        },
        tmp,
    )
    tmp.replace(path)


# ------------------------------------------------------------------------- run directories


def cosmos_config(
    cfg: RunConfig | dict[str, Any], params: CosmosParams | dict[str, Any] | None = None
) -> RunConfig:
    """The RunConfig of a COSMOS run: balancer "ew" (unused), tag "cosmos", a readable name."""
    cp = params_from(params)
    d = cfg.model_dump(mode="json") if isinstance(cfg, RunConfig) else dict(cfg)
    d["balancer"], d["balancer_params"] = "ew", {}
    d["tags"] = [*[t for t in d.get("tags", []) if t != TAG], TAG]
    if not d.get("name"):
        label = CONDITIONING_LABELS[cp.conditioning]
        d["name"] = f"{label} {d.get('arch', 'mmoe')} (alpha {cp.alpha:g}, lambda {cp.lam:g})"
    return load_config(d)


def is_cosmos_run(lake: Lake, run_id: str) -> bool:
    """True when the run directory holds a COSMOS run (its `cosmos.json`)."""
    return lake.exists(run_id) and (lake.run_dir(run_id) / PARAMS_FILE).is_file()


def cosmos_run_ids(lake: Lake | None = None, dataset: str | None = None, finished: bool = True) -> list[str]:
    """COSMOS runs in the lake (newest first), optionally of one dataset and only finished ones
    (those have a checkpoint, so `learned_front` can answer for them)."""
    lake = lake or Lake()
    runs = lake.runs()
    if runs.empty:
        return []
    sel = runs[runs["tags"].fillna("").str.split(",").apply(lambda tags: TAG in tags)]
    if dataset is not None:
        sel = sel[sel["dataset"] == dataset]
    if finished:
        sel = sel[sel["status"] == "finished"]
    return [r for r in sorted(sel["run_id"], reverse=True) if is_cosmos_run(lake, r)]


def create_cosmos_run(
    cfg: RunConfig | dict[str, Any],
    params: CosmosParams | dict[str, Any] | None = None,
    lake: Lake | None = None,
) -> str:
    """Create a COSMOS run directory, already claimed (so the worker never trains it as a plain
    run) for a foreground training (`execute_cosmos`, `run_cosmos`); `submit_cosmos` queues one
    for the worker instead."""
    lake = lake or Lake()
    cp = params_from(params)
    rc = cosmos_config(cfg, cp)
    rid = lake.create_run(rc, state="running")
    lake.claim(rid, by="cosmos")
    write_json_atomic(lake.run_dir(rid) / PARAMS_FILE, cp.model_dump())
    return rid


def execute_cosmos(lake: Lake, run_id: str) -> TrainResult | None:
    """Train a COSMOS run directory in this process (status, heartbeat, rows, checkpoint), with
    the failure handling of every run (`engine.runner.execute_in_run_dir`)."""
    from engine.runner import execute_in_run_dir

    def fit(cfg: RunConfig, writer: RunWriter, run_dir: Path) -> TrainResult:
        cp = params_from(read_json_dict(run_dir / PARAMS_FILE), stored=True)
        return train_cosmos(cfg, cp, writer, checkpoint_path=run_dir / "checkpoint.pt")

    return execute_in_run_dir(lake, run_id, fit)


def run_cosmos(
    cfg: RunConfig | dict[str, Any],
    params: CosmosParams | dict[str, Any] | None = None,
    lake: Lake | None = None,
) -> str:
    """Create and train a COSMOS run in the foreground; return its id."""
    lake = lake or Lake()
    rid = create_cosmos_run(cfg, params, lake)
    execute_cosmos(lake, rid)
    return rid


def submit_cosmos(
    cfg: RunConfig | dict[str, Any],
    params: CosmosParams | dict[str, Any] | None = None,
    lake: Lake | None = None,
) -> str:
    """Queue a COSMOS training for the worker; return its run id.

    The run is a job of kind "cosmos" (`engine.jobs.submit_job`): the worker claims it like any
    run (per-user queue limit, round robin, cancel) and trains it in a `python -m engine _cosmos
    RUN_ID` process it starts and watches. ValueError (bad parameters), ConfigError and
    QueueLimitError reach the caller; nothing is queued then.
    """
    from engine.jobs import submit_job

    cp = params_from(params)
    rc = cosmos_config(cfg, cp)
    return submit_job("cosmos", [rc], lake or Lake(), files={PARAMS_FILE: cp.model_dump()})[0]


def launch_cosmos(
    cfg: RunConfig | dict[str, Any],
    params: CosmosParams | dict[str, Any] | None = None,
    lake: Lake | None = None,
) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start a COSMOS training without waiting (engine.dedupe.find_or_launch_cosmos calls it):
    queued for the worker, which starts and supervises its trainer (`submit_cosmos`). Returns
    (run id, None): there is no process of this caller's to wait on."""
    return submit_cosmos(cfg, params, lake), None


# ------------------------------------------------------------------ the learned front API


@dataclasses.dataclass
class _Loaded:
    model: MTLModel  # the architecture (its own weights: those at no preference, for a hypernet)
    conditioned: Conditioned
    data: MTLData
    splits: dict[str, Split]
    params: CosmosParams
    key: tuple[str, float]


_CACHE: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


def load_cosmos(run_id: str, lake: Lake | None = None) -> _Loaded:
    """The trained conditioned model of a finished COSMOS run with its data (cached per process,
    reloaded when the checkpoint file changes)."""
    lake = lake or Lake()
    d = lake.run_dir(run_id)
    ckpt_path = d / "checkpoint.pt"
    if not (d / PARAMS_FILE).is_file():
        raise ValueError(f"run {run_id} is not a COSMOS run (no {PARAMS_FILE})")
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"COSMOS run {run_id} has no checkpoint yet (state {lake.status(run_id).get('state')})"
        )
    key = (str(lake.root), run_id)
    stamp = (str(ckpt_path), ckpt_path.stat().st_mtime)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit.key == stamp:
            _CACHE.move_to_end(key)
            return hit
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = load_config(json.loads(ckpt["config"]))
    cp = params_from(json.loads(ckpt["cosmos"]), stored=True)
    resolved = resolve(cfg)
    data = load_dataset(cfg.dataset, resolved["dataset"], cfg.seed).select_tasks(resolved["tasks"])
    cond = build_conditioned(cfg.arch, data, resolved["arch"], cp)
    try:
        cond.load_checkpoint_state(ckpt["state_dict"])
    except RuntimeError as e:  # a checkpoint of another layout or a damaged file
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"the checkpoint of COSMOS run {run_id} does not fit its model: {detail}") from None
    cond.eval()
    splits = {"train": data.train, "val": data.val, "test": data.test}
    loaded = _Loaded(cond.model, cond, data, splits, cp, stamp)
    with _LOCK:
        _CACHE[key] = loaded
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded


def _normalise(prefs: np.ndarray | Sequence[Sequence[float]] | Sequence[float], n_tasks: int) -> np.ndarray:
    P = np.asarray(prefs, dtype=np.float64)
    if P.ndim == 1:
        P = P[None]
    if P.ndim != 2 or P.shape[1] != n_tasks:
        raise ValueError(f"a preference needs {n_tasks} entries (one per task), got shape {P.shape}")
    if not np.all(np.isfinite(P)) or (P < 0).any():
        raise ValueError("preferences must be finite and >= 0")
    s = P.sum(axis=1, keepdims=True)
    if (s <= 0).any():
        raise ValueError("a preference must have at least one entry > 0")
    return P / s


def evaluate_preference(
    run_id: str,
    pref: Sequence[float] | dict[str, float],
    lake: Lake | None = None,
    split: str = "val",
) -> dict[str, dict[str, float]]:
    """Per-task metrics (task -> metric -> value, with the task loss) of a COSMOS run's model at
    one preference, by evaluation alone. `pref` is a list in task order or a dict task -> weight;
    it is normalised to sum 1."""
    loaded = load_cosmos(run_id, lake)
    names = loaded.data.task_names
    vec = [float(pref[t]) for t in names] if isinstance(pref, dict) else list(pref)
    P = _normalise(vec, len(names))
    return evaluate_preferences(loaded.conditioned, loaded.splits[split], loaded.data, P)[0]


def learned_front(
    run_id: str,
    prefs: np.ndarray | Sequence[Sequence[float]] | int = 11,
    lake: Lake | None = None,
    split: str = "val",
) -> pd.DataFrame:
    """The learned front of a COSMOS run: one row per preference.

    Columns: `pref/<task>` (normalised preference), then `<task>/<metric>` for every task metric
    and the task loss (the same column names as the runs table's test summary, so the sweep's
    points and this front share axes; use split="test" to compare with those test metrics).
    `prefs` may be an int n: n evenly spaced preferences for two tasks, a simplex grid of about
    n points for more.
    """
    loaded = load_cosmos(run_id, lake)
    names = loaded.data.task_names
    if split not in loaded.splits:
        raise ValueError(f"split must be one of {list(loaded.splits)}, got {split!r}")
    P = eval_rays(len(names), int(prefs)) if isinstance(prefs, int) else _normalise(prefs, len(names))
    results = evaluate_preferences(loaded.conditioned, loaded.splits[split], loaded.data, P)
    rows = []
    for p, res in zip(P, results, strict=True):
        row: dict[str, float] = {f"pref/{t}": float(v) for t, v in zip(names, p, strict=True)}
        for t in names:
            for metric, value in res[t].items():
                row[f"{t}/{metric}"] = value
        rows.append(row)
    return pd.DataFrame(rows)
