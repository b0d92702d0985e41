"""Decoding with the KV cache: batched prompts, streaming, and the guide's `generate_text`."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from smallgpt.generate.sampling import apply_repetition_penalty, sample_next_token
from smallgpt.model.gpt import SmallGPT


def _check_prompts(prompts: Sequence[Sequence[int]] | Tensor, vocab_size: int) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        prompts = prompts.tolist()
    if isinstance(prompts, (str, bytes)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists (encode text first)")
    checked = []
    for index, prompt in enumerate(prompts):
        try:
            ids = [operator.index(i) for i in prompt]
        except TypeError:
            raise TypeError(f"prompt {index} must be a sequence of integer token ids") from None
        if not ids:
            raise ValueError(
                f"prompt {index} is empty; start it with a token such as <|endoftext|>"
            )
        if not all(0 <= i < vocab_size for i in ids):
            raise ValueError(f"prompt {index} holds ids outside [0, vocab_size={vocab_size})")
        checked.append(ids)
    return checked


class _Decoder:
    """Batched incremental decoding state: the KV cache and each sequence's context window."""

    def __init__(self, model: SmallGPT, sequences: list[list[int]], context_shift: int) -> None:
        self.model = model
        self.sequences = sequences
        self.context_start = [0] * len(sequences)
        self.max_len = model.config.max_seq_len
        self.keep = self.max_len - context_shift + 1
        self.device = model.transformer.wte.weight.device
        self.logits = model.decoding_logits()

    def prefill(self, remaining_steps: int) -> Tensor:
        """(Re)build the cache from each sequence's window; returns next-token logits (B, vocab)."""
        windows = []
        for b, seq in enumerate(self.sequences):
            if len(seq) - self.context_start[b] > self.max_len:
                self.context_start[b] = len(seq) - self.keep
            windows.append(seq[self.context_start[b] :])
        width = max(len(w) for w in windows)
        ids = torch.zeros(len(windows), width, dtype=torch.long)
        for b, window in enumerate(windows):
            ids[b, width - len(window) :] = torch.tensor(window)
        start = torch.tensor([width - len(w) for w in windows])
        capacity = min(self.max_len, width + remaining_steps)
        self.cache = self.model.new_kv_cache(len(windows), capacity, start=start)
        hidden = self.model.hidden(ids.to(self.device), kv_cache=self.cache)
        return self.logits(hidden[:, -1])

    def step(self, tokens: Tensor, remaining_steps: int) -> Tensor:
        """Append `tokens` (B,) to every sequence; returns the next-token logits (B, vocab)."""
        for seq, token in zip(self.sequences, tokens.tolist()):
            seq.append(token)
        if self.cache.length == self.cache.capacity:
            return self.prefill(remaining_steps)
        hidden = self.model.hidden(tokens[:, None], kv_cache=self.cache)
        return self.logits(hidden[:, -1])


