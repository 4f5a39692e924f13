"""Score msnode's lesion map of one visit against a lesion mask with the MSSEG-2 rules.

The lesion map (`lesions.nii.gz` from `msnode analyze` without `--prior`, on the grid of the current
scan) is resampled (nearest neighbour, physical space) onto the truth mask's grid and compared
lesion-wise, with the sensitivity per lesion-size bin.

Usage: lesion_load_score.py TRUTH_NIFTI LESIONS_NIFTI   (prints the scores as JSON)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import SimpleITK as sitk

from msnode_training.baseline import score_with_bins, summarize_with_bins


def main() -> int:
    truth_path, lesions_path = Path(sys.argv[1]), Path(sys.argv[2])
    truth = sitk.ReadImage(str(truth_path), sitk.sitkFloat32)
    lesions = sitk.ReadImage(str(lesions_path), sitk.sitkFloat32)
    on_truth = sitk.Resample(lesions, truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    spacing_zyx = tuple(reversed(truth.GetSpacing()))
    case = score_with_bins(sitk.GetArrayFromImage(truth) > 0.5, sitk.GetArrayFromImage(on_truth) > 0, spacing_zyx)
    summary = summarize_with_bins([case])
    print(json.dumps({**{k: v for k, v in case.items() if k != "lesions"},
                      "sensitivity_by_size_mm3": summary["sensitivity_by_size_mm3"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
