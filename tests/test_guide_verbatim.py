"""The user's guide's own code, typed as the guide types it, runs against the package.

The guide's ```python blocks (shared/guide/) run in order, verbatim, in one namespace: only the
sizes, step counts and the example texts are substituted (SUBSTITUTIONS, each required to occur
in the guide exactly once). A block that defines one of the guide's functions (`def
forward_pass(...)`) is kept aside as the guide's reference version and the namespace keeps
smallgpt's function of that name, so the guide's own bodies (`logits, labels =
forward_pass(model, batch)`, `loss = compute_loss(logits, labels)`, ...) call smallgpt. The test
then drives the pipeline with the guide's calls and checks what the guide implies, comparing
smallgpt with the guide's reference code where that code is right and with a direct computation
where smallgpt fixes it (padding, top-p's input).
"""

from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

import pytest
import smallgpt
import torch
import torch.nn.functional as F
import yaml
from smallgpt.checkpoint.load import load_model
from smallgpt.config.loader import config_from_dict
from smallgpt.generate.decoding import generate
from torch.utils.data import DataLoader, Subset

from tests.corpora import shared_data_dir
from tests.eval_helpers import one_torch_thread  # noqa: F401 (a fixture)

GUIDE_NAME = "000_8243e1ea8ece352b.txt"
_REPO = Path(__file__).resolve().parent.parent
TRAIN_STEPS = 60
WARMUP_STEPS = 5
VOCAB = 400
SEQ_LEN = 64

# (text in the guide, what runs instead): sizes, step counts and the example texts only.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (
        (
            'texts = [\n    "Once upon a time, in a small village...",\n'
            '    "The human brain is one of the most complex...",\n'
            '    "Artificial intelligence is transforming..."\n]'
        ),
        "texts = TRAIN_TEXTS  # Tiny Shakespeare, one text per speech",
    ),
    ("SimpleTokenizer(vocab_size=10000)", f"SimpleTokenizer(vocab_size={VOCAB})"),
    ("max_seq_len=1024,  # Context window size", f"max_seq_len={SEQ_LEN},"),
    ("stride=512         # Overlapping window stride", f"stride={SEQ_LEN // 2}"),
    ("vocab_size: 10000", f"vocab_size: {VOCAB}"),
    ("embed_dim: 512", "embed_dim: 64"),
    ("num_heads: 8", "num_heads: 4"),
    ("num_layers: 6", "num_layers: 2"),
    ("max_seq_len: 1024", f"max_seq_len: {SEQ_LEN}"),
    ("num_warmup_steps=2000,", f"num_warmup_steps={WARMUP_STEPS},"),
    ("num_training_steps=100000", f"num_training_steps={TRAIN_STEPS}"),
]


def guide_path() -> Path | None:
    data = shared_data_dir()
    candidates = [_REPO.parent / "shared" / "guide", _REPO / "shared" / "guide"]
    if data is not None:
        candidates.insert(0, data.parent / "guide")
    for folder in candidates:
        if (folder / GUIDE_NAME).is_file():
            return folder / GUIDE_NAME
    return None


def substituted_guide() -> str:
    path = guide_path()
    if path is None:
        pytest.skip(f"the user's guide (shared/guide/{GUIDE_NAME}) is not present")
    text = path.read_text(encoding="utf-8")
    for old, new in SUBSTITUTIONS:
        assert text.count(old) == 1, f"substitution target not found once in the guide: {old!r}"
        text = text.replace(old, new)
    return text


def guide_formula_lr(t: int, lr_max: float) -> float:
    """The guide's formula, as printed under 3.2."""
    w, total = WARMUP_STEPS, TRAIN_STEPS
    return lr_max * min(t / w, 0.5 * (1 + math.cos(math.pi * (t - w) / (total - w))))


def real_token_loss(model, loader) -> float:
    """Mean cross-entropy over the real (attention_mask 1) next tokens, computed directly."""
    nats, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["input_ids"])[:, :-1]
            targets = batch["input_ids"][:, 1:]
            real = batch["attention_mask"][:, 1:] == 1
            nats += F.cross_entropy(logits[real].double(), targets[real], reduction="sum").item()
            count += int(real.sum())
    return nats / count


