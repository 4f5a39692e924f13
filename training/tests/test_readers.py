import numpy as np
import pytest

from msnode_training.paths import lesjak_cross_sectional_dir, lesjak_longitudinal_dir
from msnode_training.readers import (
    LongitudinalCase,
    brighter_components,
    list_lesjak_cross_sectional,
    list_lesjak_longitudinal,
    list_msseg2_cases,
    read_itk_affine,
    read_lesjak_cross_sectional_case,
    read_lesjak_longitudinal_case,
    read_msseg2_case,
    write_msseg2_case,
)
from msnode_training.volumes import Geometry, read_volume


def test_msseg2_layout_round_trip(tmp_path) -> None:
    geometry = Geometry((3.0, 1.0, 0.5), (10.0, -5.0, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 5, 6))
    rng = np.random.default_rng(0)
    label = np.zeros((4, 5, 6), dtype=np.uint8)
    label[1:3, 2:4, 2:5] = 1
    case = LongitudinalCase("case1", rng.random((4, 5, 6), dtype=np.float32),
                            rng.random((4, 5, 6), dtype=np.float32), label, geometry)
    write_msseg2_case(case, tmp_path / "case1")
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "flair_time01_on_middle_space.nii.gz").write_bytes(b"")
    assert [p.name for p in list_msseg2_cases(tmp_path)] == ["case1"]
    assert sorted(f.name for f in (tmp_path / "case1").iterdir()) == [
        "flair_time01_on_middle_space.nii.gz", "flair_time02_on_middle_space.nii.gz", "ground_truth.nii.gz"]
    back = read_msseg2_case(tmp_path / "case1")
    np.testing.assert_array_equal(back.prior, case.prior)
    np.testing.assert_array_equal(back.current, case.current)
    np.testing.assert_array_equal(back.label, label)
    assert back.geometry.spacing_zyx == pytest.approx((3.0, 1.0, 0.5))
    assert back.geometry.origin_xyz == pytest.approx((10.0, -5.0, 2.0))


def test_itk_affine_file_is_read_as_written() -> None:
    transform = read_itk_affine(lesjak_longitudinal_dir() / "patient01" / "study1_FLAIR_to_common_space.txt")
    assert transform.GetMatrix()[:3] == pytest.approx((0.999772, 0.0124779, -0.0230905))
    assert transform.GetTranslation() == pytest.approx((-0.47633, -1.08648, 4.15365))
    assert transform.GetCenter() == pytest.approx((0.431239, 13.066, -14.9495))


def test_brighter_components_keeps_rising_change_only() -> None:
    change = np.zeros((3, 6, 6), dtype=np.uint8)
    change[1, 0:2, 0:2] = 1  # becomes brighter
    change[1, 4:6, 4:6] = 1  # becomes darker
    prior = np.ones((3, 6, 6), dtype=np.float32)
    current = prior.copy()
    current[1, 0:2, 0:2] = 2.0
    current[1, 4:6, 4:6] = 0.5
    label = brighter_components(change, prior, current)
    assert label[1, 0:2, 0:2].all() and label.sum() == 4


@pytest.mark.parametrize("patient, changes, brighter", [("patient01", 13, 8), ("patient03", 46, 31)])
def test_lesjak_longitudinal_truth_matches_the_data_readme(patient: str, changes: int, brighter: int) -> None:
    from scipy import ndimage

    case = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / patient)
    change, geometry = read_volume(lesjak_longitudinal_dir() / patient / "change_mask_common.nii.gz", np.uint8)
    full = np.ones((3, 3, 3), dtype=bool)
    assert ndimage.label(change, full)[1] == changes
    assert ndimage.label(case.label, full)[1] == brighter
    assert case.prior.shape == case.current.shape == case.label.shape == geometry.shape_zyx
    assert np.all(case.label <= change)
    brain = case.brain_mask > 0
    assert np.all(case.prior[~brain] == 0) and np.all(case.current[~brain] == 0)
    # The two visits are aligned on the common grid: their brain intensities correlate.
    assert np.corrcoef(case.prior[brain], case.current[brain])[0, 1] > 0.6


def test_lesjak_folders_are_found() -> None:
    assert [p.name for p in list_lesjak_longitudinal(lesjak_longitudinal_dir())] == ["patient01", "patient03"]
    assert [p.name for p in list_lesjak_cross_sectional(lesjak_cross_sectional_dir())] == ["patient07", "patient26"]


def test_lesjak_cross_sectional_case() -> None:
    case = read_lesjak_cross_sectional_case(lesjak_cross_sectional_dir() / "patient07")
    assert case.flair.shape == case.lesions.shape == (182, 218, 182)
    assert case.geometry.spacing_zyx == pytest.approx((1.0, 1.0, 1.0))
    assert set(np.unique(case.lesions)) == {0, 1}
    # Lesions are FLAIR hyperintensities: brighter than the brain on average.
    assert case.flair[case.lesions > 0].mean() > case.flair[case.flair > 0].mean()


def test_cropped_geometry_keeps_voxels_in_place() -> None:
    geometry = Geometry((3.0, 2.0, 1.0), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 10, 10))
    cropped = geometry.cropped((slice(2, 5), slice(1, 10), slice(0, 4)))
    assert cropped.shape_zyx == (3, 9, 4)
    # index (x=0, y=1, z=2) of the original grid is the new origin: (10 + 0, 20 + 1 * 2, 30 + 2 * 3)
    assert cropped.origin_xyz == pytest.approx((10.0, 22.0, 36.0))
