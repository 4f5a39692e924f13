"""Cheap, deterministic validation F1 for checkpoint choice during training (issue 19).

A whole-volume sliding-window pass over every validation pair costs minutes per call on one CPU thread, so it could
be run once or twice per training. Instead each validation pair is reduced, once, to a few fixed boxes of the
network's patch size: one centred on each true lesion (lesions already inside a chosen box add none) and a few
background boxes at seeded positions inside the brain (where false positives appear). The network predicts each
box as one tile (no sliding window); lesions are scored with the MSSEG-2 rules inside the union of the boxes
only, over a small threshold x minimum-volume grid, and the best grid point is the proxy. The boxes
depend only on the truth, the brain and the seed, so every validation of a run sees the same voxels.

Since realbg 0.3.0 the proxy counts false positives per pair (`checkpoint_choice.pair_f1`): its score is the mean
over ALL validation pairs of the pair's lesion-wise F1 (a pair without new lesions scores 1 with no prediction in its
boxes, else 0), the grid point is chosen by that score then fewer false-positive lesions per pair, and the command
uses 8-12 background boxes per pair (`--crop-background-boxes`), so that the boxes cover a good part of the brain
where false positives appear. With 2 boxes it picked a checkpoint with 14 false positives per whole pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from msnode_training.inference import PatchRunner, lesion_mask, predict_logits, softmax_foreground
from msnode_training.checkpoint_choice import fp_aware_key, fp_aware_summary
from msnode_training.metrics import FACE_CONNECTIVITY, score_case

Box = tuple[slice, slice, slice]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
DEFAULT_MIN_VOLUMES_MM3: tuple[float, ...] = (3.0, 10.0)


def box_around(centre: Sequence[float], patch: Sequence[int], shape: Sequence[int]) -> Box:
    """The patch-sized box centred on `centre`, shifted to lie inside `shape` (shorter where the volume is)."""
    slices = []
    for c, p, s in zip(centre, patch, shape):
        length = min(int(p), int(s))
        start = int(np.clip(int(round(float(c) - length / 2)), 0, s - length))
        slices.append(slice(start, start + length))
    return (slices[0], slices[1], slices[2])


def _inside(box: Box, points: np.ndarray) -> bool:
    return bool(all(((points[:, a] >= box[a].start) & (points[:, a] < box[a].stop)).all() for a in range(3)))


def validation_boxes(truth: np.ndarray, brain: np.ndarray, patch: Sequence[int], n_background: int,
                     seed: int, max_lesion_boxes: int = 12) -> list[Box]:
    """Lesion boxes first (largest lesion first; a lesion wholly inside an earlier box adds none), then
    `n_background` boxes centred on seeded brain voxels that hold no true lesion."""
    labels, count = ndimage.label(truth > 0, structure=FACE_CONNECTIVITY)
    boxes: list[Box] = []
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        for label in np.argsort(-sizes, kind="stable") + 1:
            points = np.argwhere(labels == label)
            if any(_inside(b, points) for b in boxes):
                continue
            if len(boxes) >= max_lesion_boxes:
                break
            boxes.append(box_around(points.mean(axis=0), patch, truth.shape))
    candidates = np.argwhere((brain > 0) & (truth == 0))
    if len(candidates) and n_background > 0:
        rng = np.random.default_rng(seed)
        for index in rng.choice(len(candidates), size=min(n_background, len(candidates)), replace=False):
            boxes.append(box_around(candidates[index], patch, truth.shape))
    return boxes


@dataclass
class CropCase:
    """A validation pair reduced to its boxes: the normalised network input (C, z, y, x) and truth (z, y, x)
    are kept only inside the bounding box of the boxes (`offset` is where that starts in the pair)."""

    case_id: str
    image: np.ndarray
    truth: np.ndarray
    boxes: list[Box]
    spacing_zyx: tuple[float, float, float]


def make_crop_case(case_id: str, image: np.ndarray, truth: np.ndarray, patch: Sequence[int],
                   spacing_zyx: tuple[float, float, float], n_background: int = 2, seed: int = 0,
                   max_lesion_boxes: int = 12) -> CropCase:
    brain = np.any(image != 0, axis=0)
    boxes = validation_boxes(truth, brain, patch, n_background, seed, max_lesion_boxes)
    lo = [min(b[a].start for b in boxes) for a in range(3)] if boxes else [0, 0, 0]
    hi = [max(b[a].stop for b in boxes) for a in range(3)] if boxes else [0, 0, 0]
    outer = tuple(slice(a, b) for a, b in zip(lo, hi))
    shifted = [tuple(slice(s.start - o, s.stop - o) for s, o in zip(b, lo)) for b in boxes]
    return CropCase(case_id, np.ascontiguousarray(image[(slice(None), *outer)], dtype=np.float32),
                    np.ascontiguousarray(truth[outer] > 0).astype(np.uint8), shifted,  # type: ignore[arg-type]
                    spacing_zyx)


def crop_probability(case: CropCase, run_patch: PatchRunner, patch: Sequence[int],
                     num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(probability, covered): each box predicted as one tile; overlapping boxes keep the larger probability."""
    probability = np.zeros(case.truth.shape, dtype=np.float32)
    covered = np.zeros(case.truth.shape, dtype=bool)
    for box in case.boxes:
        logits = predict_logits(case.image[(slice(None), *box)], run_patch, patch, num_classes)
        probability[box] = np.maximum(probability[box], softmax_foreground(logits))
        covered[box] = True
    return probability, covered


