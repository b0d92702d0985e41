"""Hugging Face interop: SmallGPT <-> a `GPT2LMHeadModel` folder (config.json + model.safetensors).

SmallGPT already uses GPT-2's module names; the only differences are that HF's GPT-2 stores its
projection matrices as Conv1D weights (the transpose of nn.Linear's) and that SmallGPT pads the
embedding table to a multiple of 64 rows. The export writes only the real vocabulary rows, so the
HF model's `vocab_size` equals the tokenizer's and its logits equal ours column for column.
Exporting needs only safetensors; `transformers` is needed only to load the result in HF.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from smallgpt.model.gpt import SmallGPT
from smallgpt.tokenizer.bpe import Tokenizer

# SmallGPT weight name suffixes stored transposed (Conv1D) in HF GPT-2.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_TOKENIZER_FILE = "smallgpt_tokenizer.json"
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def _hf_state_dict(model: SmallGPT) -> dict[str, Tensor]:
    cfg = model.config
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight; HF re-ties it on load
        if name == "transformer.wte.weight":
            tensor = tensor[: cfg.vocab_size]
        elif name.endswith(_CONV1D):
            tensor = tensor.t()
        state[name] = tensor.detach().cpu().contiguous()
    if not cfg.bias:  # HF GPT-2 always has biases: zeros are equivalent
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and name != "lm_head":
                size = module.weight.shape[0]
                state[f"{name}.bias"] = torch.zeros(size, dtype=module.weight.dtype)
    return state


def export_hf(model: SmallGPT, tokenizer: Any | None, out_dir: str | os.PathLike) -> Path:
    """Write `out_dir` as a Hugging Face GPT-2 folder; returns its path.

    Files: config.json, model.safetensors (real vocabulary rows only, Conv1D layout), and with a
    tokenizer: tokenizer.json + tokenizer_config.json (for `AutoTokenizer`) and
    smallgpt_tokenizer.json (ours, read back by `import_hf`). The folder loads with
    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)`.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    eos = None if tokenizer is None else tokenizer.eos_token_id
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len,
        "n_embd": cfg.embed_dim,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": str(model.transformer.wte.weight.dtype).removeprefix("torch."),
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    save_file(_hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.export_hf(out / "tokenizer.json")
        tokenizer.save(out / _TOKENIZER_FILE)
        specials = {v: k for k, v in tokenizer.special_tokens.items()}
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": cfg.max_seq_len,
            "bos_token": specials.get(tokenizer.eos_token_id),
            "eos_token": specials.get(tokenizer.eos_token_id),
            "pad_token": specials.get(tokenizer.pad_token_id),
        }
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    return out


def _config_from_hf(config: dict, path: Path) -> dict:
    """SmallGPT constructor arguments from an HF GPT-2 config; ValueError for what we can't run."""
    if config.get("model_type") != "gpt2":
        raise ValueError(f"{path} describes model_type {config.get('model_type')!r}, not 'gpt2'")
    unsupported = {
        "activation_function": (config.get("activation_function", "gelu_new") not in _TANH_GELUS),
        "n_inner": config.get("n_inner") not in (None, 4 * config["n_embd"]),
        "scale_attn_by_inverse_layer_idx": bool(config.get("scale_attn_by_inverse_layer_idx")),
        "scale_attn_weights": not config.get("scale_attn_weights", True),
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-5) != 1e-5,
        "tie_word_embeddings": not config.get("tie_word_embeddings", True),
    }
    bad = [key for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ValueError(
            f"{path}: SmallGPT cannot reproduce GPT-2 settings {', '.join(bad)} = "
            f"{', '.join(repr(config.get(k)) for k in bad)}"
        )
    pad = config.get("pad_token_id")
    return {
        "vocab_size": config["vocab_size"],
        "embed_dim": config["n_embd"],
        "num_heads": config["n_head"],
        "num_layers": config["n_layer"],
        "max_seq_len": config["n_positions"],
        "dropout": config.get("resid_pdrop", 0.1),
        "pad_token_id": pad if isinstance(pad, int) and 0 <= pad < config["vocab_size"] else None,
    }


def import_hf(
    model_dir: str | os.PathLike, *, attention: str = "sdpa"
) -> tuple[SmallGPT, Any | None]:
    """Load an HF GPT-2 folder (config.json + model.safetensors) as a SmallGPT.

    Returns `(model, tokenizer)`; the tokenizer is our Tokenizer when the folder holds
    smallgpt_tokenizer.json (written by `export_hf`), else None. Raises FileNotFoundError for
    missing files (pickled pytorch_model.bin checkpoints are refused, not loaded), ValueError for
    GPT-2 variants SmallGPT cannot represent or weights that do not match the config.
    """

    root = Path(model_dir)
    config_path, weights_path = root / "config.json", root / "model.safetensors"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {root}")
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"no model.safetensors in {root} (pickled .bin weights are not loaded; convert them "
            "with transformers' save_pretrained(safe_serialization=True))"
        )
    model = SmallGPT(
        **_config_from_hf(json.loads(config_path.read_text()), config_path), attention=attention
    )
    weights = load_file(str(weights_path))
    state = {}
    for name, target in model.state_dict().items():
        source = "transformer.wte.weight" if name == "lm_head.weight" else name
        if source not in weights:
            raise ValueError(f"{weights_path} lacks weight {source!r}")
        tensor = weights[source]
        if name.endswith(_CONV1D):
            tensor = tensor.t()
        if name in ("transformer.wte.weight", "lm_head.weight"):
            tensor = torch.cat(
                [tensor, target.new_zeros(target.shape[0] - tensor.shape[0], tensor.shape[1])]
            )
        if tensor.shape != target.shape:
            raise ValueError(
                f"{weights_path}: {source} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(target.shape)} from config.json"
            )
        state[name] = tensor
    model.load_state_dict(state)
    tokenizer = None
    if (root / _TOKENIZER_FILE).is_file():
        tokenizer = Tokenizer.load(root / _TOKENIZER_FILE)
    return model, tokenizer
