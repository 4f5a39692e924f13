import numpy as np

from msnode_training.search import (
    ValidationCase,
    search_best,
    search_postprocessing,
)


def test_postprocessing_search_picks_the_threshold_and_size_that_maximise_f1() -> None:
    truth = np.zeros((4, 20, 20), dtype=np.uint8)
    truth[1:3, 2:6, 2:6] = 1  # one 32-voxel lesion
    probability = np.zeros(truth.shape, dtype=np.float32)
    probability[1:3, 2:6, 2:6] = 0.8  # the lesion, confidently
    probability[1:3, 12:14, 12:14] = 0.8  # an 8-voxel false positive, confidently
    probability[1:3, 12:18, 2:8] = np.where(probability[1:3, 12:18, 2:8] > 0, 0.8, 0.5)  # a 72-voxel weak blob
    case = ValidationCase("c", probability, truth, (1.0, 1.0, 1.0))
    choice = search_postprocessing([case], thresholds=(0.4, 0.7), min_volumes_mm3=(3.0, 10.0))
    # 0.4 keeps the weak blob (F1 2/3 at best); 0.7 with minimum 10 mm3 drops both false positives: F1 1.
    assert (choice.threshold, choice.min_lesion_volume_mm3) == (0.7, 10.0)
    assert choice.summary["mean_f1"] == 1.0
    assert len(choice.table) == 4
    by_setting = {(row["threshold"], row["min_lesion_volume_mm3"]): row["mean_f1"] for row in choice.table}
    assert by_setting[(0.7, 3.0)] == 2 * 0.5 * 1.0 / 1.5  # PPV 1/2, sensitivity 1


def test_learning_rate_and_strategy_search_keeps_the_best_and_the_first_on_ties() -> None:
    scores = {(0.01, "full"): 0.3, (0.003, "full"): 0.5, (0.003, "lower_encoder_lr"): 0.5}
    best, seen = search_best(list(scores), scores.__getitem__)
    assert best == (0.003, "full") and seen == scores
