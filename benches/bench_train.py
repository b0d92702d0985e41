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
TOKENIZERS_PARALLELISM=false for HF). Each time is the fastest of 3 runs (a peer's: 1 run when
it takes over 10 s). Peak RSS is the whole child process's (target for smallgpt's streamed
training on the 57.6 MB corpus: <= 100 MB).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from benches.fresh import run_fresh
from benches.report import report
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

pytestmark = pytest.mark.benchmark(group="bpe-train")


def _path(name: str) -> str:
    path = corpus_path(name)
    if path is None or not path.is_file():
        pytest.skip(f"corpus {CORPORA[name]} not found")
    return str(path)


def _code(trainer: str, corpus: str, threads: int | None) -> tuple[str, dict[str, str]]:
    """The child's code for `trainer` on `corpus`, and the environment that sets its threads."""
    env = dict(os.environ)
    if threads == 1:
        env["RAYON_NUM_THREADS"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
    header = f"PATH = {_path(corpus)!r}\nVOCAB = {VOCAB}\nSPECIALS = {SPECIALS!r}\n"
    header += f"THREADS = {threads!r}\n"
    return header + _CODE[trainer] + _TIMED, env


def _fastest(runs: list[dict]) -> dict:
    """The fastest run's seconds and vocab_size, with the largest peak_rss_mb of all runs."""
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**fastest, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def _measure_ours(benchmark, corpus: str, threads: int | None) -> dict:
    """smallgpt's training, timed by `benchmark`: `REPEATS` fresh processes, the fastest counts."""
    code, env = _code("smallgpt", corpus, threads)
    runs: list[dict] = []
    benchmark.pedantic(lambda: runs.append(run_fresh(code, env=env)), rounds=REPEATS)
    return _fastest(runs)


def _measure_peer(trainer: str, corpus: str, threads: int | None) -> dict:
    """A peer's training in fresh processes: the fastest of `REPEATS` runs (one run when it takes
    over `LONG_S` seconds)."""
    code, env = _code(trainer, corpus, threads)
    runs = [run_fresh(code, env=env)]
    while len(runs) < REPEATS and runs[0]["seconds"] < LONG_S:
        runs.append(run_fresh(code, env=env))
    return _fastest(runs)


def _thread_label(threads: int | None) -> str:
    return "1 thread" if threads == 1 else f"all {os.cpu_count()} threads"


def _report(benchmark, ours: dict, peer: str | None, theirs: dict | None, **details) -> None:
    """Wall times, with each side's CPU time and peak RSS (CPU time is steadier on a busy machine)."""
    if theirs is not None:
        details.update(
            peer_cpu_s=theirs["cpu_seconds"],
            peer_peak_rss_mb=theirs["peak_rss_mb"],
            cpu_time_ratio=theirs["cpu_seconds"] / ours["cpu_seconds"],
        )
    report(
        benchmark,
        ours["seconds"],
        "s",
        {peer: theirs["seconds"]} if theirs is not None else None,
        cpu_s=ours["cpu_seconds"],
        peak_rss_mb=ours["peak_rss_mb"],
        **details,
    )


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("corpus", BIG)
def test_training_speed_vs_hf_tokenizers(benchmark, corpus, threads):
    ours = _measure_ours(benchmark, corpus, threads)
    hf = _measure_peer("hf-tokenizers", corpus, threads)
    assert ours["vocab_size"] == hf["vocab_size"] == VOCAB
    _report(
        benchmark,
        ours,
        "HF tokenizers",
        hf,
        target=">= 9 (gigabpe's)",
        corpus=corpus,
        threads=_thread_label(threads),
    )


@pytest.mark.parametrize("corpus", SMALL)
def test_training_speed_on_small_corpora_vs_hf_tokenizers(benchmark, corpus):
    ours = _measure_ours(benchmark, corpus, None)
    hf = _measure_peer("hf-tokenizers", corpus, None)
    _report(benchmark, ours, "HF tokenizers", hf, corpus=corpus, threads=_thread_label(None))


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("corpus", BIG)
@pytest.mark.parametrize("peer", PEERS)
def test_training_speed_vs_other_trainers(benchmark, peer, corpus, threads):
    if importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is not installed (pip install {peer})")
    if threads == 1 and peer != "gigabpe":
        pytest.skip(f"{peer} is timed with all threads only")
    ours = _measure_ours(benchmark, corpus, threads)
    theirs = _measure_peer(peer, corpus, threads)
    target = ">= 1.0" if peer == "gigabpe" else None
    _report(
        benchmark, ours, peer, theirs, target=target, corpus=corpus, threads=_thread_label(threads)
    )


def test_streamed_training_peak_memory_on_the_57mb_corpus(benchmark):
    ours = _measure_ours(benchmark, "gutenberg", None)
    _report(benchmark, ours, None, None, memory_target="peak_rss_mb <= 100", corpus="gutenberg")
