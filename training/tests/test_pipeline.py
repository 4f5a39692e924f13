"""The tiny end-to-end run: generate, pretrain, fine-tune with a learning-rate search, tune post-processing,
evaluate on a real patient, export."""

import json
from pathlib import Path


def test_pipeline_records_every_stage(pipeline_run: dict) -> None:
    card = pipeline_run["card"]
    log = card["provenance"]["log"]
    [stage] = log["pretraining"]
    assert (stage["scenario"], stage["objective"], stage["epochs_run"]) == ("other_pathology", "segmentation", 2)
    assert Path(stage["checkpoint"]).is_file()
    finetuning = log["finetuning"]
    assert sorted(finetuning["search_validation_f1"]) == ["lr=0.003,full", "lr=0.01,full"]
    assert finetuning["chosen_learning_rate"] in (0.003, 0.01) and finetuning["chosen_strategy"] == "full"
    assert Path(finetuning["checkpoint"]).is_file()
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


def test_the_export_carries_the_nnunet_checkpoint_of_the_onnx(pipeline_run: dict) -> None:
    import torch

    from msnode_training.export import load_trained_model

    nnunet = Path(pipeline_run["export_dir"]) / "nnunet"
    exported = torch.load(nnunet / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert set(exported) == {"network_weights", "trainer_name", "inference_allowed_mirroring_axes"}
    assert exported["trainer_name"] == "MsnodeTrainer"
    trained = torch.load(pipeline_run["checkpoint"], weights_only=False)["network_weights"]
    assert all(torch.equal(exported["network_weights"][k], v) for k, v in trained.items())
    model = load_trained_model(nnunet, nnunet / "fold_0" / "checkpoint_final.pth")
    assert model.configuration["patch_size"] == [32, 48, 48]
    parity = pipeline_run["card"]["evaluation"]["onnx_parity"]
    assert parity["onnx_cpu_seconds_2_threads"] > 0


def test_the_card_reports_held_out_synthetic_pairs_through_onnx(pipeline_run: dict) -> None:
    evaluation = pipeline_run["card"]["evaluation"]
    assert evaluation["synthetic_test"]["cases"] == 2  # PipelineConfig's default
    assert len(evaluation["synthetic_test_per_case"]) == 2
    finetuning = pipeline_run["card"]["provenance"]["log"]["finetuning"]
    assert not set(evaluation["synthetic_test_per_case"]) & set(finetuning["train_cases"] +
                                                                finetuning["validation_cases"])
    assert evaluation["synthetic_test_provenance"]["onnx_cpu_seconds_per_case"]["mean"] > 0
    markdown = (Path(pipeline_run["export_dir"]) / "MODEL_CARD.md").read_text()
    assert "| synthetic_test |" in markdown


def test_the_kept_checkpoint_is_the_last_of_the_best_validations(pipeline_run: dict) -> None:
    import torch

    finetuning = pipeline_run["card"]["provenance"]["log"]["finetuning"]
    history = finetuning["f1_history"]
    best = max(f1 for _, f1 in history)
    last_best_epoch = max(epoch for epoch, f1 in history if f1 == best)
    kept = torch.load(finetuning["checkpoint"], map_location="cpu", weights_only=False)
    assert kept["current_epoch"] == last_best_epoch + 1  # nnU-Net stores the number of epochs done
