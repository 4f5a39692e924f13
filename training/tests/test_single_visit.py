"""Single-visit cases, the z-score baseline and the single-visit card contract: small and fast (the one real
background, a few shape files)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from msnode_training.channels import model_input_channels
from msnode_training.paths import models_dir
from msnode_training.realpairs import cross_sectional_source, lesion_mask_files, load_background, thick_slice_scan
from msnode_training.realpairs import shifted_slices
from msnode_training.single_visit import (
    CARD_CONTRACT,
    PREPROCESSING,
    SingleVisitConfig,
    baseline_detect,
    card_contract_problems,
    generate_case,
    generate_cases,
    read_case,
    single_visit_seeds,
    tune_baseline,
)

SMALL = SingleVisitConfig(max_shape_files=3)


def test_same_seed_same_case_and_another_index_differs() -> None:
    first, meta = generate_case(4, 0, SMALL)
    again, meta_again = generate_case(4, 0, SMALL)
    other, _ = generate_case(4, 1, SMALL)
    assert first.prior is None
    np.testing.assert_array_equal(first.current, again.current)
    np.testing.assert_array_equal(first.label, again.label)
    assert meta == meta_again
    assert not np.array_equal(first.current, other.current)
    assert first.geometry.spacing_zyx == pytest.approx((3.0, 1.0, 1.0))
    assert model_input_channels(first.prior, first.current).shape == (1, *first.current.shape)


def real_lesions_of(config: SingleVisitConfig, meta: dict) -> np.ndarray:
    """The background's real lesions as this case acquired them (same thickness and slice shift)."""
    bg = load_background(config.backgrounds[0], config.spacing_zyx, config.background_slice_thickness_mm)
    scan = cross_sectional_source(config.backgrounds[0].split("/")[1])
    _, occupancy, _ = thick_slice_scan(scan, shifted_slices(bg.geometry, meta["slice_shift_mm"]),
                                       meta["slice_thickness_mm"])
    return (occupancy > 0.5) & bg.brain


def test_label_holds_every_real_lesion_plus_the_inserted_ones() -> None:
    config = dataclasses.replace(SMALL, inserted_lesions=(4, 4), remove_real_lesions_probability=0.0,
                                 noise_fraction=(0.0, 0.0), bias_strength=0.0, gamma_range=(1.0, 1.0),
                                 intensity_scale=(1.0, 1.0))
    case, meta = generate_case(6, 0, config)
    real = real_lesions_of(config, meta)
    label = case.label > 0
    assert real.sum() > 100 and np.all(label[real])  # patient07's consensus lesions are all labelled
    inserted = [m for m in meta["lesions"] if m["kind"] == "inserted"]
    assert len(inserted) >= 3 and meta["inserted"] == len(inserted)
    extra = label & ~real
    voxel = float(np.prod(case.geometry.spacing_zyx))
    assert extra.sum() * voxel == pytest.approx(sum(m["labelled_mm3"] for m in inserted), rel=0.01)
    for lesion in inserted:  # bright where inserted: above the brain's median
        centre = tuple(int(round(c)) for c in lesion["centre_zyx"])
        assert case.current[centre] > np.median(case.current[case.brain_mask > 0])


def test_removed_real_lesions_leave_the_label_and_the_image() -> None:
    config = dataclasses.replace(SMALL, inserted_lesions=(0, 0), remove_real_lesions_probability=1.0,
                                 removed_share=(0.6, 0.6), noise_fraction=(0.0, 0.0), bias_strength=0.0,
                                 gamma_range=(1.0, 1.0), intensity_scale=(1.0, 1.0))
    case, meta = generate_case(6, 1, config)
    real = real_lesions_of(config, meta)
    removed = real & ~(case.label > 0)
    assert meta["lesions"][0]["kind"] == "real_removed" and removed.sum() > 0
    assert (case.label > 0).sum() < real.sum()
    assert not np.any(case.label[~real])  # nothing inserted
    bg = load_background(config.backgrounds[0], config.spacing_zyx, config.background_slice_thickness_mm)
    assert np.median(case.current[removed] / bg.nawm_level[removed]) < 1.15  # inpainted to white matter


