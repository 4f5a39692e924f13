"""nnU-Net v2 raw datasets from our cases, planning with nnU-Net's planner, and reduced network plans.

Call `paths.set_nnunet_environment` first: nnU-Net reads its folders from the environment.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from msnode_training.channels import INPUT_CHANNELS, model_input_channels
from msnode_training.paths import data_workers, worker_pool
from msnode_training.readers import LongitudinalCase
from msnode_training.volumes import resample_array, write_volume

CONFIGURATION = "3d_fullres"
LABELS = {"background": 0, "new_or_enlarging_lesion": 1}


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def resample_case(case: LongitudinalCase, spacing_zyx: tuple[float, float, float]) -> LongitudinalCase:
    """The case on a grid of `spacing_zyx` covering the same field of view (labels by linear > 0.5)."""
    target = case.geometry.with_spacing(spacing_zyx)
    if target.shape_zyx == case.geometry.shape_zyx and np.allclose(target.spacing_zyx, case.geometry.spacing_zyx):
        return case
    images = [None if v is None else np.clip(resample_array(v.astype(np.float32), case.geometry, target,
                                                             sitk.sitkBSpline), 0, None)
              for v in (case.prior, case.current)]
    label = None
    if case.label is not None:
        label = (resample_array(case.label.astype(np.float32), case.geometry, target) > 0.5).astype(np.uint8)
    return LongitudinalCase(case.case_id, images[0], images[1], label, target)


def write_raw_case(case: LongitudinalCase, dataset_dir: Path,
                   spacing_zyx: tuple[float, float, float] | None = None) -> str:
    """One case's channels (three, or one for a single-visit case) and label, resampled to `spacing_zyx` first
    when given; returns its id."""
    if spacing_zyx is not None:
        case = resample_case(case, spacing_zyx)
    channels = model_input_channels(case.prior, case.current)
    for index, channel in enumerate(channels):
        write_volume(dataset_dir / "imagesTr" / f"{case.case_id}_{index:04d}.nii.gz", channel, case.geometry)
    label = case.label if case.label is not None else np.zeros(case.current.shape, dtype=np.uint8)
    write_volume(dataset_dir / "labelsTr" / f"{case.case_id}.nii.gz", label.astype(np.uint8), case.geometry)
    return case.case_id


def write_raw_dataset(cases: Iterable[LongitudinalCase], dataset_id: int, name: str,
                      spacing_zyx: tuple[float, float, float] | None = None,
                      description: str = "", channels: Sequence[str] = INPUT_CHANNELS,
                      labels: dict[str, int] | None = None) -> Path:
    """Write cases as nnU-Net v2 raw dataset `dataset_id` (imagesTr, labelsTr, dataset.json); returns its folder.
    `channels` names the channels the cases make (`SINGLE_VISIT_CHANNELS` for single-visit cases); `labels`
    defaults to LABELS."""
    dataset_dir = Path(os.environ["nnUNet_raw"]) / dataset_name(dataset_id, name)
    # A dataset id is rewritten whole: leftovers of an earlier run would otherwise join the planning.
    for stale in (dataset_dir, Path(os.environ["nnUNet_preprocessed"]) / dataset_dir.name):
        shutil.rmtree(stale, ignore_errors=True)
    with worker_pool() as pool:  # one worker streams the cases, so a large real dataset is never all in memory
        case_ids = pool.map(write_raw_case, cases, repeat(dataset_dir), repeat(spacing_zyx))
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique within a dataset")
    dataset_json = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": dict(LABELS if labels is None else labels),
        "numTraining": len(case_ids),
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "description": description,
        "msnode_cases": case_ids,
    }
    (dataset_dir / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return dataset_dir


@dataclass(frozen=True)
class NetworkSize:
    """A PlainConvUNet size: features per stage (doubling), stride-2 stages, patch and batch size."""

    name: str
    features_per_stage: tuple[int, ...]
    patch_size: tuple[int, int, int]
    batch_size: int = 2
    # Per-stage (z, y, x) strides; empty: stride 1 then 2 x 2 x 2 at every later stage. Anisotropic grids (3 mm
    # slices, 1 mm in plane) keep z at full resolution in the first downsampling, as nnU-Net's planner does.
    strides: tuple[tuple[int, int, int], ...] = ()
    # Forces the plan's spacing (z, y, x) when set; otherwise the planner's (the median of the data).
    spacing_zyx: tuple[float, float, float] | None = None

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)


NETWORK_SIZES = {
    "tiny": NetworkSize("tiny", (4, 8, 16, 32), (32, 48, 48), 2),
    # The CPU model: 1.4 M parameters; 2.1 s per Lesjak case at 2 mm on 2 cores (ONNX Runtime, no mirroring).
    "compact": NetworkSize("compact", (16, 32, 64, 128), (32, 48, 48), 2),
    "small": NetworkSize("small", (16, 32, 64, 128, 256), (64, 96, 96), 2),
    # Real-background model on the 3 x 1 x 1 mm (z, y, x) pair grid: the compact network with an in-plane-only first
    # downsampling (total stride 4 x 8 x 8); a 16 x 64 x 64 tile covers 48 x 64 x 64 mm.
    "realbg": NetworkSize("realbg", (16, 32, 64, 128), (16, 64, 64), 2,
                          ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)), (3.0, 1.0, 1.0)),
    "nnunet_default": NetworkSize("nnunet_default", (), (0, 0, 0), 0),  # the planner's own network, unchanged
}


def plans_identifier(size: NetworkSize) -> str:
    return f"msnodePlans_{size.name}"


def sized_plans(plans: dict, size: NetworkSize) -> dict:
    """The planner's plans with only 3d_fullres, z-score inside the nonzero mask for every channel (the node does
    the same), and for a non-default size the PlainConvUNet and patch replaced by `size`."""
    plans = copy.deepcopy(plans)
    identifier = plans_identifier(size)
    plans["plans_name"] = identifier
    configuration = plans["configurations"][CONFIGURATION]
    plans["configurations"] = {CONFIGURATION: configuration}
    configuration["data_identifier"] = f"{identifier}_{CONFIGURATION}"
    n_channels = len(configuration["normalization_schemes"])
    configuration["normalization_schemes"] = ["ZScoreNormalization"] * n_channels
    configuration["use_mask_for_norm"] = [True] * n_channels
    if size.n_stages:
        kwargs = configuration["architecture"]["arch_kwargs"]
        kwargs["n_stages"] = size.n_stages
        kwargs["features_per_stage"] = list(size.features_per_stage)
        kwargs["kernel_sizes"] = [[3, 3, 3]] * size.n_stages
        kwargs["strides"] = [list(s) for s in size.strides] if size.strides else \
            [[1, 1, 1]] + [[2, 2, 2]] * (size.n_stages - 1)
        if len(kwargs["strides"]) != size.n_stages:
            raise ValueError(f"{size.name}: {len(kwargs['strides'])} strides for {size.n_stages} stages")
        kwargs["n_conv_per_stage"] = [2] * size.n_stages
        kwargs["n_conv_per_stage_decoder"] = [2] * (size.n_stages - 1)
        configuration["patch_size"] = list(size.patch_size)
        configuration["batch_size"] = size.batch_size
    if size.spacing_zyx is not None:
        configuration["spacing"] = [float(v) for v in size.spacing_zyx]
    return plans


def total_stride(configuration: dict) -> list[int]:
    strides = np.array(configuration["architecture"]["arch_kwargs"]["strides"])
    return [int(v) for v in np.prod(strides, axis=0)]


def preprocessed_dir(dataset_id: int) -> Path:
    from nnunetv2.utilities.dataset_name_id_conversion import (
        maybe_convert_to_dataset_name,
    )

    return Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(dataset_id)


def plan_and_preprocess(dataset_id: int, size: NetworkSize) -> str:
    """nnU-Net's fingerprint and planner, then our sized plans, then preprocessing; returns the plans identifier."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess_dataset,
    )

    extract_fingerprints([dataset_id], num_processes=data_workers(), check_dataset_integrity=True, verbose=False,
                         show_progress_bar=False)
    plan_experiments([dataset_id])
    folder = preprocessed_dir(dataset_id)
    planned = json.loads((folder / "nnUNetPlans.json").read_text())
    identifier = plans_identifier(size)
    (folder / f"{identifier}.json").write_text(json.dumps(sized_plans(planned, size), indent=2))
    preprocess_dataset(dataset_id, identifier, (CONFIGURATION,), (data_workers(),), verbose=False,
                       show_progress_bar=False)
    return identifier


