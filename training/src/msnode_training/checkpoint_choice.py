"""False-positive-aware checkpoint and post-processing choice on whole validation pairs (issue 19, realbg 0.3.0).

The crop proxy (`crop_validation.py`) is cheap enough to run during training but sees only its boxes; in the second
realbg run it picked a mid-training checkpoint with 14 false-positive lesions per validation pair. So at the end of
fine-tuning the command scores its candidate checkpoints (the proxy's best and the last one) on the WHOLE validation
pairs with the sliding window, searches post-processing for each, and keeps the candidate with the best
false-positive-aware score:

- per pair, lesion-wise F1 counting its false positives (`pair_f1`): MSSEG-2 F1 for a pair with new lesions (false
  positives lower its PPV); for a pair without new lesions 1 when nothing is predicted and 0 otherwise;
- the key is (mean pair F1 over ALL pairs, minus the mean number of false-positive lesions per pair): higher F1
  first, then fewer false positives. Ties keep the later (more trained) candidate.

Only validation pairs enter; held-out pairs and patient03 are never used for a choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from msnode_training.inference import lesion_mask
from msnode_training.metrics import CaseScores, score_case, summarize

Key = tuple[float, float]


def pair_f1(score: CaseScores) -> float:
    """Lesion-wise F1 of one pair counting its false positives (see the module docstring)."""
    if score.n_true_lesions > 0:
        return float(score.f1 or 0.0)
    return 1.0 if score.n_predicted_lesions == 0 else 0.0


def false_positive_lesions(score: CaseScores) -> int:
    """Predicted lesions of one pair that match no true lesion (all of them on a pair without new lesions)."""
    if score.n_true_lesions == 0:
        return int(score.n_predicted_lesions)
    return int(score.n_predicted_lesions - score.predicted_lesions_correct)


def fp_aware_summary(scores: Sequence[CaseScores]) -> dict[str, float | int | None]:
    """The challenge summary plus mean pair F1 over all pairs and false-positive lesions per pair."""
    if not scores:
        raise ValueError("no pairs to score")
    return {**summarize(list(scores)),
            "mean_pair_f1": float(np.mean([pair_f1(s) for s in scores])),
            "mean_false_positives_per_pair": float(np.mean([false_positive_lesions(s) for s in scores]))}


def fp_aware_key(summary: dict) -> Key:
    """Higher mean pair F1 first, then fewer false-positive lesions per pair."""
    return (float(summary["mean_pair_f1"]), -float(summary["mean_false_positives_per_pair"]))


@dataclass
class ScoredProbability:
    """One validation pair's foreground probability with its truth, on the pair grid."""

    case_id: str
    probability: np.ndarray
    truth: np.ndarray
    spacing_zyx: tuple[float, float, float]


@dataclass
class PostprocessingResult:
    threshold: float
    min_lesion_volume_mm3: float
    summary: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return fp_aware_key(self.summary)


def fp_aware_postprocessing(cases: Sequence[ScoredProbability], thresholds: Sequence[float],
                            min_volumes_mm3: Sequence[float]) -> PostprocessingResult:
    """Threshold x minimum lesion volume with the best `fp_aware_key` (the first grid point wins a tie)."""
    best: PostprocessingResult | None = None
    table: list[dict[str, Any]] = []
    for threshold in thresholds:
        for min_volume in min_volumes_mm3:
            scores = [score_case(c.truth, lesion_mask(c.probability, c.spacing_zyx, threshold, min_volume),
                                 c.spacing_zyx) for c in cases]
            summary = fp_aware_summary(scores)
            table.append({"threshold": threshold, "min_lesion_volume_mm3": min_volume,
                          **{k: summary[k] for k in ("mean_pair_f1", "mean_false_positives_per_pair", "mean_f1",
                                                     "mean_sensitivity", "mean_ppv", "mean_n_false_positives")}})
            if best is None or fp_aware_key(summary) > best.key:
                best = PostprocessingResult(threshold, min_volume, summary)
    if best is None:
        raise ValueError("empty post-processing grid")
    best.table = table
    return best


@dataclass
class Candidate:
    """A checkpoint scored on the whole validation pairs with its own best post-processing."""

    name: str
    checkpoint: str
    epoch: int
    postprocessing: PostprocessingResult

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": self.checkpoint, "epoch": self.epoch,
                "threshold": self.postprocessing.threshold,
                "min_lesion_volume_mm3": self.postprocessing.min_lesion_volume_mm3,
                "key": list(self.postprocessing.key), "summary": self.postprocessing.summary}


def choose_candidate(candidates: Sequence[Candidate]) -> Candidate:
    """The best `fp_aware_key`; on a tie the later epoch (more training, lower learning rate)."""
    if not candidates:
        raise ValueError("no candidate checkpoints")
    return max(candidates, key=lambda c: (c.postprocessing.key, c.epoch))


def candidate_epochs(f1_history: Sequence[Sequence[float]], last_epoch: int) -> dict[str, int]:
    """{'best_proxy': epoch, 'last': epoch} from the proxy history (a tie keeps the later epoch, as the trainer's
    `checkpoint_best_f1.pth` does); 'best_proxy' is left out when it is the last epoch or there is no history."""
    epochs = {"last": int(last_epoch)}
    if f1_history:
        best_epoch, _ = max(((int(e), float(s)) for e, s in f1_history), key=lambda es: (es[1], es[0]))
        if best_epoch != last_epoch:
            epochs["best_proxy"] = best_epoch
    return epochs
