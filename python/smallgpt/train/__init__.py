"""Training: the trainer loop and its callbacks (health checks, profiling), runtime, logging; `python -m smallgpt.train`."""

from smallgpt.train.build import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    PLOT_FILE,
    SUMMARY_FILE,
)
from smallgpt.train.callbacks import (
    StepResult,
    TrainerCallback,
    TrainerView,
    TrainingHealthWarning,
    TrainSummary,
)
from smallgpt.train.step import (
    TrainingDivergedError,
    accumulate_gradients,
)
from smallgpt.train.trainer import Trainer

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "PLOT_FILE",
    "SUMMARY_FILE",
    "StepResult",
    "TrainSummary",
    "Trainer",
    "TrainerCallback",
    "TrainerView",
    "TrainingDivergedError",
    "TrainingHealthWarning",
    "accumulate_gradients",
]
