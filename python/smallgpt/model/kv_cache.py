"""The key/value cache of incremental decoding: one preallocated buffer per layer."""

from __future__ import annotations

import torch
from torch import Tensor


class LayerKV:
    """One layer's view of a KVCache: its key/value buffers and how many slots are already filled."""

    def __init__(self, k: Tensor, v: Tensor, past: int) -> None:
        self.k, self.v, self.past = k, v, past

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new keys/values (B, H, T, D) after the past ones; return all of them so far."""
        end = self.past + k.size(2)
        self.k[:, :, self.past : end] = k
        self.v[:, :, self.past : end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Preallocated keys and values of every layer for incremental decoding.

    Buffers have shape (num_layers, batch, heads, capacity, head_dim). All sequences of the batch
    share the slot count `length`; sequence b's first `start[b]` slots are left padding, which no
    real query attends to, and its positions count from its first real slot. Build one with
    `SmallGPT.new_kv_cache`; each forward pass with `kv_cache=` appends its tokens.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        capacity: int,
        *,
        start: Tensor,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (num_layers, batch_size, num_heads, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.start = start.to(device=device, dtype=torch.long)
        self.has_padding = bool((self.start > 0).any())
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.size(3)

    def layer(self, index: int) -> LayerKV:
        return LayerKV(self.k[index], self.v[index], self.length)

    def positions_and_mask(self, num_new: int) -> tuple[Tensor, Tensor | None, bool]:
        """Positions (B, T) of `num_new` new tokens, plus the attention mask and causal flag to use.

        Raises ValueError when the new tokens do not fit in the cache.
        """
        if self.length + num_new > self.capacity:
            raise ValueError(
                f"KV cache holds {self.capacity} slots; {self.length} are used and {num_new} more "
                "do not fit (start a new cache with the last tokens to slide the window)"
            )
        device = self.start.device
        slots = torch.arange(self.length, self.length + num_new, device=device)
        positions = (slots[None, :] - self.start[:, None]).clamp_min(0)
        if not self.has_padding:
            if self.length == 0:
                return positions, None, True
            if num_new == 1:
                return positions, None, False
        keys = torch.arange(self.length + num_new, device=device)
        causal = keys[None, :] <= slots[:, None]
        real_key = keys[None, None, :] >= self.start[:, None, None]
        # A padding query may see itself, so its softmax row is never empty (no NaN).
        own_slot = keys[None, :] == slots[:, None]
        mask = causal[None] & (real_key | own_slot[None])
        return positions, mask[:, None], False

    def advance(self, num_new: int) -> None:
        self.length += num_new
