"""The real-background training command's parts: anisotropic plans, resumable stages, time budget and progress,
seeds, and the node evaluation's mask mapping. No training here."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from msnode_training.nnunet_data import (
    NETWORK_SIZES,
    NetworkSize,
    plan_and_preprocess,
    preprocessed_dir,
    sized_plans,
    total_stride,
    write_raw_dataset,
)
from msnode_training.node_eval import mask_to_common, node_config
from msnode_training.paths import set_nnunet_environment
from msnode_training.realbg import (
    DATASET_ID,
    PRETRAIN_DATASET_ID,
    RealBgConfig,
    Stages,
    other_pathology_seed,
    pair_seeds,
    pair_spacing,
    parse_args,
    prepare_other_pathology_pretraining,
)
from msnode_training.realpairs import RealPairConfig, generate_pairs, read_pair
from msnode_training.trainers import MsnodeTrainer, PlateauTracker, TrainingSettings
from msnode_training.volumes import Geometry

from test_nnunet_data import planner_like_plans


def test_realbg_plans_are_anisotropic_and_keep_the_pair_grid() -> None:
    plans = sized_plans(planner_like_plans(), NETWORK_SIZES["realbg"])
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["spacing"] == [3.0, 1.0, 1.0]
    assert total_stride(configuration) == [4, 8, 8]
    assert configuration["patch_size"] == [16, 64, 64]
    assert all(p % s == 0 for p, s in zip(configuration["patch_size"], total_stride(configuration)))


def test_strides_must_match_the_stages() -> None:
    size = NetworkSize("bad", (4, 8), (16, 16, 16), 2, ((1, 1, 1),))
    with pytest.raises(ValueError, match="strides"):
        sized_plans(planner_like_plans(), size)


def test_pair_streams_are_disjoint_and_shared_with_the_baseline() -> None:
    seeds = pair_seeds(0)
    assert len(set(seeds.values())) == 3
    assert (seeds["validation"], seeds["test"]) == (7, 8)  # msnode-baseline's validation and test pairs
    assert pair_spacing(RealBgConfig(Path("."), Path("."))) == (3.0, 1.0, 1.0)


def test_command_line_builds_the_schedule() -> None:
    config = parse_args(["--threads", "1", "--finetune-epochs", "7", "--iterations", "9", "--f1-every", "3",
                         "--pretraining", "none", "--budget-minutes", "30"])
    assert config.finetune_settings.epochs == 7 and config.finetune_settings.iterations_per_epoch == 9
    assert config.finetune_settings.f1_every_epochs == 3 and config.finetune_settings.save_every_epochs == 1
    assert config.pretraining == "none" and config.budget_minutes == 30
    with pytest.raises(ValueError):
        RealBgConfig(Path("."), Path("."), pretraining="other")
    config = parse_args(["--pretraining", "other_pathology", "--pretrain-pairs", "5"])
    assert (config.pretraining, config.pretrain_pairs) == ("other_pathology", 5)
    with pytest.raises(ValueError):  # one pair would leave none to validate on
        RealBgConfig(Path("."), Path("."), pretraining="other_pathology", pretrain_pairs=1)
    assert other_pathology_seed(0) not in pair_seeds(0).values()


def test_other_pathology_pretraining_data_uses_the_fine_tuning_plans(tmp_path: Path) -> None:
    """Pretraining and fine-tuning must train one network: the other-pathology pairs are preprocessed with the
    fine-tuning dataset's plans, carry their painted label, and a rerun reuses the stage."""
    set_nnunet_environment(tmp_path / "nnunet")
    pair_config = RealPairConfig(backgrounds=("lesjak-cross-sectional/patient07",), max_shape_files=3)
    ms_dirs, _ = generate_pairs(tmp_path / "pairs", 4, range(2), pair_config)
    write_raw_dataset([read_pair(d)[0] for d in ms_dirs], DATASET_ID, "msnodeRealBg", pair_config.spacing_zyx,
                      "test")
    identifier = plan_and_preprocess(DATASET_ID, NETWORK_SIZES["realbg"])
    config = RealBgConfig(tmp_path, tmp_path / "export", pretraining="other_pathology", pretrain_pairs=2)
    stages = Stages(tmp_path)
    record = prepare_other_pathology_pretraining(config, stages, tmp_path / "pairs", pair_config, identifier)
    assert record["seed"] == other_pathology_seed(0) and record["generation"]["generated"] == 2
    source, target = preprocessed_dir(DATASET_ID), preprocessed_dir(PRETRAIN_DATASET_ID)
    source_plans = json.loads((source / f"{identifier}.json").read_text())
    target_plans = json.loads((target / f"{identifier}.json").read_text())
    assert target_plans["configurations"] == source_plans["configurations"]
    folds = json.loads((target / "splits_final.json").read_text())
    assert len(folds[0]["train"]) == 1 and len(folds[0]["val"]) == 1
    labels = sorted((target / "gt_segmentations").glob("*.nii.gz"))
    assert len(labels) == 2 and all(sitk.GetArrayFromImage(sitk.ReadImage(str(f))).max() == 1 for f in labels)
    again = prepare_other_pathology_pretraining(config, Stages(tmp_path), tmp_path / "pairs", pair_config, identifier)
    assert again == record


def test_stages_are_remembered_across_runs(tmp_path: Path) -> None:
    stages = Stages(tmp_path)
    assert not stages.finished("preprocess")
    stages.mark("preprocess", {"identifier": "msnodePlans_realbg"})
    again = Stages(tmp_path)
    assert again.finished("preprocess") and again.done["preprocess"]["identifier"] == "msnodePlans_realbg"


