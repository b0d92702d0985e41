"""The demo (`make demo`, `python -m smallgpt.demo [section.key=value ...]`): the whole pipeline on
a CPU in a few minutes, with the `demo-cpu` preset and the bundled Tiny Shakespeare.

It trains a byte-level BPE tokenizer, prepares token shards (the last 10% of the text is the
validation split), trains a small GPT within the preset's time budget, validates it (loss,
perplexity, bits per byte), samples from the best checkpoint and plots the losses. Everything
goes to `runs/demo/` (emptied first): checkpoints, samples.txt, loss.png, metrics.jsonl,
TensorBoard events.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from smallgpt.checkpoint.load import load_model, load_tokenizer
from smallgpt.config.loader import load_config
from smallgpt.config.schema import Config, ConfigError
from smallgpt.generate.decoding import generate_text
from smallgpt.model.gpt import SmallGPT
from smallgpt.train.runtime import resolve_runtime
from smallgpt.train.trainer import Trainer

PRESET = "demo-cpu"
PROMPTS = ("ROMEO:", "JULIET:\nO ")


def steps_within(config: Config, seconds: float, timed_steps: int = 6) -> int:
    """How many optimizer steps of `config`'s model and batch fit in `seconds` on this machine.

    Times `timed_steps` steps (after two warm-up steps) of a throwaway model on random tokens,
    with the preset's device, precision and thread count.
    """

    m, t, o = config.model, config.train, config.optim
    runtime = resolve_runtime(t.device, t.precision, 0, t.num_threads)
    # the tokenizer the run will train has data.tokenizer_vocab_size ids; random tokens need no pad id
    model_config = m.resolve(config.data.tokenizer_vocab_size)
    model = SmallGPT.from_config(model_config).to(runtime.device)
    optimizer = model.configure_optimizers(
        o.weight_decay, o.lr, o.betas, runtime.device.type, optimizer=o.name
    )
    tokens = torch.randint(
        model_config.vocab_size, (t.batch_size, config.seq_len), device=runtime.device
    )

    def step() -> None:
        for _ in range(t.grad_accum_steps):
            with runtime.autocast():
                _, loss = model(tokens, tokens)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(timed_steps):
        step()
    seconds_per_step = (time.perf_counter() - start) / timed_steps
    return int(seconds / seconds_per_step)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (2: bad override)."""
    parser = argparse.ArgumentParser(prog="python -m smallgpt.demo", description=__doc__)
    parser.add_argument("overrides", nargs="*", help="section.key=value changes to the preset")
    parser.add_argument("--run-dir", default=None, help="default: the preset's (runs/demo)")
    args = parser.parse_args(argv)
    try:
        config = load_config(PRESET, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir or config.train.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    budget = config.train.max_time_minutes
    if budget:
        # Fit the step count (and so the LR schedule's cosine decay) to the time budget on this
        # machine; the budget itself stays as a hard stop. The whole budget is planned: the
        # timing loop runs 4-12% slower than the trainer's steps here, which leaves room for
        # validation, and a run cut short loses only the flat tail of the cosine.
        fitting = steps_within(config, budget * 60)
        config.train.max_steps = max(1, min(config.train.max_steps, fitting))

    t = config.train
    precision = resolve_runtime(t.device, t.precision, 0, t.num_threads).precision
    print(
        f"smallgpt demo: a {config.model.num_layers}-layer GPT on Tiny Shakespeare, "
        f"{'at most ' + format(budget, 'g') + ' minutes of ' if budget else ''}training on "
        f"{t.device} in {precision}; output in {run_dir}/"
    )
    with Trainer(config, run_dir=run_dir) as trainer:
        summary = trainer.fit()
    print(summary.format())

    best = Path(summary.best_checkpoint or summary.checkpoint)
    model, tokenizer = load_model(best), load_tokenizer(best)
    samples = generate_text(
        model, tokenizer, list(PROMPTS), max_length=150, temperature=0.8, top_k=50, seed=0
    )
    text = "\n\n".join(samples)
    (run_dir / "demo_samples.txt").write_text(text + "\n", encoding="utf-8")
    print(f"\nsamples from {best}:\n\n{text}\n")
    bpb = summary.val_bits_per_byte
    print(f"validation bits per byte: {'n/a' if bpb is None else format(bpb, '.4f')}")
    plot = run_dir / "loss.png"
    print(f"loss plot: {plot if plot.exists() else 'skipped (matplotlib missing)'}")
    print(f"\nserve it (pip install 'smallgpt[serve]'): python -m smallgpt.serve --checkpoint {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
