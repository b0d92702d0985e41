"""Optimizers for SmallGPT: AdamW (the user's guide's), or Muon on the hidden weight matrices
with AdamW on everything else, as one `torch.optim.Optimizer`.

Muon (`torch.optim.Muon`) orthogonalizes each matrix's momentum with a Newton–Schulz iteration
before the update; on small models trained for a short time it reaches a given loss in fewer
steps than AdamW. It only suits 2-D weights inside the network: embeddings, the (tied) output
layer, biases and norm gains stay with AdamW. Muon's update is scaled to AdamW's RMS
(`adjust_lr_fn="match_rms_adamw"`), so one learning rate and one weight decay serve both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from smallgpt.config.schema import OPTIMIZERS

MUON_MOMENTUM = 0.95


class MuonWithAdamW(torch.optim.Optimizer):
    """`torch.optim.Muon` on `muon_params` and `torch.optim.AdamW` on `adamw_groups`, stepped
    together and seen as one optimizer: one list of param groups (Muon's first) for LR
    schedulers, gradient clipping and `GradScaler`, one state dict for checkpoints.

    The two inner optimizers share this object's param group dicts and state, so a scheduler's
    change to a group's "lr" reaches the optimizer that uses it.
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
    ) -> None:
        self._muon = torch.optim.Muon(
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
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._muon.step()
        self._adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict from `state_dict()`; the base class makes new group dicts and a
        new state, which the inner optimizers must then share again."""
        super().load_state_dict(state_dict)
        self._share_groups_and_state()


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
    "muon": Muon on the transformer blocks' matrices (see `is_muon_matrix`), AdamW on the rest.
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
        muon, groups, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, fused=fused
    )
