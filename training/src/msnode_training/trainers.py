"""nnU-Net v2 trainer classes for short CPU schedules, fine-tuning strategies and self-supervised pretraining.

nnU-Net introspects the trainer's __init__, so every class keeps exactly the parent's signature; settings are
applied afterwards with `apply_settings` (before `initialize`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import (
    ConfigurationManager,
    PlansManager,
)
from torch import nn

from msnode_training.inference import (
    lesion_mask,
    predict_logits,
    softmax_foreground,
    torch_runner,
)
from msnode_training.metrics import score_case, summarize

STRATEGIES = ("full", "frozen_encoder", "lower_encoder_lr")
LR_SCHEDULES = ("epoch", "time")
VALIDATION_MODES = ("whole", "crops")


def poly_learning_rate(initial_lr: float, progress: float, exponent: float = 0.9) -> float:
    """nnU-Net's poly decay at `progress` in [0, 1] (clipped): initial_lr * (1 - progress) ** exponent."""
    return initial_lr * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


def time_progress(now: float, started: float, deadline: float) -> float:
    """Share of the wall-clock span from `started` to `deadline` used at `now`, in [0, 1]."""
    if deadline <= started:
        return 1.0
    return min(max((now - started) / (deadline - started), 0.0), 1.0)


@dataclass
class TrainingSettings:
    epochs: int = 2
    iterations_per_epoch: int = 5
    val_iterations_per_epoch: int = 2
    initial_lr: float = 1e-2
    strategy: str = "full"
    encoder_lr_factor: float = 0.1  # used by "lower_encoder_lr"
    f1_every_epochs: int = 0  # 0: no F1 validation (pretraining); else full-volume F1 on the validation cases
    f1_threshold: float = 0.5
    early_stopping_patience: int = 5  # F1 validations without improvement before stopping
    lr_reduce_patience: int = 2  # F1 validations without improvement before the learning rate is reduced
    lr_reduce_factor: float = 0.5
    # Share of each batch centred on a labelled voxel. nnU-Net's 0.33 suits large structures; new lesions fill a
    # few hundred voxels of a brain, and short CPU schedules need every patch to show some.
    foreground_oversampling: float = 0.33
    seed: int = 0
    # Wall-clock budget: the run stops (as with early stopping) before an epoch that would end after this Unix time;
    # 0: none. Lets a one-command training keep its total budget whatever the machine's speed.
    deadline_unix: float = 0.0
    progress_label: str = ""  # printed with each epoch's progress and ETA (stdout)
    save_every_epochs: int = 0  # checkpoint_latest.pth every N epochs (resume); 0: only at the end
    # "epoch": nnU-Net's poly decay over the planned epochs; "time": the same poly decay over the wall time from
    # this stage's first start to `deadline_unix`, so the learning rate reaches ~0 when the budget ends whatever
    # the machine's speed (the planned epochs then only cap the run).
    lr_schedule: str = "epoch"
    # "whole": validation F1 on whole validation volumes (sliding window, minutes per call on one CPU thread);
    # "crops": on fixed patch-sized boxes around each true lesion plus `crop_background_boxes` seeded brain boxes
    # per case, best F1 over a small threshold x minimum-volume grid (`crop_validation.py`).
    validation_mode: str = "whole"
    crop_background_boxes: int = 2
    # Also validate the stage's last epoch (planned end or time budget), so that the most trained checkpoint,
    # trained at the lowest learning rate, can be the chosen one even when it falls between two validations.
    validate_last_epoch: bool = False

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; expected one of {LR_SCHEDULES}")
        if self.validation_mode not in VALIDATION_MODES:
            raise ValueError(f"unknown validation_mode {self.validation_mode!r}; expected one of {VALIDATION_MODES}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if not 0.0 <= self.foreground_oversampling <= 1.0:
            raise ValueError(f"foreground_oversampling must lie in [0, 1], got {self.foreground_oversampling}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PlateauTracker:
    """Validation-F1 bookkeeping: a new best resets the counters; each validation without improvement counts
    towards a learning-rate reduction and towards early stopping."""

    lr_reduce_patience: int
    early_stopping_patience: int
    best: float | None = None
    without_improvement: int = 0
    since_reduction: int = 0

    def update(self, score: float) -> tuple[bool, bool, bool]:
        """Returns (is_new_best, reduce_learning_rate, stop)."""
        if self.best is None or score > self.best:
            self.best, self.without_improvement, self.since_reduction = score, 0, 0
            return True, False, False
        self.without_improvement += 1
        self.since_reduction += 1
        reduce = self.since_reduction >= self.lr_reduce_patience
        if reduce:
            self.since_reduction = 0
        return False, reduce, self.without_improvement >= self.early_stopping_patience


class MsnodeTrainer(nnUNetTrainer):
    """nnU-Net's trainer with a short schedule, per-group learning rates (full / frozen encoder / lower encoder
    learning rate) and, when enabled, validation F1 (MSSEG-2 rules) driving learning-rate reduction, early
    stopping and `checkpoint_best_f1.pth`."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.settings = TrainingSettings()
        self.lr_scale = 1.0
        self.plateau = PlateauTracker(1, 1)
        self.stop_early = False
        self.f1_history: list[tuple[int, float]] = []
        self.epoch_seconds: list[float] = []
        self._epoch_started = 0.0
        self.stopped_on_deadline = False
        self.schedule_started_unix = 0.0
        self.crop_cases: list | None = None
        self.validation_details: list[dict] = []
        self.apply_settings(self.settings)

    def apply_settings(self, settings: TrainingSettings) -> None:
        if self.was_initialized:
            raise RuntimeError("apply settings before initialize()")
        self.settings = settings
        self.num_epochs = settings.epochs
        self.num_iterations_per_epoch = settings.iterations_per_epoch
        self.num_val_iterations_per_epoch = settings.val_iterations_per_epoch
        self.initial_lr = settings.initial_lr
        self.save_every = settings.save_every_epochs or max(settings.epochs, 1)
        self.oversample_foreground_percent = settings.foreground_oversampling
        self.plateau = PlateauTracker(settings.lr_reduce_patience, settings.early_stopping_patience)

    @property
    def best_f1(self) -> float | None:
        return self.plateau.best

    def configure_optimizers(self):
        encoder = self.network.encoder
        encoder_ids = {id(p) for p in encoder.parameters()}
        rest = [p for p in self.network.parameters() if id(p) not in encoder_ids]
        groups = [{"params": rest, "lr_factor": 1.0}]
        if self.settings.strategy == "frozen_encoder":
            for parameter in encoder.parameters():
                parameter.requires_grad_(False)
        else:
            factor = self.settings.encoder_lr_factor if self.settings.strategy == "lower_encoder_lr" else 1.0
            groups.append({"params": list(encoder.parameters()), "lr_factor": factor})
        optimizer = torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        return optimizer, None

    def schedule_progress(self) -> float:
        if self.settings.lr_schedule == "time" and self.settings.deadline_unix:
            if not self.schedule_started_unix:
                self.schedule_started_unix = time.time()
            return time_progress(time.time(), self.schedule_started_unix, self.settings.deadline_unix)
        return self.current_epoch / self.num_epochs

    def current_base_lr(self) -> float:
        return poly_learning_rate(self.initial_lr, self.schedule_progress()) * self.lr_scale

    STATE_FILE = "msnode_state.json"

    def save_state(self) -> None:
        """F1 bookkeeping beside checkpoint_latest.pth, so that a resumed run keeps its best F1 and counters."""
        state = {"f1_history": self.f1_history, "lr_scale": self.lr_scale, "plateau": asdict(self.plateau),
                 "epoch_seconds": self.epoch_seconds, "epoch": self.current_epoch,
                 "schedule_started_unix": self.schedule_started_unix, "validation_details": self.validation_details}
        (Path(self.output_folder) / self.STATE_FILE).write_text(json.dumps(state))

    def load_state(self) -> None:
        path = Path(self.output_folder) / self.STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        self.f1_history = [tuple(v) for v in state["f1_history"]]
        self.lr_scale = state["lr_scale"]
        self.plateau = PlateauTracker(**state["plateau"])
        self.epoch_seconds = list(state["epoch_seconds"])
        self.schedule_started_unix = float(state.get("schedule_started_unix", 0.0))
        self.validation_details = list(state.get("validation_details", []))

    def report_progress(self) -> None:
        """One line per epoch on stdout: epoch, seconds per epoch, this stage's ETA, and a deadline check."""
        seconds = time.time() - self._epoch_started
        self.epoch_seconds.append(round(seconds, 1))
        done = self.current_epoch + 1
        recent = float(np.mean(self.epoch_seconds[-3:]))
        remaining = max(self.num_epochs - done, 0)
        eta = remaining * recent
        if self.settings.deadline_unix:  # the budget ends the stage first when it comes before the planned epochs
            eta = min(eta, max(self.settings.deadline_unix - time.time(), 0.0))
        line = (f"[{self.settings.progress_label or 'train'}] epoch {done}/{self.num_epochs} {seconds:.0f} s, "
                f"lr {self.optimizer.param_groups[0]['lr']:.5f}, ETA {eta / 60:.1f} min"
                if getattr(self, "optimizer", None) is not None else
                f"[{self.settings.progress_label or 'train'}] epoch {done}/{self.num_epochs} {seconds:.0f} s, "
                f"ETA {eta / 60:.1f} min")
        if self.f1_history and self.f1_history[-1][0] == self.current_epoch:
            line += f", validation F1 {self.f1_history[-1][1]:.3f} (best {self.plateau.best:.3f})"
        deadline = self.settings.deadline_unix
        if deadline and remaining and time.time() + recent > deadline:
            self.stop_early = self.stopped_on_deadline = True
            line += "; time budget reached: stopping"
            self.print_to_log_file("time budget reached: stopping")
        print(line, flush=True)

    def on_train_epoch_start(self):
        self._epoch_started = time.time()
        self.network.train()
        base = self.current_base_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = base * group["lr_factor"]
        self.print_to_log_file(f"Epoch {self.current_epoch}, learning rate {base:.6f}")
        self.logger.log('lrs', base, self.current_epoch)

    def crop_validation_f1(self) -> float:
        """The cheap proxy (`crop_validation.py`): fixed boxes of the validation cases, one tile each."""
        from msnode_training.crop_validation import crop_validation, make_crop_case

        spacing = tuple(float(v) for v in self.configuration_manager.spacing)
        patch = tuple(int(v) for v in self.configuration_manager.patch_size)
        if self.crop_cases is None:
            _, val_keys = self.do_split()
            dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
            self.crop_cases = []
            for index, key in enumerate(sorted(val_keys)):
                data, seg, _, _ = dataset.load_case(key)
                truth = (np.asarray(seg)[0] > 0).astype(np.uint8)
                self.crop_cases.append(make_crop_case(key, np.asarray(data, dtype=np.float32), truth, patch,
                                                      spacing, self.settings.crop_background_boxes,
                                                      seed=self.settings.seed * 1000 + index))
        self.set_deep_supervision_enabled(False)
        started = time.time()
        with torch.no_grad():
            result = crop_validation(self.crop_cases, torch_runner(self.network), patch,
                                     self.label_manager.num_segmentation_heads)
        self.set_deep_supervision_enabled(self.enable_deep_supervision)
        self.network.train()
        self.validation_details.append({"epoch": self.current_epoch, "score": result.score,
                                        "threshold": result.threshold,
                                        "min_lesion_volume_mm3": result.min_lesion_volume_mm3,
                                        "false_positives_per_pair": round(result.false_positives_per_pair, 2),
                                        "boxes": sum(len(c.boxes) for c in self.crop_cases),
                                        "seconds": round(time.time() - started, 1)})
        self.print_to_log_file(f"crop validation: {self.validation_details[-1]}")
        return result.score

    def validation_f1(self) -> float:
        """Mean MSSEG-2 F1 over the validation cases, predicted whole with the sliding window (lesion cases;
        with none, minus the mean number of false-positive lesions so that fewer is better)."""
        if self.settings.validation_mode == "crops":
            return self.crop_validation_f1()
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        spacing = tuple(float(v) for v in self.configuration_manager.spacing)
        self.set_deep_supervision_enabled(False)
        runner = torch_runner(self.network)
        scores = []
        with torch.no_grad():
            for key in val_keys:
                data, seg, _, _ = dataset.load_case(key)
                data = np.asarray(data, dtype=np.float32)
                truth = (np.asarray(seg)[0] > 0).astype(np.uint8)
                logits = predict_logits(data, runner, self.configuration_manager.patch_size,
                                        self.label_manager.num_segmentation_heads)
                prediction = lesion_mask(softmax_foreground(logits), spacing, self.settings.f1_threshold, 3.0)
                scores.append(score_case(truth, prediction, spacing))
        self.set_deep_supervision_enabled(self.enable_deep_supervision)
        self.network.train()
        summary = summarize(scores)
        if summary["mean_f1"] is not None:
            return float(summary["mean_f1"])
        return -float(summary["mean_n_false_positives"] or 0.0)

    def is_last_epoch(self) -> bool:
        """Whether the epoch now ending is the stage's last: its planned epochs are done, or the next epoch would
        end after the deadline (the rule `report_progress` applies)."""
        if self.current_epoch + 1 >= self.num_epochs:
            return True
        deadline = self.settings.deadline_unix
        if not deadline:
            return False
        seconds = time.time() - self._epoch_started
        recent = float(np.mean(list(self.epoch_seconds[-2:]) + [seconds]))
        return time.time() + recent > deadline

    def validation_due(self) -> bool:
        every = self.settings.f1_every_epochs
        if not every:
            return False
        return (self.current_epoch + 1) % every == 0 or (self.settings.validate_last_epoch and self.is_last_epoch())

    def on_epoch_end(self):
        if self.validation_due():
            f1 = self.validation_f1()
            self.f1_history.append((self.current_epoch, f1))
            self.print_to_log_file(f"validation F1 {f1:.4f}")
            _, reduce, stop = self.plateau.update(f1)
            # A new best or a tie with it: a tie keeps the later checkpoint, the same validation F1 after more
            # training (early on, F1 is often 0 for several validations, and the first is the least trained network).
            if f1 == self.plateau.best:
                self.save_checkpoint(f"{self.output_folder}/checkpoint_best_f1.pth")
            if reduce:
                self.lr_scale *= self.settings.lr_reduce_factor
                self.print_to_log_file(f"validation F1 plateau: learning rate scale now {self.lr_scale}")
            if stop:
                self.stop_early = True
                self.print_to_log_file("early stopping on validation F1")
        self.report_progress()
        super().on_epoch_end()
        if self.save_every and self.current_epoch % self.save_every == 0:  # nnU-Net advanced current_epoch
            self.save_state()

    def run_training(self):
        """nnU-Net's loop, ended early when validation F1 stops improving."""
        self.on_train_start()
        if not self.schedule_started_unix:  # a resumed stage keeps its first start (msnode_state.json)
            self.schedule_started_unix = time.time()
        for _ in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train))
                             for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            if self.stop_early:
                break
        self.on_train_end()


