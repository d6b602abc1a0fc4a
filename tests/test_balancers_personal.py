"""Optimiser-level and personalised balancers: MetaBalance, AdaTask (and the trainer hook it
uses), PMTRec, and MovieLens' auxiliary tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from balancer_checks import TinyMTL, check_step, flat_grad, linear_context, tiny_batch, tiny_context
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from engine.balancers import build_balancer
from engine.balancers.adatask import AdaTask
from engine.balancers.base import StepContext
from engine.balancers.pmtrec import focus_strength, personal_combination
from engine.datasets import load_dataset, movielens
from engine.datasets.base import FeatureSpec, TaskSpec
from engine.gradients import jacobian
from engine.models import build_model

# ---------------------------------------------------------------------------------------------
# helpers


def blocks_context(blocks: list[torch.Tensor], scales: torch.Tensor | None = None) -> StepContext:
    """Losses L_t = 1 + sum_k J_k[t] . x_k + theta_t: one shared tensor x_k per Jacobian block
    J_k (T x P_k), each task's gradient on x_k scaled by scales[t]."""
    T = blocks[0].shape[0]
    s = torch.ones(T, dtype=torch.float64) if scales is None else scales
    xs = [nn.Parameter(torch.zeros(b.shape[1], dtype=torch.float64)) for b in blocks]
    theta = nn.Parameter(torch.zeros(T, dtype=torch.float64))
    losses = 1.0 + theta + sum((s[:, None] * b) @ x for b, x in zip(blocks, xs, strict=True))
    return StepContext(losses, [f"t{i}" for i in range(T)], xs, [theta], step=0, epoch=0)


def disjoint_blocks() -> list[torch.Tensor]:
    """Two tensors, three tasks; on each tensor every task owns two coordinates of its own, so
    the combined gradient shows every task's adjusted part separately."""
    b1 = torch.zeros(3, 6, dtype=torch.float64)
    b1[0, 0:2] = torch.tensor([3.0, 4.0])  # target norm 5 on tensor 1
    b1[1, 2:4] = torch.tensor([0.1, 0.0])  # a weak auxiliary
    b1[2, 4:6] = torch.tensor([60.0, 80.0])  # a strong one
    b2 = torch.zeros(3, 6, dtype=torch.float64)
    b2[0, 0:2] = torch.tensor([0.0, 0.5])  # target norm 0.5 on tensor 2
    b2[1, 2:4] = torch.tensor([2.0, 0.0])
    b2[2, 4:6] = torch.tensor([0.0, 0.05])
    return [b1, b2]


def id_model(seed: int = 0, n_tasks: int = 2):
    spec = FeatureSpec(
        dense_names=("x",),
        cat_names=("user_id", "item_id", "colour"),
        cat_cardinalities=(6, 5, 3),
        user_col="user_id",
        item_col="item_id",
    )
    tasks = [TaskSpec("like", "binary"), TaskSpec("aux", "regression"), TaskSpec("aux2", "binary")][:n_tasks]
    torch.manual_seed(seed)
    params = {"embed_dim": 4, "bottom_hidden": [16], "tower_hidden": [8]}
    return build_model("shared-bottom", spec, tasks, params)


