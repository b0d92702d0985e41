"""Language-model evaluation: the one evaluation loop (loss, perplexity, bits per byte) over shards or text."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from smallgpt.checkpoint.resolve import load_for_inference
from smallgpt.checkpoint.store import unwrap_model
from smallgpt.data.datasets import TokenShardDataset
from smallgpt.data.shards import load_meta
from smallgpt.evaluate.metrics import EvalResult
from smallgpt.model.config import IGNORE_INDEX
from smallgpt.model.gpt import scored_targets
from smallgpt.tokenizer.bpe import Tokenizer

Batch = dict[str, Tensor] | tuple[Tensor, Tensor] | list[Tensor]


# ----------------------------------------------------------------------------- language modelling


def batch_tensors(batch: Batch) -> tuple[Tensor, Tensor]:
    """`(input_ids, labels)` of a batch, labels aligned with input_ids (the model shifts them).

    A batch is a dict from `TextDataset`/`TokenShardDataset` (`input_ids`, optional `labels`,
    optional `attention_mask`) or an `(input_ids, labels)` pair. Positions whose attention_mask
    is 0 (padding) get label -100, so they are never scored even by a model built without a
    pad_token_id. Raises TypeError for anything else.
    """
    if isinstance(batch, dict):
        if "input_ids" not in batch:
            raise TypeError(f"batch dict needs 'input_ids' (has {sorted(batch)})")
        input_ids = batch["input_ids"]
        labels = batch.get("labels", input_ids)
        mask = batch.get("attention_mask")
        if mask is not None:
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        return input_ids, labels
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        "a batch must be a dict with input_ids (labels, attention_mask) or an (input_ids, labels) "
        f"pair, not {type(batch).__name__}"
    )


@torch.no_grad()
def score_batches(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device | str | None = None,
    byte_lengths: Tensor | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    progress: bool = False,
) -> Tensor:
    """The one evaluation loop: summed loss (nats), scored tokens and their text bytes over
    `batches`, as a float64 tensor of 3 on `device` (no host sync; the trainer all-reduces it).

    A token is scored when `scored_targets` says so (its label is neither -100 nor the model's
    pad id; padding under an attention_mask of 0 is -100). `byte_lengths[id]` = UTF-8 bytes of
    token `id` (`Tokenizer.token_byte_lengths`) gives the bytes (else they stay 0). `model` is a
    SmallGPT (possibly compiled or DDP-wrapped); it runs in eval mode under `autocast()` on
    `device` (default: its parameters' device) and is put back in its previous mode. `progress`
    shows a tqdm bar.
    """
    pad = unwrap_model(model).config.pad_token_id
    device = next(model.parameters()).device if device is None else torch.device(device)
    if byte_lengths is not None:
        byte_lengths = byte_lengths.to(device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="evaluating", unit="batch", disable=not progress):
            input_ids, labels = (t.to(device) for t in batch_tensors(batch))
            with autocast():
                _, loss = model(input_ids, labels, reduction="sum", return_logits=False)
            scored = scored_targets(labels, pad)
            sums = [loss.double(), scored.sum().double()]
            if byte_lengths is not None:
                sums.append(byte_lengths[labels[:, 1:].clamp_min(0)][scored].sum().double())
            totals[: len(sums)] += torch.stack(sums)
    finally:
        model.train(was_training)
    return totals


def evaluate_lm(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device | str | None = None,
    byte_lengths: Tensor | None = None,
    progress: bool = False,
) -> EvalResult:
    """Loss over every scored token of `batches` (see `score_batches`), as an `EvalResult`.

    Each batch's loss is weighted by its number of scored tokens, so padding never dilutes the
    average; num_bytes is 0 without `byte_lengths`. Raises ValueError when no token at all is
    scored.
    """
    totals = score_batches(
        model, batches, device=device, byte_lengths=byte_lengths, progress=progress
    )
    result = EvalResult.from_totals(*totals.tolist())
    if result.tokens == 0:
        raise ValueError("no token was scored: the batches are empty or every label is masked")
    return result


def compute_perplexity(
    model: torch.nn.Module, dataloader: Iterable[Batch], device: torch.device | str | None = None
) -> float:
    """Perplexity exp(mean nats per token) of `model` over `dataloader` (the user's guide's name).

    The mean is over real tokens only: padding (attention_mask 0, label -100 or the model's pad
    id) is neither scored nor counted, so padded batches give the same perplexity as unpadded
    ones. Batches as in `batch_tensors`. Returns inf when the loss overflows. Raises ValueError
    when no token is scored.
    """
    return evaluate_lm(model, dataloader, device=device).perplexity


class TextWindows(TokenShardDataset):
    """The scoring windows of `TokenShardDataset` over an in-memory token array (a tokenized text
    file): window k starts at token k * stride and every token but the first is scored once.

    Raises ValueError when there are fewer than 2 tokens or stride is outside [1, seq_len - 1].
    """

    def __init__(self, ids: np.ndarray, seq_len: int, stride: int, pad_token_id: int) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if not 1 <= stride <= seq_len - 1:
            raise ValueError(f"stride must be in [1, seq_len-1={seq_len - 1}], got {stride}")
        if len(ids) < 2:
            raise ValueError(
                f"the text has {len(ids)} token(s); at least 2 are needed to score one"
            )
        self.tokens = _InMemoryTokens(np.asarray(ids))
        self.seq_len, self.stride, self.pad_token_id = seq_len, stride, pad_token_id


class _InMemoryTokens:
    """The part of a shard split that `TokenShardDataset` windows read: the ids and their count."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.num_tokens = array, len(array)


def _data_windows(
    data: Path, tokenizer: Any, split: str, seq_len: int, stride: int
) -> tuple[TokenShardDataset, str]:
    """Windows over a text file or a shard directory's split, and a description of the data."""
    if data.is_dir():
        meta = load_meta(data)
        shard_tokenizer = Tokenizer.load(data / meta["tokenizer_file"])
        if shard_tokenizer.to_json() != tokenizer.to_json():
            raise ValueError(
                f"the shards in {data} were encoded with another tokenizer "
                f"({shard_tokenizer.vocab_size} ids) than the model's ({tokenizer.vocab_size} "
                "ids); prepare them with the checkpoint's tokenizer.json"
            )
        return TokenShardDataset(data, split, seq_len, stride), f"{split} split of {data}"
    if not data.is_file():
        raise FileNotFoundError(f"--data {data}: no such file or shard directory")
    ids = tokenizer.encode_file_to_numpy(data)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TextWindows(ids, seq_len, stride, pad), str(data)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    *,
    split: str = "val",
    seq_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    tokenizer_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Loss, perplexity and bits per byte of a checkpoint's model on a UTF-8 text file (encoded
    with the checkpoint's tokenizer) or on a split of a shard directory (`prepare` output).

    seq_len defaults to the model's max_seq_len, stride to seq_len // 2. Returns a dict: loss
    (nats/token), perplexity, bits_per_byte, tokens, bytes, windows, seq_len, stride,
    checkpoint, data. Raises CheckpointError for a bad checkpoint, FileNotFoundError for missing
    data, ValueError for sizes that do not fit the model, a non-UTF-8 file, or shards encoded
    with another tokenizer.
    """

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    model, tokenizer, path = load_for_inference(
        checkpoint, device=device, tokenizer_file=tokenizer_file
    )
    max_len = model.config.max_seq_len
    seq_len = max_len if seq_len is None else seq_len
    if not 2 <= seq_len <= max_len:
        raise ValueError(
            f"seq_len must be in [2, the model's max_seq_len={max_len}], got {seq_len}"
        )
    stride = max(1, seq_len // 2) if stride is None else stride
    windows, description = _data_windows(Path(data), tokenizer, split, seq_len, stride)
    lengths = torch.from_numpy(tokenizer.token_byte_lengths(model.config.vocab_size))
    result = evaluate_lm(
        model, DataLoader(windows, batch_size=batch_size), byte_lengths=lengths, progress=progress
    )
    return {
        "loss": result.loss,
        "perplexity": result.perplexity,
        "bits_per_byte": result.bits_per_byte,
        "tokens": result.tokens,
        "bytes": result.num_bytes,
        "windows": len(windows),
        "seq_len": seq_len,
        "stride": stride,
        "checkpoint": str(path),
        "data": description,
    }