def iter_generate(
    model: SmallGPT,
    prompts: Sequence[Sequence[int]] | Tensor,
    max_new_tokens: int = 100,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    seed: int | None = None,
    context_shift: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield `(tokens, active)` once per step: the new id of each sequence (LongTensor (B,), on
    the model's device) and which sequences were still generating (bool (B,)); a sequence stops
    after yielding `eos_token_id`. Ends after max_new_tokens steps or when all have stopped.

    prompts: token-id lists (any lengths) or a LongTensor (B, T) / (T,). seed makes sampling
    reproducible (a local generator; the global RNG is untouched). The model is put in eval mode
    for the duration. Raises ValueError for empty or out-of-range prompts or bad options.
    """
    sequences = _check_prompts(prompts, model.get_vocab_size())
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not 1 <= context_shift <= model.config.max_seq_len:
        raise ValueError(
            f"context_shift must be in [1, max_seq_len={model.config.max_seq_len}], got {context_shift}"
        )
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty!r}")
    device = model.transformer.wte.weight.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        # Inference mode (cheaper per operation than no_grad) is held only while decoding, not
        # across the yields, so the caller's own code runs in its own autograd mode; what is
        # yielded is cloned out of inference mode.
        with torch.inference_mode():
            decoder = _Decoder(model, sequences, context_shift)
            # Only what the options use is kept up to date: each step's overhead adds to every token.
            seen = None
            if repetition_penalty != 1.0:
                seen = torch.zeros(
                    len(sequences), model.get_vocab_size(), dtype=torch.bool, device=device
                )
                for b, seq in enumerate(sequences):
                    seen[b, torch.tensor(seq, device=device)] = True
            active = torch.ones(len(sequences), dtype=torch.bool, device=device)
            logits = decoder.prefill(max_new_tokens) if max_new_tokens else None
        for step in range(max_new_tokens):
            with torch.inference_mode():
                if seen is not None:
                    logits = apply_repetition_penalty(logits, seen, repetition_penalty)
                tokens = sample_next_token(
                    logits,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    min_p=min_p,
                    generator=generator,
                ).squeeze(-1)
            yield tokens.clone(), active.clone()
            with torch.inference_mode():
                if seen is not None:
                    seen.scatter_(1, tokens[:, None], True)
                remaining = max_new_tokens - step - 1
                if eos_token_id is not None:
                    active &= tokens != eos_token_id
                    if not bool(active.any()):
                        return
                if remaining == 0:
                    return
                logits = decoder.step(tokens, remaining)
    finally:
        model.train(was_training)


def generate(
    model: SmallGPT,
    prompts: Sequence[Sequence[int]] | Tensor,
    max_new_tokens: int = 100,
    **options: Any,
) -> list[list[int]]:
    """Generate up to max_new_tokens ids after each prompt; returns the new ids of each prompt
    (without the end-of-text token that stopped it). Options are those of `iter_generate`."""
    outputs: list[list[int]] = [
        [] for _ in range(len(_check_prompts(prompts, model.get_vocab_size())))
    ]
    eos = options.get("eos_token_id")
    for tokens, active in iter_generate(model, prompts, max_new_tokens, **options):
        for out, token, alive in zip(outputs, tokens.tolist(), active.tolist()):
            if alive and token != eos:
                out.append(token)
    return outputs


def stream_text(
    model: SmallGPT,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 100,
    **options: Any,
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece as tokens are generated.

    Pieces go through the tokenizer's StreamDecoder, so a character split over several tokens
    is yielded whole; the pieces join to the text of the generated ids. Stops at the tokenizer's
    end-of-text token unless `eos_token_id` is given in options. Options as `iter_generate`.
    """
    options.setdefault("eos_token_id", tokenizer.eos_token_id)
    eos = options["eos_token_id"]
    decoder = tokenizer.stream_decoder()
    for tokens, _ in iter_generate(
        model, [_encode_prompt(tokenizer, prompt)], max_new_tokens, **options
    ):
        token = int(tokens[0])
        if token == eos:
            break
        piece = decoder.push(token)
        if piece:
            yield piece
    tail = decoder.finish()
    if tail:
        yield tail


def _encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    # An empty prompt conditions on <|endoftext|>, GPT-2's start-of-document token.
    return tokenizer.encode(prompt) or [tokenizer.eos_token_id]


def generate_text(
    model: SmallGPT,
    tokenizer: Any,
    prompt: str | Sequence[str],
    max_length: int = 100,
    temperature: float = 0.8,
    **options: Any,
) -> str | list[str]:
    """The prompt followed by up to `max_length` generated tokens of text (the guide's name).

    A list of prompts is generated as one batch and gives a list of texts. Generation stops at
    the tokenizer's end-of-text token unless `eos_token_id` is given in options (None: never).
    Other options (top_k, top_p, min_p, repetition_penalty, seed, context_shift) are those of
    `iter_generate`.
    """
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    options.setdefault("eos_token_id", tokenizer.eos_token_id)
    new_ids = generate(
        model,
        [_encode_prompt(tokenizer, p) for p in prompts],
        max_length,
        temperature=temperature,
        **options,
    )
    texts = [p + tokenizer.decode(ids) for p, ids in zip(prompts, new_ids)]
    return texts[0] if single else texts
