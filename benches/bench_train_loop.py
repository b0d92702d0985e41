"""Training throughput of `smallgpt.train` against a plain PyTorch loop written as in the user's
guide, on CPU, same model, same batches, in the same pytest run (target: >= 1.3x).

Model: the demo's shapes (configs/demo-cpu.yaml): SmallGPT with embed 256, 4 heads, 4 layers,
context 128, dropout 0.1, on the bundled Tiny Shakespeare with a 4096-token tokenizer; batch 16 x
128 tokens, AdamW + warmup/cosine + clipping
at 1.0 in both loops. The plain loop runs in fp32; ours with its default `train.precision=auto`
(bf16 autocast on CPUs with native bf16, AVX512-BF16 or AMX; fp32 elsewhere), and once more with
`train.precision=fp32`, the same dtype as the plain loop. The plain loop is `logits, loss = model(x, y); loss.backward();
clip; optimizer.step(); scheduler.step(); zero_grad(); loss.item()`. Ours is `Trainer.fit()` with
its per-step bookkeeping (token counting, non-finite checks, stop votes, metrics every 10 steps
to metrics.jsonl and TensorBoard), validation and periodic checkpoints off (the final ones are
outside the timing). Both loops run in one fresh process, interleaved step by step (a plain step
inside each of the Trainer's step callbacks), so a busy machine slows both alike; tokens/s is
batch tokens over the median step time after 5 warm-up steps. "1 thread" sets OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import os

import pytest

from benches.fresh import run_fresh
from benches.report import report

STEPS, WARMUP = 40, 5
SIZES = {"embed_dim": 256, "num_heads": 4, "num_layers": 4, "max_seq_len": 128, "dropout": 0.1}
BATCH, LR, SEED = 16, 1e-3, 1337

pytestmark = pytest.mark.benchmark(group="train-loop")

_CODE = """
import statistics
import time

import torch
from smallgpt.config import load_config
from smallgpt.data.datasets import RandomWindowBatches
from smallgpt.data.shards import load_meta
from smallgpt.model import SmallGPT
from smallgpt.optim.schedule import get_cosine_schedule_with_warmup
from smallgpt.train.callbacks import TrainerCallback
from smallgpt.train.trainer import Trainer

# The plain loop, as the user's guide writes it.
meta = load_meta(SHARDS)
torch.manual_seed(SEED)
model = SmallGPT(meta["vocab_size"], **SIZES, pad_token_id=meta["pad_token_id"])
optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=0.1)
scheduler = get_cosine_schedule_with_warmup(optimizer, 10, STEPS)
batches = RandomWindowBatches(SHARDS, "train", seq_len=SIZES["max_seq_len"], batch_size=BATCH,
                              seed=SEED)
model.train()

def plain_step():
    input_ids, labels = batches.next_batch()
    logits, loss = model(input_ids, labels)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    loss.item()

class Interleave(TrainerCallback):
    # Times the Trainer's steps (everything between two callbacks) and runs one plain step
    # inside each callback, so both loops see the same machine load.
    def __init__(self):
        self.ours, self.plain, self.mark = [], [], None
    def on_train_start(self, trainer):
        self.mark = time.perf_counter()
    def on_step_end(self, trainer, result):
        self.ours.append(time.perf_counter() - self.mark)
        start = time.perf_counter()
        plain_step()
        self.plain.append(time.perf_counter() - start)
        self.mark = time.perf_counter()

overrides = [f"model.{k}={v}" for k, v in SIZES.items()] + [
    f"data.shard_dir={SHARDS}", f"train.batch_size={BATCH}", f"train.max_steps={STEPS}",
    f"train.seed={SEED}", f"optim.lr={LR}", "optim.warmup_steps=10", "train.device=cpu",
    "train.eval_interval=100000", "train.eval_batches=1", "checkpoint.interval=null",
    "log.interval=10", "log.progress_bar=false", "log.plot=false", "log.num_samples=0",
    f"train.precision={PRECISION}",
]
clock = Interleave()
with Trainer(load_config(None, overrides), run_dir=RUN_DIR, callbacks=[clock]) as trainer:
    trainer.fit()
tokens = BATCH * SIZES["max_seq_len"]
RESULT["ours"] = tokens / statistics.median(clock.ours[WARMUP:])
RESULT["plain"] = tokens / statistics.median(clock.plain[WARMUP:])
RESULT["precision"] = trainer.runtime.precision
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    from smallgpt.config.schema import DataSection
    from smallgpt.data.prepare import prepare_data

    root = tmp_path_factory.mktemp("bench-train-loop")
    data = DataSection(
        text_files=["smallgpt:assets/tinyshakespeare.txt"],
        tokenizer_vocab_size=4096,
        val_fraction=0.1,
    )
    return str(prepare_data(data, root, show_progress=False).shard_dir)


def _measure(shards: str, run_dir: str, threads: int | None, precision: str) -> dict:
    env = dict(os.environ)
    if threads == 1:
        env["OMP_NUM_THREADS"] = "1"
    header = (
        f"SHARDS = {shards!r}\nRUN_DIR = {run_dir!r}\nSTEPS = {STEPS}\nWARMUP = {WARMUP}\n"
        f"SIZES = {SIZES!r}\nBATCH = {BATCH}\nLR = {LR}\nSEED = {SEED}\n"
        f"PRECISION = {precision!r}\n"
    )
    return run_fresh(header + _CODE, env=env)


@pytest.mark.parametrize(("threads", "precision"), [(None, "auto"), (1, "auto"), (None, "fp32")])
def test_training_loop_throughput_vs_plain_pytorch_loop(
    benchmark, shards, tmp_path, threads, precision
):
    args = (shards, str(tmp_path / "run"), threads, precision)
    rates = benchmark.pedantic(_measure, args=args, rounds=1)
    report(
        benchmark,
        rates["ours"],
        "tok/s",
        {"plain PyTorch loop": rates["plain"]},
        target=">= 1.3",
        threads=1 if threads == 1 else os.cpu_count(),
        precision=f"{precision} ({rates['precision']}); the plain loop fp32",
        steps=STEPS,
        warmup_steps=WARMUP,
    )
