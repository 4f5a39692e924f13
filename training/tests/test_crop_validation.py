"""Cheap validation (crop_validation.py) and the time-based learning-rate schedule: deterministic boxes, scores
of known predictions, and the schedule's values. No training here."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from msnode_training.crop_validation import (
    box_around,
    crop_probability,
    crop_validation,
    make_crop_case,
    score_crops,
    validation_boxes,
)
from msnode_training.realbg import POSTPROCESSING_MIN_VOLUMES_MM3, POSTPROCESSING_THRESHOLDS, parse_args
from msnode_training.trainers import MsnodeTrainer, TrainingSettings, poly_learning_rate, time_progress

PATCH = (4, 16, 16)
SPACING = (3.0, 1.0, 1.0)


def pair_volume() -> tuple[np.ndarray, np.ndarray]:
    """A (3, 12, 64, 64) input with a brain box and two true lesions (27 and 8 voxels)."""
    image = np.zeros((3, 12, 64, 64), dtype=np.float32)
    image[:, 1:11, 4:60, 4:60] = 1.0
    truth = np.zeros((12, 64, 64), dtype=np.uint8)
    truth[5:8, 10:13, 10:13] = 1
    truth[6:8, 40:42, 50:52] = 1
    return image, truth


def test_box_is_patch_sized_and_inside_the_volume() -> None:
    assert box_around((0, 0, 0), PATCH, (12, 64, 64)) == (slice(0, 4), slice(0, 16), slice(0, 16))
    assert box_around((11, 63, 30), PATCH, (12, 64, 64)) == (slice(8, 12), slice(48, 64), slice(22, 38))
    assert box_around((1, 5, 5), PATCH, (2, 64, 64))[0] == slice(0, 2)  # shorter than the patch: whole axis


def test_boxes_cover_every_lesion_and_are_deterministic() -> None:
    image, truth = pair_volume()
    brain = image[0] > 0
    boxes = validation_boxes(truth, brain, PATCH, n_background=3, seed=5)
    assert len(boxes) == 2 + 3
    for lesion in (truth[5:8, 10:13, 10:13], truth[6:8, 40:42, 50:52]):
        assert lesion.all()
    covered = np.zeros_like(truth, dtype=bool)
    for box in boxes[:2]:
        covered[box] = True
    assert covered[truth > 0].all()
    assert boxes == validation_boxes(truth, brain, PATCH, n_background=3, seed=5)
    assert boxes[2:] != validation_boxes(truth, brain, PATCH, n_background=3, seed=6)[2:]
    # a second lesion inside the first lesion's box adds no box
    near = truth.copy()
    near[6:8, 14:16, 10:12] = 1
    assert len(validation_boxes(near, brain, PATCH, 0, 0)) == 2


def oracle_runner():
    """A patch runner that returns logits saying 'lesion' where the crop's third channel is 2."""

    def run(tile: np.ndarray) -> np.ndarray:
        lesion = tile[0, 2] > 1.5
        logits = np.zeros((1, 2, *tile.shape[2:]), dtype=np.float32)
        logits[0, 1] = np.where(lesion, 4.0, -4.0)
        return logits

    return run


def test_perfect_prediction_scores_one_and_a_false_positive_lowers_it() -> None:
    image, truth = pair_volume()
    image[2][truth > 0] = 2.0
    case = make_crop_case("unit", image, truth, PATCH, SPACING, n_background=2, seed=0)
    assert case.truth.sum() == truth.sum()  # both lesions inside the kept region
    result = crop_validation([case], oracle_runner(), PATCH)
    assert result.score == pytest.approx(1.0)
    assert len(result.table) == 4 * 2
    probability, covered = crop_probability(case, oracle_runner(), PATCH)
    assert probability.max() == pytest.approx(1 / (1 + np.exp(-4.0))) and covered.sum() > 0
    # a 30-voxel (90 mm3) false positive inside a box: PPV 2/3, F1 0.8
    fp = np.zeros_like(probability)
    z, y, x = (s.start for s in case.boxes[-1])
    fp[z:z + 2, y:y + 3, x:x + 5] = 1.0
    fp *= (case.truth == 0)
    spoiled = score_crops([case], [(np.maximum(probability, fp), covered)], thresholds=(0.5,),
                          min_volumes_mm3=(3.0,))
    assert spoiled.score == pytest.approx(0.8)


