"""Numbers the trainer reports: perplexity, bits per byte, throughput, FLOPs utilisation."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

# Dense bf16/fp16 tensor-core peak in TFLOP/s (fp32 accumulation), by a substring of the CUDA
# device name; the first match wins, so more specific names come first. Used only for MFU;
# `log.peak_tflops` overrides it for GPUs not listed.
_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 5090", 209.5),
    ("RTX 4090", 165.2),
    ("RTX 4080", 97.5),
    ("RTX 3090", 71.0),
    ("RTX 3080", 59.5),
    ("RTX A6000", 154.8),
    ("V100", 125.0),
    ("T4", 65.0),
)


@dataclass(frozen=True)
class EvalResult:
    """Validation totals over the scored target tokens of all ranks."""

    loss: float  # mean nats per scored token
    tokens: int  # scored target tokens
    num_bytes: int  # UTF-8 bytes of text those tokens stand for (special tokens: 0)

    @classmethod
    def from_totals(cls, nats: float, tokens: float, num_bytes: float) -> EvalResult:
        """The result of summed nats, scored tokens and bytes (loss 0 when nothing is scored)."""
        return cls(loss=nats / max(tokens, 1.0), tokens=int(tokens), num_bytes=int(num_bytes))

    @property
    def perplexity(self) -> float:
        """exp(loss); inf when the loss overflows."""
        return math.exp(self.loss) if self.loss < 700 else math.inf

    @property
    def bits_per_byte(self) -> float:
        """Total nats / ln 2 / total text bytes: comparable across tokenizers."""
        return self.loss * self.tokens / math.log(2) / max(self.num_bytes, 1)


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one accelerator for MFU, or None (CPU, or a GPU not in the table)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in _PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def model_flops_utilization(
    flops_per_token: float, tokens_per_s: float, peak: float | None, world_size: int = 1
) -> float | None:
    """Achieved model FLOP/s over the peak of all `world_size` devices (None without a peak)."""
    if peak is None or tokens_per_s <= 0:
        return None
    return flops_per_token * tokens_per_s / (peak * world_size)


class Throughput:
    """Tokens per second over the interval since the last `rate()` call (wall clock)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._tokens = 0

    def add(self, tokens: int) -> None:
        """Count tokens processed (all ranks)."""
        self._tokens += tokens

    def rate(self) -> float:
        """Tokens/s since the previous call (or construction), then start a new interval."""
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        rate = self._tokens / elapsed
        self._start, self._tokens = now, 0
        return rate
