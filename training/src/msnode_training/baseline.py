"""Classical new-lesion detector, the floor any model must beat: z-scored subtraction of the aligned prior from the
current inside the brain, optional Gaussian smoothing, a threshold and a minimum lesion size (both chosen on
generated validation pairs only), 6-connected components. Scored with the MSSEG-2 rules of `metrics.py`, plus
sensitivity per lesion-size bin and false-positive lesions per case."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnode_training.channels import zscore_in_mask
from msnode_training.metrics import (
    detected_components,
    label_lesions,
    overlap_counts,
    remove_small_components,
    score_case,
    summarize,
)
from msnode_training.readers import LongitudinalCase
from msnode_training.volumes import Geometry, resample_to

DATA_CITATION = ("Lesjak Z et al., Neuroinformatics 2016 (longitudinal database) and 2017, "
                 "doi:10.1007/s12021-017-9348-7 (cross-sectional database); CC-BY")
SIZE_BINS_MM3 = (("<30", 0.0, 30.0), ("30-100", 30.0, 100.0), (">100", 100.0, float("inf")))


@dataclass(frozen=True)
class BaselineParams:
    threshold: float  # on zscore(current) - zscore(prior)
    min_volume_mm3: float  # components of this volume or less are dropped
    smoothing_mm: float  # Gaussian sigma of the difference map (0 = none)


def subtraction_map(prior: np.ndarray, current: np.ndarray, brain: np.ndarray,
                    spacing_zyx: tuple[float, float, float], smoothing_mm: float) -> np.ndarray:
    """zscore(current) - zscore(prior), each z-scored inside the brain, optionally smoothed; 0 outside."""
    mask = brain > 0
    difference = zscore_in_mask(current, mask) - zscore_in_mask(prior, mask)
    if smoothing_mm > 0:
        difference = ndimage.gaussian_filter(difference, [smoothing_mm / s for s in spacing_zyx])
    return np.where(mask, difference, 0).astype(np.float32)


def detect(prior: np.ndarray, current: np.ndarray, brain: np.ndarray, spacing_zyx: tuple[float, float, float],
           params: BaselineParams) -> np.ndarray:
    difference = subtraction_map(prior, current, brain, spacing_zyx, params.smoothing_mm)
    return remove_small_components(difference > params.threshold, spacing_zyx, params.min_volume_mm3)


def score_with_bins(truth: np.ndarray, prediction: np.ndarray,
                    spacing_zyx: tuple[float, float, float]) -> dict[str, Any]:
    """MSSEG-2 case scores plus each true lesion's volume and detection, and the false-positive lesions (predicted
    components that the PPV rule does not accept)."""
    scores = score_case(truth, prediction, spacing_zyx)
    voxel = float(np.prod(spacing_zyx))
    truth_labels, n_truth = label_lesions(truth, voxel)
    pred_labels, n_pred = label_lesions(prediction, voxel)
    counts = overlap_counts(truth_labels, n_truth, pred_labels, n_pred)
    detected = detected_components(counts) if n_truth and n_pred else np.zeros(n_truth, bool)
    volumes = np.bincount(truth_labels.ravel(), minlength=n_truth + 1)[1:] * voxel
    return {**scores.as_dict(), "false_positive_lesions": n_pred - scores.predicted_lesions_correct,
            "lesions": [{"volume_mm3": round(float(v), 1), "detected": bool(d)} for v, d in zip(volumes, detected)]}


def summarize_with_bins(case_scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The challenge summary (`metrics.summarize`), false-positive lesions per case over all cases, and the
    sensitivity pooled over lesions per size bin."""
    from msnode_training.metrics import CaseScores

    fields = CaseScores.__dataclass_fields__
    summary: dict[str, Any] = summarize([CaseScores(**{k: c[k] for k in fields}) for c in case_scores])
    summary["false_positive_lesions_per_case"] = float(np.mean([c["false_positive_lesions"] for c in case_scores])) \
        if case_scores else None
    bins = {}
    lesions = [lesion for c in case_scores for lesion in c["lesions"]]
    for name, lo, hi in SIZE_BINS_MM3:
        inside = [lesion for lesion in lesions if lo <= lesion["volume_mm3"] < hi]
        found = sum(lesion["detected"] for lesion in inside)
        bins[name] = {"lesions": len(inside), "detected": found,
                      "sensitivity": round(found / len(inside), 3) if inside else None}
    summary["sensitivity_by_size_mm3"] = bins
    return summary


