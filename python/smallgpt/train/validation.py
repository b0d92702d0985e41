"""What the trainer validates with: the loss over the validation windows and sample texts."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from smallgpt.config.schema import LogSection
from smallgpt.data.datasets import TokenShardDataset
from smallgpt.evaluate.lm import score_batches
from smallgpt.evaluate.metrics import EvalResult
from smallgpt.generate.decoding import generate_text
from smallgpt.model.gpt import SmallGPT
from smallgpt.tokenizer.bpe import Tokenizer
from smallgpt.train.distributed import DistInfo, all_reduce_sum
from smallgpt.train.runtime import Runtime


def evaluate_windows(
    model: SmallGPT,
    windows: TokenShardDataset,
    *,
    batch_size: int,
    eval_batches: int | None,
    byte_lengths: torch.Tensor,
    runtime: Runtime,
    dist: DistInfo,
) -> EvalResult:
    """Loss, token and byte totals over the first eval_batches * batch_size * world_size
    `windows` (all of them when eval_batches is None), each rank scoring every world_size-th
    one (collective over ranks)."""
    limit = len(windows)
    if eval_batches is not None:
        limit = min(limit, eval_batches * batch_size * dist.world_size)
    indices = list(range(dist.rank, limit, dist.world_size))
    totals = score_batches(
        model,
        DataLoader(Subset(windows, indices), batch_size=batch_size),
        device=runtime.device,
        byte_lengths=byte_lengths,
        autocast=runtime.autocast,
    )
    return EvalResult.from_totals(*all_reduce_sum(totals, dist).tolist())


def sample_texts(model: SmallGPT, tokenizer: Tokenizer, log: LogSection, seed: int) -> list[str]:
    """`log.num_samples` continuations of `log.sample_prompt` (with their own generator seeded
    by `seed`: the global RNG is untouched)."""
    if log.num_samples == 0:
        return []
    return generate_text(
        model,
        tokenizer,
        [log.sample_prompt] * log.num_samples,
        max_length=log.sample_tokens,
        temperature=log.sample_temperature,
        seed=seed,
    )
