"""Trainer classes: plateau logic by hand, then the fine-tuning strategies and inpainting pretraining run for real
on the datasets the session's tiny pipeline prepared."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from msnode_training.trainers import PlateauTracker, TrainingSettings, random_block_mask


def test_plateau_reduces_the_learning_rate_then_stops() -> None:
    tracker = PlateauTracker(lr_reduce_patience=1, early_stopping_patience=2)
    assert tracker.update(0.1) == (True, False, False)
    assert tracker.update(0.1) == (False, True, False)  # equal is no improvement
    assert tracker.update(0.05) == (False, True, True)
    assert tracker.update(0.2) == (True, False, False) and tracker.best == 0.2


def test_plateau_patience_counts_validations() -> None:
    tracker = PlateauTracker(lr_reduce_patience=2, early_stopping_patience=3)
    tracker.update(0.5)
    assert [tracker.update(0.4) for _ in range(3)] == [(False, False, False), (False, True, False),
                                                      (False, False, True)]


def test_block_mask_covers_the_requested_fraction() -> None:
    mask = random_block_mask((2, 3, 8, 8, 8), 0.5, 1, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 8, 8, 8)
    assert mask[0].sum() == 64 and mask[1].sum() == 64


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError):
        TrainingSettings(strategy="partial")


def test_foreground_oversampling_is_a_share() -> None:
    assert TrainingSettings().foreground_oversampling == 0.33  # nnU-Net's own default
    with pytest.raises(ValueError):
        TrainingSettings(foreground_oversampling=1.5)


def pretrained_checkpoint(pipeline_run: dict) -> Path:
    return Path(pipeline_run["card"]["provenance"]["log"]["pretraining"][0]["checkpoint"])


def short(strategy: str = "full") -> TrainingSettings:
    return TrainingSettings(epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1, strategy=strategy)


def use_pipeline_folders(pipeline_run: dict) -> None:
    from msnode_training.paths import set_nnunet_environment

    set_nnunet_environment(Path(pipeline_run["config"].work_dir) / "nnunet")


def test_frozen_encoder_keeps_pretrained_encoder_weights(pipeline_run: dict) -> None:
    from msnode_training.pipeline import FINETUNE_DATASET_ID
    from msnode_training.train import train

    use_pipeline_folders(pipeline_run)
    checkpoint = pretrained_checkpoint(pipeline_run)
    pretrained = torch.load(checkpoint, weights_only=False)["network_weights"]
    trainer = train(FINETUNE_DATASET_ID, "msnodePlans_tiny", "segmentation", short("frozen_encoder"), checkpoint)
    state = trainer.network.state_dict()
    encoder_keys = [k for k in state if k.startswith("encoder.") and "norm" not in k]
    decoder_keys = [k for k in state if k.startswith("decoder.stages") and k.endswith("weight")]
    assert encoder_keys and decoder_keys
    assert all(torch.equal(state[k], pretrained[k]) for k in encoder_keys)
    assert any(not torch.equal(state[k], pretrained[k]) for k in decoder_keys)


def test_lower_encoder_learning_rate(pipeline_run: dict) -> None:
    from msnode_training.pipeline import FINETUNE_DATASET_ID
    from msnode_training.train import train

    use_pipeline_folders(pipeline_run)
    settings = replace(short("lower_encoder_lr"), foreground_oversampling=1.0)
    trainer = train(FINETUNE_DATASET_ID, "msnodePlans_tiny", "segmentation", settings,
                    pretrained_checkpoint(pipeline_run))
    assert trainer.oversample_foreground_percent == 1.0  # every patch centred on a lesion voxel
    rest, encoder = trainer.optimizer.param_groups
    assert encoder["lr"] == pytest.approx(0.1 * rest["lr"]) and rest["lr"] > 0


def test_inpainting_pretraining_transfers_to_segmentation(pipeline_run: dict) -> None:
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from msnode_training.pipeline import FINETUNE_DATASET_ID, PRETRAIN_DATASET_ID
    from msnode_training.train import train

    use_pipeline_folders(pipeline_run)
    inpainter = train(PRETRAIN_DATASET_ID, "msnodePlans_tiny", "inpainting", short())
    head = inpainter.network.decoder.seg_layers[-1]
    assert head.out_channels == 3  # reconstructs the three input channels
    assert inpainter.logger.get_value("train_losses", step=-1) > 0
    assert inpainter.logger.get_value("val_losses", step=-1) > 0
    checkpoint = Path(inpainter.output_folder) / "checkpoint_final.pth"
    segmenter = train(FINETUNE_DATASET_ID, "msnodePlans_tiny", "segmentation",
                      TrainingSettings(epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1))
    load_pretrained_weights(segmenter.network, str(checkpoint))
    pretrained = torch.load(checkpoint, weights_only=False)["network_weights"]
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert torch.equal(segmenter.network.state_dict()[key], pretrained[key])
    assert segmenter.network.decoder.seg_layers[-1].out_channels == 2
