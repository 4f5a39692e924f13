"""False-positive-aware validation (checkpoint_choice.py, the crop proxy's pair F1) and the 0.3.0 training-pair
levers (affine residual, faint lesions, lesions per pair). Small arrays only; no training, no pair generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from msnode_training.checkpoint_choice import (
    Candidate,
    PostprocessingResult,
    ScoredProbability,
    candidate_epochs,
    choose_candidate,
    false_positive_lesions,
    fp_aware_key,
    fp_aware_postprocessing,
    fp_aware_summary,
    pair_f1,
)
from msnode_training.crop_validation import make_crop_case, score_crops
from msnode_training.metrics import score_case
from msnode_training.realbg import RealBgConfig, parse_args, train_pair_config
from msnode_training.realpairs import RealPairConfig, with_affine_residual

SPACING = (3.0, 1.0, 1.0)
PATCH = (4, 16, 16)


def volume_with_lesion() -> np.ndarray:
    truth = np.zeros((10, 40, 40), dtype=np.uint8)
    truth[4:7, 10:14, 10:14] = 1  # 48 voxels, 144 mm3
    return truth


def false_positive(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[2:4, 30:34, 30:34] = 1  # 32 voxels, 96 mm3, far from the lesion
    return out


def test_pair_f1_counts_false_positives_on_pairs_with_and_without_lesions() -> None:
    truth = volume_with_lesion()
    perfect = score_case(truth, truth, SPACING)
    spoiled = score_case(truth, false_positive(truth), SPACING)
    empty_truth = np.zeros_like(truth)
    clean = score_case(empty_truth, empty_truth, SPACING)
    noisy = score_case(empty_truth, false_positive(empty_truth), SPACING)
    assert pair_f1(perfect) == pytest.approx(1.0) and false_positive_lesions(perfect) == 0
    assert pair_f1(spoiled) == pytest.approx(2 / 3) and false_positive_lesions(spoiled) == 1  # PPV 1/2
    assert pair_f1(clean) == 1.0 and false_positive_lesions(clean) == 0
    assert pair_f1(noisy) == 0.0 and false_positive_lesions(noisy) == 1
    summary = fp_aware_summary([perfect, noisy])
    assert summary["mean_pair_f1"] == pytest.approx(0.5)
    assert summary["mean_false_positives_per_pair"] == pytest.approx(0.5)
    assert summary["mean_f1"] == pytest.approx(1.0)  # the challenge mean ignores the lesion-free pair
    with pytest.raises(ValueError):
        fp_aware_summary([])


def test_the_key_prefers_f1_then_fewer_false_positives() -> None:
    assert fp_aware_key({"mean_pair_f1": 0.6, "mean_false_positives_per_pair": 3.0}) > \
        fp_aware_key({"mean_pair_f1": 0.5, "mean_false_positives_per_pair": 0.0})
    assert fp_aware_key({"mean_pair_f1": 0.5, "mean_false_positives_per_pair": 1.0}) > \
        fp_aware_key({"mean_pair_f1": 0.5, "mean_false_positives_per_pair": 2.0})


def test_postprocessing_removes_a_faint_false_positive_on_a_lesion_free_pair() -> None:
    truth = volume_with_lesion()
    probability = truth.astype(np.float32) * 0.9
    empty = np.zeros_like(truth)
    faint = np.zeros(truth.shape, dtype=np.float32)
    faint[2:4, 30:34, 30:34] = 0.25  # above 0.2, below 0.3
    cases = [ScoredProbability("lesion", probability, truth, SPACING),
             ScoredProbability("free", faint, empty, SPACING)]
    result = fp_aware_postprocessing(cases, thresholds=(0.2, 0.3), min_volumes_mm3=(3.0,))
    assert result.threshold == 0.3
    assert result.summary["mean_pair_f1"] == pytest.approx(1.0)
    assert result.summary["mean_false_positives_per_pair"] == 0.0
    assert len(result.table) == 2 and result.table[0]["mean_pair_f1"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        fp_aware_postprocessing(cases, thresholds=(), min_volumes_mm3=(3.0,))


def candidate(name: str, epoch: int, f1: float, fp: float) -> Candidate:
    return Candidate(name, f"{name}.pth", epoch, PostprocessingResult(
        0.2, 3.0, {"mean_pair_f1": f1, "mean_false_positives_per_pair": fp}))


def test_the_candidate_with_fewer_false_positives_wins_and_a_tie_keeps_the_later() -> None:
    best_proxy, last = candidate("best_proxy", 23, 0.55, 8.0), candidate("last", 49, 0.86, 0.0)
    assert choose_candidate([best_proxy, last]).name == "last"
    assert choose_candidate([candidate("best_proxy", 23, 0.6, 1.0), candidate("last", 49, 0.6, 2.0)]).name == \
        "best_proxy"
    assert choose_candidate([candidate("best_proxy", 23, 0.6, 1.0), candidate("last", 49, 0.6, 1.0)]).name == "last"
    assert choose_candidate([best_proxy]).as_dict()["key"] == [0.55, -8.0]
    with pytest.raises(ValueError):
        choose_candidate([])


def test_candidate_epochs_from_the_proxy_history() -> None:
    history = [(7, 0.17), (23, 0.63), (31, 0.45), (47, 0.63)]
    assert candidate_epochs(history, 49) == {"last": 49, "best_proxy": 47}  # tie: the later epoch
    assert candidate_epochs([(7, 0.2), (49, 0.5)], 49) == {"last": 49}  # the last is the best: one candidate
    assert candidate_epochs([], 10) == {"last": 10}


def test_the_crop_proxy_sees_a_false_positive_on_a_lesion_free_pair() -> None:
    image = np.zeros((3, 10, 40, 40), dtype=np.float32)
    image[:, 1:9, 2:38, 2:38] = 1.0
    empty = np.zeros((10, 40, 40), dtype=np.uint8)
    case = make_crop_case("free", image, empty, PATCH, SPACING, n_background=10, seed=1)
    assert len(case.boxes) == 10
    covered = np.zeros(case.truth.shape, dtype=bool)
    for box in case.boxes:
        covered[box] = True
    clean = score_crops([case], [(np.zeros(case.truth.shape, np.float32), covered)], (0.5,), (3.0,))
    assert clean.score == 1.0 and clean.false_positives_per_pair == 0.0
    spot = np.zeros(case.truth.shape, np.float32)
    z, y, x = (s.start for s in case.boxes[0])
    spot[z:z + 2, y:y + 3, x:x + 3] = 0.9  # 54 mm3 inside a box
    noisy = score_crops([case], [(spot, covered)], (0.5,), (3.0,))
    assert noisy.score == 0.0 and noisy.false_positives_per_pair == 1.0


def test_default_pairs_keep_their_cache_key_and_the_levers_change_it() -> None:
    assert RealPairConfig().key() == "3b2d1de70d62"  # the validation / test pairs every realbg model was scored on
    levers = RealPairConfig(max_affine_fraction=0.01, faint_lesion_share=0.25, new_lesions=(2, 8))
    assert levers.key() != RealPairConfig().key()
    assert RealPairConfig(max_affine_fraction=0.01).key() != RealPairConfig(faint_lesion_share=0.25).key()


def test_affine_residual_is_bounded_and_keeps_the_rigid_part() -> None:
    rigid = sitk.Euler3DTransform((10.0, 20.0, 30.0), 0.01, -0.02, 0.005, (0.5, -0.3, 0.2))
    affine, residual = with_affine_residual(rigid, 0.01, np.random.default_rng(3))
    assert len(residual) == 9 and max(abs(v) for v in residual) <= 0.01
    assert affine.GetCenter() == pytest.approx(rigid.GetCenter())
    assert affine.GetTranslation() == pytest.approx(rigid.GetTranslation())
    rotation = np.array(rigid.GetMatrix()).reshape(3, 3)
    assert np.array(affine.GetMatrix()).reshape(3, 3) == pytest.approx(rotation @ (np.eye(3) + np.reshape(residual, (3, 3))), abs=1e-5)
    # 70 mm from the centre a 1 % residual moves a point by at most ~1.2 mm more than the rigid transform
    point = (80.0, 20.0, 30.0)
    extra = np.linalg.norm(np.subtract(affine.TransformPoint(point), rigid.TransformPoint(point)))
    assert extra <= 70 * 0.01 * np.sqrt(3) + 1e-6
    same = with_affine_residual(rigid, 0.01, np.random.default_rng(3))[1]
    assert same == residual  # deterministic from the generator's state


def test_command_line_sets_the_training_levers_and_the_checkpoint_choice() -> None:
    config = parse_args(["--threads", "1", "--train-new-lesions", "2", "8", "--train-affine-residual", "0.01",
                         "--train-faint-share", "0.25", "--crop-background-boxes", "8"])
    assert config.checkpoint_choice == "whole" and config.finetune_settings.crop_background_boxes == 8
    pairs = train_pair_config(config)
    assert pairs.new_lesions == (2, 8) and pairs.max_affine_fraction == 0.01 and pairs.faint_lesion_share == 0.25
    assert train_pair_config(RealBgConfig(Path("."), Path("."))).key() == RealPairConfig().key()
    assert parse_args(["--threads", "1", "--checkpoint-choice", "proxy"]).checkpoint_choice == "proxy"
    with pytest.raises(ValueError):
        RealBgConfig(Path("."), Path("."), checkpoint_choice="best")
