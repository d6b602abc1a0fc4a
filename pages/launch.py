"""Launch: dataset and tasks, architecture (with its diagram), balancer (with its parameters),
task weights on the simplex, training settings; "Run", "Sweep task weights" (one population job
when the members can be batched) or "Train a preference-conditioned model" (COSMOS). Everything
is queued for the worker."""

from __future__ import annotations

import streamlit as st

from dashboard import queries, registry, state, widgets
from dashboard.figures.diagram import diagram_figure, diagram_info
from dashboard.figures.simplex import simplex_figure, simplex_grid
from dashboard.launch import (
    MAX_SWEEP_RUNS,
    parse_seeds,
    parse_tags,
    run_configs,
    sweep_configs,
    validate,
)
from dashboard.nav import require_entry
from dashboard.params_form import field_specs, render_params
from engine.config import ConfigError
from engine.jobs import QueueLimitError

require_entry()

st.title("Launch")
st.caption("Every choice is checked against the engine's registries before anything is queued.")

problems: list[str] = []  # block submission
inline: set[str] = set()  # already shown next to their widget

# ---- dataset and tasks -----------------------------------------------------------------------
datasets = registry.datasets()
ds_names = [d.name for d in datasets]
left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("1 · Data")
    ds_name = widgets.url_selectbox("Dataset", ds_names, "dataset", "launch_dataset", default=ds_names[0])
    ds = next(d for d in datasets if d.name == ds_name)
    st.caption(ds.description)
    with st.expander("Dataset parameters", expanded=any(s.required for s in field_specs(ds.params))):
        ds_params, errs = render_params(ds.params, f"ds:{ds_name}")
        problems += errs
    task_specs, task_err = registry.dataset_tasks(ds_name, ds_params)
    if task_err:
        st.error(f"Dataset parameters: {task_err}")
        problems.append(task_err)
        inline.add(task_err)
    all_tasks = [t.name for t in task_specs]
    tasks = st.multiselect(
        "Tasks",
        all_tasks,
        default=all_tasks,
        key=f"tasks:{ds_name}:{','.join(all_tasks)}",
        help="Train on a subset of the dataset's tasks.",
    )
    if task_specs and not tasks:
        problems.append("choose at least one task")
        inline.add("choose at least one task")
        st.warning("Choose at least one task.")
    if task_specs:
        st.caption(
            " · ".join(
                f"**{t.name}** ({t.kind}; {', '.join(t.metrics)})" for t in task_specs if t.name in tasks
            )
        )

    # ---- architecture --------------------------------------------------------------------
    st.subheader("2 · Architecture")
    archs = registry.architectures()
    arch_name = st.selectbox(
        "Architecture",
        [a.name for a in archs],
        key="launch_arch",
        index=[a.name for a in archs].index("mmoe") if "mmoe" in [a.name for a in archs] else 0,
    )
    arch = next(a for a in archs if a.name == arch_name)
    st.caption(arch.description)
    with st.expander("Architecture parameters"):
        arch_params, errs = render_params(arch.params, f"arch:{arch_name}")
        problems += errs

    # ---- balancer ------------------------------------------------------------------------
    st.subheader("3 · Balancer")
    bals = registry.balancers()
    bal_names = [b.name for b in bals]
    bal_name = st.selectbox(
        "Balancer",
        bal_names,
        key="launch_balancer",
        index=bal_names.index("ew") if "ew" in bal_names else 0,
        format_func=lambda n: f"{n} ({next(b.kind for b in bals if b.name == n)})",
    )
    bal = next(b for b in bals if b.name == bal_name)
    kind_text = {"loss": "weights the task losses", "gradient": "combines the task gradients"}.get(
        bal.kind, ""
    )
    st.caption(f"{bal.description} *({bal.kind} balancer: {kind_text})*" if kind_text else bal.description)
    weight_fields = tuple(s.name for s in field_specs(bal.params) if s.kind == "weights")
    bal_params, bal_problems = render_params(bal.params, f"bal:{bal_name}", skip=weight_fields)
    gradients = "exact"
    if bal_name in registry.representation_balancers():
        gradients = st.radio(
            "Per-task gradients",
            ["exact", "representation"],
            key="launch_gradients",
            horizontal=True,
            format_func=lambda g: {
                "exact": "exact (w.r.t. the shared parameters)",
                "representation": "representation (MGDA-UB: about an EW step's cost)",
            }[g],
            help="'representation' weighs the tasks by the Gramian of their gradients at the shared "
            "representation the task heads read (Sener & Koltun, 2018): one backward pass instead of "
            "one per task through the shared layers; the update is still sum_t w_t grad L_t, only "
            "the weights are approximate (for MGDA they minimise an upper bound).",
        )
    if arch.kind == "single-task" and bal_name != "ew":
        st.info(
            "A single-task architecture shares no parameters, so a balancer has nothing to balance; "
            "'ew' is the usual choice."
        )
    weights: dict[str, float] = {}
    if tasks:
        st.markdown("**Task weights** (stay on the simplex: moving one rescales the others)")
        if weight_fields:
            weights = widgets.task_weight_sliders(tasks, prefix=f"w:{ds_name}:{','.join(tasks)}")
            for f in weight_fields:
                bal_params[f] = weights
        else:
            st.caption(
                f"**{bal_name}** sets the task weights itself; choose **fixed** to set them by hand, "
                "or sweep them below."
            )