class Recorder:
    """Stands in for wandb (a module with `run` and `log`) and for a TensorBoard writer."""

    def __init__(self) -> None:
        self.run = object()
        self.logged: list[dict] = []
        self.scalars: list[tuple[str, float, int]] = []

    def log(self, metrics: dict) -> None:
        self.logged.append(dict(metrics))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


def run_guide(tmp_path: Path) -> tuple[dict, dict]:
    """Run the guide's python blocks; returns (namespace, the guide's own functions)."""
    text = substituted_guide()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    config_block = re.search(r"```yaml\n(.*?)```", text, re.DOTALL).group(1)
    corpus = (Path(smallgpt.__file__).parent / "assets" / "tinyshakespeare.txt").read_text()
    namespace: dict = {
        # what a reader of the guide has imported and set up before its first block
        "math": math,
        "torch": torch,
        "F": F,
        "config": config_from_dict(yaml.safe_load(config_block)),
        "wandb_available": False,
        "TRAIN_TEXTS": corpus[:100_000].split("\n\n"),
        "VAL_TEXTS": corpus[100_000:110_000].split("\n\n"),  # held out, for the test's calls
    }
    for name in ("SimpleTokenizer", "TextDataset", "SmallGPT", "get_cosine_schedule_with_warmup"):
        namespace[name] = getattr(smallgpt, name)
    guide: dict = {}
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    for index, block in enumerate(blocks):
        defined = re.findall(r"^def (\w+)\(", block, re.MULTILINE)
        if "nltk" in block and "nltk" not in sys.modules:
            try:
                import nltk  # noqa: F401
            except ImportError:  # the guide's BLEU reference needs nltk; smallgpt's does not
                namespace.update({name: getattr(smallgpt, name) for name in defined})
                continue
        exec(compile(block, f"guide block {index}", "exec"), namespace)  # noqa: S102
        for name in defined:
            guide[name] = namespace[name]
            namespace[name] = getattr(smallgpt, name)  # the guide's calls reach smallgpt
    return namespace, guide


