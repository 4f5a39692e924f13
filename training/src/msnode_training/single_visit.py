"""Single-visit training cases and the single-visit model (issue 19 part 6): ALL FLAIR-hyperintense MS lesions on
one FLAIR, for a patient with no prior visit.

A case is one FLAIR (`current`) and a label marking every lesion on it: the background scan's own real lesions
(its consensus mask) plus real lesion shapes inserted with the machinery of `realpairs.py` (tissue zones,
measured contrasts and blurs, fine-grid rendering through a thick-slice profile, bias field, gamma, noise,
intensity scale); some cases have part of the real lesions removed (inpainted with healthy white matter), so the
lesion count varies.

Backgrounds: only scans whose lesions are ALL labelled may be used, or the model would learn to ignore real
lesions. That is `lesjak-cross-sectional/patient07` (consensus mask). Refused (`SingleVisitConfig`):
  * `lesjak-cross-sectional/patient26`: this model's held-out test patient (never trained, validated or tuned on;
    its lesion masks are not a shape source either);
  * `lesjak-longitudinal/patient01/*`: its chronic lesions are unlabelled (the data have a change mask only);
  * `lesjak-longitudinal/patient03`: evaluation only, as for every model.
Each case is acquired anew from the 1 mm MNI scan through a slice profile of 3-4 mm at a random slice offset
(`realpairs.thick_slice_scan`), so the real lesions' partial-volume look varies and the inserted lesions are
rendered with the same thickness and offset.

Deterministic from (seed, index, config); `generate_cases` caches cases on disk under `<root>/<key>_seed<S>/`
(`flair.nii.gz`, `lesions.nii.gz`, `brain_mask.nii.gz`, `case.json` written last). Seed streams
(`single_visit_seeds`): `train`, `validation`, `test` of a run seed, disjoint from each other and from the pair
streams.

The model: `run_single_visit` (`msnode-single-visit`), modelled on `realbg.run_realbg`: one input channel
`current`, the realbg network (16-128 features, patch 16 x 64 x 64, 3 x 1 x 1 mm), optional inpainting pretraining,
fine-tuning with crop validation and a time-based poly learning rate, resumable through `stages.json` and
`checkpoint_latest.pth`; checkpoint and post-processing chosen on the validation cases only; export, parity,
evaluation (held-out generated cases, the real patient26 on the thick-slice grid and at 1 mm) and a classical
z-score baseline scored by the same code; the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from msnode_training.baseline import DATA_CITATION, score_with_bins, selection_key, summarize_with_bins
from msnode_training.channels import SINGLE_VISIT_CHANNEL_DESCRIPTIONS, SINGLE_VISIT_CHANNELS, zscore_in_mask
from msnode_training.metrics import remove_small_components
from msnode_training.paths import WorkerPool
from msnode_training.readers import LongitudinalCase
from msnode_training.realpairs import (
    EVALUATION_ONLY_PATIENTS,
    RealPairConfig,
    cross_sectional_source,
    draw_lesion_candidate,
    inpaint_lesions,
    insertion_masks,
    insertion_statistics,
    load_background,
    paint_lesion,
    render_occupancy,
    shape_library,
    shifted_slices,
    thick_slice_scan,
    visit_appearance,
)
from msnode_training.synth import case_rng
from msnode_training.trainers import TrainingSettings
from msnode_training.volumes import Geometry, read_volume, write_volume

FORMAT_VERSION = 1  # of the single-visit cases; bump when the generator changes what it makes
SINGLE_VISIT_BACKGROUNDS = ("lesjak-cross-sectional/patient07",)
HELD_OUT_PATIENT = "patient26"  # lesjak-cross-sectional: this model's real test case
REFUSED_BACKGROUNDS = {
    "lesjak-cross-sectional/patient26": "the single-visit model's held-out test patient",
    "lesjak-longitudinal/patient01": "its chronic lesions are unlabelled (only a change mask): a model trained on it "
                                     "would learn to ignore real lesions",
    "lesjak-longitudinal/patient03": "kept for evaluation",
}
SHAPE_EXCLUSIONS = (HELD_OUT_PATIENT, *EVALUATION_ONLY_PATIENTS)  # cross-sectional masks not used as shapes
LABELS = {"background": 0, "lesion": 1}
CURRENT_FILE = "flair.nii.gz"
LABEL_FILE = "lesions.nii.gz"
BRAIN_MASK_FILE = "brain_mask.nii.gz"
CASE_META_FILE = "case.json"
SINGLE_VISIT_STREAMS = {"train": 1, "validation": 2, "test": 3}


def single_visit_seeds(run_seed: int) -> dict[str, int]:
    """The three disjoint case streams of a run seed (100000 + 10 x seed + stream: apart from the pair streams)."""
    return {split: 100_000 + run_seed * 10 + n for split, n in SINGLE_VISIT_STREAMS.items()}


def refusal(source: str) -> str | None:
    """Why `source` may not be a single-visit background (None: it may)."""
    for prefix, reason in REFUSED_BACKGROUNDS.items():
        if source == prefix or source.startswith(prefix + "/"):
            return reason
    if source not in SINGLE_VISIT_BACKGROUNDS:
        return f"not a fully labelled background; expected one of {SINGLE_VISIT_BACKGROUNDS}"
    return None


@dataclass(frozen=True)
class SingleVisitConfig(RealPairConfig):
    """The single-visit generator. Rendering, appearance and placement fields are `RealPairConfig`'s (same
    meaning); its pair-only fields (new / enlarging / unchanged counts, misalignment, affine residual, resolving
    lesions, no-new-lesion probability) are not used."""

    backgrounds: tuple[str, ...] = SINGLE_VISIT_BACKGROUNDS
    inserted_lesions: tuple[int, int] = (0, 10)
    remove_real_lesions_probability: float = 0.5  # of a case: some of the real lesions are removed
    removed_share: tuple[float, float] = (0.2, 0.8)  # of the real lesions, when some are removed
    change_shape_share: float = 0.5  # inserted shapes from the change library (else cross-sectional lesions)
    slice_shift: bool = True  # acquire the background at a random slice offset (up to half a slice)
    faint_lesion_share: float = 0.1
    exclude_shapes_of: tuple[str, ...] = SHAPE_EXCLUSIONS

    def __post_init__(self) -> None:
        for source in self.backgrounds:
            reason = refusal(source)
            if reason is not None:
                raise ValueError(f"{source} may not be a single-visit background: {reason}")
        missing = [p for p in SHAPE_EXCLUSIONS if p not in self.exclude_shapes_of]
        if missing:
            raise ValueError(f"the shapes of {missing} must stay excluded (held out)")

    def key(self) -> str:
        text = json.dumps({"single_visit_format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def generate_case(seed: int, index: int, config: SingleVisitConfig,
                  shape_cache_dir: Path | None = None) -> tuple[LongitudinalCase, dict[str, Any]]:
    """Case `index` of the series `seed` (prior None; label = every lesion); the same (seed, index, config) gives
    the same arrays."""
    rng = case_rng(seed, index)
    name = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    bg = load_background(name, config.spacing_zyx, config.background_slice_thickness_mm)
    contrasts, blurs = insertion_statistics(name, config)
    shapes = shape_library(config.max_shape_volume_mm3, shape_cache_dir, config.max_shape_files,
                           tuple(config.exclude_shapes_of))
    spacing = bg.geometry.spacing_zyx
    voxel = float(np.prod(spacing))

    # The real scan acquired anew: slice thickness and slice offset of this case.
    thickness = float(rng.uniform(*config.slice_thickness_mm))
    shift = float(rng.uniform(-0.5, 0.5) * spacing[0]) if config.slice_shift else 0.0
    scan = cross_sectional_source(name.split("/")[1])
    image, occupancy, _ = thick_slice_scan(scan, shifted_slices(bg.geometry, shift), thickness)
    image = (image * bg.brain).astype(np.float32)
    real = (occupancy > 0.5) & bg.brain
    components, count = ndimage.label(real, structure=np.ones((3, 3, 3), bool))
    meta_lesions: list[dict[str, Any]] = []

    # Some real lesions removed (with their partial-volume fringe), so the count varies.
    removed = np.zeros_like(real)
    if count and rng.uniform() < config.remove_real_lesions_probability:
        chosen = np.flatnonzero(rng.uniform(size=count) < rng.uniform(*config.removed_share)) + 1
        core = np.isin(components, chosen)
        if core.any():
            fringe = ndimage.binary_dilation(core, structure=np.ones((3, 3, 3), bool), iterations=2) & (occupancy > 0.05)
            removed = (core | fringe) & bg.brain
            image = inpaint_lesions(image, removed, bg.white_matter & ~bg.avoid, spacing, rng)
            real &= ~core
            meta_lesions.append({"kind": "real_removed", "components": int(len(chosen)),
                                 "removed_mm3": round(float(core.sum()) * voxel, 1)})
    label = real.copy()

    # Inserted lesions, rendered through this case's slice profile.
    allowed, white_near = insertion_masks(bg)
    occupied = bg.avoid | ndimage.binary_dilation(real, iterations=2)

    def draw_contrast() -> float:
        if config.faint_lesion_share > 0 and rng.uniform() < config.faint_lesion_share:
            return float(rng.uniform(*config.faint_contrast))
        return float(max(1.1, rng.choice(contrasts) * (1 + config.contrast_jitter * rng.normal())))

    def render(placement: Any, blur: float) -> np.ndarray:
        return render_occupancy(placement.fine, config.fine_factor_zyx, spacing, thickness, shift, blur)

    n_inserted = int(rng.integers(config.inserted_lesions[0], config.inserted_lesions[1] + 1))
    for _ in range(n_inserted):
        library = "change" if rng.uniform() < config.change_shape_share else "cross_sectional"
        for _ in range(25):
            candidate = draw_lesion_candidate(rng, bg, shapes[library], config, occupied, allowed, white_near, blurs,
                                              draw_contrast, render)
            if candidate is None:
                continue
            box = candidate.placement.box
            paint_lesion(image, candidate.occupancy, box, bg.nawm_level, candidate.contrast, bg.ventricles)
            label[box] |= candidate.visible
            occupied[box] |= ndimage.binary_dilation(candidate.occupancy >= 0.2, iterations=2)
            meta_lesions.append({"kind": "inserted", "zone": candidate.zone, "shape": candidate.shape.source,
                                 "shape_volume_mm3": round(candidate.shape.volume_mm3, 1),
                                 "labelled_mm3": round(float(candidate.visible.sum()) * voxel, 1),
                                 "contrast": round(candidate.contrast, 3), "blur_sigma_mm": candidate.blur,
                                 "centre_zyx": [round(float(c), 1) for c in candidate.centre]})
            break

    image, look = visit_appearance(image, bg.brain, config, rng)
    label &= bg.brain
    case_id = f"single_{seed}_{index:04d}"
    meta = {"case_id": case_id, "seed": seed, "index": index, "background": name,
            "slice_thickness_mm": round(thickness, 3), "slice_shift_mm": round(shift, 3),
            "real_lesions": int(count), "real_lesions_kept_mm3": round(float(real.sum()) * voxel, 1),
            "inserted": sum(1 for m in meta_lesions if m["kind"] == "inserted"), "lesions": meta_lesions,
            "label_mm3": round(float(label.sum()) * voxel, 1), "appearance": look, "spacing_zyx": list(spacing)}
    case = LongitudinalCase(case_id, None, image, label.astype(np.uint8), bg.geometry, bg.brain.astype(np.uint8))
    return case, meta


# ---------------------------------------------------------------------------------------------------------------
# Cached generation on disk


def cases_dir(root: Path, seed: int, config: SingleVisitConfig) -> Path:
    return root / f"{config.key()}_seed{seed}"


def write_case(case: LongitudinalCase, case_dir: Path, meta: dict[str, Any]) -> None:
    case_dir.mkdir(parents=True, exist_ok=True)
    assert case.label is not None and case.brain_mask is not None
    write_volume(case_dir / CURRENT_FILE, case.current.astype(np.float32), case.geometry)
    write_volume(case_dir / LABEL_FILE, case.label.astype(np.uint8), case.geometry)
    write_volume(case_dir / BRAIN_MASK_FILE, case.brain_mask.astype(np.uint8), case.geometry)
    (case_dir / CASE_META_FILE).write_text(json.dumps(meta, indent=1))  # written last: marks the case complete


def read_case(case_dir: Path) -> tuple[LongitudinalCase, dict[str, Any]]:
    current, geometry = read_volume(case_dir / CURRENT_FILE)
    label, _ = read_volume(case_dir / LABEL_FILE, np.uint8)
    brain, _ = read_volume(case_dir / BRAIN_MASK_FILE, np.uint8)
    meta = json.loads((case_dir / CASE_META_FILE).read_text())
    return LongitudinalCase(meta["case_id"], None, current, label, geometry, brain), meta


def _generate_and_write(seed: int, index: int, config: SingleVisitConfig, folder: Path, shape_cache: Path) -> float:
    start = time.monotonic()
    case, meta = generate_case(seed, index, config, shape_cache)
    meta["seconds"] = round(time.monotonic() - start, 2)
    write_case(case, folder / case.case_id, meta)
    return meta["seconds"]


def generate_cases(root: Path, seed: int, indices: Sequence[int], config: SingleVisitConfig,
                   workers: int = 1) -> tuple[list[Path], dict[str, Any]]:
    """Cases `indices` of series `seed` under `root/<config key>_seed<seed>/`; complete cases already there are
    reused. Returns the case folders and {generated, reused, seconds_per_case}."""
    folder = cases_dir(root, seed, config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"single_visit_format": FORMAT_VERSION, "seed": seed,
                                                    **asdict(config)}, indent=1))
    dirs = [folder / f"single_{seed}_{i:04d}" for i in indices]
    todo = [i for i, d in zip(indices, dirs) if not (d / CASE_META_FILE).is_file()]
    shape_cache = root / "shapes"
    shape_library(config.max_shape_volume_mm3, shape_cache, config.max_shape_files, tuple(config.exclude_shapes_of))
    with WorkerPool(workers) as pool:
        seconds = pool.map(_generate_and_write, [seed] * len(todo), todo, [config] * len(todo),
                           [folder] * len(todo), [shape_cache] * len(todo))
    return dirs, {"generated": len(todo), "reused": len(indices) - len(todo),
                  "seconds_per_case": round(float(np.mean(seconds)), 2) if seconds else None}


# ---------------------------------------------------------------------------------------------------------------
# The real held-out patient


def held_out_patient(spacing_zyx: tuple[float, float, float], thickness_mm: float = 3.0,
                     patient: str = HELD_OUT_PATIENT) -> dict[str, LongitudinalCase]:
    """The held-out cross-sectional patient two ways: `thick_slice` = as the node would see a 2D acquisition
    (the 1 mm MNI FLAIR through a `thickness_mm` slice profile onto the 3 x 1 x 1 mm grid, brain-masked; truth =
    the consensus mask through the same profile > 0.5), and `direct` = the 1 mm MNI FLAIR and consensus mask as
    published (the model resamples it to its spacing and back)."""
    scan = cross_sectional_source(patient)
    grid = scan.geometry.with_spacing(spacing_zyx)
    image, occupancy, brain = thick_slice_scan(scan, grid, thickness_mm)
    thick = LongitudinalCase(f"lesjak_cs_{patient}_thick_slice", None, (image * brain).astype(np.float32),
                             ((occupancy > 0.5) & brain).astype(np.uint8), grid, brain.astype(np.uint8))
    direct = LongitudinalCase(f"lesjak_cs_{patient}_1mm", None, scan.flair.astype(np.float32),
                              scan.lesions.astype(np.uint8), scan.geometry, (scan.flair > 0).astype(np.uint8))
    return {"thick_slice": thick, "direct": direct}


# ---------------------------------------------------------------------------------------------------------------
# Classical baseline: z-scored FLAIR inside the brain


@dataclass(frozen=True)
class ZscoreBaseline:
    threshold: float  # on zscore(FLAIR) inside the brain
    min_lesion_volume_mm3: float
    smoothing_mm: float = 0.0


def zscore_map(case: LongitudinalCase, smoothing_mm: float = 0.0) -> np.ndarray:
    brain = case.brain_mask > 0 if case.brain_mask is not None else case.current > 0
    image = case.current
    if smoothing_mm > 0:
        image = ndimage.gaussian_filter(image, [smoothing_mm / s for s in case.geometry.spacing_zyx])
    return zscore_in_mask(image, brain) * brain


def baseline_detect(case: LongitudinalCase, params: ZscoreBaseline) -> np.ndarray:
    return remove_small_components(zscore_map(case, params.smoothing_mm) >= params.threshold,
                                   case.geometry.spacing_zyx, params.min_lesion_volume_mm3)


BASELINE_THRESHOLDS: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
BASELINE_MIN_VOLUMES_MM3: tuple[float, ...] = (3.0, 10.0, 30.0, 60.0)


def tune_baseline(cases: Sequence[LongitudinalCase], thresholds: Sequence[float] = BASELINE_THRESHOLDS,
                  min_volumes_mm3: Sequence[float] = BASELINE_MIN_VOLUMES_MM3,
                  smoothings_mm: Sequence[float] = (0.0, 1.0)) -> tuple[ZscoreBaseline, list[dict[str, Any]]]:
    """Grid search on `cases` (validation only): best mean F1, then fewer false positives (the pair baseline's
    rule)."""
    table = []
    best: tuple[tuple[float, float], ZscoreBaseline] | None = None
    for smoothing in smoothings_mm:
        maps = [zscore_map(c, smoothing) for c in cases]
        for threshold in thresholds:
            for min_volume in min_volumes_mm3:
                scores = [score_with_bins(c.label, remove_small_components(m >= threshold, c.geometry.spacing_zyx,
                                                                           min_volume), c.geometry.spacing_zyx)
                          for c, m in zip(cases, maps)]
                summary = summarize_with_bins(scores)
                table.append({"threshold": threshold, "min_lesion_volume_mm3": min_volume, "smoothing_mm": smoothing,
                              "mean_f1": summary["mean_f1"], "fp_lesions_per_case": summary["false_positive_lesions_per_case"]})
                key = selection_key(summary)
                if best is None or key > best[0]:
                    best = (key, ZscoreBaseline(threshold, min_volume, smoothing))
    assert best is not None
    return best[1], table


def score_baseline(cases: Sequence[LongitudinalCase], params: ZscoreBaseline) -> dict[str, Any]:
    per_case = {c.case_id: score_with_bins(c.label, baseline_detect(c, params), c.geometry.spacing_zyx)
                for c in cases}
    return {"summary": summarize_with_bins(list(per_case.values())), "cases": per_case}


# ---------------------------------------------------------------------------------------------------------------
# The single-visit model, one resumable command

DATASET_ID = 522
DATASET_NAME = "msnodeSingleVisit"
PREPROCESSING = [
    "no prior and no registration: the one FLAIR of the visit; skull-strip it (training data were brain-only)",
    "resample it to spacing_mm (third-order B-spline)",
    "build the channels in input_channels order (one channel: the FLAIR itself)",
    "crop to the bounding box of the nonzero mask",
    "z-score the channel inside the nonzero mask, 0 outside",
    "sliding window: tiles of patch_size, step half a tile, Gaussian weights sigma = tile / 8, logits averaged with "
    "these weights; images smaller than a tile are zero-padded",
    "softmax over output labels, probability of label 1 resampled (linear) back to the input grid and set to 0 "
    "outside the input's nonzero mask",
    "threshold at default_threshold, drop connected components (6-neighbour) of min_lesion_volume_mm3 or less",
]


@dataclass
class SingleVisitRunConfig:
    work_dir: Path
    export_dir: Path
    seed: int = 0
    network_size: str = "realbg"
    train_cases: int = 48
    validation_cases: int = 6
    test_cases: int = 8
    pretraining: str = "none"  # "inpainting" (self-supervised, on the training cases) or "none"
    pretrain_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=4, iterations_per_epoch=30, val_iterations_per_epoch=1, save_every_epochs=1))
    finetune_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=16, iterations_per_epoch=30, val_iterations_per_epoch=1, f1_every_epochs=2, f1_threshold=0.3,
        foreground_oversampling=0.8, early_stopping_patience=1000, lr_reduce_patience=1000, save_every_epochs=1,
        validate_last_epoch=True))
    thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    min_volumes_mm3: tuple[float, ...] = (3.0, 5.0, 10.0, 15.0, 20.0, 30.0)
    budget_minutes: float = 58.0
    training_share: float = 0.75
    pretrain_share: float = 0.15
    data_workers: int = 1
    model_name: str = "msnode-single-visit"
    model_version: str = "0.1.0"
    training_scale: str = ""
    checkpoint_choice: str = "whole"
    case_config: SingleVisitConfig = field(default_factory=SingleVisitConfig)

    def __post_init__(self) -> None:
        if self.pretraining not in ("inpainting", "none"):
            raise ValueError("pretraining must be 'inpainting' or 'none'")
        if self.checkpoint_choice not in ("whole", "proxy"):
            raise ValueError("checkpoint_choice must be 'whole' or 'proxy'")

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("mean_f1", "mean_sensitivity", "mean_ppv", "mean_dice", "false_positive_lesions_per_case")
    return {k: summary.get(k) for k in keys}


def run_single_visit(config: SingleVisitRunConfig) -> dict[str, Any]:
    """Cases, preprocessing, (pretraining,) fine-tuning, checkpoint and post-processing on validation, export,
    parity, evaluation and the card; resumable (see the module docstring)."""
    import torch

    from msnode_training.export import (
        build_model_card,
        export_onnx,
        load_trained_model,
        onnx_session,
        parity_check,
        validate_model_card,
        write_model_card_markdown,
    )
    from msnode_training.inference import onnx_runner
    from msnode_training.nnunet_data import NETWORK_SIZES, plan_and_preprocess, write_raw_dataset, write_split
    from msnode_training.paths import set_nnunet_environment
    from msnode_training.realbg import (
        Stages,
        choose_checkpoint,
        log,
        probability_of,
        run_training_stage,
        score_cases,
        stage_deadline,
    )
    from msnode_training.search import ValidationCase, search_postprocessing

    started = datetime.now(timezone.utc)
    start_unix = time.time()
    os.environ.setdefault("MSNODE_DATA_WORKERS", str(config.data_workers))
    config.work_dir.mkdir(parents=True, exist_ok=True)
    set_nnunet_environment(config.work_dir / "nnunet")
    stages = Stages(config.work_dir)
    if "start_unix" in stages.done:
        start_unix = float(stages.done["start_unix"])
    else:
        stages.mark("start_unix", start_unix)
    torch.manual_seed(config.seed)
    size = NETWORK_SIZES[config.network_size]
    case_config = replace(config.case_config, spacing_zyx=size.spacing_zyx or config.case_config.spacing_zyx)
    seeds = single_visit_seeds(config.seed)
    root = config.work_dir / "cases"

    # 1. Cases (cached by parameters and seed).
    t = time.monotonic()
    dirs: dict[str, list[Path]] = {}
    generation: dict[str, Any] = {}
    for split, n in (("train", config.train_cases), ("validation", config.validation_cases),
                     ("test", config.test_cases)):
        dirs[split], generation[split] = generate_cases(root, seeds[split], range(n), case_config,
                                                        config.data_workers)
        log(f"cases {split}: {n} ({generation[split]})")
    data_seconds = time.monotonic() - t

    # 2. nnU-Net dataset (train + validation cases), one channel, the realbg network, split.
    if not stages.finished("preprocess"):
        t = time.monotonic()
        cases = (read_case(d)[0] for d in dirs["train"] + dirs["validation"])
        write_raw_dataset(cases, DATASET_ID, DATASET_NAME, case_config.spacing_zyx,
                          "all FLAIR-hyperintense MS lesions on one FLAIR: real background (patient07), real and "
                          "inserted real-shaped lesions", channels=SINGLE_VISIT_CHANNELS, labels=LABELS)
        identifier = plan_and_preprocess(DATASET_ID, size)
        write_split(DATASET_ID, [d.name for d in dirs["train"]], [d.name for d in dirs["validation"]])
        stages.mark("preprocess", {"identifier": identifier, "seconds": round(time.monotonic() - t, 1)})
    identifier = stages.done["preprocess"]["identifier"]
    log(f"preprocessed ({stages.done['preprocess']['seconds']} s); training budget "
        f"{config.budget_minutes * config.training_share:.0f} min from the start")

    # 3. Optional pretraining, then fine-tuning.
    deadline_config = _DeadlineView(config.budget_minutes, config.training_share)
    pretrained = None
    records: dict[str, Any] = {}
    if config.pretraining == "inpainting":
        settings = replace(config.pretrain_settings, seed=config.seed, progress_label="pretrain inpainting",
                           deadline_unix=stage_deadline(start_unix, deadline_config, config.pretrain_share))
        records["pretrain"] = run_training_stage(stages, "pretrain", "inpainting", identifier, settings, None,
                                                 config.work_dir / "pretrained" / "checkpoint.pth", DATASET_ID)
        pretrained = Path(records["pretrain"]["checkpoint"])
    settings = replace(config.finetune_settings, seed=config.seed, progress_label="fine-tune",
                       deadline_unix=stage_deadline(start_unix, deadline_config, 1.0))
    records["finetune"] = run_training_stage(stages, "finetune", "segmentation", identifier, settings, pretrained,
                                             config.work_dir / "finetuned" / "checkpoint.pth", DATASET_ID)

    # 4. Checkpoint and post-processing on the validation cases only.
    validation = [read_case(d)[0] for d in dirs["validation"]]
    if config.checkpoint_choice == "whole":
        model, choice, validation_probabilities, seconds_per_case = choose_checkpoint(
            stages, config, records["finetune"], validation)  # type: ignore[arg-type]
        records["checkpoint_choice"] = stages.done["checkpoint_choice"]
    else:
        model = load_trained_model(Path(records["finetune"]["results_folder"]),
                                   Path(records["finetune"]["checkpoint"]))
        model.network.cpu()
        t = time.monotonic()
        validation_probabilities = [probability_of(c, model) for c in validation]
        seconds_per_case = (time.monotonic() - t) / max(len(validation), 1)
        choice = search_postprocessing(
            [ValidationCase(c.case_id, p, c.label, c.geometry.spacing_zyx)
             for c, p in zip(validation, validation_probabilities)], config.thresholds, config.min_volumes_mm3)
    log(f"post-processing: threshold {choice.threshold}, min volume {choice.min_lesion_volume_mm3} mm3")
    validation_scores = score_cases(validation, validation_probabilities, choice.threshold,
                                    choice.min_lesion_volume_mm3)
    del validation_probabilities

    # 5. Export; parity on the real patient07 scan at 1 mm (the training background, never the test patient).
    config.export_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = config.export_dir / "model.onnx"
    export_onnx(model, onnx_path)
    source = cross_sectional_source(case_config.backgrounds[0].split("/")[1])
    parity_case = LongitudinalCase(f"lesjak_cs_{source.case_id}_1mm", None, source.flair, source.lesions,
                                   source.geometry)
    parity = parity_check(model, onnx_path, parity_case, choice.threshold, choice.min_lesion_volume_mm3)
    log(f"parity: {parity['card_threshold']} passes={parity['passes']}")

    # 6. Held-out generated cases and the real patient26 through ONNX Runtime.
    runner = onnx_runner(onnx_session(onnx_path, threads=1))
    test = [read_case(d)[0] for d in dirs["test"]]
    t = time.monotonic()
    test_scores = score_cases(test, [probability_of(c, model, runner) for c in test], choice.threshold,
                              choice.min_lesion_volume_mm3)
    test_seconds = (time.monotonic() - t) / max(len(test), 1)
    patient = held_out_patient(case_config.spacing_zyx, case_config.background_slice_thickness_mm)
    patient_scores: dict[str, Any] = {}
    patient_seconds: dict[str, float] = {}
    for way, case in patient.items():
        t = time.monotonic()
        probability = probability_of(case, model, runner)
        patient_seconds[way] = round(time.monotonic() - t, 1)
        patient_scores[way] = score_cases([case], [probability], choice.threshold, choice.min_lesion_volume_mm3)
        log(f"{HELD_OUT_PATIENT} {way}: {json.dumps(_figures(patient_scores[way]['summary']))}")
    log(f"held-out generated cases: {json.dumps(_figures(test_scores['summary']))}")

    # 7. Classical baseline, tuned on the same validation cases, scored by the same code.
    t = time.monotonic()
    baseline_params, baseline_table = tune_baseline(validation)
    baseline = {"params": asdict(baseline_params), "validation": score_baseline(validation, baseline_params)["summary"],
                "held_out_generated": score_baseline(test, baseline_params)["summary"],
                **{f"{HELD_OUT_PATIENT}_{way}": score_baseline([c], baseline_params)["summary"]
                   for way, c in patient.items()},
                "seconds": round(time.monotonic() - t, 1)}
    log(f"baseline {baseline_params}: {HELD_OUT_PATIENT} thick-slice "
        f"{json.dumps(_figures(baseline[f'{HELD_OUT_PATIENT}_thick_slice']))}")
    del test

    evaluation = {
        "rules": "MSSEG-2 (animaSegPerfAnalyzer): lesion-wise detection alpha 0.10, beta 0.70, gamma 0.65; "
                 "components of 3 mm3 or less ignored; 6-neighbour connectivity; sensitivity by size pooled over "
                 "lesions; false-positive lesions = predicted components the PPV rule rejects. Truth = ALL lesions.",
        "test_time_mirroring": False,
        f"lesjak_cross_sectional_{HELD_OUT_PATIENT}_thick_slice": patient_scores["thick_slice"]["summary"],
        f"lesjak_cross_sectional_{HELD_OUT_PATIENT}_1mm": patient_scores["direct"]["summary"],
        f"lesjak_cross_sectional_{HELD_OUT_PATIENT}_note":
            "never used for training, validation, tuning or as a shape source; thick_slice = the 1 mm MNI FLAIR "
            f"through a {case_config.background_slice_thickness_mm} mm slice profile onto the 3 x 1 x 1 mm grid "
            "(truth: consensus mask through the same profile > 0.5), 1mm = the MNI FLAIR and consensus mask as "
            "published (the model resamples to its spacing and back)",
        f"lesjak_cross_sectional_{HELD_OUT_PATIENT}_onnx_seconds_python_1_thread": patient_seconds,
        "held_out_generated_cases": test_scores["summary"],
        "held_out_generated_cases_seed": seeds["test"],
        "held_out_generated_onnx_seconds_per_case_1_thread": round(test_seconds, 1),
        "validation_generated_cases_tuning_set": validation_scores["summary"],
        "postprocessing_search": [{k: row.get(k) for k in ("threshold", "min_lesion_volume_mm3", "mean_f1",
                                                            "mean_n_false_positives")} for row in choice.table],
        "classical_baseline_zscore": baseline,
        "classical_baseline_search": baseline_table,
        "onnx_parity": parity,
        "validation_seconds_per_case_torch": round(seconds_per_case, 1),
    }
    provenance = {
        "method": (
            "A 3D PlainConvUNet (16-128 features, strides (1,1,1) (1,2,2) (2,2,2) (2,2,2), patch 16 x 64 x 64 at "
            "3 x 1 x 1 mm, one input channel) trained with nnU-Net v2 as the engine on single-visit cases built on "
            "one real FLAIR (Lesjak cross-sectional patient07) acquired anew through a 3-4 mm slice profile per case: "
            "its own consensus lesions (some removed and inpainted in half the cases) plus real lesion shapes "
            "inserted with measured contrasts and blurs; label = all lesions. "
            + ("Pretraining: context inpainting on the training cases. " if pretrained else "No pretraining. ")
            + "Checkpoint, threshold and minimum lesion volume were chosen on generated validation cases only; the "
            f"held-out generated cases and the real patient {HELD_OUT_PATIENT} were never trained or tuned on."),
        "training_data": {
            "single_visit_cases": {"train": config.train_cases, "validation": config.validation_cases,
                                   "test": config.test_cases, "seeds": seeds, "case_config": asdict(case_config),
                                   "case_config_key": case_config.key(), "generation": generation},
            "backgrounds": list(case_config.backgrounds),
            "refused_backgrounds": REFUSED_BACKGROUNDS,
            "shapes": "lesion-masks/longitudinal-change (patient03 excluded) and lesion-masks/cross-sectional-mni "
                      f"(without {list(case_config.exclude_shapes_of)})",
            "held_out": f"lesjak-cross-sectional/{HELD_OUT_PATIENT} (test only); lesjak-longitudinal/patient03 "
                        "(never used)",
            "citation": DATA_CITATION,
        },
        "training_scale": config.training_scale,
        "engine": "nnU-Net v2 (planner, augmentation, Dice+CE loss, deep supervision) with msnode trainer classes",
        "network": {"size": config.network_size, "features_per_stage": list(size.features_per_stage),
                    "strides": [list(s) for s in size.strides], "plans_identifier": identifier},
        "pretraining_strategy": "inpainting on the training cases (self-supervised)" if pretrained else "none",
        "finetuning_strategy": config.finetune_settings.strategy,
        "stages": records,
        "seed": config.seed,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "device": "cpu",
                    "torch_threads": torch.get_num_threads()},
        "date": started.isoformat(timespec="seconds"),
        "config": config.as_dict(),
        "seconds": {"case_generation": round(data_seconds, 1), "preprocess": stages.done["preprocess"]["seconds"],
                    **{k: v["seconds"] for k, v in records.items() if isinstance(v, dict) and "seconds" in v},
                    "total_since_first_start": round(time.time() - start_unix, 1)},
    }
    card = build_model_card(config.model_name, config.model_version, onnx_path, model, choice.threshold,
                            choice.min_lesion_volume_mm3, provenance, evaluation,
                            channel_descriptions=SINGLE_VISIT_CHANNEL_DESCRIPTIONS, preprocessing=PREPROCESSING)
    problems = validate_model_card(card, config.export_dir) + card_contract_problems(card)
    if problems:
        raise ValueError(f"model card invalid: {problems}")
    (config.export_dir / "model_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    write_model_card_markdown(card, config.export_dir / "MODEL_CARD.md")
    result = {"export_dir": str(config.export_dir), "threshold": choice.threshold,
              "min_lesion_volume_mm3": choice.min_lesion_volume_mm3,
              "validation": validation_scores["summary"], "held_out_generated": test_scores["summary"],
              HELD_OUT_PATIENT: {k: v["summary"] for k, v in patient_scores.items()},
              "baseline": baseline, "parity": parity, "onnx_mb": round(onnx_path.stat().st_size / 1e6, 2),
              "seconds_since_first_start": round(time.time() - start_unix, 1)}
    (config.work_dir / "single_visit_result.json").write_text(json.dumps(result, indent=2, default=str))
    log(f"done in {result['seconds_since_first_start']:.0f} s since the first start")
    return result


@dataclass
class _DeadlineView:
    """What `realbg.stage_deadline` reads from a config."""

    budget_minutes: float
    training_share: float


CARD_CONTRACT: dict[str, Any] = {"name": "msnode-single-visit", "input_channels": ["current"],
                                 "output_labels": {"0": "background", "1": "lesion"}, "output_activation": "softmax"}


def card_contract_problems(card: dict[str, Any]) -> list[str]:
    """What the node relies on in a single-visit card, besides `export.validate_model_card`."""
    problems = [f"{key} must be {value!r}, is {card.get(key)!r}" for key, value in CARD_CONTRACT.items()
                if card.get(key) != value]
    normalization = card.get("normalization", {})
    if normalization.get("scheme") != "zscore" or normalization.get("use_mask") is not True:
        problems.append("normalization must be zscore with use_mask")
    steps = card.get("preprocessing", [])
    if not steps or not steps[0].startswith("no prior and no registration") or \
            any("align" in step for step in steps):
        problems.append("preprocessing must describe single-visit inputs (no prior, no registration)")
    return problems


def parse_args(argv: list[str] | None = None) -> SingleVisitRunConfig:
    from msnode_training.realbg import add_run_arguments, run_fields

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "single_visit", "single-visit")
    parser.set_defaults(name="msnode-single-visit", pretraining="none", lr_schedule="time", validation_mode="crops",
                        crop_background_boxes=8, thresholds=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                        min_volumes=[3.0, 5.0, 10.0, 15.0, 20.0, 30.0], budget_minutes=58.0, pretrain_share=0.15,
                        threads=1)
    parser.add_argument("--train-cases", type=int, default=48)
    parser.add_argument("--validation-cases", type=int, default=6)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--foreground-oversampling", type=float, default=0.8)
    parser.add_argument("--inserted-lesions", type=int, nargs=2, default=[0, 10], metavar=("MIN", "MAX"))
    parser.add_argument("--max-shape-files", type=int, default=0, help="0: every lesion-mask file (tests: a few)")
    args = parser.parse_args(argv)
    defaults = SingleVisitRunConfig(Path("."), Path("."))
    return SingleVisitRunConfig(
        **run_fields(args, defaults.pretrain_settings, defaults.finetune_settings,
                     foreground_oversampling=args.foreground_oversampling),
        train_cases=args.train_cases, validation_cases=args.validation_cases, test_cases=args.test_cases,
        case_config=SingleVisitConfig(inserted_lesions=(args.inserted_lesions[0], args.inserted_lesions[1]),
                                      max_shape_files=args.max_shape_files))


def main(argv: list[str] | None = None) -> None:
    run_single_visit(parse_args(argv))


if __name__ == "__main__":
    main()
