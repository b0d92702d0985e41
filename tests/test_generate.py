"""Generation: KV-cache decoding against full recomputation; sampling filters against plain Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from smallgpt.generate.decoding import generate, generate_text, iter_generate, stream_text
from smallgpt.generate.sampling import (
    min_p_filter,
    sample_next_token,
    top_k_filter,
    top_k_sampling,
    top_p_filter,
    top_p_sampling,
)
from smallgpt.model.gpt import SmallGPT
from smallgpt.tokenizer.bpe import Tokenizer

VOCAB = 97


def tiny_model(max_seq_len: int = 64, vocab: int = VOCAB) -> SmallGPT:
    # float64 so that batched and single-sequence runs agree far below any argmax gap
    torch.manual_seed(0)
    return SmallGPT(vocab, 32, 4, 2, max_seq_len, 0.0).double().eval()


def recompute_greedy(model, prompt, steps, context_shift=1, eos=None, penalty=1.0):
    """The guide's loop: run the whole visible context every step, take the argmax."""
    seq, start, out = list(prompt), 0, []
    limit = model.config.max_seq_len
    for _ in range(steps):
        if len(seq) - start > limit:
            start = len(seq) - (limit - context_shift + 1)
        with torch.no_grad():
            logits = model(torch.tensor([seq[start:]]))[0, -1].tolist()
        if penalty != 1.0:
            logits = [
                (x / penalty if x > 0 else x * penalty) if i in seq else x
                for i, x in enumerate(logits)
            ]
        token = max(range(len(logits)), key=logits.__getitem__)
        if token == eos:
            break
        out.append(token)
        seq.append(token)
    return out


def test_greedy_kv_cache_equals_recompute_for_batched_prompts_of_different_lengths():
    model = tiny_model()
    prompts = [[5], [1, 2, 3], list(range(10, 22))]
    got = generate(model, prompts, 25, temperature=0)
    assert got == [recompute_greedy(model, p, 25) for p in prompts]


@pytest.mark.parametrize("context_shift", [1, 5])
def test_greedy_kv_cache_equals_recompute_past_max_seq_len(context_shift):
    model = tiny_model(max_seq_len=16)
    prompts = [[7, 8], list(range(30, 41)), list(range(40, 62))]  # the last is longer than 16
    got = generate(model, prompts, 30, temperature=0, context_shift=context_shift)
    assert got == [recompute_greedy(model, p, 30, context_shift) for p in prompts]


def test_prompt_tensor_numpy_and_list_give_the_same_output():
    model = tiny_model()
    prompt = [3, 1, 4, 1, 5]
    from_list = generate(model, [prompt], 10, temperature=0)
    assert generate(model, [np.array(prompt, dtype=np.uint16)], 10, temperature=0) == from_list
    assert generate(model, torch.tensor(prompt), 10, temperature=0) == from_list
    assert generate(model, torch.tensor([prompt]), 10, temperature=0) == from_list


def test_generation_stops_at_eos_without_returning_it():
    model = tiny_model()
    prompts = [[1, 2, 3], [9, 8]]
    free = [recompute_greedy(model, p, 20) for p in prompts]
    eos = free[0][6]
    got = generate(model, prompts, 20, temperature=0, eos_token_id=eos)
    assert got == [recompute_greedy(model, p, 20, eos=eos) for p in prompts]
    assert got[0] == free[0][: free[0].index(eos)]


def test_iteration_ends_when_every_sequence_has_stopped():
    model = tiny_model()
    eos = recompute_greedy(model, [1, 2, 3], 1)[0]
    steps = list(iter_generate(model, [[1, 2, 3]], 50, temperature=0, eos_token_id=eos))
    assert len(steps) == 1 and steps[0][0].tolist() == [eos]


def test_repetition_penalty_matches_the_ctrl_rule_in_a_recompute_loop():
    model = tiny_model()
    prompt = [4, 4, 2, 8]
    got = generate(model, [prompt], 20, temperature=0, repetition_penalty=1.8)
    assert got == [recompute_greedy(model, prompt, 20, penalty=1.8)]
    assert got != [recompute_greedy(model, prompt, 20)]


def test_temperature_near_zero_equals_greedy():
    model = tiny_model()
    prompts = [[1, 2], [3, 4, 5, 6]]
    greedy = generate(model, prompts, 20, temperature=0)
    assert generate(model, prompts, 20, temperature=1e-5, seed=3) == greedy


def test_same_seed_same_tokens_and_the_global_rng_is_untouched():
    model = tiny_model()
    state = torch.get_rng_state()
    first = generate(model, [[1, 2, 3]], 30, temperature=1.0, top_k=20, seed=123)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, [[1, 2, 3]], 30, temperature=1.0, top_k=20, seed=123) == first
    assert generate(model, [[1, 2, 3]], 30, temperature=1.0, top_k=20, seed=124) != first


