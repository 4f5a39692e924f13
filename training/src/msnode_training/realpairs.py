"""Real-background two-visit training pairs: real clinical FLAIRs with real lesion shapes inserted (CarveMix-style).

Backgrounds (never `lesjak-longitudinal/patient03`, which is kept for evaluation):
  * `lesjak-longitudinal/patient01/pair`: the real two-visit pair (study1 = prior, study2 = current, both on the
    dataset's common grid through its own affine transforms); its real new-or-enlarging components stay in the truth.
  * `lesjak-longitudinal/patient01/study1`, `.../study2`: one real visit used for both sides of a pair.
  * `lesjak-cross-sectional/patient07`, `patient26`: MNI-space FLAIRs with consensus lesion masks, taken through a
    thick-slice profile onto the pair grid so that they look like a 2D acquisition.
Every background is resampled to the pair grid (`spacing_zyx`, default 3 x 1 x 1 mm, z first as nnU-Net arrays),
skull-stripped with its brain mask and cropped to the brain. Tissue classes come from the image itself (three-class
k-means inside the brain: CSF < white matter < grey matter on FLAIR; ventricles = deep CSF); they place lesions in
periventricular, juxtacortical and deep white matter.

Lesion shapes: the connected components of `lesion-masks/longitudinal-change/*` (real change components, used for
new lesions) and `lesion-masks/cross-sectional-mni/*` (real lesions, used for unchanged lesions), turned into
0.5 mm isotropic shapes through their signed distance. Intensities: each background's real lesions (consensus masks,
or patient01's expert change components) give a contrast to the local normal-appearing white matter and an in-plane
boundary blur (`measure_lesion_profiles`); an inserted lesion is rendered on a fine grid (`fine_factor_zyx` finer than
the pair grid), blurred in-plane, then averaged through a slice profile of 3-4 mm thickness at the visit's slice
positions (`render_occupancy`): small lesions lose contrast as in a real 2D acquisition.

A pair: new lesions (label 1), enlarging lesions (a real lesion grown, or an inserted lesion that grows; the grown
part is label 1), unchanged lesions in both visits (label 0, rendered at each visit's own slice positions), real
lesions removed from the prior (they become new, label 1) or from the current (resolving, label 0); some pairs have no
new lesion. Visit differences: the prior lives on slices shifted by up to half a slice (its lesions rendered at those
positions) and is resampled onto the current's grid through a residual rigid misalignment of at most
`max_misalignment_mm` anywhere in the brain (through-plane included); bias field, gamma, Rician noise and intensity
scale per visit. The truth is the new-or-enlarging mask: rendered occupancy >= 0.5 on the current.

Deterministic from (seed, index, config); `generate_pairs` writes them in the MSSEG-2 layout under a folder named by a
key of the parameters and reuses what is already there (a cache), with optional parallel workers.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.special import erf

from msnode_training.paths import WorkerPool, lesjak_cross_sectional_dir, lesjak_longitudinal_dir, shared_data_dir
from msnode_training.readers import (
    LongitudinalCase,
    SingleVisitCase,
    read_lesjak_cross_sectional_case,
    read_lesjak_longitudinal_case,
    read_msseg2_case,
    write_msseg2_case,
)
from msnode_training.synth import case_rng, paint_mass, paint_wedge, pick_centre, smooth_noise
from msnode_training.volumes import Geometry, read_volume, resample_to, write_volume

FORMAT_VERSION = 2  # of the pairs; bump when the generator changes what it makes
SHAPES_VERSION = 3  # of the shape library cache
EVALUATION_ONLY_PATIENTS = ("patient03",)
DEFAULT_BACKGROUNDS = (
    "lesjak-longitudinal/patient01/pair",
    "lesjak-longitudinal/patient01/study1",
    "lesjak-longitudinal/patient01/study2",
    "lesjak-cross-sectional/patient07",
    "lesjak-cross-sectional/patient26",
)
ZONES = ("periventricular", "juxtacortical", "deep")
SHAPE_SPACING_MM = 0.5
BRAIN_MASK_FILE = "brain_mask.nii.gz"
PAIR_META_FILE = "pair.json"


# Fields added after FORMAT_VERSION 2, with the values that reproduce format-2 pairs (left out of the key there).
LATER_FIELD_DEFAULTS: dict[str, Any] = {"max_affine_fraction": 0.0, "faint_lesion_share": 0.0,
                                        "faint_contrast": (1.15, 1.3)}


@dataclass(frozen=True)
class RealPairConfig:
    spacing_zyx: tuple[float, float, float] = (3.0, 1.0, 1.0)
    backgrounds: tuple[str, ...] = DEFAULT_BACKGROUNDS
    new_lesions: tuple[int, int] = (1, 6)
    enlarging_lesions: tuple[int, int] = (0, 2)
    unchanged_lesions: tuple[int, int] = (0, 4)
    no_new_lesion_probability: float = 0.15
    remove_real_lesions_probability: float = 0.3  # prior = the scan with some real lesions removed: they are new
    resolve_real_lesion_probability: float = 0.2  # a real lesion removed from the current: darker change, label 0
    zone_weights: tuple[float, float, float] = (0.45, 0.2, 0.35)  # periventricular, juxtacortical, deep
    max_shape_volume_mm3: float = 2000.0
    max_shape_files: int = 0  # 0: every lesion-mask file; n: the first n of each kind (small tests)
    min_growth_mm3: float = 8.0
    growth_mm: tuple[float, float] = (1.0, 3.0)
    fine_factor_zyx: tuple[int, int, int] = (6, 2, 2)
    slice_thickness_mm: tuple[float, float] = (3.0, 4.0)
    background_slice_thickness_mm: float = 3.0  # profile that turns the 1 mm MNI FLAIRs into 2D-like slices
    max_misalignment_mm: float = 1.0
    bias_strength: float = 0.12
    gamma_range: tuple[float, float] = (0.85, 1.15)
    noise_fraction: tuple[float, float] = (0.0, 0.03)
    intensity_scale: tuple[float, float] = (0.8, 1.25)
    contrast_jitter: float = 0.08
    # Added after format 2 (0.3.0 training levers). At their defaults they draw no random numbers and are left out
    # of the cache key, so default pairs (the validation and test streams) are the same arrays under the same key.
    # max_affine_fraction: on top of the rigid residual, a linear part I + E with |E_ij| <= this (scaling and shear,
    # what an affine registration leaves or a rigid one cannot remove); 0.01 = 1 %.
    max_affine_fraction: float = 0.0
    # Share of inserted new lesions drawn with a faint contrast from `faint_contrast` (new lesions are often fainter
    # than the chronic lesions whose profiles are measured; patient01's own change components include such ones).
    faint_lesion_share: float = 0.0
    faint_contrast: tuple[float, float] = (1.15, 1.3)

    def __post_init__(self) -> None:
        for source in self.backgrounds:
            if any(p in source for p in EVALUATION_ONLY_PATIENTS) and source.startswith("lesjak-longitudinal"):
                raise ValueError(f"{source} is kept for evaluation and may not be a training background")
            if source not in DEFAULT_BACKGROUNDS:
                raise ValueError(f"unknown background {source!r}; expected one of {DEFAULT_BACKGROUNDS}")

    def key(self) -> str:
        """Cache key: a hash of every parameter and the generator's format version."""
        values = asdict(self)
        for name, default in LATER_FIELD_DEFAULTS.items():
            if values[name] == default:
                del values[name]
        text = json.dumps({"format": FORMAT_VERSION, **values}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# Backgrounds on the pair grid


@dataclass
class Background:
    """One real scan (or real pair) on the pair grid with its tissue classes and lesion statistics."""

    name: str
    geometry: Geometry
    prior: np.ndarray
    current: np.ndarray
    brain: np.ndarray
    white_matter: np.ndarray
    grey_matter: np.ndarray
    ventricles: np.ndarray
    nawm_level: np.ndarray  # local normal-appearing white-matter intensity of the current (bias field included)
    lesions: np.ndarray  # real lesions present on the current (labelled components, 0 = none)
    real_new: np.ndarray  # real new-or-enlarging truth (pair background only)
    avoid: np.ndarray  # where nothing may be inserted (real lesions and changes, dilated)
    removable: bool  # lesions come from a consensus mask, so they can be removed cleanly
    zones: dict[str, np.ndarray] = field(default_factory=dict)
    is_pair: bool = False


def _mm_sigma(sigma_mm: Sequence[float], spacing: Sequence[float]) -> list[float]:
    return [s / d for s, d in zip(sigma_mm, spacing)]


def thick_slice_resample(image: sitk.Image, target: Geometry, thickness_mm: float) -> np.ndarray:
    """Average `image` through a slice profile (a rectangle of `thickness_mm` along the target's z) onto `target`."""
    source_spacing = image.GetSpacing()
    if abs(source_spacing[2] - source_spacing[0]) > 1e-3:
        raise ValueError("thick_slice_resample expects an isotropic source")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    width = thickness_mm / source_spacing[2]
    taps = np.arange(-int(np.ceil(width / 2)), int(np.ceil(width / 2)) + 1, dtype=np.float64)
    weights = np.clip(width / 2 + 0.5 - np.abs(taps), 0, 1)
    profiled = ndimage.convolve1d(array, (weights / weights.sum()).astype(np.float32), axis=0, mode="constant")
    smoothed = sitk.GetImageFromArray(profiled)
    smoothed.CopyInformation(image)
    return resample_to(smoothed, target, sitk.sitkLinear)


@lru_cache(maxsize=4)
def cross_sectional_source(patient: str) -> SingleVisitCase:
    """A Lesjak cross-sectional patient at its own 1 mm MNI resolution (cached per process)."""
    return read_lesjak_cross_sectional_case(lesjak_cross_sectional_dir() / patient)


def image_brain_mask(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped scan: above 5 % of its 99th percentile, opened in-plane, holes filled, the
    large components."""
    brain = image > 0.05 * np.percentile(image[image > 0], 99)
    brain = ndimage.binary_fill_holes(ndimage.binary_opening(brain, structure=np.ones((1, 3, 3), bool)))
    return _largest_components(brain, int(brain.sum() * 0.5))


def thick_slice_scan(scan: SingleVisitCase, grid: Geometry,
                     thickness_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1 mm scan as a 2D acquisition of `thickness_mm` slices on `grid`: (image, lesion occupancy 0..1 through
    the same slice profile, brain mask)."""
    image = thick_slice_resample(scan.geometry.to_image(scan.flair), grid, thickness_mm)
    occupancy = thick_slice_resample(scan.geometry.to_image(scan.lesions.astype(np.float32)), grid, thickness_mm)
    return image, occupancy, image_brain_mask(image)


def _crop_to_brain(geometry: Geometry, arrays: dict[str, np.ndarray], brain: np.ndarray,
                   margin: int = 3) -> tuple[Geometry, dict[str, np.ndarray]]:
    nz = np.argwhere(brain)
    lo = np.maximum(nz.min(axis=0) - margin, 0)
    hi = np.minimum(nz.max(axis=0) + margin + 1, np.array(brain.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return geometry.cropped(box), {k: v[box] for k, v in arrays.items()}  # type: ignore[arg-type]


def kmeans_levels(values: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Three intensity centres (CSF, white matter, grey matter on FLAIR), deterministic start at percentiles."""
    centres = np.percentile(values, [10, 50, 85]).astype(np.float64)
    for _ in range(iterations):
        assignment = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        updated = np.array([values[assignment == k].mean() if np.any(assignment == k) else centres[k]
                            for k in range(3)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return np.sort(centres)


def _largest_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], sizes >= min_voxels])
    return keep[labels]


def local_level(image: np.ndarray, weight: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Normalised convolution: the local mean of `image` over `weight` (e.g. white matter), everywhere."""
    w = weight.astype(np.float32)
    numerator = ndimage.gaussian_filter(image * w, sigma_vox)
    denominator = ndimage.gaussian_filter(w, sigma_vox)
    fallback = float(np.median(image[weight > 0])) if np.any(weight > 0) else 1.0
    return np.where(denominator > 1e-3, numerator / np.maximum(denominator, 1e-3), fallback).astype(np.float32)


def tissue_classes(image: np.ndarray, brain: np.ndarray, known_lesions: np.ndarray,
                   spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """White matter, grey matter, ventricles, normal-appearing white-matter level and candidate zones."""
    voxel = float(np.prod(spacing))
    distance_to_outside = ndimage.distance_transform_edt(brain, sampling=spacing)
    inner = distance_to_outside > 2.0
    smooth = ndimage.gaussian_filter(image, _mm_sigma((0.0, 0.7, 0.7), spacing))
    values = smooth[inner & ~known_lesions].astype(np.float64)
    csf_level, wm_level, gm_level = kmeans_levels(values[:: max(1, len(values) // 200000)])
    low, high = (csf_level + wm_level) / 2, (wm_level + gm_level) / 2
    white = (smooth > low) & (smooth < high) & inner
    white = ndimage.binary_opening(white, structure=np.ones((1, 3, 3), bool))
    white = _largest_components(white, int(500 / voxel)) & ~known_lesions
    grey = (smooth >= high) & brain & ~known_lesions & (smooth < wm_level + 2.5 * (high - wm_level))
    csf = (smooth <= low) & brain
    ventricles = _largest_components(csf & (distance_to_outside > 15.0), int(300 / voxel))
    nawm = white & ~ndimage.binary_dilation(known_lesions, iterations=2)
    level = local_level(image, nawm, _mm_sigma((8.0, 12.0, 12.0), spacing))
    to_ventricle = ndimage.distance_transform_edt(~ventricles, sampling=spacing) if ventricles.any() \
        else np.full(image.shape, 1e3)
    to_grey = ndimage.distance_transform_edt(~grey, sampling=spacing) if grey.any() else np.full(image.shape, 1e3)
    zones = {
        "periventricular": white & (to_ventricle <= 5.0),
        "juxtacortical": white & (to_grey <= 2.5) & (to_ventricle > 10.0) & (distance_to_outside > 3.0),
        "deep": white & (to_ventricle > 5.0) & (to_grey > 2.5),
    }
    return {"white_matter": white, "grey_matter": grey, "ventricles": ventricles, "nawm_level": level,
            "nawm": nawm, **zones}


def _pair_grid(source: Geometry, spacing_zyx: tuple[float, float, float]) -> Geometry:
    return source.with_spacing(spacing_zyx)


@lru_cache(maxsize=8)
def load_background(name: str, spacing_zyx: tuple[float, float, float],
                    background_slice_thickness_mm: float = 3.0) -> Background:
    """A background on the pair grid (cached per process)."""
    if name.startswith("lesjak-longitudinal/"):
        patient, mode = name.split("/")[1:]
        if patient in EVALUATION_ONLY_PATIENTS:
            raise ValueError(f"{patient} is kept for evaluation")
        case = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / patient, skull_strip=False)
        grid = _pair_grid(case.geometry, spacing_zyx)

        def to_grid(array: np.ndarray, interpolator: int = sitk.sitkLinear) -> np.ndarray:
            return resample_to(case.geometry.to_image(array.astype(np.float32)), grid, interpolator)

        brain = to_grid(case.brain_mask) > 0.5
        prior, current = to_grid(case.prior), to_grid(case.current)
        new = to_grid(case.label) > 0.5
        change_common, _ = read_volume(lesjak_longitudinal_dir() / patient / "change_mask_common.nii.gz", np.uint8)
        change = to_grid(change_common) > 0.3
        if mode == "study1":
            current = prior
        elif mode == "study2":
            prior = current
        elif mode != "pair":
            raise ValueError(f"unknown mode {mode!r} in {name}")
        # Real lesions of the current: the expert change components visible on it (brighter ones on study2,
        # darker ones on study1); the pair keeps the real new ones as truth.
        darker = to_grid((case.label == 0) & (change_common > 0)) > 0.5  # components that fade by visit 2
        lesions_on_current = darker if mode == "study1" else new
        removable = False
        real_new = new if mode == "pair" else np.zeros_like(new)
    elif name.startswith("lesjak-cross-sectional/"):
        patient = name.split("/")[1]
        cs = cross_sectional_source(patient)
        grid = _pair_grid(cs.geometry, spacing_zyx)
        image, occupancy, brain = thick_slice_scan(cs, grid, background_slice_thickness_mm)
        lesions_on_current = occupancy > 0.5
        prior = current = image
        change = lesions_on_current
        real_new = np.zeros_like(lesions_on_current)
        removable = True
    else:
        raise ValueError(f"unknown background {name!r}")
    arrays = {"prior": prior * brain, "current": current * brain, "brain": brain, "lesions": lesions_on_current,
              "real_new": real_new, "change": change}
    geometry, arrays = _crop_to_brain(grid, arrays, brain)
    brain = arrays["brain"].astype(bool)
    lesions = arrays["lesions"].astype(bool) & brain
    classes = tissue_classes(arrays["current"], brain, lesions | arrays["change"].astype(bool),
                             geometry.spacing_zyx)
    lesions = _largest_components(lesions, 3)
    labels, _ = ndimage.label(lesions, structure=np.ones((3, 3, 3), bool))
    avoid = ndimage.binary_dilation(lesions | arrays["change"].astype(bool) | arrays["real_new"].astype(bool),
                                    structure=np.ones((3, 3, 3), bool), iterations=1)
    return Background(name, geometry, arrays["prior"].astype(np.float32), arrays["current"].astype(np.float32),
                      brain, classes["white_matter"], classes["grey_matter"], classes["ventricles"],
                      classes["nawm_level"], labels.astype(np.int32), arrays["real_new"].astype(bool), avoid,
                      removable, {z: classes[z] & ~avoid for z in ZONES}, is_pair=name.endswith("/pair"))


# ---------------------------------------------------------------------------------------------------------------
# Lesion intensity profiles measured on the real lesions


def _erf_step(distance: np.ndarray, offset: float, sigma: float) -> np.ndarray:
    """1 inside, 0 outside, a Gaussian-blurred edge at `offset` mm (distance > 0 outside the lesion)."""
    return 0.5 * (1 - erf((distance - offset) / (np.sqrt(2) * sigma)))


def measure_lesion_profiles(background: Background) -> dict[str, Any]:
    """Per real lesion of the background's current (>= 10 mm3): contrast = 75th-percentile lesion intensity over
    the local normal-appearing white-matter level; in-plane boundary blur = sigma of an erf edge fitted to the
    normalised intensity against the in-plane signed distance to the lesion border (lesions >= 30 mm3)."""
    spacing = background.geometry.spacing_zyx
    voxel = float(np.prod(spacing))
    image, level = background.current, background.nawm_level
    contrasts, blurs = [], []
    for index, box in enumerate(ndimage.find_objects(background.lesions), start=1):
        if box is None:
            continue
        lesion = background.lesions == index
        volume = float(lesion.sum()) * voxel
        if volume < 10.0:
            continue
        ratio = image[lesion] / np.maximum(level[lesion], 1e-6)
        contrast = float(np.percentile(ratio, 75))
        contrasts.append(contrast)
        if volume < 30.0:
            continue
        grown = tuple(slice(max(b.start - (0 if i == 0 else 6), 0), b.stop + (0 if i == 0 else 6))
                      for i, b in enumerate(box))
        local, local_ratio = lesion[grown], (image / np.maximum(level, 1e-6))[grown]
        local_brain = background.brain[grown] & ~background.ventricles[grown]
        signed = np.zeros(local.shape, np.float32)
        for z in range(local.shape[0]):
            if local[z].any():
                outside = ndimage.distance_transform_edt(~local[z], sampling=spacing[1:])
                inside = ndimage.distance_transform_edt(local[z], sampling=spacing[1:])
                signed[z] = outside - inside
        tissue = (background.white_matter[grown] | local) & local_brain
        use = tissue & np.any(local, axis=(1, 2))[:, None, None] & (signed > -4) & (signed < 5)
        if use.sum() < 20 or contrast <= 1.05:
            continue
        values, d = local_ratio[use].astype(np.float64), signed[use].astype(np.float64)
        best = (np.inf, 1.0)
        for sigma in np.arange(0.2, 3.01, 0.1):
            for offset in np.arange(-1.5, 1.51, 0.25):
                step = _erf_step(d, offset, sigma)
                design = np.stack([step, np.ones_like(step)], axis=1)  # free lesion and surround levels
                coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
                error = float(np.mean((design @ coefficients - values) ** 2))
                if error < best[0] and coefficients[0] > 0:
                    best = (error, float(sigma))
        blurs.append(best[1])
    return {"contrast": contrasts, "blur_sigma_mm": blurs}


@lru_cache(maxsize=16)
def lesion_profiles(name: str, spacing_zyx: tuple[float, float, float],
                    background_slice_thickness_mm: float = 3.0) -> dict[str, Any]:
    """Profiles of a background; patient01's three backgrounds share the expert change components of both visits
    (the brighter ones on study2, the fading ones on study1)."""
    if name.startswith("lesjak-longitudinal/patient01"):
        sources = ["lesjak-longitudinal/patient01/study1", "lesjak-longitudinal/patient01/study2"]
    else:
        sources = [name]
    merged: dict[str, Any] = {"contrast": [], "blur_sigma_mm": []}
    for source in sources:
        measured = measure_lesion_profiles(load_background(source, spacing_zyx, background_slice_thickness_mm))
        for key in merged:
            merged[key].extend(measured[key])
    return merged


# Change components that are only a faint intensity change (75th-percentile ratio to the local white matter below
# this) are measured but not used as insertion contrasts: an inserted lesion must be a visible hyperintensity.
MIN_VISIBLE_CONTRAST = 1.15


# ---------------------------------------------------------------------------------------------------------------
# Real lesion shapes


@dataclass
class Shape:
    mask: np.ndarray  # bool, 0.5 mm isotropic, (z, y, x)
    volume_mm3: float
    source: str


def slice_signed_distance(mask: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Shape-based interpolation input: the in-plane signed distance (mm, > 0 outside) of each slice of `mask`,
    with one slice added at both ends holding |d| of its neighbour, so that the end slices reach out by half a
    slice (thick-slice masks keep their volume; between slices the outline is interpolated)."""
    in_plane = spacing_zyx[1:]
    distances = []
    for z in range(mask.shape[0]):
        if mask[z].any():
            distances.append(ndimage.distance_transform_edt(~mask[z], sampling=in_plane)
                             - ndimage.distance_transform_edt(mask[z], sampling=in_plane))
        else:
            distances.append(np.full(mask.shape[1:], 1e3))

    def cap(neighbour: np.ndarray) -> np.ndarray:
        return np.abs(neighbour)

    return np.stack([cap(distances[0]), *distances, cap(distances[-1])]).astype(np.float32)


def _component_shapes(mask: np.ndarray, geometry: Geometry, source: str,
                      max_volume_mm3: float) -> list[Shape]:
    """Components (26-connected) of a lesion mask as 0.5 mm isotropic shapes, interpolated between slices through
    their in-plane signed distance (so that thick-slice masks become smooth in z and keep their volume)."""
    spacing = np.array(geometry.spacing_zyx)
    labels, _ = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    shapes = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pad = np.array([0, 3, 3])
        grown = tuple(slice(max(b.start - p, 0), b.stop + p) for b, p in zip(box, pad))
        local = labels[grown] == index
        volume = float(local.sum() * np.prod(spacing))
        if volume <= 3.0 or volume > max_volume_mm3:
            continue
        signed = slice_signed_distance(local, spacing)  # z index 0 is the cap below the first slice
        extent = (np.array(signed.shape) - np.array([0, 0, 0])) * spacing
        fine_shape = np.maximum(np.round(extent / SHAPE_SPACING_MM).astype(int), 1)
        coords = [(np.arange(n) + 0.5) * SHAPE_SPACING_MM / s - 0.5 for n, s in zip(fine_shape, spacing)]
        grid = np.meshgrid(*coords, indexing="ij")
        fine = ndimage.map_coordinates(signed, grid, order=1, mode="nearest") <= 0
        if not fine.any():
            continue
        nz = np.argwhere(fine)
        fine = fine[tuple(slice(a, b + 1) for a, b in zip(nz.min(0), nz.max(0)))]
        shapes.append(Shape(np.pad(fine, 2), float(fine.sum()) * SHAPE_SPACING_MM ** 3, source))
    return shapes


def lesion_mask_files(max_files: int = 0, exclude_cross_sectional: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """The lesion-mask files shapes come from; never patient03's change mask (kept for evaluation), nor the
    cross-sectional patients in `exclude_cross_sectional` (a model's held-out test patients)."""
    root = shared_data_dir() / "lesion-masks"
    change = [p / "change_mask_common.nii.gz" for p in sorted((root / "longitudinal-change").glob("patient*"))
              if p.name not in EVALUATION_ONLY_PATIENTS]
    cross = [p for p in sorted((root / "cross-sectional-mni").glob("patient*_lesions_mni.nii.gz"))
             if p.name.split("_")[0] not in exclude_cross_sectional]
    files = {"change": [p for p in change if p.is_file()], "cross_sectional": cross}
    return {k: v[:max_files] if max_files else v for k, v in files.items()}


@lru_cache(maxsize=4)
def shape_library(max_volume_mm3: float, cache_dir: Path | None = None, max_files: int = 0,
                  exclude_cross_sectional: tuple[str, ...] = ()) -> dict[str, list[Shape]]:
    """Real lesion shapes: `change` (longitudinal change components, every patient but patient03) and
    `cross_sectional` (MNI consensus lesions, without `exclude_cross_sectional`); cached as one npz under
    `cache_dir` when given (the file list is part of its name)."""
    files = lesion_mask_files(max_files, exclude_cross_sectional)
    stamp = hashlib.sha256(json.dumps({k: [str(p) for p in v] for k, v in files.items()}).encode()
                           + f"{max_volume_mm3}/{SHAPES_VERSION}".encode()).hexdigest()[:12]
    cache = cache_dir / f"shapes_{stamp}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        return _read_shapes(cache)
    library: dict[str, list[Shape]] = {}
    for kind, paths in files.items():
        library[kind] = []
        for path in paths:
            mask, geometry = read_volume(path, np.uint8)
            source = path.parent.name if kind == "change" else path.name.split("_")[0]
            library[kind].extend(_component_shapes(mask, geometry, f"{kind}/{source}", max_volume_mm3))
    if cache is not None:
        _write_shapes(cache, library)
    return library


def _write_shapes(path: Path, library: dict[str, list[Shape]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, np.ndarray] = {}
    meta = {}
    for kind, shapes in library.items():
        payload[f"{kind}_bits"] = np.concatenate([s.mask.ravel() for s in shapes]) if shapes else np.zeros(0, bool)
        meta[kind] = [(list(s.mask.shape), s.volume_mm3, s.source) for s in shapes]
    payload["meta"] = np.array(json.dumps(meta))
    temporary = path.with_suffix(".tmp.npz")
    np.savez_compressed(temporary, **payload)
    temporary.replace(path)


def _read_shapes(path: Path) -> dict[str, list[Shape]]:
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    library = {}
    for kind, entries in meta.items():
        bits, offset, shapes = data[f"{kind}_bits"], 0, []
        for shape, volume, source in entries:
            size = int(np.prod(shape))
            shapes.append(Shape(bits[offset:offset + size].reshape(shape).astype(bool), volume, source))
            offset += size
        library[kind] = shapes
    return library


# ---------------------------------------------------------------------------------------------------------------
# Rendering through a thick-slice profile


def slice_weights(fine_z_mm: np.ndarray, slice_centres_mm: np.ndarray, thickness_mm: float,
                  edge_mm: float = 0.3) -> np.ndarray:
    """(slices, fine samples) weights of a 2D slice profile: a rectangle of `thickness_mm` with soft edges."""
    d = fine_z_mm[None, :] - slice_centres_mm[:, None]
    half = thickness_mm / 2
    w = 0.5 * (erf((half - d) / (np.sqrt(2) * edge_mm)) + erf((half + d) / (np.sqrt(2) * edge_mm)))
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)


def render_occupancy(fine: np.ndarray, fine_factor_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
                     thickness_mm: float, slice_offset_mm: float, blur_sigma_mm: float) -> np.ndarray:
    """A lesion's fine occupancy (0..1 on a grid `fine_factor_zyx` finer than the pair grid; the box starts at a
    pair-voxel corner and spans whole pair voxels) as the pair grid sees it: in-plane Gaussian blur of the lesion
    border, in-plane box average over each pair voxel, then a slice profile of `thickness_mm` centred at each pair
    slice centre + `slice_offset_mm` (different slice positions per visit)."""
    fz, fy, fx = fine_factor_zyx
    sz, sy, sx = spacing_zyx
    blurred = ndimage.gaussian_filter(fine.astype(np.float32), (0, blur_sigma_mm * fy / sy, blur_sigma_mm * fx / sx))
    nz, ny, nx = fine.shape[0] // fz, fine.shape[1] // fy, fine.shape[2] // fx
    inplane = blurred[:, :ny * fy, :nx * fx].reshape(fine.shape[0], ny, fy, nx, fx).mean(axis=(2, 4))
    fine_z = (np.arange(fine.shape[0]) + 0.5) * sz / fz
    centres = (np.arange(nz) + 0.5) * sz + slice_offset_mm
    weights = slice_weights(fine_z, centres, thickness_mm)
    return np.clip(np.tensordot(weights, inplane, axes=(1, 0)), 0, 1).astype(np.float32)


def _rotation_matrix(rng: np.random.Generator) -> np.ndarray:
    """Random in-plane rotation, random flips, a small tilt: lesions keep their real through-plane extent."""
    theta = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(-15, 15, 2))
    rz = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    ry = np.array([[np.cos(tilt[0]), -np.sin(tilt[0]), 0], [np.sin(tilt[0]), np.cos(tilt[0]), 0], [0, 0, 1]])
    rx = np.array([[np.cos(tilt[1]), 0, -np.sin(tilt[1])], [0, 1, 0], [np.sin(tilt[1]), 0, np.cos(tilt[1])]])
    flips = np.diag(np.where(rng.uniform(size=3) < 0.5, -1.0, 1.0))
    return rz @ ry @ rx @ flips


@dataclass
class Placement:
    """A lesion's fine occupancy in a box of the pair grid."""

    box: tuple[slice, slice, slice]  # pair-grid box (whole voxels)
    fine: np.ndarray  # occupancy on the fine grid of that box


def place_shape(shape: Shape, centre_vox: np.ndarray, grid_shape: tuple[int, int, int],
                spacing_zyx: tuple[float, float, float], fine_factor_zyx: tuple[int, int, int],
                rotation: np.ndarray, scale: float = 1.0) -> Placement | None:
    """The shape's occupancy on the fine grid around `centre_vox` (pair-grid voxel coordinates)."""
    spacing = np.array(spacing_zyx)
    mask = shape.mask.astype(np.float32)
    shape_centre = (np.array(ndimage.center_of_mass(mask)) + 0.5) * SHAPE_SPACING_MM
    reach_mm = np.linalg.norm(np.array(mask.shape) * SHAPE_SPACING_MM) / 2 * scale + 1.0
    reach = np.ceil(reach_mm / spacing).astype(int) + 1
    lo = np.floor(centre_vox).astype(int) - reach
    hi = np.floor(centre_vox).astype(int) + reach + 1
    if np.any(lo < 0) or np.any(hi > np.array(grid_shape)):
        return None
    factor = np.array(fine_factor_zyx)
    axes = [(lo[a] - 0.5 + (np.arange((hi[a] - lo[a]) * factor[a]) + 0.5) / factor[a]) for a in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # pair voxel coordinates
    offset_mm = (points - centre_vox) * spacing
    source_mm = offset_mm @ rotation / scale + shape_centre  # rotation is orthonormal: inverse = transpose
    index = source_mm / SHAPE_SPACING_MM - 0.5
    fine = ndimage.map_coordinates(mask, np.moveaxis(index, -1, 0), order=1, mode="constant", cval=0.0)
    if fine.max() < 0.5:
        return None
    return Placement(tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), fine.astype(np.float32))


def grow_placement(lesion: np.ndarray, box: tuple[slice, slice, slice], spacing_zyx: tuple[float, float, float],
                   fine_factor_zyx: tuple[int, int, int], growth_mm: float,
                   rng: np.random.Generator) -> tuple[Placement, Placement]:
    """An existing lesion (pair-grid mask) on the fine grid and its grown version: the border moves out by up to
    `growth_mm`, unevenly (a random direction grows most). Returns (original, grown) placements on `box`."""
    local = lesion[box].astype(np.float32)
    factor = np.array(fine_factor_zyx)
    axes = [(np.arange(n * f) + 0.5) / f - 0.5 for n, f in zip(local.shape, factor)]
    points = np.meshgrid(*axes, indexing="ij")
    original = ndimage.map_coordinates(local, points, order=1, mode="nearest") >= 0.5
    fine_spacing = np.array(spacing_zyx) / factor
    distance = ndimage.distance_transform_edt(~original, sampling=fine_spacing)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    centre = np.array(ndimage.center_of_mass(original))
    rel = (np.stack(np.meshgrid(*[np.arange(n) for n in original.shape], indexing="ij"), -1) - centre) * fine_spacing
    cosine = (rel @ direction) / np.maximum(np.linalg.norm(rel, axis=-1), 1e-6)
    reach = growth_mm * np.clip(cosine, 0, 1) * (1 + 0.3 * smooth_noise(original.shape, rng, 4))
    grown = original | (distance <= reach)
    return Placement(box, original.astype(np.float32)), Placement(box, grown.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Visit differences


def rigid_misalignment(geometry: Geometry, brain: np.ndarray, max_mm: float,
                       rng: np.random.Generator) -> tuple[sitk.Euler3DTransform, float]:
    """A rigid transform about the brain centre whose largest displacement inside the brain is a random fraction
    of `max_mm` (through-plane rotations and shifts included). Returns it and that displacement in mm."""
    reference = geometry.reference_image()
    points = np.argwhere(brain)[:: max(1, int(brain.sum()) // 4000)]
    physical = np.array([reference.TransformContinuousIndexToPhysicalPoint([float(p[2]), float(p[1]), float(p[0])])
                         for p in points])
    centre = physical.mean(axis=0)
    angles = rng.normal(0, 1, 3)
    shift = rng.normal(0, 1, 3)
    transform = sitk.Euler3DTransform(tuple(centre), *(np.deg2rad(angles)), tuple(shift))
    moved = np.array([transform.TransformPoint(tuple(p)) for p in physical])
    largest = float(np.max(np.linalg.norm(moved - physical, axis=1)))
    target = rng.uniform(0.15, 1.0) * max_mm
    scale = target / max(largest, 1e-6)
    transform = sitk.Euler3DTransform(tuple(centre), *(np.deg2rad(angles) * scale), tuple(shift * scale))
    moved = np.array([transform.TransformPoint(tuple(p)) for p in physical])
    return transform, float(np.max(np.linalg.norm(moved - physical, axis=1)))


def with_affine_residual(rigid: sitk.Euler3DTransform, max_fraction: float,
                         rng: np.random.Generator) -> tuple[sitk.AffineTransform, list[float]]:
    """`rigid` followed by a linear residual about the same centre: matrix R (I + E), every |E_ij| <= `max_fraction`
    (E_ii scaling, E_ij shear, each uniform in +-max_fraction); the translation is kept. Returns it and E (row-major)."""
    residual = rng.uniform(-max_fraction, max_fraction, (3, 3))
    rotation = np.array(rigid.GetMatrix()).reshape(3, 3)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(tuple((rotation @ (np.eye(3) + residual)).ravel()))
    affine.SetTranslation(rigid.GetTranslation())
    return affine, [round(float(v), 5) for v in residual.ravel()]


def shifted_slices(geometry: Geometry, slice_shift_mm: float) -> Geometry:
    """The same grid with its slices moved by `slice_shift_mm` along the slice normal (another visit's slices)."""
    direction = np.array(geometry.direction).reshape(3, 3)
    origin = np.array(geometry.origin_xyz) + direction[:, 2] * slice_shift_mm
    return Geometry(geometry.spacing_zyx, tuple(float(v) for v in origin), geometry.direction, geometry.shape_zyx)


def acquire_at_shifted_slices(image: np.ndarray, geometry: Geometry, slice_shift_mm: float) -> np.ndarray:
    """The prior's own slice positions: `image` linearly resampled onto the grid shifted by `slice_shift_mm`."""
    return resample_to(geometry.to_image(image.astype(np.float32)), shifted_slices(geometry, slice_shift_mm),
                       sitk.sitkLinear)


def resample_to_current(image: np.ndarray, geometry: Geometry, slice_shift_mm: float,
                        transform: sitk.Transform) -> np.ndarray:
    """The prior as the node sees it: from its own (shifted) slices onto the current grid through the residual
    misalignment `transform` (a second linear resampling)."""
    source = shifted_slices(geometry, slice_shift_mm).to_image(image.astype(np.float32))
    return resample_to(source, geometry, sitk.sitkLinear, transform)


def visit_appearance(image: np.ndarray, brain: np.ndarray, config: RealPairConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Gamma, bias field, Rician noise and intensity scale of one visit."""
    reference = float(np.percentile(image[brain], 99)) if brain.any() else 1.0
    gamma = float(rng.uniform(*config.gamma_range))
    out = reference * (np.clip(image, 0, None) / reference) ** gamma
    out = out * np.exp(config.bias_strength * smooth_noise(image.shape, rng, control_points=4))
    level = float(np.median(out[brain])) if brain.any() else 1.0
    noise = float(rng.uniform(*config.noise_fraction))
    sigma = noise * level
    if sigma > 0:
        out = np.sqrt((out + rng.normal(0, sigma, out.shape)) ** 2 + rng.normal(0, sigma, out.shape) ** 2)
    scale = float(rng.uniform(*config.intensity_scale))
    return (out * scale * brain).astype(np.float32), {"gamma": gamma, "noise_fraction": noise, "scale": scale}


# ---------------------------------------------------------------------------------------------------------------
# One pair


@dataclass
class VisitRender:
    thickness_mm: float
    slice_offset_mm: float


def paint_lesion(image: np.ndarray, occupancy: np.ndarray, box: tuple[slice, slice, slice], level: np.ndarray,
                 contrast: float, exclude: np.ndarray) -> None:
    """In place: move the local mean towards `contrast` x the local white-matter level by the occupancy, keeping
    the background's fine texture and noise, never darkening; nothing inside `exclude` (ventricles)."""
    local = image[box]
    occupancy = occupancy * ~exclude[box]
    lowpass = ndimage.gaussian_filter(local, (0.3, 1.2, 1.2))
    target = contrast * level[box]
    image[box] = local + occupancy * np.maximum(target - lowpass, 0)


def inpaint_lesions(image: np.ndarray, remove: np.ndarray, healthy: np.ndarray,
                    spacing: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Replace `remove` (dilated in-plane by one voxel) by the local healthy-tissue mean plus matching noise."""
    region = ndimage.binary_dilation(remove, structure=np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]],
                                                                 [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                                                                 [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], bool))
    estimate = local_level(image, healthy & ~region, _mm_sigma((2.0, 2.5, 2.5), spacing))
    residual = image - ndimage.gaussian_filter(image, (0.3, 1.2, 1.2))
    texture = float(np.std(residual[healthy])) if healthy.any() else 0.0
    out = image.copy()
    out[region] = estimate[region] + rng.normal(0, texture, int(region.sum()))
    return out


def _choose_centre(zone: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    candidates = np.flatnonzero(zone)
    if len(candidates) == 0:
        return None
    index = np.unravel_index(candidates[rng.integers(len(candidates))], zone.shape)
    return np.array(index, dtype=np.float64) + rng.uniform(-0.5, 0.5, 3)


@dataclass
class LesionCandidate:
    """A lesion placed, rendered and accepted on a background (not yet painted)."""

    zone: str
    shape: Shape
    centre: np.ndarray
    placement: Placement
    blur: float
    contrast: float
    occupancy: np.ndarray  # rendered on the pair grid, in `placement.box`
    visible: np.ndarray  # occupancy >= 0.5


def insertion_masks(bg: Background) -> tuple[np.ndarray, np.ndarray]:
    """(allowed, white_near): where a lesion's visible part may lie (inside the brain by > 1 mm, off the
    ventricles) and the white matter grown in-plane by a voxel (>= 60 % of a lesion must lie there)."""
    inner = ndimage.distance_transform_edt(bg.brain, sampling=bg.geometry.spacing_zyx) > 1.0
    white_near = ndimage.binary_dilation(bg.white_matter, structure=np.ones((1, 3, 3), bool), iterations=1)
    return inner & ~bg.ventricles, white_near


def draw_lesion_candidate(rng: np.random.Generator, bg: Background, shapes: Sequence[Shape], config: RealPairConfig,
                          occupied: np.ndarray, allowed: np.ndarray, white_near: np.ndarray, blurs: np.ndarray,
                          draw_contrast: Callable[[], float],
                          render_current: Callable[[Placement, float], np.ndarray]) -> LesionCandidate | None:
    """One try at a lesion: a zone (config.zone_weights), a free centre in it, a real shape with a random
    orientation, a measured blur and a contrast, rendered through the current's slice profile; None when the try
    fails (the visible part must be > 3 mm3, inside `allowed`, clear of `occupied`, >= 60 % in `white_near`)."""
    spacing = bg.geometry.spacing_zyx
    voxel = float(np.prod(spacing))
    zone = ZONES[int(rng.choice(3, p=np.array(config.zone_weights) / sum(config.zone_weights)))]
    centre = _choose_centre(bg.zones[zone] & ~occupied, rng)
    if centre is None:
        return None
    shape = shapes[int(rng.integers(len(shapes)))]
    placement = place_shape(shape, centre, bg.geometry.shape_zyx, spacing, config.fine_factor_zyx,
                            _rotation_matrix(rng))
    if placement is None:
        return None
    blur, contrast = float(rng.choice(blurs)), draw_contrast()
    occupancy = render_current(placement, blur)
    visible = occupancy >= 0.5
    box = placement.box
    if visible.sum() * voxel <= 3.0 or not np.all(allowed[box][visible]) or np.any(occupied[box][visible]):
        return None
    if np.mean(white_near[box][visible]) < 0.6:
        return None
    return LesionCandidate(zone, shape, centre, placement, blur, contrast, occupancy, visible)


def insertion_statistics(name: str, config: RealPairConfig) -> tuple[np.ndarray, np.ndarray]:
    """(contrasts, blurs) an inserted lesion is drawn from: the background's measured real-lesion profiles
    (visible contrasts only), with fallbacks when it has too few lesions."""
    profiles = lesion_profiles(name, config.spacing_zyx, config.background_slice_thickness_mm)
    visible_contrasts = [c for c in profiles["contrast"] if c >= MIN_VISIBLE_CONTRAST]
    contrasts = np.array(visible_contrasts) if len(visible_contrasts) >= 3 else np.array([1.45])
    blurs = np.array(profiles["blur_sigma_mm"]) if len(profiles["blur_sigma_mm"]) >= 3 else np.array([0.8])
    return contrasts, blurs


def generate_pair(seed: int, index: int, config: RealPairConfig,
                  shape_cache_dir: Path | None = None) -> tuple[LongitudinalCase, dict[str, Any]]:
    """Pair `index` of the series `seed`; the same (seed, index, config) gives the same arrays."""
    rng = case_rng(seed, index)
    name = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    bg = load_background(name, config.spacing_zyx, config.background_slice_thickness_mm)
    shapes = shape_library(config.max_shape_volume_mm3, shape_cache_dir, config.max_shape_files)
    spacing = bg.geometry.spacing_zyx
    voxel = float(np.prod(spacing))
    grid_shape = bg.geometry.shape_zyx
    contrasts, blurs = insertion_statistics(name, config)

    # Slice positions: the current's slices sit at `current` offset within the lesions' frame, the prior's are
    # shifted by `slice_shift` more (its image lives on that shifted grid until it is resampled to the current's).
    current_offset = float(rng.uniform(-0.5, 0.5) * spacing[0])
    slice_shift = float(rng.uniform(-0.5, 0.5) * spacing[0])
    visits = {"prior": VisitRender(float(rng.uniform(*config.slice_thickness_mm)), current_offset + slice_shift),
              "current": VisitRender(float(rng.uniform(*config.slice_thickness_mm)), current_offset)}
    prior, current = bg.prior.copy(), bg.current.copy()
    label = bg.real_new.copy()
    occupied = bg.avoid.copy()
    lesions_meta: list[dict[str, Any]] = []
    allowed, white_near = insertion_masks(bg)

    no_new = rng.uniform() < config.no_new_lesion_probability
    n_new = 0 if no_new else int(rng.integers(config.new_lesions[0], config.new_lesions[1] + 1))
    n_enlarging = 0 if no_new else int(rng.integers(config.enlarging_lesions[0], config.enlarging_lesions[1] + 1))
    n_unchanged = int(rng.integers(config.unchanged_lesions[0], config.unchanged_lesions[1] + 1))

    def draw_contrast(kind: str = "") -> float:
        if kind == "new" and config.faint_lesion_share > 0 and rng.uniform() < config.faint_lesion_share:
            return float(rng.uniform(*config.faint_contrast))
        return float(max(1.1, rng.choice(contrasts) * (1 + config.contrast_jitter * rng.normal())))

    def render(placement: Placement, visit: str, blur: float) -> np.ndarray:
        v = visits[visit]
        return render_occupancy(placement.fine, config.fine_factor_zyx, spacing, v.thickness_mm,
                                v.slice_offset_mm, blur)

    def try_insert(kind: str, library: str, tries: int = 25) -> None:
        for _ in range(tries):
            candidate = draw_lesion_candidate(rng, bg, shapes[library], config, occupied, allowed, white_near,
                                              blurs, lambda: draw_contrast(kind),
                                              lambda placement, blur: render(placement, "current", blur))
            if candidate is None:
                continue
            zone, shape, centre, placement = candidate.zone, candidate.shape, candidate.centre, candidate.placement
            blur, contrast = candidate.blur, candidate.contrast
            occupancy_current, visible, box = candidate.occupancy, candidate.visible, placement.box
            scale = float(rng.uniform(0.45, 0.75)) if kind == "enlarging" else 1.0
            occupancy_prior = None
            if kind == "unchanged":
                occupancy_prior = render(placement, "prior", blur)
            elif kind == "enlarging":
                # the smaller lesion sits inside the larger one: same orientation, same centre
                smaller = Placement(placement.box, _scaled_fine(placement.fine, scale))
                occupancy_prior = render(smaller, "prior", blur)
                growth = visible & ~(render(smaller, "current", blur) >= 0.5)
                if growth.sum() * voxel < config.min_growth_mm3:
                    continue
                visible = growth
            paint_lesion(current, occupancy_current, box, bg.nawm_level, contrast, bg.ventricles)
            if occupancy_prior is not None:
                paint_lesion(prior, occupancy_prior, box, bg.nawm_level, contrast, bg.ventricles)
            if kind in ("new", "enlarging"):
                label[box] |= visible
            occupied[box] |= ndimage.binary_dilation(occupancy_current >= 0.2, iterations=2)
            lesions_meta.append({"kind": kind, "zone": zone, "shape": shape.source,
                                 "shape_volume_mm3": round(shape.volume_mm3, 1),
                                 "labelled_mm3": round(float(visible.sum()) * voxel, 1) if kind != "unchanged" else 0,
                                 "peak_occupancy": round(float(occupancy_current.max()), 3),
                                 "contrast": round(contrast, 3), "blur_sigma_mm": blur,
                                 "centre_zyx": [round(float(c), 1) for c in centre]})
            return

    # Real lesions: removed from the prior (they become new) or from the current (resolving).
    real_count = int(bg.lesions.max())
    if bg.removable and real_count:
        healthy = bg.white_matter & ~bg.avoid
        if not no_new and rng.uniform() < config.remove_real_lesions_probability:
            chosen = np.flatnonzero(rng.uniform(size=real_count) < rng.uniform(0.2, 0.6)) + 1
            removed = np.isin(bg.lesions, chosen) & bg.brain
            if removed.sum() * voxel > 3.0:
                prior = inpaint_lesions(prior, removed, healthy, spacing, rng)
                label |= removed
                lesions_meta.append({"kind": "real_removed_from_prior", "components": int(len(chosen)),
                                     "labelled_mm3": round(float(removed.sum()) * voxel, 1)})
        if rng.uniform() < config.resolve_real_lesion_probability:
            candidates = [i for i in range(1, real_count + 1) if not np.any(label[bg.lesions == i])]
            if candidates:
                chosen_one = candidates[int(rng.integers(len(candidates)))]
                resolved = bg.lesions == chosen_one
                current = inpaint_lesions(current, resolved, healthy, spacing, rng)
                lesions_meta.append({"kind": "real_resolved_on_current",
                                     "volume_mm3": round(float(resolved.sum()) * voxel, 1)})

    # From here on the prior is on its own slices; lesions painted into it are rendered at its slice positions.
    prior = acquire_at_shifted_slices(prior, bg.geometry, slice_shift)

    # Enlarging: a real lesion grows when the background has one, else an inserted lesion grows.
    for _ in range(n_enlarging):
        grown_real = False
        candidates = [i for i in range(1, real_count + 1) if not np.any(label[bg.lesions == i])]
        if candidates and rng.uniform() < 0.6:
            chosen_one = candidates[int(rng.integers(len(candidates)))]
            lesion = bg.lesions == chosen_one
            box = ndimage.find_objects(lesion.astype(np.int32))[0]
            pad = np.ceil((config.growth_mm[1] + 2) / np.array(spacing)).astype(int)
            box = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, grid_shape))
            original, grown = grow_placement(lesion, box, spacing, config.fine_factor_zyx,
                                             float(rng.uniform(*config.growth_mm)), rng)
            growth_fine = np.clip(grown.fine - original.fine, 0, 1)
            blur = float(rng.choice(blurs))
            occupancy = render(Placement(box, growth_fine), "current", blur)
            growth = (occupancy >= 0.5) & ~lesion[box] & allowed[box]
            if growth.sum() * voxel >= config.min_growth_mm3:
                ratio = current[lesion] / np.maximum(bg.nawm_level[lesion], 1e-6)
                contrast = float(max(1.1, np.percentile(ratio, 75)))
                paint_lesion(current, occupancy * allowed[box], box, bg.nawm_level, contrast, bg.ventricles)
                label[box] |= growth
                occupied[box] |= ndimage.binary_dilation(occupancy >= 0.2, iterations=2)
                lesions_meta.append({"kind": "enlarging_real", "labelled_mm3": round(float(growth.sum()) * voxel, 1),
                                     "original_mm3": round(float(lesion.sum()) * voxel, 1),
                                     "contrast": round(contrast, 3)})
                grown_real = True
        if not grown_real:
            try_insert("enlarging", "change")
    for _ in range(n_new):
        try_insert("new", "change")
    for _ in range(n_unchanged):
        try_insert("unchanged", "cross_sectional")

    # Visit differences: the prior through a residual misalignment and other slice positions, then per-visit
    # appearance. The real pair is already misaligned by the dataset's registration: half the range on top.
    max_mm = config.max_misalignment_mm * (0.5 if bg.is_pair else 1.0)
    transform, displacement = rigid_misalignment(bg.geometry, bg.brain, max_mm, rng)
    affine_part: list[float] | None = None
    if config.max_affine_fraction > 0:
        transform, affine_part = with_affine_residual(transform, config.max_affine_fraction, rng)
    prior = resample_to_current(prior, bg.geometry, slice_shift, transform)
    prior, prior_look = visit_appearance(prior, bg.brain, config, rng)
    current, current_look = visit_appearance(current, bg.brain, config, rng)
    label &= bg.brain
    case_id = f"{CASE_PREFIX['ms']}_{seed}_{index:04d}"
    meta = {"case_id": case_id, "seed": seed, "index": index, "background": name, "no_new_lesion": bool(no_new),
            "lesions": lesions_meta, "label_mm3": round(float(label.sum()) * voxel, 1),
            "misalignment_max_mm": round(displacement, 3), "affine_residual": affine_part,
            "prior_slice_shift_mm": round(slice_shift, 3),
            "visits": {k: asdict(v) for k, v in visits.items()}, "prior_appearance": prior_look,
            "current_appearance": current_look, "spacing_zyx": list(spacing)}
    case = LongitudinalCase(case_id, prior, current, label.astype(np.uint8), bg.geometry, bg.brain.astype(np.uint8))
    return case, meta


def _scaled_fine(fine: np.ndarray, scale: float) -> np.ndarray:
    """The fine occupancy shrunk by `scale` about its centre of mass (same box, same orientation)."""
    centre = np.array(ndimage.center_of_mass(fine))
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in fine.shape], indexing="ij"))
    source = (grid - centre[:, None, None, None]) / scale + centre[:, None, None, None]
    return ndimage.map_coordinates(fine, source, order=1, mode="constant", cval=0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Cached generation on disk


# ---------------------------------------------------------------------------------------------------------------
# Another pathology on real backgrounds (supervised pretraining of the transfer experiment)

OTHER_PATHOLOGY_RADIUS_MM = (5.0, 14.0)


def other_pathology_config(config: RealPairConfig) -> RealPairConfig:
    """The pair generator with no MS change at all: no new, enlarging or removed lesions, and no real pair (whose
    own new lesions would be labelled), so that the painted pathology is the only labelled change."""
    single_scans = tuple(b for b in config.backgrounds if not b.endswith("/pair"))
    if not single_scans:
        raise ValueError("other-pathology pairs need a single-scan background; only real pairs were given")
    return replace(config, backgrounds=single_scans, no_new_lesion_probability=1.0,
                   remove_real_lesions_probability=0.0)


def other_pathology_pair(seed: int, index: int, config: RealPairConfig,
                         shape_cache_dir: Path | None = None) -> tuple[LongitudinalCase, dict[str, Any]]:
    """A real-background pair (visit differences, unchanged lesions) whose current visit carries another
    pathology, as `synth.other_pathology` paints it on templates: a tumour-like mass in white matter (bright
    oedema, darker core) or a stroke-like wedge through grey and white matter (label 1)."""
    case, meta = generate_pair(seed, index, other_pathology_config(config), shape_cache_dir)
    bg = load_background(meta["background"], config.spacing_zyx, config.background_slice_thickness_mm)
    rng = case_rng(seed, 1_000_000 + index)  # its own stream: the pair's draws stay those of generate_pair
    brain = bg.brain & (case.current > 0)
    level = float(np.median(case.current[brain]))
    radii = rng.uniform(*OTHER_PATHOLOGY_RADIUS_MM, size=3) / np.array(config.spacing_zyx)
    if rng.uniform() < 0.5:
        kind = "mass"
        centre = pick_centre(np.argwhere(bg.white_matter & ~bg.avoid), rng)
        current, region = paint_mass(case.current.copy(), centre, radii, level, rng)
    else:
        kind = "wedge"
        centre = pick_centre(np.argwhere(bg.grey_matter & ~bg.avoid), rng)
        current, region = paint_wedge(case.current.copy(), centre, radii, bg.grey_matter | bg.white_matter, level, rng)
    current *= brain
    label = (region > 0.5) & brain
    voxel = float(np.prod(config.spacing_zyx))
    meta = {**meta, "case_id": f"{CASE_PREFIX['other_pathology']}_{seed}_{index:04d}", "other_pathology": kind,
            "centre_zyx": [round(float(c), 1) for c in centre], "label_mm3": round(float(label.sum()) * voxel, 1)}
    return LongitudinalCase(meta["case_id"], case.prior, current.astype(np.float32), label.astype(np.uint8),
                            case.geometry, case.brain_mask), meta


PairMaker = Callable[[int, int, RealPairConfig, "Path | None"], tuple[LongitudinalCase, dict[str, Any]]]
PAIR_MAKERS: dict[str, PairMaker] = {"ms": generate_pair, "other_pathology": other_pathology_pair}
CASE_PREFIX = {"ms": "realpair", "other_pathology": "otherpath"}


def pairs_dir(root: Path, seed: int, config: RealPairConfig, kind: str = "ms") -> Path:
    return root / (f"{config.key()}_seed{seed}" if kind == "ms" else f"{kind}_{config.key()}_seed{seed}")


def _generate_and_write(seed: int, index: int, config: RealPairConfig, folder: Path, shape_cache: Path,
                        kind: str = "ms") -> float:
    start = time.monotonic()
    case, meta = PAIR_MAKERS[kind](seed, index, config, shape_cache)
    case_dir = folder / case.case_id
    write_msseg2_case(case, case_dir)
    write_volume(case_dir / BRAIN_MASK_FILE, case.brain_mask.astype(np.uint8), case.geometry)
    meta["seconds"] = round(time.monotonic() - start, 2)
    (case_dir / PAIR_META_FILE).write_text(json.dumps(meta, indent=1))  # written last: marks the case complete
    return meta["seconds"]


def generate_pairs(root: Path, seed: int, indices: Sequence[int], config: RealPairConfig,
                   workers: int = 1, kind: str = "ms") -> tuple[list[Path], dict[str, Any]]:
    """Pairs `indices` of series `seed` under `root/<config key>_seed<seed>/`; complete cases already there are
    reused (a cache hit). `kind`: "ms" (new and enlarging MS lesions) or "other_pathology" (`other_pathology_pair`,
    its own folder). Returns the case folders and {generated, reused, seconds_per_pair}."""
    if kind not in PAIR_MAKERS:
        raise ValueError(f"unknown pair kind {kind!r}; expected one of {sorted(PAIR_MAKERS)}")
    folder = pairs_dir(root, seed, config, kind)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"format": FORMAT_VERSION, "seed": seed, **asdict(config)},
                                                   indent=1))
    dirs = [folder / f"{CASE_PREFIX[kind]}_{seed}_{i:04d}" for i in indices]
    todo = [i for i, d in zip(indices, dirs) if not (d / PAIR_META_FILE).is_file()]
    shape_cache = root / "shapes"
    shape_library(config.max_shape_volume_mm3, shape_cache, config.max_shape_files)  # once, before the workers
    with WorkerPool(workers) as pool:
        seconds = pool.map(_generate_and_write, [seed] * len(todo), todo, [config] * len(todo),
                           [folder] * len(todo), [shape_cache] * len(todo), [kind] * len(todo))
    return dirs, {"generated": len(todo), "reused": len(indices) - len(todo),
                  "seconds_per_pair": round(float(np.mean(seconds)), 2) if seconds else None}


def read_pair(case_dir: Path) -> tuple[LongitudinalCase, dict[str, Any]]:
    case = read_msseg2_case(case_dir)
    brain, _ = read_volume(case_dir / BRAIN_MASK_FILE, np.uint8)
    case.brain_mask = brain
    return case, json.loads((case_dir / PAIR_META_FILE).read_text())


if __name__ == "__main__":
    from msnode_training.cli import real_pairs_main

    real_pairs_main()