def id_batch(seed: int = 0, n: int = 24) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    users = torch.tensor([1, 2, 2, 2, 2, 3, 4, 4] * (n // 8))
    feats = {
        "dense": torch.randn(n, 1, generator=g),
        "cat": torch.stack(
            [users, torch.randint(1, 5, (n,), generator=g), torch.randint(0, 3, (n,), generator=g)], dim=1
        ),
    }
    targets = {
        "like": (torch.rand(n, generator=g) < 0.5).float(),
        "aux": 5.0 * torch.randn(n, generator=g),
        "aux2": (torch.rand(n, generator=g) < 0.5).float(),
    }
    return feats, targets


def id_context(model, batch: tuple[dict, dict], step: int = 0) -> StepContext:
    feats, targets = batch
    out = model(feats)
    losses = model.task_losses(out, targets, {})
    names = model.task_names
    return StepContext(
        torch.stack([losses[t] for t in names]),
        names,
        model.shared_parameters(),
        model.task_specific_parameters(),
        step=step,
        epoch=0,
        model=model,
    )


def user_rows(ctx: StepContext) -> torch.Tensor:
    """(T, n_users, dim) per-task gradients on the user embedding table."""
    table = ctx.model.encoder.embeddings[0].weight
    J = jacobian(ctx.losses, [table], retain_graph=True)
    return J.reshape(J.shape[0], *table.shape)


# ---------------------------------------------------------------------------------------------
# MetaBalance


def test_metabalance_with_r_one_gives_each_auxiliary_the_target_magnitude_per_tensor() -> None:
    blocks = disjoint_blocks()
    bal = build_balancer("metabalance", ["t0", "t1", "t2"], {"relax_factor": 1.0, "beta": 0.9})
    scales = [
        torch.tensor(s, dtype=torch.float64) for s in ([1.0, 1.0, 1.0], [2.0, 0.5, 3.0], [0.5, 4.0, 1.0])
    ]
    avg = torch.zeros(3, 2, dtype=torch.float64)
    for s in scales:
        ctx = blocks_context(blocks, s)
        bal.backward(ctx)
        norms = torch.stack([(s[:, None] * b).norm(dim=1) for b in blocks], dim=1)  # (T, K)
        avg = 0.9 * avg + 0.1 * norms
        for k, x in enumerate(ctx.shared_params):
            g = x.grad
            parts = [g[0:2].norm(), g[2:4].norm(), g[4:6].norm()]
            assert math.isclose(float(parts[0]), float(norms[0, k]), rel_tol=1e-12)  # target untouched
            for i in (1, 2):  # auxiliary magnitude = target's average / own average * own norm
                expected = float(avg[0, k] / avg[i, k] * norms[i, k])
                assert math.isclose(float(parts[i]), expected, rel_tol=1e-12)
    # a constant gradient makes the ratio of averages the ratio of norms: magnitudes become equal
    bal = build_balancer("metabalance", ["t0", "t1", "t2"], {"relax_factor": 1.0})
    for _ in range(3):
        ctx = blocks_context(blocks)
        bal.backward(ctx)
        for x, b in zip(ctx.shared_params, blocks, strict=True):
            parts = torch.stack([x.grad[0:2].norm(), x.grad[2:4].norm(), x.grad[4:6].norm()])
            torch.testing.assert_close(parts, torch.full((3,), float(b[0].norm()), dtype=torch.float64))


def test_metabalance_with_r_zero_is_the_plain_sum() -> None:
    model = TinyMTL(3, seed=1)
    batch = tiny_batch(3, seed=1)
    bal = build_balancer("metabalance", ["a", "b", "c"], {"relax_factor": 0.0})
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        ref = tiny_context(model, batch, step)
        J = jacobian(ref.losses, ref.shared_params, retain_graph=False)
        w = check_step(bal, lambda s=step: tiny_context(model, batch, s))
        torch.testing.assert_close(flat_grad(model.shared_params()), J.sum(0))
        torch.testing.assert_close(w, torch.ones(3))
        opt.step()


def test_metabalance_target_and_strategies() -> None:
    blocks = disjoint_blocks()
    # the target can be any task; its gradient is never rescaled
    bal = build_balancer("metabalance", ["t0", "t1", "t2"], {"relax_factor": 1.0, "target": "t2"})
    ctx = blocks_context(blocks)
    bal.backward(ctx)
    g1 = ctx.shared_params[0].grad
    torch.testing.assert_close(g1[4:6], blocks[0][2, 4:6])
    torch.testing.assert_close(g1[0:2].norm(), blocks[0][2].norm())
    # "reduce" only shrinks auxiliaries larger than the target, "enlarge" only grows smaller ones
    for strategy, changed in (("reduce", 2), ("enlarge", 1)):
        bal = build_balancer("metabalance", ["t0", "t1", "t2"], {"relax_factor": 1.0, "strategy": strategy})
        ctx = blocks_context(blocks)
        bal.backward(ctx)
        g = ctx.shared_params[0].grad
        kept = 3 - changed
        sl = slice(2 * kept, 2 * kept + 2)
        torch.testing.assert_close(g[sl], blocks[0][kept, sl])  # the other one is left alone
        torch.testing.assert_close(g[2 * changed : 2 * changed + 2].norm(), blocks[0][0].norm())
    with pytest.raises(ValueError, match="target"):
        build_balancer("metabalance", ["a", "b"], {"target": "c"})


def test_metabalance_on_one_tensor_reports_exact_weights() -> None:
    J = torch.tensor([[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.25]], dtype=torch.float64)
    bal = build_balancer("metabalance", ["a", "b", "c"], {"relax_factor": 0.7})
    ctx = linear_context(J)
    w = bal.backward(ctx)
    expected = torch.tensor([1.0, 0.7 * 0.25 + 0.3, 0.7 * 4.0 + 0.3], dtype=torch.float64)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(ctx.shared_params[0].grad, expected @ J)


# ---------------------------------------------------------------------------------------------
# AdaTask


def _adam_steps(Js: list[torch.Tensor], **kw: float) -> torch.Tensor:
    """Sum over tasks of the displacement of an independent torch Adam (lr 1) fed task t's
    gradients: the reference for 'separate Adam moments per task'."""
    T, P = Js[0].shape
    xs = [nn.Parameter(torch.zeros(P, dtype=torch.float64)) for _ in range(T)]
    opts = [torch.optim.Adam([x], lr=1.0, **kw) for x in xs]
    for J in Js:
        for t in range(T):
            xs[t].grad = J[t].clone()
            opts[t].step()
    return torch.stack([x.detach() for x in xs])


def test_adatask_keeps_separate_adam_moments_per_task() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 7, generator=g, dtype=torch.float64)
    Js = [base * torch.tensor([[1e-3], [1.0], [1e3]], dtype=torch.float64) * (1 + 0.3 * s) for s in range(4)]
    bal = build_balancer("adatask", ["a", "b", "c"], {"beta1": 0.8, "beta2": 0.99, "eps": 1e-8})
    moved = torch.zeros(7, dtype=torch.float64)
    for J in Js:
        ctx = linear_context(J)
        bal.backward(ctx)
        moved -= ctx.shared_params[0].grad  # SGD with lr 1 on the written direction
        torch.testing.assert_close(ctx.task_params[0].grad, torch.ones(3, dtype=torch.float64))
    ref = _adam_steps(Js, betas=(0.8, 0.99), eps=1e-8)
    torch.testing.assert_close(moved, ref.sum(0), atol=1e-10, rtol=1e-10)
    # each task's step is as large as the others' although gradients differ by 1e6
    steps = torch.tensor([bal.internals()[f"step_norm_{i}"] for i in range(3)])
    assert float(steps.max() / steps.min()) < 1.5
    # the weights report the relative amplification: about 1e3 more for each 1e3 less gradient
    w = bal.backward(linear_context(Js[-1]))
    assert math.isclose(float(w.sum()), 3.0, rel_tol=1e-12)
    assert 1e2 < float(w[0] / w[1]) < 1e4 and 1e2 < float(w[1] / w[2]) < 1e4
    # plain Adam on the summed gradient is the large task's own Adam step; AdaTask is not
    summed = _adam_steps([J.sum(0, keepdim=True) for J in Js], betas=(0.8, 0.99), eps=1e-8)[0]
    assert float((summed - ref[2]).norm()) < 0.01 * float(ref[2].norm())
    assert float((moved - ref[2]).norm()) > 0.5 * float(ref[2].norm())


@pytest.mark.parametrize(("opt_name", "wd"), [("adam", 0.0), ("adamw", 0.01)])
def test_adatask_with_one_task_is_adam(opt_name: str, wd: float) -> None:
    lr = 0.01
    ref_model, model = TinyMTL(1, seed=3), TinyMTL(1, seed=3)
    batch = tiny_batch(1, seed=3)
    make = torch.optim.Adam if opt_name == "adam" else torch.optim.AdamW
    ref_opt = make(ref_model.parameters(), lr=lr, weight_decay=wd)
    bal = build_balancer("adatask", ["t"], None)
    shared_opt = bal.shared_optimizer(model.shared_params(), lr, wd)
    assert shared_opt is not None
    task_opt = make(model.task_params(), lr=lr, weight_decay=wd)
    for step in range(6):
        ref_opt.zero_grad()
        tiny_context(ref_model, batch, step).losses.sum().backward()
        ref_opt.step()
        task_opt.zero_grad()
        shared_opt.zero_grad()
        bal.backward(tiny_context(model, batch, step))
        task_opt.step()
        shared_opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_trainer_lets_adatask_step_the_shared_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import train as train_mod
    from engine.config import load_config

    calls: dict[str, object] = {"steps": 0}
    original = AdaTask.shared_optimizer

    def spy(self: AdaTask, params: list[nn.Parameter], lr: float, weight_decay: float):
        opt = original(self, params, lr, weight_decay)
        calls["shared"] = {id(p) for p in params}
        calls["lr"] = lr
        step = opt.step

        def counted(*a: object, **k: object) -> object:
            calls["steps"] = int(calls["steps"]) + 1
            return step(*a, **k)

        opt.step = counted  # type: ignore[method-assign]
        return opt

    made: list[set[int]] = []
    make = train_mod._make_optimizer

    def record(cfg, params):  # type: ignore[no-untyped-def]
        made.append({id(p) for p in params})
        return make(cfg, params)

    monkeypatch.setattr(AdaTask, "shared_optimizer", spy)
    monkeypatch.setattr(train_mod, "_make_optimizer", record)
    cfg = load_config(
        {
            "dataset": "synthetic-correlation",
            "dataset_params": {"n_samples": 600, "dim": 8},
            "threads": 1,
            "arch": "shared-bottom",
            "balancer": "adatask",
            "epochs": 1,
            "batch_size": 64,
            "lr": 0.003,
        }
    )
    result = train_mod.train(cfg)
    assert result.state == "finished" and result.steps == 7
    assert calls["steps"] == 7 and calls["lr"] == 0.003
    shared = calls["shared"]
    assert isinstance(shared, set) and shared and not (made[0] & shared)  # the run's optimiser skips them
    assert result.model is not None
    assert shared == {id(p) for p in result.model.shared_parameters()}


# ---------------------------------------------------------------------------------------------
# PMTRec: the combination rule


def test_pmtrec_gives_rows_with_different_gradient_norms_different_weights() -> None:
    G = torch.zeros(2, 2, 3, dtype=torch.float64)
    G[:, 0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # user A: aux twice the main
    G[:, 1] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])  # user B: aux half the main
    combined, beta, clipped = personal_combination(G, main=0, bound=100.0, focus=0.0)
    torch.testing.assert_close(beta, torch.tensor([[2 / 3, 4 / 3], [4 / 3, 2 / 3]], dtype=torch.float64))
    torch.testing.assert_close(combined, torch.einsum("tr,trd->rd", beta, G))
    assert clipped == 0


