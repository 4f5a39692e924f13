"""The tiny model committed in models/tiny for the node's fast tests."""

import json

import numpy as np

from msnode_training.export import onnx_runner, onnx_session, validate_model_card
from msnode_training.inference import ModelGeometry, foreground_probability, lesion_mask
from msnode_training.paths import models_dir

TINY = models_dir() / "tiny"


def test_tiny_model_card_is_valid_and_small() -> None:
    card = json.loads((TINY / "model_card.json").read_text())
    assert validate_model_card(card, TINY) == []
    assert (TINY / "model.onnx").stat().st_size < 5_000_000
    assert card["evaluation"]["onnx_parity"]["passes"] is True
    assert card["evaluation"]["lesjak_longitudinal_test"]["cases_with_new_lesions"] >= 1
    assert "not cleared for clinical use" in (TINY / "MODEL_CARD.md").read_text().lower()


def test_tiny_model_runs_on_a_real_lesjak_input(lesjak_patient01) -> None:
    card = json.loads((TINY / "model_card.json").read_text())
    geometry = ModelGeometry(tuple(card["spacing_mm"]), tuple(card["patch_size"]), len(card["output_labels"]))
    case = lesjak_patient01
    probability = foreground_probability(case.prior, case.current, case.geometry, geometry,
                                         onnx_runner(onnx_session(TINY / card["onnx_file"])))
    assert probability.shape == case.prior.shape
    assert np.isfinite(probability).all() and probability.min() >= 0 and probability.max() <= 1
    mask = lesion_mask(probability, case.geometry.spacing_zyx, card["default_threshold"],
                       card["min_lesion_volume_mm3"])
    brain = case.brain_mask > 0
    # Lesion candidates lie in the (skull-stripped) input, and the model does not call the whole brain a lesion.
    assert mask[~brain].sum() == 0
    assert mask.sum() < 0.2 * brain.sum()
