"""Continuous batching: concurrent sequences share each decoding step's forward pass.

Waiting sequences are admitted into the running batch at step boundaries (the prompts admitted
together are prefilled in one right-padded forward pass, then each one's keys/values move into a
free slot of a shared pool) and finished ones are retired, so a slot frees the moment its
sequence ends. Every slot keeps its own length, so each sequence has its own positions. Sampling
is `smallgpt.generate`'s `sample_next_token`, one call for all sequences with the same settings,
with one generator per seeded sequence, which makes a seeded sequence independent of its batch
mates.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from smallgpt.generate.sampling import sample_next_token
from smallgpt.model.gpt import SmallGPT

_log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The waiting queue has no room for the submitted sequences (retry later)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is sampled: the options of `smallgpt.generate.iter_generate`."""

    max_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None


class Sequence:
    """One generation request: its prompt ids, sampling settings and where its tokens go.

    `on_token(id)` is called (from the scheduler's thread) for every sampled id, the end-of-text
    id included; then `on_finish(reason)` once, reason "stop" (end-of-text), "length"
    (max_tokens reached), "cancelled" or "error: ...".
    """

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_token: Callable[[int], None],
        on_finish: Callable[[str], None],
    ) -> None:
        self.prompt_ids, self.params = prompt_ids, params
        self.on_token, self.on_finish = on_token, on_finish
        self.cancelled = False
        self.generated = 0

    def cancel(self) -> None:
        """Stop this sequence at the next step boundary (thread-safe: a flag)."""
        self.cancelled = True


