"""A real `python -m smallgpt.serve` process on 127.0.0.1 over a tiny trained checkpoint."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from train_helpers import make_shards, run_tiny, single_thread

CONTEXT = 64


def train_tiny_run(root: Path) -> Path:
    """A run directory of a few CPU steps of a 2-layer model with a 64-token context."""
    with single_thread():
        run_tiny(
            make_shards(root),
            root / "run",
            f"model.max_seq_len={CONTEXT}",
            f"data.seq_len={CONTEXT}",
            "train.max_steps=6",
        )
    return root / "run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(run: Path, *args: str, env: dict | None = None) -> Iterator[str]:
    """Start the server, wait (at most 60 s) until /health answers; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smallgpt.serve",
            "--checkpoint",
            str(run),
            "--port",
            str(port),
            "--device",
            "cpu",
            *args,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stdout.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
