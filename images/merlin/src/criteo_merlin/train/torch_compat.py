"""The torch APIs the DCN uses that changed between the merlin image's torch and today's.

The merlin image (nvcr.io/nvidia/merlin/merlin-pytorch:23.08) takes its torch from NGC's pytorch
23.06, a 2.1 pre-release; the embedded default's .venv-steps has a current torch. Each helper picks
the API by what the running torch has, so one source serves both (tests run in both: make
test-steps and make test-containers):
- `torch.is_autocast_enabled(device_type)` and `torch.get_autocast_dtype` came in 2.4; 2.1 has the
  per-device `is_autocast_cpu_enabled` / `get_autocast_cpu_dtype` and the CUDA-only
  `is_autocast_enabled()` / `get_autocast_gpu_dtype`.
- Adam's fused kernel takes CPU parameters from 2.4 on; 2.1 refuses them ("`fused=True` requires
  all the params to be ... CUDA"), so there the CPU uses the foreach path.
- `torch.onnx.export(..., dynamo=False)` is needed from 2.9 on (the TorchScript exporter is no
  longer the default) and is an unknown argument before 2.5.
"""
from __future__ import annotations

import inspect

import torch

VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts to on `device_type`, or None where autocast is off."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with one fused kernel over all tensors where this torch has it for `device`."""
    if device.type == "cuda" or VERSION >= (2, 4):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def onnx_export_kwargs() -> dict:
    """The TorchScript exporter, asked for by name where torch.onnx.export has the choice."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