def selection_key(summary: dict[str, Any]) -> tuple[float, float]:
    """Higher mean F1, then fewer false-positive lesions per case."""
    f1 = summary["mean_f1"] if summary["mean_f1"] is not None else 0.0
    return (round(f1, 6), -(summary["false_positive_lesions_per_case"] or 0.0))


def tune(cases: Sequence[LongitudinalCase], thresholds: Sequence[float], min_volumes_mm3: Sequence[float],
         smoothings_mm: Sequence[float]) -> tuple[BaselineParams, list[dict[str, Any]]]:
    """Grid search on validation pairs: best mean F1, ties broken by fewer false positives per case."""
    table = []
    best: tuple[tuple[float, float], BaselineParams] | None = None
    for smoothing in smoothings_mm:
        maps = [subtraction_map(c.prior, c.current, c.brain_mask, c.geometry.spacing_zyx, smoothing) for c in cases]
        for threshold in thresholds:
            for min_volume in min_volumes_mm3:
                params = BaselineParams(threshold, min_volume, smoothing)
                scored = [score_with_bins(c.label, remove_small_components(m > threshold, c.geometry.spacing_zyx,
                                                                           min_volume), c.geometry.spacing_zyx)
                          for c, m in zip(cases, maps)]
                summary = summarize_with_bins(scored)
                table.append({**asdict(params), "mean_f1": summary["mean_f1"], "mean_ppv": summary["mean_ppv"],
                              "mean_sensitivity": summary["mean_sensitivity"],
                              "false_positive_lesions_per_case": summary["false_positive_lesions_per_case"]})
                key = selection_key(summary)
                if best is None or key > best[0]:
                    best = (key, params)
    assert best is not None, "empty search grid"
    return best[1], table


def evaluate_generated(cases: Sequence[LongitudinalCase], params: BaselineParams) -> dict[str, Any]:
    per_case = {}
    for case in cases:
        prediction = detect(case.prior, case.current, case.brain_mask, case.geometry.spacing_zyx, params)
        per_case[case.case_id] = score_with_bins(case.label, prediction, case.geometry.spacing_zyx)
    return {"summary": summarize_with_bins(list(per_case.values())), "cases": per_case}


