"""Device selection: CUDA when present and asked for, CPU otherwise. Nothing assumes a GPU."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


def select_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda:0 if CUDA is available else cpu; 'cuda' fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "device 'cuda' was requested but no CUDA GPU is available; use --device auto or cpu"
            )
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}; choose auto, cpu or cuda")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
