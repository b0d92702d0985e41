"""Inference in reduced precision: bf16 weights, or int8 weight-only matrix products.

Decoding one sequence reads every weight once per token, so its speed is set by bytes, not
FLOPs: bf16 halves them, int8 quarters those of the matrices. "int8" stores each Linear of the
blocks and the language-model head as int8 with one scale per output row (symmetric, absmax /
127) and multiplies with `torch._weight_int8pack_mm`, torch's int8 weight-only kernel (gpt-fast's
and torchao's); the embeddings, norms, biases, attention and the KV cache stay fp32. "bf16" casts
every weight (and so the cache) to bfloat16: fast only where the hardware multiplies bf16 (CUDA,
CPUs with AVX512-BF16 or AMX), emulated and slower than fp32 elsewhere, so "auto" picks it only
there and fp32 otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smallgpt.model.gpt import SmallGPT
from smallgpt.optim.optimizers import has_native_bf16

INFERENCE_DTYPES = ("fp32", "bf16", "int8", "auto")


def resolve_inference_dtype(name: str, device: torch.device) -> str:
    """The precision `name` means on `device`: "fp32", "bf16" or "int8" as given; "auto" is bf16
    where `has_native_bf16(device)`, else fp32 (int8 changes the model's output more, so it is
    never chosen for the user). Raises ValueError for an unknown name, or int8 off the CPU."""
    if name not in INFERENCE_DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(INFERENCE_DTYPES)}")
    if name == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    if name == "int8" and device.type != "cpu":
        raise ValueError(f"dtype int8 runs on the CPU only, not {device.type}; use bf16 there")
    return name


class Int8Linear(nn.Module):
    """A Linear with int8 weights, one scale per output row, for inference (no gradients).

    The input is rounded to bf16 for the product (the kernel's fast CPU path takes bf16
    activations; it accumulates in fp32); the output and the bias are in the input's dtype.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = weight.size(1), weight.size(0)
        self.register_buffer("weight", quantized)
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat, self.weight, self.scale)
        # Adding the bias converts to its dtype in the same operation (bf16 + fp32 -> fp32):
        # each operation saved counts, as decoding runs a few dozen of these per token.
        y = y.to(x.dtype) if self.bias is None else torch.add(self.bias, y).to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def dequantized(self) -> Tensor:
        """The fp32 weight (out_features, in_features) that this layer multiplies by."""
        return self.weight.float() * self.scale.float()[:, None]


def to_inference_dtype(model: SmallGPT, dtype: str) -> SmallGPT:
    """Convert `model` in place for inference in `dtype` ("fp32", "bf16" or "int8"; resolve
    "auto" with `resolve_inference_dtype` first) and return it in eval mode.

    After "int8" the model no longer trains (its matrices are buffers) and its language-model
    head is no longer tied to the embedding. Raises ValueError for another dtype.
    """
    if dtype not in ("fp32", "bf16", "int8"):
        raise ValueError(f"dtype must be fp32, bf16 or int8 (resolve 'auto' first), got {dtype!r}")
    model.eval()
    if dtype == "fp32":
        return model.float()
    if dtype == "bf16":
        return model.to(torch.bfloat16)
    model.float()
    for block in model.transformer.h:
        for owner in (block.attn, block.mlp):
            for name, child in list(owner.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(owner, name, Int8Linear(child.weight, child.bias))
    real_rows = model.transformer.wte.weight[: model.config.vocab_size]
    model.lm_head = Int8Linear(real_rows, None)
    return model