def bare_trainer(tmp_path: Path, settings: TrainingSettings) -> MsnodeTrainer:
    """An MsnodeTrainer without nnU-Net's initialisation: only what progress and state bookkeeping read."""
    trainer = MsnodeTrainer.__new__(MsnodeTrainer)
    trainer.settings = settings
    trainer.num_epochs = settings.epochs
    trainer.current_epoch = 0
    trainer.epoch_seconds = []
    trainer.f1_history = []
    trainer.plateau = PlateauTracker(2, 5)
    trainer.lr_scale = 1.0
    trainer.stop_early = trainer.stopped_on_deadline = False
    trainer.output_folder = str(tmp_path)
    trainer.print_to_log_file = lambda *args, **kwargs: None
    trainer.schedule_started_unix = 0.0
    trainer.validation_details = []
    trainer.initial_lr = settings.initial_lr
    return trainer


def test_progress_line_and_time_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = bare_trainer(tmp_path, TrainingSettings(epochs=4, progress_label="fine-tune",
                                                      deadline_unix=time.time() + 3600))
    trainer._epoch_started = time.time() - 10
    trainer.report_progress()
    line = capsys.readouterr().out
    assert "[fine-tune] epoch 1/4" in line and "ETA 0.5 min" in line
    assert not trainer.stop_early
    trainer.settings = replace(trainer.settings, deadline_unix=time.time() + 1)  # next epoch would not fit
    trainer.current_epoch = 1
    trainer._epoch_started = time.time() - 10
    trainer.report_progress()
    assert trainer.stop_early and trainer.stopped_on_deadline
    assert "time budget reached" in capsys.readouterr().out


def test_f1_bookkeeping_survives_a_resume(tmp_path: Path) -> None:
    trainer = bare_trainer(tmp_path, TrainingSettings(epochs=4))
    trainer.f1_history = [(1, 0.25), (3, 0.5)]
    trainer.plateau.update(0.25)
    trainer.plateau.update(0.5)
    trainer.lr_scale = 0.5
    trainer.epoch_seconds = [10.0, 11.0]
    trainer.save_state()
    resumed = bare_trainer(tmp_path, TrainingSettings(epochs=4))
    resumed.load_state()
    assert resumed.f1_history == [(1, 0.25), (3, 0.5)]
    assert resumed.plateau.best == 0.5 and resumed.lr_scale == 0.5 and resumed.epoch_seconds == [10.0, 11.0]


def test_node_config_names_the_model_on_cpu(tmp_path: Path) -> None:
    text = node_config(tmp_path / "realbg", 2)
    assert f'dir = "{(tmp_path / "realbg").resolve()}"' in text
    assert 'execution_provider = "cpu"' in text and "intra_threads = 2" in text


def test_node_mask_is_mapped_to_the_common_grid(tmp_path: Path) -> None:
    # Current study grid 3 x 1 x 1 mm; the common grid 1 mm; the transform shifts common points by +2 mm in x.
    study = np.zeros((4, 10, 10), dtype=np.uint8)
    study[1, 4:6, 6:8] = 1
    image = sitk.GetImageFromArray(study)
    image.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "lesions.nii.gz"))
    (tmp_path / "t.txt").write_text("#Insight Transform File V1.0\n#Transform 0\n"
                                    "Transform: MatrixOffsetTransformBase_double_3_3\n"
                                    "Parameters: 1 0 0 0 1 0 0 0 1 2 0 0\nFixedParameters: 0 0 0\n")
    common = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (12, 10, 10))
    mask = mask_to_common(tmp_path / "lesions.nii.gz", tmp_path / "t.txt", common)
    zs, ys, xs = np.nonzero(mask)
    assert set(xs) == {4, 5} and set(ys) == {4, 5}  # study x 6-7 = common x 4-5
    assert set(zs) <= {2, 3, 4} and len(set(zs)) >= 2  # one 3 mm slice spans about three 1 mm slices


def test_baseline_is_scored_with_size_bins() -> None:
    from msnode_training.baseline import BaselineParams
    from msnode_training.compare import score_baseline
    from msnode_training.readers import LongitudinalCase

    rng = np.random.default_rng(0)
    geometry = Geometry((3.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 40, 40))
    brain = np.zeros(geometry.shape_zyx, dtype=np.uint8)
    brain[1:9, 4:36, 4:36] = 1
    prior = (100 + rng.normal(0, 1, geometry.shape_zyx)).astype(np.float32) * brain
    current = prior.copy()
    label = np.zeros(geometry.shape_zyx, dtype=np.uint8)
    label[4:6, 18:24, 18:24] = 1  # 216 mm3
    current[label > 0] += 30
    case = LongitudinalCase("unit", prior, current, label, geometry, brain)
    result = score_baseline(BaselineParams(3.0, 10.0, 0.0), [case])
    summary = result["summary"]
    assert summary["mean_f1"] == 1.0 and summary["false_positive_lesions_per_case"] == 0
    assert summary["sensitivity_by_size_mm3"][">100"] == {"lesions": 1, "detected": 1, "sensitivity": 1.0}


def test_node_config_sets_the_registration(tmp_path: Path) -> None:
    assert "[analysis]" not in node_config(tmp_path, 1)  # the node's default (affine)
    rigid = node_config(tmp_path, 1, "rigid")
    assert rigid.endswith('[analysis]\nregistration = "rigid"\n')
    assert 'registration = "affine"' in node_config(tmp_path, 1, "affine")
    with pytest.raises(ValueError):
        node_config(tmp_path, 1, "bspline")
