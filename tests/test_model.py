"""SmallGPT: architecture, loss conventions, KV cache, optimizer groups; checked against plain maths."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from smallgpt.model.config import ModelConfig
from smallgpt.model.gpt import SmallGPT, count_real_tokens


def tiny(vocab: int = 97, **overrides) -> SmallGPT:
    torch.manual_seed(0)
    options = {"embed_dim": 32, "num_heads": 4, "num_layers": 2, "max_seq_len": 64, "dropout": 0.0}
    options.update(overrides)
    return SmallGPT(vocab, **options)


def reference_logits(model: SmallGPT, ids: torch.Tensor, position_offset: int = 0) -> torch.Tensor:
    """GPT-2 forward written out with explicit matrices and a masked softmax (no SDPA, no modules)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    cfg = model.config
    B, T = ids.shape
    H, D = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    x = (
        sd["transformer.wte.weight"][ids]
        + sd["transformer.wpe.weight"][position_offset : position_offset + T]
    )

    def ln(t, name):
        return F.layer_norm(t, (cfg.embed_dim,), sd[f"{name}.weight"], sd.get(f"{name}.bias"), 1e-5)

    def lin(t, name):
        out = t @ sd[f"{name}.weight"].T
        return out + sd[f"{name}.bias"] if f"{name}.bias" in sd else out

    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for layer in range(cfg.num_layers):
        p = f"transformer.h.{layer}"
        q, k, v = lin(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(cfg.embed_dim, dim=-1)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        attn = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        x = x + lin(attn.transpose(1, 2).reshape(B, T, cfg.embed_dim), f"{p}.attn.c_proj")
        h = lin(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc")
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + lin(h, f"{p}.mlp.c_proj")
    x = ln(x, "transformer.ln_f")
    return x @ sd["transformer.wte.weight"][: cfg.vocab_size].T


def test_default_model_has_about_25m_parameters_matching_the_gpt2_formula():
    model = SmallGPT()
    V, D, S, L = 10048, 512, 1024, 6  # 10000 padded to a multiple of 64
    per_block = (
        2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * 4 * D + 4 * D) + (4 * D * D + D)
    )
    expected = V * D + S * D + L * per_block + 2 * D
    assert model.num_parameters() == expected
    assert model.num_parameters(exclude_embeddings=True) == expected - V * D - S * D
    assert 24e6 < expected < 26e6
    assert model.get_vocab_size() == 10000
    assert model.transformer.wte.weight.shape == (10048, 512)


def test_module_names_follow_gpt2():
    names = set(tiny().state_dict())
    for name in (
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.1.ln_1.weight",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.1.attn.c_proj.bias",
        "transformer.h.1.ln_2.bias",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ):
        assert name in names
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    model = SmallGPT(1000, 256, 4, 8, 64)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for block in model.transformer.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
            assert torch.count_nonzero(proj.bias) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embed_dim", 30, "divisible by model.num_heads"),
        ("vocab_size", 0, "vocab_size"),
        ("num_layers", -1, "num_layers"),
        ("max_seq_len", 1.5, "max_seq_len"),
        ("dropout", 1.0, "dropout"),
        ("attention", "flash", "attention"),
        ("pad_token_id", 97, "pad_token_id"),
    ],
)
def test_config_rejects_invalid_fields_by_name(field, value, message):
    options = {"vocab_size": 97, "embed_dim": 32, "num_heads": 4}
    options[field] = value
    with pytest.raises(ValueError, match=message):
        ModelConfig(**options).validate()
    with pytest.raises(ValueError, match=message):
        SmallGPT(**options)