@pytest.mark.parametrize("source", ["lesjak-cross-sectional/patient26", "lesjak-longitudinal/patient01/study1",
                                    "lesjak-longitudinal/patient01/pair", "lesjak-longitudinal/patient03/pair"])
def test_held_out_and_partly_labelled_backgrounds_are_refused(source: str) -> None:
    with pytest.raises(ValueError, match="may not be a single-visit background"):
        SingleVisitConfig(backgrounds=(source,))


def test_held_out_patients_are_not_shape_sources() -> None:
    with pytest.raises(ValueError, match="must stay excluded"):
        SingleVisitConfig(exclude_shapes_of=())
    files = lesion_mask_files(0, SMALL.exclude_shapes_of)["cross_sectional"]
    assert files and not any(p.name.startswith(("patient26_", "patient03_")) for p in files)
    assert any(p.name.startswith("patient26_") for p in lesion_mask_files(0)["cross_sectional"])


def test_case_streams_are_disjoint_and_cases_are_cached(tmp_path: Path) -> None:
    seeds = single_visit_seeds(0)
    assert len(set(seeds.values())) == 3 and not set(seeds.values()) & set(single_visit_seeds(1).values())
    dirs, record = generate_cases(tmp_path, seeds["validation"], range(2), SMALL)
    assert record["generated"] == 2
    again, record_again = generate_cases(tmp_path, seeds["validation"], range(2), SMALL)
    assert again == dirs and record_again["reused"] == 2
    case, meta = read_case(dirs[1])
    fresh, _ = generate_case(seeds["validation"], 1, SMALL)
    np.testing.assert_allclose(case.current, fresh.current, rtol=1e-6)
    np.testing.assert_array_equal(case.label, fresh.label)
    assert case.prior is None and meta["case_id"] == fresh.case_id


def test_zscore_baseline_is_tuned_and_finds_bright_lesions() -> None:
    case, _ = generate_case(4, 0, SMALL)
    params, table = tune_baseline([case], thresholds=(2.0, 3.0), min_volumes_mm3=(10.0,), smoothings_mm=(0.0,))
    assert len(table) == 2 and params.threshold in (2.0, 3.0)
    prediction = baseline_detect(case, params)
    assert prediction.any() and np.any(prediction & (case.label > 0))


def contract_card() -> dict:
    return {**CARD_CONTRACT, "version": "0.1.0", "normalization": {"scheme": "zscore", "use_mask": True},
            "preprocessing": list(PREPROCESSING)}


def test_card_contract() -> None:
    assert card_contract_problems(contract_card()) == []
    assert card_contract_problems({**contract_card(), "input_channels": ["prior", "current"]})
    assert card_contract_problems({**contract_card(), "output_labels": {"0": "background",
                                                                         "1": "new_or_enlarging_lesion"}})
    two_visit = ["align the prior to the current visit (rigid) on one grid", *PREPROCESSING[1:]]
    assert card_contract_problems({**contract_card(), "preprocessing": two_visit})


def test_exported_single_visit_model_keeps_the_contract() -> None:
    from msnode_training.export import validate_model_card

    folder = models_dir() / "single-visit"
    card = json.loads((folder / "model_card.json").read_text())
    assert validate_model_card(card, folder) == []
    assert card_contract_problems(card) == []
    assert card["version"] == "0.1.0"
    realbg = json.loads((models_dir() / "realbg" / "model_card.json").read_text())
    assert set(realbg) == set(card)
    assert card["spacing_mm"] == [3.0, 1.0, 1.0] and card["patch_size"] == [16, 64, 64]
    assert card["evaluation"]["onnx_parity"]["passes"]
    assert (folder / "model.onnx").stat().st_size <= 50e6
