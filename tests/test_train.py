"""The training loop: what it records, how it stops, what it saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, load_config
from engine.models import build_model
from engine.train import NullWriter, TrainingError, load_checkpoint, train

TINY = {"dataset": "synthetic-correlation", "dataset_params": {"n_samples": 600, "dim": 8}, "threads": 1}


def _cfg(**kw: object):
    return load_config({**TINY, **kw})


def test_records_losses_weights_gradient_stats_and_metrics() -> None:
    w = NullWriter()
    result = train(_cfg(arch="mmoe", balancer="pcgrad", epochs=2, batch_size=64, grad_stats_every=3), w)
    assert result.state == "finished"
    steps_per_epoch = 7  # 420 train rows / 64
    assert result.steps == 2 * steps_per_epoch
    train_rows = [r for r in w.metric_rows if r["split"] == "train"]
    assert len(train_rows) == 2 * result.steps  # 2 tasks, every step
    val_rows = [r for r in w.metric_rows if r["split"] == "val"]
    assert {r["epoch"] for r in val_rows} == {1, 2}
    assert {r["metric"] for r in val_rows} == {"loss", "mse", "mae"}
    test_rows = [r for r in w.metric_rows if r["split"] == "test"]
    assert {(r["task"], r["metric"]) for r in test_rows} == {
        (t, m) for t in ("task_1", "task_2") for m in ("loss", "mse", "mae")
    }
    assert [s for s, _ in w.weight_rows] == list(range(result.steps))
    # gradient statistics at steps 0, 3, 6, ...; each has the overall block and per-block rows
    assert [s for s, _ in w.grad_rows] == list(range(0, result.steps, 3))
    layers = {r.layer for r in w.grad_rows[0][1]}
    assert "all" in layers and any(layer.startswith("expert_") for layer in layers)


def test_no_gradient_stats_when_disabled() -> None:
    w = NullWriter()
    train(_cfg(arch="shared-bottom", balancer="ew", epochs=1, grad_stats_every=0), w)
    assert w.grad_rows == []


def test_nan_loss_stops_with_a_clear_reason() -> None:
    with pytest.raises(TrainingError, match=r"became .*nan.*lower learning rate|learning rate"):
        train(_cfg(arch="shared-bottom", balancer="ew", epochs=3, lr=10.0, optimizer="sgd"))


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    cfg = _cfg(arch="ple", balancer="ew", epochs=1)
    result = train(cfg, checkpoint_path=tmp_path / "checkpoint.pt")
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(load_checkpoint(tmp_path / "checkpoint.pt")) == set(ckpt)
    assert set(ckpt) == {"state_dict", "config", "epoch"}
    assert result.model is not None
    model = build_model("ple", result.model.features, result.model.tasks, cfg.arch_params)
    model.load_state_dict(ckpt["state_dict"])
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.cpu())


def test_early_stopping_stops_at_the_first_epoch_without_gain() -> None:
    w = NullWriter()
    # 420 rows and a large step size overfit within a few epochs; patience 1 must stop there
    train(_cfg(arch="shared-bottom", balancer="ew", epochs=30, lr=0.05, patience=1), w)
    val = sorted(
        (r["epoch"], r["value"])
        for r in w.metric_rows
        if r["split"] == "val" and r["task"] == "task_1" and r["metric"] == "mse"
    )
    best, first_without_gain = float("inf"), None
    for epoch, mse in val:
        if mse >= best:
            first_without_gain = epoch
            break
        best = mse
    assert first_without_gain is not None and first_without_gain < 30
    assert val[-1][0] == first_without_gain  # no epoch ran after it
    test_epoch = {r["epoch"] for r in w.metric_rows if r["split"] == "test"}
    assert test_epoch == {first_without_gain - 1}  # test metrics come from the best epoch


def test_same_seed_same_result() -> None:
    a = train(_cfg(arch="mmoe", balancer="cagrad", epochs=1, seed=3))
    b = train(_cfg(arch="mmoe", balancer="cagrad", epochs=1, seed=3))
    assert a.test == b.test


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset": "nope"}, "unknown dataset 'nope'"),
        ({"arch": "transformer-xl"}, "unknown arch"),
        ({"balancer": "magic"}, "unknown balancer"),
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({"lr": -1}, "lr: Input should be greater than 0"),
        ({"tasks": ["task_1", "ctr"]}, "tasks ['ctr'] not in dataset"),
        ({"arch_params": {"n_experts": -2}}, "n_experts"),
        ({"dataset_params": {"correlation": 3}}, "dataset_params.correlation"),
        ({"balancer": "fixed", "balancer_params": {"weights": {"task_1": 1.0}}}, "task_2"),
        ({"arch": "single-task", "balancer": "pcgrad"}, "shares no parameters"),
        ({"early_stopping_metric": "task_1:auc"}, "not 'auc'"),
        ({"device": "tpu"}, "device"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_config_values_get_clear_messages(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config({**TINY, **fields})
    assert message in str(exc.value)