def test_config_null_vocab_size_takes_the_tokenizers():
    section = ModelConfig(embed_dim=32, num_heads=4)
    with pytest.raises(ValueError, match="resolve"):
        SmallGPT.from_config(section)
    resolved = section.resolve(300, pad_token_id=299)
    assert (resolved.vocab_size, resolved.pad_token_id) == (300, 299)
    assert section.vocab_size is None
    assert ModelConfig(vocab_size=512).resolve(300).vocab_size == 512
    with pytest.raises(ValueError, match="smaller than the tokenizer's vocabulary"):
        ModelConfig(vocab_size=256).resolve(300)


def test_from_config_builds_the_same_architecture():
    cfg = ModelConfig(
        vocab_size=50, embed_dim=16, num_heads=2, num_layers=3, max_seq_len=32, pad_token_id=1
    )
    model = SmallGPT.from_config(cfg)
    assert model.config == cfg
    assert len(model.transformer.h) == 3


@pytest.mark.parametrize("position_offset", [0, 5])
def test_forward_matches_plain_reference_implementation(position_offset):
    model = tiny().double().eval()
    ids = torch.randint(0, 97, (2, 24))
    ours = model(ids, position_offset=position_offset)
    torch.testing.assert_close(ours, reference_logits(model, ids, position_offset))


def test_changing_a_future_token_never_changes_past_logits():
    model = tiny().eval()
    ids = torch.randint(0, 97, (1, 32))
    changed = ids.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_loss_at_initialisation_is_close_to_log_vocab():
    torch.manual_seed(0)
    model = SmallGPT(5000, 128, 4, 2, 128)
    ids = torch.randint(0, 5000, (4, 128))
    _, loss = model.eval()(ids, ids)
    assert abs(loss.item() - math.log(5000)) < 0.3


def test_tiny_model_overfits_one_batch():
    model = tiny()
    ids = torch.randint(0, 97, (4, 32))
    optimizer = model.configure_optimizers(weight_decay=0.0, lr=1e-2)
    for _ in range(60):
        _, loss = model(ids, ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_eval_mode_is_deterministic_while_training_mode_applies_dropout():
    model = tiny(dropout=0.3)
    ids = torch.randint(0, 97, (2, 16))
    model.eval()
    torch.testing.assert_close(model(ids), model(ids), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(ids), model(ids))


def test_loss_matches_cross_entropy_on_shifted_labels_and_skips_pad_and_minus100():
    model = tiny(pad_token_id=0).double()
    ids = torch.randint(1, 97, (3, 20))
    labels = ids.clone()
    labels[0, 15:] = 0
    labels[1, 3] = -100
    logits, loss = model(ids, labels)
    scored = torch.ones(3, 19, dtype=torch.bool)
    scored[0, 14:] = False
    scored[1, 2] = False
    expected = F.cross_entropy(logits[:, :-1][scored], labels[:, 1:][scored])
    torch.testing.assert_close(loss, expected)
    assert count_real_tokens(labels, pad_token_id=0).item() == int(scored.sum())
    assert model.count_real_tokens(labels).item() == int(scored.sum())


def test_sum_reduction_divided_by_real_tokens_equals_mean():
    model = tiny(pad_token_id=5).double()
    ids = torch.randint(0, 97, (2, 16))
    ids[1, 10:] = 5
    _, mean = model(ids, ids)
    _, total = model(ids, ids, reduction="sum")
    torch.testing.assert_close(total / model.count_real_tokens(ids), mean)
    with pytest.raises(ValueError, match="reduction"):
        model(ids, ids, reduction="none")


def test_return_logits_false_gives_the_same_loss_without_logits():
    model = tiny().double()
    ids = torch.randint(0, 97, (2, 16))
    logits, loss = model(ids, ids)
    none, loss2 = model(ids, ids, return_logits=False)
    assert logits.shape == (2, 16, 97) and none is None
    torch.testing.assert_close(loss2, loss)


def test_padded_vocabulary_rows_never_appear_in_logits_nor_get_gradients():
    model = tiny(vocab=100)
    assert model.transformer.wte.weight.shape[0] == 128
    ids = torch.randint(0, 100, (2, 16))
    logits, loss = model(ids, ids)
    assert logits.shape[-1] == 100
    loss.backward()
    grad = model.transformer.wte.weight.grad
    assert torch.count_nonzero(grad[100:]) == 0
    assert torch.count_nonzero(grad[:100]) > 0


def test_kv_cache_incremental_logits_equal_full_forward_with_left_padding():
    model = tiny().double().eval()
    ids = torch.randint(0, 97, (2, 20))
    padded = ids.clone()
    padded[0, :4] = 0
    cache = model.new_kv_cache(2, start=torch.tensor([4, 0]))
    with torch.no_grad():
        steps = [model(padded[:, :9], kv_cache=cache)]
        steps += [model(padded[:, t : t + 1], kv_cache=cache) for t in range(9, 20)]
        incremental = torch.cat(steps, dim=1)
        torch.testing.assert_close(incremental[0, 4:], model(ids[:1, 4:])[0])
        torch.testing.assert_close(incremental[1], model(ids[1:])[0])
    with pytest.raises(ValueError, match="do not fit"):
        model(padded, kv_cache=model.new_kv_cache(2, capacity=10))


def test_fp32_decoding_steps_on_cpu_give_the_full_forward_logits():
    # Decoding steps in fp32 under inference mode take oneDNN's linear where it works; every
    # step's logits must stay those of the full forward, up to the rounding of their sums.
    model = tiny(embed_dim=64).eval()
    ids = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(1))
    cache = model.new_kv_cache(3)
    with torch.inference_mode():
        steps = [model(ids[:, :8], kv_cache=cache)]
        steps += [model(ids[:, t : t + 1], kv_cache=cache) for t in range(8, 24)]
        incremental, full = torch.cat(steps, dim=1), model(ids)
    scale = full.abs().amax()
    assert ((incremental - full).abs() <= 1e-5 * scale).all()