def test_the_guides_code_runs_verbatim_against_smallgpt(
    tmp_path,
    monkeypatch,
    capsys,
    one_torch_thread,  # noqa: F811
):
    monkeypatch.chdir(tmp_path)
    ns, guide = run_guide(tmp_path)
    expected_defs = {"forward_pass", "compute_loss", "training_step", "log_training_metrics"}
    expected_defs |= {"validate_model", "save_checkpoint", "generate_text", "compute_perplexity"}
    expected_defs |= {"top_k_sampling", "top_p_sampling"}
    assert expected_defs <= set(guide)
    tokenizer, dataset, model = ns["tokenizer"], ns["dataset"], ns["model"]
    optimizer, scheduler = ns["optimizer"], ns["scheduler"]

    # Step 1: the tokenizer trained, saved (as JSON, whatever the suffix) and reloads
    assert tokenizer.get_vocab_size() == VOCAB
    saved = Path("models/tokenizer.pkl").read_bytes()
    assert saved.startswith(b"{")  # JSON, not a pickle
    reloaded = smallgpt.SimpleTokenizer.load("models/tokenizer.pkl")
    speech = ns["texts"][3]
    assert reloaded.encode(speech) == tokenizer.encode(speech)
    assert tokenizer.decode(tokenizer.encode(speech, add_special_tokens=True)).endswith(speech)

    # Step 2: the model the guide built from config; the optimizer and schedule
    assert model.get_vocab_size() == VOCAB and model.config.embed_dim == 64
    assert optimizer.param_groups[0]["initial_lr"] == 5e-4 and scheduler.get_last_lr() == [0.0]

    # Step 4.1/4.2: the shifted pair, against the guide's own forward_pass and compute_loss
    assert dataset[len(dataset) - 1]["attention_mask"].min() == 0  # the last window is padded
    batch = next(iter(DataLoader(Subset(dataset, [len(dataset) - 1, 0, 1]), batch_size=3)))
    model.eval()
    with torch.no_grad():
        logits, labels = ns["forward_pass"](model, batch)
        guide_logits, guide_labels = guide["forward_pass"](model, batch)
        assert logits.shape == (3, SEQ_LEN - 1, VOCAB) and labels.shape == (3, SEQ_LEN - 1)
        torch.testing.assert_close(logits, guide_logits)
        padded = batch["attention_mask"][:, 1:] == 0
        assert torch.equal(labels[~padded], guide_labels[~padded])
        assert (labels[padded] == -100).all() and padded.any()
        loss = ns["compute_loss"](logits, labels)
        # the guide's compute_loss ignores its global tokenizer's pad id in the same positions
        torch.testing.assert_close(loss, guide["compute_loss"](guide_logits, guide_labels))
    model.train()

    # Step 4.3: the guide's training_step body runs with smallgpt's forward_pass/compute_loss
    shadow = copy.deepcopy(model)
    shadow_opt = torch.optim.AdamW(shadow.parameters(), lr=5e-4)
    before = shadow.transformer.wte.weight.detach().clone()
    guide_loss = guide["training_step"](
        shadow,
        batch,
        shadow_opt,
        ns["get_cosine_schedule_with_warmup"](
            shadow_opt, num_warmup_steps=0, num_training_steps=10
        ),
    )
    assert isinstance(guide_loss, float) and math.isfinite(guide_loss)
    assert not torch.equal(before, shadow.transformer.wte.weight)

    # smallgpt's training_step, called as the guide calls it, learns on Tiny Shakespeare
    loader = DataLoader(
        dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    losses, lrs = [], []
    while len(losses) < TRAIN_STEPS:
        for batch in loader:
            loss = ns["training_step"](model, batch, optimizer, scheduler)
            assert isinstance(loss, float)
            losses.append(loss)
            lrs.append(scheduler.get_last_lr()[0])
            if len(losses) == TRAIN_STEPS:
                break
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    # Step 3.2: the learning rate follows the guide's formula step by step, ending at 0
    for t, lr in enumerate(lrs, start=1):
        assert lr == pytest.approx(guide_formula_lr(t, 5e-4), rel=1e-12, abs=1e-18), t
    assert lrs[-1] == 0.0

    # Step 5.1: the guide's record, compared with what the guide's own function builds
    fake_wandb = Recorder()
    ns["wandb_available"], ns["wandb"] = True, fake_wandb
    guide["log_training_metrics"](TRAIN_STEPS, losses[-1], lrs[-1], 12.5)
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)  # an active run
    writer = Recorder()
    record = ns["log_training_metrics"](TRAIN_STEPS, losses[-1], lrs[-1], 12.5, writer=writer)
    assert record == fake_wandb.logged[0] == fake_wandb.logged[1]
    assert {tag for tag, _, _ in writer.scalars} == set(record) - {"train/step"}
    assert "step 60 | loss" in capsys.readouterr().out
    fake_wandb.run = None  # no active run: nothing more goes to wandb
    ns["log_training_metrics"](TRAIN_STEPS, losses[-1], lrs[-1], 13.0, quiet=True)
    assert len(fake_wandb.logged) == 2

    # Step 5.2 and 7.1: two numbers; padding neither scored nor counted
    val_dataset = ns["TextDataset"](
        texts=ns["VAL_TEXTS"], tokenizer=tokenizer, max_seq_len=SEQ_LEN, stride=SEQ_LEN
    )
    val_dataloader = DataLoader(val_dataset, batch_size=8)
    avg_loss, perplexity = ns["validate_model"](model, val_dataloader)
    assert isinstance(avg_loss, float) and isinstance(perplexity, float)
    assert perplexity == pytest.approx(math.exp(avg_loss), rel=1e-9)
    assert avg_loss < math.log(VOCAB)
    assert avg_loss == pytest.approx(real_token_loss(model.eval(), val_dataloader), rel=1e-5)
    assert ns["compute_perplexity"](model, val_dataloader) == pytest.approx(perplexity, rel=1e-9)
    full = DataLoader(Subset(val_dataset, range(len(val_dataset) - 1)), batch_size=8)
    guide_avg, _ = guide["validate_model"](model, full)  # no padding: the guide is right
    assert ns["validate_model"](model, full)[0] == pytest.approx(guide_avg, rel=1e-5)
    assert ns["compute_perplexity"](model, full) == pytest.approx(
        guide["compute_perplexity"](model, full), rel=1e-5
    )

    # Step 5.3: the guide's call and naming; safetensors, nothing pickled; same logits back
    path = ns["save_checkpoint"](model, optimizer, scheduler, TRAIN_STEPS, losses[-1])
    assert path == Path(f"models/checkpoint_step_{TRAIN_STEPS}") and path.is_dir()
    assert any(p.suffix == ".safetensors" for p in path.iterdir())
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in path.iterdir())
    restored = load_model(path)
    ids = torch.tensor([tokenizer.encode("ROMEO: But, soft!")])
    with torch.no_grad():
        torch.testing.assert_close(restored(ids), model.eval()(ids), rtol=0, atol=0)

    # Step 6.1: generation as the guide calls it, stopping at <|endoftext|>
    prompt = "ROMEO:"
    text = ns["generate_text"](model, tokenizer, prompt, max_length=100, temperature=0.8)
    assert isinstance(text, str) and text.startswith(prompt)
    eos = tokenizer.eos_token_id
    stopped = None
    for seed in range(20):
        ids = generate(
            model, [tokenizer.encode(prompt)], 100, temperature=0.8, seed=seed, eos_token_id=eos
        )[0]
        sampled = ns["generate_text"](
            model, tokenizer, prompt, max_length=100, temperature=0.8, seed=seed
        )
        assert sampled == prompt + tokenizer.decode(ids) and eos not in ids
        if len(ids) < 100:
            stopped = (seed, ids)
            break
    assert stopped is not None, "no sample reached <|endoftext|> in 20 seeds"
    seed, ids = stopped
    unstopped = generate(
        model,
        [tokenizer.encode(prompt)],
        len(ids) + 1,
        temperature=0.8,
        seed=seed,
        eos_token_id=None,
    )[0]
    assert unstopped == ids + [eos]  # the same draws, and the next one was <|endoftext|>

    # Step 6.2: the guide's samplers on one row of next-token logits, input left untouched
    with torch.no_grad():
        next_token_logits = model(torch.tensor([tokenizer.encode(prompt)]))[0, -1, :]
    kept = next_token_logits.clone()
    top_k_id = ns["top_k_sampling"](next_token_logits, k=50)
    assert top_k_id.shape == (1,) == guide["top_k_sampling"](next_token_logits, k=50).shape
    assert top_k_id.item() in set(torch.topk(next_token_logits, 50).indices.tolist())
    top_p_id = ns["top_p_sampling"](next_token_logits, p=0.9)
    assert torch.equal(next_token_logits, kept)  # the guide's version writes -inf into it
    mutated = next_token_logits.clone()
    assert guide["top_p_sampling"](mutated, p=0.9).shape == top_p_id.shape == (1,)
    nucleus = set(torch.isfinite(mutated).nonzero().flatten().tolist())
    generator = torch.Generator().manual_seed(0)
    draws = ns["top_p_sampling"](kept.repeat(300, 1), p=0.9, generator=generator)
    assert set(draws.flatten().tolist()) <= nucleus

    # Step 7.2: BLEU on the guide's 0-1 scale
    reference = ns["VAL_TEXTS"][1]
    score = ns["compute_bleu_score"](reference, text[len(prompt) :])
    assert 0.0 <= score <= 1.0
    assert ns["compute_bleu_score"](reference, reference) == pytest.approx(1.0)
    if "compute_bleu_score" in guide:  # nltk installed: the guide's own number where no
        ref = "the cat sat on the mat with a hat"  # smoothing or tokenization applies
        cand = "the cat sat on the mat with the hat"
        assert ns["compute_bleu_score"](ref, cand) == pytest.approx(
            guide["compute_bleu_score"](ref, cand), rel=1e-9
        )