with right:
    st.subheader("Structure")
    if task_specs and tasks:
        diag, diag_err = registry.arch_diagram(
            arch_name, [t for t in task_specs if t.name in tasks], arch_params
        )
        if diag_err:
            st.error(f"{arch_name} cannot be built for these tasks: {diag_err}")
            problems.append(diag_err)
            inline.add(diag_err)
        else:
            st.plotly_chart(
                diagram_figure(diagram_info(diag), f"{arch_name}: {len(tasks)} task(s)"),
                width="stretch",
                config={"displayModeBar": False},
                key="arch_diagram",
            )
    else:
        st.caption("Choose a dataset and tasks to see the architecture.")

    # ---- training ------------------------------------------------------------------------
    st.subheader("4 · Training")
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 1000, 3, key="launch_epochs")
    batch_size = c2.number_input("Batch size", 1, 1_000_000, 256, step=32, key="launch_batch")
    lr = c3.number_input("Learning rate", 1e-6, 10.0, 1e-3, step=1e-4, format="%.5f", key="launch_lr")
    c1, c2 = st.columns(2)
    seeds_text = c1.text_input(
        "Seed(s)", "0", key="launch_seeds", help="0, or 0, 1, 2, or 0-4: one run per seed"
    )
    name = c2.text_input("Name (optional)", "", key="launch_name")
    tags_text = st.text_input("Tags (comma-separated)", "", key="launch_tags")
    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        optimizer = a1.selectbox("Optimizer", ["adam", "adamw", "sgd"], key="launch_opt")
        device = a2.selectbox("Device", ["auto", "cpu", "cuda"], key="launch_device")
        grad_every = a3.number_input(
            "Gradient stats every (steps)",
            0,
            1_000_000,
            10,
            key="launch_grad_every",
            help="0 = never (no Conflicts page for this run)",
        )
        a1, a2, a3 = st.columns(3)
        max_steps = a1.number_input(
            "Max steps per epoch", 0, 10_000_000, 0, key="launch_max_steps", help="0 = full epochs"
        )
        patience = a2.number_input(
            "Early-stopping patience",
            0,
            1000,
            0,
            key="launch_patience",
            help="epochs without improvement; 0 = off",
        )
        threads = a3.number_input("CPU threads", 0, 256, 0, key="launch_threads", help="0 = library default")

try:
    seeds = parse_seeds(seeds_text)
