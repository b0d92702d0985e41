"""BLEU through sacrebleu: the guide's sentence score (0-1) and corpus BLEU (0-100)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# ----------------------------------------------------------------------------- BLEU


def _bleu(effective_order: bool) -> Any:
    try:
        from sacrebleu.metrics import BLEU
    except ImportError as exc:  # a dependency of smallgpt, but may be missing from a bare install
        raise ImportError("BLEU needs sacrebleu: pip install sacrebleu") from exc
    return BLEU(smooth_method="exp", effective_order=effective_order)


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def compute_bleu_score(reference: str, candidate: str) -> float:
    """Sentence BLEU of `candidate` against `reference`, from 0 to 1 (the user's guide's name and
    the scale of its nltk `sentence_bleu`): sacrebleu's sentence score divided by 100.
    Smoothed ("exp") and with effective order, so a short or partly matching sentence gets a
    non-zero score where unsmoothed BLEU gives 0. Raises TypeError for non-str arguments.
    """
    _check_str(reference, "reference")
    _check_str(candidate, "candidate")
    score = _bleu(effective_order=True).sentence_score(candidate, [reference]).score
    return float(score) / 100.0


def _reference_streams(
    references: Sequence[str] | Sequence[Sequence[str]], num_candidates: int
) -> list[list[str]]:
    """sacrebleu's layout (one list per reference set) from one entry per candidate: a str or
    a sequence of str (several references, the same number for every candidate)."""
    if isinstance(references, str) or len(references) != num_candidates:
        count = "a str" if isinstance(references, str) else f"{len(references)} references"
        raise ValueError(f"need one reference entry per candidate: {count} for {num_candidates}")
    per_candidate = [[r] if isinstance(r, str) else list(r) for r in references]
    widths = {len(refs) for refs in per_candidate}
    if len(widths) > 1 or 0 in widths:
        raise ValueError("every candidate needs the same number (>= 1) of references")
    for index, refs in enumerate(per_candidate):
        for ref in refs:
            _check_str(ref, f"references[{index}]")
    return [list(stream) for stream in zip(*per_candidate)]


def _corpus_bleu_score(
    references: Sequence[str] | Sequence[Sequence[str]], candidates: Sequence[str]
) -> tuple[float, str]:
    """Corpus BLEU and sacrebleu's signature of the settings that produced it."""
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of str, not a single str")
    candidates = [_check_str(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    if not candidates:
        raise ValueError("corpus BLEU needs at least one candidate")
    metric = _bleu(effective_order=False)
    score = metric.corpus_score(candidates, _reference_streams(references, len(candidates)))
    return float(score.score), str(metric.get_signature())


def corpus_bleu(
    references: Sequence[str] | Sequence[Sequence[str]], candidates: Sequence[str]
) -> float:
    """Corpus BLEU (0-100, sacrebleu) of `candidates`: n-gram matches and lengths are summed over
    all sentences before the geometric mean and brevity penalty.

    references: one entry per candidate, a str or a list of str (several references each, the
    same number for every candidate). Raises ValueError for mismatched counts, TypeError for
    non-str texts.
    """
    return _corpus_bleu_score(references, candidates)[0]
