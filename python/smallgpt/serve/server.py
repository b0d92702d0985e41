"""The HTTP server: OpenAI's completions API over a Scheduler, and the page at `/`.

`create_app` builds a Starlette ASGI app (the `smallgpt[serve]` extra); `parse_completion`
checks a request body and names the field that is wrong. Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from smallgpt.generate.decoding import _encode_prompt
from smallgpt.model.gpt import SmallGPT
from smallgpt.serve.scheduler import QueueFull, SamplingParams, Scheduler, Sequence

EXTRA_HINT = "the server needs the serve extra: pip install 'smallgpt[serve]' (fastapi, uvicorn)"
MAX_N = 16
MAX_STOPS = 4
DISCONNECT_POLL_S = 0.5  # how often a request being answered looks whether its client is gone
FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "top_k",
    "min_p",
    "user",
}


class RequestError(ValueError):
    """A bad request: HTTP `status`, the offending field `param` (None: the whole body)."""

    def __init__(self, message: str, param: str | None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def error_body(
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class CompletionRequest:
    """A checked `/v1/completions` request."""

    prompts: list[str]
    params: SamplingParams
    n: int
    stop: list[str]
    stream: bool
    include_usage: bool


def _number(
    body: dict, name: str, default: float | None, lo: float, hi: float, lo_open: bool = False
) -> float | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"'{name}' must be a number, got {value!r}", name)
    if value < lo or value > hi or (lo_open and value == lo):
        left = "(" if lo_open else "["
        raise RequestError(f"'{name}' must be in {left}{lo:g}, {hi:g}], got {value!r}", name)
    return float(value)


def _integer(
    body: dict, name: str, default: int | None, lo: int, hi: int | None = None
) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer, got {value!r}", name)
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise RequestError(f"'{name}' must be {bound}, got {value}", name)
    return value


def _strings(body: dict, name: str, max_items: int | None) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise RequestError(f"'{name}' must be a string or a list of strings", name)
    if not items or (max_items is not None and len(items) > max_items):
        most = "" if max_items is None else f" and at most {max_items}"
        raise RequestError(f"'{name}' must hold at least one string{most}", name)
    if name == "stop" and not all(items):
        raise RequestError("'stop' strings must not be empty", name)
    for s in items:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"'{name}' is not valid UTF-8 text", name) from None
    return items


def parse_completion(raw: bytes, model_name: str) -> CompletionRequest:
    """Check a `/v1/completions` body. Raises RequestError naming the first bad field."""
    try:
        # surrogateescape keeps bad bytes until we know which field holds them
        body = json.loads(raw.decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as error:
        raise RequestError(f"the request body is not valid JSON ({error})", None) from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise RequestError(
            f"unknown field '{unknown[0]}' (accepted: {', '.join(sorted(FIELDS))})", unknown[0]
        )
    model = body.get("model", model_name)
    if not isinstance(model, str):
        raise RequestError("'model' must be a string", "model")
    if model != model_name:
        raise RequestError(
            f"model '{model}' is not served here; use '{model_name}'",
            "model",
            404,
            "model_not_found",
        )
    if "prompt" not in body:
        raise RequestError("'prompt' is required (a string or a list of strings)", "prompt")
    prompts = _strings(body, "prompt", None) or [""]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"'stream' must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError(
            "'stream_options' accepts only {\"include_usage\": bool}", "stream_options"
        )
    params = SamplingParams(
        max_tokens=_integer(body, "max_tokens", 16, 1),
        temperature=_number(body, "temperature", 1.0, 0.0, math.inf),
        top_k=_integer(body, "top_k", None, 1),
        top_p=_number(body, "top_p", None, 0.0, 1.0, lo_open=True),
        min_p=_number(body, "min_p", None, 0.0, 1.0),
        seed=_integer(body, "seed", None, 0, 2**63 - 1),
    )
    return CompletionRequest(
        prompts=prompts,
        params=params,
        n=_integer(body, "n", 1, 1, MAX_N),
        stop=_strings(body, "stop", MAX_STOPS) or [],
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
    )


class _Choice:
    """The text of one choice: stream-decoded tokens, cut before the first stop string."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.decoder, self.eos = tokenizer.stream_decoder(), tokenizer.eos_token_id
        self.stop, self.text, self.sent = stop, "", 0
        self.tokens, self.finish_reason = 0, None

    def push(self, token: int) -> str:
        """Take one sampled id; returns the text now safe to send (held back: a stop's prefix)."""
        if token == self.eos or self.finish_reason:
            return ""
        self.tokens += 1
        self.text += self.decoder.push(token)
        return self._release(final=False)

    def finish(self, reason: str) -> str:
        """The scheduler's finish reason; returns the rest of the text."""
        if self.finish_reason is None:
            self.text += self.decoder.finish()
            self.finish_reason = reason
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        cuts = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.text, self.finish_reason = self.text[: min(cuts)], "stop"
            final = True
        end = len(self.text)
        if not final:
            for s in self.stop:
                for k in range(min(len(s) - 1, end), 0, -1):
                    if self.text.endswith(s[:k]):
                        end = min(end, len(self.text) - k)
                        break
        piece, self.sent = self.text[self.sent : end], max(self.sent, end)
        return piece


