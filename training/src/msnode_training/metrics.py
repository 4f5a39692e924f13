"""MSSEG-2 evaluation rules (animaSegPerfAnalyzer), reimplemented for numpy arrays.

Lesions are 3D connected components with face connectivity (ITK's default, 6 neighbours). Components of
3 mm3 or less are removed on both sides before anything else (ITK keeps components of at least
floor(3 / voxel volume) + 1 voxels). A reference component is detected when:
  * the test components cover more than ALPHA = 10 % of it, and
  * taking the overlapping test components in decreasing overlap until they account for more than
    GAMMA = 65 % of the covered voxels, none of them has more than BETA = 70 % of its voxels on the
    reference background.
Sensitivity runs this with the truth as reference; PPV runs the same rule with the prediction as reference.
Cases without a true lesion are scored by the number (nFP) and volume (VFP) of predicted components instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

ALPHA_MIN_COVERAGE = 0.10
BETA_MAX_OUTSIDE = 0.70
GAMMA_OVERLAP_ACCOUNTED = 0.65
MIN_LESION_VOLUME_MM3 = 3.0

FACE_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)


def min_component_voxels(voxel_volume_mm3: float, min_volume_mm3: float = MIN_LESION_VOLUME_MM3) -> int:
    """Smallest component kept: strictly more than `min_volume_mm3` (anima's floor(v / voxel) + 1)."""
    return int(math.floor(min_volume_mm3 / voxel_volume_mm3)) + 1


def label_lesions(mask: np.ndarray, voxel_volume_mm3: float,
                  min_volume_mm3: float = MIN_LESION_VOLUME_MM3) -> tuple[np.ndarray, int]:
    """Connected components of `mask` larger than `min_volume_mm3`, labelled 1..n by decreasing size."""
    labels, count = ndimage.label(mask > 0, structure=FACE_CONNECTIVITY)
    if count == 0:
        return labels.astype(np.int32), 0
    sizes = np.bincount(labels.ravel())[1:]
    keep = sizes >= min_component_voxels(voxel_volume_mm3, min_volume_mm3)
    # Order by decreasing size (stable on label index), like ITK's RelabelComponentImageFilter.
    kept_old = [old for old in np.argsort(-sizes, kind="stable") + 1 if keep[old - 1]]
    remap = np.zeros(count + 1, dtype=np.int32)
    remap[kept_old] = np.arange(1, len(kept_old) + 1, dtype=np.int32)
    return remap[labels], len(kept_old)


def overlap_counts(reference_labels: np.ndarray, n_reference: int, test_labels: np.ndarray,
                   n_test: int) -> np.ndarray:
    """counts[i, j] = voxels with reference label i and test label j (label 0 = background)."""
    flat = reference_labels.astype(np.int64).ravel() * (n_test + 1) + test_labels.astype(np.int64).ravel()
    return np.bincount(flat, minlength=(n_reference + 1) * (n_test + 1)).reshape(n_reference + 1, n_test + 1)


def detected_components(counts: np.ndarray) -> np.ndarray:
    """For each reference component 1..n (rows of `counts`), whether the test components detect it."""
    n_reference = counts.shape[0] - 1
    test_sizes = counts.sum(axis=0)
    detected = np.zeros(n_reference, dtype=bool)
    for i in range(1, n_reference + 1):
        overlaps = counts[i, 1:]
        covered = int(overlaps.sum())
        size = int(counts[i].sum())
        if size == 0 or covered / size <= ALPHA_MIN_COVERAGE:
            continue
        accounted = 0.0
        is_detected = True
        for j in np.argsort(-overlaps, kind="stable") + 1:
            if counts[i, j] == 0:
                break
            if counts[0, j] / test_sizes[j] > BETA_MAX_OUTSIDE:
                is_detected = False
                break
            accounted += counts[i, j] / covered
            if accounted > GAMMA_OVERLAP_ACCOUNTED:
                break
        detected[i - 1] = is_detected
    return detected


def voxel_dice(truth: np.ndarray, prediction: np.ndarray) -> float:
    truth_b, pred_b = truth > 0, prediction > 0
    denominator = int(truth_b.sum()) + int(pred_b.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(truth_b, pred_b).sum()) / denominator


@dataclass
class CaseScores:
    """MSSEG-2 scores of one case. Lesion-wise figures are None for cases without a true lesion."""

    n_true_lesions: int
    n_predicted_lesions: int
    true_lesions_detected: int
    predicted_lesions_correct: int
    sensitivity: float | None
    ppv: float | None
    f1: float | None
    dice: float | None
    n_false_positives: int | None
    false_positive_volume_mm3: float | None
    true_volume_mm3: float
    predicted_volume_mm3: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def score_case(truth: np.ndarray, prediction: np.ndarray, spacing_zyx: tuple[float, float, float],
               min_volume_mm3: float = MIN_LESION_VOLUME_MM3) -> CaseScores:
    """Score one prediction against its truth on the same grid with the MSSEG-2 rules."""
    if truth.shape != prediction.shape:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
    voxel_volume = float(np.prod(spacing_zyx))
    truth_labels, n_truth = label_lesions(truth, voxel_volume, min_volume_mm3)
    pred_labels, n_pred = label_lesions(prediction, voxel_volume, min_volume_mm3)
    counts = overlap_counts(truth_labels, n_truth, pred_labels, n_pred)
    # anima counts no true positive unless both sides have a lesion.
    truth_detected = int(detected_components(counts).sum()) if n_truth and n_pred else 0
    pred_correct = int(detected_components(counts.T).sum()) if n_truth and n_pred else 0
    predicted_volume = float((pred_labels > 0).sum() * voxel_volume)
    true_volume = float((truth_labels > 0).sum() * voxel_volume)
    if n_truth == 0:
        return CaseScores(0, n_pred, 0, 0, None, None, None, None, n_pred, predicted_volume, true_volume,
                          predicted_volume)
    sensitivity = truth_detected / n_truth
    ppv = pred_correct / n_pred if n_pred else 0.0
    f1 = 2 * ppv * sensitivity / (ppv + sensitivity) if ppv + sensitivity > 0 else 0.0
    return CaseScores(n_truth, n_pred, truth_detected, pred_correct, sensitivity, ppv, f1,
                      voxel_dice(truth, prediction), None, None, true_volume, predicted_volume)


def summarize(scores: list[CaseScores]) -> dict[str, float | int | None]:
    """Challenge-style summary: lesion-wise means over cases with new lesions, nFP/VFP means over the others."""
    with_lesions = [s for s in scores if s.n_true_lesions > 0]
    without = [s for s in scores if s.n_true_lesions == 0]

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "cases": len(scores),
        "cases_with_new_lesions": len(with_lesions),
        "cases_without_new_lesions": len(without),
        "mean_sensitivity": mean([s.sensitivity for s in with_lesions]),
        "mean_ppv": mean([s.ppv for s in with_lesions]),
        "mean_f1": mean([s.f1 for s in with_lesions]),
        "mean_dice": mean([s.dice for s in with_lesions]),
        "mean_n_false_positives": mean([s.n_false_positives for s in without]),
        "mean_false_positive_volume_mm3": mean([s.false_positive_volume_mm3 for s in without]),
        "true_lesions": sum(s.n_true_lesions for s in scores),
        "true_lesions_detected": sum(s.true_lesions_detected for s in scores),
        "predicted_lesions": sum(s.n_predicted_lesions for s in scores),
    }


def remove_small_components(mask: np.ndarray, spacing_zyx: tuple[float, float, float],
                            min_volume_mm3: float) -> np.ndarray:
    """Post-processing the node also applies: drop components of `min_volume_mm3` or less."""
    labels, _ = label_lesions(mask, float(np.prod(spacing_zyx)), min_volume_mm3)
    return (labels > 0).astype(np.uint8)
