"""The Pareto HyperNetwork conditioning: generated weights, a front that follows the preference,
checkpoints, and runs written before the conditioning choice existed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_checks import TASKS, make_data, single_thread, skip_unless_supported

from engine.config import load_config
from engine.cosmos import (
    PARAMS_FILE,
    cosmos_config,
    evaluate_preferences,
    learned_front,
    load_cosmos,
    params_from,
    run_cosmos,
    train_cosmos,
)
from engine.datasets import load_dataset
from engine.hypernet import HyperConditioned, conditioned_names
from engine.models import MODELS, build_model
from engine.store import Lake

#: two uncorrelated linear tasks through a one-unit shared bottom: a real capacity trade-off
#: (the bottom can follow one task's direction, not both)
TRADE_OFF = {
    "dataset": "synthetic-correlation",
    "dataset_params": {"n_samples": 3000, "dim": 20, "correlation": 0.0, "n_sines": 0},
    "arch": "shared-bottom",
    "arch_params": {"bottom_hidden": [1]},
    "threads": 1,
    "epochs": 20,
    "batch_size": 128,
    "lr": 0.003,
}


def test_an_untrained_hypernetwork_is_the_plain_model_at_every_preference() -> None:
    data = load_dataset("synthetic-correlation", {"n_samples": 200, "dim": 4}, 0)
    torch.manual_seed(0)
    model = build_model("mmoe", data.features, data.tasks, {})
    hyper = HyperConditioned(model, 2, rank=4)
    x = {"dense": data.val.features["dense"][:16]}
    plain = model(x)
    for r in ([1.0, 0.0], [0.3, 0.7]):
        out = hyper(x, torch.tensor(r))
        for t in data.task_names:
            torch.testing.assert_close(out[t], plain[t])
    # a (rank, *shape) head for every parameter but embedding tables, all in one matrix
    own = dict(model.named_parameters())
    names = conditioned_names(model)
    assert [tuple(hyper.head(n).shape) for n in names] == [(4, *own[n].shape) for n in names]
    assert hyper.heads.shape == (4, sum(own[n].numel() for n in names))
    with torch.no_grad():
        hyper.heads.normal_(0, 0.1)
    # theta(r) = theta_0 + H e(r), parameter by parameter
    r = torch.tensor([0.2, 0.8])
    e = hyper.embed(r)
    for n in names:
        torch.testing.assert_close(hyper.weights(r)[n], own[n] + torch.tensordot(e, hyper.head(n), dims=1))
    a, b = hyper(x, torch.tensor([1.0, 0.0])), hyper(x, torch.tensor([0.0, 1.0]))
    assert all(not torch.allclose(a[t], b[t]) for t in data.task_names)
    with pytest.raises(ValueError, match="one preference per forward pass"):
        hyper(x, torch.ones(3, 2) / 2)


def test_embedding_tables_are_shared_not_generated() -> None:
    data = load_dataset("adult", {}, 0)
    model = build_model("shared-bottom", data.features, data.tasks, {})
    names = conditioned_names(model)
    assert names and not any("embeddings" in n for n in names)
    assert any("embeddings" in n for n, _ in model.named_parameters())


@pytest.fixture(scope="module")
def trade_off_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, str]:
    torch.set_num_threads(1)
    lake = Lake(tmp_path_factory.mktemp("hypernet") / "lake")
    return lake, run_cosmos(load_config(TRADE_OFF), {"conditioning": "hypernet"}, lake)


def test_the_learned_front_follows_the_preference_on_a_real_trade_off(
    trade_off_run: tuple[Lake, str],
) -> None:
    lake, rid = trade_off_run
    assert lake.status(rid)["state"] == "finished"
    assert lake.config(rid)["name"].startswith("Pareto HyperNetwork")
    front = learned_front(rid, 5, lake, split="val")  # task_1 weight 0 -> 1
    t1, t2 = front["task_1/mse"].to_numpy(), front["task_2/mse"].to_numpy()
    # more weight on a task does not make it clearly worse (the extreme rays are rarely drawn from
    # a Dirichlet(1), so the ends may give back a little), and the ends differ by far more than that
    assert np.all(np.diff(t1) < 0.1) and np.all(np.diff(t2) > -0.1)
    assert t1[0] - t1[-1] > 0.5 and t2[-1] - t2[0] > 0.5
    # each end is close to what a model trained on that task alone reaches (MSE well under the
    # label variance of about 1)
    assert t1[-1] < 0.3 and t2[0] < 0.3


def test_input_conditioning_cannot_follow_that_trade_off() -> None:
    """Why the hypernetwork is the default: the same problem with COSMOS input columns gives one
    point for every preference (the preference only shifts the one-unit bottom's input)."""
    cp = {"conditioning": "input"}
    res = train_cosmos(cosmos_config(load_config(TRADE_OFF), cp), cp)
    data = load_dataset(TRADE_OFF["dataset"], TRADE_OFF["dataset_params"], 0)
    ev = evaluate_preferences(res.model, data.val, data, np.array([[0.0, 1.0], [1.0, 0.0]]))  # type: ignore[arg-type]
    assert abs(ev[0]["task_1"]["mse"] - ev[1]["task_1"]["mse"]) < 0.1


def test_a_hypernetwork_checkpoint_reloads_to_the_same_front(trade_off_run: tuple[Lake, str]) -> None:
    lake, rid = trade_off_run
    ckpt = torch.load(lake.run_dir(rid) / "checkpoint.pt", weights_only=True)
    assert params_from(json.loads(ckpt["cosmos"])).conditioning == "hypernet"
    assert "heads" in ckpt["state_dict"]
    loaded = load_cosmos(rid, lake)
    assert isinstance(loaded.conditioned, HyperConditioned)
    half = np.array([[0.5, 0.5]])
    again = evaluate_preferences(loaded.conditioned, loaded.splits["val"], loaded.data, half)
    front = learned_front(rid, half, lake, split="val")
    assert front["task_2/mse"].iloc[0] == pytest.approx(again[0]["task_2"]["mse"], rel=1e-6)


def test_runs_written_before_the_choice_existed_read_as_input_conditioning(tmp_path: Path) -> None:
    old = {"alpha": 1.0, "lam": 1.0, "eval_rays": 5}
    assert params_from(old, stored=True).conditioning == "input"
    assert params_from(old).conditioning == "hypernet"  # a new request gets the default
    assert params_from({**old, "conditioning": "hypernet"}, stored=True).conditioning == "hypernet"
    with pytest.raises(ValueError, match=r"cosmos\.conditioning"):
        params_from({"conditioning": "film"})
    assert PARAMS_FILE == "cosmos.json"


# ----------------------------------------------------------- every architecture, generated weights

_DATA = make_data()
_BATCH = _DATA.train.subset(torch.arange(32))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_architecture_takes_generated_weights(name: str) -> None:
    """A new architecture needs nothing for the hypernetwork: its weights are swapped in by
    name (torch.func.functional_call), the preference changes every task's output, and the
    gradient reaches the heads."""
    skip_unless_supported(name, None, TASKS, _DATA.features)
    with single_thread():
        torch.manual_seed(0)
        model = build_model(name, _DATA.features, TASKS, {})
        hyper = HyperConditioned(model, len(TASKS), rank=3)
        with torch.no_grad():
            hyper.heads.normal_(0, 0.05)
        hyper.eval()
        a = hyper(_BATCH.features, torch.tensor([1.0, 0.0, 0.0]))
        b = hyper(_BATCH.features, torch.tensor([0.0, 0.0, 1.0]))
        assert all(not torch.allclose(a[t.name], b[t.name]) for t in TASKS), name
        hyper.train()
        out = hyper(_BATCH.features, torch.tensor([0.2, 0.3, 0.5]))
        losses = model.task_losses(out, _BATCH.targets, _BATCH.masks)
        sum(losses.values()).backward()  # type: ignore[union-attr]
        assert hyper.heads.grad is not None and hyper.heads.grad.abs().sum() > 0


def test_threads_sharing_one_hypernetwork_get_their_own_preferences() -> None:
    """The dashboard evaluates one cached model from several sessions at once: a pass swaps the
    generated weights into the model, so passes must not interleave."""
    import threading

    data = load_dataset("synthetic-correlation", {"n_samples": 400, "dim": 8}, 0)
    torch.manual_seed(0)
    hyper = HyperConditioned(build_model("mmoe", data.features, data.tasks, {}), 2, rank=4)
    with torch.no_grad():
        hyper.heads.normal_(0, 0.2)
    hyper.eval()
    x = {"dense": data.val.features["dense"]}
    prefs = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    with torch.no_grad():
        want = [hyper(x, p)["task_1"].clone() for p in prefs]
    bad: list[int] = []

    def worker(i: int) -> None:
        with torch.no_grad():
            for _ in range(40):
                if not torch.equal(hyper(x, prefs[i])["task_1"], want[i]):
                    bad.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_checkpoint_that_does_not_fit_its_model_is_a_clear_error(
    trade_off_run: tuple[Lake, str], tmp_path: Path
) -> None:
    import shutil

    lake, rid = trade_off_run
    other = Lake(tmp_path / "lake")
    shutil.copytree(lake.run_dir(rid), other.run_dir(rid))
    path = other.run_dir(rid) / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if k != "heads"}
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=f"checkpoint of COSMOS run {rid} does not fit its model"):
        learned_front(rid, 3, other)
