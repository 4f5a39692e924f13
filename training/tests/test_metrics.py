"""MSSEG-2 rules on hand-made volumes; each expected value is worked out in the comments."""

import numpy as np
import pytest

from msnode_training.metrics import (
    label_lesions,
    min_component_voxels,
    remove_small_components,
    score_case,
    summarize,
)

ONE_MM = (1.0, 1.0, 1.0)


def empty(shape: tuple[int, int, int] = (4, 20, 40)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_min_component_size_is_strictly_more_than_3_mm3() -> None:
    assert min_component_voxels(1.0) == 4  # 3 voxels = 3 mm3 is ignored, 4 voxels kept
    assert min_component_voxels(2.0) == 2  # 1 voxel = 2 mm3 ignored, 2 voxels = 4 mm3 kept
    assert min_component_voxels(0.72 * 0.72 * 3.0) == 2  # 1.555 mm3 voxels: floor(1.93) + 1


def test_components_use_face_connectivity() -> None:
    mask = empty()
    mask[0, 0:2, 0:2] = 1  # 4 voxels
    mask[1, 2:4, 2:4] = 1  # 4 voxels touching the first only along an edge -> separate component
    _, count = label_lesions(mask, 1.0)
    assert count == 2


def test_perfect_prediction() -> None:
    truth = empty()
    truth[0:2, 0:2, 0:2] = 1
    truth[0:2, 10:12, 10:12] = 1
    scores = score_case(truth, truth.copy(), ONE_MM)
    assert (scores.sensitivity, scores.ppv, scores.f1, scores.dice) == (1.0, 1.0, 1.0, 1.0)
    assert scores.true_volume_mm3 == 16.0


def test_alpha_needs_more_than_10_percent_of_the_true_lesion() -> None:
    truth = empty()
    truth[0:2, 0:5, 0:5] = 1  # 50 voxels
    exactly_ten = empty()
    exactly_ten[0:1, 0:5, 0:1] = 1  # 5 voxels inside: 5/50 = 0.10, not > 0.10
    scores = score_case(truth, exactly_ten, ONE_MM)
    assert scores.sensitivity == 0.0
    # The other way: the predicted lesion lies in the truth, but 45/50 = 0.9 > 0.7 of the truth lesion is
    # outside the prediction, so the predicted lesion is not a true positive either.
    assert scores.ppv == 0.0 and scores.f1 == 0.0

    twelve = empty()
    twelve[0:2, 0:3, 0:1] = 1  # 6 voxels inside: 6/50 = 0.12 > 0.10, nothing outside the truth
    assert score_case(truth, twelve, ONE_MM).sensitivity == 1.0


def test_asymmetric_detection_gives_sensitivity_without_ppv() -> None:
    truth = empty()
    truth[0:2, 0:5, 0:5] = 1  # 50 voxels
    prediction = empty()
    prediction[0:2, 2:7, 0:1] = 1  # 10 voxels: y = 2, 3, 4 inside (6 voxels), y = 5, 6 outside (4 voxels)
    scores = score_case(truth, prediction, ONE_MM)
    # truth covered 6/50 = 0.12 > 0.1 and the prediction has 4/10 = 0.4 <= 0.7 outside: detected
    assert scores.sensitivity == 1.0
    # prediction covered 6/10 = 0.6 but 44/50 = 0.88 > 0.7 of the truth lesion is outside it: not correct
    assert scores.ppv == 0.0
    assert scores.f1 == 0.0
    assert scores.dice == pytest.approx(2 * 6 / (50 + 10))


def test_beta_rejects_predictions_mostly_outside_the_truth() -> None:
    truth = empty()
    truth[0:1, 0:2, 0:5] = 1  # 10 voxels
    too_large = empty()
    too_large[0:1, 0:2, 0:20] = 1  # 40 voxels, 30 outside: 0.75 > 0.70
    scores = score_case(truth, too_large, ONE_MM)
    assert scores.sensitivity == 0.0
    assert scores.ppv == 1.0  # the prediction is covered 10/40 = 0.25 and misses none of the truth
    assert scores.f1 == 0.0

    large = empty()
    large[0:1, 0:2, 0:15] = 1  # 30 voxels, 20 outside: 0.667 <= 0.70
    scores = score_case(truth, large, ONE_MM)
    assert (scores.sensitivity, scores.ppv, scores.f1) == (1.0, 1.0, 1.0)


def test_gamma_stops_checking_once_65_percent_of_the_overlap_is_accounted_for() -> None:
    truth = empty()
    truth[0:1, 0:4, 0:10] = 1  # 40 voxels
    prediction = empty()
    prediction[0:1, 0:4, 0:6] = 1  # P1: 24 voxels, all inside the truth
    prediction[0:1, 0:20, 7:10] = 1  # P2: 60 voxels, 12 inside, 48 outside (0.8 > 0.7); x = 6 separates them
    # covered 36/40; P1 alone accounts for 24/36 = 0.667 > 0.65, so P2 is never checked: detected.
    assert score_case(truth, prediction, ONE_MM).sensitivity == 1.0

    prediction = empty()
    prediction[0:1, 0:4, 0:5] = 1  # P1: 20 voxels inside
    prediction[0:1, 0:20, 6:10] = 1  # P2: 80 voxels, 16 inside, 64 outside (0.8 > 0.7)
    # P1 accounts for 20/36 = 0.556 <= 0.65, so P2 is checked and fails: not detected.
    scores = score_case(truth, prediction, ONE_MM)
    assert scores.sensitivity == 0.0
    # PPV: P1 is covered 20/20 and P2 16/80 = 0.2 > 0.1; the truth lesion has 4/40 = 0.1 <= 0.7 of its voxels
    # outside every prediction, so both predicted lesions are correct.
    assert scores.ppv == 1.0


def test_lesions_of_3_mm3_or_less_are_ignored_on_both_sides() -> None:
    truth = empty()
    truth[0, 0, 0:3] = 1  # 3 voxels
    truth[0:2, 10:12, 10:12] = 1  # 8 voxels
    prediction = empty()
    prediction[0:2, 10:12, 10:12] = 1
    prediction[3, 18, 30:33] = 1  # a 3-voxel false positive
    scores = score_case(truth, prediction, ONE_MM)
    assert (scores.n_true_lesions, scores.n_predicted_lesions) == (1, 1)
    assert (scores.sensitivity, scores.ppv) == (1.0, 1.0)

    # With 2 mm3 voxels both 3-voxel components (6 mm3) count: sensitivity 1/2, PPV 1/2.
    scores = score_case(truth, prediction, (2.0, 1.0, 1.0))
    assert (scores.n_true_lesions, scores.n_predicted_lesions) == (2, 2)
    assert (scores.sensitivity, scores.ppv) == (0.5, 0.5)
    assert scores.f1 == pytest.approx(0.5)


def test_missing_prediction_scores_zero() -> None:
    truth = empty()
    truth[0:2, 0:2, 0:2] = 1
    scores = score_case(truth, empty(), ONE_MM)
    assert (scores.sensitivity, scores.ppv, scores.f1, scores.dice) == (0.0, 0.0, 0.0, 0.0)


def test_cases_without_new_lesions_count_false_positives() -> None:
    prediction = empty()
    prediction[0, 0, 0:5] = 1  # 5 voxels x 2 mm3 = 10 mm3
    prediction[2, 5:7, 10:15] = 1  # 10 voxels = 20 mm3
    prediction[3, 15, 35] = 1  # 1 voxel = 2 mm3 <= 3 mm3: ignored
    scores = score_case(empty(), prediction, (2.0, 1.0, 1.0))
    assert scores.n_false_positives == 2
    assert scores.false_positive_volume_mm3 == pytest.approx(30.0)
    assert scores.f1 is None and scores.sensitivity is None and scores.dice is None


def test_summary_averages_lesion_cases_and_false_positive_cases_separately() -> None:
    truth = empty()
    truth[0:2, 0:2, 0:2] = 1
    truth[0:2, 10:12, 10:12] = 1
    half = truth.copy()
    half[:, 10:12, 10:12] = 0  # finds 1 of 2: sensitivity 0.5, PPV 1, F1 2/3
    fp_only = empty()
    fp_only[0:2, 0:2, 0:2] = 1  # 8 voxels = 8 mm3
    summary = summarize([
        score_case(truth, truth, ONE_MM),
        score_case(truth, half, ONE_MM),
        score_case(empty(), fp_only, ONE_MM),
    ])
    assert summary["cases_with_new_lesions"] == 2 and summary["cases_without_new_lesions"] == 1
    assert summary["mean_sensitivity"] == pytest.approx(0.75)
    assert summary["mean_ppv"] == pytest.approx(1.0)
    assert summary["mean_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert summary["mean_n_false_positives"] == 1.0
    assert summary["mean_false_positive_volume_mm3"] == 8.0
    assert (summary["true_lesions"], summary["true_lesions_detected"]) == (4, 3)


def test_remove_small_components_keeps_only_larger_lesions() -> None:
    mask = empty()
    mask[0, 0, 0:3] = 1
    mask[2, 5:7, 5:7] = 1
    cleaned = remove_small_components(mask, ONE_MM, 3.0)
    assert cleaned.sum() == 4 and cleaned[0].sum() == 0