class _Inbox:
    """One request's scheduler events on their way to the event loop.

    The scheduler's thread appends; the loop is woken once for everything appended before it
    runs, so a step's tokens cost one wake-up rather than one each (each wake-up takes the GIL
    from the decoding thread between its operations). An event put with `wake=False` waits for
    the next one that wakes the loop (or for a `take` that times out).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._lock = loop, threading.Lock()
        self._items: list[tuple[int, str, Any]] = []
        self._ready = asyncio.Event()
        self._wake_pending = False

    def put(self, item: tuple[int, str, Any], wake: bool = True) -> None:
        """Append an event (from any thread)."""
        with self._lock:
            self._items.append(item)
            if self._wake_pending or not wake:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    async def take(self, timeout: float) -> tuple[list[tuple[int, str, Any]], bool]:
        """(every event appended so far, whether no wake-up came within `timeout` s)."""
        with self._lock:
            items, self._items = self._items, []
        if items:
            return items, False
        self._ready.clear()
        timed_out = False
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            timed_out = True
        with self._lock:
            items, self._items = self._items, []
        return items, timed_out


class CompletionService:
    """Turns checked requests into scheduler sequences and their OpenAI answers."""

    def __init__(self, model: SmallGPT, tokenizer: Any, scheduler: Scheduler, model_name: str):
        self.tokenizer, self.scheduler, self.model_name = tokenizer, scheduler, model_name
        self.context = model.config.max_seq_len

    def encode(self, request: CompletionRequest) -> list[list[int]]:
        """Token ids of each prompt. Raises RequestError when a prompt does not fit the context."""
        encoded = [_encode_prompt(self.tokenizer, p) for p in request.prompts]
        for ids in encoded:
            if len(ids) >= self.context:
                raise RequestError(
                    f"the prompt is {len(ids)} tokens; the model's context is {self.context}",
                    "prompt",
                    code="context_length_exceeded",
                )
            room = self.context - len(ids)
            if request.params.max_tokens > room:
                raise RequestError(
                    f"'max_tokens' {request.params.max_tokens} does not fit: the prompt is "
                    f"{len(ids)} tokens of a {self.context}-token context, so at most {room}",
                    "max_tokens",
                    code="context_length_exceeded",
                )
        return encoded

    def submit(self, request: CompletionRequest, encoded: list[list[int]]):
        """Queue every choice; returns (sequences, the _Inbox of their (index, kind, value)s)."""
        inbox = _Inbox(asyncio.get_running_loop())
        # Tokens are looked at as they come only to stream them or to find a stop string;
        # otherwise the loop sleeps until a choice finishes.
        eager = request.stream or bool(request.stop)

        def callbacks(index: int):
            return (lambda t: inbox.put((index, "token", t), wake=eager)), (
                lambda r: inbox.put((index, "finish", r))
            )

        sequences = []
        for p, ids in enumerate(encoded):
            for j in range(request.n):
                seed = request.params.seed
                # sample j uses seed + j, as `python -m smallgpt.generate` does
                params = SamplingParams(
                    **{**request.params.__dict__, "seed": None if seed is None else seed + j}
                )
                on_token, on_finish = callbacks(p * request.n + j)
                sequences.append(Sequence(ids, params, on_token, on_finish))
        if len(sequences) > self.scheduler.max_queue:
            raise RequestError(
                f"the request asks for {len(sequences)} sequences (prompts x 'n'); this server "
                f"queues at most {self.scheduler.max_queue} (--max-queue)",
                "n",
            )
        self.scheduler.submit(sequences)
        return sequences, inbox

    def chunk(self, cid: str, created: int, choices: list[dict], usage: dict | None = None):
        body = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": self.model_name,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return body


def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def _usage(encoded: list[list[int]], choices: list[_Choice]) -> dict[str, int]:
    prompt = sum(len(ids) for ids in encoded)
    completion = sum(c.tokens for c in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def _events(inbox: _Inbox, choices: list[_Choice], sequences: list[Sequence], request: Any):
    """Yield (index, text piece, finish reason or None) until every choice has finished;
    cancels the sequences when the client goes away."""
    pending, loop = len(choices), asyncio.get_running_loop()
    checked = loop.time()
    try:
        while pending:
            events, timed_out = await inbox.take(timeout=DISCONNECT_POLL_S)
            if timed_out or loop.time() - checked > DISCONNECT_POLL_S:
                checked = loop.time()
                if await request.is_disconnected():
                    return
            for index, kind, value in events:
                choice = choices[index]
                if kind == "token":
                    was_done = choice.finish_reason is not None
                    piece = choice.push(value)
                    if choice.finish_reason and not was_done:
                        sequences[index].cancel()  # a stop string ended it
                        yield index, piece, None
                    elif piece:
                        yield index, piece, None
                else:
                    pending -= 1
                    if value.startswith("error"):
                        raise RuntimeError(value)
                    reason = "length" if value == "length" else "stop"
                    yield index, choice.finish(reason), choice.finish_reason
    finally:
        for seq in sequences:
            seq.cancel()


class _RequireKey:
    """ASGI middleware: with a key, HTTP requests but `/health` and `/` need the bearer token."""

    OPEN = ("/health", "/")

    def __init__(self, app: Any, key: str | None, reject: Any) -> None:
        self.app, self.reject = app, reject
        self.expected = None if key is None else f"Bearer {key}".encode("latin-1")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.expected and scope["path"] not in self.OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await self.reject()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    model: SmallGPT,
    tokenizer: Any,
    *,
    model_name: str = "smallgpt",
    max_batch: int = 16,
    max_queue: int = 64,
    api_key: str | None = None,
    num_threads: int | None = None,
) -> Any:
    """The ASGI app serving `model`: `/v1/completions`, `/v1/models`, `/health` and `/`.

    With `api_key`, every request but `/health` and the static page needs
    `Authorization: Bearer <api_key>`. `num_threads`: torch's intra-op threads for decoding
    (default: this thread's `torch.get_num_threads()`). `app.state.scheduler` is the Scheduler
    (started and stopped by the app's lifespan). Raises ImportError naming `smallgpt[serve]` without it.
    """
    try:  # the serve extra
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
        from starlette.routing import Route
    except ImportError as error:
        raise ImportError(f"{EXTRA_HINT} ({error})") from None

    scheduler = Scheduler(
        model,
        eos_token_id=tokenizer.eos_token_id,
        max_batch=max_batch,
        max_queue=max_queue,
        num_threads=num_threads,
    )
    service = CompletionService(model, tokenizer, scheduler, model_name)
    page = resources.files("smallgpt.serve").joinpath("static/index.html").read_text("utf-8")

    def fail(error: RequestError) -> JSONResponse:
        return JSONResponse(
            error_body(str(error), error.param, code=error.code), status_code=error.status
        )

    async def completions(request):
        try:
            parsed = parse_completion(await request.body(), model_name)
            encoded = service.encode(parsed)
            sequences, inbox = service.submit(parsed, encoded)
        except RequestError as error:
            return fail(error)
        except QueueFull as error:
            return JSONResponse(
                error_body(
                    f"server busy: {error}; retry shortly", None, "server_error", "queue_full"
                ),
                status_code=503,
                headers={"Retry-After": "1"},
            )
        choices = [_Choice(tokenizer, parsed.stop) for _ in sequences]
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        stream = _events(inbox, choices, sequences, request)
        if parsed.stream:

            async def sse():
                try:
                    async for index, piece, finish in stream:
                        body = service.chunk(cid, created, [_choice(index, piece, finish)])
                        yield f"data: {json.dumps(body)}\n\n"
                    if parsed.include_usage:
                        usage = service.chunk(cid, created, [], _usage(encoded, choices))
                        yield f"data: {json.dumps(usage)}\n\n"
                except RuntimeError as error:
                    yield f"data: {json.dumps(error_body(str(error), None, 'server_error'))}\n\n"
                finally:  # also when the client went away and the response was closed
                    for seq in sequences:
                        seq.cancel()
                yield "data: [DONE]\n\n"

            return StreamingResponse(
                sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        try:
            async for _ in stream:
                pass
        except RuntimeError as error:
            return JSONResponse(error_body(str(error), None, "server_error"), status_code=500)
        answer = [_choice(i, c.text, c.finish_reason) for i, c in enumerate(choices)]
        return JSONResponse(service.chunk(cid, created, answer, _usage(encoded, choices)))

    def reject() -> JSONResponse:
        return JSONResponse(
            error_body(
                "missing or wrong API key: send 'Authorization: Bearer KEY'",
                None,
                code="invalid_api_key",
            ),
            status_code=401,
        )

    async def models(request):
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "smallgpt",
                        "max_model_len": service.context,
                    }
                ],
            }
        )

    async def health(request):
        return JSONResponse({"status": "ok", **scheduler.load()})

    async def index(request):
        return HTMLResponse(page)

    async def http_error(request, exc):
        return JSONResponse(error_body(str(exc.detail), None), status_code=exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/", index, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
        middleware=[Middleware(_RequireKey, key=api_key, reject=reject)],
    )
    app.state.scheduler = scheduler
    return app
