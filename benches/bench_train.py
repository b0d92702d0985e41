"""BPE training speed and memory against peers, each run in a fresh process (imports excluded).

Task: vocab 10000 (specials `<|endoftext|>` and `<|pad|>` included), GPT-2 pattern, min_frequency 2.
- smallgpt: `Tokenizer.train_files(path)` (reads and streams the file inside the timing).
- Hugging Face `tokenizers`: BpeTrainer with ByteLevel and the 256-byte initial alphabet (the
  merges smallgpt reproduces), fed the text cut into ~1 MB pieces at pre-tokenization-safe places
  (same merges as the whole text, and HF can pre-tokenize the pieces in parallel); the cutting is
  outside the timing.
- gigabpe (HF-exact trainer, reads files; no 256-byte initial alphabet), rustbpe and flashbpe
  (nanochat-style trainers, fed the same pieces, vocab 9998 as they have no special tokens), when
  they are installed.
"All threads" is every core of the machine; "1 thread" sets RAYON_NUM_THREADS=1 (and
TOKENIZERS_PARALLELISM=false for HF). Each time is the fastest of 3 runs (1 run when it takes
over 10 s). Peak RSS is the whole child process's (target for smallgpt's streamed training on
the 57.6 MB corpus: <= 100 MB).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from benches.fresh import run_fresh
from tests.corpora import CORPORA, corpus_path

VOCAB = 10000
SPECIALS = ["<|endoftext|>", "<|pad|>"]
BIG = ["gutenberg_10mb", "gutenberg"]
SMALL = ["tinyshakespeare", "wikitext2_valid"]

# Cuts the corpus into ~1 MB pieces at places where pre-tokenizing the pieces separately gives
# the pieces of the whole text (smallgpt's safe cut), outside the timing.
_PIECES = """
from smallgpt import _bpe
text = open(PATH, encoding="utf-8").read()
pieces, start = [], 0
while len(text) - start > (1 << 20):
    window = text[start:start + (1 << 20)]
    cut = _bpe.safe_cut(window, "gpt2") or len(window)
    pieces.append(window[:cut])
    start += cut
pieces.append(text[start:])
"""

# Each trainer's snippet defines `train()`, returning the vocabulary size; this times it.
_TIMED = """
import time
start, cpu_start = time.perf_counter(), time.process_time()
RESULT["vocab_size"] = train()
RESULT["seconds"] = time.perf_counter() - start
RESULT["cpu_seconds"] = time.process_time() - cpu_start
"""

_CODE = {
    "smallgpt": """
from smallgpt.tokenizer import Tokenizer
def train():
    return Tokenizer.train_files(PATH, VOCAB).vocab_size
""",
    "hf-tokenizers": _PIECES
    + """
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
def train():
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(pieces, trainer)
    return hf.get_vocab_size()
""",
    "gigabpe": """
import gigabpe
def train():
    vocab, merges = gigabpe.train_bpe([PATH], VOCAB, special_tokens=SPECIALS, min_frequency=2,
        pretokenizer="bytelevel", threads=THREADS)
    return len(vocab)
""",
    "rustbpe": _PIECES
    + """
import rustbpe
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
def train():
    tokenizer = rustbpe.Tokenizer()
    tokenizer.train_from_iterator(iter(pieces), VOCAB - len(SPECIALS), pattern=GPT2)
    return tokenizer.vocab_size
""",
}
_CODE["flashbpe"] = _CODE["rustbpe"].replace("rustbpe", "flashbpe")

PEERS = ["gigabpe", "rustbpe", "flashbpe"]
REPEATS, LONG_S = 3, 10.0


def _path(name: str) -> str:
    path = corpus_path(name)
    if path is None or not path.is_file():
        pytest.skip(f"corpus {CORPORA[name]} not found")
    return str(path)


def _measure(trainer: str, corpus: str, threads: int | None) -> dict:
    """Trains in fresh processes: the fastest of `REPEATS` runs (one run when it takes over
    `LONG_S` seconds). Returns its seconds and vocab_size, and the largest peak_rss_mb."""
    env = dict(os.environ)
    if threads == 1:
        env["RAYON_NUM_THREADS"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
    header = f"PATH = {_path(corpus)!r}\nVOCAB = {VOCAB}\nSPECIALS = {SPECIALS!r}\n"
    header += f"THREADS = {threads!r}\n"
    code = header + _CODE[trainer] + _TIMED
    runs = [run_fresh(code, env=env)]
    while len(runs) < REPEATS and runs[0]["seconds"] < LONG_S:
        runs.append(run_fresh(code, env=env))
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**fastest, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def _thread_label(threads: int | None) -> str:
    return "1 thread" if threads == 1 else f"all {os.cpu_count()} threads"


def _record_times(record, trainer: str, label: str, run: dict) -> None:
    record(
        "bpe-train",
        f"{trainer} {label}",
        run["seconds"],
        "s",
        cpu_s=round(run["cpu_seconds"], 3),
        peak_rss_mb=round(run["peak_rss_mb"], 1),
    )


def _record_speedup(record, peer: str, label: str, ours: dict, theirs: dict, **details) -> None:
    """Wall-time ratio, with the CPU-time ratio beside it (steadier on a busy machine)."""
    record(
        "bpe-train",
        f"speedup vs {peer}, {label}",
        theirs["seconds"] / ours["seconds"],
        "x",
        cpu_time_ratio=round(theirs["cpu_seconds"] / ours["cpu_seconds"], 2),
        **details,
    )


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("corpus", BIG)
def test_training_speed_vs_hf_tokenizers(record, corpus, threads):
    ours = _measure("smallgpt", corpus, threads)
    hf = _measure("hf-tokenizers", corpus, threads)
    assert ours["vocab_size"] == hf["vocab_size"] == VOCAB
    label = f"{corpus}, {_thread_label(threads)}"
    _record_times(record, "smallgpt", label, ours)
    _record_times(record, "HF tokenizers", label, hf)
    _record_speedup(record, "HF", label, ours, hf, target=">= 9x (gigabpe's)")


@pytest.mark.parametrize("corpus", SMALL)
def test_training_speed_on_small_corpora_vs_hf_tokenizers(record, corpus):
    ours = _measure("smallgpt", corpus, None)
    hf = _measure("hf-tokenizers", corpus, None)
    label = f"{corpus}, {_thread_label(None)}"
    _record_times(record, "smallgpt", label, ours)
    _record_times(record, "HF tokenizers", label, hf)
    _record_speedup(record, "HF", label, ours, hf)


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("corpus", BIG)
@pytest.mark.parametrize("peer", PEERS)
def test_training_speed_vs_other_trainers(record, peer, corpus, threads):
    if importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is not installed (pip install {peer})")
    if threads == 1 and peer != "gigabpe":
        pytest.skip(f"{peer} is timed with all threads only")
    ours = _measure("smallgpt", corpus, threads)
    theirs = _measure(peer, corpus, threads)
    label = f"{corpus}, {_thread_label(threads)}"
    _record_times(record, peer, label, theirs)
    _record_speedup(record, peer, label, ours, theirs, smallgpt_s=round(ours["seconds"], 3))


def test_streamed_training_peak_memory_on_the_57mb_corpus(record):
    ours = _measure("smallgpt", "gutenberg", None)
    record(
        "bpe-train",
        "smallgpt train_files peak RSS, gutenberg 57.6 MB",
        ours["peak_rss_mb"],
        "MB",
        target="<= 100 MB",
        seconds=ours["seconds"],
    )
