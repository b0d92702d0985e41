"""The user's guide end to end: the code blocks of docs/guide.md run in order, as a user following
the guide would (with smaller sizes), and each step's result is checked independently."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest
import smallgpt
import torch

from tests.eval_helpers import one_torch_thread  # noqa: F401 (a fixture)

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"

# Replaces the guide's "Sizes" block: small enough for a few seconds on one CPU thread.
TINY_SIZES = """
VOCAB_SIZE = 400
EMBED_DIM = 64
NUM_HEADS = 4
NUM_LAYERS = 2
MAX_SEQ_LEN = 32
STRIDE = 16
DROPOUT = 0.0
BATCH_SIZE = 8
TRAIN_STEPS = 40
WARMUP_STEPS = 4
LOG_EVERY = 10
TRAIN_CHARS = 30_000
"""

# name -> (parameter names and defaults the user's guide gives it; None: no default)
GUIDE_SIGNATURES: dict[str, list[tuple[str, object]]] = {
    "SimpleTokenizer": [("vocab_size", 10000)],
    "TextDataset": [("texts", None), ("tokenizer", None), ("max_seq_len", 1024), ("stride", 512)],
    "SmallGPT": [
        ("vocab_size", 10000),
        ("embed_dim", 512),
        ("num_heads", 8),
        ("num_layers", 6),
        ("max_seq_len", 1024),
        ("dropout", 0.1),
    ],
    "get_cosine_schedule_with_warmup": [
        ("optimizer", None),
        ("num_warmup_steps", None),
        ("num_training_steps", None),
    ],
    "forward_pass": [("model", None), ("batch", None)],
    "compute_loss": [("logits", None), ("labels", None)],
    "training_step": [
        ("model", None),
        ("batch", None),
        ("optimizer", None),
        ("scheduler", None),
        ("max_grad_norm", 1.0),
    ],
    "log_training_metrics": [
        ("step", None),
        ("loss", None),
        ("learning_rate", None),
        ("elapsed_time", None),
    ],
    "validate_model": [("model", None), ("val_dataloader", None)],
    "save_checkpoint": [
        ("model", None),
        ("optimizer", None),
        ("scheduler", None),
        ("step", None),
        ("loss", None),
    ],
    "generate_text": [
        ("model", None),
        ("tokenizer", None),
        ("prompt", None),
        ("max_length", 100),
        ("temperature", 0.8),
    ],
    "top_k_sampling": [("logits", None), ("k", 50)],
    "top_p_sampling": [("logits", None), ("p", 0.9)],
    "compute_perplexity": [("model", None), ("dataloader", None)],
    "compute_bleu_score": [("reference", None), ("candidate", None)],
}


@pytest.mark.parametrize("name", list(GUIDE_SIGNATURES))
def test_every_guide_name_is_importable_with_the_guides_signature(name):
    params = list(inspect.signature(getattr(smallgpt, name)).parameters.values())
    if inspect.isclass(getattr(smallgpt, name)):
        params = list(inspect.signature(getattr(smallgpt, name).__init__).parameters.values())[1:]
    for (expected, default), param in zip(GUIDE_SIGNATURES[name], params, strict=False):
        assert param.name == expected, (name, [p.name for p in params])
        if default is not None:
            assert param.default == default, (name, expected)
    assert len(params) >= len(GUIDE_SIGNATURES[name])


def test_the_guides_default_model_has_about_25m_parameters():
    model = smallgpt.SmallGPT()
    E, L, V = 512, 1024, 10000
    padded_vocab = math.ceil(V / 64) * 64  # embedding rows are padded to a multiple of 64
    per_block = 12 * E * E + 13 * E  # attention 4E^2+4E, MLP 8E^2+5E, two LayerNorms 4E
    expected = padded_vocab * E + L * E + 6 * per_block + 2 * E  # lm_head tied to wte
    assert model.num_parameters() == expected
    assert 24e6 < expected < 26e6


def guide_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)


def check_tokenizer(ns):
    tokenizer = ns["tokenizer"]
    assert tokenizer.get_vocab_size() == ns["VOCAB_SIZE"]
    assert Path("tokenizer.json").is_file()
    assert tokenizer.decode(tokenizer.encode(ns["val_text"])) == ns["val_text"]


def check_data(ns):
    tokenizer, dataset = ns["tokenizer"], ns["train_dataset"]
    stream: list[int] = []
    for index, text in enumerate(ns["train_texts"]):
        stream += ([tokenizer.eos_token_id] if index else []) + tokenizer.encode(text)
    length, stride = ns["MAX_SEQ_LEN"], ns["STRIDE"]
    assert len(dataset) == 1 + math.ceil((len(stream) - length) / stride)
    assert dataset[3]["input_ids"].tolist() == stream[3 * stride : 3 * stride + length]
    last = dataset[len(dataset) - 1]
    real = len(stream) - (len(dataset) - 1) * stride
    assert last["attention_mask"].tolist() == [1] * real + [0] * (length - real)


def check_model(ns):
    model = ns["model"]
    assert model.get_vocab_size() == ns["tokenizer"].get_vocab_size()
    assert model.config.max_seq_len == ns["MAX_SEQ_LEN"]


def check_optimizer(ns):
    group = ns["optimizer"].param_groups[0]
    assert (group["betas"], group["weight_decay"]) == ((0.9, 0.999), 0.1)
    assert group["initial_lr"] == 5e-4 and ns["scheduler"].get_last_lr() == [0.0]  # warmup
    assert ns["scheduler"].lr_lambdas[0](ns["WARMUP_STEPS"] // 2) == pytest.approx(0.5)


def check_training(ns, capsys):
    losses = ns["losses"]
    assert len(losses) == ns["TRAIN_STEPS"] and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.25  # it learns (measured: 0.5 nats)
    assert losses[0] == pytest.approx(ns["first_loss"].item(), abs=0.3)  # both near ln(vocab)
    printed = capsys.readouterr().out
    assert f"step {ns['TRAIN_STEPS']} | loss {losses[-1]:.4f}" in printed
    assert any(Path("runs/guide").glob("events.out.tfevents.*"))
    assert ns["scheduler"].get_last_lr() == [0.0]  # the guide's cosine ends at 0


def check_validation(ns):
    assert isinstance(ns["val_loss"], float) and math.isfinite(ns["val_loss"])
    assert ns["perplexity"] == pytest.approx(math.exp(ns["val_loss"]), rel=1e-9)
    assert ns["val_loss"] < math.log(ns["VOCAB_SIZE"])  # better than uniform


def check_checkpoint(ns):
    from smallgpt.checkpoint.store import verify_checkpoint

    assert ns["checkpoint"] == Path(f"models/checkpoint_step_{ns['TRAIN_STEPS']}")
    verify_checkpoint(ns["checkpoint"])
    ids = torch.tensor([ns["tokenizer"].encode("To be, or not to be")])
    model = ns["model"].eval()
    with torch.no_grad():
        assert torch.equal(ns["restored"](ids), model(ids))
    assert ns["state"]["step"] == ns["TRAIN_STEPS"] and ns["state"]["loss"] == ns["losses"][-1]


def check_generation(ns):
    sample = ns["sample"]
    assert isinstance(sample, str) and sample.startswith("ROMEO:") and len(sample) > 6
    logits = ns["next_token_logits"]
    assert logits.dim() == 1
    allowed = set(logits.topk(50).indices.tolist())
    generator = torch.Generator().manual_seed(0)
    draws = ns["top_k_sampling"](logits.repeat(200, 1), k=50, generator=generator)
    assert ns["top_k_sampling"](logits, k=50).shape == (1,)
    assert set(draws.squeeze(-1).tolist()) <= allowed


def check_bleu(ns):
    score = ns["compute_bleu_score"](ns["reference"], ns["continuation"])
    assert 0.0 <= score <= 1.0
    assert ns["compute_bleu_score"](ns["reference"], ns["reference"]) == pytest.approx(1.0)


CHECKS = [
    None,  # the sizes
    check_tokenizer,
    check_data,
    check_model,
    check_optimizer,
    check_training,
    check_validation,
    check_checkpoint,
    check_generation,
    check_bleu,
]


def test_the_guide_runs_step_by_step_and_each_step_gives_the_expected_result(
    tmp_path,
    monkeypatch,
    capsys,
    one_torch_thread,  # noqa: F811
):
    blocks = guide_blocks()
    assert len(blocks) == len(CHECKS), "docs/guide.md and this test list different steps"
    assert blocks[0].startswith("# Sizes")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(TINY_SIZES, "sizes", "exec"), namespace)  # noqa: S102 (running the docs is the test)
    for index, (block, check) in enumerate(zip(blocks[1:], CHECKS[1:], strict=True), start=1):
        exec(compile(block, f"docs/guide.md block {index}", "exec"), namespace)  # noqa: S102
        if check is check_training:
            check(namespace, capsys)
        else:
            check(namespace)
