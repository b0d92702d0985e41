"""When the training loop stops: a signal, a stop request (e.g. a callback's early stopping) or
the time budget, agreed on by every rank."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from smallgpt.train.distributed import DistInfo, all_reduce_sum


class StopControl:
    """The loop's stop state. `reason` and `interrupted` are set once the ranks agree to stop."""

    def __init__(self, max_time_minutes: float | None) -> None:
        """Stop once `max_time_minutes` of training have passed (None: no budget)."""
        self.max_time_minutes = max_time_minutes
        self.signal_name: str | None = None  # the first SIGTERM/SIGINT received
        self.requested: str | None = None
        self.last_good_step: int | None = None  # see `request`
        self.reason: str | None = None
        self.interrupted = False  # a signal stopped the run: no final validation

    def request(self, reason: str, *, last_good_step: int | None = None) -> None:
        """Stop after the current step; `last_good_step` as in `Trainer.request_stop`."""
        self.requested = reason
        self.last_good_step = last_good_step

    def should_stop(self, elapsed_s: float, device: torch.device, dist: DistInfo) -> bool:
        """Whether any rank wants to stop after `elapsed_s` seconds of training (collective: all
        ranks agree, and agree whether it was a signal)."""
        reason = self._local_reason(elapsed_s)
        votes = torch.tensor(
            [float(reason is not None), float(self.signal_name is not None)], device=device
        )
        stop_votes, signal_votes = all_reduce_sum(votes, dist).tolist()
        if stop_votes > 0:
            self.reason = reason or "stop requested by another rank"
            self.interrupted = signal_votes > 0
        return stop_votes > 0

    def _local_reason(self, elapsed_s: float) -> str | None:
        if self.signal_name is not None:
            return f"signal {self.signal_name}"
        if self.requested is not None:
            return self.requested
        budget = self.max_time_minutes
        if budget is not None and elapsed_s >= budget * 60:
            return f"time budget of {budget:g} minutes reached"
        return None

    @contextlib.contextmanager
    def signal_handlers(self, on_signal: Callable[[str], None]) -> Iterator[None]:
        """While open, SIGTERM/SIGINT set `signal_name` (and call `on_signal` with it) so the
        loop finishes its step, saves and returns; a second SIGINT interrupts at once. Signals
        can only be handled on the main thread: elsewhere this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: Any) -> None:
            if self.signal_name is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signal_name = signal.Signals(signum).name
            on_signal(self.signal_name)

        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
