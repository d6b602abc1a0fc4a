"""Cascaded, sequence-aware and meta-learning architectures: ESMM, ESM^2, AITM, DTRN, MetaHeac.

The generic contracts of test_models.py skip the models that cannot serve its data (binary
funnels, behaviour sequences), so they are checked here on small recsys-sim data, which has a
click -> cart -> purchase funnel over the entire impression space and typed histories, and on
a few MovieLens rows for DTRN. Then each model's defining property is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from model_checks import (
    check_all_params_reached,
    check_diagram,
    check_output_shapes,
    check_shared_declaration,
    constant_predictor_metric,
    make_data,
    single_thread,
    train_briefly,
)

from engine.config import load_config
from engine.datasets import load_dataset
from engine.datasets.base import MTLData, Split
from engine.models import MODELS, build_model
from engine.models.aitm import AITM, calibration_penalty
from engine.models.dtrn import DTRN
from engine.models.esm2 import ESM2
from engine.models.esmm import ESMM, LogProb, post_click_metrics
from engine.models.metaheac import MetaHeac
from engine.models.seq_blocks import (
    ConditionalLayerNorm,
    ConditionalTransformerEncoder,
    conditional_layer_norm,
)
from engine.train import train

NEW = ["esmm", "esm2", "aitm", "dtrn", "metaheac"]
SIM_PARAMS = {
    "n_users": 300,
    "n_items": 200,
    "n_impressions": 12_000,
    "conversion_rate": 0.3,  # denser purchases, so a short run can learn them
    "click_rate": 0.3,
    "seq_len": 10,
}
SIM: MTLData = load_dataset("recsys-sim", SIM_PARAMS, 0)
BATCH = SIM.train.subset(torch.arange(128))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _build(
    name: str, params: dict | None = None, tasks: list[str] | None = None, seed: int = 0, data: MTLData = SIM
):
    torch.manual_seed(seed)
    specs = [data.task(t) for t in tasks] if tasks else data.tasks
    return build_model(name, data.features, specs, params)


def _targets(split: Split, tasks: list[str]) -> dict[str, torch.Tensor]:
    return {t: split.targets[t] for t in tasks}


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]


def _bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain BCE on probabilities, averaged over every row given."""
    return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()


# ------------------------------------------------------------------- contracts on recsys-sim

VARIANTS = [
    ("esmm", None, None),
    ("esmm", None, ["click", "purchase"]),  # the paper's two-task model
    ("esm2", None, None),
    ("esm2", {"o_action": False}, None),
    ("aitm", None, None),
    ("aitm", {"calibrator_weight": 0.0}, ["click", "purchase"]),
    ("dtrn", None, None),
    ("dtrn", {"top": "mmoe", "n_experts": 3}, None),
    ("dtrn", {"pooling": "mean", "share_item_embedding": False, "refine_activation": "sigmoid"}, None),
    ("metaheac", None, None),
]


@pytest.mark.parametrize(("name", "params", "tasks"), VARIANTS)
def test_contracts_on_recsys_sim(name: str, params: dict | None, tasks: list[str] | None) -> None:
    model = _build(name, params, tasks)
    specs = model.tasks
    targets = _targets(BATCH, model.task_names)
    outputs = check_output_shapes(model, BATCH.features, specs)
    preds = model.predict(outputs)
    for t in model.task_names:
        assert torch.all((preds[t] >= 0) & (preds[t] <= 1))
    check_shared_declaration(model, BATCH.features, targets)
    check_all_params_reached(model, BATCH.features, targets)
    assert next(iter(model.shared_blocks())) == "embedding"
    check_diagram(model)
    one = _build(name, params, [model.task_names[0]]) if name not in ("esmm", "esm2") else None
    if one is not None:
        assert one.shared_blocks() == {}


def test_registry_has_the_new_architectures() -> None:
    assert set(NEW) <= set(MODELS)
    assert not any(MODELS[n].single_task for n in NEW)