def test_padded_vocabulary_rows_are_never_sampled():
    model = tiny_model(vocab=70)  # embedding table padded to 128 rows
    with torch.no_grad():
        model.transformer.wte.weight[70:] = 50.0  # would dominate if they were ever scored
    out = generate(model, [[1, 2]], 60, temperature=3.0, seed=0)
    assert max(out[0]) < 70


def test_generate_restores_training_mode():
    model = tiny_model().train()
    generate(model, [[1]], 3, temperature=0)
    assert model.training


def test_the_caller_runs_in_its_own_autograd_mode_between_steps_and_gets_plain_tensors():
    model = tiny_model()
    for tokens, active in iter_generate(model, [[1, 2], [3]], 3, temperature=0):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert not tokens.is_inference() and not active.is_inference()
        tokens += 0  # in place, as a caller may: refused for an inference tensor


def test_decoding_logits_equal_logits():
    model = tiny_model().eval()
    hidden = torch.randn(5, model.config.embed_dim, dtype=model.lm_head.weight.dtype)
    with torch.no_grad():
        expected = model.logits(hidden)
        got = model.decoding_logits()(hidden)
    assert got.shape == expected.shape == (5, model.get_vocab_size())
    # Only the order of the sums may differ: a bound from the magnitudes that are summed.
    scale = hidden.abs() @ model.lm_head.weight[: model.get_vocab_size()].abs().t()
    assert ((got - expected).abs() <= 1e-5 * scale + 1e-6).all()


def random_logits(rows: int = 3, vocab: int = 40) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(7)) * 2


def test_top_k_sampling_never_samples_outside_the_k_best():
    logits = random_logits()
    allowed = [set(sorted(range(40), key=lambda i, r=row: -r[i])[:5]) for row in logits.tolist()]
    generator = torch.Generator().manual_seed(0)
    seen = [set() for _ in allowed]
    for _ in range(300):
        ids = top_k_sampling(logits, k=5, generator=generator)
        assert ids.shape == (3, 1) and ids.dtype == torch.long
        for row, token in enumerate(ids[:, 0].tolist()):
            seen[row].add(token)
    assert all(s <= a for s, a in zip(seen, allowed))
    assert all(len(s) > 1 for s in seen)


def nucleus(row: list[float], p: float) -> set[int]:
    total = sum(pow(2.718281828459045, x) for x in row)
    probs = sorted(
        ((pow(2.718281828459045, x) / total, i) for i, x in enumerate(row)), reverse=True
    )
    kept, mass = set(), 0.0
    for prob, index in probs:
        if mass >= p:
            break
        kept.add(index)
        mass += prob
    return kept


@pytest.mark.parametrize("p", [1e-6, 0.5, 0.9])
def test_top_p_sampling_stays_in_the_nucleus_and_always_allows_the_best(p):
    logits = random_logits()
    allowed = [nucleus(row, p) for row in logits.tolist()]
    best = logits.argmax(-1).tolist()
    assert all(b in a for b, a in zip(best, allowed))
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        ids = top_p_sampling(logits, p=p, generator=generator)[:, 0].tolist()
        assert all(token in a for token, a in zip(ids, allowed))
    kept = torch.isfinite(top_p_filter(logits, p))
    assert [set(torch.nonzero(row).flatten().tolist()) for row in kept] == allowed


def test_min_p_filter_keeps_tokens_within_a_fraction_of_the_best():
    logits = random_logits()
    probs = logits.softmax(-1)
    expected = probs >= 0.2 * probs.max(-1, keepdim=True).values
    assert torch.equal(torch.isfinite(min_p_filter(logits, 0.2)), expected)


def test_top_k_filter_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert int(torch.isfinite(top_k_filter(logits, 2)).sum()) == 2


def test_sampling_helpers_never_modify_the_callers_logits():
    logits = random_logits()
    original = logits.clone()
    top_k_sampling(logits, 3)
    top_p_sampling(logits, 0.5)
    top_k_filter(logits, 3)
    top_p_filter(logits, 0.5)
    min_p_filter(logits, 0.1)
    sample_next_token(logits, temperature=0.7, top_k=5, top_p=0.8, min_p=0.05)
    assert torch.equal(logits, original)