def evaluate_real_pair(case: LongitudinalCase, params: BaselineParams,
                       spacing_zyx: tuple[float, float, float]) -> dict[str, Any]:
    """A real pair on its common grid (both visits through the dataset's transforms): the detector runs on the
    pair grid (`spacing_zyx`), its mask is taken back to the truth's grid (nearest neighbour) and scored there."""
    assert case.label is not None and case.brain_mask is not None
    grid = case.geometry.with_spacing(spacing_zyx)

    def to_grid(array: np.ndarray) -> np.ndarray:
        return resample_to(case.geometry.to_image(array.astype(np.float32)), grid, sitk.sitkLinear)

    brain = to_grid(case.brain_mask) > 0.5
    prediction = detect(to_grid(case.prior) * brain, to_grid(case.current) * brain, brain, grid.spacing_zyx, params)
    back = resample_to(grid.to_image(prediction.astype(np.uint8)), case.geometry, sitk.sitkNearestNeighbor)
    scored = score_with_bins(case.label, back.astype(np.uint8), case.geometry.spacing_zyx)
    return {"summary": summarize_with_bins([scored]), "cases": {case.case_id: scored}}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`baseline.json` (everything) and `baseline.md` (the figures)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "baseline.json", out_dir / "baseline.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    params = result["chosen"]
    lines = [
        "# Subtraction baseline (issue 19, item 4a)",
        "",
        "z-scored subtraction zscore(current) - zscore(prior) inside the brain, Gaussian smoothing, threshold,",
        "minimum lesion size, 6-connected components. Threshold, minimum size and smoothing chosen on generated",
        "validation pairs only (best mean F1, then fewest false positives per case); never on patient03.",
        "Scores: MSSEG-2 rules (`metrics.py`: components of 3 mm3 or less ignored, alpha 10 %, beta 70 %, gamma",
        "65 %), sensitivity pooled over lesions per size bin, false-positive lesions per case (predicted components",
        "the PPV rule rejects).",
        "",
        f"Chosen: threshold {params['threshold']}, minimum lesion volume {params['min_volume_mm3']} mm3, smoothing "
        f"{params['smoothing_mm']} mm. Pair grid {result['spacing_zyx']} mm (z, y, x).",
        "",
        "| evaluation set | cases | F1 | PPV | sensitivity | Dice | FP lesions / case | sens. < 30 mm3 | "
        "sens. 30-100 | sens. > 100 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, block in result["evaluations"].items():
        s = block["summary"]
        bins = s["sensitivity_by_size_mm3"]

        def b(key: str) -> str:
            entry = bins[key]
            return f"{_fmt(entry['sensitivity'], 2)} ({entry['detected']}/{entry['lesions']})"

        lines.append(f"| {name} | {s['cases']} | {_fmt(s['mean_f1'])} | {_fmt(s['mean_ppv'])} | "
                     f"{_fmt(s['mean_sensitivity'])} | {_fmt(s['mean_dice'])} | "
                     f"{_fmt(s['false_positive_lesions_per_case'], 1)} | {b('<30')} | {b('30-100')} | {b('>100')} |")
    g = result["generation"]
    lines += [
        "",
        f"Pairs: validation seed {result['seeds']['validation']} ({result['validation_pairs']} pairs), held-out test "
        f"seed {result['seeds']['test']} ({result['test_pairs']} pairs), run seed {result['seeds']['run']}; "
        f"generation {_fmt(g['seconds_per_pair'], 1)} s per pair with {g['workers']} worker(s). "
        "The held-out pairs share the training backgrounds (patient01, patient07, patient26) but no pair.",
        f"patient03: Lesjak longitudinal, both studies resampled onto the common grid with the dataset's transforms, "
        f"truth = the change components that brighten ({result['patient03_true_lesions']} lesions > 3 mm3); the "
        "detector runs on the pair grid and its mask is scored on the common grid.",
        f"Machine: {result['machine']['cpu_count']} CPU cores ({result['machine']['platform']}), wall "
        f"{result['seconds']:.0f} s in all.",
        "",
        f"Data: {DATA_CITATION}.",
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def run_baseline(work: Path, out_dir: Path, run_seed: int, validation_pairs: int, test_pairs: int,
                 thresholds: Sequence[float], min_volumes_mm3: Sequence[float], smoothings_mm: Sequence[float],
                 workers: int = 1, config: Any = None) -> dict[str, Any]:
    from msnode_training.paths import lesjak_longitudinal_dir
    from msnode_training.readers import read_lesjak_longitudinal_case
    from msnode_training.realpairs import RealPairConfig, generate_pairs, read_pair
    from msnode_training.synth import stream_seed

    start = time.monotonic()
    config = config or RealPairConfig()
    seeds = {"run": run_seed, "validation": stream_seed(run_seed, "real_pairs_validation"),
             "test": stream_seed(run_seed, "real_pairs_test")}
    generated = {}
    seconds = []  # as recorded when each pair was made (cached pairs keep theirs)
    for split, n in (("validation", validation_pairs), ("test", test_pairs)):
        dirs, _ = generate_pairs(work, seeds[split], range(n), config, workers)
        pairs = [read_pair(d) for d in dirs]
        generated[split] = [case for case, _ in pairs]
        seconds += [meta["seconds"] for _, meta in pairs]
    chosen, table = tune(generated["validation"], thresholds, min_volumes_mm3, smoothings_mm)
    patient03 = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / "patient03")
    patient03.case_id = "lesjak_patient03"
    evaluations = {
        "real patient03 (never used for tuning)": evaluate_real_pair(patient03, chosen, config.spacing_zyx),
        "held-out generated pairs": evaluate_generated(generated["test"], chosen),
        "validation pairs (tuning set)": evaluate_generated(generated["validation"], chosen),
    }
    result = {
        "chosen": asdict(chosen), "spacing_zyx": list(config.spacing_zyx), "seeds": seeds,
        "validation_pairs": validation_pairs, "test_pairs": test_pairs,
        "search_grid": {"thresholds": list(thresholds), "min_volumes_mm3": list(min_volumes_mm3),
                        "smoothings_mm": list(smoothings_mm)},
        "search_table": table, "evaluations": evaluations,
        "patient03_true_lesions": evaluations["real patient03 (never used for tuning)"]["summary"]["true_lesions"],
        "generation": {"workers": workers, "pairs": len(seconds),
                       "seconds_per_pair": float(np.mean(seconds)) if seconds else None},
        "pair_config": asdict(config), "pair_config_key": config.key(), "machine": machine(),
        "data": DATA_CITATION,
        "seconds": time.monotonic() - start,
    }
    write_report(result, out_dir)
    return result


if __name__ == "__main__":
    from msnode_training.cli import baseline_main

    baseline_main()