except ValueError as e:
    seeds = []
    problems.append(str(e))

base = {
    "dataset": ds_name,
    "dataset_params": ds_params,
    "tasks": None if tasks == all_tasks else list(tasks),
    "arch": arch_name,
    "arch_params": arch_params,
    "balancer": bal_name,
    "balancer_params": bal_params,
    "gradients": gradients,
    "epochs": int(epochs),
    "batch_size": int(batch_size),
    "lr": float(lr),
    "optimizer": optimizer,
    "device": device,
    "grad_stats_every": int(grad_every),
    "max_steps_per_epoch": int(max_steps),
    "patience": int(patience),
    "threads": int(threads),
    "name": name.strip(),
    "tags": parse_tags(tags_text),
    "owner": "dashboard",
}

st.divider()
configs = run_configs(base, seeds) if seeds else []
for p in problems:
    if p not in inline:
        st.error(p, icon=":material/block:")
run_only = list(bal_problems)
if not problems and not run_only:
    run_only += validate(configs[:1])
run_col, sweep_col = st.columns(2, gap="large")

with run_col:
    st.subheader("Run")
    for p in run_only:
        st.error(p, icon=":material/block:")
    n = len(configs)
    if st.button(
        f"Run ({n} run{'s' if n != 1 else ''})" if n else "Run",
        type="primary",
        disabled=bool(problems or run_only) or not configs,
        key="launch_run",
    ):
        try:
            ids = queries.submit_many(configs)
        except (ConfigError, QueueLimitError) as e:
            st.error(str(e))
        else:
            state.set_list("runs", ids)
            st.session_state["_launched"] = ids
            st.session_state["_launched_how"] = ""

with sweep_col:
    st.subheader("Sweep task weights")
    if len(tasks) not in (2, 3):
        st.caption(f"A weight sweep needs 2 or 3 tasks (you chose {len(tasks)}).")
    else:
        s1, s2 = st.columns(2)
        resolution = s1.slider(
            "Grid resolution", 2, 10, 4, key="sweep_res", help="weights take values k / resolution"
        )
        corners = s2.checkbox(
            "Include corners", True, key="sweep_corners", help="grid points where a task has weight 0"
        )
        grid = simplex_grid(len(tasks), resolution, corners)
        current = [weights.get(t) for t in tasks] if weights else None
        st.plotly_chart(
            simplex_figure(grid, tasks, current if current and None not in current else None),
            width="stretch",
            config={"displayModeBar": False},
            key="sweep_simplex",
        )
        sweep = sweep_configs(base, tasks, resolution, seeds, include_corners=corners) if seeds else []
        sweep_problems: list[str] = []
        if len(sweep) > MAX_SWEEP_RUNS:
            sweep_problems.append(
                f"{len(sweep)} runs is more than the {MAX_SWEEP_RUNS} a sweep may queue; "
                "lower the resolution or the number of seeds"
            )
        if sweep and not sweep_problems and not problems:
            sweep_problems += validate(sweep[:1])
        for p in sweep_problems:
            st.error(p, icon=":material/block:")
        population = False
        why_not: str | None = None
        if sweep and not sweep_problems and not problems:
            with st.spinner("Checking whether the sweep can train as one population…"):
                try:
                    why_not = queries.sweep_batch_problem(sweep)
                except ConfigError as e:
                    why_not = str(e)
            if why_not is None:
                population = st.toggle(
                    "Train as one population",
                    True,
                    key="sweep_population",
                    help="The members train together as one batched model (torch.func.vmap) in one "
                    "trainer process the worker starts and watches: one worker slot, one data pipeline, "
                    "each member still its own run. Off: one queued run per member.",
                )
            else:
                st.toggle("Train as one population", False, disabled=True, key="sweep_population_off")
                st.caption(f"These members will train as separate runs: {why_not}.")
        how = (
            "trained together as one population (one trainer process, one worker slot)"
            if population
            else "each trained as its own run"
        )
        st.caption(
            f"{len(sweep)} fixed-weight runs ({len(grid)} grid points × {len(seeds)} seed(s)), "
            f"grouped by one sweep id and {how}; compare them on **Pareto**."
        )
        if st.button(
            f"Sweep task weights ({len(sweep)} runs{', one population' if population else ''})",
            disabled=bool(problems or sweep_problems) or not sweep,
            key="launch_sweep",
        ):
            try:
                res = queries.submit_sweep(sweep, separate=why_not is None and not population)
            except (ConfigError, QueueLimitError, ValueError) as e:
                st.error(str(e))
            else:
                state.set_list("runs", res["run_ids"])
                state.set_value("sweep", res["sweep_id"])
                st.session_state["_launched"] = res["run_ids"]
                st.session_state["_launched_how"] = (
                    f"as one population job (sweep `{res['sweep_id']}`)"
                    if res["mode"] == "population"
                    else f"as separate runs of sweep `{res['sweep_id']}`"
                    + (f" ({res['reason']})" if res["reason"] else "")
                )

