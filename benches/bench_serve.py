"""The server's batching on CPU: `python -m smallgpt.serve` on a 4-layer, 256-wide model.

- concurrency: 16 clients at once x 64 new tokens each vs the same 16 requests one at a time;
  total tokens/s (target: >= 4x), with the p50 and p99 request latency of both.
- overhead: one request's tokens/s through HTTP vs `smallgpt.generate` in process on the same
  checkpoint, in the same dtype (fp32) and torch thread count (1) (target: >= 0.9x). Both
  sample the same tokens (same seed; checked), so both do the same work.

Both sides are warm: the server has answered a concurrent round and a one-at-a-time round (on
the connections the timed rounds reuse) and a single request, and `generate` has run once,
before anything is timed. The machine is shared, so the two sides of
each ratio are timed in turns (ROUNDS of each, interleaved) and the ratio is that of their
medians; the figures of every round, and the median of the ratios of the rounds side by side
(`median_round_ratio`, the steadier when the machine's load drifts), are in `extra_info`. The server runs one decoding thread
with 1 torch thread (`--threads 1`) beside its event loop's thread; `generate` runs in this
process on 1 torch thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import pytest
import torch
from smallgpt.checkpoint.load import load_model, load_tokenizer, save_checkpoint
from smallgpt.config.loader import PACKAGE_DIR
from smallgpt.generate.decoding import generate
from smallgpt.model.config import ModelConfig
from smallgpt.model.gpt import SmallGPT
from smallgpt.tokenizer.bpe import Tokenizer

from benches.report import report

httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")
pytest.importorskip("uvicorn", reason="needs smallgpt[serve]")

CLIENTS = 16
THREADS = 1  # the server's and the in-process peer's, so that both compete equally
NEW_TOKENS = 64
ROUNDS = 3  # of each side, interleaved
SINGLE_ROUNDS = 7  # a single request is short (~0.2 s): more rounds for a steady median
PROMPTS = ["ROMEO:", "JULIET:", "KING HENRY:", "First Citizen:"]

pytestmark = pytest.mark.benchmark(group="serve")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    text = (PACKAGE_DIR / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tokenizer = Tokenizer.train([text[:200_000]], vocab_size=1000)
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        embed_dim=256,
        num_heads=4,
        num_layers=4,
        max_seq_len=256,
        dropout=0.0,
    )
    path = tmp_path_factory.mktemp("serve") / "checkpoint"
    return save_checkpoint(
        SmallGPT.from_config(config), None, None, 0, None, path, tokenizer=tokenizer
    )


@pytest.fixture(scope="module")
def server(checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smallgpt.serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-batch",
            str(CLIENTS),
            "--threads",
            str(THREADS),
        ],
        env={**os.environ, "OMP_NUM_THREADS": str(THREADS)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def requests() -> list[dict]:
    return [
        {
            "prompt": PROMPTS[i % len(PROMPTS)],
            "max_tokens": NEW_TOKENS,
            "temperature": 0.8,
            "seed": i,
        }
        for i in range(CLIENTS)
    ]


async def _timed_post(http, body: dict) -> tuple[int, float]:
    start = time.perf_counter()
    answer = (await http.post("/v1/completions", json=body)).json()
    return answer["usage"]["completion_tokens"], time.perf_counter() - start


async def _round(http, together: bool) -> tuple[float, list[float]]:
    """(total tokens/s, latency of each request in s) of the 16 requests."""
    start = time.perf_counter()
    if together:
        results = await asyncio.gather(*(_timed_post(http, r) for r in requests()))
    else:
        results = [await _timed_post(http, r) for r in requests()]
    seconds = time.perf_counter() - start
    return sum(tokens for tokens, _ in results) / seconds, [s for _, s in results]


def run_clients(url: str, together: bool) -> tuple[float, list[float]]:
    """One round with a fresh client (its set-up and connections timed too)."""

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            return await _round(http, together)

    return asyncio.run(main())


def timed_rounds(url: str) -> list[tuple[float, list[float]]]:
    """ROUNDS of (at once, one at a time), in turns, after one of each as warm-up. The clients
    keep their connections between rounds (one AsyncClient), so a round times the requests,
    not the set-up of an SSL context and of 16 connections."""

    async def main():
        limits = httpx.Limits(max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
            await _round(http, True)
            await _round(http, False)
            return [
                await _round(http, together) for _ in range(ROUNDS) for together in (True, False)
            ]

    return asyncio.run(main())


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def test_concurrent_clients_vs_one_at_a_time(benchmark, server):
    rounds = timed_rounds(server)
    together_rates = [rate for rate, _ in rounds[0::2]]
    alone_rates = [rate for rate, _ in rounds[1::2]]
    together_latencies = [s for _, latencies in rounds[0::2] for s in latencies]
    alone_latencies = [s for _, latencies in rounds[1::2] for s in latencies]
    # pytest-benchmark's own columns: one more concurrent round, with a fresh client
    benchmark.pedantic(run_clients, args=(server, True), rounds=1)
    report(
        benchmark,
        statistics.median(together_rates),
        "tok/s",
        {"one at a time": statistics.median(alone_rates)},
        target=">= 4",
        clients=CLIENTS,
        new_tokens=NEW_TOKENS,
        threads=THREADS,
        rounds=ROUNDS,
        rates=together_rates,
        one_at_a_time_rates=alone_rates,
        median_round_ratio=statistics.median(a / b for a, b in zip(together_rates, alone_rates)),
        p50_s=percentile(together_latencies, 50),
        p99_s=percentile(together_latencies, 99),
        one_at_a_time_p50_s=percentile(alone_latencies, 50),
        one_at_a_time_p99_s=percentile(alone_latencies, 99),
    )


def test_one_request_vs_generate_in_process(benchmark, server, checkpoint):
    body = {"prompt": "ROMEO:", "max_tokens": NEW_TOKENS, "temperature": 0.8, "seed": 0}
    model, tokenizer = load_model(checkpoint), load_tokenizer(checkpoint)
    prompt = [tokenizer.encode("ROMEO:")]

    def one_request(http) -> tuple[float, str]:
        start = time.perf_counter()
        answer = http.post("/v1/completions", json=body).json()
        seconds = time.perf_counter() - start
        return answer["usage"]["completion_tokens"] / seconds, answer["choices"][0]["text"]

    def in_process() -> tuple[float, list[int]]:
        start = time.perf_counter()
        (ids,) = generate(
            model, prompt, NEW_TOKENS, temperature=0.8, seed=0, eos_token_id=tokenizer.eos_token_id
        )
        return len(ids) / (time.perf_counter() - start), ids

    server_rates, generate_rates = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    # one client for every call: its set-up (an SSL context, a connection) is not the server's
    try:
        with httpx.Client(base_url=server, timeout=300) as http:
            one_request(http)  # warm-up
            _, ids = in_process()
            for _ in range(SINGLE_ROUNDS):
                rate, text = one_request(http)
                server_rates.append(rate)
                generate_rates.append(in_process()[0])
            assert text == tokenizer.decode(ids), "the server and generate sampled differently"
            benchmark.pedantic(one_request, args=(http,), rounds=1)
    finally:
        torch.set_num_threads(threads)
    report(
        benchmark,
        statistics.median(server_rates),
        "tok/s",
        {"generate in process": statistics.median(generate_rates)},
        target=">= 0.9",
        new_tokens=NEW_TOKENS,
        threads=THREADS,
        rounds=SINGLE_ROUNDS,
        rates=server_rates,
        generate_rates=generate_rates,
        median_round_ratio=statistics.median(a / b for a, b in zip(server_rates, generate_rates)),
    )