@pytest.mark.parametrize("name", NEW)
def test_short_seeded_run_beats_constant_on_recsys_sim(name: str) -> None:
    model = _build(name)
    got = train_briefly(model, SIM, SIM.tasks, steps=150, lr=1e-2, seed=0)
    base = constant_predictor_metric(SIM, SIM.tasks)
    for task in base:
        assert got[task] < 0.98 * base[task], f"{name}/{task}: {got[task]:.4f} vs constant {base[task]:.4f}"


@dataclass
class _TrainTest:
    train: Split
    test: Split


def test_dtrn_beats_constant_on_a_few_movielens_rows() -> None:
    ml = load_dataset("movielens-100k", {"max_history": 10}, 0)
    g = torch.Generator().manual_seed(0)
    few = _TrainTest(
        ml.train.subset(torch.randperm(len(ml.train), generator=g)[:6000]), ml.test.subset(torch.arange(2000))
    )
    model = _build("dtrn", data=ml)
    check_shared_declaration(
        model, few.train.subset(torch.arange(64)).features, few.train.subset(torch.arange(64)).targets
    )
    got = train_briefly(model, few, ml.tasks, steps=150, lr=2e-3, seed=0)  # ids overfit at 1e-2
    base = constant_predictor_metric(few, ml.tasks)
    for task in base:
        assert got[task] < 0.98 * base[task], f"dtrn/{task}: {got[task]:.4f} vs constant {base[task]:.4f}"


@pytest.mark.parametrize("name", NEW)
def test_trains_in_the_engine_loop(name: str) -> None:
    cfg = load_config(
        {
            "dataset": "recsys-sim",
            "dataset_params": {**SIM_PARAMS, "n_impressions": 3000},
            "arch": name,
            "balancer": "pcgrad",  # uses the per-task Jacobian of the overridden losses
            "epochs": 1,
            "max_steps_per_epoch": 4,
            "grad_stats_every": 2,
            "threads": 1,
        }
    )
    result = train(cfg)
    assert result.state == "finished"
    for task in ("click", "cart", "purchase"):
        assert math.isfinite(result.test[task]["logloss"]) and math.isfinite(result.test[task]["loss"])


# ------------------------------------------------------------------------------ cascades


def test_cascades_accept_only_binary_funnels() -> None:
    generic = make_data(n_train=8, n_test=8)
    for name in ("esmm", "esm2"):
        with pytest.raises(ValueError, match="not binary: amount"):
            build_model(name, generic.features, generic.tasks, None)
        with pytest.raises(ValueError, match="two or more binary tasks"):
            build_model(name, SIM.features, [SIM.task("click")], None)


def test_esmm_pctcvr_is_exactly_pctr_times_pcvr() -> None:
    model = _build("esmm", tasks=["click", "purchase"])
    assert isinstance(model, ESMM)
    outputs = model(BATCH.features)
    preds = model.predict(outputs)
    ctr, cvr = model.last_ctr, model.last_cvr["purchase"]
    assert ctr is not None
    assert torch.equal(preds["click"], ctr)
    assert torch.equal(preds["purchase"], ctr * cvr)
    # the logit the losses read is the same probability (computed in log space)
    torch.testing.assert_close(torch.sigmoid(outputs["purchase"]), ctr * cvr, rtol=1e-5, atol=1e-7)
    # outputs not from the last forward pass fall back to the sigmoid
    other = {t: o.detach().clone() for t, o in outputs.items()}
    assert torch.equal(model.predict(other)["purchase"], torch.sigmoid(other["purchase"]))
    # the CVR-style conditional is pCVR itself
    torch.testing.assert_close(model.post_click_probabilities(BATCH.features)["purchase"], cvr)


def test_esmm_losses_are_bce_over_the_entire_space() -> None:
    model = _build("esmm", tasks=["click", "purchase"])
    y = _targets(BATCH, ["click", "purchase"])
    losses = model.task_losses(model(BATCH.features), y, {})
    z = model.stage_logits(BATCH.features)
    p_ctr, p_cvr = torch.sigmoid(z["ctr"]), torch.sigmoid(z["cvr_purchase"])
    torch.testing.assert_close(losses["click"], _bce(p_ctr, y["click"]))
    torch.testing.assert_close(losses["purchase"], _bce(p_ctr * p_cvr, y["purchase"]))


