"""Readers for the data layouts the pipeline trains on: MSSEG-2 as published, and the Lesjak sets in shared/data.

Every reader returns arrays in (z, y, x) order (SimpleITK's), float32 images and uint8 labels on one grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnode_training.volumes import Geometry, read_volume, resample_to

MSSEG2_PRIOR = "flair_time01_on_middle_space.nii.gz"
MSSEG2_CURRENT = "flair_time02_on_middle_space.nii.gz"
MSSEG2_TRUTH = "ground_truth.nii.gz"


@dataclass
class LongitudinalCase:
    """Two aligned FLAIR visits and, when known, the new-or-enlarging lesion mask (1) on the same grid. A
    single-visit case (`single_visit.py`) has `prior` None and its label marks every lesion of `current`."""

    case_id: str
    prior: np.ndarray | None
    current: np.ndarray
    label: np.ndarray | None
    geometry: Geometry
    brain_mask: np.ndarray | None = None


@dataclass
class SingleVisitCase:
    """One FLAIR with its lesion mask (cross-sectional data)."""

    case_id: str
    flair: np.ndarray
    lesions: np.ndarray
    geometry: Geometry


def is_msseg2_case(case_dir: Path) -> bool:
    return (case_dir / MSSEG2_PRIOR).is_file() and (case_dir / MSSEG2_CURRENT).is_file()


def list_msseg2_cases(root: Path) -> list[Path]:
    """Case folders under `root` in the MSSEG-2 layout, sorted by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and is_msseg2_case(p))


def read_msseg2_case(case_dir: Path) -> LongitudinalCase:
    """One MSSEG-2 case folder; the label is the consensus `ground_truth.nii.gz` when present."""
    prior, geometry = read_volume(case_dir / MSSEG2_PRIOR)
    current, current_geometry = read_volume(case_dir / MSSEG2_CURRENT)
    if current.shape != prior.shape:
        raise ValueError(f"{case_dir}: visits have different grids {prior.shape} vs {current.shape}")
    label = None
    if (case_dir / MSSEG2_TRUTH).is_file():
        truth, _ = read_volume(case_dir / MSSEG2_TRUTH, np.uint8)
        label = (truth > 0).astype(np.uint8)
    return LongitudinalCase(case_dir.name, prior, current, label, geometry)


def write_msseg2_case(case: LongitudinalCase, case_dir: Path) -> None:
    """Write a case in the MSSEG-2 layout (used for synthetic cases, so that one reader serves both)."""
    from msnode_training.volumes import write_volume

    write_volume(case_dir / MSSEG2_PRIOR, case.prior.astype(np.float32), case.geometry)
    write_volume(case_dir / MSSEG2_CURRENT, case.current.astype(np.float32), case.geometry)
    if case.label is not None:
        write_volume(case_dir / MSSEG2_TRUTH, case.label.astype(np.uint8), case.geometry)


def read_itk_affine(path: Path) -> sitk.AffineTransform:
    """An ITK text transform file holding one MatrixOffsetTransformBase / AffineTransform (3D)."""
    fields: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Parameters", "FixedParameters"):
            fields[key.strip()] = [float(v) for v in value.split()]
    parameters, center = fields["Parameters"], fields["FixedParameters"]
    if len(parameters) != 12 or len(center) != 3:
        raise ValueError(f"{path}: expected a 3D affine transform")
    transform = sitk.AffineTransform(3)
    transform.SetCenter(center)
    transform.SetMatrix(parameters[:9])
    transform.SetTranslation(parameters[9:])
    return transform


def median_normalised(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """FLAIR divided by its median inside the brain, so that two visits compare on one scale."""
    return (image / max(float(np.median(image[mask > 0])), 1e-8)).astype(np.float32)


def brighter_components(change_mask: np.ndarray, prior_norm: np.ndarray, current_norm: np.ndarray) -> np.ndarray:
    """Components of a two-way change mask whose mean normalised FLAIR rises from prior to current."""
    # Full (26-neighbour) connectivity: the data README counts change components this way (13 and 46).
    labels, count = ndimage.label(change_mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros(change_mask.shape, dtype=np.uint8)
    index = np.arange(1, count + 1)
    rise = np.asarray(ndimage.mean(current_norm - prior_norm, labels, index))
    brighter = np.concatenate([[False], rise > 0])
    return brighter[labels].astype(np.uint8)


def read_lesjak_longitudinal_case(patient_dir: Path, skull_strip: bool = True) -> LongitudinalCase:
    """A Lesjak longitudinal patient on its common grid: both raw studies resampled with their ITK transforms
    (which map common-space points to study points), new-or-enlarging truth = brighter change components."""
    change_mask, geometry = read_volume(patient_dir / "change_mask_common.nii.gz", np.uint8)
    brain_mask, _ = read_volume(patient_dir / "brainmask_common.nii.gz", np.uint8)
    visits = []
    for study in ("study1", "study2"):
        raw = sitk.ReadImage(str(patient_dir / f"{study}_FLAIR.nii.gz"), sitk.sitkFloat32)
        transform = read_itk_affine(patient_dir / f"{study}_FLAIR_to_common_space.txt")
        visits.append(resample_to(raw, geometry, sitk.sitkLinear, transform).astype(np.float32))
    prior, current = visits
    brain = (brain_mask > 0).astype(np.uint8)
    # Linear resampling and brain-median normalisation reproduce the README's counts (8 of 13, 31 of 46).
    label = brighter_components(change_mask, median_normalised(prior, brain), median_normalised(current, brain))
    if skull_strip:
        prior, current = prior * brain, current * brain
    return LongitudinalCase(patient_dir.name, prior, current, label, geometry, brain)


def list_lesjak_longitudinal(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("patient*") if (p / "change_mask_common.nii.gz").is_file())


def read_lesjak_cross_sectional_case(patient_dir: Path) -> SingleVisitCase:
    """A Lesjak cross-sectional patient in MNI space (1 mm, skull-stripped) with its consensus lesion mask."""
    flair, geometry = read_volume(patient_dir / "FLAIR_mni.nii.gz")
    lesions, _ = read_volume(patient_dir / "lesions_mni.nii.gz", np.uint8)
    return SingleVisitCase(patient_dir.name, np.clip(flair, 0, None), (lesions > 0).astype(np.uint8), geometry)


def list_lesjak_cross_sectional(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("patient*") if (p / "FLAIR_mni.nii.gz").is_file())
