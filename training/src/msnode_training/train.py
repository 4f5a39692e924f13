"""Running an nnU-Net v2 training through its Python API on CPU (or GPU when present)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from msnode_training.nnunet_data import CONFIGURATION, load_plans, preprocessed_dir
from msnode_training.trainers import (
    MsnodeInpaintingTrainer,
    MsnodeTrainer,
    TrainingSettings,
)

TRAINERS = {"segmentation": MsnodeTrainer, "inpainting": MsnodeInpaintingTrainer}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def train(dataset_id: int, plans_identifier: str, objective: str, settings: TrainingSettings,
          pretrained_checkpoint: Path | None = None, fold: int = 0,
          device: torch.device | None = None, resume: bool = False) -> MsnodeTrainer:
    """Train fold `fold` of a preprocessed dataset; returns the finished trainer (its output_folder holds
    checkpoint_final.pth and, with F1 validation, checkpoint_best_f1.pth). `resume`: continue from the output
    folder's checkpoint_latest.pth when there is one (weights, optimizer, epoch, F1 bookkeeping)."""
    torch.manual_seed(settings.seed)
    plans = load_plans(dataset_id, plans_identifier)
    plans["continue_training"] = False
    dataset_json = json.loads((preprocessed_dir(dataset_id) / "dataset.json").read_text())
    device = device or default_device()
    trainer = TRAINERS[objective](plans, CONFIGURATION, fold, dataset_json, device)
    trainer.apply_settings(settings)
    trainer.initialize()
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    if resume and latest.is_file():
        trainer.load_checkpoint(str(latest))
        trainer.load_state()
        print(f"resuming {trainer.output_folder} at epoch {trainer.current_epoch}", flush=True)
    elif pretrained_checkpoint is not None:
        from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

        load_pretrained_weights(trainer.network, str(pretrained_checkpoint), verbose=False)
    trainer.run_training()
    return trainer


def results_folder(trainer: MsnodeTrainer) -> Path:
    return Path(trainer.output_folder)


def nnunet_results_root() -> Path:
    return Path(os.environ["nnUNet_results"])
