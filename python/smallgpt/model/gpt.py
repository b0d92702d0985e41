"""The GPT: causal self-attention, MLP, blocks and the language-model head (GPT-2 module names)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smallgpt import kernels
from smallgpt.model.config import (
    IGNORE_INDEX,
    ModelConfig,
    _flash_head_dims,
    check_kernel_support,
)
from smallgpt.model.kv_cache import KVCache, LayerKV
from smallgpt.model.onednn import (
    LinearCall,
    call_layer,
    decoding_linear,
    onednn_linear_works,
    onednn_product,
)
from smallgpt.optim.optimizers import build_optimizer


@functools.cache
def _flash_attention_for(
    backend: str, device: str, dtype: torch.dtype, head_dim: int, dropout: bool
) -> Callable[..., Tensor] | None:
    """The Triton flash-attention function for `backend` on `device`, or None for SDPA.

    "auto" picks the kernels wherever `smallgpt.kernels.is_available` says they run (CUDA with
    compute capability >= 8.0) and head_dim suits them, once they pass their first-use probe for
    this (device, dtype, head_dim, dropout on/off): a kernel that fails it is reported (see
    `smallgpt.kernels.drain_fallbacks`) and SDPA is used instead. "triton" insists on the kernels,
    unprobed, so their failures raise. Cached: resolved once, not in every (possibly compiled)
    forward. Raises RuntimeError for "triton" where the kernels cannot run.
    """
    if backend == "sdpa":
        return None
    if kernels.is_available(device) and head_dim in _flash_head_dims():
        if backend == "triton":
            return kernels.flash_attention
        passes = kernels.kernel_passes_probe("flash_attention", device, dtype, head_dim, dropout)
        return kernels.flash_attention if passes else None
    if backend == "auto":
        return None
    raise RuntimeError(
        f"attention='triton' needs the smallgpt Triton kernels, which cannot run on {device} "
        "(they need CUDA with compute capability >= 8.0 and triton); use attention='sdpa' or 'auto'"
    )


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.embed_dim = config.embed_dim
        self.dropout = config.dropout
        self.backend = config.attention
        self.c_attn = nn.Linear(config.embed_dim, 3 * config.embed_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.embed_dim, config.embed_dim, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.embed_dim, dim=2)
        q, k, v = (
            t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v)
        )
        dropout_p = self.dropout if self.training else 0.0
        if kv is not None:
            y = kv.attend(q, k, v)
        else:
            flash = _flash_attention_for(
                self.backend, str(x.device), q.dtype, C // self.num_heads, dropout_p > 0
            )
            if flash is not None:
                y = flash(q, k, v, causal=True, dropout_p=dropout_p)
            elif x.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
                # PyTorch's CPU flash attention is slower in bf16 than in fp32 (its fp32 kernel
                # takes ~55% of the bf16 one's time at the demo's shapes), so under CPU autocast
                # attention runs in fp32, which is also the more accurate.
                with torch.autocast("cpu", enabled=False):
                    y = F.scaled_dot_product_attention(
                        q.float(), k.float(), v.float(), dropout_p=dropout_p, is_causal=True
                    ).to(q.dtype)
            else:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def decode_one(self, x: Tensor, kv: LayerKV, linear: LinearCall = call_layer) -> Tensor:
        """`forward(x, kv)` in eval mode for one new token per sequence, x (B, 1, C): the same
        products (each `linear(layer, x)`) in fewer tensor operations (no dropout; q, k and v
        (B, H, 1, D) are views of one product, with no split, transpose or copy)."""
        B, _, C = x.shape
        H = self.num_heads
        q, k, v = linear(self.c_attn, x).view(B, 3, H, 1, C // H).unbind(1)
        return linear(self.c_proj, kv.attend(q, k, v).reshape(B, 1, C))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.embed_dim, 4 * config.embed_dim, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.embed_dim, config.embed_dim, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.embed_dim, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.embed_dim, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv)
        return x + self.mlp(self.ln_2(x))

    def decode_one(self, x: Tensor, kv: LayerKV, linear: LinearCall = call_layer) -> Tensor:
        """`forward(x, kv)` in eval mode for one new token per sequence (see
        `CausalSelfAttention.decode_one`)."""
        x = x + self.attn.decode_one(self.ln_1(x), kv, linear)
        mlp = self.mlp
        return x + linear(mlp.c_proj, mlp.gelu(linear(mlp.c_fc, self.ln_2(x))))


def ignore_padding(targets: Tensor, pad_token_id: int | None) -> Tensor:
    """`targets` with every `pad_token_id` replaced by IGNORE_INDEX, the one label the loss skips
    (unchanged when pad_token_id is None)."""
    if pad_token_id is None:
        return targets
    return targets.masked_fill(targets == pad_token_id, IGNORE_INDEX)


def scored_targets(labels: Tensor, pad_token_id: int | None = None) -> Tensor:
    """Boolean mask of the targets the loss scores for `labels` (aligned with input_ids): the
    entries of `labels[:, 1:]` that are neither IGNORE_INDEX (-100) nor `pad_token_id`."""
    return ignore_padding(labels[:, 1:], pad_token_id) != IGNORE_INDEX


def count_real_tokens(labels: Tensor, pad_token_id: int | None = None) -> Tensor:
    """Number of targets the loss scores for `labels` (see `scored_targets`).

    Returns a 0-d int64 tensor on labels' device (no host sync), so micro-batch counts can be
    summed cheaply.
    """
    return scored_targets(labels, pad_token_id).sum()


def _fused_loss_for(device: torch.device, dtype: torch.dtype) -> Callable[..., Tensor] | None:
    """`smallgpt.kernels.linear_cross_entropy` for hidden states of `dtype` on `device`, or None.

    The kernel is used where the kernels run and it passed its first-use probe at the matmul dtype
    (autocast's when it is on); one that fails is reported (see `smallgpt.kernels.drain_fallbacks`)
    and None sends the caller to F.cross_entropy for the rest of the process.
    """
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    return _fused_loss_resolved(str(device), dtype)


@functools.cache
def _fused_loss_resolved(device: str, dtype: torch.dtype) -> Callable[..., Tensor] | None:
    if kernels.is_available(device) and kernels.kernel_passes_probe(
        "linear_cross_entropy", device, dtype
    ):
        return kernels.linear_cross_entropy
    return None


class SmallGPT(nn.Module):
    """GPT-2 architecture: learned positions, pre-norm blocks, GELU MLP, tied embeddings.

    About 25M parameters at the defaults. `forward` returns logits (B, T, vocab_size), or
    `(logits, loss)` when labels are given. Raises ConfigError (a ValueError) naming every invalid
    size, and ValueError for a head size the Triton kernels lack.
    """

    def __init__(
        self,
        vocab_size: int = 10000,
        embed_dim: int = 512,
        num_heads: int = 8,
        num_layers: int = 6,
        max_seq_len: int = 1024,
        dropout: float = 0.1,
        *,
        attention: str = "sdpa",
        pad_token_id: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        config = ModelConfig(
            vocab_size=vocab_size,
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_layers=num_layers,
            max_seq_len=max_seq_len,
            dropout=dropout,
            bias=bias,
            attention=attention,
            pad_token_id=pad_token_id,
        )
        config.validate()
        check_kernel_support(config)
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab_size, embed_dim),
                "wpe": nn.Embedding(max_seq_len, embed_dim),
                "drop": nn.Dropout(dropout),
                "h": nn.ModuleList(Block(config) for _ in range(num_layers)),
                "ln_f": nn.LayerNorm(embed_dim, bias=bias),
            }
        )
        self.lm_head = nn.Linear(embed_dim, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * num_layers)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=residual_std)
        with torch.no_grad():
            self.transformer.wte.weight[vocab_size:].zero_()

    @classmethod
    def from_config(cls, config: ModelConfig) -> SmallGPT:
        """Build a model from a ModelConfig whose vocab_size is set (see `ModelConfig.resolve`)."""
        if config.vocab_size is None:
            raise ValueError(
                "ModelConfig.vocab_size is None (the tokenizer's): call "
                "config.resolve(tokenizer.vocab_size, tokenizer.pad_token_id) first"
            )
        return cls(**asdict(config))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_vocab_size(self) -> int:
        """The real vocabulary size (logit columns), not the padded embedding rows."""
        return self.config.vocab_size

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (the tied embedding counted once, padded rows included).

        With exclude_embeddings=True, the token and position embedding tables are left out.
        """
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return total

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6N + 12·layers·embed_dim·seq_len.

        N counts the parameters used in matrix products (the position table and the padded
        embedding rows are lookups or unused, so they are excluded); the second term is attention
        scores and values at context length seq_len (default max_seq_len), PaLM's MFU convention.
        """
        cfg = self.config
        seq_len = cfg.max_seq_len if seq_len is None else seq_len
        unused = self.transformer.wpe.weight.numel()
        unused += (cfg.padded_vocab_size - cfg.vocab_size) * cfg.embed_dim
        matmul_params = self.num_parameters() - unused
        return 6.0 * matmul_params + 12.0 * cfg.num_layers * cfg.embed_dim * seq_len

    def configure_optimizers(
        self,
        weight_decay: float = 0.1,
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        device_type: str | None = None,
        *,
        optimizer: str = "adamw",
        eps: float = 1e-8,
    ) -> torch.optim.Optimizer:
        """AdamW with weight decay on matrices and embeddings only (not biases or norms), or
        with `optimizer="muon"` Muon on the blocks' matrices and AdamW on the rest (see
        `smallgpt.optim`).

        device_type: "cuda" selects the fused AdamW; default: the device of the parameters.
        """

        return build_optimizer(
            self,
            optimizer,
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            eps=eps,
            device_type=device_type or self.transformer.wte.weight.device.type,
        )

    def count_real_tokens(self, labels: Tensor) -> Tensor:
        """Targets the loss scores for `labels` with this model's pad id; see `count_real_tokens`."""
        return count_real_tokens(labels, self.config.pad_token_id)

    def new_kv_cache(
        self, batch_size: int, capacity: int | None = None, *, start: Tensor | None = None
    ) -> KVCache:
        """An empty KVCache for `batch_size` sequences of up to `capacity` (<= max_seq_len) slots.

        start: per-sequence count of left-padding slots (LongTensor (batch_size,)), default none.
        Buffers use the device and dtype of the model's parameters.
        """
        capacity = self.config.max_seq_len if capacity is None else capacity
        if not 0 < capacity <= self.config.max_seq_len:
            raise ValueError(
                f"KV cache capacity must be in [1, max_seq_len={self.config.max_seq_len}], "
                f"got {capacity}"
            )
        weight = self.transformer.wte.weight
        if start is None:
            start = torch.zeros(batch_size, dtype=torch.long)
        if start.shape != (batch_size,):
            raise ValueError(f"start must have shape ({batch_size},), got {tuple(start.shape)}")
        cfg = self.config
        return KVCache(
            cfg.num_layers,
            batch_size,
            cfg.num_heads,
            cfg.head_dim,
            capacity,
            start=start,
            device=weight.device,
            dtype=weight.dtype,
        )

    def hidden(
        self, input_ids: Tensor, *, kv_cache: KVCache | None = None, position_offset: int = 0
    ) -> Tensor:
        """Final-LayerNorm hidden states (B, T, embed_dim) for `input_ids` (B, T).

        Without a cache, token t sits at position position_offset + t. With `kv_cache`, the tokens
        are appended to the cache and positions follow from it (position_offset must be 0).
        Raises ValueError for a bad shape, ids outside the vocabulary (checked on CPU) or
        positions past max_seq_len; TypeError for non-integer ids.
        """
        self._check_input_ids(input_ids)
        T = input_ids.size(1)
        if kv_cache is None:
            if position_offset < 0 or position_offset + T > self.config.max_seq_len:
                raise ValueError(
                    f"positions {position_offset}..{position_offset + T - 1} do not fit "
                    f"max_seq_len={self.config.max_seq_len}; feed at most max_seq_len tokens"
                )
            positions = torch.arange(position_offset, position_offset + T, device=input_ids.device)
        else:
            if position_offset != 0:
                raise ValueError(
                    "position_offset must be 0 with kv_cache (the cache sets positions)"
                )
            if input_ids.size(0) != kv_cache.start.size(0):
                raise ValueError(
                    f"batch size {input_ids.size(0)} differs from the KV cache's "
                    f"{kv_cache.start.size(0)}"
                )
            positions = kv_cache.begin(T)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(positions))
        # A decoding step (one new token, eval mode) takes the blocks' leaner path: a step is a
        # few dozen small operations, each of which counts (25M on CPU: ~1.1x the tokens/s).
        one_new = kv_cache is not None and T == 1 and not self.training
        linear = decoding_linear(x) if one_new else call_layer
        for index, block in enumerate(self.transformer.h):
            kv = None if kv_cache is None else kv_cache.layer(index)
            x = block.decode_one(x, kv, linear) if one_new else block(x, kv)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.transformer.ln_f(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """Logits over the real vocabulary (..., vocab_size) from hidden states (..., embed_dim)."""
        if isinstance(self.lm_head, nn.Linear):
            return F.linear(hidden, self.lm_head.weight[: self.config.vocab_size])
        return self.lm_head(hidden)  # an inference head (model.precision) holds the real rows only

    def decoding_logits(self) -> Callable[[Tensor], Tensor]:
        """`logits` for many decoding steps over unchanging weights (call it again after they
        change), with autograd off. On CPU the product with few rows takes the faster of two
        paths: for fp32, oneDNN's linear on the output layer itself (`smallgpt.model.onednn`;
        25M model, one token on a Zen 4: 1.4 -> 0.26 ms); otherwise a copy of its real rows,
        transposed, as BLAS reads an (embed_dim, vocab_size) matrix about 3x faster than the
        (vocab_size, embed_dim) one `logits` reads (2.3 -> 0.8 ms), at the cost of holding
        vocab_size x embed_dim more weights while it lives. Elsewhere (CUDA, an inference
        head) this is `logits`."""
        if not isinstance(self.lm_head, nn.Linear) or self.lm_head.weight.device.type != "cpu":
            return self.logits
        rows = self.lm_head.weight[: self.config.vocab_size]
        if rows.dtype == torch.float32 and onednn_linear_works():
            return lambda hidden: onednn_product(hidden, rows)
        with torch.no_grad():
            columns = rows.t().contiguous()
        return lambda hidden: hidden @ columns

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        reduction: str = "mean",
        return_logits: bool = True,
        kv_cache: KVCache | None = None,
        position_offset: int = 0,
    ) -> Tensor | tuple[Tensor | None, Tensor]:
        """Logits (B, T, vocab_size); with labels, `(logits, loss)`.

        labels: (B, T) aligned with input_ids; the model predicts labels[:, 1:] from positions
        [:, :-1] and skips targets equal to -100 or config.pad_token_id. reduction="mean" averages
        over scored targets (NaN if there are none); "sum" returns their summed loss, to be divided
        by a token count (see `count_real_tokens`) for exact gradient accumulation.
        return_logits=False returns `(None, loss)` without materialising the logits where a fused
        kernel allows (CUDA with smallgpt.kernels). Raises ValueError for bad shapes or reduction.
        """
        hidden = self.hidden(input_ids, kv_cache=kv_cache, position_offset=position_offset)
        if labels is None:
            return self.logits(hidden)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if labels.shape != input_ids.shape:
            raise ValueError(
                f"labels shape {tuple(labels.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        targets = ignore_padding(labels[:, 1:], self.config.pad_token_id).reshape(-1)
        if return_logits:
            logits = self.logits(hidden)
            return logits, self._cross_entropy(logits[:, :-1], targets, reduction)
        predicting = hidden[:, :-1].reshape(-1, hidden.size(-1))
        fused = _fused_loss_for(hidden.device, hidden.dtype)
        if fused is not None:
            loss = fused(
                predicting,
                self.lm_head.weight,
                targets,
                ignore_index=IGNORE_INDEX,
                reduction=reduction,
                vocab_size=self.config.vocab_size,
            )
            return None, loss
        # Only the positions that predict something get logits: no slice-and-copy of them.
        return None, self._cross_entropy(self.logits(predicting), targets, reduction)

    @staticmethod
    def _cross_entropy(logits: Tensor, targets: Tensor, reduction: str) -> Tensor:
        logits = logits.reshape(-1, logits.size(-1))
        if logits.element_size() < 4:  # half-precision logits: take the softmax in float32
            logits = logits.float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction=reduction)

    def _check_input_ids(self, input_ids: Tensor) -> None:
        if not isinstance(input_ids, Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() != 2 or input_ids.size(1) == 0:
            raise ValueError(
                f"input_ids must have shape (batch, seq_len) with seq_len >= 1, "
                f"got {tuple(input_ids.shape)}"
            )
        if input_ids.device.type == "cpu" and input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"input_ids must be in [0, vocab_size={self.config.vocab_size}), "
                    f"found {low if low < 0 else high}"
                )
