"""Small hyperparameter search: post-processing (threshold, minimum lesion size) on validation probabilities, and
the fine-tuning learning rate and strategy by validation F1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from msnode_training.inference import lesion_mask
from msnode_training.metrics import score_case, summarize


@dataclass
class ValidationCase:
    case_id: str
    probability: np.ndarray
    truth: np.ndarray
    spacing_zyx: tuple[float, float, float]


@dataclass
class PostprocessingChoice:
    threshold: float
    min_lesion_volume_mm3: float
    summary: dict
    table: list[dict]


def selection_key(summary: dict) -> tuple[float, float]:
    """Higher F1 first, then fewer false-positive lesions on cases without new lesions."""
    f1 = summary["mean_f1"] if summary["mean_f1"] is not None else 0.0
    n_fp = summary["mean_n_false_positives"] if summary["mean_n_false_positives"] is not None else 0.0
    return (f1, -n_fp)


def evaluate_postprocessing(cases: Sequence[ValidationCase], threshold: float, min_volume_mm3: float) -> dict:
    return summarize([score_case(c.truth, lesion_mask(c.probability, c.spacing_zyx, threshold, min_volume_mm3),
                                 c.spacing_zyx) for c in cases])


def search_postprocessing(cases: Sequence[ValidationCase], thresholds: Sequence[float],
                          min_volumes_mm3: Sequence[float]) -> PostprocessingChoice:
    table = []
    best: PostprocessingChoice | None = None
    for threshold in thresholds:
        for min_volume in min_volumes_mm3:
            summary = evaluate_postprocessing(cases, threshold, min_volume)
            table.append({"threshold": threshold, "min_lesion_volume_mm3": min_volume, **summary})
            if best is None or selection_key(summary) > selection_key(best.summary):
                best = PostprocessingChoice(threshold, min_volume, summary, table)
    assert best is not None, "empty search grid"
    best.table = table
    return best


def search_best(candidates: Sequence[Hashable], train_and_score: Callable[[Any], float]) -> tuple[Any, dict]:
    """Train once per candidate (a learning rate, or a tuple such as (learning rate, fine-tuning strategy));
    `train_and_score` returns the validation F1. Ties keep the first candidate."""
    scores = {candidate: train_and_score(candidate) for candidate in candidates}
    best = max(candidates, key=lambda candidate: scores[candidate])
    return best, scores
