"""End to end: generate data, pretrain, fine-tune, search post-processing, evaluate, export with model card."""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from msnode_training.export import (
    build_model_card,
    export_nnunet_checkpoint,
    export_onnx,
    load_trained_model,
    parity_check,
    validate_model_card,
    write_model_card_markdown,
)
from msnode_training.held_out import evaluate_onnx_model, synthetic_test_entries
from msnode_training.inference import foreground_probability, lesion_mask, torch_runner
from msnode_training.metrics import score_case, summarize
from msnode_training.nnunet_data import (
    NETWORK_SIZES,
    plan_and_preprocess,
    transfer_plans_and_preprocess,
    write_raw_dataset,
    write_split,
)
from msnode_training.paths import lesjak_longitudinal_dir, set_nnunet_environment, worker_pool
from msnode_training.readers import (
    LongitudinalCase,
    list_msseg2_cases,
    read_lesjak_longitudinal_case,
    read_msseg2_case,
)
from msnode_training.search import (
    ValidationCase,
    search_best,
    search_postprocessing,
)
from msnode_training.synth import SynthConfig, generate_case, stream_seed
from msnode_training.train import default_device, train
from msnode_training.trainers import MsnodeTrainer, TrainingSettings

PRETRAIN_DATASET_ID = 501
FINETUNE_DATASET_ID = 502


@dataclass
class PipelineConfig:
    work_dir: Path
    export_dir: Path
    seed: int = 0
    spacing_mm: float = 2.0
    network_size: str = "tiny"
    pretraining: str = "other_pathology"
    pretrain_cases: int = 4
    finetune_ms_cases: int = 4
    finetune_semi_synthetic_cases: int = 2
    validation_cases: int = 2
    synthetic_test_cases: int = 2  # held out from everything, scored through ONNX Runtime after export
    real_train_patients: tuple[str, ...] = ("patient01",)
    real_test_patients: tuple[str, ...] = ("patient03",)
    parity_patient: str = "patient01"
    msseg2_root: Path | None = None
    pretrain_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=2, iterations_per_epoch=5, val_iterations_per_epoch=1))
    finetune_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=3, iterations_per_epoch=5, val_iterations_per_epoch=1, f1_every_epochs=1, strategy="full"))
    learning_rates: tuple[float, ...] = ()
    finetune_strategies: tuple[str, ...] = ()  # searched with the learning rates; default: finetune_settings'
    thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    min_volumes_mm3: tuple[float, ...] = (3.0, 10.0, 30.0)
    # How this run relates to a full training (e.g. "reduced CPU configuration"); shown in the model card.
    training_scale: str = ""
    model_name: str = "msnode-tiny"
    model_version: str = "0.1.0"

    def __post_init__(self) -> None:
        if self.pretraining not in PRETRAINING_STAGES:
            raise ValueError(f"pretraining must be one of {sorted(PRETRAINING_STAGES)}")
        if self.network_size not in NETWORK_SIZES:
            raise ValueError(f"network_size must be one of {sorted(NETWORK_SIZES)}")

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def package_versions() -> dict[str, str]:
    names = ["msnode-training", "torch", "nnunetv2", "dynamic-network-architectures", "numpy", "SimpleITK",
             "nibabel", "scipy", "onnx", "onnxruntime", "nilearn"]
    return {n: metadata.version(n) for n in names}


def synthetic_cases(scenario: str, seed: int, indices: range, spacing_mm: float) -> list[LongitudinalCase]:
    """Cases are independent and deterministic per (seed, index), so they are made in parallel when
    `MSNODE_DATA_WORKERS` allows, with the same result."""
    config = SynthConfig(scenario=scenario, spacing_mm=spacing_mm)
    with worker_pool() as pool:
        return pool.map(generate_case, [seed] * len(indices), list(indices), [config] * len(indices))


def lesjak_cases(patients: tuple[str, ...]) -> Iterator[LongitudinalCase]:
    for patient in patients:
        case = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / patient)
        case.case_id = f"lesjak_{patient}"
        yield case


def best_checkpoint(trainer: MsnodeTrainer) -> Path:
    folder = Path(trainer.output_folder)
    best = folder / "checkpoint_best_f1.pth"
    return best if best.is_file() else folder / "checkpoint_final.pth"


def probability_for(case: LongitudinalCase, model, spacing_mm: float) -> ValidationCase:
    probability = foreground_probability(case.prior, case.current, case.geometry, model.geometry(),
                                         torch_runner(model.network))
    assert case.label is not None
    return ValidationCase(case.case_id, probability, case.label, case.geometry.spacing_zyx)


