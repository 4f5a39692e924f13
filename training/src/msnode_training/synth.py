"""Synthetic two-visit FLAIR pairs on real anatomy, deterministic from a seed.

Anatomy: the MNI152 2009 template and its grey/white matter maps shipped inside the nilearn wheel (a FLAIR-like
image is drawn from the tissue maps with random tissue intensities), and the real MNI-space FLAIRs of the Lesjak
cross-sectional patients. Both live in MNI physical space, so the template's white-matter map places lesions in
either. Scenarios:
  * "ms": MS-like white-matter lesions that appear or grow between visits (label 1), next to stable and
    shrinking lesions (label 0); some cases have no new lesion at all.
  * "other_pathology": one tumour-like mass or stroke-like wedge present on the current visit only (label 1).
  * "unlabeled": MS-like changes with an empty label, for self-supervised pretraining.
  * "semi_synthetic": a real FLAIR as the current visit and a copy with some of its real lesions removed as the
    prior; the removed lesions are the label (real lesion shapes and intensities).
Domain randomisation per visit: tissue contrast (gamma), bias field, resolution and thick 2D slices, Rician noise,
global scale; shared elastic deformation per case and a small rigid misregistration of the prior.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnode_training.paths import lesjak_cross_sectional_dir
from msnode_training.readers import (
    LongitudinalCase,
    list_lesjak_cross_sectional,
    read_lesjak_cross_sectional_case,
    write_msseg2_case,
)
from msnode_training.volumes import Geometry, resample_to

SCENARIOS = ("ms", "other_pathology", "unlabeled", "semi_synthetic")
MNI_TEMPLATE = "mni152"


@dataclass(frozen=True)
class SynthConfig:
    scenario: str = "ms"
    spacing_mm: float = 2.0
    anatomy_sources: tuple[str, ...] = (MNI_TEMPLATE, "lesjak-cross-sectional/patient07",
                                        "lesjak-cross-sectional/patient26")
    new_lesions: tuple[int, int] = (1, 5)
    enlarging_lesions: tuple[int, int] = (0, 2)
    stable_lesions: tuple[int, int] = (0, 4)
    no_new_lesion_probability: float = 0.15
    lesion_radius_mm: tuple[float, float] = (2.0, 6.0)
    mass_radius_mm: tuple[float, float] = (8.0, 20.0)
    elastic_mm: float = 3.0
    thick_slice_probability: float = 0.5
    slice_thickness_mm: tuple[float, float] = (3.0, 6.0)
    noise_fraction: tuple[float, float] = (0.01, 0.06)
    bias_strength: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.4)
    max_rotation_deg: float = 1.5
    max_translation_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; expected one of {SCENARIOS}")


@dataclass
class Anatomy:
    """One anatomy on the working grid: a FLAIR (None for the template), tissue maps and any real lesions."""

    name: str
    geometry: Geometry
    brain: np.ndarray
    white_matter: np.ndarray
    grey_matter: np.ndarray
    flair: np.ndarray | None = None
    real_lesions: np.ndarray | None = field(default=None)


def nilearn_data_dir() -> Path:
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data"


def _template_file(tissue: str) -> Path:
    return nilearn_data_dir() / f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz"


@lru_cache(maxsize=4)
def working_geometry(spacing_mm: float) -> Geometry:
    """The template grid at `spacing_mm`, cropped to the brain's bounding box plus a 4-voxel margin."""
    t1 = sitk.ReadImage(str(_template_file("t1")))
    full = Geometry.from_image(t1).with_spacing((spacing_mm,) * 3)
    brain = resample_to(sitk.Cast(t1, sitk.sitkFloat32), full) > 10
    nz = np.argwhere(brain)
    lo = np.maximum(nz.min(axis=0) - 4, 0)
    hi = np.minimum(nz.max(axis=0) + 5, np.array(full.shape_zyx))
    ref = full.reference_image()
    origin = ref.TransformIndexToPhysicalPoint([int(lo[2]), int(lo[1]), int(lo[0])])
    return Geometry(full.spacing_zyx, tuple(origin), full.direction, tuple(int(v) for v in hi - lo))


