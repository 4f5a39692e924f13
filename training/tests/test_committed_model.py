"""The model committed in models/compact (the default before models/realbg, kept as the baseline the model issue scores
against): its card, a real input, and the held-out figures its card reports."""

import json

import numpy as np
import pytest

from msnode_training.export import onnx_runner, onnx_session, validate_model_card
from msnode_training.inference import ModelGeometry, foreground_probability, lesion_mask
from msnode_training.paths import models_dir

SHIPPED = models_dir() / "compact"
COUNTS = ("n_true_lesions", "n_predicted_lesions", "true_lesions_detected", "predicted_lesions_correct")
VOXEL_MM3 = 8.0  # synthetic pairs at the card's 2 mm spacing


def test_shipped_model_card_is_valid_and_small() -> None:
    card = json.loads((SHIPPED / "model_card.json").read_text())
    assert validate_model_card(card, SHIPPED) == []
    assert (SHIPPED / "model.onnx").stat().st_size <= 50_000_000  # the limit for the repository
    assert card["evaluation"]["onnx_parity"]["passes"] is True
    assert card["evaluation"]["lesjak_longitudinal_test"]["cases_with_new_lesions"] >= 1
    assert "not cleared for clinical use" in (SHIPPED / "MODEL_CARD.md").read_text().lower()


def test_shipped_model_runs_on_a_real_lesjak_input(lesjak_patient01) -> None:
    card = json.loads((SHIPPED / "model_card.json").read_text())
    geometry = ModelGeometry(tuple(card["spacing_mm"]), tuple(card["patch_size"]), len(card["output_labels"]))
    case = lesjak_patient01
    probability = foreground_probability(case.prior, case.current, case.geometry, geometry,
                                         onnx_runner(onnx_session(SHIPPED / card["onnx_file"])))
    assert probability.shape == case.prior.shape
    assert np.isfinite(probability).all() and probability.min() >= 0 and probability.max() <= 1
    mask = lesion_mask(probability, case.geometry.spacing_zyx, card["default_threshold"],
                       card["min_lesion_volume_mm3"])
    brain = case.brain_mask > 0
    # Lesion candidates lie in the (skull-stripped) input, and the model does not call the whole brain a lesion.
    assert mask[~brain].sum() == 0
    assert mask.sum() < 0.02 * brain.sum()


def test_the_cards_held_out_figures_come_from_the_shipped_onnx() -> None:
    """The synthetic test set is deterministic per (seed, index): re-scoring its first two pairs with the shipped
    ONNX file gives the per-case figures the card reports."""
    from msnode_training.held_out import evaluate_with_card
    from msnode_training.pipeline import synthetic_cases

    card = json.loads((SHIPPED / "model_card.json").read_text())
    evaluation = card["evaluation"]
    assert evaluation["synthetic_test"]["cases"] >= 8
    assert evaluation["synthetic_test"]["mean_f1"] > 0.5  # the reduced CPU model still finds most synthetic lesions
    seed = evaluation["synthetic_test_provenance"]["seed"]
    cases = synthetic_cases("ms", seed, range(2), card["spacing_mm"][0])
    result = evaluate_with_card(SHIPPED, cases)
    assert list(result["per_case"]) == list(evaluation["synthetic_test_per_case"])[:2]
    for case_id, scores in result["per_case"].items():
        reported = evaluation["synthetic_test_per_case"][case_id]
        # Lesion counts exactly; the predicted volume to a few voxels, since another CPU may round a border voxel apart.
        assert {k: scores[k] for k in COUNTS} == {k: reported[k] for k in COUNTS}
        assert scores["predicted_volume_mm3"] == pytest.approx(reported["predicted_volume_mm3"], abs=5 * VOXEL_MM3)
    assert 0 < result["onnx_cpu_seconds_per_case"]["max"] < 60
