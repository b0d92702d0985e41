"""The random number generators' state as JSON data, so a resumed run draws what the whole
run would have drawn. Imports nothing of smallgpt (like the store that writes it)."""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch


def _tensor_to_b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.detach().cpu().contiguous().numpy().tobytes()).decode("ascii")


def _b64_to_byte_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches (python, numpy, torch CPU and CUDA) as JSON data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": kind,
            "keys": base64.b64encode(keys.tobytes()).decode("ascii"),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch_cpu": _tensor_to_b64(torch.get_rng_state()),
        "torch_cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = [_tensor_to_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set every RNG back to a state from `capture_rng_state` (CUDA only when both have CUDA)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np.frombuffer(base64.b64decode(np_state["keys"]), dtype=np.uint32).copy()
    np.random.set_state(
        (
            np_state["kind"],
            keys,
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(_b64_to_byte_tensor(state["torch_cpu"]))
    cuda_states = state.get("torch_cuda") or []
    if cuda_states and torch.cuda.is_available():
        count = min(len(cuda_states), torch.cuda.device_count())
        for index in range(count):
            torch.cuda.set_rng_state(_b64_to_byte_tensor(cuda_states[index]), index)