@lru_cache(maxsize=8)
def load_anatomy(source: str, spacing_mm: float) -> Anatomy:
    geometry = working_geometry(spacing_mm)

    def template(tissue: str) -> np.ndarray:
        image = sitk.Cast(sitk.ReadImage(str(_template_file(tissue))), sitk.sitkFloat32)
        return resample_to(image, geometry).astype(np.float32)

    white, grey = template("wm") / 255.0, template("gm") / 255.0
    template_brain = template("t1") > 10
    if source == MNI_TEMPLATE:
        return Anatomy(source, geometry, template_brain, white, grey)
    prefix = "lesjak-cross-sectional/"
    if not source.startswith(prefix):
        raise ValueError(f"unknown anatomy source {source!r}")
    case = read_lesjak_cross_sectional_case(lesjak_cross_sectional_dir() / source[len(prefix):])
    flair = resample_to(case.geometry.to_image(case.flair), geometry).astype(np.float32)
    lesions = resample_to(case.geometry.to_image(case.lesions.astype(np.float32)), geometry) > 0.5
    brain = flair > 0.05 * np.percentile(flair[flair > 0], 99)
    brain = ndimage.binary_fill_holes(ndimage.binary_opening(brain, iterations=1))
    return Anatomy(source, geometry, brain, white * brain, grey * brain, flair * brain, lesions & brain)


def available_anatomy_sources(config: SynthConfig) -> list[str]:
    present = {f"lesjak-cross-sectional/{p.name}" for p in list_lesjak_cross_sectional(lesjak_cross_sectional_dir())}
    return [s for s in config.anatomy_sources if s == MNI_TEMPLATE or s in present]


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, control_points: int = 5) -> np.ndarray:
    """Smooth random field in [-1, 1]: a coarse random grid upsampled with cubic splines."""
    coarse = rng.uniform(-1, 1, size=(control_points,) * len(shape))
    field = ndimage.zoom(coarse, [s / control_points for s in shape], order=3)
    return np.clip(field[tuple(slice(0, s) for s in shape)], -1, 1)


def flair_from_tissues(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A FLAIR-like image from tissue maps: CSF dark, white matter below grey matter, random levels and texture."""
    csf = np.clip(anatomy.brain - anatomy.white_matter - anatomy.grey_matter, 0, 1)
    levels = {"csf": rng.uniform(0.05, 0.3), "grey": rng.uniform(0.75, 1.0), "white": rng.uniform(0.5, 0.72)}
    image = csf * levels["csf"] + anatomy.grey_matter * levels["grey"] + anatomy.white_matter * levels["white"]
    texture = 1 + 0.05 * smooth_noise(image.shape, rng, control_points=12)
    return (image * texture * anatomy.brain).astype(np.float32)


def soft_ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, radii_vox: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Soft (0..1) randomly oriented ellipsoid with an irregular border, computed in its bounding box only."""
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    reach = int(np.ceil(radii_vox.max() * 1.6)) + 1
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.floor(centre).astype(int) + reach + 1, np.array(shape))
    out = np.zeros(shape, dtype=np.float32)
    if np.any(hi <= lo):
        return out
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1) - centre
    local = grid @ rotation
    distance = np.sqrt(((local / radii_vox) ** 2).sum(axis=-1))
    border = 1 + 0.25 * smooth_noise(distance.shape, rng, control_points=4)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1 / (1 + np.exp((distance - border) / 0.08))
    return out