def test_pmtrec_on_a_model_weights_every_user_from_its_own_row_gradients() -> None:
    model = id_model(seed=1)
    batch = id_batch(seed=1)
    bal = build_balancer("pmtrec", model.task_names, {"focus_schedule": "none", "balance_bound": 1e6})
    check_step(bal, lambda: id_context(model, batch))
    rows, beta = bal.last_rows["user_id"]
    assert rows.tolist() == [1, 2, 3, 4]  # the users in the batch
    G = user_rows(id_context(model, batch))[:, rows].double()
    n = G.norm(dim=2)
    torch.testing.assert_close(beta.double(), 2 * n / n.sum(0), atol=1e-6, rtol=1e-5)
    assert len({tuple(np.round(beta[:, r].tolist(), 4)) for r in range(4)}) == 4  # four different mixes
    assert "item_id" in bal.last_rows
    # the user table's gradient lives only on the batch's rows, and is the rows' combination
    table = model.encoder.embeddings[0].weight
    assert (table.grad[[0, 5]] == 0).all()
    torch.testing.assert_close(table.grad[rows].double(), torch.einsum("tr,trd->rd", beta.double(), G))
    assert bal.internals()["row_w_std_0"] > 0


@settings(max_examples=60, deadline=None)
@given(
    G=arrays(
        np.float64,
        st.tuples(st.integers(2, 4), st.integers(1, 5), st.integers(1, 4)),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
    ),
    bound=st.floats(0.01, 10.0),
    focus=st.floats(0.0, 1.0),
    main=st.integers(0, 3),
)
def test_pmtrec_magnitude_balancing_bounds_every_auxiliary_by_the_main_task(
    G: np.ndarray, bound: float, focus: float, main: int
) -> None:
    Gt = torch.as_tensor(G)
    main = main % Gt.shape[0]
    combined, beta, _ = personal_combination(Gt, main, bound, focus)
    assert torch.isfinite(beta).all()
    torch.testing.assert_close(combined, torch.einsum("tr,trd->rd", beta, Gt))
    contrib = (beta[:, :, None] * Gt).norm(dim=2)  # (T, R)
    reached = contrib[main] > 0
    # rows the main task does not reach are bounded by its mean contribution over the others
    ref = torch.where(reached, contrib[main], contrib[main][reached].mean() if reached.any() else 0.0)
    for a in range(Gt.shape[0]):
        if a != main:
            assert (contrib[a] <= bound * ref * (1 + 1e-9) + 1e-9).all()


