"""Reduced-precision inference: int8 weight-only and bf16 models against the fp32 model they came
from (a briefly trained one), the int8 product against a float64 reference, and the dtype rules."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from smallgpt.generate.decoding import generate
from smallgpt.model.gpt import SmallGPT
from smallgpt.model.precision import (
    Int8Linear,
    resolve_inference_dtype,
    to_inference_dtype,
)

from tests.eval_helpers import (  # noqa: F401 (one_torch_thread is a fixture)
    one_torch_thread,
    shakespeare,
    tiny_tokenizer,
)
from tests.train_helpers import single_thread

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEQ = 64


def windows(ids: list[int], count: int, seed: int) -> torch.Tensor:
    """`count` random windows of SEQ ids."""
    starts = torch.randint(
        0, len(ids) - SEQ, (count,), generator=torch.Generator().manual_seed(seed)
    )
    return torch.tensor([ids[s : s + SEQ] for s in starts.tolist()])


@pytest.fixture(scope="module")
def trained():
    """(fp32 model trained 150 steps on Tiny Shakespeare, held-out ids)."""
    with torch.random.fork_rng(), single_thread():  # module fixtures run before one_torch_thread
        tokenizer = tiny_tokenizer()
        train_ids = tokenizer.encode(shakespeare(60_000))
        held_out = tokenizer.encode(shakespeare(8_000, start=100_000))
        torch.manual_seed(0)
        model = SmallGPT(tokenizer.vocab_size, 64, 4, 2, SEQ, 0.0)
        optimizer = model.configure_optimizers(weight_decay=0.0, lr=3e-3)
        for step in range(150):
            batch = windows(train_ids, 16, step)
            _, loss = model(batch, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return model.eval(), held_out


def converted(model: SmallGPT, dtype: str) -> SmallGPT:
    return to_inference_dtype(copy.deepcopy(model), dtype)


def test_int8_linear_equals_a_float64_product_of_its_dequantized_weight():
    torch.manual_seed(0)
    weight, bias, x = torch.randn(48, 96), torch.randn(48), torch.randn(2, 5, 96)
    layer = Int8Linear(weight, bias)
    assert layer.weight.dtype == torch.int8
    # each weight is within half a quantization step (plus its bf16 scale's rounding) of itself
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((layer.dequantized() - weight).abs() <= step * 0.51 + weight.abs() * 2**-8).all()
    bf16_x = x.to(torch.bfloat16).double()
    reference = F.linear(bf16_x, layer.dequantized().double(), bias.double())
    y = layer(x)
    assert y.shape == (2, 5, 48) and y.dtype == torch.float32
    # the kernel accumulates in fp32 and rounds its product to bf16 (half a unit: 2**-9 of it)
    bound = F.linear(bf16_x.abs(), layer.dequantized().double().abs()) * 2**-8 + 1e-6
    assert ((y.double() - reference).abs() <= bound).all()


def test_int8_model_stays_close_to_fp32_in_logits_and_perplexity(trained):
    model, held_out = trained
    int8 = converted(model, "int8")
    batch = windows(held_out, 8, seed=1)
    with torch.no_grad():
        logits32, loss32 = model(batch, batch)
        logits8, loss8 = int8(batch, batch)
    assert (logits8 - logits32).abs().max() <= 0.05 * logits32.abs().max()
    assert abs(loss8.exp() / loss32.exp() - 1) < 0.02  # perplexity within 2 %
    # greedy decoding agrees with fp32's wherever fp32's best token wins by a clear margin
    prompt = held_out[:8]
    ours, theirs = (
        generate(model, [prompt], 24, temperature=0)[0],
        generate(int8, [prompt], 24, temperature=0)[0],
    )
    assert ours[:4] == theirs[:4]


def test_int8_keeps_the_embeddings_and_cache_in_fp32_and_unties_the_head(trained):
    model, _ = trained
    int8 = converted(model, "int8")
    assert int8.transformer.wte.weight.dtype == torch.float32
    assert isinstance(int8.lm_head, Int8Linear)
    assert int8.lm_head.out_features == model.config.vocab_size
    assert all(
        isinstance(m, Int8Linear) for b in int8.transformer.h for m in (b.attn.c_attn, b.mlp.c_fc)
    )
    assert int8.new_kv_cache(1, 4).k.dtype == torch.float32


def test_bf16_model_runs_in_bf16_and_stays_close_to_fp32(trained):
    model, held_out = trained
    bf16 = converted(model, "bf16")
    assert bf16.new_kv_cache(1, 4).k.dtype == torch.bfloat16
    batch = windows(held_out, 4, seed=2)
    with torch.no_grad():
        logits32, logits16 = model(batch), bf16(batch).float()
    assert (logits16 - logits32).abs().max() <= 0.1 * logits32.abs().max()
    assert len(generate(bf16, [held_out[:8]], 6, temperature=0)[0]) == 6


def test_auto_is_bf16_only_where_the_hardware_multiplies_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_inference_dtype("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_inference_dtype("auto", cpu) == "bf16"
    assert [resolve_inference_dtype(d, cpu) for d in ("fp32", "bf16", "int8")] == [
        "fp32",
        "bf16",
        "int8",
    ]


def test_bad_dtypes_are_refused_by_name(trained):
    with pytest.raises(
        ValueError, match=r"unknown dtype 'fp16'; use one of fp32, bf16, int8, auto"
    ):
        resolve_inference_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        resolve_inference_dtype("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        to_inference_dtype(copy.deepcopy(trained[0]), "auto")
