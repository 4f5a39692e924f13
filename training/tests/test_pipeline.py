"""The tiny end-to-end run: generate, pretrain, fine-tune with a learning-rate search, tune post-processing,
evaluate on a real patient, export."""

import json
from pathlib import Path


def test_pipeline_records_every_stage(pipeline_run: dict) -> None:
    card = pipeline_run["card"]
    log = card["provenance"]["log"]
    assert log["pretraining"]["objective"] == "segmentation" and log["pretraining"]["epochs_run"] == 2
    finetuning = log["finetuning"]
    assert sorted(finetuning["learning_rate_scores"]) == [0.003, 0.01]
    assert finetuning["chosen_learning_rate"] in (0.003, 0.01)
    assert len(finetuning["f1_history"]) == 3  # F1 validation after each of the 3 epochs
    assert len(finetuning["train_cases"]) == 3 + 1 + 1  # synthetic MS, semi-synthetic, Lesjak patient01
    assert "lesjak_patient01" in finetuning["train_cases"]
    assert len(finetuning["validation_cases"]) == 2
    search = card["evaluation"]["postprocessing_search"]
    assert len(search) == 4
    per_case = card["evaluation"]["lesjak_longitudinal_test_per_case"]
    assert list(per_case) == ["lesjak_patient03"]
    assert per_case["lesjak_patient03"]["n_true_lesions"] > 0
    result = json.loads((Path(pipeline_run["config"].work_dir) / "pipeline_result.json").read_text())
    assert result["export_dir"] == pipeline_run["export_dir"]
