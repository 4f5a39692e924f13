import json

import numpy as np
import pytest

from msnode_training.readers import read_msseg2_case
from msnode_training.synth import (
    MNI_TEMPLATE,
    SCENARIOS,
    SynthConfig,
    generate_case,
    generate_dataset,
    simulate_acquisition,
    working_geometry,
)


def test_same_seed_gives_the_same_case_and_another_index_a_different_one() -> None:
    config = SynthConfig(scenario="ms", spacing_mm=3.0)
    first, again, other = generate_case(5, 0, config), generate_case(5, 0, config), generate_case(5, 1, config)
    np.testing.assert_array_equal(first.prior, again.prior)
    np.testing.assert_array_equal(first.current, again.current)
    np.testing.assert_array_equal(first.label, again.label)
    assert not np.array_equal(first.current, other.current)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shapes_and_labels(scenario: str) -> None:
    config = SynthConfig(scenario=scenario, spacing_mm=3.0, no_new_lesion_probability=0.0)
    case = generate_case(11, 0, config)
    geometry = working_geometry(3.0)
    assert case.prior.shape == case.current.shape == case.label.shape == geometry.shape_zyx
    assert case.geometry.spacing_zyx == (3.0, 3.0, 3.0)
    assert case.prior.dtype == np.float32 and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= {0, 1}
    brain = case.brain_mask > 0
    assert np.all(case.label[~brain] == 0)
    assert np.all(case.current[~brain] == 0) and case.current[brain].min() > 0
    if scenario == "unlabeled":
        assert case.label.sum() == 0
    else:
        lesion = case.label > 0
        assert lesion.sum() > 0
        # New tissue is brighter on the current visit, relative to each visit's brain median.
        rise = case.current / np.median(case.current[brain]) - case.prior / np.median(case.prior[case.prior > 0])
        assert rise[lesion].mean() > rise[brain & ~lesion].mean() + 0.1


def test_no_new_lesion_cases_exist_for_false_positive_training() -> None:
    config = SynthConfig(scenario="ms", spacing_mm=3.0, no_new_lesion_probability=1.0)
    assert generate_case(2, 0, config).label.sum() == 0


def test_template_only_anatomy_works_without_real_data() -> None:
    config = SynthConfig(scenario="ms", spacing_mm=3.0, anatomy_sources=(MNI_TEMPLATE,))
    assert generate_case(1, 0, config).prior.shape == working_geometry(3.0).shape_zyx


def test_thick_slices_blur_one_axis_only() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.5, 1.5, size=(30, 30, 30)).astype(np.float32)
    brain = np.ones(image.shape, dtype=bool)
    config = SynthConfig(thick_slice_probability=1.0, slice_thickness_mm=(6.0, 6.0), noise_fraction=(0.0, 0.0),
                         bias_strength=0.0, gamma_range=(1.0, 1.0), spacing_mm=1.0)
    out = simulate_acquisition(image, brain, config, np.random.default_rng(3))
    roughness = [np.abs(np.diff(out, axis=a)).mean() for a in range(3)]
    smooth_axis = int(np.argmin(roughness))
    others = [r for a, r in enumerate(roughness) if a != smooth_axis]
    assert roughness[smooth_axis] < 0.5 * min(others)


def test_dataset_is_written_in_the_msseg2_layout(tmp_path) -> None:
    written = generate_dataset(tmp_path, 2, 3, SynthConfig(scenario="other_pathology", spacing_mm=3.0))
    assert [p.name for p in written] == ["synth_other_pathology_3_0000", "synth_other_pathology_3_0001"]
    case = read_msseg2_case(written[1])
    expected = generate_case(3, 1, SynthConfig(scenario="other_pathology", spacing_mm=3.0))
    np.testing.assert_allclose(case.current, expected.current)
    np.testing.assert_array_equal(case.label, expected.label)
    record = json.loads((tmp_path / "generation.json").read_text())
    assert record["seed"] == 3 and record["config"]["scenario"] == "other_pathology"


def test_unknown_scenario_is_rejected() -> None:
    with pytest.raises(ValueError):
        SynthConfig(scenario="tumour")


def test_parallel_generation_gives_the_same_cases_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from msnode_training.pipeline import synthetic_cases

    serial = synthetic_cases("ms", 5, range(3), 4.0)
    monkeypatch.setenv("MSNODE_DATA_WORKERS", "2")
    parallel = synthetic_cases("ms", 5, range(3), 4.0)
    assert [c.case_id for c in parallel] == [c.case_id for c in serial]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.current, b.current)
        np.testing.assert_array_equal(a.label, b.label)


def test_data_workers_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    from msnode_training.paths import data_workers

    monkeypatch.setenv("MSNODE_DATA_WORKERS", "0")
    with pytest.raises(ValueError):
        data_workers()