def test_the_grid_choice_prefers_fewer_false_positives_at_equal_f1() -> None:
    image, truth = pair_volume()
    image[2][truth > 0] = 2.0
    case = make_crop_case("unit", image, truth, PATCH, SPACING, n_background=0, seed=0)
    probability, covered = crop_probability(case, oracle_runner(), PATCH)
    noisy = probability.copy()
    z, y, x = (s.start for s in case.boxes[0])
    noisy[z, y, x + 14:x + 16] = 0.15  # 6 mm3 component, only above the 0.1 threshold
    result = score_crops([case], [(noisy, covered)], thresholds=(0.1, 0.2), min_volumes_mm3=(3.0,))
    assert result.threshold == 0.2 and result.score == pytest.approx(1.0)


def test_poly_and_time_progress() -> None:
    assert poly_learning_rate(0.01, 0.0) == pytest.approx(0.01)
    assert poly_learning_rate(0.01, 0.5) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_learning_rate(0.01, 1.5) == 0.0
    assert time_progress(150.0, 100.0, 200.0) == pytest.approx(0.5)
    assert time_progress(50.0, 100.0, 200.0) == 0.0 and time_progress(250.0, 100.0, 200.0) == 1.0
    assert time_progress(150.0, 200.0, 100.0) == 1.0


def test_time_schedule_decays_to_the_deadline_whatever_the_epochs(tmp_path: Path) -> None:
    now = time.time()
    settings = TrainingSettings(epochs=1000, initial_lr=0.01, lr_schedule="time", deadline_unix=now + 300)
    trainer = MsnodeTrainer.__new__(MsnodeTrainer)
    trainer.settings, trainer.initial_lr, trainer.lr_scale = settings, 0.01, 1.0
    trainer.num_epochs, trainer.current_epoch = 1000, 1
    trainer.schedule_started_unix = now - 300  # half of the span used
    assert trainer.current_base_lr() == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-2)
    trainer.settings = TrainingSettings(epochs=1000, initial_lr=0.01, lr_schedule="epoch")
    assert trainer.current_base_lr() == pytest.approx(0.01 * (1 - 1 / 1000) ** 0.9)
    with pytest.raises(ValueError):
        TrainingSettings(lr_schedule="cosine")
    with pytest.raises(ValueError):
        TrainingSettings(validation_mode="patches")


def test_command_line_sets_schedule_validation_and_grid() -> None:
    config = parse_args(["--threads", "1", "--lr-schedule", "time", "--validation-mode", "crops",
                         "--crop-background-boxes", "3", "--early-stopping-patience", "99",
                         "--lr-reduce-patience", "98"])
    settings = config.finetune_settings
    assert (settings.lr_schedule, settings.validation_mode, settings.crop_background_boxes) == ("time", "crops", 3)
    assert (settings.early_stopping_patience, settings.lr_reduce_patience) == (99, 98)
    assert config.pretrain_settings.lr_schedule == "time"
    assert config.thresholds == POSTPROCESSING_THRESHOLDS and min(config.thresholds) == 0.05
    assert 0.1 in config.thresholds and 0.15 in config.thresholds
    assert config.min_volumes_mm3 == POSTPROCESSING_MIN_VOLUMES_MM3 and min(config.min_volumes_mm3) == 3.0
    narrow = parse_args(["--threads", "1", "--thresholds", "0.1", "0.2", "--min-volumes", "5"])
    assert narrow.thresholds == (0.1, 0.2) and narrow.min_volumes_mm3 == (5.0,)


def test_the_last_epoch_is_validated_when_the_budget_ends_it(tmp_path: Path) -> None:
    settings = TrainingSettings(epochs=100, f1_every_epochs=8, validate_last_epoch=True,
                                deadline_unix=time.time() + 1000)
    trainer = MsnodeTrainer.__new__(MsnodeTrainer)
    trainer.settings, trainer.num_epochs, trainer.epoch_seconds = settings, 100, [40.0, 40.0]
    trainer._epoch_started = time.time() - 40
    trainer.current_epoch = 7
    assert trainer.validation_due()  # every 8th epoch
    trainer.current_epoch = 8
    assert not trainer.is_last_epoch() and not trainer.validation_due()
    trainer.settings = TrainingSettings(epochs=100, f1_every_epochs=8, validate_last_epoch=True,
                                        deadline_unix=time.time() + 30)  # the next 40 s epoch would not fit
    assert trainer.is_last_epoch() and trainer.validation_due()
    trainer.settings = TrainingSettings(epochs=100, f1_every_epochs=8, deadline_unix=time.time() + 30)
    assert not trainer.validation_due()  # off by default (the other pipelines keep their schedules)
    trainer.settings = TrainingSettings(epochs=100, f1_every_epochs=8, validate_last_epoch=True)
    trainer.current_epoch = 99
    assert trainer.is_last_epoch() and trainer.validation_due()  # planned end, no deadline
