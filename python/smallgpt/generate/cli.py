"""Command line of text generation: `python -m smallgpt.generate --checkpoint DIR ...`.

    python -m smallgpt.generate --checkpoint runs/demo --prompt "ROMEO:" --max-new-tokens 200 \
        [--temperature 0.8] [--top-k K] [--top-p P] [--seed S] [--num-samples N] [--stream]
        [--dtype {fp32,bf16,int8,auto}]

Prompts: `--prompt TEXT` (one prompt; `--prompt -` reads it from stdin, one trailing newline
removed), or `--prompt-file FILE` (one prompt per non-empty line); neither: generate from the
start of a document. `--checkpoint` takes a checkpoint directory, or a run directory (then its
best checkpoint, else its newest). With `--stream` each token's text is printed as soon as its
UTF-8 characters are complete. Sample j of every prompt uses seed S + j, so streamed and
non-streamed output are the same text, and equal `generate_text(..., seed=S + j)`. `--dtype`
sets the weights' precision (`smallgpt.model.precision`): fp32 (the default), bf16, int8
(weight-only, CPU: about a quarter of the bytes per token) or auto (bf16 where the hardware
multiplies it natively, else fp32).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from smallgpt.checkpoint.resolve import load_for_inference
from smallgpt.checkpoint.store import CheckpointError
from smallgpt.generate.decoding import _encode_prompt, iter_generate
from smallgpt.model.gpt import SmallGPT
from smallgpt.model.precision import (
    INFERENCE_DTYPES,
    resolve_inference_dtype,
    to_inference_dtype,
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the options saying which model to load and how (`--checkpoint`, `--device`,
    `--tokenizer`, `--dtype`); `python -m smallgpt.serve` shares them."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tokenizer", help="tokenizer JSON, if the checkpoint has none")
    parser.add_argument(
        "--dtype",
        choices=INFERENCE_DTYPES,
        default="fp32",
        help="weights: fp32 (default), bf16, int8 (weight-only, CPU) or auto (bf16 where the "
        "hardware has it, else fp32)",
    )


def load_model_from_options(args: argparse.Namespace) -> tuple[SmallGPT, Any, Path, str]:
    """`(model in eval mode in the precision asked, its tokenizer, the checkpoint directory,
    that precision)` for the options of `add_model_options`. Raises CheckpointError, OSError or
    ValueError as `load_for_inference` and `resolve_inference_dtype` do."""
    model, tokenizer, path = load_for_inference(
        args.checkpoint, device=args.device, tokenizer_file=args.tokenizer
    )
    dtype = resolve_inference_dtype(args.dtype, model.transformer.wte.weight.device)
    return to_inference_dtype(model, dtype), tokenizer, path, dtype


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.generate",
        description="Generate text from a trained checkpoint.",
    )
    add_model_options(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", help="prompt text; '-' reads it from stdin")
    source.add_argument("--prompt-file", metavar="FILE", help="one prompt per non-empty line")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="default 200")
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample within the nucleus of mass p")
    parser.add_argument("--seed", type=int, help="sample j uses seed + j (reproducible)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--stream", action="store_true", help="print tokens as they come")
    return parser


def read_prompts(prompt: str | None, prompt_file: str | None) -> list[str]:
    """The prompts the options ask for (see the module docstring).

    Raises FileNotFoundError for a missing prompt file, ValueError for one without any prompt.
    """
    if prompt_file is not None:
        with open(prompt_file, encoding="utf-8") as f:
            prompts = [line for line in f.read().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"--prompt-file {prompt_file} holds no prompt (only empty lines)")
        return prompts
    if prompt == "-":
        text = sys.stdin.read()
        return [text.removesuffix("\n")]
    return [prompt or ""]


def stream_sample(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str,
    write: Callable[[str], Any],
    *,
    max_new_tokens: int,
    **options: Any,
) -> str:
    """Generate one continuation of `prompt`, calling `write` with each piece of text as soon as
    it decodes (whole UTF-8 characters only); stops at end-of-text. Returns the continuation.
    Options are those of `smallgpt.generate.iter_generate`."""
    decoder = tokenizer.stream_decoder()
    eos = tokenizer.eos_token_id
    pieces = []
    steps = iter_generate(
        model,
        [_encode_prompt(tokenizer, prompt)],
        max_new_tokens,
        eos_token_id=eos,
        **options,
    )
    for tokens, _ in steps:
        token = int(tokens[0])
        if token == eos:
            break
        piece = decoder.push(token)
        if piece:
            pieces.append(piece)
            write(piece)
    tail = decoder.finish()
    if tail:
        pieces.append(tail)
        write(tail)
    return "".join(pieces)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad sampling options before the model is loaded or anything is printed."""
    problems = {
        "--max-new-tokens must be >= 1": args.max_new_tokens < 1,
        "--num-samples must be >= 1": args.num_samples < 1,
        "--temperature must be >= 0": args.temperature < 0,
        "--top-k must be >= 1": args.top_k is not None and args.top_k < 1,
        "--top-p must be in (0, 1]": args.top_p is not None and not 0 < args.top_p <= 1,
    }
    for message, bad in problems.items():
        if bad:
            raise ValueError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (1: an error, printed on stderr)."""

    args = _parser().parse_args(argv)
    out = sys.stdout
    try:
        _check_options(args)
        prompts = read_prompts(args.prompt, args.prompt_file)
        model, tokenizer, path, dtype = load_model_from_options(args)
        print(f"checkpoint {path} ({dtype})", file=sys.stderr)
        several = len(prompts) * args.num_samples > 1
        for p, prompt in enumerate(prompts):
            for j in range(args.num_samples):
                if several:
                    out.write(f"--- prompt {p + 1}, sample {j + 1}\n")
                out.write(prompt)
                out.flush()
                write = (lambda s: (out.write(s), out.flush())) if args.stream else out.write
                stream_sample(
                    model,
                    tokenizer,
                    prompt,
                    write,
                    max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature,
                    top_k=args.top_k,
                    top_p=args.top_p,
                    seed=None if args.seed is None else args.seed + j,
                )
                out.write("\n")
                out.flush()
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    except torch.OutOfMemoryError as error:
        print(
            f"error: out of memory ({error}); use a smaller model or --device cpu", file=sys.stderr
        )
        return 1
    except (CheckpointError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
