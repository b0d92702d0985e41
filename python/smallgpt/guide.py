"""The user's guide's training-loop functions, called exactly as the guide calls them.

The guide (`shared/guide/`, walked through in docs/guide.md) types:

    tokenizer = SimpleTokenizer(vocab_size=10000); tokenizer.train(texts)
    dataset = TextDataset(texts=texts, tokenizer=tokenizer, max_seq_len=1024, stride=512)
    model = SmallGPT(vocab_size=..., embed_dim=..., num_heads=..., num_layers=...,
                     max_seq_len=..., dropout=...)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2000,
                                                num_training_steps=100000)
    logits, labels = forward_pass(model, batch)
    loss = compute_loss(logits, labels)
    loss = training_step(model, batch, optimizer, scheduler)
    log_training_metrics(step, loss, learning_rate, elapsed_time)
    avg_loss, perplexity = validate_model(model, val_dataloader)

This module defines the guide's inline functions with those calls. The guide's `compute_loss`
reads a global `tokenizer` for the pad id; here `forward_pass` marks padded positions (a batch's
attention_mask 0) with the ignore index -100 in the labels it returns, so
`compute_loss(logits, labels)` needs no tokenizer. Batches are `TextDataset` dicts or
`(input_ids, labels)` pairs.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from smallgpt.evaluate.lm import Batch, batch_tensors, evaluate_lm
from smallgpt.model.config import IGNORE_INDEX
from smallgpt.model.gpt import ignore_padding


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def guide_cosine_factor(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """The guide's multiplier of the peak learning rate after `step` optimizer steps:
    min(t / warmup, 0.5 * (1 + cos(pi * (t - warmup) / (total - warmup)))).

    Past `num_training_steps` it stays at 0 (the formula's cosine would rise again). With no
    warmup the first term is left out. With warmup >= total the run ends inside the warm-up: the
    factor is t / warmup throughout, with no decay (as Hugging Face's schedule does).
    """
    if step >= num_training_steps:
        return 0.0
    decay = num_training_steps - num_warmup_steps
    cosine = (
        0.5 * (1.0 + math.cos(math.pi * (step - num_warmup_steps) / decay)) if decay > 0 else 1.0
    )
    if num_warmup_steps == 0:
        return cosine
    return min(step / num_warmup_steps, cosine)


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    last_epoch: int = -1,
) -> LambdaLR:
    """The guide's warmup + cosine schedule: a `LambdaLR` multiplying each param group's initial
    lr by `guide_cosine_factor` (linear warmup, then a cosine down to 0 at
    `num_training_steps`). Call `scheduler.step()` after each optimizer step.

    The trainer uses `smallgpt.schedule.get_cosine_schedule_with_warmup` instead, which decays
    to a floor (`min_lr_ratio`). Raises ValueError for negative counts or no training steps.
    """
    counts = {"num_warmup_steps": num_warmup_steps, "num_training_steps": num_training_steps}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if num_warmup_steps < 0 or num_training_steps < 1:
        raise ValueError(
            f"num_warmup_steps must be >= 0 and num_training_steps >= 1 "
            f"(got {num_warmup_steps}, {num_training_steps})"
        )

    def factor(step: int) -> float:
        return guide_cosine_factor(step, num_warmup_steps, num_training_steps)

    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def forward_pass(model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """The guide's forward pass: `(shift_logits, shift_labels)` for next-token prediction.

    shift_logits = the model's logits of the batch's input_ids without the last position,
    (batch, seq_len - 1, vocab_size); shift_labels = the batch's labels without the first,
    (batch, seq_len - 1), so shift_logits[:, t] predicts shift_labels[:, t]. The labels are the
    batch's `labels` (default: its input_ids), with -100 where its attention_mask is 0, so that
    `compute_loss` skips padding without knowing the pad id. Runs on the model's device in the
    model's current mode. Raises TypeError for a batch that is neither a dict nor a pair.
    """
    device = _model_device(model)
    input_ids, labels = (t.to(device) for t in batch_tensors(batch))
    logits = model(input_ids)
    return logits[..., :-1, :].contiguous(), labels[..., 1:].contiguous()


def compute_loss(logits: Tensor, labels: Tensor, pad_token_id: int | None = None) -> Tensor:
    """The guide's loss: mean cross-entropy (nats) of `logits` (..., vocab) against `labels` (...),
    the already shifted pair `forward_pass` returns.

    Labels equal to -100 are not scored (forward_pass puts it on padding); `pad_token_id` (the
    guide's `tokenizer.pad_token_id`) is skipped too when given, for labels taken straight from
    input_ids. Returns a 0-d float tensor (NaN when nothing is scored). Raises ValueError when
    the shapes do not line up.
    """
    if logits.dim() < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits (..., vocab) {tuple(logits.shape)} do not match labels (...) "
            f"{tuple(labels.shape)}: pass the pair forward_pass returns"
        )
    targets = ignore_padding(labels.to(logits.device), pad_token_id)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def training_step(
    model: torch.nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    max_grad_norm: float | None = 1.0,
) -> float:
    """One optimizer step on `batch`, as the guide's; returns its mean loss in nats per scored
    token.

    Forward and loss in training mode (padding never scored), backward, gradients clipped to
    global L2 norm `max_grad_norm` (None or 0: no clipping), optimizer step, then
    `scheduler.step()`. A step whose loss or gradient is not finite is skipped (gradients
    dropped, no update, a warning), as the trainer does.
    """
    model.train()
    device = _model_device(model)
    input_ids, labels = (t.to(device) for t in batch_tensors(batch))
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(input_ids, labels, return_logits=False)
    loss.backward()
    clip = max_grad_norm if max_grad_norm else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    value = loss.item()
    if not (math.isfinite(value) and math.isfinite(grad_norm.item())):
        optimizer.zero_grad(set_to_none=True)
        warnings.warn(
            f"skipped a step with a non-finite loss ({value}) or gradient norm "
            f"({grad_norm.item()}); lower the learning rate if this repeats",
            stacklevel=2,
        )
        return value
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return value


def log_training_metrics(
    step: int,
    loss: float,
    learning_rate: float,
    elapsed_time: float,
    *,
    writer: Any | None = None,
    quiet: bool = False,
) -> dict[str, float]:
    """The guide's metrics of one training step: returns
    `{"train/loss", "train/perplexity", "train/learning_rate", "train/step", "train/elapsed_time"}`
    (elapsed_time in the caller's unit, seconds in the guide).

    The record goes to Weights & Biases when wandb has been imported and a run is active
    (`wandb.init`; wandb stays optional), to `writer` when given (a TensorBoard `SummaryWriter`
    or anything with `add_scalar(tag, value, step)`; else anything with `log(record)`), and, unless
    `quiet`, as one line on stdout. Perplexity is inf when exp(loss) overflows.
    """
    metrics: dict[str, float] = {
        "train/loss": loss,
        "train/perplexity": math.exp(loss) if loss < 700 else math.inf,
        "train/learning_rate": learning_rate,
        "train/step": step,
        "train/elapsed_time": elapsed_time,
    }
    # A run can only be active if the user imported wandb: never import it here.
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.log(metrics)
    if writer is not None:
        if hasattr(writer, "add_scalar"):
            for key, value in metrics.items():
                if key != "train/step":
                    writer.add_scalar(key, value, step)
        else:
            writer.log(metrics)
    if not quiet:
        print(
            f"step {step} | loss {loss:.4f} | ppl {metrics['train/perplexity']:.2f} | "
            f"lr {learning_rate:.3e} | {elapsed_time:.1f}s"
        )
    return metrics


def validate_model(
    model: torch.nn.Module,
    val_dataloader: Any,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """The guide's validation: `(avg_loss, perplexity)`, the mean loss in nats per real token over
    `val_dataloader` and its exponential (inf on overflow).

    Unlike the guide's loop, which weights each batch by all its label positions, padding is
    neither scored nor counted. Runs in eval mode without gradients and restores the model's
    mode; `device` defaults to the model's. Raises ValueError when no token is scored.
    """
    result = evaluate_lm(model, val_dataloader, device=device)
    return result.loss, result.perplexity
