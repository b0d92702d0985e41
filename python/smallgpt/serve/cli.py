"""Command line of the server: `python -m smallgpt.serve --checkpoint RUN_OR_CHECKPOINT ...`.

    python -m smallgpt.serve --checkpoint runs/demo [--host 127.0.0.1] [--port 8000]
        [--device auto] [--max-batch 16] [--max-queue 64] [--api-key KEY]
        [--dtype {fp32,bf16,int8,auto}] [--threads N]

Serves OpenAI's completions API (`POST /v1/completions`, `GET /v1/models`), `GET /health` and a
page to try the model at `/`. Binds to 127.0.0.1 unless `--host` says otherwise. With
`--api-key` (or the SMALLGPT_API_KEY environment variable) every request but `/health` and the
page needs `Authorization: Bearer KEY`. `--dtype` is `python -m smallgpt.generate`'s (fp32 default).
`--threads` sets torch's intra-op threads of the decoding thread (default: torch's, which follows
OMP_NUM_THREADS); the HTTP event loop runs on a thread of its own beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch

from smallgpt.checkpoint.store import CheckpointError
from smallgpt.generate.cli import add_model_options, load_model_from_options
from smallgpt.serve.server import EXTRA_HINT, create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.serve",
        description="Serve a trained checkpoint over OpenAI's completions API, with a web page.",
    )
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--max-batch", type=int, default=16, help="sequences per step (16)")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting sequences (64)")
    parser.add_argument("--api-key", help="required bearer token (default: $SMALLGPT_API_KEY)")
    parser.add_argument("--threads", type=int, help="torch threads for decoding (torch's default)")
    parser.add_argument("--model-name", default="smallgpt", help="the model id (smallgpt)")
    return parser


# Seconds an idle keep-alive connection stays open. httpx (so the `openai` client) drops its idle
# connections after 5 s, uvicorn's default: with equal timeouts a client reusing a connection as
# the server closes it gets a read error. Outliving the clients' expiry leaves the closing to them.
KEEP_ALIVE_S = 30


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; returns the exit status (1: an error, on stderr)."""
    args = _parser().parse_args(argv)
    try:
        import uvicorn  # the serve extra
    except ImportError:
        print(f"error: {EXTRA_HINT}", file=sys.stderr)
        return 1
    try:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {args.port}")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        model, tokenizer, path, dtype = load_model_from_options(args)
        app = create_app(
            model,
            tokenizer,
            model_name=args.model_name,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            api_key=args.api_key or os.environ.get("SMALLGPT_API_KEY") or None,
            num_threads=args.threads,
        )
    except (CheckpointError, OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except torch.OutOfMemoryError as error:
        print(f"error: out of memory ({error}); use --device cpu", file=sys.stderr)
        return 1
    print(
        f"serving {path} ({dtype}) at http://{args.host}:{args.port}/", file=sys.stderr, flush=True
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0
