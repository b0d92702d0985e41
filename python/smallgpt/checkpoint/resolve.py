"""Loading a trained model for inference: which checkpoint a path means, its tokenizer, the device.

Shared by the generation and evaluation command lines, so both accept the same `--checkpoint`
(a checkpoint directory, a run directory or its `checkpoints/` directory) and refuse a tokenizer
that is not the model's with the same message.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from smallgpt.checkpoint.load import load_model
from smallgpt.checkpoint.store import (
    BEST_NAME,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    find_latest_checkpoint,
    verify_checkpoint,
)
from smallgpt.tokenizer.bpe import Tokenizer

RUN_CHECKPOINTS = "checkpoints"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory that `path` names.

    `path` may be a checkpoint (it holds manifest.json), or a run directory or its `checkpoints/`
    directory: then its `best/` checkpoint if that verifies, else the newest valid `step_<n>/`
    (damaged ones are skipped with a warning naming the bad file).
    Raises CheckpointError when the path does not exist or holds no checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if (path / MANIFEST_FILE).is_file():
        return path
    root = path / RUN_CHECKPOINTS if (path / RUN_CHECKPOINTS).is_dir() else path
    best = root / BEST_NAME
    if (best / MANIFEST_FILE).is_file():
        try:
            verify_checkpoint(best)
            return best
        except CheckpointError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
    latest = find_latest_checkpoint(root)
    if latest is None:
        raise CheckpointError(
            f"{path} holds no checkpoint (no {MANIFEST_FILE}, and no valid best/ or step_<n>/ "
            f"directory in {root}); point --checkpoint at a training run or one of its checkpoints"
        )
    return latest


def resolve_device(name: str = "auto") -> torch.device:
    """The device named `name`: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".

    Raises ValueError for an unknown name or CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def check_tokenizer_fits(tokenizer: Any, model: torch.nn.Module, source: str) -> None:
    """Raise ValueError unless `tokenizer` (read from `source`) can drive `model`: it has no more
    ids than the model's vocabulary and the same padding id."""
    vocab, pad = model.config.vocab_size, model.config.pad_token_id
    if tokenizer.vocab_size > vocab:
        raise ValueError(
            f"tokenizer {source} has {tokenizer.vocab_size} ids but the model's vocabulary has "
            f"{vocab}: it is not the tokenizer this model was trained with"
        )
    if pad is not None and tokenizer.pad_token_id != pad:
        raise ValueError(
            f"tokenizer {source} pads with id {tokenizer.pad_token_id}, the model with {pad}: it "
            "is not the tokenizer this model was trained with"
        )


def load_tokenizer_for(
    checkpoint: Path, model: torch.nn.Module, tokenizer_file: str | os.PathLike | None = None
) -> Any:
    """The tokenizer to use with the model of `checkpoint`: its own tokenizer.json, or
    `tokenizer_file` (which must then be the same tokenizer when the checkpoint has one, and have
    exactly the model's vocabulary size when it has none).

    Raises CheckpointError when there is no tokenizer at all, ValueError when it does not match.
    """

    own_file = checkpoint / TOKENIZER_FILE
    own = Tokenizer.load(own_file) if own_file.is_file() else None
    if tokenizer_file is None:
        if own is None:
            raise CheckpointError(
                f"checkpoint {checkpoint} has no {TOKENIZER_FILE}; pass --tokenizer FILE (the "
                "tokenizer the model was trained with)"
            )
        check_tokenizer_fits(own, model, str(own_file))
        return own
    given = Tokenizer.load(tokenizer_file)
    if own is not None and given.to_json() != own.to_json():
        raise ValueError(
            f"tokenizer {tokenizer_file} ({given.vocab_size} ids) is not the tokenizer checkpoint "
            f"{checkpoint} was trained with ({own.vocab_size} ids, {own_file}); drop --tokenizer"
        )
    if own is None and given.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_file} has {given.vocab_size} ids but the model's vocabulary has "
            f"{model.config.vocab_size}: it is not the tokenizer this model was trained with"
        )
    check_tokenizer_fits(given, model, str(tokenizer_file))
    return given


def load_for_inference(
    checkpoint: str | os.PathLike,
    *,
    device: str = "auto",
    tokenizer_file: str | os.PathLike | None = None,
) -> tuple[torch.nn.Module, Any, Path]:
    """`(model in eval mode on the device, its tokenizer, the checkpoint directory used)`.

    See `resolve_checkpoint` for what `checkpoint` may name and `load_tokenizer_for` for the
    tokenizer. Raises CheckpointError for a missing, empty or corrupt checkpoint (naming the bad
    file), ValueError for a bad device or a tokenizer that does not match the model.
    """
    path = resolve_checkpoint(checkpoint)
    target = resolve_device(device)
    model = load_model(path, device=target)
    return model, load_tokenizer_for(path, model, tokenizer_file), path
