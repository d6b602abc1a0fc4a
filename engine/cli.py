"""`python -m engine ...`: run, queue, watch and export multi-task runs from a terminal.

python -m engine run --dataset adult --arch mmoe --balancer pcgrad --epochs 3
python -m engine submit --config my_run.yaml
python -m engine worker
python -m engine ls
python -m engine show RUN_ID
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.config import ConfigError, RunConfig, load_config, read_config_file


def _kv_list(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse repeated KEY=VALUE flags; values are read as YAML scalars/lists (8, 0.5, [64,32], true)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {key}: cannot read value {raw!r}") from None
    return out


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        task, sep, raw = part.partition("=")
        if not sep:
            raise ConfigError(f"--weights expects task=weight,task=weight; got {text!r}")
        try:
            out[task.strip()] = float(raw)
        except ValueError:
            raise ConfigError(f"--weights: weight of {task!r} is not a number: {raw!r}") from None
    return out


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON file with RunConfig fields; flags override it")
    p.add_argument("--dataset")
    p.add_argument("--tasks", help="comma-separated subset of the dataset's tasks")
    p.add_argument("--arch")
    p.add_argument("--balancer")
    p.add_argument(
        "--gradients",
        choices=["exact", "representation"],
        help="Gramian-based gradient balancers: exact (default) or representation (MGDA-UB, faster)",
    )
    p.add_argument("--weights", help="task weights for the fixed balancer: income=0.7,never_married=0.3")
    p.add_argument("--dataset-param", action="append", metavar="KEY=VALUE")
    p.add_argument("--arch-param", action="append", metavar="KEY=VALUE")
    p.add_argument("--balancer-param", action="append", metavar="KEY=VALUE")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=int)
    p.add_argument("--early-stopping-metric", help="task:metric on validation")
    p.add_argument("--patience", type=int)
    p.add_argument("--grad-stats-every", type=int)
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--name")
    p.add_argument("--tag", action="append", help="repeatable")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    data: dict[str, Any] = read_config_file(args.config) if args.config else {}
    simple = [
        "dataset",
        "arch",
        "balancer",
        "gradients",
        "epochs",
        "batch_size",
        "lr",
        "optimizer",
        "weight_decay",
        "seed",
        "device",
        "threads",
        "early_stopping_metric",
        "patience",
        "grad_stats_every",
        "max_steps_per_epoch",
        "name",
    ]
    for key in simple:
        val = getattr(args, key)
        if val is not None:
            data[key] = val
    if args.tasks:
        data["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.tag:
        data["tags"] = list(data.get("tags", [])) + args.tag
    for field, flag in (
        ("dataset_params", "dataset_param"),
        ("arch_params", "arch_param"),
        ("balancer_params", "balancer_param"),
    ):
        extra = _kv_list(getattr(args, flag), "--" + flag.replace("_", "-"))
        if extra:
            data[field] = {**data.get(field, {}), **extra}
    weights = _weights(args.weights)
    if weights is not None:
        data.setdefault("balancer", "fixed")
        data["balancer_params"] = {**data.get("balancer_params", {}), "weights": weights}
    data.setdefault("owner", os.environ.get("USER", "cli"))
    return load_config(data)


def _lake(args: argparse.Namespace):
    from engine.store import Lake

    return Lake(Path(args.home)) if getattr(args, "home", None) else Lake()


def cmd_run(args: argparse.Namespace) -> int:
    from engine.runner import execute_run

    cfg = config_from_args(args)
    lake = _lake(args)
    run_id = lake.create_run(cfg, state="running")
    (lake.run_dir(run_id) / "claim").touch()  # foreground run: the worker must not claim it
    print(f"run {run_id} -> {lake.run_dir(run_id)}", file=sys.stderr)
    try:
        execute_run(lake, run_id, progress=True)
    except KeyboardInterrupt:
        print(f"run {run_id} cancelled", file=sys.stderr)
        return 130
    return _print_result(lake, run_id)


def _print_result(lake, run_id: str) -> int:
    st = lake.status(run_id)
    if st.get("state") != "finished":
        print(f"run {run_id} {st.get('state')}: {st.get('error') or ''}", file=sys.stderr)
        return 1
    summary = st.get("summary") or {}
    print(f"run {run_id} finished")
    for task, vals in summary.items():
        shown = ", ".join(f"{m} {v:.4f}" for m, v in vals.items())
        print(f"  test {task}: {shown}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from engine.jobs import QueueLimitError, submit, worker_status

    cfg = config_from_args(args)
    lake = _lake(args)
    try:
        run_id = submit(cfg, lake)
    except QueueLimitError as e:
        print(f"error: {e} (you are {e.owner!r}; $SEESAW_MAX_QUEUED_PER_USER sets it)", file=sys.stderr)
        return 3
    print(run_id)
    if worker_status(lake) is None:
        print("queued; no worker is running: start one with `python -m engine worker`", file=sys.stderr)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.jobs import Worker, WorkerAlreadyRunning

    lake = _lake(args)
    try:
        worker = Worker(lake, max_parallel=args.max_parallel)
        return int(worker.run_forever() or 0)
    except WorkerAlreadyRunning as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def cmd_ls(args: argparse.Namespace) -> int:
    lake = _lake(args)
    df = lake.runs()
    if df.empty:
        print(
            f"no runs in {lake.root}; start one with `python -m engine run --dataset synthetic-correlation`"
        )
        return 0
    if args.status:
        df = df[df["status"] == args.status]
    cols = ["run_id", "status", "dataset", "arch", "balancer", "progress", "name"]
    metric_cols = [c for c in df.columns if "/" in c][: args.metrics]
    view = df[cols + metric_cols].copy()
    view["progress"] = (view["progress"].fillna(0) * 100).round().astype(int).astype(str) + "%"
    print(view.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    lake = _lake(args)
    info = {"run_id": args.run_id, "status": lake.status(args.run_id), "config": lake.config(args.run_id)}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    st = info["status"]
    print(f"run {args.run_id}: {st.get('state')}  progress {100 * (st.get('progress') or 0):.0f}%")
    if st.get("error"):
        print(f"error: {st['error']}")
    print(yaml.safe_dump(info["config"], sort_keys=False).rstrip())
    for task, vals in (st.get("summary") or {}).items():
        print(f"test {task}: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()))
    ev = lake.events([args.run_id])
    if not ev.empty:
        print("events:")
        for _, r in ev.tail(args.events).iterrows():
            print(f"  [{r['level']}] {r['text']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from engine.jobs import cancel

    print(cancel(args.run_id, _lake(args)))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    lake = _lake(args)
    lake.delete_run(args.run_id)
    print(f"deleted {args.run_id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    lake = _lake(args)
    counts = lake.export_duckdb(Path(args.file), overwrite=args.overwrite)
    print(f"wrote {args.file}: " + ", ".join(f"{t} {n} rows" for t, n in counts.items()))
    return 0


def cmd_list(kind: str):
    def _run(args: argparse.Namespace) -> int:
        if kind == "datasets":
            from engine.datasets import DATASETS as reg
        elif kind == "archs":
            from engine.models import MODELS as reg
        else:
            from engine.balancers import BALANCERS as reg
        for name, entry in reg.items():
            print(f"{name:24s} {entry.description}")
            schema = entry.Params.model_json_schema().get("properties", {})
            if args.verbose and schema:
                for pname, prop in schema.items():
                    print(f"    {pname} = {prop.get('default')!r}  {prop.get('description', '')}")
        return 0

    return _run


def cmd_train_child(args: argparse.Namespace) -> int:
    """Hidden: the worker's trainer process."""
    from engine.runner import execute_run

    execute_run(_lake(args), args.run_id)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """A task-weight sweep: K weight vectors x seeds, one population when it can be batched."""
    from engine.sweeps import run_sweep, weight_vectors

    cfg = config_from_args(args)
    lake = _lake(args)
    from engine.config import resolve

    tasks = resolve(cfg)["tasks"]
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    weights = weight_vectors(len(tasks), args.k, args.kind, seed=args.weight_seed)
    print(f"sweep of {len(weights)} weight vectors x {len(seeds)} seed(s) over {tasks}", file=sys.stderr)
    from engine.jobs import QueueLimitError, worker_status
    from engine.sweeps import submit_sweep

    try:
        if args.queue:  # the worker trains it: one population job when it can be batched
            res = submit_sweep(cfg, weights, seeds, lake, mode=args.mode)
        else:
            res = run_sweep(cfg, weights, seeds, lake, mode=args.mode, executor="inprocess")
    except QueueLimitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"sweep {res.sweep_id}: {res.mode}" + (f" ({res.reason})" if res.reason else ""))
    if args.queue:
        what = "one population job" if res.mode == "population" else "separate runs"
        print(f"  {len(res.run_ids)} runs queued for the worker as {what}")
        if worker_status(lake) is None:
            print("no worker is running: start one with `python -m engine worker`", file=sys.stderr)
        return 0
    print(f"  {len(res.run_ids)} runs in {res.seconds:.1f} s")
    df = lake.runs().set_index("run_id").loc[res.run_ids]
    cols = ["status", "seed", *[c for c in df.columns if "/" in c and not c.endswith("/loss")]]
    print(df[cols].to_string(float_format=lambda v: f"{v:.4f}"))
    return 0 if all(s == "finished" for s in res.states.values()) else 1


