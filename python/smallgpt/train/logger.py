"""Where training records go: `metrics.jsonl`, TensorBoard, Weights & Biases, `samples.txt`.

Only rank 0 creates a RunLogger. A record is a flat dict with `kind` ("train" or "val") and
`step`; its numeric fields become scalars named `<kind>/<field>` in TensorBoard and W&B.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.txt"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line from a crash is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLogger:
    """Writes records to every enabled sink and keeps them in `records` (for the loss plot).

    resume_step: when resuming, records after that step (written by the interrupted run after its
    last checkpoint) are dropped, so the file describes one consistent history; None starts a new
    file. Raises ImportError with the install command when W&B is requested but not installed.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "smallgpt",
        wandb_run_name: str | None = None,
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            self.records = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR))
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError as exc:
                raise ImportError(
                    "log.wandb=true needs Weights & Biases: pip install wandb "
                    "(or pip install 'smallgpt[wandb]'), or set log.wandb=false"
                ) from exc
            self._wandb = wandb_module.init(
                project=wandb_project, name=wandb_run_name, config=config, dir=str(self.run_dir)
            )

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (needs `kind` and `step`) to every sink."""
        self.records.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = {
            f"{record['kind']}/{key}": float(value)
            for key, value in record.items()
            if key not in ("kind", "step")
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        if self._tensorboard is not None:
            for name, value in scalars.items():
                self._tensorboard.add_scalar(name, value, record["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["step"])

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Add a text entry (e.g. a training warning) to TensorBoard and W&B."""
        if self._tensorboard is not None:
            self._tensorboard.add_text(tag, text, step)
        if self._wandb is not None:
            self._wandb.log({tag: text}, step=step)

    def log_samples(self, step: int, samples: list[str]) -> None:
        """Append generated samples to samples.txt (and TensorBoard/W&B text)."""
        if not samples:
            return
        text = "".join(f"--- step {step}, sample {i + 1}\n{s}\n" for i, s in enumerate(samples))
        with (self.run_dir / SAMPLES_FILE).open("a", encoding="utf-8") as f:
            f.write(text)
        self.log_text("samples", "\n\n".join(samples), step)

    def close(self) -> None:
        """Flush and close every sink."""
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