# ---- a preference-conditioned model (hypernetwork or COSMOS) --------------------------------
st.divider()
st.subheader("Preference-conditioned model")
st.caption(
    "One model that takes the task preference as well as the inputs: trained once, it answers any "
    "preference by a forward pass. On **Pareto**, a slider moves a point along its learned front next "
    "to the sweep's points. **hypernet** (default): a Pareto HyperNetwork generates the weights from "
    "the preference (Navon et al., ICLR 2021). **input**: COSMOS appends the preference to the inputs "
    "(Ruchte & Grabocka, ICDM 2021); cheaper, but it can only shift what a layer computes, so its "
    "front may collapse to one point."
)
if len(tasks) < 2:
    st.caption(f"A preference-conditioned model needs at least 2 tasks (you chose {len(tasks)}).")
else:
    c_params, c_go = st.columns([3, 2], gap="large")
    with c_params:
        cosmos_params, cosmos_errs = render_params(queries.cosmos_params_model(), "cosmos", columns=3)
    cosmos_cfg = {**base, "seed": seeds[0]} if seeds else None
    cosmos_problems = list(cosmos_errs)
    if cosmos_cfg is not None and not problems and not cosmos_problems:
        cosmos_problems += queries.cosmos_problems(cosmos_cfg, cosmos_params)
    with c_go:
        for p in cosmos_problems:
            st.error(p, icon=":material/block:")
        if cosmos_cfg is not None:
            st.caption(
                f"{arch_name} on {ds_name} ({', '.join(tasks)}), {int(epochs)} epoch(s), seed {seeds[0]}; "
                "the balancer above is not used (the preference-weighted loss replaces it)."
            )
        if st.button(
            "Train a preference-conditioned model",
            disabled=bool(problems or cosmos_problems) or cosmos_cfg is None,
            key="launch_cosmos",
            icon=":material/tune:",
        ):
            try:
                cosmos_id = queries.submit_cosmos(cosmos_cfg or {}, cosmos_params)
            except (ConfigError, QueueLimitError, ValueError) as e:
                st.error(str(e))
            else:
                state.set_list("runs", [cosmos_id])
                st.session_state["_launched"] = [cosmos_id]
                st.session_state["_launched_how"] = "as a COSMOS training job"

launched = st.session_state.get("_launched")
if launched:
    how = st.session_state.get("_launched_how")
    st.success(
        f"Queued {len(launched)} run(s){' ' + how if how else ''}: "
        + ", ".join(f"`{r}`" for r in launched[:6])
        + (" …" if len(launched) > 6 else ""),
        icon=":material/check_circle:",
    )
    if queries.worker_status() is None:
        st.warning("No worker is running, so the runs wait in the queue: start one from the sidebar.")
    widgets.page_links(launched, exclude="pages/launch.py")
