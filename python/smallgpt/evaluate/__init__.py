"""Evaluation: the one language-model evaluation loop, BLEU and reported metrics; `python -m smallgpt.evaluate`."""

from smallgpt.evaluate.bleu import (
    compute_bleu_score,
    corpus_bleu,
)
from smallgpt.evaluate.lm import (
    Batch,
    TextWindows,
    batch_tensors,
    compute_perplexity,
    evaluate_checkpoint,
    evaluate_lm,
    score_batches,
)
from smallgpt.evaluate.metrics import (
    EvalResult,
    Throughput,
    model_flops_utilization,
    peak_flops,
)

__all__ = [
    "Batch",
    "EvalResult",
    "TextWindows",
    "Throughput",
    "batch_tensors",
    "compute_bleu_score",
    "compute_perplexity",
    "corpus_bleu",
    "evaluate_checkpoint",
    "evaluate_lm",
    "model_flops_utilization",
    "peak_flops",
    "score_batches",
]
