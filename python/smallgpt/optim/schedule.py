"""Learning-rate schedule: linear warmup, then cosine decay to a floor (the user's guide's name)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup_factor(
    step: int, num_warmup_steps: int, num_training_steps: int, min_lr_ratio: float = 0.1
) -> float:
    """Multiplier of the peak learning rate after `step` optimizer steps.

    step / num_warmup_steps during warmup, then half a cosine from 1 down to `min_lr_ratio` at
    `num_training_steps`, and `min_lr_ratio` afterwards (the same values as Hugging Face's
    cosine-with-min-lr schedule up to `num_training_steps`).
    """
    if step < num_warmup_steps:
        return step / num_warmup_steps
    decay_steps = max(1, num_training_steps - num_warmup_steps)
    progress = min(1.0, (step - num_warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    min_lr_ratio: float = 0.1,
    last_epoch: int = -1,
) -> LambdaLR:
    """A `LambdaLR` applying `cosine_with_warmup_factor` to every param group's initial lr.

    Call `scheduler.step()` once after each optimizer step. Warmup longer than training is not an
    error: the run ends inside the warm-up (as with Hugging Face's schedule; the trainer shortens
    the warm-up to the run instead, and says so). Raises ValueError for negative step counts or
    `min_lr_ratio` outside [0, 1].
    """
    if num_warmup_steps < 0 or num_training_steps < 1:
        raise ValueError(
            f"num_warmup_steps must be >= 0 and num_training_steps >= 1 "
            f"(got {num_warmup_steps}, {num_training_steps})"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1] (got {min_lr_ratio})")

    def factor(step: int) -> float:
        return cosine_with_warmup_factor(step, num_warmup_steps, num_training_steps, min_lr_ratio)

    return LambdaLR(optimizer, factor, last_epoch=last_epoch)
