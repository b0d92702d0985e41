"""The model: its configuration, the GPT, the KV cache and the Hugging Face GPT-2 export."""

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

__all__ = [
    "IGNORE_INDEX",
    "MLP",
    "Block",
    "CausalSelfAttention",
    "KVCache",
    "LayerKV",
    "ModelConfig",
    "SmallGPT",
    "count_real_tokens",
    "export_hf",
    "ignore_padding",
    "import_hf",
    "scored_targets",
]
