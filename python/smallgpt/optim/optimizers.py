"""Optimizers for SmallGPT: AdamW (the user's guide's), or Muon on the hidden weight matrices
with AdamW on everything else, as one `torch.optim.Optimizer`.

Muon (`torch.optim.Muon`) orthogonalizes each matrix's momentum with a Newton–Schulz iteration
before the update; on small models trained for a short time it reaches a given loss in fewer
steps than AdamW. It only suits 2-D weights inside the network: embeddings, the (tied) output
layer, biases and norm gains stay with AdamW. Muon's update is scaled to AdamW's RMS
(`adjust_lr_fn="match_rms_adamw"`), so one learning rate and one weight decay serve both.

torch's Newton–Schulz runs in bf16, which only GPUs and CPUs with AVX512-BF16 or AMX multiply in
hardware; elsewhere (an AVX2 CPU) emulated bf16 made a step 5.4x slower, so there `Fp32Muon`
does the same update with the iteration in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from smallgpt.config.schema import OPTIMIZERS

MUON_MOMENTUM = 0.95


def _closure_loss(closure: Any) -> Any:
    """The loss `closure` (re-evaluating the model, as in torch.optim) returns, with gradients
    on; None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def orthogonalize(
    matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> Tensor:
    """`steps` quintic Newton–Schulz iterations towards the orthogonal factor U V^T of the 2-D
    `matrix` = U S V^T, in fp32: the iteration of `torch.optim.Muon` (same `coefficients` a, b, c:
    X <- a X + (b A + c A^2) X with A = X X^T, started from X = matrix / ||matrix||_F), without
    its cast to bf16. Returns a new fp32 tensor of `matrix`'s shape."""
    a, b, c = coefficients
    wide = matrix.size(0) <= matrix.size(1)  # iterate on the smaller Gram matrix
    x = matrix.to(torch.float32, copy=True)
    x = x if wide else x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class Fp32Muon(torch.optim.Muon):
    """`torch.optim.Muon` with its Newton–Schulz iteration in fp32 (`orthogonalize`), for devices
    without native bf16 matrix products; the same hyperparameters, state ("momentum_buffer") and
    update otherwise. Only `adjust_lr_fn="match_rms_adamw"` (the one MuonWithAdamW uses)."""

    def __init__(self, params: Iterable[nn.Parameter], **kwargs: Any) -> None:
        if kwargs.get("adjust_lr_fn") != "match_rms_adamw":
            raise ValueError('Fp32Muon supports adjust_lr_fn="match_rms_adamw" only')
        super().__init__(params, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One update of every parameter with a gradient; `closure` as in torch.optim."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buffer = state["momentum_buffer"]
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalize(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"]
                )
                # match_rms_adamw: an orthogonal update's RMS is 1/sqrt(max dim); 0.2 is AdamW's
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-lr * 0.2 * math.sqrt(max(param.shape)))
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """`torch.optim.Muon` on `muon_params` and `torch.optim.AdamW` on `adamw_groups`, stepped
    together and seen as one optimizer: one list of param groups (Muon's first) for LR
    schedulers, gradient clipping and `GradScaler`, one state dict for checkpoints.

    The two inner optimizers share this object's param group dicts and state, so a scheduler's
    change to a group's "lr" reaches the optimizer that uses it. `fp32_newton_schulz` selects
    `Fp32Muon` for the Muon part (for devices without native bf16, see `has_native_bf16`).
    """

    def __init__(
        self,
        muon_params: Iterable[nn.Parameter],
        adamw_groups: list[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
        eps: float = 1e-8,
        fused: bool = False,
        fp32_newton_schulz: bool = False,
    ) -> None:
        muon = Fp32Muon if fp32_newton_schulz else torch.optim.Muon
        self._muon = muon(
            list(muon_params),
            lr=lr,
            weight_decay=weight_decay,
            momentum=MUON_MOMENTUM,
            nesterov=True,
            adjust_lr_fn="match_rms_adamw",
        )
        self._adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, fused=fused)
        self._num_muon_groups = len(self._muon.param_groups)
        # The base class adds the inner optimizers' own group dicts (it keeps the dicts it is
        # given), which already hold every default the inner optimizers need.
        super().__init__([*self._muon.param_groups, *self._adamw.param_groups], {})
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        split = self._num_muon_groups
        self._muon.param_groups = self.param_groups[:split]
        self._adamw.param_groups = self.param_groups[split:]
        self._muon.state = self._adamw.state = self.state

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One update of every parameter; `closure` (re-evaluates the loss) as in torch.optim."""
        loss = _closure_loss(closure)
        self._muon.step()
        self._adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict from `state_dict()`; the base class makes new group dicts and a
        new state, which the inner optimizers must then share again."""
        super().load_state_dict(state_dict)
        self._share_groups_and_state()


def has_native_bf16(device: torch.device | str) -> bool:
    """Whether `device` (or devices of its type: "cpu", "cuda") multiplies bf16 matrices in
    hardware: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16 or AMX tiles (torch's own
    checks)."""
    device_type = torch.device(device).type
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device_type == "cpu" and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def is_muon_matrix(name: str, param: nn.Parameter) -> bool:
    """Whether Muon should update this parameter of a SmallGPT: a 2-D weight inside the
    transformer blocks (attention and MLP projections), not an embedding or the output layer."""
    return param.dim() == 2 and ".h." in f".{name}"


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    *,
    lr: float = 5e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.1,
    eps: float = 1e-8,
    device_type: str = "cpu",
) -> torch.optim.Optimizer:
    """The optimizer `name` ("adamw" or "muon") for `model`'s trainable parameters.

    Weight decay applies to matrices and embeddings only, never to biases or norm gains.
    "muon": Muon on the transformer blocks' matrices (see `is_muon_matrix`), AdamW on the rest;
    its Newton–Schulz iteration in bf16 where `device_type` has native bf16, else in fp32.
    `device_type` "cuda" selects the fused AdamW. Raises ValueError for an unknown name.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon = [p for n, p in named if name == "muon" and is_muon_matrix(n, p)]
    taken = {id(p) for p in muon}
    rest = [p for _, p in named if id(p) not in taken]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device_type == "cuda"
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    return MuonWithAdamW(
        muon,
        groups,
        lr=lr,
        betas=betas,
        weight_decay=weight_decay,
        eps=eps,
        fused=fused,
        fp32_newton_schulz=not has_native_bf16(device_type),
    )
