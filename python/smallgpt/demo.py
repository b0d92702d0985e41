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
from collections.abc import Sequence
from pathlib import Path

from smallgpt.checkpoint.load import load_model, load_tokenizer
from smallgpt.config.loader import load_config
from smallgpt.config.schema import ConfigError
from smallgpt.generate.decoding import generate_text
from smallgpt.train.trainer import Trainer

PRESET = "demo-cpu"
PROMPTS = ("ROMEO:", "JULIET:\nO ")


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
    budget, device = config.train.max_time_minutes, config.train.device
    with Trainer(config, run_dir=run_dir) as trainer:
        print(
            f"smallgpt demo: a {config.model.num_layers}-layer GPT on Tiny Shakespeare, "
            f"{'at most ' + format(budget, 'g') + ' minutes of ' if budget else ''}training on "
            f"{device} in {trainer.runtime.precision}; output in {run_dir}/"
        )
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
    print(
        f"\nserve it (pip install 'smallgpt[serve]'): python -m smallgpt.serve --checkpoint {run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
