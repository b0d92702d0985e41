"""Datasets over text and token shards: the guide's `TextDataset`, `TokenShardDataset` and random training windows."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from smallgpt.data.shards import _DTYPES, _check_split, load_meta
from smallgpt.model.config import IGNORE_INDEX


class TextDataset(Dataset):
    """Overlapping windows of `max_seq_len` tokens over `texts`, every `stride` tokens.

    The texts are tokenized and joined with the tokenizer's end-of-text token between them. The
    last window may be short; it is right-padded with `tokenizer.pad_token_id`. Items are dicts of
    LongTensors (max_seq_len,): `input_ids`, `attention_mask` (1 = real token, 0 = padding) and
    `labels` (input_ids, padding = pad id, which the model ignores when built with that
    pad_token_id). Raises TypeError for non-str texts, ValueError for bad sizes or no tokens.
    """

    def __init__(
        self, texts: Sequence[str], tokenizer: Any, max_seq_len: int = 1024, stride: int = 512
    ) -> None:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str (wrap a single text in a list)")
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be at least 2, got {max_seq_len}")
        if not 1 <= stride <= max_seq_len:
            raise ValueError(f"stride must be in [1, max_seq_len={max_seq_len}], got {stride}")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs <|endoftext|> and <|pad|> special tokens")
        encoded = (
            tokenizer.encode_batch(list(texts))
            if hasattr(tokenizer, "encode_batch")
            else [tokenizer.encode(t) for t in texts]
        )
        eos = tokenizer.eos_token_id
        stream: list[int] = []
        for index, ids in enumerate(encoded):
            if index:
                stream.append(eos)
            stream.extend(ids)
        if not stream:
            raise ValueError("texts contain no tokens (all texts are empty)")
        self.tokens = torch.tensor(stream, dtype=torch.long)
        self.max_seq_len = max_seq_len
        self.stride = stride
        self.pad_token_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        overflow = max(len(self.tokens) - self.max_seq_len, 0)
        return 1 + math.ceil(overflow / self.stride)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.stride
        window = self.tokens[start : start + self.max_seq_len]
        real = len(window)
        input_ids = torch.full((self.max_seq_len,), self.pad_token_id, dtype=torch.long)
        input_ids[:real] = window
        attention_mask = torch.zeros(self.max_seq_len, dtype=torch.long)
        attention_mask[:real] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.clone(),
        }


class _ShardTokens:
    """A split's token file, memory-mapped on first use (so each DataLoader worker maps its own)."""

    def __init__(self, shard_dir: str | os.PathLike, split: str) -> None:
        self.meta = load_meta(shard_dir)
        info = self.meta["splits"][_check_split(split)]
        self.path = Path(shard_dir) / info["file"]
        self.num_tokens = info["tokens"]
        self.dtype = _DTYPES[self.meta["dtype"]]
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


class TokenShardDataset(Dataset):
    """Sequential windows of `seq_len` tokens over a shard split, for evaluation.

    Window k starts at token k·stride (default stride = seq_len - 1, so windows overlap by one
    token). Each token of the split except the first is scored exactly once: labels of tokens
    already scored by the previous window (context only) are -100, as is padding of the last
    window. Items: dicts of LongTensors (seq_len,) `input_ids`, `attention_mask`, `labels`.
    Raises ValueError when the split has fewer than 2 tokens or stride is outside [1, seq_len-1].
    """

    def __init__(
        self, shard_dir: str | os.PathLike, split: str, seq_len: int, stride: int | None = None
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        stride = seq_len - 1 if stride is None else stride
        if not 1 <= stride <= seq_len - 1:
            raise ValueError(f"stride must be in [1, seq_len-1={seq_len - 1}], got {stride}")
        self.tokens = _ShardTokens(shard_dir, split)
        if self.tokens.num_tokens < 2:
            raise ValueError(f"split '{split}' of {shard_dir} has fewer than 2 tokens")
        self.seq_len, self.stride = seq_len, stride
        pad = self.tokens.meta.get("pad_token_id")
        self.pad_token_id = self.tokens.meta["eos_token_id"] if pad is None else pad

    def __len__(self) -> int:
        overflow = max(self.tokens.num_tokens - self.seq_len, 0)
        return 1 + math.ceil(overflow / self.stride)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = index * self.stride
        end = min(start + self.seq_len, self.tokens.num_tokens)
        real = end - start
        input_ids = torch.full((self.seq_len,), self.pad_token_id, dtype=torch.long)
        input_ids[:real] = torch.from_numpy(self.tokens.array[start:end].astype(np.int64))
        labels = torch.full((self.seq_len,), IGNORE_INDEX, dtype=torch.long)
        first_new = 0 if index == 0 else (index - 1) * self.stride + self.seq_len - start
        labels[first_new:real] = input_ids[first_new:real]
        attention_mask = torch.zeros(self.seq_len, dtype=torch.long)
        attention_mask[:real] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class RandomWindowBatches:
    """Endless training batches of random contiguous windows from a shard split.

    Batch number `step` is drawn from numpy's PCG64 seeded with (seed, step): all ranks draw the
    same world_size·batch_size window starts and rank r takes its own batch_size of them. The
    state is therefore just `step`, and `load_state_dict` resumes exactly where a checkpoint was.
    `next_batch()` (or iteration) returns `(input_ids, labels)` LongTensors (batch_size, seq_len);
    labels equal input_ids (the model shifts them). Raises ValueError for bad sizes or ranks.
    """

    def __init__(
        self,
        shard_dir: str | os.PathLike,
        split: str = "train",
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if seq_len < 2 or batch_size < 1:
            raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.tokens = _ShardTokens(shard_dir, split)
        if self.tokens.num_tokens < seq_len:
            raise ValueError(
                f"split '{split}' of {shard_dir} has {self.tokens.num_tokens} tokens, fewer than "
                f"seq_len={seq_len}"
            )
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next (input_ids, labels) batch of this rank."""
        rng = np.random.default_rng([self.seed, self.step])
        num_starts = self.tokens.num_tokens - self.seq_len + 1
        starts = rng.integers(0, num_starts, size=self.world_size * self.batch_size)
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        windows = self.tokens.array[mine[:, None] + np.arange(self.seq_len)]
        self.step += 1
        input_ids = torch.from_numpy(windows.astype(np.int64))
        return input_ids, input_ids.clone()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position in the batch stream."""
        return {
            "split": self.split,
            "seed": self.seed,
            "step": self.step,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_tokens": self.tokens.num_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; raises ValueError when it describes a different stream."""
        for key, value in self.state_dict().items():
            if key == "step":
                continue
            if state.get(key) != value:
                raise ValueError(
                    f"data state has {key}={state.get(key)!r} but this batch source has {value!r}; "
                    "resume with the same shards, seed, seq_len, batch_size and world_size"
                )
        step = state.get("step")
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"data state has an invalid step {step!r}")
        self.step = step
