"""Score a model through the node itself on a real Lesjak longitudinal pair: both raw studies imported to DICOM with
`msnode import-nifti`, `msnode analyze` with the model folder, and its `lesions.nii.gz` (on the current study's
grid) taken to the dataset's common grid with the study's transform and scored there with the MSSEG-2 rules and
the size bins, as `msnode-baseline` and `realbg` score patient03.

    python -m msnode_training.node_eval --binary /tmp/msnode-eval --model-dir models/realbg --patient patient03 \\
        --out /tmp/node_eval
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from msnode_training.baseline import score_with_bins, summarize_with_bins
from msnode_training.paths import lesjak_longitudinal_dir
from msnode_training.readers import read_itk_affine, read_lesjak_longitudinal_case
from msnode_training.volumes import Geometry, resample_to


REGISTRATIONS = ("affine", "rigid")


def node_config(model_dir: Path, threads: int, registration: str | None = None) -> str:
    """A minimal node configuration (TOML) that runs `model_dir` on the CPU; `registration` sets
    `[analysis] registration` (the node's default, affine, when None)."""
    text = f'[model]\ndir = "{model_dir.resolve()}"\nexecution_provider = "cpu"\nintra_threads = {threads}\n'
    if registration is not None:
        if registration not in REGISTRATIONS:
            raise ValueError(f"registration must be one of {REGISTRATIONS}, got {registration!r}")
        text += f'\n[analysis]\nregistration = "{registration}"\n'
    return text


def mask_to_common(lesions_path: Path, transform_path: Path, common: Geometry) -> np.ndarray:
    """The node's lesion mask (current study grid) on the common grid: nearest neighbour through the study's
    ITK transform (common points -> study points, used as given)."""
    image = sitk.ReadImage(str(lesions_path), sitk.sitkUInt8)
    return (resample_to(image, common, sitk.sitkNearestNeighbor, read_itk_affine(transform_path)) > 0).astype(np.uint8)


def run(command: list[str], log: Path) -> float:
    started = time.monotonic()
    with log.open("ab") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    return time.monotonic() - started


def evaluate_through_node(binary: Path, model_dir: Path, patient: str, out: Path, threads: int = 1,
                          registration: str | None = None) -> dict[str, Any]:
    patient_dir = lesjak_longitudinal_dir() / patient
    out.mkdir(parents=True, exist_ok=True)
    log = out / "node.log"
    series = {}
    for k, study in enumerate(("study1", "study2")):
        series[study] = out / f"dicom_{study}"
        if not any(series[study].glob("*.dcm")):
            run([str(binary), "import-nifti", str(patient_dir / f"{study}_FLAIR.nii.gz"), str(series[study]),
                 "--patient-id", patient.upper(), "--study-date", f"201{k}0101",
                 "--series-description", f"FLAIR {study}"], log)
    suffix = f"_{registration}" if registration else ""
    config = out / f"node{suffix}.toml"
    config.write_text(node_config(model_dir, threads, registration))
    analysis = out / f"analysis_{model_dir.name}{suffix}"
    seconds = run([str(binary), "-c", str(config), "analyze", "--current", str(series["study2"]),
                   "--prior", str(series["study1"]), "--out", str(analysis)], log)
    truth_case = read_lesjak_longitudinal_case(patient_dir)
    assert truth_case.label is not None
    prediction = mask_to_common(analysis / "lesions.nii.gz", patient_dir / "study2_FLAIR_to_common_space.txt",
                                truth_case.geometry)
    scored = score_with_bins(truth_case.label, prediction, truth_case.geometry.spacing_zyx)
    summary_file = analysis / "summary.json"
    return {"patient": patient, "model_dir": str(model_dir), "analyze_seconds": round(seconds, 1),
            "threads": threads, "registration": registration or "node default (affine)",
            "summary": summarize_with_bins([scored]), "case": scored,
            "node_summary": json.loads(summary_file.read_text()) if summary_file.is_file() else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, required=True, help="the msnode release binary")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--patient", default="patient03")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads in the node")
    parser.add_argument("--registration", choices=REGISTRATIONS, default=None,
                        help="[analysis] registration for analyze (default: the node's, affine)")
    args = parser.parse_args(argv)
    result = evaluate_through_node(args.binary, args.model_dir, args.patient, args.out, args.threads,
                                   args.registration)
    suffix = f"_{args.registration}" if args.registration else ""
    (args.out / f"node_eval_{args.model_dir.name}{suffix}.json").write_text(json.dumps(result, indent=2, default=str))
    keys = ("mean_f1", "mean_sensitivity", "mean_ppv", "mean_dice", "false_positive_lesions_per_case",
            "sensitivity_by_size_mm3")
    print(json.dumps({"analyze_seconds": result["analyze_seconds"], **{k: result["summary"].get(k) for k in keys}},
                     indent=1))


if __name__ == "__main__":
    main()
