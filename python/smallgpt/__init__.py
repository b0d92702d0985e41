"""smallgpt: from raw text to a trained small GPT.

Importing the package is cheap: the names below are loaded from their modules on first use,
so `import smallgpt` does not pull in torch until a model-side name is touched.
`smallgpt.generate` is the generation package (its `generate` function is `smallgpt.generate.generate`).
"""

from __future__ import annotations

import importlib
from typing import Any

from smallgpt import _bpe

__version__: str = _bpe.__version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Tokenizer": "smallgpt.tokenizer.bpe",
    "SimpleTokenizer": "smallgpt.tokenizer.simple",
    "StreamDecoder": "smallgpt.tokenizer.streaming",
    "ModelConfig": "smallgpt.model.config",
    "SmallGPT": "smallgpt.model.gpt",
    "TextDataset": "smallgpt.data.datasets",
    "TokenShardDataset": "smallgpt.data.datasets",
    "generate_text": "smallgpt.generate.decoding",
    "top_k_sampling": "smallgpt.generate.sampling",
    "top_p_sampling": "smallgpt.generate.sampling",
    "get_cosine_schedule_with_warmup": "smallgpt.guide",  # the guide's formula (to 0)
    "save_checkpoint": "smallgpt.checkpoint.load",
    "load_model": "smallgpt.checkpoint.load",
    "load_tokenizer": "smallgpt.checkpoint.load",
    "load_config": "smallgpt.config.loader",
    "Trainer": "smallgpt.train.trainer",
    "export_hf": "smallgpt.model.hf",
    "import_hf": "smallgpt.model.hf",
    "compute_perplexity": "smallgpt.evaluate.lm",
    "compute_bleu_score": "smallgpt.evaluate.bleu",
    "forward_pass": "smallgpt.guide",
    "compute_loss": "smallgpt.guide",
    "training_step": "smallgpt.guide",
    "log_training_metrics": "smallgpt.guide",
    "validate_model": "smallgpt.guide",
}

__all__ = ["__version__"]
__all__.extend(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallgpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