def pick_centre(candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return candidates[rng.integers(len(candidates))].astype(np.float64) + rng.uniform(-0.5, 0.5, 3)


def paint(image: np.ndarray, soft: np.ndarray, level: float) -> np.ndarray:
    return image * (1 - soft) + soft * level


def ms_lesions(base: np.ndarray, anatomy: Anatomy, config: SynthConfig, rng: np.random.Generator,
               labelled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prior, current and new-or-enlarging label with MS-like white-matter lesions."""
    deep_white = np.argwhere(anatomy.white_matter > 0.85)
    white_level = float(np.median(base[anatomy.white_matter > 0.85]))
    prior, current = base.copy(), base.copy()
    label = np.zeros(base.shape, dtype=bool)
    no_new = rng.uniform() < config.no_new_lesion_probability
    counts = {
        "new": 0 if no_new else int(rng.integers(config.new_lesions[0], config.new_lesions[1] + 1)),
        "enlarging": 0 if no_new else int(rng.integers(config.enlarging_lesions[0], config.enlarging_lesions[1] + 1)),
        "stable": int(rng.integers(config.stable_lesions[0], config.stable_lesions[1] + 1)),
        "shrinking": int(rng.integers(0, 2)),
    }
    spacing = config.spacing_mm
    for kind, count in counts.items():
        for _ in range(count):
            centre = pick_centre(deep_white, rng)
            radii = rng.uniform(*config.lesion_radius_mm, size=3) / spacing
            radii = np.maximum(radii, 0.8)
            level = white_level * rng.uniform(1.4, 2.0)
            lesion = soft_ellipsoid(base.shape, centre, radii, rng)
            smaller = soft_ellipsoid(base.shape, centre, radii * rng.uniform(0.4, 0.7), rng)
            before, after = {"new": (None, lesion), "enlarging": (smaller, lesion), "stable": (lesion, lesion),
                             "shrinking": (lesion, smaller)}[kind]
            if before is not None:
                prior = paint(prior, before, level)
            current = paint(current, after, level)
            if kind in ("new", "enlarging"):
                label |= after > 0.5
    label &= anatomy.brain.astype(bool)
    if not labelled:
        label[:] = False
    return prior, current, label


def paint_mass(image: np.ndarray, centre: np.ndarray, radii_vox: np.ndarray, brain_level: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tumour-like mass: bright oedema around a darker core. Returns the image and the oedema (soft, 0..1)."""
    oedema = soft_ellipsoid(image.shape, centre, radii_vox, rng)
    core = soft_ellipsoid(image.shape, centre, radii_vox * rng.uniform(0.3, 0.6), rng)
    image = paint(image, oedema, brain_level * rng.uniform(1.5, 2.2))
    return paint(image, core, brain_level * rng.uniform(0.4, 1.2)), oedema


def paint_wedge(image: np.ndarray, centre: np.ndarray, radii_vox: np.ndarray, tissue: np.ndarray,
                brain_level: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A stroke-like wedge through the tissue around a cortical centre. Returns the image and the wedge (soft)."""
    region = soft_ellipsoid(image.shape, centre, radii_vox, rng) * tissue
    return paint(image, region, brain_level * rng.uniform(1.3, 1.9)), region


def other_pathology(base: np.ndarray, anatomy: Anatomy, config: SynthConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tumour-like mass (bright oedema, darker core) or a stroke-like cortical wedge on the current visit."""
    spacing = config.spacing_mm
    brain_level = float(np.median(base[anatomy.brain > 0]))
    if rng.uniform() < 0.5:
        centre = pick_centre(np.argwhere(anatomy.white_matter > 0.5), rng)
        radii = rng.uniform(*config.mass_radius_mm, size=3) / spacing
        current, region = paint_mass(base.copy(), centre, radii, brain_level, rng)
    else:
        centre = pick_centre(np.argwhere(anatomy.grey_matter > 0.6), rng)
        radii = rng.uniform(*config.mass_radius_mm, size=3) / spacing
        tissue = np.clip(anatomy.grey_matter + anatomy.white_matter, 0, 1)
        current, region = paint_wedge(base.copy(), centre, radii, tissue, brain_level, rng)
    label = (region > 0.5) & anatomy.brain.astype(bool)
    return base.copy(), current, label


def remove_real_lesions(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Current = real FLAIR; prior = the FLAIR with a random half of its real lesions filled with nearby tissue."""
    assert anatomy.flair is not None and anatomy.real_lesions is not None
    current = anatomy.flair.copy()
    components, count = ndimage.label(anatomy.real_lesions)
    chosen = np.flatnonzero(rng.uniform(size=count) < 0.5) + 1
    removed = np.isin(components, chosen)
    fill_region = ndimage.binary_dilation(removed, iterations=1) & anatomy.brain.astype(bool)
    # Normalised convolution over healthy tissue: a local estimate of what the lesion replaced.
    lesion_zone = ndimage.binary_dilation(anatomy.real_lesions, iterations=1)
    healthy = (anatomy.brain.astype(bool) & ~lesion_zone).astype(np.float32)
    estimate = ndimage.gaussian_filter(current * healthy, 2.0) / np.maximum(ndimage.gaussian_filter(healthy, 2.0), 1e-3)
    prior = np.where(fill_region, estimate, current).astype(np.float32)
    return prior, current, removed


def elastic_coordinates(shape: tuple[int, int, int], max_mm: float, spacing_mm: float,
                        rng: np.random.Generator) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    displacement = np.stack([smooth_noise(shape, rng, control_points=5) for _ in range(3)]) * (max_mm / spacing_mm)
    return grid + displacement


def rigid_coordinates(shape: tuple[int, int, int], max_rotation_deg: float, max_translation_mm: float,
                      spacing_mm: float, rng: np.random.Generator) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    rotation = sitk.Euler3DTransform((0, 0, 0), *angles).GetMatrix()
    matrix = np.array(rotation).reshape(3, 3)
    centre = (np.array(shape) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")).reshape(3, -1)
    shift = rng.uniform(-max_translation_mm, max_translation_mm, 3) / spacing_mm
    moved = matrix @ (grid - centre[:, None]) + centre[:, None] + shift[:, None]
    return moved.reshape((3, *shape)).astype(np.float32)


def warp(volume: np.ndarray, coordinates: np.ndarray, order: int = 1) -> np.ndarray:
    return ndimage.map_coordinates(volume.astype(np.float32), coordinates, order=order, mode="constant", cval=0.0)


def simulate_acquisition(image: np.ndarray, brain: np.ndarray, config: SynthConfig,
                         rng: np.random.Generator) -> np.ndarray:
    """One visit's scanner: contrast, resolution (thick 2D slices), bias field, Rician noise, intensity scale."""
    image = np.clip(image, 0, None) ** rng.uniform(*config.gamma_range)
    spacing = config.spacing_mm
    if rng.uniform() < config.thick_slice_probability:
        axis = int(rng.integers(3))
        thickness = rng.uniform(*config.slice_thickness_mm)
        sigma = [0.0, 0.0, 0.0]
        sigma[axis] = thickness / 2.355 / spacing
        image = ndimage.gaussian_filter(image, sigma)
        step = max(1, int(round(thickness / spacing)))
        if step > 1:
            kept = [slice(None)] * 3
            kept[axis] = slice(0, None, step)
            zoom = [1.0, 1.0, 1.0]
            coarse = image[tuple(kept)]
            zoom[axis] = image.shape[axis] / coarse.shape[axis]
            image = ndimage.zoom(coarse, zoom, order=1)[tuple(slice(0, s) for s in brain.shape)]
    else:
        image = ndimage.gaussian_filter(image, rng.uniform(0.0, 0.6))
    image = image * np.exp(config.bias_strength * smooth_noise(image.shape, rng, control_points=4))
    reference = float(np.median(image[brain])) if brain.any() else 1.0
    sigma = rng.uniform(*config.noise_fraction) * reference
    noisy = np.sqrt((image + rng.normal(0, sigma, image.shape)) ** 2 + rng.normal(0, sigma, image.shape) ** 2)
    return (noisy * brain * rng.uniform(200, 800) / max(reference, 1e-6)).astype(np.float32)


# A run draws each synthetic set from its own stream of one run seed, so no two sets share a case (the case id
# carries the stream seed).
SEED_STREAMS = {"finetune_ms": 1, "validation": 2, "semi_synthetic": 3, "pretraining": 4, "synthetic_test": 5,
                "real_pairs_train": 6, "real_pairs_validation": 7, "real_pairs_test": 8,
                "real_pairs_other_pathology": 9}


def stream_seed(run_seed: int, stream: str) -> int:
    return run_seed * 10 + SEED_STREAMS[stream]


def case_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def generate_case(seed: int, index: int, config: SynthConfig) -> LongitudinalCase:
    """Case `index` of the series started by `seed`: the same (seed, index, config) gives the same arrays."""
    rng = case_rng(seed, index)
    sources = available_anatomy_sources(config)
    if config.scenario == "semi_synthetic":
        sources = [s for s in sources if s != MNI_TEMPLATE]
    if not sources:
        raise FileNotFoundError("no anatomy source available for scenario " + config.scenario)
    anatomy = load_anatomy(sources[int(rng.integers(len(sources)))], config.spacing_mm)
    base = anatomy.flair / np.median(anatomy.flair[anatomy.brain]) if anatomy.flair is not None \
        else flair_from_tissues(anatomy, rng)
    if config.scenario == "semi_synthetic":
        prior, current, label = remove_real_lesions(anatomy, rng)
    elif config.scenario == "other_pathology":
        prior, current, label = other_pathology(base, anatomy, config, rng)
    else:
        prior, current, label = ms_lesions(base, anatomy, config, rng, labelled=config.scenario == "ms")
    shape = base.shape
    elastic = elastic_coordinates(shape, config.elastic_mm, config.spacing_mm, rng)
    brain = warp(anatomy.brain, elastic) > 0.5
    label = (warp(label, elastic) > 0.5) & brain
    current = warp(current, elastic)
    prior = warp(prior, elastic)
    misregistration = rigid_coordinates(shape, config.max_rotation_deg, config.max_translation_mm,
                                        config.spacing_mm, rng)
    prior_brain = warp(brain, misregistration) > 0.5
    prior = warp(prior, misregistration)
    prior = simulate_acquisition(prior, prior_brain, config, rng)
    current = simulate_acquisition(current, brain, config, rng)
    case_id = f"synth_{config.scenario}_{seed}_{index:04d}"
    return LongitudinalCase(case_id, prior, current, label.astype(np.uint8), anatomy.geometry,
                            brain.astype(np.uint8))


def generate_dataset(out_dir: Path, n_cases: int, seed: int, config: SynthConfig, first_index: int = 0) -> list[Path]:
    """Write `n_cases` synthetic cases in the MSSEG-2 layout plus a `generation.json` describing them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(first_index, first_index + n_cases):
        case = generate_case(seed, index, config)
        write_msseg2_case(case, out_dir / case.case_id)
        written.append(out_dir / case.case_id)
    (out_dir / "generation.json").write_text(json.dumps(
        {"seed": seed, "first_index": first_index, "n_cases": n_cases, "config": asdict(config),
         "cases": [p.name for p in written]}, indent=2))
    return written