def test_decoding_products_use_onednn_only_without_autograd_in_fp32_on_cpu():
    from smallgpt.model import onednn

    layer = torch.nn.Linear(64, 48)
    x = torch.randn(3, 1, 64)
    assert onednn.decoding_linear(x) is onednn.call_layer  # autograd on: F.linear's gradient
    with torch.inference_mode():
        assert onednn.decoding_linear(x.double()) is onednn.call_layer
        chosen = onednn.decoding_linear(x)
        if torch.backends.mkldnn.is_available():
            assert onednn.onednn_linear_works()
            assert chosen is onednn.onednn_linear
        got, expected = chosen(layer, x), F.linear(x, layer.weight, layer.bias)
        product = onednn.onednn_product(x, layer.weight)
    bound = 1e-5 * (x.abs() @ layer.weight.abs().t() + layer.bias.abs())
    assert ((got - expected).abs() <= bound).all()
    assert ((product - F.linear(x, layer.weight)).abs() <= bound).all()


def test_configure_optimizers_decays_matrices_and_embeddings_only():
    model = tiny()
    optimizer = model.configure_optimizers(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert any(p is model.transformer.wte.weight for p in decay["params"])
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == model.num_parameters()
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_flops_per_token_is_six_n_plus_attention_term():
    model = tiny(vocab=100)
    cfg = model.config
    matmul_params = model.num_parameters(exclude_embeddings=True) + 100 * cfg.embed_dim
    expected = 6 * matmul_params + 12 * cfg.num_layers * cfg.embed_dim * 50
    assert model.estimate_flops_per_token(seq_len=50) == expected


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def test_triton_attention_on_cpu_raises_and_auto_falls_back_to_sdpa(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ids = torch.randint(0, 97, (1, 8))
    with pytest.raises(RuntimeError, match="attention"):
        tiny(attention="triton", num_heads=2)(ids)
    torch.testing.assert_close(tiny(attention="auto")(ids), tiny()(ids))


def test_triton_attention_rejects_head_dims_the_kernels_lack():
    with pytest.raises(ValueError, match="head_dim"):
        SmallGPT.from_config(
            ModelConfig(vocab_size=97, embed_dim=48, num_heads=2, attention="triton")
        )
    assert ModelConfig(vocab_size=97, embed_dim=48, num_heads=2, attention="auto").head_dim == 24


_INTERPRETED_KERNELS = """
import torch
from smallgpt.model import SmallGPT

def tiny(**options):
    torch.manual_seed(0)
    return SmallGPT(100, 32, 2, 2, 64, 0.0, pad_token_id=0, **options)

ids = torch.randint(1, 100, (2, 24))
ids[1, 16:] = 0
plain, kernels = tiny(), tiny(attention="triton")
logits, expected = plain(ids, ids)
expected.backward()
none, loss = kernels(ids, ids, return_logits=False)
loss.backward()
assert none is None
torch.testing.assert_close(loss, expected)
torch.testing.assert_close(kernels(ids), logits)
for a, b in zip(plain.parameters(), kernels.parameters()):
    torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4)
"""


def test_triton_kernel_paths_match_pytorch_under_the_triton_interpreter():
    """attention='triton' and the fused loss, run on CPU by Triton's interpreter, vs SDPA + F.cross_entropy."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _INTERPRETED_KERNELS],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _cuda_kernels_or_skip(module: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip(module, reason=f"{module} not available")


@pytest.mark.gpu
def test_triton_attention_backend_matches_sdpa_on_cuda():
    _cuda_kernels_or_skip("smallgpt.kernels.attention")
    ids = torch.randint(0, 97, (2, 64), device="cuda")
    sdpa = tiny(num_heads=2).cuda().eval()
    triton = tiny(attention="triton", num_heads=2).cuda().eval()
    with torch.no_grad():
        torch.testing.assert_close(triton(ids), sdpa(ids), atol=2e-3, rtol=2e-3)


@pytest.mark.gpu
def test_fused_loss_on_cuda_matches_materialised_logits_loss_and_gradients():
    _cuda_kernels_or_skip("smallgpt.kernels.cross_entropy")
    model = tiny(vocab=100, pad_token_id=0).cuda()
    ids = torch.randint(1, 100, (2, 64), device="cuda")
    ids[1, 40:] = 0
    for reduction in ("mean", "sum"):
        _, expected = model(ids, ids, reduction=reduction)
        expected.backward()
        expected_grad = model.transformer.wte.weight.grad.clone()
        model.zero_grad()
        _, fused = model(ids, ids, reduction=reduction, return_logits=False)
        fused.backward()
        torch.testing.assert_close(fused, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            model.transformer.wte.weight.grad, expected_grad, atol=1e-4, rtol=1e-3
        )
        model.zero_grad()


def test_cpu_bf16_autocast_attention_runs_in_fp32_and_stays_close_to_fp32():
    # Under CPU autocast the attention itself runs in fp32 (PyTorch's bf16 CPU flash kernel is
    # the slower one); the rest of the block is bf16, so logits stay within bf16 rounding.
    model = tiny()
    ids = torch.randint(0, 97, (2, 40))
    attention = model.transformer.h[0].attn
    x = torch.randn(2, 40, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(x)
        q, k, v = attention.c_attn(x).split(32, dim=2)
    q, k, v = (t.view(2, 40, 4, 8).transpose(1, 2).float() for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = attention.c_proj(y.transpose(1, 2).reshape(2, 40, 32))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids).float()
    torch.testing.assert_close(low, reference_logits(model, ids), rtol=0, atol=0.1)


def test_cpu_fp64_attention_is_not_rounded_through_fp32():
    # Only the half-precision autocast path is moved to fp32; a float64 model stays float64.
    model = tiny().double()
    ids = torch.randint(0, 97, (2, 20))
    torch.testing.assert_close(
        model(ids), reference_logits(model, ids).double(), rtol=1e-10, atol=1e-10
    )