class _SlotPool:
    """Keys/values (layers, slots, heads, max_seq_len, head_dim) and each slot's filled length."""

    def __init__(self, model: SmallGPT, num_slots: int) -> None:
        cfg, weight = model.config, model.transformer.wte.weight
        shape = (cfg.num_layers, num_slots, cfg.num_heads, cfg.max_seq_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.v = torch.zeros_like(self.k)
        self.lengths = [0] * num_slots  # host-side: no device sync to plan a step


class _LayerSlots:
    """One layer of a _SlotBatch, as SmallGPT's attention expects (`attend`)."""

    def __init__(self, batch: _SlotBatch, layer: int) -> None:
        self.batch, self.layer = batch, layer

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store each slot's new key/value at its length; attend over its filled slots."""
        b = self.batch
        keys, values = b.pool.k[self.layer, b.span], b.pool.v[self.layer, b.span]  # views
        if b.uniform:
            at = b.width - 1
            keys[:, :, at : at + 1] = k
            values[:, :, at : at + 1] = v
        else:
            keys[b.rows, :, b.lengths] = k[:, :, 0]
            values[b.rows, :, b.lengths] = v[:, :, 0]
        return F.scaled_dot_product_attention(
            q, keys[:, :, : b.width], values[:, :, : b.width], attn_mask=b.mask
        )


class _SlotBatch:
    """One decoding step over the neighbouring slots `span` of a pool, a KVCache stand-in for
    SmallGPT.hidden. Every slot of the span decodes: a free one among the `running` slots
    decodes a dummy token at its slot 0, which costs less than gathering the others' keys and
    values into a copy at every layer (they are read in place as views)."""

    def __init__(self, pool: _SlotPool, span: range, running: list[int]) -> None:
        device = pool.k.device
        self.pool, self.running, self.span = pool, running, slice(span.start, span.stop)
        host_lengths = [pool.lengths[s] for s in span]
        self.lengths = torch.tensor(host_lengths, dtype=torch.long, device=device)
        self.rows = torch.arange(len(span), device=device)
        self.width = max(host_lengths) + 1
        self.uniform = len(set(host_lengths)) == 1
        self.start = torch.zeros_like(self.lengths)
        self.mask: Tensor | None = None

    def begin(self, num_new: int) -> Tensor:
        """Positions (B, 1) of the step's tokens; sets the mask of slots shorter than the widest."""
        if num_new != 1:
            raise ValueError("a slot batch decodes one token per sequence and step")
        if not self.uniform:  # a shorter slot must not see the stale keys past its length
            keys = torch.arange(self.width, device=self.lengths.device)
            self.mask = (keys[None, :] <= self.lengths[:, None])[:, None, None, :]
        return self.lengths[:, None]

    def layer(self, index: int) -> _LayerSlots:
        return _LayerSlots(self, index)

    def advance(self, num_new: int) -> None:
        for slot in self.running:
            self.pool.lengths[slot] += num_new


@dataclass
class _Running:
    seq: Sequence
    slot: int
    generator: torch.Generator | None
    logits: Tensor
    token: int = -1


def _settings(params: SamplingParams) -> tuple:
    """What sequences sampled in one `sample_next_token` call must share."""
    return params.temperature, params.top_k, params.top_p, params.min_p


class Scheduler:
    """Runs sequences on `model` in a background thread, up to `max_batch` at a time.

    `submit` queues sequences (at most `max_queue` wait); `start`/`stop` run and end the loop.
    The loop's thread runs torch with `num_threads` intra-op threads (default: the creating
    thread's `torch.get_num_threads()`; OpenMP's count is per thread, so it is set there).
    Prompts must fit the context with their max_tokens (the server checks it).
    """

    def __init__(
        self,
        model: SmallGPT,
        *,
        eos_token_id: int | None,
        max_batch: int = 16,
        max_queue: int = 64,
        num_threads: int | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.model, self.eos = model.eval(), eos_token_id
        self.max_batch, self.max_queue = max_batch, max_queue
        self.num_threads = torch.get_num_threads() if num_threads is None else num_threads
        self.device = model.transformer.wte.weight.device
        self.logits = model.decoding_logits()  # the served weights do not change
        self.pool = _SlotPool(model, max_batch)
        self.free = list(range(max_batch))
        self.waiting: deque[Sequence] = deque()
        self.running: list[_Running] = []
        self.steps = 0
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="smallgpt-scheduler", daemon=True)

    def submit(self, sequences: list[Sequence]) -> None:
        """Queue `sequences` (all or none). Raises QueueFull when they do not fit the queue."""
        with self._wake:
            if len(self.waiting) + len(sequences) > self.max_queue:
                raise QueueFull(
                    f"{len(self.waiting)} sequences wait already (--max-queue {self.max_queue})"
                )
            self.waiting.extend(sequences)
            self._wake.notify()

    def load(self) -> dict[str, int]:
        """How many sequences run and wait, and how many steps ran so far."""
        return {"running": len(self.running), "waiting": len(self.waiting), "steps": self.steps}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the loop; sequences still queued or running are finished as "cancelled"."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()
        for seq in [*self.waiting, *(r.seq for r in self.running)]:
            seq.on_finish("cancelled")
        self.waiting.clear()
        self.running.clear()

    def _loop(self) -> None:
        torch.set_num_threads(self.num_threads)
        while True:
            with self._wake:
                while not (self._stopping or self.waiting or self.running):
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - whatever failed (out of memory, a bug),
                # the running sequences end with it and the loop serves on: a dead loop thread
                # would leave every client waiting until its timeout.
                _log.exception("a decoding step failed; its %d sequences end", len(self.running))
                for run in self.running:
                    if run.slot not in self.free:  # not retired before the failure
                        self._retire(run, f"error: {type(error).__name__}: {error}")
                self.running = []

    def step(self) -> None:
        """One step boundary: admit, sample one token for every running sequence, retire, and
        run the batched forward pass that gives the next logits."""
        with torch.inference_mode():
            self._admit()
            survivors = []
            for run, reason in zip(self.running, self._sample(self.running)):
                if reason is None:
                    survivors.append(run)
                else:
                    self._retire(run, reason)
            self.running = survivors
            if survivors:
                self._forward(survivors)
        self.steps += 1

    def _admit(self) -> None:
        admitted = []
        with self._wake:
            while self.waiting and len(admitted) < len(self.free):
                admitted.append(self.waiting.popleft())
        for seq in admitted:
            if seq.cancelled:
                seq.on_finish("cancelled")
        admitted = [seq for seq in admitted if not seq.cancelled]
        if not admitted:
            return
        # The lowest free slots: running slots stay packed, few free ones between.
        slots = sorted(self.free)[: len(admitted)]
        try:
            groups = [(admitted, slots, self._prefill([s.prompt_ids for s in admitted], slots))]
        except Exception:  # noqa: BLE001 - prompt by prompt, so a bad one fails alone
            groups = []
            for seq, slot in zip(admitted, slots):
                try:
                    groups.append(([seq], [slot], self._prefill([seq.prompt_ids], [slot])))
                except Exception as error:  # noqa: BLE001 - reported to its client
                    self.pool.lengths[slot] = 0  # a free slot decodes its dummy token at 0
                    seq.on_finish(f"error: {error}")
        for seqs, group_slots, logits in groups:
            for row, (seq, slot) in enumerate(zip(seqs, group_slots)):
                self.free.remove(slot)
                seed = seq.params.seed
                generator = None
                if seed is not None:
                    generator = torch.Generator(device=self.device).manual_seed(seed)
                self.running.append(_Running(seq, slot, generator, logits[row : row + 1]))

    def _prefill(self, prompts: list[list[int]], slots: list[int]) -> Tensor:
        """Run the prompts as one batch, each keeping its keys/values in its slot; returns their
        next-token logits (len(prompts), vocab).

        Prompts are right-padded: under the causal mask a real token never sees the padding
        after it, so each prompt's keys/values and logits are those of running it alone.
        """
        lengths = [len(p) for p in prompts]
        ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = torch.tensor(prompt)
        cache = self.model.new_kv_cache(len(prompts), max(lengths))
        hidden = self.model.hidden(ids.to(self.device), kv_cache=cache)
        for row, (slot, n) in enumerate(zip(slots, lengths)):
            self.pool.k[:, slot, :, :n] = cache.k[:, row, :, :n]
            self.pool.v[:, slot, :, :n] = cache.v[:, row, :, :n]
            self.pool.lengths[slot] = n
        last = torch.tensor(lengths, device=self.device) - 1
        return self.logits(hidden[torch.arange(len(prompts), device=self.device), last])

    def _sample(self, runs: list[_Running]) -> list[str | None]:
        """Sample every run's next token and hand it on, one `sample_next_token` call per group of
        equal settings; returns each run's finish reason, or None to go on."""
        reasons: list[str | None] = ["cancelled" if r.seq.cancelled else None for r in runs]
        groups: dict[tuple, list[int]] = {}
        for index, run in enumerate(runs):
            if reasons[index] is None:
                groups.setdefault(_settings(run.seq.params), []).append(index)
        for (temperature, top_k, top_p, min_p), indices in groups.items():
            group = [runs[i] for i in indices]
            generators = [r.generator for r in group]
            logits = group[0].logits if len(group) == 1 else torch.cat([r.logits for r in group])
            tokens = sample_next_token(
                logits,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                min_p=min_p,
                generator=None if all(g is None for g in generators) else generators,
            )
            for index, run, token in zip(indices, group, tokens[:, 0].tolist()):
                run.token = token
                seq = run.seq
                seq.generated += 1
                seq.on_token(token)
                if token == self.eos:
                    reasons[index] = "stop"
                elif seq.generated >= seq.params.max_tokens:
                    reasons[index] = "length"
        return reasons

    def _retire(self, run: _Running, reason: str) -> None:
        self.pool.lengths[run.slot] = 0
        self.free.append(run.slot)
        run.seq.on_finish(reason)

    def _forward(self, runs: list[_Running]) -> None:
        by_slot = {r.slot: r for r in runs}
        span = range(min(by_slot), max(by_slot) + 1)
        tokens = torch.tensor(
            [[by_slot[s].token if s in by_slot else 0] for s in span],
            dtype=torch.long,
            device=self.device,
        )
        batch = _SlotBatch(self.pool, span, list(by_slot))
        hidden = self.model.hidden(tokens, kv_cache=batch)  # type: ignore[arg-type]
        logits = self.logits(hidden[:, -1])
        for slot, run in by_slot.items():
            row = slot - span.start
            run.logits = logits[row : row + 1]
