"""Exported models (through ONNX Runtime, their cards' post-processing) and the subtraction baseline (its tuned
parameters from `experiments/baseline.json`) scored by the same code on the same sets: held-out real-background
pairs and the real Lesjak patient03 pair, with size bins and false-positive lesions.

    python -m msnode_training.compare --pairs training/work/realbg/pairs/<key>_seed8 --test-pairs 8 \\
        --models models/compact models/realbg --out training/experiments/compare.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from msnode_training.baseline import (
    BaselineParams,
    detect,
    evaluate_real_pair,
    score_with_bins,
    summarize_with_bins,
)
from msnode_training.export import onnx_session
from msnode_training.held_out import card_geometry
from msnode_training.inference import foreground_probability, lesion_mask, onnx_runner
from msnode_training.paths import lesjak_longitudinal_dir
from msnode_training.readers import LongitudinalCase, read_lesjak_longitudinal_case
from msnode_training.realpairs import read_pair


def score_model(model_dir: Path, cases: Sequence[LongitudinalCase], threads: int = 1) -> dict[str, Any]:
    card = json.loads((model_dir / "model_card.json").read_text())
    runner = onnx_runner(onnx_session(model_dir / card["onnx_file"], threads))
    geometry = card_geometry(card)
    per_case = {}
    for case in cases:
        assert case.label is not None
        probability = foreground_probability(case.prior, case.current, case.geometry, geometry, runner)
        mask = lesion_mask(probability, case.geometry.spacing_zyx, card["default_threshold"],
                           card["min_lesion_volume_mm3"])
        per_case[case.case_id] = score_with_bins(case.label, mask, case.geometry.spacing_zyx)
    return {"summary": summarize_with_bins(list(per_case.values())), "cases": per_case,
            "threshold": card["default_threshold"], "min_lesion_volume_mm3": card["min_lesion_volume_mm3"]}


def score_baseline(params: BaselineParams, cases: Sequence[LongitudinalCase]) -> dict[str, Any]:
    per_case = {}
    for case in cases:
        assert case.label is not None and case.brain_mask is not None
        prediction = detect(case.prior, case.current, case.brain_mask, case.geometry.spacing_zyx, params)
        per_case[case.case_id] = score_with_bins(case.label, prediction, case.geometry.spacing_zyx)
    return {"summary": summarize_with_bins(list(per_case.values())), "cases": per_case}


def compare(pairs_dir: Path, n_test: int, model_dirs: Sequence[Path], baseline_json: Path,
            patient: str = "patient03", threads: int = 1) -> dict[str, Any]:
    dirs = sorted(pairs_dir.glob("realpair_*"))[:n_test]
    test = [read_pair(d)[0] for d in dirs]
    real = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / patient)
    real.case_id = f"lesjak_{patient}"
    baseline = json.loads(baseline_json.read_text())
    params = BaselineParams(**baseline["chosen"])
    result: dict[str, Any] = {"test_pairs": [d.name for d in dirs], "patient": patient, "methods": {}}
    result["methods"]["subtraction baseline"] = {
        "held_out_pairs": score_baseline(params, test),
        patient: evaluate_real_pair(real, params, tuple(baseline["spacing_zyx"])),
    }
    for model_dir in model_dirs:
        result["methods"][model_dir.name] = {"held_out_pairs": score_model(model_dir, test, threads),
                                             patient: score_model(model_dir, [real], threads)}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="a held-out pair folder (<key>_seed<test seed>)")
    parser.add_argument("--test-pairs", type=int, default=8)
    parser.add_argument("--models", type=Path, nargs="*", default=[])
    parser.add_argument("--baseline", type=Path, default=Path(__file__).resolve().parents[2] / "experiments"
                        / "baseline.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = compare(args.pairs, args.test_pairs, args.models, args.baseline, threads=args.threads)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    for method, sets in result["methods"].items():
        for name, scored in sets.items():
            s = scored["summary"]
            print(f"{method:24s} {name:16s} F1 {s['mean_f1']} sens {s['mean_sensitivity']} PPV {s['mean_ppv']} "
                  f"Dice {s['mean_dice']} FP/case {s['false_positive_lesions_per_case']} "
                  f"bins {[b['sensitivity'] for b in s['sensitivity_by_size_mm3'].values()]}")


if __name__ == "__main__":
    main()