def test_pmtrec_balancing_clips_only_what_exceeds_the_bound() -> None:
    G = torch.zeros(3, 1, 3, dtype=torch.float64)
    G[0, 0, 0], G[1, 0, 1], G[2, 0, 2] = 1.0, 10.0, 0.2
    _, beta, clipped = personal_combination(G, main=0, bound=2.0, focus=0.0)
    contrib = (beta[:, :, None] * G).norm(dim=2)[:, 0]
    alpha = 3 * torch.tensor([1.0, 10.0, 0.2], dtype=torch.float64) / 11.2
    assert clipped == 1
    assert math.isclose(float(contrib[1] / contrib[0]), 2.0, rel_tol=1e-12)  # clipped to the bound
    assert math.isclose(float(beta[2, 0]), float(alpha[2]), rel_tol=1e-12)  # small one untouched


def test_pmtrec_rows_the_main_task_misses_are_bounded_by_its_typical_row() -> None:
    G = torch.zeros(2, 3, 2, dtype=torch.float64)
    G[0, 0, 0], G[0, 1, 0] = 1.0, 3.0  # the main task reaches rows 0 and 1, not row 2
    G[1, :, 1] = torch.tensor([0.5, 0.5, 50.0])
    _, beta, clipped = personal_combination(G, main=0, bound=1.0, focus=0.0)
    contrib = (beta[:, :, None] * G).norm(dim=2)
    assert clipped == 1
    assert contrib[0, 2] == 0 and math.isclose(float(contrib[1, 2]), float(contrib[0, :2].mean()))
    # if the main task reaches nothing, there is no scale to bound by: auxiliaries are dropped
    G[0] = 0.0
    combined, beta, _ = personal_combination(G, main=0, bound=1.0, focus=1.0)
    assert (combined == 0).all() and (beta == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    G=arrays(
        np.float64,
        st.tuples(st.integers(2, 4), st.integers(1, 4), st.integers(2, 4)),
        elements=st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
    ),
    bound=st.floats(0.1, 5.0),
)
def test_pmtrec_focusing_never_lowers_the_cosine_with_the_main_task(G: np.ndarray, bound: float) -> None:
    Gt = torch.as_tensor(G)
    gm = Gt[0]
    prev = None
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        combined, _, _ = personal_combination(Gt, 0, bound, lam)
        cos = torch.nn.functional.cosine_similarity(combined, gm, dim=1, eps=1e-300)
        if prev is not None:
            assert (cos >= prev - 1e-9).all()
        prev = cos


