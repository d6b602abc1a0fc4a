"""MetaHeac's episodic meta-training over audiences (engine/models/metaheac.py, episodes.py).

The HEAC network itself and the hand-made one-audience `meta_losses` are tested in
test_models_zoo_cascade.py; here: how audiences are cut from a batch, what `training_losses`
returns under meta-training (and that it reduces to the joint loss when it should), that the
meta-gradient is exact (finite differences, second order) and usable by gradient balancers
(Jacobian routes agree), that short meta-trained runs through `engine.train.train` learn, and
that bad params are refused with a message naming them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from model_checks import make_data, single_thread
from pydantic import ValidationError

from engine.config import ConfigError, load_config
from engine.datasets import load_dataset
from engine.datasets.base import FeatureSpec, Split, TaskSpec
from engine.gradients import jacobian
from engine.models import build_model
from engine.models.episodes import (
    Episode,
    audience_groups,
    choose_audience_column,
    random_groups,
    sample_episode,
    split_support_query,
    usable_entropy,
)
from engine.models.metaheac import MetaHeac, MetaHeacParams
from engine.train import train

DATA = make_data(n_train=256, n_test=64)
BATCH = DATA.train


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0, features: FeatureSpec = DATA.features, **params: object) -> MetaHeac:
    torch.manual_seed(seed)
    model = build_model("metaheac", features, DATA.tasks, params)
    assert isinstance(model, MetaHeac)
    return model


def _episode(split: Split, col: int = 1, fraction: float = 0.5, seed: int = 0) -> Episode:
    torch.manual_seed(seed)
    return split_support_query(audience_groups(split.features["cat"][:, col], 4), fraction)


def _batch(split: Split) -> tuple[dict, dict, dict]:
    return split.features, split.targets, split.masks


def _total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(losses.values())).sum()


# ------------------------------------------------------------------------------- audiences


def test_audience_groups_share_a_value_and_skip_small_groups() -> None:
    values = torch.tensor([3, 1, 3, 3, 2, 1, 3, 1, 1, 2])
    groups = audience_groups(values, min_rows=3)
    assert [sorted(g.tolist()) for g in groups] == [[1, 5, 7, 8], [0, 2, 3, 6]]  # value 2 has 2 rows
    for g in groups:
        assert values[g].unique().numel() == 1


def test_auto_choice_prefers_many_even_usable_groups() -> None:
    g = torch.Generator().manual_seed(0)
    n = 64
    binary = torch.arange(n) % 2  # perfectly even, but only two audiences
    eight = torch.randperm(n, generator=g) % 8  # eight even audiences of 8 rows
    skewed = torch.where(torch.arange(n) < 50, 0, torch.arange(n) % 7)  # one big group
    ids = torch.arange(n)  # singletons: nothing usable
    cat = torch.stack([binary, eight, skewed, ids], dim=1)
    scores = [usable_entropy(cat[:, j], 4) for j in range(4)]
    assert scores[3] == 0.0
    assert scores[1] == pytest.approx(torch.log(torch.tensor(8.0)).item())
    assert choose_audience_column(cat, 4) == 1
    assert choose_audience_column(cat, 4, exclude=[1]) == 0
    assert choose_audience_column(cat[:, 3:], 4) is None


def test_support_and_query_partition_each_audience() -> None:
    values = torch.arange(40) % 3  # groups of 14, 13, 13 rows
    torch.manual_seed(0)
    ep = split_support_query(audience_groups(values, 4), 0.3)
    assert ep.n_audiences == 3
    rows = torch.cat([ep.support, ep.query])
    assert sorted(rows.tolist()) == list(range(40))  # disjoint, nothing lost
    for a, n in enumerate((14, 13, 13)):
        sup, qry = ep.support[ep.support_audience == a], ep.query[ep.query_audience == a]
        assert sup.numel() == round(0.3 * n) and sup.numel() + qry.numel() == n
        assert values[sup].unique().tolist() == values[qry].unique().tolist() == [a]
    # the extremes still leave one row on each side
    tiny = split_support_query([torch.tensor([5, 6])], 0.99)
    assert tiny.support.numel() == tiny.query.numel() == 1


def test_sampling_caps_the_audiences_and_falls_back_to_a_random_partition() -> None:
    torch.manual_seed(0)
    values = torch.arange(200) % 10
    ep = sample_episode(values, 200, n_audiences=4, support_fraction=0.5, min_rows=4)
    assert ep is not None and ep.n_audiences == 4 and ep.n_rows == 80
    picked = {int(values[ep.support[ep.support_audience == a]][0]) for a in range(4)}
    assert len(picked) == 4
    # no key (no categorical column) or no usable group: a random partition of the whole batch
    for key in (None, torch.arange(30)):
        ep = sample_episode(key, 30, n_audiences=4, support_fraction=0.5, min_rows=4)
        assert ep is not None and ep.n_audiences == 4 and ep.n_rows == 30
    assert [g.numel() for g in random_groups(3, 8, 4)] == [3]  # a last small batch: one audience
    assert sample_episode(None, 1, 4, 0.5, 4) is None  # one row cannot be split


def test_auto_audience_column_is_decided_once_and_skips_id_columns() -> None:
    model = _model()
    assert model.audience_column is None
    model.training_losses(*_batch(BATCH))
    assert model.audience_column == "c1"  # 7 values vs 5: more, similarly even groups
    assert model.internals() == {"meta:audiences": 7.0, "meta:rows_used": 1.0}
    model.training_losses(*_batch(BATCH.subset(torch.arange(16))))
    assert model.audience_column == "c1"  # kept, though a 16-row batch may favour another

    sim = load_dataset("recsys-sim", {"n_users": 300, "n_items": 200, "n_impressions": 3000}, 0)
    torch.manual_seed(0)
    m = build_model("metaheac", sim.features, sim.tasks, None)
    assert isinstance(m, MetaHeac)
    batch = sim.train.subset(torch.arange(256))
    m.training_losses(batch.features, batch.targets, batch.masks)
    assert m.audience_column not in (None, "user_id", "item_id")
    named = build_model("metaheac", sim.features, sim.tasks, {"audience_feature": "user_segment"})
    assert isinstance(named, MetaHeac) and named.audience_column == "user_segment"


def test_random_audiences_without_categorical_columns() -> None:
    dense = make_data(n_train=64, n_test=8, dense_only=True)
    model = _model(features=dense.features)
    losses = model.training_losses(*_batch(dense.train))
    assert model.audience_column is None and set(losses) == {"click", "amount", "segment"}
    assert model.internals() == {"meta:audiences": 16.0, "meta:rows_used": 1.0}  # 16 groups of 4 rows


# --------------------------------------------------------------------------- training losses


def test_meta_losses_differ_from_joint_and_depend_on_inner_lr() -> None:
    model = _model()
    ep = _episode(BATCH)
    at = {lr: model.episode_losses(*_batch(BATCH), ep, lr=lr) for lr in (0.0, 5.0, 20.0)}
    # inner lr 0: each audience's joint loss on its query rows, averaged over the audiences
    per_audience = [
        model.task_losses(model(BATCH.subset(q).features), BATCH.subset(q).targets, {})
        for q in (ep.query[ep.query_audience == a] for a in range(ep.n_audiences))
    ]
    for t in model.task_names:
        torch.testing.assert_close(at[0.0][t], torch.stack([p[t] for p in per_audience]).mean())
        # at initialisation the embeddings barely move the gates: small, but well above rounding
        assert float((at[5.0][t] - at[0.0][t]).detach().abs()) > 1e-5, t
        assert float((at[20.0][t] - at[5.0][t]).detach().abs()) > 1e-5, t
    # and differ from the plain joint losses of the batch
    joint = model.task_losses(model(BATCH.features), BATCH.targets, {})
    assert all(not torch.allclose(at[5.0][t], joint[t]) for t in joint)
    # one audience, inner lr 0: exactly the joint loss on the query rows
    one = split_support_query([torch.arange(256)], 0.25)
    q = BATCH.subset(one.query)
    plain = model.task_losses(model(q.features), q.targets, {})
    got = model.episode_losses(*_batch(BATCH), one, lr=0.0)
    for t in plain:
        torch.testing.assert_close(got[t], plain[t])


def test_training_losses_meta_train_off_are_the_joint_losses() -> None:
    model = _model(meta_train=False)
    got = model.training_losses(*_batch(BATCH))
    want = model.task_losses(model(BATCH.features), BATCH.targets, {})
    assert all(torch.equal(got[t], want[t]) for t in want)
    assert model.internals() == {}


def test_training_losses_are_seeded_episodes() -> None:
    model = _model()
    torch.manual_seed(5)
    a = model.training_losses(*_batch(BATCH))
    torch.manual_seed(5)
    b = model.training_losses(*_batch(BATCH))
    assert all(torch.equal(a[t], b[t]) for t in a)
    torch.manual_seed(6)
    c = model.training_losses(*_batch(BATCH))
    assert any(not torch.equal(a[t], c[t]) for t in a)


def test_audiences_without_labelled_query_rows_do_not_count() -> None:
    model = _model()
    ep = _episode(BATCH)
    mask = torch.ones(len(BATCH), dtype=torch.bool)
    mask[ep.query[ep.query_audience == 0]] = False  # audience 0 has no click labels in its query
    masks = {"click": mask}
    got = model.episode_losses(BATCH.features, BATCH.targets, masks, ep, lr=0.0)
    want = torch.stack(
        [
            model.task_losses(model(BATCH.subset(q).features), BATCH.subset(q).targets, {})["click"]
            for q in (ep.query[ep.query_audience == a] for a in range(1, ep.n_audiences))
        ]
    ).mean()
    torch.testing.assert_close(got["click"], want)


# ------------------------------------------------------------------------------- gradients


def test_meta_gradient_goes_through_the_inner_step() -> None:
    """Second order: the autograd gradient of the meta-loss is its exact derivative (central
    differences in float64, along a random direction over every parameter); first order drops
    the inner step's own derivative, so its task-embedding gradient differs, and it sends no
    gradient into the shared layers through the support pass."""
    model = _model().double()
    feats = {"dense": BATCH.features["dense"].double(), "cat": BATCH.features["cat"]}
    batch = (feats, BATCH.targets, {})
    ep = _episode(BATCH)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = 3.0

    def value() -> torch.Tensor:
        return _total(model.episode_losses(*batch, ep, lr=lr, first_order=False))

    second = torch.autograd.grad(value(), params, allow_unused=True)
    first = torch.autograd.grad(
        _total(model.episode_losses(*batch, ep, lr=lr, first_order=True)), params, allow_unused=True
    )
    second = [torch.zeros_like(p) if g is None else g for p, g in zip(params, second, strict=True)]
    first = [torch.zeros_like(p) if g is None else g for p, g in zip(params, first, strict=True)]

    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    h = 1e-7  # small: the ReLU units' kinks make the inner gradient piecewise constant in places
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
    plus = float(value().detach())
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * h * d)
    minus = float(value().detach())
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
    fd = (plus - minus) / (2 * h)
    analytic = float(sum((gr * d).sum() for gr, d in zip(second, direction, strict=True)))
    assert analytic == pytest.approx(fd, rel=1e-6)

    emb = {id(e) for e in model.task_embeddings}
    for p, g1, g2 in zip(params, first, second, strict=True):
        if id(p) in emb:
            assert float(g1.abs().sum()) > 0 and not torch.allclose(g1, g2)
    enc = {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.experts.parameters()}
    diff = [
        not torch.allclose(g1, g2) for p, g1, g2 in zip(params, first, second, strict=True) if id(p) in enc
    ]
    assert any(diff)  # second order reaches the encoder and experts through the support pass too


def test_task_embedding_reaches_only_its_task_and_jacobian_routes_agree() -> None:
    """What gradient balancers rely on: each task's meta-loss reaches its own embedding only
    (the task-specific backward), and the fast trunk route of the Jacobian is exact on the
    meta-training graph, first and second order."""
    for first_order in (True, False):
        model = _model(first_order=first_order)
        torch.manual_seed(0)
        losses = model.training_losses(*_batch(BATCH))
        stacked = torch.stack([losses[t] for t in model.task_names])
        embs = list(model.task_embeddings)
        for i, t in enumerate(model.task_names):
            grads = torch.autograd.grad(losses[t], embs, retain_graph=True, allow_unused=True)
            for j, gr in enumerate(grads):
                assert (gr is not None and float(gr.abs().sum()) > 0) == (i == j), (t, j)
        shared = model.shared_parameters()
        loop = jacobian(stacked, shared, method="loop")
        trunk = jacobian(stacked, shared, method="trunk")
        torch.testing.assert_close(trunk, loop, rtol=1e-4, atol=1e-6)
        assert float(loop.abs().sum()) > 0


# ----------------------------------------------------------------------------------- cold start


def test_adapt_to_audience_for_cold_start() -> None:
    model = _model(inner_lr=0.5)
    model.eval()
    ep = _episode(BATCH)
    s = BATCH.subset(ep.support[ep.support_audience == 0])
    support = (s.features, s.targets, {})
    with torch.no_grad():
        same = model.adapt_to_audience(support, steps=0)
        one = model.adapt_to_audience(support, steps=1)
        three = model.adapt_to_audience(support, steps=3)
        before = model.task_losses(model(s.features), s.targets, {})
        after = model.task_losses(model.forward_with(s.features, three), s.targets, {})
    assert all(torch.equal(a, b) for a, b in zip(same, model.task_embeddings, strict=True))
    assert all(not e.requires_grad for e in three)
    assert all(not torch.equal(a, b) for a, b in zip(one, three, strict=True))
    assert float(_total(after)) < float(_total(before))  # a few small steps fit the seed rows
    # the first step is the inner step of training
    want = model.adapted_task_embeddings(support, first_order=True)
    for a, b in zip(one, want, strict=True):
        torch.testing.assert_close(a, b.detach())
    # forward (evaluation) uses the meta-learned embeddings
    out = model(s.features)
    base = model.forward_with(s.features, list(model.task_embeddings))
    assert all(torch.equal(out[t], base[t]) for t in out)


# ----------------------------------------------------------------------------- short runs


def _constant_logloss(y_train: torch.Tensor, y_test: torch.Tensor) -> float:
    p = y_train.float().mean().clamp(1e-7, 1 - 1e-7)
    return float(F.binary_cross_entropy(p.expand(y_test.shape[0]), y_test.float()))


def test_meta_trained_run_beats_a_constant_predictor_on_recsys_sim() -> None:
    params = {
        "n_users": 300,
        "n_items": 200,
        "n_impressions": 12_000,
        "conversion_rate": 0.3,
        "click_rate": 0.3,
    }
    cfg = load_config(
        {
            "dataset": "recsys-sim",
            "dataset_params": params,
            "arch": "metaheac",
            "balancer": "ew",
            "epochs": 4,
            "batch_size": 256,
            "lr": 1e-2,
            "threads": 1,
            "device": "cpu",
            "grad_stats_every": 0,
        }
    )
    result = train(cfg)
    model = result.model
    assert isinstance(model, MetaHeac) and model.params.meta_train
    assert model.audience_column not in (None, "user_id", "item_id")
    data = load_dataset("recsys-sim", params, 0)
    for t in data.task_names:
        base = _constant_logloss(data.train.targets[t], data.test.targets[t])
        got = result.test[t]["logloss"]
        assert got < 0.98 * base, f"{t}: {got:.4f} vs constant {base:.4f}"
        assert result.test[t]["auc"] > 0.6


def test_meta_trained_run_with_a_gradient_balancer_on_random_audiences() -> None:
    """synthetic-correlation has no categorical column (random audiences); PCGrad reads the
    per-task Jacobian of the meta-losses; second order, to cover the double-backward graph."""
    params = {"n_samples": 2000, "dim": 8}
    cfg = load_config(
        {
            "dataset": "synthetic-correlation",
            "dataset_params": params,
            "arch": "metaheac",
            "arch_params": {"first_order": False, "n_audiences": 4},
            "balancer": "pcgrad",
            "epochs": 6,
            "batch_size": 128,
            "lr": 1e-2,
            "threads": 1,
            "device": "cpu",
            "grad_stats_every": 5,
        }
    )
    result = train(cfg)
    assert isinstance(result.model, MetaHeac) and result.model.audience_column is None
    data = load_dataset("synthetic-correlation", params, 0)
    for t in data.task_names:
        y_train, y_test = data.train.targets[t], data.test.targets[t]
        base = float(((y_test - y_train.mean()) ** 2).mean())
        got = result.test[t]["mse"]
        assert got < 0.8 * base, f"{t}: {got:.4f} vs constant {base:.4f}"


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("inner_lr", -0.1),
        ("inner_lr", 1000.0),
        ("support_fraction", 0.0),
        ("support_fraction", 1.0),
        ("n_audiences", 0),
        ("min_audience_rows", 1),
        ("meta_train", "sometimes"),
        ("first_order", "maybe"),
        ("audience_feature", ""),
    ],
)
def test_invalid_params_name_the_field(field: str, bad: object) -> None:
    with pytest.raises(ValidationError, match=field):
        MetaHeacParams(**{field: bad})
    with pytest.raises(ValueError, match=f"invalid metaheac params: {field}"):
        build_model("metaheac", DATA.features, DATA.tasks, {field: bad})


def test_unknown_audience_column_is_refused_with_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"audience_feature 'zip'.*'auto', 'random' or one of \['c0', 'c1'\]"
    ):
        build_model("metaheac", DATA.features, DATA.tasks, {"audience_feature": "zip"})
    with pytest.raises(ConfigError, match=r"audience_feature 'zip'.*occupation"):
        load_config({"dataset": "adult", "arch": "metaheac", "arch_params": {"audience_feature": "zip"}})
    cfg = load_config(
        {"dataset": "adult", "arch": "metaheac", "arch_params": {"audience_feature": "occupation"}}
    )
    assert cfg.arch_params["audience_feature"] == "occupation"
    assert MetaHeacParams().meta_train and MetaHeacParams().first_order


def test_one_task_model_still_meta_trains() -> None:
    torch.manual_seed(0)
    model = build_model("metaheac", DATA.features, [TaskSpec("click", "binary")], None)
    losses = model.training_losses(BATCH.features, {"click": BATCH.targets["click"]}, {})
    assert set(losses) == {"click"} and losses["click"].requires_grad


def test_a_one_row_batch_falls_back_to_the_joint_loss() -> None:
    model = _model()
    one = BATCH.subset(torch.arange(1))
    got = model.training_losses(*_batch(one))
    want = model.task_losses(model(one.features), one.targets, {})
    assert all(torch.equal(got[t], want[t]) for t in want)
    assert model.internals() == {"meta:audiences": 0.0, "meta:rows_used": 0.0}
