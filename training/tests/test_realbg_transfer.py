"""The transfer experiment's own pieces: other-pathology pairs on real backgrounds and the per-size splits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from msnode_training.realbg_transfer import TransferConfig, results_markdown, write_size_splits
from msnode_training.realpairs import (
    RealPairConfig,
    generate_pair,
    generate_pairs,
    other_pathology_config,
    other_pathology_pair,
    read_pair,
)

SMALL = RealPairConfig(backgrounds=("lesjak-cross-sectional/patient07",), max_shape_files=3)


def test_an_other_pathology_pair_labels_only_the_painted_change_on_the_generators_pair() -> None:
    case, meta = other_pathology_pair(4, 0, SMALL)
    plain, plain_meta = generate_pair(4, 0, other_pathology_config(SMALL))
    assert plain_meta["no_new_lesion"] and plain.label.sum() == 0  # the background pair has no MS change
    np.testing.assert_array_equal(case.prior, plain.prior)  # the prior is untouched
    label = case.label > 0
    voxel = float(np.prod(case.geometry.spacing_zyx))
    assert meta["other_pathology"] in ("mass", "wedge")
    assert label.sum() * voxel == pytest.approx(meta["label_mm3"], abs=0.1)
    assert label.sum() * voxel > 50  # radii of 5-14 mm: far above any MS lesion's size floor
    assert np.all(case.current[~label & (plain.current > 0)] >= 0)
    changed = case.current != plain.current
    assert changed[label].mean() > 0.9  # the label is where the current changed ...
    assert np.abs(case.current - plain.current)[~label].max() < np.abs(case.current - plain.current)[label].max()
    again, again_meta = other_pathology_pair(4, 0, SMALL)
    np.testing.assert_array_equal(again.current, case.current)
    assert again_meta == meta
    assert meta["case_id"].startswith("otherpath_")


def test_other_pathology_pairs_are_cached_apart_from_ms_pairs(tmp_path: Path) -> None:
    ms, _ = generate_pairs(tmp_path, 4, [0], SMALL)
    other, info = generate_pairs(tmp_path, 4, [0], SMALL, kind="other_pathology")
    assert info["generated"] == 1 and ms[0].parent != other[0].parent and other[0].name == "otherpath_4_0000"
    case, meta = read_pair(other[0])
    assert case.label.sum() > 0 and meta["other_pathology"] in ("mass", "wedge")
    with pytest.raises(ValueError):
        generate_pairs(tmp_path, 4, [0], SMALL, kind="tumour")


def test_other_pathology_pairs_refuse_a_real_pair_as_the_only_background() -> None:
    with pytest.raises(ValueError):
        other_pathology_config(dataclasses.replace(SMALL, backgrounds=("lesjak-longitudinal/patient01/pair",)))


def test_each_fine_tuning_size_is_a_fold_on_the_first_pairs_of_one_pool(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("msnode_training.nnunet_data.preprocessed_dir", lambda _id: tmp_path)
    pool = [f"p{i}" for i in range(10)]
    write_size_splits(530, pool, ["v1", "v0"], (2, 5, 10))
    folds = json.loads((tmp_path / "splits_final.json").read_text())
    assert [f["train"] for f in folds] == [pool[:2], pool[:5], pool[:10]]
    assert all(f["val"] == ["v0", "v1"] for f in folds)


def test_a_config_without_the_de_novo_baseline_is_refused() -> None:
    with pytest.raises(ValueError):
        TransferConfig(Path("."), Path("."), Path("."), strategies=("inpainting",))


def test_the_results_table_has_one_row_per_model() -> None:
    summary = {"mean_f1": 0.5, "mean_ppv": 0.25, "mean_sensitivity": 0.75, "false_positive_lesions_per_case": 2.0}
    config = TransferConfig(Path("."), Path("."), Path("."), sizes=(2,)).as_dict()
    rows = [{"pretraining": s, "n_finetune_pairs": 2, "held_out": summary, "threshold": 0.3,
             "min_lesion_volume_mm3": 5.0, "finetune_seconds": 12.0, "patient03_node": {"summary": summary}}
            for s in ("none", "inpainting")]
    text = results_markdown({"date": "d", "machine": {}, "config": config, "rows": rows,
                             "pairs": {"seeds": {}, "pair_config_key": "k"}, "pretraining_seconds": {},
                             "complete": False})
    table = [line for line in text.splitlines() if line.startswith("| none") or line.startswith("| inpainting")]
    assert table == [f"| {s} | 2 | 0.500 / 0.250 / 0.750 | 0.500 / 0.250 / 0.750 | 2.0 | 0.3 | 5.0 | 12.0 |"
                     for s in ("none", "inpainting")]
    assert "**Incomplete**" in text