def test_esmm_cvr_tower_learns_only_through_pctcvr_on_every_row() -> None:
    model = _build("esmm", tasks=["click", "purchase"])
    cvr_params = list(model.towers["cvr_purchase"].parameters())
    y = _targets(BATCH, ["click", "purchase"])
    losses = model.task_losses(model(BATCH.features), y, {})
    # the click loss never touches the CVR tower
    assert all(float(g.abs().sum()) == 0 for g in _grads(losses["click"], cvr_params))
    # its only gradient is that of BCE(pCTR * pCVR, purchase) averaged over ALL rows
    z = model.stage_logits(BATCH.features)
    manual = _bce(torch.sigmoid(z["ctr"]) * torch.sigmoid(z["cvr_purchase"]), y["purchase"])
    for got, want in zip(_grads(losses["purchase"], cvr_params), _grads(manual, cvr_params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # rows without a click still train the CVR tower (a clicked-only CVR loss would give 0 here)
    unclicked = BATCH.subset(torch.nonzero(BATCH.targets["click"] == 0).squeeze(1))
    assert len(unclicked) > 10 and float(unclicked.targets["purchase"].sum()) == 0
    loss_u = model.task_losses(model(unclicked.features), _targets(unclicked, ["click", "purchase"]), {})
    assert sum(float(g.abs().sum()) for g in _grads(loss_u["purchase"], cvr_params)) > 0
    # and masks given by the data (none on recsys-sim) are the only row filter: no click mask
    clicked_mask = {"purchase": BATCH.targets["click"] > 0}
    masked = model.task_losses(model(BATCH.features), y, clicked_mask)["purchase"]
    assert not torch.allclose(masked, losses["purchase"])


def test_post_click_metrics_score_pcvr_on_clicked_rows_only() -> None:
    model = _build("esmm")
    out = post_click_metrics(model, SIM.test)
    n_clicked = int(SIM.test.targets["click"].sum())
    assert set(out) == {"cart", "purchase"}
    for vals in out.values():
        assert vals["n_rows"] == n_clicked
        assert 0.0 <= vals["auc"] <= 1.0 and vals["logloss"] > 0


def test_logprob_keeps_tiny_and_near_one_probabilities() -> None:
    a, b = torch.tensor([-40.0, 0.3, 30.0]), torch.tensor([-40.0, -1.2, 30.0])
    prod = LogProb.from_logit(a) * LogProb.from_logit(b)
    sa, sb = torch.sigmoid(a.double()), torch.sigmoid(b.double())
    one_minus = torch.sigmoid(-a.double()) + sa * torch.sigmoid(-b.double())  # 1 - p without cancellation
    torch.testing.assert_close(
        prod.logit.double(), torch.log(sa * sb) - torch.log(one_minus), rtol=1e-5, atol=1e-5
    )
    g = torch.tensor([0.7, -0.4, 2.0])
    mixed = LogProb.from_logit(g).mix(LogProb.from_logit(a), LogProb.from_logit(b))
    sg = torch.sigmoid(g)
    torch.testing.assert_close(
        torch.sigmoid(mixed.logit), sg * torch.sigmoid(a) + (1 - sg) * torch.sigmoid(b), rtol=1e-5, atol=1e-7
    )
    assert torch.isfinite(prod.logit).all() and torch.isfinite(mixed.logit).all()


@pytest.mark.parametrize("o_action", [True, False])
def test_esm2_probabilities_are_products_of_conditionals(o_action: bool) -> None:
    model = _build("esm2", {"o_action": o_action})
    assert isinstance(model, ESM2)
    outputs = model(BATCH.features)
    preds = model.predict(outputs)
    s = model.last_stage_probs
    y1, y2, y3 = s["stage_click"], s["stage_cart"], s["stage_purchase"]
    assert torch.equal(preds["click"], y1)
    assert torch.equal(preds["cart"], y1 * y2)
    if o_action:
        y4 = s["skip_purchase"]
        assert torch.equal(preds["purchase"], y1 * (y2 * y3 + (1 - y2) * y4))
    else:
        assert "skip_purchase" not in s
        assert torch.equal(preds["purchase"], y1 * y2 * y3)
        assert torch.all(preds["purchase"] <= preds["cart"]) and torch.all(preds["cart"] <= preds["click"])
    for t in model.task_names:
        torch.testing.assert_close(torch.sigmoid(outputs[t]), preds[t], rtol=1e-5, atol=1e-7)
    # every loss is the entire-space BCE of the task's product
    y = _targets(BATCH, model.task_names)
    losses = model.task_losses(outputs, y, {})
    for t in model.task_names:
        torch.testing.assert_close(losses[t], _bce(preds[t], y[t]), rtol=1e-4, atol=1e-6)
    blocks = set(model.shared_blocks())
    assert blocks == {"embedding", "tower_stage_click", "tower_stage_cart"}


# ----------------------------------------------------------------------------------- AITM


def test_calibration_penalty_is_zero_when_ordered_and_positive_otherwise() -> None:
    earlier = torch.tensor([0.5, 0.3, 0.9])
    assert float(calibration_penalty(torch.tensor([0.5, 0.1, 0.2]), earlier)) == 0.0
    assert float(calibration_penalty(torch.tensor([0.6, 0.1, 0.2]), earlier)) == pytest.approx(0.1 / 3)


def test_aitm_calibrator_enters_the_later_tasks_loss() -> None:
    model = _build("aitm")
    assert isinstance(model, AITM)
    y = _targets(BATCH, model.task_names)
    base = super(AITM, model).task_losses  # plain BCE per task
    n = len(BATCH)
    ordered = {
        "click": torch.full((n,), 2.0),
        "cart": torch.full((n,), 1.0),
        "purchase": torch.full((n,), 0.0),
    }
    got, plain = model.task_losses(ordered, y, {}), base(ordered, y, {})
    for t in model.task_names:
        assert torch.equal(got[t], plain[t])  # p(t) <= p(t-1) everywhere: no penalty
    violated = {**ordered, "cart": torch.full((n,), 3.0)}  # p(cart) > p(click), p(purchase) < p(cart)
    got, plain = model.task_losses(violated, y, {}), base(violated, y, {})
    expected = 0.6 * (torch.sigmoid(torch.tensor(3.0)) - torch.sigmoid(torch.tensor(2.0)))
    torch.testing.assert_close(got["cart"] - plain["cart"], expected)
    assert torch.equal(got["click"], plain["click"]) and torch.equal(got["purchase"], plain["purchase"])


def test_aitm_transfer_attention_and_calibrated_heads() -> None:
    model = _build("aitm")
    model(BATCH.features)
    assert set(model.last_transfer_weights) == {"cart", "purchase"}
    for w in model.last_transfer_weights.values():
        assert w.shape == (len(BATCH), 2)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(len(BATCH)))
    assert {"head_click", "head_cart"} <= set(model.shared_blocks())
    assert "head_click" not in _build("aitm", {"calibrator_weight": 0.0}).shared_blocks()


# ----------------------------------------------------------------------------------- DTRN


def test_cln_with_zero_modulation_is_torchs_layer_norm() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 8, generator=g)
    ln = ConditionalLayerNorm(8)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(8, generator=g))
        ln.bias.copy_(torch.randn(8, generator=g))
    plain = F.layer_norm(x, (8,), ln.weight, ln.bias, ln.eps)
    zero = torch.zeros(6, 8)
    torch.testing.assert_close(ln(x, zero, zero), plain)
    assert torch.equal(ln(x), plain)
    # a non-zero modulation is the paper's formula gamma_tb * gamma * norm(x) + beta_tb + beta
    hg, hb = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    normed = F.layer_norm(x, (8,), None, None, ln.eps)
    want = (1 + hg[:, None]) * ln.weight * normed + hb[:, None] + ln.bias
    torch.testing.assert_close(conditional_layer_norm(x, ln.weight, ln.bias, hg, hb, ln.eps), want)


