"""`ModelConfig`: the one description of a model's shape, what `SmallGPT` is built from and checkpoints store."""

from __future__ import annotations

from dataclasses import dataclass

from smallgpt.kernels._support import SUPPORTED_HEAD_DIMS

IGNORE_INDEX = -100
_ATTENTION_BACKENDS = ("sdpa", "triton", "auto")
_VOCAB_MULTIPLE = 64


def _flash_head_dims() -> tuple[int, ...]:

    return SUPPORTED_HEAD_DIMS


@dataclass
class ModelConfig:
    """Sizes and options of a SmallGPT; validated on creation (ValueError names the bad field)."""

    vocab_size: int = 10000
    embed_dim: int = 512
    num_heads: int = 8
    num_layers: int = 6
    max_seq_len: int = 1024
    dropout: float = 0.1
    bias: bool = True
    attention: str = "sdpa"
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "num_heads", "num_layers", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"ModelConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in _ATTENTION_BACKENDS:
            raise ValueError(
                f"ModelConfig.attention must be one of {_ATTENTION_BACKENDS}, got {self.attention!r}"
            )
        if self.attention == "triton" and self.head_dim not in _flash_head_dims():
            raise ValueError(
                f"attention='triton' supports head_dim (embed_dim / num_heads) in "
                f"{_flash_head_dims()}, got {self.head_dim}; use attention='sdpa' or 'auto'"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"ModelConfig.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size="
                f"{self.vocab_size}) or None"
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up to a multiple of 64."""
        return -(-self.vocab_size // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE
