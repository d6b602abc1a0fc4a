"""Device selection: CUDA when present, a clear error when asked for and absent."""

from __future__ import annotations

import pytest
import torch

from engine.devices import DeviceError, select_device


def test_auto_picks_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"


def test_auto_picks_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda") == torch.device("cuda")


def test_cuda_requested_without_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        select_device("cuda")


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_step_on_cuda() -> None:
    from engine.config import load_config
    from engine.train import train

    cfg = load_config(
        {
            "dataset": "synthetic-correlation",
            "dataset_params": {"n_samples": 2000},
            "arch": "mmoe",
            "balancer": "pcgrad",
            "epochs": 1,
            "device": "cuda",
        }
    )
    result = train(cfg)
    assert result.state == "finished"
    assert next(result.model.parameters()).device.type == "cuda"
