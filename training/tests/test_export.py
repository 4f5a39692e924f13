"""Export, model card and parity on the model the session's tiny pipeline produced."""

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import torch

from msnode_training.export import (
    load_trained_model,
    onnx_session,
    parity_check,
    sha256_of,
    validate_model_card,
)
from msnode_training.readers import LongitudinalCase


def exported(pipeline_run: dict) -> tuple[dict, Path]:
    model_dir = Path(pipeline_run["export_dir"])
    return json.loads((model_dir / "model_card.json").read_text()), model_dir


def test_card_describes_the_exported_model(pipeline_run: dict) -> None:
    card, model_dir = exported(pipeline_run)
    assert validate_model_card(card, model_dir) == []
    assert card["onnx_sha256"] == sha256_of(model_dir / "model.onnx")
    assert card["input_channels"] == ["prior", "current", "current_minus_prior"]
    assert card["spacing_mm"] == [2.0, 2.0, 2.0] and card["patch_size"] == [32, 48, 48]
    assert card["output_labels"] == {"0": "background", "1": "new_or_enlarging_lesion"}
    assert card["default_threshold"] in (0.4, 0.6) and card["min_lesion_volume_mm3"] in (3.0, 20.0)
    assert card["normalization"] == {"scheme": "zscore", "use_mask": True, "clip_percentiles": None,
                                     "mask": card["normalization"]["mask"]}
    assert card["provenance"]["seed"] == 7 and "torch" in card["provenance"]["package_versions"]
    assert set(card["evaluation"]["lesjak_longitudinal_test"]) >= {"mean_f1", "mean_sensitivity", "mean_ppv",
                                                                   "mean_dice"}
    text = (model_dir / "MODEL_CARD.md").read_text()
    assert "not cleared for clinical use" in text.lower() and card["onnx_sha256"] in text


def test_card_validation_catches_mistakes(pipeline_run: dict) -> None:
    card, model_dir = exported(pipeline_run)
    broken = copy.deepcopy(card)
    broken["onnx_sha256"] = "0" * 64
    assert validate_model_card(broken, model_dir) == ["onnx_sha256 does not match the ONNX file"]
    broken = copy.deepcopy(card)
    del broken["spacing_mm"]
    assert validate_model_card(broken, model_dir) == ["missing or mistyped field 'spacing_mm'"]
    broken = copy.deepcopy(card)
    broken["dynamic_spatial"] = False
    broken["default_threshold"] = 1.5
    assert validate_model_card(broken, model_dir) == ["default_threshold must lie in (0, 1)",
                                                      "dynamic_spatial does not match the ONNX input shape"]


def test_onnx_is_opset_17_with_dynamic_spatial_axes_and_matches_torch(pipeline_run: dict) -> None:
    card, model_dir = exported(pipeline_run)
    model_proto = onnx.load(str(model_dir / "model.onnx"))
    assert max(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    model = load_trained_model(Path(pipeline_run["results_folder"]), Path(pipeline_run["checkpoint"]))
    session = onnx_session(model_dir / "model.onnx")
    rng = np.random.default_rng(0)
    for shape in [(32, 48, 48), (40, 64, 56)]:
        x = rng.normal(size=(1, 3, *shape)).astype(np.float32)
        with torch.no_grad():
            expected = model.network(torch.from_numpy(x)).numpy()
        got = session.run(None, {card["input_name"]: x})[0]
        assert got.shape == (1, 2, *shape)
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_parity_on_a_real_lesjak_input(pipeline_run: dict, lesjak_patient01) -> None:
    card, model_dir = exported(pipeline_run)
    model = load_trained_model(Path(pipeline_run["results_folder"]), Path(pipeline_run["checkpoint"]))
    # The central part of patient 01 (both visits, brain and lesions) keeps the test short.
    full = lesjak_patient01
    box = (slice(14, 40), slice(70, 270), slice(60, 260))
    case = LongitudinalCase("patient01_centre", full.prior[box], full.current[box], full.label[box],
                            full.geometry.cropped(box), full.brain_mask[box])
    assert case.label.sum() > 0
    report = parity_check(model, model_dir / "model.onnx", case, card["default_threshold"],
                          card["min_lesion_volume_mm3"])
    assert report["passes"], report
    assert report["percentile_99_5"]["volume_torch_mm3"] > 0
    for name in ("card_threshold", "percentile_99_5"):
        assert report[name]["dice"] >= 0.99
        assert report[name]["relative_volume_difference"] <= 0.01
    assert card["evaluation"]["onnx_parity"]["passes"] is True
