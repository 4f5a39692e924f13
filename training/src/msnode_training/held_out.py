"""Held-out evaluation of an exported model through ONNX Runtime, the runtime the node uses: MSSEG-2 scores at
the card's post-processing on synthetic test pairs that no training or tuning step saw, and the CPU seconds each
case took. The result goes into the model card, so a shipped model carries figures that were not tuned on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from msnode_training.export import onnx_session, validate_model_card, write_model_card_markdown
from msnode_training.inference import ModelGeometry, foreground_probability, lesion_mask, onnx_runner
from msnode_training.metrics import score_case, summarize
from msnode_training.readers import LongitudinalCase

CPU_THREADS = 2


def card_geometry(card: dict[str, Any]) -> ModelGeometry:
    """Inference geometry from the card, without mirroring (the CPU default of the node)."""
    return ModelGeometry(tuple(float(v) for v in card["spacing_mm"]), tuple(int(v) for v in card["patch_size"]),
                         len(card["output_labels"]))


def evaluate_onnx_model(onnx_path: Path, geometry: ModelGeometry, threshold: float, min_lesion_volume_mm3: float,
                        cases: Iterable[LongitudinalCase]) -> dict[str, Any]:
    """MSSEG-2 summary, scores per case, and ONNX Runtime seconds per case on CPU_THREADS threads (the whole Python
    inference path: resampling, channels, sliding window, no mirroring)."""
    run_patch = onnx_runner(onnx_session(onnx_path, CPU_THREADS))
    scores, per_case, seconds = [], {}, []
    for case in cases:
        if case.label is None:
            raise ValueError(f"{case.case_id} has no truth mask to score against")
        started = time.monotonic()
        probability = foreground_probability(case.prior, case.current, case.geometry, geometry, run_patch)
        seconds.append(time.monotonic() - started)
        spacing = case.geometry.spacing_zyx
        prediction = lesion_mask(probability, spacing, threshold, min_lesion_volume_mm3)
        scores.append(score_case(case.label, prediction, spacing))
        per_case[case.case_id] = scores[-1].as_dict()
    if not scores:
        raise ValueError("no cases to evaluate")
    return {"summary": summarize(scores), "per_case": per_case,
            "onnx_cpu_seconds_per_case": {"threads": CPU_THREADS, "mean": round(sum(seconds) / len(seconds), 2),
                                          "max": round(max(seconds), 2)}}


def evaluate_with_card(model_dir: Path, cases: Iterable[LongitudinalCase]) -> dict[str, Any]:
    """`evaluate_onnx_model` with the geometry and post-processing of the model card in `model_dir`."""
    card = json.loads((model_dir / "model_card.json").read_text())
    return evaluate_onnx_model(model_dir / card["onnx_file"], card_geometry(card), card["default_threshold"],
                               card["min_lesion_volume_mm3"], cases)


def synthetic_test_entries(result: dict[str, Any], seed: int) -> dict[str, Any]:
    """The model card's `evaluation` entries for a held-out synthetic test drawn with `seed`."""
    return {"synthetic_test": result["summary"], "synthetic_test_per_case": result["per_case"],
            "synthetic_test_provenance": {
                "seed": seed, "runtime": "ONNX Runtime CPU, card threshold and minimum lesion volume, no mirroring",
                "onnx_cpu_seconds_per_case": result["onnx_cpu_seconds_per_case"]}}


def record_synthetic_test(model_dir: Path, cases: Iterable[LongitudinalCase], seed: int) -> dict[str, Any]:
    """Evaluate an already exported model on held-out synthetic pairs and add the figures to its model_card.json and
    MODEL_CARD.md (the pipeline puts them in the card when it writes it)."""
    result = evaluate_with_card(model_dir, cases)
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text())
    card["evaluation"].update(synthetic_test_entries(result, seed))
    problems = validate_model_card(card, model_dir)
    if problems:
        raise ValueError(f"model card invalid: {problems}")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    write_model_card_markdown(card, model_dir / "MODEL_CARD.md")
    return result