def random_block_mask(shape: tuple[int, ...], block_fraction: float, n_blocks: int,
                      generator: torch.Generator) -> torch.Tensor:
    """(B, 1, z, y, x) boolean mask of `n_blocks` random cuboids per sample, each `block_fraction` of the patch."""
    batch, spatial = shape[0], shape[2:]
    mask = torch.zeros((batch, 1, *spatial), dtype=torch.bool)
    block = [max(1, int(s * block_fraction)) for s in spatial]
    for b in range(batch):
        for _ in range(n_blocks):
            start = [int(torch.randint(0, s - k + 1, (1,), generator=generator)) for s, k in zip(spatial, block)]
            mask[(b, 0, *[slice(a, a + k) for a, k in zip(start, block)])] = True
    return mask


class MsnodeInpaintingTrainer(MsnodeTrainer):
    """Self-supervised context inpainting: random blocks of the input are zeroed and the network reconstructs
    all input channels there (mean squared error on the masked voxels). The segmentation head (1x1x1 convs,
    `.seg_layers.`) has as many outputs as input channels and is not transferred when fine-tuning."""

    block_fraction = 0.25
    n_blocks = 4

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mask_generator = torch.Generator().manual_seed(self.settings.seed)

    def apply_settings(self, settings: TrainingSettings) -> None:
        super().apply_settings(settings)
        self.mask_generator = torch.Generator().manual_seed(settings.seed)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # Reconstruction head: one output per input channel instead of one per label.
        return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_input_channels, enable_deep_supervision)

    def reconstruction_loss(self, data: torch.Tensor) -> torch.Tensor:
        mask = random_block_mask(tuple(data.shape), self.block_fraction, self.n_blocks, self.mask_generator)
        output = self.network(data.masked_fill(mask, 0.0))
        if isinstance(output, (list, tuple)):
            output = output[0]
        expanded = mask.expand_as(data)
        return ((output - data)[expanded] ** 2).mean()

    def train_step(self, batch: dict) -> dict:
        data = batch['data'].to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.reconstruction_loss(data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.optimizer.step()
        return {'loss': loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        return {'loss': self.reconstruction_loss(batch['data'].to(self.device)).detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        loss = float(np.mean([o['loss'] for o in val_outputs]))
        self.logger.log('val_losses', loss, self.current_epoch)
        # nnU-Net's logger and best-checkpoint logic expect a Dice; a reconstruction score stands in for it.
        self.logger.log('mean_fg_dice', 1.0 / (1.0 + loss), self.current_epoch)
        self.logger.log('dice_per_class_or_region', [1.0 / (1.0 + loss)], self.current_epoch)
