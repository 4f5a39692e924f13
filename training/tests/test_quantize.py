"""Static int8 quantisation: calibration tiles are the inference tiles, and the quantised model is a valid model
folder whose output follows the fp32 model's (on the committed compact model, small and fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from msnode_training.export import validate_model_card
from msnode_training.inference import sliding_window_starts
from msnode_training.paths import models_dir
from msnode_training.held_out import card_geometry
from msnode_training.quantize import calibration_tiles, quantize_model
from msnode_training.readers import LongitudinalCase
from msnode_training.volumes import Geometry

COMPACT = models_dir() / "compact"


def blob_case(seed: int) -> LongitudinalCase:
    """A smooth bright ellipsoid 'brain' with a brighter spot on the current, on compact's 2 mm grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 56, 60)], indexing="ij")
    brain = (z ** 2 + y ** 2 + x ** 2) < 0.8
    prior = (brain * (100 + 5 * rng.normal(size=brain.shape))).astype(np.float32)
    current = prior.copy()
    current[18:22, 26:30, 28:32] *= 1.8
    return LongitudinalCase(f"blob{seed}", prior, current, None,
                            Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), brain.shape))


def test_calibration_tiles_are_the_sliding_windows_tiles() -> None:
    card = json.loads((COMPACT / "model_card.json").read_text())
    geometry = card_geometry(card)
    case = blob_case(0)
    tiles = calibration_tiles([case], geometry)
    brain = np.argwhere(case.current > 0)
    extent = brain.max(axis=0) - brain.min(axis=0) + 1  # the crop to the nonzero mask
    expected = np.prod([len(sliding_window_starts(max(int(e), p), p)) for e, p in zip(extent, geometry.patch_size)])
    assert len(tiles) == expected
    assert tiles[0].shape == (1, len(card["input_channels"]), *geometry.patch_size)
    assert len(calibration_tiles([case], geometry, every=2)) == (expected + 1) // 2
    assert abs(float(np.concatenate([t.ravel() for t in tiles]).std()) - 1.0) < 0.5  # z-scored inputs


def test_the_quantised_model_is_a_valid_folder_close_to_fp32(tmp_path: Path) -> None:
    card = json.loads((COMPACT / "model_card.json").read_text())
    tiles = calibration_tiles([blob_case(1), blob_case(2)], card_geometry(card))
    record = quantize_model(COMPACT, tmp_path, tiles)
    quantised = json.loads((tmp_path / "model_card.json").read_text())
    assert validate_model_card(quantised, tmp_path) == []
    assert quantised["name"] == card["name"] + "-int8" and quantised["onnx_sha256"] != card["onnx_sha256"]
    assert record["calibration_tiles"] == len(tiles) and record["source_onnx_sha256"] == card["onnx_sha256"]
    assert len(record["kept_in_fp32"]) == 1  # the convolution that reads the input
    assert record["source_model"] == "compact" and not (tmp_path / "model.prepared.onnx").exists()
    assert quantised["evaluation"] == {"fp32_source": card["evaluation"]}
    assert "**Quantised model**" in (tmp_path / "MODEL_CARD.md").read_text()
    graph = __import__("onnx").load(str(tmp_path / "model.onnx")).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    first = next(n for n in graph.node if n.name == record["kept_in_fp32"][0])
    assert first.input[0] == card["input_name"]  # fed the fp32 input, not a DequantizeLinear
    x = calibration_tiles([blob_case(3)], card_geometry(card))[0]
    fp32 = onnxruntime.InferenceSession(str(COMPACT / card["onnx_file"])).run(None, {card["input_name"]: x})[0]
    int8 = onnxruntime.InferenceSession(str(tmp_path / "model.onnx")).run(None, {card["input_name"]: x})[0]
    # int8 activations: the logits follow fp32 within a few percent of their spread, and the argmax mostly agrees
    assert np.abs(int8 - fp32).mean() < 0.1 * fp32.std()
    assert (int8.argmax(axis=1) == fp32.argmax(axis=1)).mean() > 0.98
    with pytest.raises(ValueError):
        quantize_model(COMPACT, tmp_path / "none", [])