def finetune_and_keep(dataset_id: int, identifier: str, settings: TrainingSettings,
                      pretrained_checkpoint: Path | None, kept: Path) -> tuple[MsnodeTrainer, Path]:
    """One fine-tuning run (fold 0 of `dataset_id`); its best checkpoint is copied to `kept`, since the next run on
    the same dataset writes to the same nnU-Net output folder."""
    trainer = train(dataset_id, identifier, "segmentation", settings, pretrained_checkpoint)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best_checkpoint(trainer), kept)
    return trainer, kept


def evaluate_cases(model, cases: Iterable[LongitudinalCase], spacing_mm: float, threshold: float,
                   min_lesion_volume_mm3: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """MSSEG-2 scores of `model` with the given post-processing: the summary and the scores per case id."""
    scores = []
    per_case = {}
    for case in cases:
        scored = probability_for(case, model, spacing_mm)
        prediction = lesion_mask(scored.probability, scored.spacing_zyx, threshold, min_lesion_volume_mm3)
        scores.append(score_case(scored.truth, prediction, scored.spacing_zyx))
        per_case[case.case_id] = scores[-1].as_dict()
    return summarize(scores), per_case


# Pretraining strategies as ordered stages (synthetic scenario, objective); "both" chains context inpainting on
# unlabeled pairs and then another pathology, each stage starting from the previous stage's weights.
PRETRAIN_UNLABELED_DATASET_ID = 503
PRETRAINING_STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (),
    "other_pathology": (("other_pathology", "segmentation"),),
    "inpainting": (("unlabeled", "inpainting"),),
    "both": (("unlabeled", "inpainting"), ("other_pathology", "segmentation")),
}
PRETRAIN_DATASETS = {"other_pathology": PRETRAIN_DATASET_ID, "unlabeled": PRETRAIN_UNLABELED_DATASET_ID}


def prepare_pretraining_dataset(scenario: str, seed: int, n_cases: int, spacing_mm: float,
                                plans_source_dataset_id: int, identifier: str) -> list[str]:
    """Synthetic pretraining cases of `scenario` as their nnU-Net dataset, preprocessed with the plans of
    `plans_source_dataset_id` (plans transfer, so that every model shares one network and spacing), with the
    last case as the (unused for F1) validation split. Returns the case ids."""
    dataset_id = PRETRAIN_DATASETS[scenario]
    cases = list(synthetic_cases(scenario, seed, range(n_cases), spacing_mm))
    ids = [c.case_id for c in cases]
    write_raw_dataset(cases, dataset_id, f"msnodePretrain_{scenario}", (spacing_mm,) * 3,
                      f"pretraining: {scenario}")
    transfer_plans_and_preprocess(plans_source_dataset_id, dataset_id, identifier,
                                  fingerprint=scenario != "unlabeled")
    write_split(dataset_id, ids[:-1], ids[-1:])
    return ids


def run_pretraining_stage(scenario: str, objective: str, identifier: str, settings: TrainingSettings,
                          pretrained_checkpoint: Path | None, kept: Path) -> tuple[MsnodeTrainer, Path]:
    """Train one pretraining stage on its prepared dataset; the final checkpoint is copied to `kept`."""
    trainer = train(PRETRAIN_DATASETS[scenario], identifier, objective, settings, pretrained_checkpoint)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(trainer.output_folder) / "checkpoint_final.pth", kept)
    return trainer, kept