def test_dtrn_generates_different_gamma_beta_per_task_and_behaviour_type() -> None:
    model = _build("dtrn")
    assert isinstance(model, DTRN)
    gamma, beta = model.conditions()
    T, K = len(model.tasks), SIM.features.sequence.n_types - 1  # type: ignore[union-attr]
    assert gamma.shape == beta.shape == (T, K, 2, model.params.embed_dim)
    pairs = [(t, b) for t in range(T) for b in range(K)]
    for i, (t1, b1) in enumerate(pairs):
        for t2, b2 in pairs[i + 1 :]:
            assert not torch.allclose(gamma[t1, b1], gamma[t2, b2]), f"gamma ({t1},{b1}) == ({t2},{b2})"
            assert not torch.allclose(beta[t1, b1], beta[t2, b2]), f"beta ({t1},{b1}) == ({t2},{b2})"


def test_dtrn_zeroed_hypernetwork_is_the_plain_layer_norm_transformer() -> None:
    model = _build("dtrn")
    conditioned = model.interests(BATCH.features)
    plain = model.interests(BATCH.features, conditioned=False)
    assert not torch.allclose(conditioned[:, 0], conditioned[:, 1])  # tasks differ when conditioned
    with torch.no_grad():
        for net in (model.hyper.gamma_net, model.hyper.beta_net):
            net[-1].weight.zero_()
            net[-1].bias.zero_()
    with torch.no_grad():
        hg, hb = model.hyper_outputs()
    assert float(hg.abs().max()) == 0.0 and float(hb.abs().max()) == 0.0
    zeroed = model.interests(BATCH.features)
    torch.testing.assert_close(zeroed, plain)
    for t in range(1, len(model.tasks)):
        torch.testing.assert_close(zeroed[:, t], zeroed[:, 0])


