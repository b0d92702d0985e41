"""What to tell a user whose training ran out of GPU memory: settings that keep the optimization
the same (sequences per optimizer step) in less memory."""

from __future__ import annotations


def _smaller_micro_batch(batch_size: int) -> int:
    """The largest divisor of batch_size below it (1 for a prime), so the product stays exact."""
    for factor in range(2, batch_size + 1):
        if batch_size % factor == 0:
            return batch_size // factor
    return 1


def out_of_memory_advice(
    error: BaseException,
    *,
    batch_size: int,
    grad_accum_steps: int,
    seq_len: int,
    precision: str | None = None,
) -> str:
    """A message for an out-of-memory error during training with these settings.

    Suggests a smaller `train.batch_size` (micro-batch) with proportionally more
    `train.grad_accum_steps`, which keeps the sequences per optimizer step, hence the gradients,
    the same; with a micro-batch of 1 it suggests a shorter `data.seq_len` or a smaller model.
    Ends with the first line of the original error (what failed to allocate).
    """
    effective = batch_size * grad_accum_steps
    settings = (
        f"train.batch_size={batch_size} (sequences per micro-batch), "
        f"train.grad_accum_steps={grad_accum_steps} and sequences of {seq_len} tokens"
    )
    lines = [f"out of GPU memory with {settings}."]
    if batch_size > 1:
        smaller = _smaller_micro_batch(batch_size)
        accum = effective // smaller
        lines.append(
            f"Use a smaller micro-batch with more accumulation: train.batch_size={smaller} "
            f"train.grad_accum_steps={accum} trains on the same {effective} sequences per "
            "optimizer step in less memory."
        )
    else:
        lines.append(
            "The micro-batch is already 1 sequence: lower data.seq_len or the model size "
            "(model.embed_dim, model.num_layers)."
        )
    if precision == "fp32":
        lines.append("train.precision=bf16 (or fp16 on GPUs without bf16) halves activations.")
    lines.append("If memory is fragmented, PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True helps.")
    detail = str(error).strip().splitlines()
    if detail:
        lines.append(f"({detail[0]})")
    return "\n".join(lines)