class StageTimer:
    """Wall-clock seconds per pipeline stage, kept in the model card's provenance."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.monotonic()

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        self.seconds[stage] = round(now - self.last, 1)
        self.last = now


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    started = datetime.now(timezone.utc)
    timer = StageTimer()
    torch.manual_seed(config.seed)
    set_nnunet_environment(config.work_dir / "nnunet")
    size = NETWORK_SIZES[config.network_size]
    spacing = (config.spacing_mm,) * 3
    log: dict[str, Any] = {"config": config.as_dict()}

    # Fine-tuning data: synthetic MS pairs, semi-synthetic pairs from real lesions, real two-visit cases.
    ms_seed, validation_seed, semi_seed = (stream_seed(config.seed, s)
                                           for s in ("finetune_ms", "validation", "semi_synthetic"))
    validation = list(synthetic_cases("ms", validation_seed, range(config.validation_cases), config.spacing_mm))
    train_cases: list[LongitudinalCase] = []
    train_cases += synthetic_cases("ms", ms_seed, range(config.finetune_ms_cases), config.spacing_mm)
    train_cases += synthetic_cases("semi_synthetic", semi_seed, range(config.finetune_semi_synthetic_cases),
                                   config.spacing_mm)
    train_cases += lesjak_cases(config.real_train_patients)
    if config.msseg2_root is not None:
        train_cases += (read_msseg2_case(p) for p in list_msseg2_cases(config.msseg2_root))
    write_raw_dataset(train_cases + validation, FINETUNE_DATASET_ID, "msnodeFinetune", spacing,
                      "new or enlarging MS lesions: synthetic, semi-synthetic and real two-visit FLAIR")
    timer.mark("finetune_data")
    train_ids = [c.case_id for c in train_cases]
    validation_ids = [c.case_id for c in validation]
    del train_cases

    # One plans file, made on the fine-tuning data and transferred to each pretraining dataset (as the experiments
    # do), then the pretraining stages in order: another pathology (supervised), context inpainting
    # (self-supervised), or both chained.
    identifier = plan_and_preprocess(FINETUNE_DATASET_ID, size)
    timer.mark("plan_and_preprocess")
    pretrained_checkpoint = None
    pretraining_log = []
    for k, (scenario, objective) in enumerate(PRETRAINING_STAGES[config.pretraining]):
        pretrain_ids = prepare_pretraining_dataset(scenario, stream_seed(config.seed, "pretraining"),
                                                   config.pretrain_cases, config.spacing_mm, FINETUNE_DATASET_ID,
                                                   identifier)
        kept = config.work_dir / "pretrained" / f"stage{k}_{scenario}_{objective}" / "checkpoint.pth"
        pretrainer, pretrained_checkpoint = run_pretraining_stage(
            scenario, objective, identifier, replace(config.pretrain_settings, seed=config.seed),
            pretrained_checkpoint, kept)
        pretraining_log.append({"scenario": scenario, "objective": objective, "cases": pretrain_ids,
                                "epochs_run": pretrainer.current_epoch, "checkpoint": str(kept)})
    timer.mark("pretraining")
    log["pretraining"] = pretraining_log
    write_split(FINETUNE_DATASET_ID, train_ids, validation_ids)

    # Fine-tuning: learning rate x fine-tuning strategy on validation F1; each run's best checkpoint is kept aside.
    runs_dir = config.work_dir / "finetune_runs"
    runs: dict[tuple[float, str], tuple[MsnodeTrainer, Path]] = {}
    learning_rates = config.learning_rates or (config.finetune_settings.initial_lr,)
    strategies = config.finetune_strategies or (config.finetune_settings.strategy,)
    if pretrained_checkpoint is None:
        strategies = ("full",)  # nothing pretrained to freeze or to slow down

    def train_and_score(candidate: tuple[float, str]) -> float:
        learning_rate, strategy = candidate
        settings = replace(config.finetune_settings, initial_lr=learning_rate, strategy=strategy, seed=config.seed)
        runs[candidate] = finetune_and_keep(FINETUNE_DATASET_ID, identifier, settings, pretrained_checkpoint,
                                            runs_dir / f"lr_{learning_rate:g}_{strategy}" / "checkpoint.pth")
        best_f1 = runs[candidate][0].best_f1
        return float(best_f1 if best_f1 is not None else 0.0)

    (chosen_lr, chosen_strategy), scores = search_best(
        [(lr, strategy) for lr in learning_rates for strategy in strategies], train_and_score)
    trainer, checkpoint = runs[(chosen_lr, chosen_strategy)]
    timer.mark("finetuning")
    log["finetuning"] = {"search_validation_f1": {f"lr={lr:g},{st}": v for (lr, st), v in scores.items()},
                         "chosen_learning_rate": chosen_lr, "chosen_strategy": chosen_strategy,
                         "checkpoint": str(checkpoint), "epochs_run": trainer.current_epoch,
                         "f1_history": trainer.f1_history, "stopped_early": trainer.stop_early,
                         "train_cases": train_ids, "validation_cases": validation_ids}
    model = load_trained_model(Path(trainer.output_folder_base), checkpoint)
    model.network.to(default_device())  # evaluation on the training GPU where there is one

    # Post-processing search on the synthetic validation cases, then evaluation on real held-out patients.
    validation_probabilities = [probability_for(c, model, config.spacing_mm) for c in validation]
    choice = search_postprocessing(validation_probabilities, config.thresholds, config.min_volumes_mm3)
    timer.mark("postprocessing_search")
    test_summary, per_case = evaluate_cases(model, lesjak_cases(config.real_test_patients), config.spacing_mm,
                                            choice.threshold, choice.min_lesion_volume_mm3)

    timer.mark("test_evaluation")
    # Export, parity on a real input, model card.
    config.export_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = config.export_dir / "model.onnx"
    model.network.cpu()  # export and the parity check against ONNX Runtime run on CPU
    export_onnx(model, onnx_path)
    parity_case = next(lesjak_cases((config.parity_patient,)))
    parity = parity_check(model, onnx_path, parity_case, choice.threshold, choice.min_lesion_volume_mm3)
    timer.mark("export_and_parity")
    held_out = {}
    if config.synthetic_test_cases:
        test_seed = stream_seed(config.seed, "synthetic_test")
        test_cases = synthetic_cases("ms", test_seed, range(config.synthetic_test_cases), config.spacing_mm)
        held_out = synthetic_test_entries(evaluate_onnx_model(onnx_path, model.geometry(), choice.threshold,
                                                              choice.min_lesion_volume_mm3, test_cases), test_seed)
        timer.mark("synthetic_test")
    log["stage_seconds"] = timer.seconds
    evaluation = {
        "rules": "MSSEG-2 (animaSegPerfAnalyzer): lesion-wise detection alpha 0.10, beta 0.70, gamma 0.65; "
                 "components of 3 mm3 or less ignored; 6-neighbour connectivity",
        "test_time_mirroring": False,
        "lesjak_longitudinal_test": test_summary,
        "lesjak_longitudinal_test_per_case": per_case,
        "synthetic_validation_tuning_set": choice.summary,
        "postprocessing_search": [{k: row[k] for k in ("threshold", "min_lesion_volume_mm3", "mean_f1",
                                                        "mean_n_false_positives")} for row in choice.table],
        "onnx_parity": parity,
        **held_out,
    }
    provenance = {
        "training_data": {
            "finetune": {"synthetic_ms": config.finetune_ms_cases,
                         "semi_synthetic": config.finetune_semi_synthetic_cases,
                         "lesjak_longitudinal": list(config.real_train_patients),
                         "msseg2_root": str(config.msseg2_root) if config.msseg2_root else None,
                         "validation_synthetic_ms": config.validation_cases},
            "pretraining": {"strategy": config.pretraining, "cases": config.pretrain_cases,
                            "stages": [list(stage) for stage in PRETRAINING_STAGES[config.pretraining]]},
            "anatomy": "MNI152 2009 template and tissue maps (nilearn wheel); Lesjak cross-sectional FLAIRs (CC-BY)",
        },
        "training_scale": config.training_scale,
        "engine": "nnU-Net v2 (planner, augmentation, Dice+CE loss, deep supervision) with msnode trainer classes",
        "network": {"size": config.network_size, "features_per_stage": list(size.features_per_stage),
                    "plans_identifier": identifier},
        "pretraining_strategy": config.pretraining,
        "finetuning_strategy": chosen_strategy,
        "iterations": {"pretrain": config.pretrain_settings.epochs * config.pretrain_settings.iterations_per_epoch
                       * len(PRETRAINING_STAGES[config.pretraining]),
                       "finetune_epochs_run": trainer.current_epoch,
                       "finetune_iterations_per_epoch": config.finetune_settings.iterations_per_epoch},
        "seed": config.seed,
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "device": str(trainer.device), "torch_threads": torch.get_num_threads()},
        "date": started.isoformat(timespec="seconds"),
        "package_versions": package_versions(),
        "log": log,
    }
    card = build_model_card(config.model_name, config.model_version, onnx_path, model, choice.threshold,
                            choice.min_lesion_volume_mm3, provenance, evaluation)
    problems = validate_model_card(card, config.export_dir)
    if problems:
        raise ValueError(f"model card invalid: {problems}")
    (config.export_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    export_nnunet_checkpoint(Path(trainer.output_folder_base), checkpoint, config.export_dir / "nnunet",
                             config.model_name)
    write_model_card_markdown(card, config.export_dir / "MODEL_CARD.md")
    result = {"card": card, "export_dir": str(config.export_dir), "checkpoint": str(checkpoint),
              "results_folder": str(trainer.output_folder_base),
              "seconds": (datetime.now(timezone.utc) - started).total_seconds()}
    (config.work_dir / "pipeline_result.json").write_text(json.dumps(result, indent=2, default=str))
    return result