def test_dtrn_refinement_is_raw_times_refine() -> None:
    for act in ("sigmoid", "relu"):
        model = _build("dtrn", {"refine_activation": act})
        reps = model.representations(BATCH.features)
        x = model.encoder(BATCH.features)
        interest = model.interests(BATCH.features)
        for i, t in enumerate(model.task_names):
            r = reps[t]
            assert torch.equal(r["r"], r["raw"] * r["refine"])
            torch.testing.assert_close(r["raw"], torch.cat([x, interest[:, i]], dim=1))
            if act == "sigmoid":
                assert torch.all((r["refine"] > 0) & (r["refine"] < 1))
            else:
                assert torch.all(r["refine"] >= 0)
        assert not torch.allclose(reps["click"]["refine"], reps["purchase"]["refine"])


def test_dtrn_interest_of_a_type_reads_only_that_types_events() -> None:
    model = _build("dtrn")
    model.eval()
    d = model.params.embed_dim
    feats = {k: v.clone() for k, v in BATCH.features.items()}
    base = model.interests(feats)
    clicks_only = (feats["seq_types"] == 1) & feats["seq_mask"]
    feats["seq_items"] = torch.where(clicks_only, (feats["seq_items"] % 150) + 7, feats["seq_items"])
    changed = model.interests(feats)
    # type order: click (1), cart (2), purchase (3) -> blocks [0:d], [d:2d], [2d:3d]
    assert not torch.allclose(changed[..., :d], base[..., :d])
    torch.testing.assert_close(changed[..., d:], base[..., d:])
    # a type the user never showed pools to exactly zero
    no_purchase = ~((feats["seq_types"] == 3) & feats["seq_mask"]).any(dim=1)
    assert int(no_purchase.sum()) > 0
    assert float(changed[no_purchase][..., 2 * d :].detach().abs().max()) == 0.0


