"""The key/value cache of incremental decoding: one preallocated buffer per layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class LayerKV:
    """One layer's view of a KVCache for one forward pass: its key/value buffers, how many slots
    are already filled, and the attention mask and causal flag of the pass's new tokens."""

    def __init__(
        self, k: Tensor, v: Tensor, past: int, attn_mask: Tensor | None, is_causal: bool
    ) -> None:
        self.k, self.v, self.past = k, v, past
        self.attn_mask, self.is_causal = attn_mask, is_causal

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new keys/values (B, H, T, D) after the past ones; return all of them so far."""
        end = self.past + k.size(2)
        self.k[:, :, self.past : end] = k
        self.v[:, :, self.past : end] = v
        return self.k[:, :, :end], self.v[:, :, :end]

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention output (B, H, T, D) of the new queries over the past and new keys/values,
        which are stored (see `update`)."""
        keys, values = self.update(k, v)
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=self.attn_mask, is_causal=self.is_causal
        )


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
        self._mask: Tensor | None = None
        self._causal = True

    @property
    def capacity(self) -> int:
        return self.k.size(3)

    def begin(self, num_new: int) -> Tensor:
        """Start a forward pass of `num_new` tokens per sequence: their positions (B, num_new).

        Also sets the attention mask its layers use (see `layer`). Raises ValueError when the new
        tokens do not fit in the cache.
        """
        if self.length + num_new > self.capacity:
            raise ValueError(
                f"KV cache holds {self.capacity} slots; {self.length} are used and {num_new} more "
                "do not fit (start a new cache with the last tokens to slide the window)"
            )
        device = self.start.device
        slots = torch.arange(self.length, self.length + num_new, device=device)
        positions = (slots[None, :] - self.start[:, None]).clamp_min(0)
        self._mask, self._causal = self._mask_for(slots)
        return positions

    def _mask_for(self, slots: Tensor) -> tuple[Tensor | None, bool]:
        """The mask and causal flag of queries at `slots`; None where SDPA needs none: a first
        pass without padding is causal, and one new token sees every filled slot."""
        num_new = slots.numel()
        if not self.has_padding:
            if self.length == 0:
                return None, True
            if num_new == 1:
                return None, False
        keys = torch.arange(self.length + num_new, device=slots.device)
        causal = keys[None, :] <= slots[:, None]
        real_key = keys[None, None, :] >= self.start[:, None, None]
        # A padding query may see itself, so its softmax row is never empty (no NaN).
        own_slot = keys[None, :] == slots[:, None]
        mask = causal[None] & (real_key | own_slot[None])
        return mask[:, None], False

    def layer(self, index: int) -> LayerKV:
        """Layer `index`'s view for the pass that `begin` started."""
        return LayerKV(self.k[index], self.v[index], self.length, self._mask, self._causal)

    def advance(self, num_new: int) -> None:
        self.length += num_new
