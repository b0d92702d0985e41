"""Hugging Face interop: exported folders load in transformers with identical logits, and back."""

from __future__ import annotations

import json

import pytest
import torch
from smallgpt.model.gpt import SmallGPT
from smallgpt.model.hf import export_hf, import_hf

transformers = pytest.importorskip("transformers")


def tiny(**overrides) -> SmallGPT:
    torch.manual_seed(0)
    options = {"embed_dim": 32, "num_heads": 4, "num_layers": 2, "max_seq_len": 64, "dropout": 0.0}
    options.update(overrides)
    return SmallGPT(100, **options).eval()


def perturb(model: SmallGPT) -> SmallGPT:
    """Random non-zero biases and norm parameters, so every weight's layout is exercised."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("bias", [True, False])
def test_exported_folder_loads_in_transformers_with_matching_logits(tmp_path, bias):
    model = perturb(tiny(bias=bias, pad_token_id=3))
    export_hf(model, None, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.config.vocab_size == 100 and hf.config.pad_token_id == 3
    ids = torch.randint(0, 100, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids))


def test_import_reads_back_an_exported_model(tmp_path):
    model = perturb(tiny(pad_token_id=5))
    export_hf(model, None, tmp_path)
    imported, tokenizer = import_hf(tmp_path)
    assert tokenizer is None
    assert imported.config == model.config
    ids = torch.randint(0, 100, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(imported.eval()(ids), model(ids))


def test_import_of_a_transformers_gpt2_reproduces_its_logits(tmp_path):
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        vocab_size=77,
        n_positions=32,
        n_embd=48,
        n_layer=3,
        n_head=6,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    model, _ = import_hf(tmp_path)
    assert model.get_vocab_size() == 77 and model.config.max_seq_len == 32
    ids = torch.randint(0, 77, (3, 32))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), hf(ids).logits)


def test_import_refuses_missing_files_and_unsupported_variants(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        import_hf(tmp_path)
    export_hf(tiny(), None, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function"):
        import_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(ValueError, match="shape"):
        import_hf(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        import_hf(tmp_path)


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    from smallgpt.tokenizer.bpe import Tokenizer

    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000]
    return Tokenizer.train([text], vocab_size=300)


def test_exported_tokenizer_loads_in_transformers_and_imports_back(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = SmallGPT(tokenizer.vocab_size, 32, 2, 2, 64, 0.0, pad_token_id=tokenizer.pad_token_id)
    export_hf(model, tokenizer, tmp_path)
    text = "ROMEO: Wherefore art thou? <|endoftext|> ünïcode 🙂"
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    # HF matches special-token strings in text, as ours does when they are allowed
    assert hf_tokenizer.encode(text) == tokenizer.encode(text, allowed_special="all")
    assert hf_tokenizer.eos_token_id == tokenizer.eos_token_id
    assert hf_tokenizer.pad_token_id == tokenizer.pad_token_id
    _, imported = import_hf(tmp_path)
    assert imported.encode(text) == tokenizer.encode(text)


def test_greedy_generation_matches_transformers_generate(tmp_path, tokenizer):
    from smallgpt.generate.decoding import generate

    torch.manual_seed(0)
    model = perturb(SmallGPT(tokenizer.vocab_size, 32, 4, 2, 64, 0.0)).double().eval()
    export_hf(model, tokenizer, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float64).eval()
    prompt = tokenizer.encode("First Citizen:")
    ours = generate(model, [prompt], 30, temperature=0)[0]
    theirs = hf.generate(
        torch.tensor([prompt]),
        max_new_tokens=30,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert ours == theirs[0, len(prompt) :].tolist()
