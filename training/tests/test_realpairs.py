"""Real-background pairs and the subtraction baseline: small and fast (one real background, a few shape files)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from msnode_training.baseline import BaselineParams, detect, score_with_bins, summarize_with_bins, tune
from msnode_training.readers import LongitudinalCase
from msnode_training.realpairs import (
    RealPairConfig,
    generate_pair,
    generate_pairs,
    lesion_mask_files,
    load_background,
    pairs_dir,
    read_pair,
    render_occupancy,
)
from msnode_training.volumes import Geometry

BACKGROUND = "lesjak-cross-sectional/patient07"
SMALL = RealPairConfig(backgrounds=(BACKGROUND,), max_shape_files=3)


@pytest.fixture(scope="module")
def inserted_pair() -> tuple[LongitudinalCase, dict[str, Any], RealPairConfig]:
    """New, enlarging and unchanged inserted lesions only, no misalignment, so that each can be checked."""
    config = dataclasses.replace(SMALL, new_lesions=(3, 3), enlarging_lesions=(1, 1), unchanged_lesions=(2, 2),
                                 no_new_lesion_probability=0.0, remove_real_lesions_probability=0.0,
                                 resolve_real_lesion_probability=0.0, max_misalignment_mm=0.0,
                                 noise_fraction=(0.0, 0.0), bias_strength=0.0, gamma_range=(1.0, 1.0),
                                 intensity_scale=(1.0, 1.0))
    case, meta = generate_pair(3, 0, config)
    return case, meta, config


def test_same_seed_same_pair_and_another_index_differs() -> None:
    first, meta = generate_pair(1, 0, SMALL)
    again, meta_again = generate_pair(1, 0, SMALL)
    other, _ = generate_pair(1, 1, SMALL)
    np.testing.assert_array_equal(first.prior, again.prior)
    np.testing.assert_array_equal(first.current, again.current)
    np.testing.assert_array_equal(first.label, again.label)
    assert meta == meta_again
    assert not np.array_equal(first.current, other.current)
    assert first.geometry.spacing_zyx == pytest.approx((3.0, 1.0, 1.0))


def test_inserted_lesions_are_in_white_matter_and_the_truth_is_new_and_enlarging_only(
        inserted_pair: tuple[LongitudinalCase, dict[str, Any], RealPairConfig]) -> None:
    case, meta, config = inserted_pair
    background = load_background(BACKGROUND, config.spacing_zyx, config.background_slice_thickness_mm)
    voxel = float(np.prod(case.geometry.spacing_zyx))
    label = case.label > 0
    kinds = [lesion["kind"] for lesion in meta["lesions"]]
    assert kinds.count("new") >= 2 and "unchanged" in kinds and any(k.startswith("enlarging") for k in kinds)
    # Inside the brain, away from the ventricles, and (allowing the juxtacortical border) in white matter.
    assert np.all(case.brain_mask[label] > 0)
    assert not np.any(label & background.ventricles)
    near_white = ndimage.binary_dilation(background.white_matter, structure=np.ones((1, 3, 3), bool))
    assert near_white[label].mean() > 0.8
    # The truth is exactly the labelled part of the new and enlarging lesions, and nothing of the unchanged ones.
    labelled = sum(lesion["labelled_mm3"] for lesion in meta["lesions"] if lesion["kind"] != "unchanged")
    assert label.sum() * voxel == pytest.approx(labelled)
    for lesion in meta["lesions"]:
        if "centre_zyx" not in lesion:
            continue
        z, y, x = (int(round(c)) for c in lesion["centre_zyx"])
        around = (slice(z - 1, z + 2), slice(y - 1, y + 2), slice(x - 1, x + 2))  # the slice offset moves it
        if lesion["kind"] == "unchanged":
            assert not label[around].any()
            # present on both visits: brighter than the local white matter on each
            level = background.nawm_level[z, y, x]
            assert case.current[around].max() > level * 1.1 and case.prior[around].max() > level * 1.1
        elif lesion["kind"] == "new":
            assert label[around].any()
    # New tissue is brighter on the current than on the prior.
    rise = case.current - case.prior
    assert rise[label].mean() > 0.1 * np.median(case.current[case.brain_mask > 0])


def test_a_thick_slice_profile_lowers_the_contrast_of_a_small_lesion() -> None:
    spacing, factor = (3.0, 1.0, 1.0), (6, 2, 2)
    shape = (5 * factor[0], 15 * factor[1], 15 * factor[2])
    axes = [(np.arange(n) + 0.5) * s / f for n, s, f in zip(shape, spacing, factor)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    distance = np.sqrt((zz - 7.5) ** 2 + (yy - 7.5) ** 2 + (xx - 7.5) ** 2)

    def peak(diameter_mm: float, thickness_mm: float) -> float:
        fine = (distance <= diameter_mm / 2).astype(np.float32)
        return float(render_occupancy(fine, factor, spacing, thickness_mm, 0.0, 0.5).max())

    assert peak(10.0, 4.0) > 0.95  # a large lesion keeps its full contrast
    small_thick = peak(2.5, 4.0)
    # A 2.5 mm lesion centred in a 4 mm slice fills at most its chord's share of the slab (2.5 / 4), less after
    # the in-plane blur and pixel averaging, but is not lost either.
    assert 0.3 < small_thick <= 2.5 / 4.0 + 0.02
    assert peak(2.5, 1.0) > small_thick + 0.2  # a thin slice sees more of it


def test_pairs_are_cached_by_a_key_of_the_parameters(tmp_path: Path) -> None:
    dirs, info = generate_pairs(tmp_path, 5, [0], SMALL)
    assert info["generated"] == 1 and info["reused"] == 0
    stamp = (dirs[0] / "pair.json").stat().st_mtime_ns
    again, info_again = generate_pairs(tmp_path, 5, [0], SMALL)
    assert again == dirs and info_again == {"generated": 0, "reused": 1, "seconds_per_pair": None}
    assert (dirs[0] / "pair.json").stat().st_mtime_ns == stamp
    case, meta = read_pair(dirs[0])
    fresh, _ = generate_pair(5, 0, SMALL)
    np.testing.assert_array_equal(case.label, fresh.label)
    np.testing.assert_allclose(case.current, fresh.current)
    other = dataclasses.replace(SMALL, slice_thickness_mm=(4.0, 4.0))
    assert pairs_dir(tmp_path, 5, other) != pairs_dir(tmp_path, 5, SMALL)


def test_patient03_is_never_a_background_nor_a_shape_source() -> None:
    with pytest.raises(ValueError):
        RealPairConfig(backgrounds=("lesjak-longitudinal/patient03/pair",))
    assert not any("patient03" in str(p) for p in lesion_mask_files()["change"])


def tiny_case(rng: np.random.Generator) -> tuple[LongitudinalCase, np.ndarray]:
    shape = (12, 40, 40)
    spacing = (3.0, 1.0, 1.0)
    brain = np.zeros(shape, np.uint8)
    brain[1:-1, 4:-4, 4:-4] = 1
    anatomy = 100 + 5 * ndimage.gaussian_filter(rng.normal(size=shape), 2)
    prior = (anatomy + rng.normal(0, 2, shape)) * brain
    current = (anatomy + rng.normal(0, 2, shape)) * brain
    truth = np.zeros(shape, np.uint8)
    truth[5:7, 18:22, 18:22] = 1  # 32 voxels of 3 mm3: 96 mm3
    current = current + 40 * truth
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), shape)
    return LongitudinalCase("tiny", prior.astype(np.float32), current.astype(np.float32), truth, geometry,
                            brain), truth


def test_the_subtraction_baseline_finds_an_obvious_lesion() -> None:
    case, truth = tiny_case(np.random.default_rng(0))
    params = BaselineParams(threshold=3.0, min_volume_mm3=10.0, smoothing_mm=0.0)
    prediction = detect(case.prior, case.current, case.brain_mask, case.geometry.spacing_zyx, params)
    scored = score_with_bins(truth, prediction, case.geometry.spacing_zyx)
    assert scored["f1"] == 1.0 and scored["false_positive_lesions"] == 0
    summary = summarize_with_bins([scored])
    assert summary["sensitivity_by_size_mm3"]["30-100"] == {"lesions": 1, "detected": 1, "sensitivity": 1.0}
    chosen, table = tune([case], [0.5, 3.0], [3.0, 10.0], [0.0])
    assert len(table) == 4 and chosen.threshold == 3.0