def test_sampled_frequencies_follow_the_softmax_and_skip_filtered_ids():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, float("-inf")])
    probs = logits.softmax(-1)
    draws = 40_000
    # one row per draw: every row is an independent sample
    ids = sample_next_token(logits.expand(draws, -1), generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(ids[:, 0], minlength=5).double() / draws
    sigma = (probs * (1 - probs) / draws).sqrt().double()
    assert counts[4] == 0
    assert torch.all((counts - probs.double()).abs() <= 5 * sigma + 1e-12)


@pytest.mark.parametrize(
    "options",
    [{"temperature": 0.8}, {"temperature": 1.3, "top_k": 7}, {"top_p": 0.6, "min_p": 0.05}],
)
def test_rows_with_their_own_generators_draw_what_they_draw_alone(options):
    logits = random_logits(rows=5)
    seeds = [3, None, 11, 3, 40]
    generators = [None if s is None else torch.Generator().manual_seed(s) for s in seeds]
    alone_generators = [None if s is None else torch.Generator().manual_seed(s) for s in seeds]
    for _ in range(20):  # the generators advance as they would alone, step after step
        together = sample_next_token(logits, generator=generators, **options)[:, 0].tolist()
        for row, generator in enumerate(alone_generators):
            if generator is not None:
                alone = sample_next_token(logits[row : row + 1], generator=generator, **options)
                assert together[row] == int(alone)


def test_a_generator_list_must_match_the_rows_and_nan_logits_are_refused():
    logits = random_logits(rows=3)
    with pytest.raises(ValueError, match="one per row"):
        sample_next_token(logits, generator=[torch.Generator()] * 2)
    with pytest.raises(ValueError, match="one per row"):
        sample_next_token(logits[0], generator=[torch.Generator()])
    with pytest.raises(ValueError, match="NaN"):
        sample_next_token(torch.full((2, 5), float("nan")))


def test_one_dimensional_logits_give_one_id():
    ids = top_k_sampling(torch.randn(10), k=3)
    assert ids.shape == (1,)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: generate(m, [[]], 5), ValueError),
        (lambda m: generate(m, [[1, VOCAB]], 5), ValueError),
        (lambda m: generate(m, [[1]], -1), ValueError),
        (lambda m: generate(m, [[1]], 5, context_shift=0), ValueError),
        (lambda m: generate(m, [[1]], 5, temperature=-1), ValueError),
        (lambda m: generate(m, [[1]], 5, top_p=0.0), ValueError),
        (lambda m: generate(m, [[1]], 5, top_k=0), ValueError),
        (lambda m: generate(m, [[1]], 5, repetition_penalty=0), ValueError),
        (lambda m: generate(m, [[1.0, 2.0]], 5), TypeError),
        (lambda m: top_k_sampling(torch.tensor([1, 2]), 1), TypeError),
    ],
)
def test_bad_prompts_and_options_raise(call, error):
    with pytest.raises(error):
        call(tiny_model())


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    text = (shared_data / "multilingual_emoji.txt").read_text(encoding="utf-8")[:40_000]
    return Tokenizer.train([text], vocab_size=300)


def text_model(tokenizer) -> SmallGPT:
    torch.manual_seed(0)
    return SmallGPT(tokenizer.vocab_size, 32, 4, 2, 64, 0.0).double().eval()


def test_generate_text_greedy_is_the_prompt_plus_the_decoded_recompute_output(tokenizer):
    model = text_model(tokenizer)
    prompt = "Bonjour, 世界! "
    ids = recompute_greedy(model, tokenizer.encode(prompt), 20, eos=tokenizer.eos_token_id)
    text = generate_text(model, tokenizer, prompt, max_length=20, temperature=0)
    assert text == prompt + tokenizer.decode(ids)


def test_generate_text_batches_prompts_like_single_calls(tokenizer):
    model = text_model(tokenizer)
    prompts = ["a", "The quick brown fox 🦊 jumps", ""]
    single = [generate_text(model, tokenizer, p, 15, temperature=0) for p in prompts]
    assert generate_text(model, tokenizer, prompts, 15, temperature=0) == single
    assert all(text.startswith(p) for text, p in zip(single, prompts))


def test_generate_text_stops_at_the_end_of_text_token(tokenizer):
    model = text_model(tokenizer)
    first = recompute_greedy(model, tokenizer.encode("Hi"), 1)[0]
    text = generate_text(model, tokenizer, "Hi", 10, temperature=0, eos_token_id=first)
    assert text == "Hi"


def test_streamed_pieces_join_to_the_generated_text_and_never_split_a_character(tokenizer):
    model = text_model(tokenizer)
    options = {"temperature": 1.5, "seed": 11, "eos_token_id": None}
    pieces = list(stream_text(model, tokenizer, "日本語", 60, **options))
    ids = generate(model, [tokenizer.encode("日本語")], 60, **options)[0]
    assert "".join(pieces) == tokenizer.decode(ids)
    # the sample holds characters split over tokens, which per-token decoding would garble
    assert "".join(tokenizer.decode([i]) for i in ids) != tokenizer.decode(ids)
    with_prompt = generate_text(model, tokenizer, "日本語", 60, **options)
    assert with_prompt == "日本語" + "".join(pieces)
