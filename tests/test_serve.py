"""`python -m smallgpt.serve`: the real server on 127.0.0.1, driven by the official `openai`
client and by raw HTTP; the scheduler's batching checked against `smallgpt.generate`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

openai = pytest.importorskip("openai", reason="needs the test extra (openai)")
httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")
pytest.importorskip("uvicorn", reason="needs smallgpt[serve]")
pytest.importorskip("starlette", reason="needs smallgpt[serve]")

from serve_helpers import CONTEXT, running_server, train_tiny_run
from smallgpt.checkpoint.resolve import load_for_inference
from smallgpt.generate.decoding import _encode_prompt, generate
from smallgpt.serve.cli import _parser, main
from smallgpt.serve.scheduler import SamplingParams, Scheduler, Sequence
from smallgpt.serve.server import _Choice, _events, _Inbox, create_app

PROMPTS = [
    "ROMEO:",
    "First Citizen:\nWe",
    "KING",
    "O, ",
    "",
    "What say you",
    "Thou art",
    "My lord,",
    "JULIET:\n",
    "To be",
    "The ",
    "Go",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(run):
    with running_server(run, "--max-batch", "8", "--max-queue", "64") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=30) as c:
        yield c


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["smallgpt"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_completion_counts_its_tokens_and_stops_at_length(client, run):
    answer = client.completions.create(
        model="smallgpt", prompt="ROMEO:", max_tokens=12, temperature=0.8, seed=3
    )
    (choice,) = answer.choices
    _, tokenizer, _ = load_for_inference(run, device="cpu")
    prompt_ids = tokenizer.encode("ROMEO:")
    assert answer.usage.prompt_tokens == len(prompt_ids)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    if choice.finish_reason == "length":
        assert answer.usage.completion_tokens == 12
    else:
        assert choice.finish_reason == "stop" and answer.usage.completion_tokens < 12
    assert len(tokenizer.encode(choice.text)) > 0


def test_seeded_request_alone_equals_generate_command(client, run):
    args = [
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "20",
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--seed",
        "11",
        "--num-samples",
        "2",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "smallgpt.generate",
            "--checkpoint",
            str(run),
            "--device",
            "cpu",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    samples = [
        s.split("\n", 1)[1].removeprefix("ROMEO:").removesuffix("\n")
        for s in done.stdout.split("--- prompt 1, sample ")[1:]
    ]
    for _ in range(2):  # the same seed gives the same samples again
        answer = client.completions.create(
            model="smallgpt",
            prompt="ROMEO:",
            max_tokens=20,
            temperature=0.9,
            top_p=0.95,
            seed=11,
            n=2,
            extra_body={"top_k": 40},
        )
        assert [c.text for c in answer.choices] == samples


def test_int8_server_answers_what_the_int8_generate_command_prints(run):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "smallgpt.generate",
            "--checkpoint",
            str(run),
            "--device",
            "cpu",
            "--dtype",
            "int8",
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "12",
            "--temperature",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert "(int8)" in done.stderr
    with running_server(run, "--dtype", "int8") as url:
        answer = httpx.post(
            f"{url}/v1/completions",
            timeout=30,
            json={"prompt": "ROMEO:", "max_tokens": 12, "temperature": 0},
        ).json()
    assert answer["choices"][0]["text"] == done.stdout.removeprefix("ROMEO:").removesuffix("\n")


def test_unknown_dtype_is_refused_naming_the_choices(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--checkpoint", "run", "--dtype", "int4"])
    assert "--dtype: invalid choice: 'int4'" in capsys.readouterr().err


def test_stream_joins_to_the_plain_answer(client):
    options = {
        "model": "smallgpt",
        "prompt": "KING",
        "max_tokens": 25,
        "temperature": 0.7,
        "seed": 5,
    }
    plain = client.completions.create(**options).choices[0]
    chunks = list(client.completions.create(**options, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.text
    assert chunks[-1].choices[0].finish_reason == plain.finish_reason


def test_stream_ends_with_done(server):
    with httpx.stream(
        "POST",
        f"{server}/v1/completions",
        timeout=30,
        json={"prompt": "O, ", "max_tokens": 5, "stream": True},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_list_prompt_and_n_give_one_choice_each_in_order(client):
    prompts = ["ROMEO:", "KING"]
    answer = client.completions.create(
        model="smallgpt", prompt=prompts, max_tokens=8, n=3, temperature=1.0, seed=2
    )
    assert [c.index for c in answer.choices] == list(range(6))
    for p, prompt in enumerate(prompts):
        alone = client.completions.create(
            model="smallgpt", prompt=prompt, max_tokens=8, n=3, temperature=1.0, seed=2
        )
        assert [c.text for c in answer.choices[3 * p : 3 * p + 3]] == [
            c.text for c in alone.choices
        ]


def test_stop_string_cuts_the_text(client):
    options = {
        "model": "smallgpt",
        "prompt": "ROMEO:",
        "max_tokens": 30,
        "temperature": 1.0,
        "seed": 1,
    }
    full = client.completions.create(**options).choices[0].text
    assert len(full) >= 8, f"seed 1 gave too short a continuation to cut: {full!r}"
    stop = full[5:7]
    cut = client.completions.create(**options, stop=[stop, "never-seen"]).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    streamed = client.completions.create(**options, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.text


BAD = [
    (b'{"prompt": "a", "max_tokens": 3', None),
    (b'["prompt"]', None),
    (json.dumps({"prompt": "a", "best_of": 2}).encode(), "best_of"),
    (json.dumps({"prompt": "a", "max_tokens": "3"}).encode(), "max_tokens"),
    (json.dumps({"prompt": "a", "max_tokens": 0}).encode(), "max_tokens"),
    (json.dumps({"prompt": "a", "max_tokens": CONTEXT}).encode(), "max_tokens"),
    (json.dumps({"prompt": "a", "temperature": -0.1}).encode(), "temperature"),
    (json.dumps({"prompt": "a", "temperature": "hot"}).encode(), "temperature"),
    (json.dumps({"prompt": "a", "top_p": 0}).encode(), "top_p"),
    (json.dumps({"prompt": "a", "top_p": 1.5}).encode(), "top_p"),
    (json.dumps({"prompt": "a", "top_k": 0}).encode(), "top_k"),
    (json.dumps({"prompt": "a", "min_p": 2}).encode(), "min_p"),
    (json.dumps({"prompt": "a", "n": 0}).encode(), "n"),
    (json.dumps({"prompt": ["a"] * 5, "n": 16}).encode(), "n"),
    (json.dumps({"prompt": "a", "stream": "yes"}).encode(), "stream"),
    (json.dumps({"prompt": "a", "seed": 1.5}).encode(), "seed"),
    (json.dumps({"prompt": "a", "stop": [1]}).encode(), "stop"),
    (json.dumps({"prompt": "a", "stop": ["x", ""]}).encode(), "stop"),
    (json.dumps({"prompt": 5}).encode(), "prompt"),
    (json.dumps({"max_tokens": 3}).encode(), "prompt"),
    (json.dumps({"prompt": "Thou " * CONTEXT}).encode(), "prompt"),
    (b'{"prompt": "caf\xe9"}', "prompt"),
    (b'{"prompt": "\\ud800"}', "prompt"),
]


@pytest.mark.parametrize("body,param", BAD, ids=[f"{i}-{p}" for i, (_, p) in enumerate(BAD)])
def test_bad_input_gets_an_openai_error_naming_the_field(server, body, param):
    response = httpx.post(
        f"{server}/v1/completions",
        content=body,
        timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]
    if param:
        assert param in error["message"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_unknown_model_and_path_are_openai_errors(server):
    response = httpx.post(f"{server}/v1/completions", json={"model": "gpt-4", "prompt": "a"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"
    assert httpx.get(f"{server}/v1/nothing").json()["error"]["message"]


def test_a_bad_request_does_not_disturb_its_batch(server, client):
    async def together():
        async with httpx.AsyncClient(base_url=server, timeout=30) as http:
            good = {"prompt": "ROMEO:", "max_tokens": 15, "temperature": 0.8, "seed": 4}
            return await asyncio.gather(
                http.post("/v1/completions", json=good),
                http.post("/v1/completions", json={"prompt": "a", "top_p": -1}),
                http.post("/v1/completions", json=good),
            )

    first, bad, second = asyncio.run(together())
    assert bad.status_code == 400
    alone = (
        client.completions.create(
            model="smallgpt", prompt="ROMEO:", max_tokens=15, temperature=0.8, seed=4
        )
        .choices[0]
        .text
    )
    assert first.json()["choices"][0]["text"] == second.json()["choices"][0]["text"] == alone


def test_32_concurrent_clients_all_get_complete_answers(server, client):
    requests = [
        {
            "prompt": PROMPTS[i % len(PROMPTS)],
            "max_tokens": 20 + i % 5,
            "temperature": 0.8,
            "seed": i,
        }
        for i in range(32)
    ]
    alone = [client.completions.create(model="smallgpt", **r) for r in requests[:6]]

    async def all_at_once():
        async with httpx.AsyncClient(base_url=server, timeout=60) as http:
            return await asyncio.wait_for(
                asyncio.gather(*(http.post("/v1/completions", json=r) for r in requests)),
                timeout=120,
            )

    answers = [r.json() for r in asyncio.run(all_at_once())]
    for request, answer in zip(requests, answers):
        (choice,) = answer["choices"]
        tokens = answer["usage"]["completion_tokens"]
        assert choice["finish_reason"] in ("stop", "length")
        assert tokens == request["max_tokens"] or choice["finish_reason"] == "stop"
    assert [a["choices"][0]["text"] for a in answers[:6]] == [a.choices[0].text for a in alone]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["running"] == health["waiting"] == 0


def test_api_key_guards_everything_but_health(run):
    with running_server(run, env={"SMALLGPT_API_KEY": "s3cret"}) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        refused = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        with openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", timeout=30) as c:
            assert c.completions.create(model="smallgpt", prompt="a", max_tokens=2).choices
        with (
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", timeout=30) as c,
            pytest.raises(openai.AuthenticationError),
        ):
            c.models.list()


def test_an_idle_connection_outlives_the_clients_keepalive_expiry(server):
    # httpx (and so the openai client) reuses an idle connection for up to 5 s; the server must
    # keep it open past that, or a reuse at the moment it closes fails with a read error.
    expiry = httpx.Limits().keepalive_expiry
    limits = httpx.Limits(keepalive_expiry=60)
    with httpx.Client(base_url=server, timeout=30, limits=limits) as http:
        first = http.get("/health")
        time.sleep(expiry + 1)
        second = http.get("/health")
    assert first.status_code == second.status_code == 200
    assert second.extensions["network_stream"] is first.extensions["network_stream"]


def test_server_binds_to_loopback_by_default():
    assert _parser().parse_args(["--checkpoint", "x"]).host == "127.0.0.1"


def test_full_queue_answers_503_with_retry_after(run):
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    # No lifespan under ASGITransport: the scheduler never starts, so the queue stays full.
    app = create_app(model, tokenizer, max_batch=1, max_queue=1)

    async def fill_then_ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            waiting = asyncio.create_task(
                http.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
            )
            for _ in range(200):
                if app.state.scheduler.load()["waiting"]:
                    break
                await asyncio.sleep(0.01)
            refused = await http.post("/v1/completions", json={"prompt": "b", "max_tokens": 2})
            waiting.cancel()
            return refused

    refused = asyncio.run(fill_then_ask())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"


def test_scheduler_batches_match_generate_and_cancel_stops_a_sequence(run):
    """Sequences of different lengths admitted at different steps each decode as if alone."""
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    scheduler = Scheduler(model, eos_token_id=None, max_batch=3, max_queue=16)
    prompts = [_encode_prompt(tokenizer, p) for p in PROMPTS[:6]]
    outputs: list[list[int]] = [[] for _ in prompts]
    reasons: dict[int, str] = {}

    def sequence(i: int, cancel_after: int | None = None) -> Sequence:
        def on_token(t: int) -> None:
            outputs[i].append(t)
            if cancel_after is not None and len(outputs[i]) == cancel_after:
                seqs[i].cancel()

        params = SamplingParams(max_tokens=10 + i, temperature=0.9, top_k=30, seed=100 + i)
        return Sequence(prompts[i], params, on_token, lambda r: reasons.__setitem__(i, r))

    seqs = [sequence(i, cancel_after=3 if i == 5 else None) for i in range(6)]
    scheduler.submit(seqs[:2])
    with torch.no_grad():
        scheduler.step()
        scheduler.step()
        scheduler.submit(seqs[2:])  # joins a running batch
        for _ in range(100):
            if len(reasons) == 6:
                break
            scheduler.step()
    assert reasons == {**dict.fromkeys(range(5), "length"), 5: "cancelled"}
    assert len(outputs[5]) == 3
    for i in range(5):
        (expected,) = generate(model, [prompts[i]], 10 + i, temperature=0.9, top_k=30, seed=100 + i)
        assert outputs[i] == expected
    assert scheduler.free and sorted(scheduler.free) == [0, 1, 2]


def test_missing_extra_names_smallgpt_serve(run):
    code = (
        "import sys; sys.modules['uvicorn'] = None; sys.modules['starlette'] = None\n"
        "from smallgpt.serve.cli import main; sys.exit(main(['--checkpoint', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(run)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "smallgpt[serve]" in done.stderr, done.stderr
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    blocked = {name: None for name in ("starlette", "starlette.applications")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in blocked.items():
            patch.setitem(sys.modules, name, value)
        with pytest.raises(ImportError, match=r"smallgpt\[serve\]"):
            create_app(model, tokenizer)


def test_a_client_that_goes_away_cancels_its_sequences(run):
    _, tokenizer, _ = load_for_inference(run, device="cpu")
    params = SamplingParams(max_tokens=5)
    sequences = [Sequence([1], params, print, print) for _ in range(2)]

    class Gone:
        async def is_disconnected(self) -> bool:
            return True

    async def drain():
        # no token ever arrives; the wait times out, finds the client gone, and gives up
        inbox = _Inbox(asyncio.get_running_loop())
        return [e async for e in _events(inbox, [_Choice(tokenizer, [])] * 2, sequences, Gone())]

    assert asyncio.run(asyncio.wait_for(drain(), timeout=10)) == []
    assert all(seq.cancelled for seq in sequences)


def test_prompts_admitted_together_are_prefilled_as_if_alone(run):
    """One right-padded pass gives each prompt the logits and keys/values of running it alone."""
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    scheduler = Scheduler(model, eos_token_id=None, max_batch=6)
    prompts = [_encode_prompt(tokenizer, p) for p in PROMPTS[:6]]
    assert len({len(p) for p in prompts}) > 2
    slots = [5, 0, 3, 1, 4, 2]
    with torch.inference_mode():
        logits = scheduler._prefill(prompts, slots)
        for row, (prompt, slot) in enumerate(zip(prompts, slots)):
            ids = torch.tensor([prompt])
            alone = model.logits(model.hidden(ids)[:, -1])  # no cache: the plain forward pass
            torch.testing.assert_close(
                logits[row : row + 1], alone, rtol=0, atol=1e-5 * float(alone.abs().max())
            )
            cache = model.new_kv_cache(1, len(prompt))
            model.hidden(ids, kv_cache=cache)
            n = len(prompt)
            assert scheduler.pool.lengths[slot] == n
            for pool, reference in ((scheduler.pool.k, cache.k), (scheduler.pool.v, cache.v)):
                torch.testing.assert_close(
                    pool[:, slot, :, :n],
                    reference[:, 0],
                    rtol=0,
                    atol=1e-5 * float(reference.abs().max()),
                )


def test_greedy_batched_prefill_and_decoding_equal_generate_alone_in_float64(run):
    # float64: batched and single-sequence rounding differ far below any argmax gap
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    model = model.double()
    scheduler = Scheduler(model, eos_token_id=None, max_batch=6)
    groups: list[int] = []
    prefill = scheduler._prefill

    def counted(prompts, slots):
        groups.append(len(prompts))
        return prefill(prompts, slots)

    scheduler._prefill = counted
    prompts = [_encode_prompt(tokenizer, p) for p in PROMPTS[:6]]
    outputs: list[list[int]] = [[] for _ in prompts]
    reasons: dict[int, str] = {}
    scheduler.submit(
        [
            Sequence(
                p,
                SamplingParams(max_tokens=12, temperature=0),
                outputs[i].append,
                lambda r, i=i: reasons.__setitem__(i, r),
            )
            for i, p in enumerate(prompts)
        ]
    )
    for _ in range(20):
        if len(reasons) == len(prompts):
            break
        scheduler.step()
    assert groups == [6]  # all six in one forward pass
    assert reasons == dict.fromkeys(range(6), "length")
    for prompt, output in zip(prompts, outputs):
        assert output == generate(model, [prompt], 12, temperature=0)[0]


def test_a_prompt_that_fails_its_prefill_fails_alone(run):
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    scheduler = Scheduler(model, eos_token_id=None, max_batch=4)
    good = [_encode_prompt(tokenizer, p) for p in PROMPTS[:2]]
    prompts = [good[0], [1, model.get_vocab_size() + 5], good[1]]
    outputs: list[list[int]] = [[] for _ in prompts]
    reasons: dict[int, str] = {}
    params = [SamplingParams(max_tokens=8, temperature=0.9, seed=20 + i) for i in range(3)]
    scheduler.submit(
        [
            Sequence(p, params[i], outputs[i].append, lambda r, i=i: reasons.__setitem__(i, r))
            for i, p in enumerate(prompts)
        ]
    )
    for _ in range(20):
        if len(reasons) == len(prompts):
            break
        scheduler.step()
    assert reasons[0] == reasons[2] == "length"
    assert reasons[1].startswith("error:") and "vocab" in reasons[1] and outputs[1] == []
    for i in (0, 2):
        expected = generate(model, [prompts[i]], 8, temperature=0.9, seed=20 + i)[0]
        assert outputs[i] == expected
    assert sorted(scheduler.free) == [0, 1, 2, 3]


def test_an_unexpected_failure_in_a_step_fails_its_batch_and_the_loop_serves_on(run):
    # Not only the errors a step expects (out of memory, a bad prompt): a dead loop thread
    # would leave every client waiting until its timeout.
    model, tokenizer, _ = load_for_inference(run, device="cpu")
    scheduler = Scheduler(model, eos_token_id=None, max_batch=2)
    forward, calls = scheduler._forward, []

    def fails_once(runs):
        calls.append(len(runs))
        if len(calls) == 1:
            raise KeyError("a bug")
        return forward(runs)

    scheduler._forward = fails_once
    prompt = _encode_prompt(tokenizer, PROMPTS[0])
    finished: dict[str, list[str]] = {"first": [], "second": []}
    outputs: list[int] = []

    def submit(name, on_token):
        done = threading.Event()
        scheduler.submit(
            [
                Sequence(
                    prompt,
                    SamplingParams(max_tokens=4, temperature=0),
                    on_token,
                    lambda r: (finished[name].append(r), done.set()),
                )
            ]
        )
        return done

    scheduler.start()
    try:
        assert submit("first", lambda t: None).wait(timeout=30)
        assert submit("second", outputs.append).wait(timeout=30)
    finally:
        scheduler.stop()
    assert finished["first"] == ["error: KeyError: 'a bug'"]
    assert finished["second"] == ["length"]
    assert outputs == generate(model, [prompt], 4, temperature=0)[0]
    assert sorted(scheduler.free) == [0, 1]


def test_the_decoding_thread_runs_on_the_thread_count_asked(run, capsys):
    model, _, _ = load_for_inference(run, device="cpu")
    main_threads = torch.get_num_threads()
    asked = main_threads + 1
    seen: list[int] = []
    done = threading.Event()
    scheduler = Scheduler(model, eos_token_id=None, max_batch=2, num_threads=asked)
    scheduler.start()
    try:
        scheduler.submit(
            [
                Sequence(
                    [1, 2],
                    SamplingParams(max_tokens=3),
                    lambda t: seen.append(torch.get_num_threads()),
                    lambda r: done.set(),
                )
            ]
        )
        assert done.wait(timeout=30)
    finally:
        scheduler.stop()
    assert seen == [asked] * 3 and torch.get_num_threads() == main_threads
    assert Scheduler(model, eos_token_id=None).num_threads == main_threads
    with pytest.raises(ValueError, match="num_threads"):
        Scheduler(model, eos_token_id=None, num_threads=0)
    assert main(["--checkpoint", str(run), "--threads", "0"]) == 1
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_the_inbox_wakes_the_loop_only_for_events_that_ask():
    async def scenario():
        inbox = _Inbox(asyncio.get_running_loop())

        def from_thread(*puts):
            thread = threading.Thread(target=lambda: [inbox.put(*p) for p in puts])
            thread.start()
            thread.join()

        waiting = asyncio.create_task(inbox.take(timeout=0.3))
        await asyncio.sleep(0)
        from_thread(((0, "token", 5), False), ((0, "token", 6), False))
        quiet = await waiting  # tokens put without a wake-up leave the loop asleep
        waiting = asyncio.create_task(inbox.take(timeout=30))
        await asyncio.sleep(0)
        start = time.monotonic()
        from_thread(((1, "token", 7), False), ((1, "finish", "length"),))
        woken = await waiting
        eager = [((0, "token", t),) for t in range(100)]
        from_thread(*eager)
        taken = []
        while len(taken) < 100:
            events, timed_out = await inbox.take(timeout=5)
            assert not timed_out
            taken += events
        return quiet, woken, time.monotonic() - start, taken

    quiet, woken, seconds, taken = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert quiet == ([(0, "token", 5), (0, "token", 6)], True)
    assert woken == ([(1, "token", 7), (1, "finish", "length")], False) and seconds < 5
    assert taken == [(0, "token", t) for t in range(100)]
