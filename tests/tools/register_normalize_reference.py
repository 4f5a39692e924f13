"""The training pipeline's normalisation of one channel, for tests/register.rs to compare with.

Usage: register_normalize_reference.py A.nii.gz B.nii.gz OUT.nii.gz
Writes zscore_in_mask(A, nonzero_mask([A, B])) from msnode_training.channels on A's grid.
"""

import sys

import numpy as np
import SimpleITK as sitk

from msnode_training.channels import nonzero_mask, zscore_in_mask

a_path, b_path, out_path = sys.argv[1:4]
a_image = sitk.ReadImage(a_path, sitk.sitkFloat32)
a = sitk.GetArrayFromImage(a_image)
b = sitk.GetArrayFromImage(sitk.ReadImage(b_path, sitk.sitkFloat32))
mask = nonzero_mask(np.stack([a, b]))
out = sitk.GetImageFromArray(zscore_in_mask(a, mask))
out.CopyInformation(a_image)
sitk.WriteImage(out, out_path)
