import json

import numpy as np

from msnode_training.nnunet_data import (
    NETWORK_SIZES,
    resample_case,
    sized_plans,
    total_stride,
    write_raw_dataset,
)
from msnode_training.paths import set_nnunet_environment
from msnode_training.readers import LongitudinalCase
from msnode_training.volumes import Geometry, read_volume


def planner_like_plans() -> dict:
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [80, 96, 80], "batch_size": 2,
        "spacing": [2.0, 2.0, 2.0], "normalization_schemes": ["ZScoreNormalization"] * 3,
        "use_mask_for_norm": [False] * 3,
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
                                         "kernel_sizes": [[3, 3, 3]] * 5, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4,
                                         "n_conv_per_stage": [2] * 5, "n_conv_per_stage_decoder": [2] * 4}},
    }
    return {"plans_name": "nnUNetPlans", "configurations": {"2d": {}, "3d_fullres": configuration}}


def test_tiny_plans_replace_the_network_and_force_masked_zscore() -> None:
    original = planner_like_plans()
    plans = sized_plans(original, NETWORK_SIZES["tiny"])
    configuration = plans["configurations"]["3d_fullres"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    assert plans["plans_name"] == "msnodePlans_tiny"
    assert configuration["data_identifier"] == "msnodePlans_tiny_3d_fullres"
    assert configuration["use_mask_for_norm"] == [True, True, True]
    kwargs = configuration["architecture"]["arch_kwargs"]
    assert kwargs["features_per_stage"] == [4, 8, 16, 32] and kwargs["n_stages"] == 4
    assert len(kwargs["n_conv_per_stage_decoder"]) == 3
    assert total_stride(configuration) == [8, 8, 8]
    assert all(p % s == 0 for p, s in zip(configuration["patch_size"], total_stride(configuration)))
    assert original["configurations"]["3d_fullres"]["patch_size"] == [80, 96, 80]  # input left alone


def test_default_size_keeps_the_planned_network() -> None:
    plans = sized_plans(planner_like_plans(), NETWORK_SIZES["nnunet_default"])
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][-1] == 320


def small_case(case_id: str, spacing: tuple[float, float, float]) -> LongitudinalCase:
    rng = np.random.default_rng(0)
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (8, 12, 12))
    prior = np.zeros(geometry.shape_zyx, dtype=np.float32)
    prior[2:6, 3:9, 3:9] = rng.uniform(100, 200, (4, 6, 6))
    current = prior * 1.1
    label = np.zeros(geometry.shape_zyx, dtype=np.uint8)
    label[3:5, 4:8, 4:8] = 1
    return LongitudinalCase(case_id, prior, current, label, geometry)


def test_raw_dataset_layout(tmp_path) -> None:
    set_nnunet_environment(tmp_path)
    folder = write_raw_dataset([small_case("a", (2.0, 2.0, 2.0)), small_case("b", (2.0, 2.0, 2.0))], 990, "unit")
    assert folder.name == "Dataset990_unit"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"{c}_{i:04d}.nii.gz" for c in "ab" for i in range(3)]
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "prior", "1": "current", "2": "current_minus_prior"}
    assert dataset["labels"] == {"background": 0, "new_or_enlarging_lesion": 1}
    assert dataset["numTraining"] == 2
    label, geometry = read_volume(folder / "labelsTr" / "a.nii.gz", np.uint8)
    assert label.sum() == 32 and geometry.spacing_zyx == (2.0, 2.0, 2.0)


def test_resampling_to_a_coarser_grid_keeps_the_field_of_view() -> None:
    case = resample_case(small_case("a", (1.0, 1.0, 1.0)), (2.0, 2.0, 2.0))
    assert case.prior.shape == (4, 6, 6) and case.label.shape == (4, 6, 6)
    assert case.geometry.spacing_zyx == (2.0, 2.0, 2.0)
    assert case.label.sum() > 0
