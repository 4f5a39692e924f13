"""Shared fixtures. The tiny end-to-end run happens once per session and several test modules read its outputs."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session", autouse=True)
def limit_torch_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("MSNODE_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generate a few cases, pretrain on another pathology, fine-tune with a two-point learning-rate search,
    tune post-processing, evaluate on a real patient, export and check parity: a few minutes on 2 CPU cores."""
    from msnode_training.pipeline import PipelineConfig, run_pipeline
    from msnode_training.trainers import TrainingSettings

    work = tmp_path_factory.mktemp("pipeline")
    config = PipelineConfig(
        work_dir=work, export_dir=work / "model", seed=7, pretrain_cases=3, finetune_ms_cases=3,
        finetune_semi_synthetic_cases=1, validation_cases=2,
        pretrain_settings=TrainingSettings(epochs=2, iterations_per_epoch=3, val_iterations_per_epoch=1),
        finetune_settings=TrainingSettings(epochs=3, iterations_per_epoch=3, val_iterations_per_epoch=1,
                                           f1_every_epochs=1, early_stopping_patience=10),
        learning_rates=(1e-2, 3e-3), thresholds=(0.4, 0.6), min_volumes_mm3=(3.0, 20.0))
    result = run_pipeline(config)
    result["config"] = config
    return result


@pytest.fixture(scope="session")
def lesjak_patient01():
    from msnode_training.paths import lesjak_longitudinal_dir
    from msnode_training.readers import read_lesjak_longitudinal_case

    return read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / "patient01")

