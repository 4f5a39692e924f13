"""Score msnode's lesion map of a Lesjak longitudinal patient with the MSSEG-2 rules.

The lesion map (`lesions.nii.gz` from `msnode analyze`, on the grid of the patient's study2 FLAIR) is
resampled onto the patient's common grid with the study's ITK transform, then compared with the
new-or-enlarging truth that the training pipeline derives from the change mask.

Usage: analyze_score.py PATIENT_DIR LESIONS_NIFTI   (prints the scores as JSON)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import SimpleITK as sitk

from msnode_training.metrics import score_case
from msnode_training.readers import read_itk_affine, read_lesjak_longitudinal_case
from msnode_training.volumes import resample_to


def main() -> int:
    patient_dir, lesions_path = Path(sys.argv[1]), Path(sys.argv[2])
    case = read_lesjak_longitudinal_case(patient_dir)
    lesions = sitk.ReadImage(str(lesions_path), sitk.sitkFloat32)
    transform = read_itk_affine(patient_dir / "study2_FLAIR_to_common_space.txt")
    prediction = resample_to(lesions, case.geometry, sitk.sitkNearestNeighbor, transform) > 0
    assert case.label is not None
    scores = score_case(case.label > 0, prediction, case.geometry.spacing_zyx)
    print(json.dumps(scores.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