def test_pmtrec_focusing_raises_the_cosine_as_training_progresses() -> None:
    model = id_model(seed=2, n_tasks=3)
    batch = id_batch(seed=2)
    params = {"focus_schedule": "linear", "focus_steps": 4, "balance_bound": 10.0}
    bal = build_balancer("pmtrec", model.task_names, params)
    G = user_rows(id_context(model, batch))
    rows = torch.tensor([1, 2, 3, 4])
    cosines = []
    for step in range(6):  # the same batch and weights: only the focusing strength changes
        check_step(bal, lambda s=step: id_context(model, batch, step=s))
        assert bal.internals()["focus"] == pytest.approx(min(1.0, step / 4))
        d = model.encoder.embeddings[0].weight.grad[rows]
        cosines.append(torch.nn.functional.cosine_similarity(d, G[0, rows], dim=1))
    cos = torch.stack(cosines)  # (steps, users)
    assert (cos[1:] >= cos[:-1] - 1e-6).all()
    assert (cos[-1] > cos[0] + 1e-3).any()  # some user's auxiliaries conflicted and were focused
    torch.testing.assert_close(cos[-1], cos[-2])  # full strength after focus_steps


def test_pmtrec_focus_schedules() -> None:
    assert focus_strength("none", 50, 100, 1.0) == 0.0
    assert focus_strength("constant", 0, 100, 0.6) == 0.6
    assert focus_strength("linear", 25, 100, 0.8) == pytest.approx(0.2)
    assert focus_strength("linear", 500, 100, 0.8) == pytest.approx(0.8)
    assert focus_strength("cosine", 50, 100, 1.0) == pytest.approx(0.5)
    assert focus_strength("cosine", 10, 100, 1.0) < focus_strength("linear", 10, 100, 1.0)


