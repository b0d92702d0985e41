"""Text generation: sampling rules and KV-cache decoding; `python -m smallgpt.generate`."""

from smallgpt.generate.decoding import (
    generate,
    generate_text,
    iter_generate,
    stream_text,
)
from smallgpt.generate.sampling import (
    apply_repetition_penalty,
    min_p_filter,
    sample_next_token,
    top_k_filter,
    top_k_sampling,
    top_p_filter,
    top_p_sampling,
)

__all__ = [
    "apply_repetition_penalty",
    "generate",
    "generate_text",
    "iter_generate",
    "min_p_filter",
    "sample_next_token",
    "stream_text",
    "top_k_filter",
    "top_k_sampling",
    "top_p_filter",
    "top_p_sampling",
]