def transfer_plans_and_preprocess(source_dataset_id: int, target_dataset_id: int, identifier: str,
                                  fingerprint: bool = True) -> None:
    """Plans transfer for fine-tuning: the target is preprocessed with the pretraining plans (same network).
    `fingerprint=False` only checks the dataset's integrity: nnU-Net's fingerprint needs labelled foreground, which
    unlabeled (inpainting) datasets lack, and neither the transfer nor z-score preprocessing reads it; the
    source's fingerprint is copied instead (the trainer keeps a copy with its results)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        preprocess_dataset,
    )
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets,
    )

    if fingerprint:
        extract_fingerprints([target_dataset_id], num_processes=data_workers(), check_dataset_integrity=True,
                             verbose=False, show_progress_bar=False)
    else:
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

        verify_dataset_integrity(str(Path(os.environ["nnUNet_raw"]) / preprocessed_dir(target_dataset_id).name),
                                 data_workers())
        preprocessed_dir(target_dataset_id).mkdir(parents=True, exist_ok=True)
        # nnU-Net's trainer copies the fingerprint next to its results: use the one the plans were made from.
        shutil.copyfile(preprocessed_dir(source_dataset_id) / "dataset_fingerprint.json",
                        preprocessed_dir(target_dataset_id) / "dataset_fingerprint.json")
    move_plans_between_datasets(source_dataset_id, target_dataset_id, identifier, identifier)
    # nnU-Net's planner copies dataset.json next to the plans; a transfer skips the planner, so copy it here.
    target = preprocessed_dir(target_dataset_id)
    raw = Path(os.environ["nnUNet_raw"]) / target.name / "dataset.json"
    (target / "dataset.json").write_text(raw.read_text())
    preprocess_dataset(target_dataset_id, identifier, (CONFIGURATION,), (data_workers(),), verbose=False,
                       show_progress_bar=False)


def write_splits(dataset_id: int, folds: Sequence[tuple[Sequence[str], Sequence[str]]]) -> None:
    """splits_final.json with our own (train, validation) folds instead of nnU-Net's random 5."""
    (preprocessed_dir(dataset_id) / "splits_final.json").write_text(
        json.dumps([{"train": sorted(train), "val": sorted(validation)} for train, validation in folds], indent=2))


def write_split(dataset_id: int, train: list[str], validation: list[str]) -> None:
    """Fold 0 only: one train/validation split."""
    write_splits(dataset_id, [(train, validation)])


def load_plans(dataset_id: int, identifier: str) -> dict:
    return json.loads((preprocessed_dir(dataset_id) / f"{identifier}.json").read_text())