def test_pmtrec_without_id_tables_is_one_exact_block_and_checks_its_main_task() -> None:
    J = torch.tensor([[1.0, 0.0], [-3.0, 1.0], [0.1, 0.1]], dtype=torch.float64)
    bal = build_balancer("pmtrec", ["a", "b", "c"], {"main_task": "a", "focus_schedule": "constant"})
    ctx = linear_context(J)
    w = bal.backward(ctx)
    torch.testing.assert_close(ctx.shared_params[0].grad, w @ J)
    contrib = (w[:, None] * J).norm(dim=1)
    assert (contrib[1:] <= contrib[0] * (1 + 1e-12)).all()
    with pytest.raises(ValueError, match="main_task"):
        build_balancer("pmtrec", ["a", "b"], {"main_task": "like"})


# ---------------------------------------------------------------------------------------------
# MovieLens auxiliary tasks


def test_movielens_aux_tasks_are_cheap_and_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise AssertionError("tasks() must not read the data")

    monkeypatch.setattr(movielens, "read_raw", boom)
    ds = movielens.MovieLens100kDataset()
    assert [t.name for t in ds.tasks(ds.Params())] == ["rating", "like"]
    tasks = ds.tasks(ds.Params(aux_tasks=True))
    assert [t.name for t in tasks] == ["like", "rating", "genre", "gender"]
    assert tasks[2].kind == "multiclass" and tasks[2].n_classes == 19 and tasks[3].kind == "binary"


def test_movielens_aux_task_labels_leave_the_features() -> None:
    plain = load_dataset("movielens-100k", {"max_history": 2}, 0)
    aux = load_dataset("movielens-100k", {"max_history": 2, "aux_tasks": True}, 0)
    f = aux.features
    assert aux.task_names == ["like", "rating", "genre", "gender"]
    assert not any(n.startswith("genre") for n in f.dense_names) and "gender" not in f.cat_names
    assert f.dense_names == ("age", "release_year")
    assert f.cat_names == ("user_id", "item_id", "occupation", "age_bucket", "zip_digit")
    assert f.cat_cardinalities == (944, 1683, 22, 8, 12)
    pf = plain.features
    keep_dense = [pf.dense_names.index(n) for n in f.dense_names]
    keep_cat = [pf.cat_names.index(n) for n in f.cat_names]
    genre_cols = [i for i, n in enumerate(pf.dense_names) if n.startswith("genre_")]
    for name in ("train", "val", "test"):
        p, a = getattr(plain, name), getattr(aux, name)
        # the same rows and the same remaining features: only the label columns went
        assert torch.equal(a.features["dense"], p.features["dense"][:, keep_dense])
        assert torch.equal(a.features["cat"], p.features["cat"][:, keep_cat])
        assert torch.equal(a.targets["like"], p.targets["like"])
        # the labels are exactly the columns that left
        flags = p.features["dense"][:, genre_cols]
        assert a.targets["genre"].dtype == torch.int64
        assert (flags.gather(1, a.targets["genre"][:, None]) == 1).all()  # a genre of the movie ...
        first = flags.argmax(dim=1)
        assert torch.equal(a.targets["genre"], first)  # ... its first one
        gender_col = p.features["cat"][:, pf.cat_names.index("gender")]
        assert torch.equal(a.targets["gender"], (gender_col == 1).float())
    # no remaining non-id column determines a label (the id embeddings may learn them: by design)
    tr = aux.train
    for label in ("genre", "gender"):
        y = tr.targets[label].long()
        columns = [tr.features["dense"][:, j] for j in range(len(f.dense_names))]
        columns += [tr.features["cat"][:, j] for j in range(2, len(f.cat_names))]
        for col in columns:
            _, inverse = torch.unique(col, return_inverse=True)
            pairs = torch.unique(torch.stack([inverse, y]), dim=1)
            assert pairs.shape[1] > torch.unique(inverse).numel()  # some value holds several labels
