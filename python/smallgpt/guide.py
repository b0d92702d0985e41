"""The user's guide's training-loop functions, built on the package's model and trainer code.

The guide's recipe, every name importable from `smallgpt`:

    tokenizer = SimpleTokenizer(vocab_size).train(texts)        # .save / .encode / .decode
    dataset = TextDataset(texts, tokenizer, max_seq_len, stride)
    model = SmallGPT(tokenizer.get_vocab_size(), embed_dim, num_heads, num_layers, max_seq_len,
                     dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.999),
                                  weight_decay=0.1)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    loss = training_step(model, batch, optimizer, scheduler, max_grad_norm=1.0)
    log_training_metrics(step, loss, scheduler.get_last_lr()[0], writer)
    val_loss = validate_model(model, val_loader)
    save_checkpoint(model, optimizer, scheduler, step, loss)
    generate_text(model, tokenizer, "prompt") / top_k_sampling(logits) / top_p_sampling(logits)
    compute_perplexity(model, val_loader) / compute_bleu_score(reference, candidate)

This module holds the five functions the guide defines inline (`forward_pass`, `compute_loss`,
`training_step`, `log_training_metrics`, `validate_model`); where the guide read a global
tokenizer or config they take it as an optional argument. Batches are `TextDataset` dicts or
`(input_ids, labels)` pairs; labels are aligned with input_ids and shifted inside the loss.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from smallgpt.data import IGNORE_INDEX
from smallgpt.evaluate import Batch, batch_tensors, evaluate_lm


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def forward_pass(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Logits (batch, seq_len, vocab_size) of the batch's input_ids, computed on the model's
    device. Raises TypeError for a batch that is neither a dict nor an (input_ids, labels) pair."""
    input_ids, _ = batch_tensors(batch)
    return model(input_ids.to(_model_device(model)))


def compute_loss(logits: Tensor, labels: Tensor, pad_token_id: int | None = None) -> Tensor:
    """Mean next-token cross-entropy in nats: position t's logits predict labels[:, t + 1].

    Labels equal to -100 or to `pad_token_id` (the guide's `tokenizer.pad_token_id`) are not
    scored. Returns a 0-d tensor (NaN when nothing is scored). Raises ValueError when the
    shapes do not line up.
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits (batch, seq_len, vocab) {tuple(logits.shape)} do not match labels "
            f"(batch, seq_len) {tuple(labels.shape)}"
        )
    targets = labels[:, 1:].to(logits.device)
    if pad_token_id is not None:
        targets = targets.masked_fill(targets == pad_token_id, IGNORE_INDEX)
    shifted = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(shifted, targets.reshape(-1), ignore_index=IGNORE_INDEX)


def training_step(
    model: torch.nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    max_grad_norm: float | None = 1.0,
) -> float:
    """One optimizer step on `batch`; returns its mean loss in nats per scored token.

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
    lr: float,
    writer: Any | None = None,
    *,
    quiet: bool = False,
    **extra: float,
) -> dict[str, Any]:
    """Report one training step: a line on stdout (unless `quiet`) and, with `writer`, the
    scalars `train/loss`, `train/perplexity`, `train/lr` and `train/<extra key>` (a TensorBoard
    `SummaryWriter`, or anything with `add_scalar(tag, value, step)`; a `smallgpt.logger.
    RunLogger` gets the record itself). Returns the record
    `{"kind": "train", "step", "loss", "perplexity", "lr", **extra}`.
    """
    perplexity = math.exp(loss) if loss < 700 else math.inf
    record: dict[str, Any] = {
        "kind": "train",
        "step": step,
        "loss": loss,
        "perplexity": perplexity,
        "lr": lr,
        **extra,
    }
    if not quiet:
        details = "".join(f" | {key} {value:.4g}" for key, value in extra.items())
        print(f"step {step} | loss {loss:.4f} | ppl {perplexity:.2f} | lr {lr:.3e}{details}")
    if writer is not None:
        if hasattr(writer, "add_scalar"):
            for key, value in record.items():
                if key not in ("kind", "step"):
                    writer.add_scalar(f"train/{key}", value, step)
        else:
            writer.log(record)
    return record


def validate_model(
    model: torch.nn.Module,
    dataloader: Any,
    device: torch.device | str | None = None,
) -> float:
    """Mean validation loss in nats per real token over `dataloader` (padding is not counted),
    in eval mode without gradients; the model's mode is restored. `device` defaults to the
    model's. Raises ValueError when no token is scored."""
    return evaluate_lm(model, dataloader, device=device).loss
