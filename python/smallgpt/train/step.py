"""The step maths: gradients accumulated over micro-batches, exact whatever the split; the
update (or its skipping); and the error a run of non-finite steps ends in."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel


class TrainingDivergedError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def accumulate_gradients(
    model: torch.nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    total_tokens: Tensor | float,
    *,
    world_size: int = 1,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """Backpropagate sum(token losses) / total_tokens over the micro-batches; return the summed
    loss in nats (detached, float32).

    `total_tokens` is the number of scored tokens of the whole effective batch (every
    micro-batch of every rank), so N micro-batches leave exactly the gradient of one N-times
    larger batch. DDP averages gradients over ranks, hence the factor `world_size`; gradients
    are synchronised only on the last micro-batch.
    """
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    scale = world_size / total_tokens
    for index, (input_ids, labels) in enumerate(batches):
        last = index == len(batches) - 1
        sync = contextlib.nullcontext()
        if not last and isinstance(model, DistributedDataParallel):
            sync = model.no_sync()
        with sync:
            with autocast():
                _, loss = model(
                    input_ids.to(device, non_blocking=True),
                    labels.to(device, non_blocking=True),
                    reduction="sum",
                    return_logits=False,
                )
            scaled = loss.float() * scale
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += loss.detach().float()
    return loss_sum


def apply_update(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    *,
    skipped: bool,
    loss: float,
) -> bool:
    """Step the optimizer (through `scaler`) and the schedule unless the step is `skipped` (a
    non-finite loss or gradient), update the loss scale, clear the gradients.

    Returns whether a skipped step counts as a failure towards train.max_nonfinite_steps: with
    fp16 loss scaling, overflowing gradients at a large scale are expected (the scaler lowers
    the scale), so they count only once the scale reaches 1. An update returns False.
    """
    failure = False
    if not skipped:
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()
        scheduler.step()
    else:
        overflow = scaler is not None and math.isfinite(loss) and scaler.get_scale() > 1
        failure = not overflow
    if scaler is not None:
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return failure