def cmd_cosmos(args: argparse.Namespace) -> int:
    """Train one preference-conditioned model (COSMOS) in the foreground, or queue it (--queue)."""
    from engine.cosmos import learned_front, run_cosmos

    cfg = config_from_args(args)
    lake = _lake(args)
    params = {
        "alpha": args.alpha,
        "lam": args.lam,
        "eval_rays": args.eval_rays,
        "conditioning": args.conditioning,
        "rank": args.rank,
    }
    if args.queue:
        from engine.cosmos import submit_cosmos
        from engine.jobs import QueueLimitError, worker_status

        try:
            rid = submit_cosmos(cfg, params, lake)
        except QueueLimitError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        print(rid)
        if worker_status(lake) is None:
            print("queued; no worker is running: start one with `python -m engine worker`", file=sys.stderr)
        return 0
    rid = run_cosmos(cfg, params, lake)
    code = _print_result(lake, rid)
    if code == 0:
        front = learned_front(rid, args.front, lake, split="val")
        print("learned front (validation):")
        print(front.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return code


def cmd_cosmos_front(args: argparse.Namespace) -> int:
    """Evaluate a COSMOS run's learned front at given preferences."""
    from engine.cosmos import learned_front

    if args.pref:
        prefs: object = [[float(x) for x in p.split(",")] for p in args.pref]
    else:
        prefs = args.n
    front = learned_front(args.run_id, prefs, _lake(args), split=args.split)  # type: ignore[arg-type]
    print(front.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_sweep_child(args: argparse.Namespace) -> int:
    """Hidden: the trainer process of a population sweep (started by the worker, or detached)."""
    from engine.sweeps import execute_sweep

    runs = [r.strip() for r in (args.runs or "").split(",") if r.strip()]
    states = execute_sweep(_lake(args), args.sweep_id, runs or None)
    return 0 if all(s == "finished" for s in states.values()) else 1


def cmd_cosmos_child(args: argparse.Namespace) -> int:
    """Hidden: the trainer process of a COSMOS run (started by the worker)."""
    from engine.cosmos import execute_cosmos

    execute_cosmos(_lake(args), args.run_id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Seesaw: multi-task learning lab")
    parser.add_argument("--home", help="run lake folder (default: $SEESAW_HOME or data/runs)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train one run in the foreground, with a progress bar")
    _add_config_flags(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("submit", help="queue a run for the worker")
    _add_config_flags(p)
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("worker", help="run queued runs in background trainer processes")
    p.add_argument(
        "--max-parallel", type=int, default=None, help="trainers at once (default: GPUs or cores/2)"
    )
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("ls", help="list runs")
    p.add_argument("--status", help="only runs in this state")
    p.add_argument("--metrics", type=int, default=4, help="how many test-metric columns to show")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("show", help="one run: status, config, test metrics, events")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--events", type=int, default=10)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("cancel", help="cancel a queued or running run")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("delete", help="delete a run that is not running")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("export-duckdb", help="write the whole lake into one DuckDB file")
    p.add_argument("file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)
    for kind, text in (("datasets", "datasets"), ("archs", "architectures"), ("balancers", "balancers")):
        p = sub.add_parser(kind, help=f"list {text} and their parameters")
        p.add_argument("-v", "--verbose", action="store_true", help="show parameters")
        p.set_defaults(func=cmd_list(kind))
    p = sub.add_parser("sweep", help="task-weight sweep: K weight vectors x seeds (batched when possible)")
    _add_config_flags(p)
    p.add_argument("--k", type=int, default=16, help="number of weight vectors (about k for 3+ tasks)")
    p.add_argument("--kind", choices=["grid", "random"], default="grid", help="simplex grid or Dirichlet")
    p.add_argument("--weight-seed", type=int, default=0, help="seed of random weight vectors")
    p.add_argument("--seeds", default="0", help="comma-separated run seeds: 0,1,2")
    p.add_argument("--mode", choices=["auto", "population", "sequential"], default="auto")
    p.add_argument(
        "--queue",
        action="store_true",
        help="queue the sweep for the worker (one population job when it can be batched) instead of "
        "training it here",
    )
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("cosmos", help="train one preference-conditioned model (COSMOS), here or queued")
    _add_config_flags(p)
    p.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of preferences")
    p.add_argument("--lam", type=float, default=0.0, help="cosine-penalty weight lambda (COSMOS)")
    p.add_argument("--eval-rays", type=int, default=5, help="preferences scored on validation")
    p.add_argument(
        "--conditioning",
        choices=["hypernet", "input"],
        default="hypernet",
        help="hypernet: a Pareto HyperNetwork generates the weights (default); input: COSMOS input columns",
    )
    p.add_argument("--rank", type=int, default=8, help="hypernet: size of the preference embedding")
    p.add_argument("--front", type=int, default=5, help="preferences to print at the end")
    p.add_argument("--queue", action="store_true", help="queue it for the worker instead of training it here")
    p.set_defaults(func=cmd_cosmos)
    p = sub.add_parser("cosmos-front", help="a COSMOS run's metrics at given preferences")
    p.add_argument("run_id")
    p.add_argument("--pref", action="append", help="one preference, e.g. 0.3,0.7 (repeatable)")
    p.add_argument("--n", type=int, default=11, help="evenly spaced preferences when no --pref")
    p.add_argument("--split", choices=["train", "val", "test"], default="val")
    p.set_defaults(func=cmd_cosmos_front)
    p = sub.add_parser("_sweep")
    p.add_argument("sweep_id")
    p.add_argument("--runs", help="comma-separated member run ids (default: the sweep's manifest)")
    p.set_defaults(func=cmd_sweep_child)
    p = sub.add_parser("_cosmos")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cosmos_child)
    p = sub.add_parser("_train")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_train_child)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    # accept --home after the subcommand too (the worker starts trainers that way)
    if "--home" in argv[1:]:
        i = argv.index("--home")
        if i > 0 and i + 1 < len(argv):
            argv = ["--home", argv[i + 1], *argv[:i], *argv[i + 2 :]]
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"error: invalid configuration: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
