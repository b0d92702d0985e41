"""Tokenizer encoding speed and memory against tiktoken, fastokens and tokie.

Every measurement runs in a fresh interpreter (`run_fresh`), so the first call pays for
everything a first call pays for, and no tool sees text it has already encoded. The tokenizer
(32000 ids, GPT-2 pattern) is trained on the first 10 MB of the Gutenberg corpus; speed is
measured on 10 MB that follow them. The peers load the same vocabulary through our exports
(tiktoken rank file, Hugging Face tokenizer.json), and their ids are checked against ours.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from benches.fresh import run_fresh
from benches.report import report
from tests.corpora import corpus_path

VOCAB_SIZE = 32000
TEXT_OFFSET = 10_000_000  # the tokenizer is trained on the bytes before this
TEXT_BYTES = 10_000_000
SINGLE_THREAD = {**os.environ, "RAYON_NUM_THREADS": "1"}

pytestmark = pytest.mark.benchmark(group="encode")

# Per tool: code that defines `encode(text) -> list of ids` from the files in `paths`.
LOADERS = {
    "smallgpt": """
from smallgpt.tokenizer import Tokenizer
encode = Tokenizer.load(paths["json"]).encode
""",
    "smallgpt encode_to_numpy": """
from smallgpt.tokenizer import Tokenizer
encode = Tokenizer.load(paths["json"]).encode_to_numpy
""",
    "tiktoken": """
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from smallgpt.tokenizer import Tokenizer
pattern = Tokenizer.load(paths["json"]).pattern
ranks = load_tiktoken_bpe(paths["tiktoken"])
enc = tiktoken.Encoding("bench", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
encode = enc.encode_ordinary
""",
    "fastokens": """
import fastokens
from smallgpt.tokenizer import Tokenizer
pattern = Tokenizer.load(paths["json"]).pattern
tok = fastokens.Tokenizer.from_tiktoken(paths["tiktoken"], pattern=pattern, special_tokens={})
encode = lambda text: tok.encode_ordinary(text).ids
""",
    "tokie": """
import tokie
tok = tokie.Tokenizer.from_json(paths["hf"])
encode = lambda text: tok.encode(text).ids
""",
}
PEERS = ("tiktoken", "fastokens", "tokie")

FIRST_CALL = """
import time
import numpy as np
paths = {paths!r}
{loader}
with open(paths["text"], encoding="utf-8") as f:
    text = f.read()
start = time.perf_counter()
ids = encode(text)
seconds = time.perf_counter() - start
RESULT["mb_per_s"] = len(text.encode("utf-8")) / 1e6 / seconds
np.save(paths["out"], np.asarray(ids, dtype=np.uint32))
"""


@pytest.fixture(scope="session")
def files(tmp_path_factory, shared_data) -> dict[str, str]:
    """The trained tokenizer in our, tiktoken's and HF's formats, and the unseen text."""
    from smallgpt.tokenizer.bpe import Tokenizer

    out = tmp_path_factory.mktemp("bench_encode")
    tokenizer = Tokenizer.train_files([corpus_path("gutenberg_10mb")], vocab_size=VOCAB_SIZE)
    paths = {
        "json": str(out / "tok.json"),
        "tiktoken": str(out / "tok.tiktoken"),
        "hf": str(out / "tokenizer.json"),
        "text": str(out / "unseen.txt"),
    }
    tokenizer.save(paths["json"])
    tokenizer.export_tiktoken(paths["tiktoken"])
    tokenizer.export_hf(paths["hf"])
    with open(corpus_path("gutenberg"), "rb") as f:
        f.seek(TEXT_OFFSET)
        text = f.read(TEXT_BYTES).decode("utf-8", errors="ignore")
    Path(paths["text"]).write_text(text, encoding="utf-8")
    return paths


def _first_call(
    tool: str, files: dict[str, str], out: Path, env: dict[str, str] | None
) -> tuple[float, np.ndarray]:
    paths = {**files, "out": str(out)}
    code = FIRST_CALL.format(paths=paths, loader=LOADERS[tool])
    result = run_fresh(code, env=env)
    return result["mb_per_s"], np.load(out)


@pytest.mark.parametrize(
    "threads, env", [("1 thread", SINGLE_THREAD), ("all threads", None)], ids=["1", "all"]
)
def test_first_call_encode_throughput(benchmark, files, tmp_path, threads, env):
    # `encode` is single-threaded in smallgpt and tiktoken; fastokens and tokie may use
    # several threads for one text unless RAYON_NUM_THREADS=1.
    ours, our_ids = benchmark.pedantic(
        _first_call, args=("smallgpt", files, tmp_path / "smallgpt.npy", env), rounds=1
    )
    details: dict[str, object] = {"threads": threads}
    if env is None:
        # The parallel entry point, for comparison with peers that use every core.
        speed, ids = _first_call("smallgpt encode_to_numpy", files, tmp_path / "numpy.npy", env)
        assert np.array_equal(ids, our_ids)
        details["encode_to_numpy_mb_per_s"] = speed
    peers, missing = {}, []
    for tool in PEERS:
        if importlib.util.find_spec(tool) is None:
            missing.append(f"{tool} (pip install {tool})")
            continue
        peers[tool], ids = _first_call(tool, files, tmp_path / f"{tool}.npy", env)
        assert np.array_equal(ids, our_ids), f"{tool} gives other ids than smallgpt"
    report(
        benchmark,
        ours,
        "MB/s",
        peers,
        target=">= 1.0 vs fastokens",
        not_installed=missing,
        **details,
    )


BATCH = """
import gc
import time
from smallgpt.tokenizer import Tokenizer
tok = Tokenizer.load({json!r})
with open({text!r}, encoding="utf-8") as f:
    text = f.read()
docs = text.split("\\n\\n")
def batch_then_collect(threads):
    ids = tok.encode_batch(docs, num_threads=threads)
    gc.collect(0)  # what the interpreter's next young-generation collection costs
    return ids
calls = {{
    "batch": lambda threads: tok.encode_batch(docs, num_threads=threads),
    "batch_collected": batch_then_collect,
    "numpy": lambda threads: tok.encode_to_numpy(text, num_threads=threads),
}}
for name, call in calls.items():
    call(2)  # warm up
    best = {{1: float("inf"), 2: float("inf")}}
    for _ in range(5):  # alternated, so a slow spell of the machine hits both alike
        for threads in (1, 2):
            start = time.perf_counter()
            out = call(threads)
            best[threads] = min(best[threads], time.perf_counter() - start)
            del out  # freeing the result is not part of encoding
    for threads, seconds in best.items():
        RESULT[f"{{name}}_{{threads}}"] = seconds
"""


def test_encoding_scales_with_threads(benchmark, files):
    # encode_batch returns Python lists, which only the calling thread can build (it does so
    # while the other threads encode). Python's collector later traverses those lists once,
    # serially: the second speed-up includes that pass. encode_to_numpy shows the scaling of the
    # Rust encoder alone.
    code = BATCH.format(json=files["json"], text=files["text"])
    result = benchmark.pedantic(run_fresh, args=(code,), rounds=1)
    speedups = {
        f"{name}_speedup": result[f"{name}_1"] / result[f"{name}_2"]
        for name in ("batch_collected", "numpy")
    }
    report(
        benchmark,
        result["batch_2"],
        "s",
        {"encode_batch, 1 thread": result["batch_1"]},
        target=">= 1.7",
        threads=2,
        **speedups,
    )


# Peak RSS is read from /proc (VmHWM): unlike ru_maxrss it is not inherited from the parent
# process across exec, so it is the child's own.
FILE = """
import time
def peak_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
paths = {paths!r}
{setup}
before = peak_rss_mb()
start = time.perf_counter()
ids = {call}
RESULT["seconds"] = time.perf_counter() - start
RESULT["rss_growth_mb"] = peak_rss_mb() - before
RESULT["output_mb"] = ids.nbytes / 1e6
"""

FILE_TOOLS = {  # tool: (setup, call)
    "smallgpt encode_file_to_numpy": (
        "from smallgpt.tokenizer import Tokenizer\ntok = Tokenizer.load(paths['json'])",
        "tok.encode_file_to_numpy(paths['big'])",
    ),
    "tiktoken read + encode_to_numpy": (
        LOADERS["tiktoken"],
        "enc.encode_to_numpy(open(paths['big'], encoding='utf-8').read())",
    ),
}


def _encode_file(tool: str, files: dict[str, str]) -> dict:
    setup, call = FILE_TOOLS[tool]
    paths = {**files, "big": str(corpus_path("gutenberg"))}
    return run_fresh(FILE.format(paths=paths, setup=setup, call=call))


def test_encode_file_to_numpy_speed_and_memory(benchmark, files):
    size_mb = corpus_path("gutenberg").stat().st_size / 1e6
    ours = benchmark.pedantic(_encode_file, args=("smallgpt encode_file_to_numpy", files), rounds=1)
    peers, details = {}, {}
    if importlib.util.find_spec("tiktoken") is not None:
        peer = "tiktoken read + encode_to_numpy"
        theirs = _encode_file(peer, files)
        peers[peer] = size_mb / theirs["seconds"]
        details["peer_rss_growth_mb"] = theirs["rss_growth_mb"]
    report(
        benchmark,
        size_mb / ours["seconds"],
        "MB/s",
        peers,
        file_mb=size_mb,
        rss_growth_mb=ours["rss_growth_mb"],
        output_mb=ours["output_mb"],
        memory_target="rss_growth_mb <= output_mb + 100",
        **details,
    )
