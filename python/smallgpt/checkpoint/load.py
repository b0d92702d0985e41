"""Models and tokenizers from checkpoints, and the guide's `save_checkpoint`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as _load_weights

from smallgpt.checkpoint.rng import capture_rng_state
from smallgpt.checkpoint.store import (
    MODEL_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    read_model_config,
    verify_checkpoint,
    write_checkpoint,
)
from smallgpt.config.loader import config_to_dict
from smallgpt.config.schema import Config, ModelConfig
from smallgpt.model.gpt import SmallGPT
from smallgpt.tokenizer.bpe import Tokenizer


def load_model(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A `SmallGPT` with the checkpoint's weights on `device`, in eval mode (for inference).

    Raises CheckpointError when the directory is empty, incomplete or corrupt.
    """

    verify_checkpoint(checkpoint_dir)
    model = SmallGPT.from_config(stored_model_config(checkpoint_dir))
    _load_weights(model, str(Path(checkpoint_dir) / MODEL_FILE), strict=True, device="cpu")
    return model.to(device).eval()


def stored_model_config(checkpoint_dir: str | Path) -> ModelConfig:
    """The `ModelConfig` a checkpoint stores (JSON in its weights' metadata, any smallgpt version).

    Raises CheckpointError for a key this version does not know.
    """
    stored = read_model_config(checkpoint_dir)
    unknown = sorted(stored.keys() - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise CheckpointError(
            f"checkpoint {checkpoint_dir}: unknown model config keys {unknown}; it was written by "
            "a newer smallgpt"
        )
    return ModelConfig(**stored)


def load_tokenizer(checkpoint_dir: str | Path) -> Any:
    """The `smallgpt.Tokenizer` saved with a checkpoint. Raises CheckpointError if it has none."""

    file = Path(checkpoint_dir) / TOKENIZER_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint {checkpoint_dir}: has no {TOKENIZER_FILE}")
    return Tokenizer.load(str(file))


# ----------------------------------------------------------------------------- the guide's API


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    step: int,
    loss: float | None,
    path: str | Path | None = None,
    *,
    scaler: Any | None = None,
    tokenizer: Any | None = None,
    config: Config | None = None,
) -> Path:
    """The user's guide's `save_checkpoint`, writing the checkpoint directory format above.

    `path` defaults to the guide's `models/checkpoint_step_<step>` (a directory, where the guide
    pickles one `.pt` file); `step` and `loss` go into state.json along with the RNG states, so
    `load_checkpoint` restores them; `config` (a training `Config`) goes into config.yaml.
    Returns the directory written.
    """
    target = Path(path) if path is not None else Path("models") / f"checkpoint_step_{step}"
    state = {"step": step, "loss": loss, "rng": capture_rng_state()}
    return write_checkpoint(
        target,
        model,
        optimizer,
        scheduler,
        scaler,
        state=state,
        config=None if config is None else config_to_dict(config),
        tokenizer=tokenizer,
    )
