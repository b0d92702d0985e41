"""Text generation with a KV cache: greedy, temperature, top-k, top-p, min-p, repetition penalty.

The prompt is run through the model once (prefill); afterwards each step feeds only the newest token.
Prompts of different lengths are batched with left padding: padding slots are masked out and each
sequence's positions count from its first real token, so a batched result equals running each
prompt alone.

Context window: the model sees at most `max_seq_len` tokens. When a sequence's context would grow
past that, its oldest tokens are dropped so that `max_seq_len - context_shift + 1` remain, and the
cache is rebuilt from them. With the default context_shift=1 every step past the limit sees exactly
the last max_seq_len tokens (like recomputing on `ids[-max_seq_len:]`, and as slow: one full forward
per step); a larger shift rebuilds only every `context_shift` steps at the cost of a shorter context.

Sampling helpers take logits (..., vocab) and never modify them: filters return new tensors
(-inf outside the kept set) and `top_k_sampling` / `top_p_sampling` return sampled ids of shape
(..., 1) (LongTensor), like `torch.multinomial`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from smallgpt.model import SmallGPT


def _check_logits(logits: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor")
    if logits.dim() not in (1, 2) or logits.size(-1) == 0:
        raise ValueError(
            f"logits must have shape (vocab,) or (batch, vocab), got {tuple(logits.shape)}"
        )
    return logits.float() if logits.element_size() < 4 else logits


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """A copy of `logits` with everything but the k largest per row set to -inf (exactly k kept)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    logits = _check_logits(logits)
    if k >= logits.size(-1):
        return logits.clone()
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """A copy of `logits` keeping the nucleus: the most likely tokens whose probabilities sum to p.

    A token is kept when the probability mass of the tokens ranked above it is below p, so the
    best token is always kept. p must be in (0, 1]; p = 1 keeps everything.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    logits = _check_logits(logits)
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    drop = (mass_above >= p).scatter(-1, order, mass_above >= p)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """A copy of `logits` keeping tokens whose probability is at least min_p x the best one's."""
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p!r}")
    logits = _check_logits(logits)
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """A copy of `logits` (batch, vocab) where tokens marked in `seen` (bool, same shape) are made
    less likely (CTRL rule: positive logits divided by penalty, negative ones multiplied)."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty!r}")
    logits = _check_logits(logits)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next_token(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample one id per row of `logits` (..., vocab): LongTensor (..., 1).

    temperature 0 is greedy (argmax); otherwise logits are divided by temperature, then filtered
    by top_k, top_p and min_p (those given), and sampled with `generator`. Raises ValueError for
    a negative temperature or out-of-range filter values.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    logits = _check_logits(logits)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


def top_k_sampling(
    logits: Tensor, k: int = 50, *, generator: torch.Generator | None = None
) -> Tensor:
    """Sample from the k most likely tokens of each row: LongTensor (..., 1). Logits untouched."""
    return sample_next_token(logits, top_k=k, generator=generator)


def top_p_sampling(
    logits: Tensor, p: float = 0.9, *, generator: torch.Generator | None = None
) -> Tensor:
    """Sample from the nucleus of mass p of each row: LongTensor (..., 1). Logits untouched."""
    return sample_next_token(logits, top_p=p, generator=generator)


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
        return self.model.logits(hidden[:, -1])

    def step(self, tokens: Tensor, remaining_steps: int) -> Tensor:
        """Append `tokens` (B,) to every sequence; returns the next-token logits (B, vocab)."""
        for seq, token in zip(self.sequences, tokens.tolist()):
            seq.append(token)
        if self.cache.length == self.cache.capacity:
            return self.prefill(remaining_steps)
        hidden = self.model.hidden(tokens[:, None], kv_cache=self.cache)
        return self.model.logits(hidden[:, -1])


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
        with torch.no_grad():
            decoder = _Decoder(model, sequences, context_shift)
            seen = torch.zeros(
                len(sequences), model.get_vocab_size(), dtype=torch.bool, device=device
            )
            for b, seq in enumerate(sequences):
                seen[b, torch.tensor(seq, device=device)] = True
            active = torch.ones(len(sequences), dtype=torch.bool, device=device)
            logits = decoder.prefill(max_new_tokens) if max_new_tokens else None
            for step in range(max_new_tokens):
                if repetition_penalty != 1.0:
                    logits = apply_repetition_penalty(logits, seen, repetition_penalty)
                tokens = sample_next_token(
                    logits,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    min_p=min_p,
                    generator=generator,
                ).squeeze(-1)
                yield tokens, active.clone()
                seen.scatter_(1, tokens[:, None], True)
                if eos_token_id is not None:
                    active &= tokens != eos_token_id
                remaining = max_new_tokens - step - 1
                if remaining == 0 or not bool(active.any()):
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m smallgpt.generate --checkpoint DIR --prompt ...` (see smallgpt.generate_cli)."""
    from smallgpt.generate_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