@dataclass
class CropValidation:
    score: float  # best mean pair F1 over the grid (all pairs; false positives counted per pair)
    threshold: float
    min_lesion_volume_mm3: float
    table: list[dict] = field(default_factory=list)
    false_positives_per_pair: float = 0.0  # at the chosen grid point, inside the boxes


def proxy_score(summary: dict) -> float:
    """Mean F1 over cases with lesions; with none, minus the mean false-positive count (fewer is better)."""
    if summary["mean_f1"] is not None:
        return float(summary["mean_f1"])
    return -float(summary["mean_n_false_positives"] or 0.0)


def score_crops(cases: Sequence[CropCase], probabilities: Sequence[tuple[np.ndarray, np.ndarray]],
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                min_volumes_mm3: Sequence[float] = DEFAULT_MIN_VOLUMES_MM3) -> CropValidation:
    """Best grid point by mean pair F1 over all pairs, then fewer false-positive lesions per pair."""
    best: tuple[tuple[float, float], CropValidation] | None = None
    table = []
    for threshold in thresholds:
        for min_volume in min_volumes_mm3:
            scores = []
            for case, (probability, covered) in zip(cases, probabilities):
                prediction = lesion_mask(probability, case.spacing_zyx, threshold, min_volume) * covered
                scores.append(score_case(case.truth * covered, prediction.astype(np.uint8), case.spacing_zyx))
            summary = fp_aware_summary(scores)
            table.append({"threshold": threshold, "min_lesion_volume_mm3": min_volume,
                          "mean_pair_f1": summary["mean_pair_f1"],
                          "mean_false_positives_per_pair": summary["mean_false_positives_per_pair"],
                          "mean_f1": summary["mean_f1"], "mean_n_false_positives": summary["mean_n_false_positives"],
                          "predicted_lesions": summary["predicted_lesions"]})
            key = fp_aware_key(summary)
            if best is None or key > best[0]:
                best = (key, CropValidation(float(summary["mean_pair_f1"]), threshold, min_volume,
                                            false_positives_per_pair=float(summary["mean_false_positives_per_pair"])))
    assert best is not None, "empty grid"
    best[1].table = table
    return best[1]


def crop_validation(cases: Sequence[CropCase], run_patch: PatchRunner, patch: Sequence[int],
                    num_classes: int = 2, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    min_volumes_mm3: Sequence[float] = DEFAULT_MIN_VOLUMES_MM3) -> CropValidation:
    probabilities = [crop_probability(c, run_patch, patch, num_classes) for c in cases]
    return score_crops(cases, probabilities, thresholds, min_volumes_mm3)
