"""`train.profile=true`: torch.profiler over a few training steps.

After `profile_wait` warm-up steps (the last of them traced and discarded, as torch.profiler's
warm-up), `profile_steps` steps are recorded (CPU, and CUDA when training on a GPU; shapes and
memory) and written under `<run_dir>/profile/`:

- `trace.json`: a Chrome trace; open it in chrome://tracing or https://ui.perfetto.dev;
- `<host>_<pid>.<time>.pt.trace.json`: the same for `tensorboard --logdir RUN/profile`
  (needs the torch-tb-profiler plugin);
- `top_operators.txt`: the table printed at the end of the profiled steps, the 15 operators
  with the most self time and their share of the step time.

Only rank 0 profiles. Nothing is created when `train.profile` is off.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from smallgpt.train.callbacks import StepResult, TrainerCallback, TrainerView, TrainSummary

PROFILE_DIR = "profile"
TRACE_FILE = "trace.json"
TABLE_FILE = "top_operators.txt"
STEP_EVENT_PREFIX = "ProfilerStep"  # key_averages() merges ProfilerStep#N as ProfilerStep*


def top_operators_table(events: Any, *, device: bool, rows: int = 15) -> str:
    """The `rows` operators with the most self time (device time when `device`, else CPU) from
    `profile.key_averages()`, each with its calls, self times in ms and share of the step time
    (the summed `ProfilerStep` spans). Raises ValueError when no profiled step is present."""
    steps = [e for e in events if e.key.startswith(STEP_EVENT_PREFIX)]
    step_us = sum(e.cpu_time_total for e in steps)
    num_steps = sum(e.count for e in steps)
    if step_us <= 0:
        raise ValueError("the profile holds no ProfilerStep span; was profile.step() called?")
    ops = [e for e in events if not e.key.startswith(STEP_EVENT_PREFIX)]

    def self_time(event: Any) -> float:
        return event.self_device_time_total if device else event.self_cpu_time_total

    ops.sort(key=self_time, reverse=True)
    name_width = max([len("operator"), *(len(e.key) for e in ops[:rows])])
    unit = "device" if device else "CPU"
    header = f"{'operator':<{name_width}}  {'calls':>7}  {'self ' + unit + ' ms':>14}  {'share':>6}"
    title = (
        f"top {rows} operators by self {unit} time over {num_steps} profiled steps "
        f"({step_us / 1e3:.1f} ms of steps)"
    )
    lines = [
        title,
        header,
        "-" * len(header),
    ]
    for event in ops[:rows]:
        lines.append(
            f"{event.key:<{name_width}}  {event.count:>7}  {self_time(event) / 1e3:>14.3f}  "
            f"{100 * self_time(event) / step_us:>5.1f}%"
        )
    return "\n".join(lines)


class StepProfiler(TrainerCallback):
    """Profiles `active` training steps after `wait` warm-up steps (see the module docstring)."""

    def __init__(self, wait: int, active: int) -> None:
        if wait < 1 or active < 1:
            raise ValueError(f"profile wait and steps must be >= 1 (got {wait}, {active})")
        self.wait = wait
        self.active = active
        self.profile: torch.profiler.profile | None = None
        self.out_dir: Path | None = None
        self.table: str | None = None
        self._trainer: TrainerView | None = None

    def on_train_start(self, trainer: TrainerView) -> None:
        """Start the profiler (rank 0 only)."""
        if not trainer.dist.is_main:
            return
        self._trainer = trainer
        self.out_dir = trainer.run_dir / PROFILE_DIR
        self.out_dir.mkdir(parents=True, exist_ok=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.runtime.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profile = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(
                wait=self.wait - 1, warmup=1, active=self.active, repeat=1
            ),
            on_trace_ready=self._trace_ready,
            record_shapes=True,
            profile_memory=True,
        )
        self.profile.start()

    def on_step_end(self, trainer: TrainerView, result: StepResult) -> None:
        """Advance the profiler's schedule; stop it once the profiled steps are written."""
        if self.profile is None:
            return
        self.profile.step()
        if self.table is not None:
            self._stop()

    def on_train_end(self, trainer: TrainerView, summary: TrainSummary) -> None:
        """Stop the profiler; a run shorter than the schedule writes what it recorded."""
        if self.profile is not None:
            self._stop()
        if trainer.dist.is_main and self.table is None:
            self._print(
                f"profile: no trace written; the run needs train.profile_wait ({self.wait}) + "
                f"train.profile_steps ({self.active}) steps"
            )

    def _stop(self) -> None:
        profile, self.profile = self.profile, None
        if profile is not None:
            profile.stop()

    def _trace_ready(self, profile: torch.profiler.profile) -> None:
        assert self.out_dir is not None
        # A trace can be saved once: TensorBoard's handler writes it, trace.json is a copy.
        torch.profiler.tensorboard_trace_handler(str(self.out_dir))(profile)
        newest = max(self.out_dir.glob("*.pt.trace.json"), key=lambda p: p.stat().st_mtime_ns)
        shutil.copyfile(newest, self.out_dir / TRACE_FILE)
        device = any(a == torch.profiler.ProfilerActivity.CUDA for a in profile.activities)
        self.table = top_operators_table(profile.key_averages(), device=device)
        (self.out_dir / TABLE_FILE).write_text(self.table + "\n", encoding="utf-8")
        self._print(
            f"{self.table}\nprofile written to {self.out_dir}: open {TRACE_FILE} in "
            f"chrome://tracing or https://ui.perfetto.dev, or run "
            f"tensorboard --logdir {self.out_dir}"
        )

    def _print(self, text: str) -> None:
        if self._trainer is None:
            print(text, flush=True)
        else:
            self._trainer.write_line(text)
