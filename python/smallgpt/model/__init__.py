"""The model: its configuration, the GPT, the KV cache, reduced-precision inference and the
Hugging Face GPT-2 export."""

from smallgpt.model.config import (
    IGNORE_INDEX,
    ModelConfig,
)
from smallgpt.model.gpt import (
    MLP,
    Block,
    CausalSelfAttention,
    SmallGPT,
    count_real_tokens,
    ignore_padding,
    scored_targets,
)
from smallgpt.model.hf import (
    export_hf,
    import_hf,
)
from smallgpt.model.kv_cache import (
    KVCache,
    LayerKV,
)
from smallgpt.model.precision import (
    INFERENCE_DTYPES,
    Int8Linear,
    has_native_bf16,
    resolve_inference_dtype,
    to_inference_dtype,
)

__all__ = [
    "IGNORE_INDEX",
    "INFERENCE_DTYPES",
    "MLP",
    "Block",
    "CausalSelfAttention",
    "Int8Linear",
    "KVCache",
    "LayerKV",
    "ModelConfig",
    "SmallGPT",
    "count_real_tokens",
    "export_hf",
    "has_native_bf16",
    "ignore_padding",
    "import_hf",
    "resolve_inference_dtype",
    "scored_targets",
    "to_inference_dtype",
]