def test_shared_first_attention_equals_running_every_condition() -> None:
    torch.manual_seed(0)
    enc = ConditionalTransformerEncoder(8, 2, 16, n_layers=2)
    x = torch.randn(5, 6, 8)
    kpm = torch.rand(5, 6) < 0.4
    kpm[:, -1] = False
    hg, hb = 0.3 * torch.randn(5 * 3, 4, 8), 0.3 * torch.randn(5 * 3, 4, 8)
    shared = enc(x, kpm, hg, hb, repeats=3)
    explicit = enc(x.repeat_interleave(3, dim=0), kpm.repeat_interleave(3, dim=0), hg, hb)
    torch.testing.assert_close(shared, explicit)


def test_dtrn_needs_behaviour_sequences() -> None:
    generic = make_data(n_train=8, n_test=8)
    with pytest.raises(ValueError, match="behaviour sequences"):
        build_model("dtrn", generic.features, generic.tasks, None)
    with pytest.raises(ValueError, match="n_heads"):
        build_model("dtrn", SIM.features, SIM.tasks, {"embed_dim": 8, "n_heads": 3})


# ------------------------------------------------------------------------------- MetaHeac


def test_metaheac_output_is_the_gated_mixture_of_critics() -> None:
    model = _build("metaheac")
    assert isinstance(model, MetaHeac)
    out = model(BATCH.features)
    x = model.encoder(BATCH.features)
    experts = model.experts(x)
    for i, t in enumerate(model.task_names):
        gin = torch.cat([model.task_embeddings[i].expand(len(BATCH), -1), x], dim=1)
        rep = torch.einsum("be,bed->bd", torch.softmax(model.expert_gate(gin), -1), experts)
        gc = torch.softmax(model.critic_gate(gin), -1)
        heads = model.critic_heads["binary_1"]
        probs = torch.stack(
            [torch.sigmoid(h(c(rep))).squeeze(-1) for c, h in zip(model.critics, heads, strict=True)], 1
        )
        torch.testing.assert_close(torch.sigmoid(out[t]), (gc * probs).sum(1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.last_critic_gates[t], gc)
    blocks = model.shared_blocks()
    assert {"embedding", "gates", "critic_0", "critic_heads_binary_1", "expert_0"} <= set(blocks)
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(e) not in shared for e in model.task_embeddings)  # the task-specific part


def test_metaheac_meta_losses_adapt_the_task_embeddings() -> None:
    model = _build("metaheac")
    half = len(BATCH) // 2
    names = model.task_names
    sup, qry = BATCH.subset(torch.arange(half)), BATCH.subset(torch.arange(half, len(BATCH)))
    support = (sup.features, _targets(sup, names), {})
    query = (qry.features, _targets(qry, names), {})
    adapted = model.adapted_task_embeddings(support, lr=0.5)
    for a, e in zip(adapted, model.task_embeddings, strict=True):
        assert not torch.allclose(a, e)
    emb = list(model.task_embeddings)
    second = _grads(sum(model.meta_losses(support, query, lr=0.5).values()), emb)  # type: ignore[arg-type]
    first = _grads(sum(model.meta_losses(support, query, lr=0.5, first_order=True).values()), emb)  # type: ignore[arg-type]
    assert all(float(g.abs().sum()) > 0 for g in second)
    assert any(not torch.allclose(a, b) for a, b in zip(first, second, strict=True))  # through the inner step
    plain = model.task_losses(model.forward_with(qry.features, emb), query[1], {})
    assert any(not torch.equal(plain[t], v) for t, v in model.meta_losses(support, query, lr=0.5).items())


def test_metaheac_serves_other_task_kinds() -> None:
    generic = make_data(n_train=32, n_test=8)
    model = build_model("metaheac", generic.features, generic.tasks, None)
    preds = model.predict(model(generic.train.features))
    torch.testing.assert_close(preds["segment"].sum(dim=1), torch.ones(32))
    # one critic output layer per task signature, shared only when two tasks have it
    assert set(model.critic_heads) == {"binary_1", "regression_1", "multiclass_3"}
    assert not any(k.startswith("critic_heads") for k in model.shared_blocks())
