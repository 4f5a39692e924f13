"""One-command training of the real-background model (issue 19): real-background two-visit pairs on the anisotropic
3 x 1 x 1 mm (z, y, x) pair grid, pretraining (self-supervised context inpainting on the training pairs' images,
supervised on real-background other-pathology pairs, or none) then fine-tuning for new and enlarging lesions,
post-processing chosen on validation pairs only, evaluation on held-out pairs and on the real Lesjak patient03 pair
(never used for training or tuning), ONNX export with its parity check and the model card.

Every stage writes a marker under the work folder, so a rerun of the same command resumes: finished stages are
skipped and a training stage continues from its `checkpoint_latest.pth`. Progress (epoch, seconds, ETA) goes to
stdout; `--budget-minutes` bounds the whole run (training stages stop early when the next epoch would not fit).

    PYTHONPATH=training/src OMP_NUM_THREADS=1 python -m msnode_training.realbg --work training/work/realbg \\
        --out models/realbg --threads 1 --budget-minutes 90
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from msnode_training.baseline import DATA_CITATION, score_with_bins, summarize_with_bins
from msnode_training.export import (
    build_model_card,
    export_onnx,
    load_trained_model,
    parity_check,
    validate_model_card,
    write_model_card_markdown,
)
from msnode_training.inference import foreground_probability, lesion_mask, onnx_runner, torch_runner
from msnode_training.nnunet_data import (
    NETWORK_SIZES,
    plan_and_preprocess,
    transfer_plans_and_preprocess,
    write_raw_dataset,
    write_split,
)
from msnode_training.paths import lesjak_longitudinal_dir, set_nnunet_environment
from msnode_training.readers import LongitudinalCase, read_lesjak_longitudinal_case
from msnode_training.realpairs import RealPairConfig, generate_pairs, read_pair
from msnode_training.search import ValidationCase, search_postprocessing
from msnode_training.synth import stream_seed
from msnode_training.train import train
from msnode_training.trainers import MsnodeTrainer, TrainingSettings

DATASET_ID = 512
DATASET_NAME = "msnodeRealBg"
PRETRAIN_DATASET_ID = 513  # other-pathology pretraining pairs, preprocessed with the fine-tuning plans
PRETRAINING_STRATEGIES = ("inpainting", "other_pathology", "none")
PRETRAINING_OBJECTIVE = {"inpainting": "inpainting", "other_pathology": "segmentation"}
PRETRAINING_DESCRIPTION = {"inpainting": "inpainting on the training pairs (self-supervised)",
                           "other_pathology": "segmentation of another pathology (mass or wedge) on real-background "
                                              "pairs (supervised)",
                           "none": "none"}
POSTPROCESSING_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
POSTPROCESSING_MIN_VOLUMES_MM3: tuple[float, ...] = (3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0)


@dataclass
class RealBgConfig:
    work_dir: Path
    export_dir: Path
    seed: int = 0
    network_size: str = "realbg"
    train_pairs: int = 24
    validation_pairs: int = 6
    test_pairs: int = 8
    # "inpainting" (self-supervised, on the training pairs), "other_pathology" (supervised, on `pretrain_pairs`
    # real-background pairs whose only labelled change is a mass or a wedge: the transfer experiment's best start)
    # or "none"
    pretraining: str = "inpainting"
    pretrain_pairs: int = 16
    pretrain_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=4, iterations_per_epoch=30, val_iterations_per_epoch=1, save_every_epochs=1))
    finetune_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=16, iterations_per_epoch=30, val_iterations_per_epoch=1, f1_every_epochs=2, f1_threshold=0.3,
        foreground_oversampling=0.8, early_stopping_patience=5, lr_reduce_patience=2, save_every_epochs=1,
        validate_last_epoch=True))
    # Post-processing grid, searched on the validation pairs only. The first model's choice (0.2) was the lowest
    # threshold of its grid, so the grid now goes down to 0.05; minimum volumes keep lesions from MSSEG-2's 3 mm3.
    thresholds: tuple[float, ...] = POSTPROCESSING_THRESHOLDS
    min_volumes_mm3: tuple[float, ...] = POSTPROCESSING_MIN_VOLUMES_MM3
    budget_minutes: float = 90.0
    # Share of the budget the training stages may use (the rest: data, preprocessing, evaluation, export).
    training_share: float = 0.75
    pretrain_share: float = 0.2  # of the training time
    data_workers: int = 1
    model_name: str = "msnode-realbg"
    model_version: str = "0.1.0"
    training_scale: str = ""
    # Training-pair levers (0.3.0); the validation and test pairs always use the default generator, so their
    # pairs (and cache key) stay those every earlier model was scored on.
    train_new_lesions: tuple[int, int] = (1, 6)
    train_affine_fraction: float = 0.0  # scaling / shear residual on top of the rigid one (0.01 = 1 %)
    train_faint_share: float = 0.0  # share of new lesions with a faint contrast (RealPairConfig.faint_contrast)
    # "whole": the proxy's best and the last checkpoint scored on the whole validation pairs, false-positive-aware
    # (`checkpoint_choice.py`); "proxy": the proxy's best checkpoint as before.
    checkpoint_choice: str = "whole"

    def __post_init__(self) -> None:
        if self.pretraining not in PRETRAINING_STRATEGIES:
            raise ValueError(f"pretraining must be one of {PRETRAINING_STRATEGIES}")
        if self.pretraining == "other_pathology" and self.pretrain_pairs < 2:
            raise ValueError("other-pathology pretraining needs at least 2 pairs (one validates)")
        if self.checkpoint_choice not in ("whole", "proxy"):
            raise ValueError("checkpoint_choice must be 'whole' or 'proxy'")
        if self.network_size not in NETWORK_SIZES:
            raise ValueError(f"network_size must be one of {sorted(NETWORK_SIZES)}")

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def network_pair_spacing(network_size: str) -> tuple[float, float, float]:
    """The pair grid of a network size: its own spacing, else the pair generator's default."""
    spacing = NETWORK_SIZES[network_size].spacing_zyx
    return spacing if spacing is not None else RealPairConfig().spacing_zyx


def pair_spacing(config: RealBgConfig) -> tuple[float, float, float]:
    return network_pair_spacing(config.network_size)


def train_pair_config(config: RealBgConfig) -> RealPairConfig:
    """The training pairs' generator: the default one with the config's training levers."""
    return RealPairConfig(spacing_zyx=pair_spacing(config), new_lesions=tuple(config.train_new_lesions),
                          max_affine_fraction=config.train_affine_fraction,
                          faint_lesion_share=config.train_faint_share)


def pair_seeds(run_seed: int) -> dict[str, int]:
    """The three disjoint pair streams of a run seed (the baseline uses the same validation and test streams)."""
    return {split: stream_seed(run_seed, f"real_pairs_{split}") for split in ("train", "validation", "test")}


def other_pathology_seed(run_seed: int) -> int:
    """The other-pathology pretraining pairs' stream (the transfer experiment's too, so its pairs are reused)."""
    return stream_seed(run_seed, "real_pairs_other_pathology")


def write_other_pathology_dataset(dirs: Sequence[Path], source_dataset_id: int, target_dataset_id: int, name: str,
                                  spacing_zyx: tuple[float, float, float], identifier: str) -> None:
    """Other-pathology pairs as nnU-Net dataset `target_dataset_id`, preprocessed with the plans `identifier` of
    `source_dataset_id` (the fine-tuning dataset), so that pretraining and fine-tuning train one network; the last
    pair validates."""
    write_raw_dataset([read_pair(d)[0] for d in dirs], target_dataset_id, name, spacing_zyx,
                      "another pathology (mass or wedge) on real backgrounds")
    transfer_plans_and_preprocess(source_dataset_id, target_dataset_id, identifier)
    names = [d.name for d in dirs]
    write_split(target_dataset_id, names[:-1], names[-1:])


def prepare_other_pathology_pretraining(config: RealBgConfig, stages: Stages, pairs_root: Path,
                                        pair_config: RealPairConfig, identifier: str) -> dict[str, Any]:
    """The other-pathology pairs (cached) as nnU-Net dataset `PRETRAIN_DATASET_ID` (`write_other_pathology_dataset`),
    once: a rerun reuses the stage's record."""
    seed = other_pathology_seed(config.seed)
    dirs, record = generate_pairs(pairs_root, seed, range(config.pretrain_pairs), pair_config, config.data_workers,
                                  "other_pathology")
    log(f"pairs pretrain: {config.pretrain_pairs} other_pathology ({record})")
    if not stages.finished("preprocess_pretrain"):
        t = time.monotonic()
        write_other_pathology_dataset(dirs, DATASET_ID, PRETRAIN_DATASET_ID, "msnodeRealBgOtherPathology",
                                      pair_config.spacing_zyx, identifier)
        stages.mark("preprocess_pretrain", {"seed": seed, "pairs": config.pretrain_pairs, "generation": record,
                                            "seconds": round(time.monotonic() - t, 1)})
    return stages.done["preprocess_pretrain"]


class Stages:
    """Markers of finished stages (`stages.json`): a rerun skips them and reuses what they recorded."""

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / "stages.json"
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.started = time.monotonic()

    def finished(self, name: str) -> bool:
        return name in self.done

    def mark(self, name: str, record: Any) -> None:
        self.done[name] = record
        self.path.write_text(json.dumps(self.done, indent=1, default=str))


def log(message: str) -> None:
    print(f"{datetime.now(timezone.utc).strftime('%H:%M:%S')} {message}", flush=True)


def patient_case(patient: str) -> LongitudinalCase:
    case = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / patient)
    case.case_id = f"lesjak_{patient}"
    return case


def probability_of(case: LongitudinalCase, model, runner=None) -> np.ndarray:
    return foreground_probability(case.prior, case.current, case.geometry, model.geometry(),
                                  runner or torch_runner(model.network))


def score_cases(cases: Sequence[LongitudinalCase], probabilities: Sequence[np.ndarray], threshold: float,
                min_volume_mm3: float) -> dict[str, Any]:
    """MSSEG-2 scores with size bins and false-positive lesions (the baseline's scorer), summary and per case."""
    per_case = {}
    for case, probability in zip(cases, probabilities):
        assert case.label is not None
        mask = lesion_mask(probability, case.geometry.spacing_zyx, threshold, min_volume_mm3)
        per_case[case.case_id] = score_with_bins(case.label, mask, case.geometry.spacing_zyx)
    return {"summary": summarize_with_bins(list(per_case.values())), "cases": per_case}


def stage_deadline(start_unix: float, config: RealBgConfig, share: float) -> float:
    return start_unix + config.budget_minutes * 60 * config.training_share * share


def run_training_stage(stages: Stages, name: str, objective: str, identifier: str, settings: TrainingSettings,
                       pretrained: Path | None, kept: Path, dataset_id: int = DATASET_ID,
                       fold: int = 0) -> dict[str, Any]:
    """One resumable training stage of fold `fold` of nnU-Net dataset `dataset_id`; its chosen checkpoint is copied
    to `kept`."""
    if stages.finished(name):
        log(f"{name}: done before, reusing {kept}")
        return stages.done[name]
    log(f"{name}: {settings.epochs} epochs x {settings.iterations_per_epoch} iterations, deadline "
        f"{datetime.fromtimestamp(settings.deadline_unix, timezone.utc).strftime('%H:%M:%S') if settings.deadline_unix else 'none'}")
    started = time.monotonic()
    trainer: MsnodeTrainer = train(dataset_id, identifier, objective, settings, pretrained, fold=fold,
                                   resume=True)
    folder = Path(trainer.output_folder)
    best = folder / "checkpoint_best_f1.pth"
    chosen = best if objective == "segmentation" and best.is_file() else folder / "checkpoint_final.pth"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen, kept)
    record = {"checkpoint": str(kept), "from": chosen.name, "results_folder": str(trainer.output_folder_base),
              "epochs_run": trainer.current_epoch, "planned_epochs": settings.epochs,
              "iterations_per_epoch": settings.iterations_per_epoch, "f1_history": trainer.f1_history,
              "best_f1": trainer.best_f1, "validation_details": trainer.validation_details,
              "stopped_early": trainer.stop_early,
              "stopped_on_time_budget": trainer.stopped_on_deadline, "epoch_seconds": trainer.epoch_seconds,
              "seconds": round(time.monotonic() - started, 1), "settings": settings.as_dict()}
    stages.mark(name, record)
    return record


def choose_checkpoint(stages: Stages, config: RealBgConfig, finetune: dict[str, Any],
                      validation: Sequence[LongitudinalCase]):
    """The proxy's best and the last fine-tuning checkpoint, each on the whole validation pairs with its own
    false-positive-aware post-processing (`checkpoint_choice.py`); the better one is kept. Returns (model, choice as
    `search_postprocessing` gives it, the chosen model's validation probabilities, seconds per pair)."""
    from msnode_training.checkpoint_choice import (Candidate, ScoredProbability, candidate_epochs, choose_candidate,
                                                   fp_aware_postprocessing)
    from msnode_training.search import PostprocessingChoice

    folder = Path(finetune["results_folder"]) / "fold_0"
    files = {"last": folder / "checkpoint_final.pth", "best_proxy": folder / "checkpoint_best_f1.pth"}
    epochs = candidate_epochs(finetune.get("f1_history") or [], int(finetune["epochs_run"]) - 1)
    kept: dict[str, list] = {}
    if stages.finished("checkpoint_choice"):
        chosen_name = stages.done["checkpoint_choice"]["chosen"]
        names = [chosen_name]
    else:
        names = [n for n in ("best_proxy", "last") if n in epochs and files[n].is_file()]
        chosen_name = None
    candidates: list[Candidate] = []
    seconds_per_case = 0.0
    started = time.monotonic()
    for name in names:
        model = load_trained_model(Path(finetune["results_folder"]), files[name])
        model.network.cpu()
        t = time.monotonic()
        probabilities = [probability_of(c, model) for c in validation]
        seconds_per_case = (time.monotonic() - t) / max(len(validation), 1)
        result = fp_aware_postprocessing(
            [ScoredProbability(c.case_id, p, c.label, c.geometry.spacing_zyx) for c, p in zip(validation, probabilities)],
            config.thresholds, config.min_volumes_mm3)
        candidates.append(Candidate(name, str(files[name]), epochs[name], result))
        kept[name] = [model, probabilities, result]
        log(f"candidate {name} (epoch {epochs[name] + 1}): threshold {result.threshold}, min volume "
            f"{result.min_lesion_volume_mm3} mm3, pair F1 {result.summary['mean_pair_f1']:.3f}, "
            f"FP/pair {result.summary['mean_false_positives_per_pair']:.2f}, mean F1 {result.summary['mean_f1']} "
            f"({seconds_per_case:.0f} s per pair)")
    if chosen_name is None:
        chosen = choose_candidate(candidates)
        chosen_name = chosen.name
        shutil.copyfile(files[chosen_name], Path(finetune["checkpoint"]))
        stages.mark("checkpoint_choice", {"chosen": chosen_name, "epoch": chosen.epoch,
                                          "rule": "best (mean pair F1 over all validation pairs, -FP lesions per "
                                                  "pair); tie: later epoch",
                                          "candidates": [c.as_dict() for c in candidates],
                                          "seconds": round(time.monotonic() - started, 1)})
    log(f"checkpoint chosen on the whole validation pairs: {chosen_name}")
    model, probabilities, result = kept[chosen_name]
    choice = PostprocessingChoice(result.threshold, result.min_lesion_volume_mm3, result.summary, result.table)
    return model, choice, probabilities, seconds_per_case


def run_realbg(config: RealBgConfig) -> dict[str, Any]:
    started = datetime.now(timezone.utc)
    start_unix = time.time()
    import os

    os.environ.setdefault("MSNODE_DATA_WORKERS", str(config.data_workers))
    config.work_dir.mkdir(parents=True, exist_ok=True)
    set_nnunet_environment(config.work_dir / "nnunet")
    stages = Stages(config.work_dir)
    if "start_unix" in stages.done:  # a resumed run keeps the first start for its budget
        start_unix = float(stages.done["start_unix"])
    else:
        stages.mark("start_unix", start_unix)
    torch.manual_seed(config.seed)
    spacing = pair_spacing(config)
    pair_config = RealPairConfig(spacing_zyx=spacing)  # validation and test pairs
    train_config = train_pair_config(config)
    seeds = pair_seeds(config.seed)
    pairs_root = config.work_dir / "pairs"

    # 1. Real-background pairs (cached by parameters and seed).
    t = time.monotonic()
    dirs: dict[str, list[Path]] = {}
    generation: dict[str, Any] = {}
    for split, n in (("train", config.train_pairs), ("validation", config.validation_pairs),
                     ("test", config.test_pairs)):
        dirs[split], generation[split] = generate_pairs(pairs_root, seeds[split], range(n),
                                                        train_config if split == "train" else pair_config,
                                                        config.data_workers)
        log(f"pairs {split}: {n} ({generation[split]})")
    data_seconds = time.monotonic() - t

    # 2. nnU-Net dataset (train + validation pairs), plans with the realbg network, preprocessing, split.
    if not stages.finished("preprocess"):
        t = time.monotonic()
        cases = [read_pair(d)[0] for d in dirs["train"] + dirs["validation"]]
        write_raw_dataset(cases, DATASET_ID, DATASET_NAME, spacing,
                          "new or enlarging MS lesions: real-background two-visit pairs (real FLAIRs, real shapes)")
        del cases
        identifier = plan_and_preprocess(DATASET_ID, NETWORK_SIZES[config.network_size])
        write_split(DATASET_ID, [d.name for d in dirs["train"]], [d.name for d in dirs["validation"]])
        stages.mark("preprocess", {"identifier": identifier, "seconds": round(time.monotonic() - t, 1)})
    identifier = stages.done["preprocess"]["identifier"]
    log(f"preprocessed ({stages.done['preprocess']['seconds']} s); training budget "
        f"{config.budget_minutes * config.training_share:.0f} min from the start")

    # 3. Pretraining (context inpainting on the same images, labels unused; or segmentation of another pathology
    # on its own real-background pairs), then fine-tuning.
    pretrained = None
    records: dict[str, Any] = {}
    if config.pretraining != "none":
        pretrain_dataset = DATASET_ID
        if config.pretraining == "other_pathology":
            records["pretrain_data"] = prepare_other_pathology_pretraining(config, stages, pairs_root, pair_config,
                                                                           identifier)
            pretrain_dataset = PRETRAIN_DATASET_ID
        settings = replace(config.pretrain_settings, seed=config.seed,
                           progress_label=f"pretrain {config.pretraining.replace('_', '-')}",
                           deadline_unix=stage_deadline(start_unix, config, config.pretrain_share))
        if config.pretraining == "other_pathology":  # a segmentation objective samples foreground as fine-tuning
            settings = replace(settings, foreground_oversampling=config.finetune_settings.foreground_oversampling)
        records["pretrain"] = run_training_stage(stages, "pretrain", PRETRAINING_OBJECTIVE[config.pretraining],
                                                 identifier, settings, None,
                                                 config.work_dir / "pretrained" / "checkpoint.pth",
                                                 dataset_id=pretrain_dataset)
        pretrained = Path(records["pretrain"]["checkpoint"])
    settings = replace(config.finetune_settings, seed=config.seed, progress_label="fine-tune",
                       deadline_unix=stage_deadline(start_unix, config, 1.0))
    records["finetune"] = run_training_stage(stages, "finetune", "segmentation", identifier, settings, pretrained,
                                             config.work_dir / "finetuned" / "checkpoint.pth")

    # 4. Checkpoint and post-processing, on the validation pairs only.
    validation = [read_pair(d)[0] for d in dirs["validation"]]
    if config.checkpoint_choice == "whole":
        model, choice, validation_probabilities, seconds_per_case = choose_checkpoint(
            stages, config, records["finetune"], validation)
        records["checkpoint_choice"] = stages.done["checkpoint_choice"]
    else:
        model = load_trained_model(Path(records["finetune"]["results_folder"]),
                                   Path(records["finetune"]["checkpoint"]))
        model.network.cpu()
        t = time.monotonic()
        validation_probabilities = [probability_of(c, model) for c in validation]
        seconds_per_case = (time.monotonic() - t) / max(len(validation), 1)
        choice = search_postprocessing(
            [ValidationCase(c.case_id, p, c.label, c.geometry.spacing_zyx)
             for c, p in zip(validation, validation_probabilities)], config.thresholds, config.min_volumes_mm3)
    log(f"post-processing: threshold {choice.threshold}, min volume {choice.min_lesion_volume_mm3} mm3 "
        f"(validation mean F1 {choice.summary['mean_f1']})")
    validation_scores = score_cases(validation, validation_probabilities, choice.threshold,
                                    choice.min_lesion_volume_mm3)
    del validation_probabilities

    # 5. Export and parity (ONNX Runtime against PyTorch on the real patient01 pair, a training background).
    config.export_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = config.export_dir / "model.onnx"
    export_onnx(model, onnx_path)
    parity = parity_check(model, onnx_path, patient_case("patient01"), choice.threshold,
                          choice.min_lesion_volume_mm3)
    log(f"parity: {parity['card_threshold']} passes={parity['passes']}")

    # 6. Held-out pairs and real patient03 through ONNX Runtime (what the node runs).
    from msnode_training.export import onnx_session

    runner = onnx_runner(onnx_session(onnx_path))
    test = [read_pair(d)[0] for d in dirs["test"]]
    test_scores = score_cases(test, [probability_of(c, model, runner) for c in test], choice.threshold,
                              choice.min_lesion_volume_mm3)
    del test
    patient03 = patient_case("patient03")
    t = time.monotonic()
    p03_probability = probability_of(patient03, model, runner)
    p03_seconds = time.monotonic() - t
    p03_scores = score_cases([patient03], [p03_probability], choice.threshold, choice.min_lesion_volume_mm3)
    log(f"patient03: {json.dumps({k: p03_scores['summary'][k] for k in ('mean_f1', 'mean_sensitivity', 'mean_ppv')})}")
    log(f"held-out pairs: {json.dumps({k: test_scores['summary'][k] for k in ('mean_f1', 'mean_sensitivity', 'mean_ppv')})}")

    evaluation = {
        "rules": "MSSEG-2 (animaSegPerfAnalyzer): lesion-wise detection alpha 0.10, beta 0.70, gamma 0.65; "
                 "components of 3 mm3 or less ignored; 6-neighbour connectivity; sensitivity by size pooled over "
                 "lesions; false-positive lesions = predicted components the PPV rule rejects",
        "test_time_mirroring": False,
        "lesjak_longitudinal_test": p03_scores["summary"],
        "lesjak_longitudinal_test_per_case": p03_scores["cases"],
        "lesjak_patient03_onnx_seconds_python": round(p03_seconds, 1),
        "held_out_real_background_pairs": test_scores["summary"],
        "held_out_real_background_pairs_seed": seeds["test"],
        "validation_real_background_pairs_tuning_set": validation_scores["summary"],
        "postprocessing_search": [{k: row[k] for k in ("threshold", "min_lesion_volume_mm3", "mean_f1",
                                                        "mean_n_false_positives")} for row in choice.table],
        "onnx_parity": parity,
        "validation_seconds_per_case_torch": round(seconds_per_case, 1),
    }
    size = NETWORK_SIZES[config.network_size]
    provenance = {
        "training_data": {
            "real_background_pairs": {"train": config.train_pairs, "validation": config.validation_pairs,
                                      "test": config.test_pairs, "seeds": seeds, "pair_config": asdict(pair_config),
                                      "pair_config_key": pair_config.key(),
                                      "train_pair_config": asdict(train_config),
                                      "train_pair_config_key": train_config.key(), "generation": generation},
            "backgrounds": list(pair_config.backgrounds),
            "shapes": "lesion-masks/longitudinal-change (patient03 excluded) and lesion-masks/cross-sectional-mni",
            "evaluation_only": "lesjak-longitudinal/patient03 (never a background, shape source or tuning case)",
            "citation": DATA_CITATION,
        },
        "training_scale": config.training_scale,
        "engine": "nnU-Net v2 (planner, augmentation, Dice+CE loss, deep supervision) with msnode trainer classes",
        "network": {"size": config.network_size, "features_per_stage": list(size.features_per_stage),
                    "strides": [list(s) for s in size.strides], "plans_identifier": identifier},
        "pretraining_strategy": PRETRAINING_DESCRIPTION[config.pretraining],
        "finetuning_strategy": config.finetune_settings.strategy,
        "stages": records,
        "seed": config.seed,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "device": "cpu",
                    "torch_threads": torch.get_num_threads()},
        "date": started.isoformat(timespec="seconds"),
        "config": config.as_dict(),
        "seconds": {"pair_generation": round(data_seconds, 1),
                    "preprocess": stages.done["preprocess"]["seconds"],
                    **{k: v["seconds"] for k, v in records.items() if "seconds" in v},
                    "total_this_invocation": round(time.time() - start_unix, 1)},
    }
    card = build_model_card(config.model_name, config.model_version, onnx_path, model, choice.threshold,
                            choice.min_lesion_volume_mm3, provenance, evaluation)
    problems = validate_model_card(card, config.export_dir)
    if problems:
        raise ValueError(f"model card invalid: {problems}")
    (config.export_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_model_card_markdown(card, config.export_dir / "MODEL_CARD.md")
    result = {"export_dir": str(config.export_dir), "threshold": choice.threshold,
              "min_lesion_volume_mm3": choice.min_lesion_volume_mm3, "patient03": p03_scores["summary"],
              "held_out": test_scores["summary"], "validation": validation_scores["summary"], "parity": parity,
              "seconds_since_first_start": round(time.time() - start_unix, 1)}
    (config.work_dir / "realbg_result.json").write_text(json.dumps(result, indent=2, default=str))
    log(f"done in {result['seconds_since_first_start']:.0f} s since the first start")
    return result


def add_run_arguments(parser: argparse.ArgumentParser, command: str, model_folder: str,
                      pretraining: Sequence[str] = ("inpainting", "none")) -> None:
    """The arguments every one-command training run takes (`msnode-realbg`, `msnode-single-visit`), with realbg's
    defaults; `work` and `out` default to `work/<command>` and `models/<model_folder>`, `pretraining` lists the
    command's pretraining strategies. A command changes its own defaults with `parser.set_defaults`."""
    from msnode_training.paths import models_dir, work_dir

    parser.add_argument("--work", type=Path, default=work_dir() / command)
    parser.add_argument("--out", type=Path, default=models_dir() / model_folder)
    parser.add_argument("--name", default="msnode-realbg")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="realbg", choices=sorted(NETWORK_SIZES))
    parser.add_argument("--pretraining", default="inpainting", choices=tuple(pretraining))
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--f1-every", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--lr-schedule", default="epoch", choices=("epoch", "time"),
                        help="poly decay over the planned epochs, or over the wall time to the stage's deadline")
    parser.add_argument("--validation-mode", default="whole", choices=("whole", "crops"),
                        help="validation F1 on whole volumes, or on fixed lesion and background boxes (cheap)")
    parser.add_argument("--crop-background-boxes", type=int, default=2)
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(POSTPROCESSING_THRESHOLDS))
    parser.add_argument("--min-volumes", type=float, nargs="+", default=list(POSTPROCESSING_MIN_VOLUMES_MM3))
    parser.add_argument("--budget-minutes", type=float, default=90.0)
    parser.add_argument("--pretrain-share", type=float, default=0.2)
    parser.add_argument("--training-share", type=float, default=0.75)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="case generation and preprocessing processes")
    parser.add_argument("--training-scale", default="")
    parser.add_argument("--checkpoint-choice", default="whole", choices=("whole", "proxy"),
                        help="whole: the proxy's best and the last checkpoint scored on the whole validation cases, "
                             "false-positive-aware; proxy: the proxy's best")


def run_fields(args: argparse.Namespace, pretrain: TrainingSettings, finetune: TrainingSettings,
               **finetune_changes: Any) -> dict[str, Any]:
    """The config fields `add_run_arguments` sets, for a run config's constructor (`RealBgConfig`,
    `single_visit.SingleVisitRunConfig`); `pretrain` and `finetune` are the config's default stage settings,
    `finetune_changes` the command's own fine-tuning arguments. Sets torch's thread count."""
    torch.set_num_threads(args.threads)
    return dict(
        work_dir=args.work, export_dir=args.out, seed=args.seed, network_size=args.size, pretraining=args.pretraining,
        pretrain_settings=replace(pretrain, epochs=args.pretrain_epochs, iterations_per_epoch=args.iterations,
                                  lr_schedule=args.lr_schedule),
        finetune_settings=replace(finetune, epochs=args.finetune_epochs, iterations_per_epoch=args.iterations,
                                  f1_every_epochs=args.f1_every, initial_lr=args.learning_rate,
                                  lr_schedule=args.lr_schedule, validation_mode=args.validation_mode,
                                  crop_background_boxes=args.crop_background_boxes, **finetune_changes),
        thresholds=tuple(args.thresholds), min_volumes_mm3=tuple(args.min_volumes),
        budget_minutes=args.budget_minutes, pretrain_share=args.pretrain_share, training_share=args.training_share,
        data_workers=args.workers, model_name=args.name, model_version=args.version,
        training_scale=args.training_scale, checkpoint_choice=args.checkpoint_choice)


def parse_args(argv: list[str] | None = None) -> RealBgConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "realbg", "realbg", PRETRAINING_STRATEGIES)
    parser.add_argument("--pretrain-pairs", type=int, default=16,
                        help="other-pathology pretraining: real-background pairs with a mass or a wedge")
    parser.add_argument("--train-pairs", type=int, default=24)
    parser.add_argument("--validation-pairs", type=int, default=6)
    parser.add_argument("--test-pairs", type=int, default=8)
    parser.add_argument("--early-stopping-patience", type=int, default=5)
    parser.add_argument("--lr-reduce-patience", type=int, default=2)
    parser.add_argument("--train-new-lesions", type=int, nargs=2, default=[1, 6], metavar=("MIN", "MAX"))
    parser.add_argument("--train-affine-residual", type=float, default=0.0,
                        help="training pairs: scaling/shear residual of the prior, |E_ij| <= this (0.01 = 1 %%)")
    parser.add_argument("--train-faint-share", type=float, default=0.0,
                        help="training pairs: share of new lesions with a faint contrast (1.15-1.3)")
    args = parser.parse_args(argv)
    defaults = RealBgConfig(Path("."), Path("."))
    return RealBgConfig(
        **run_fields(args, defaults.pretrain_settings, defaults.finetune_settings,
                     early_stopping_patience=args.early_stopping_patience,
                     lr_reduce_patience=args.lr_reduce_patience),
        pretrain_pairs=args.pretrain_pairs,
        train_pairs=args.train_pairs, validation_pairs=args.validation_pairs, test_pairs=args.test_pairs,
        train_new_lesions=(args.train_new_lesions[0], args.train_new_lesions[1]),
        train_affine_fraction=args.train_affine_residual, train_faint_share=args.train_faint_share)


def main(argv: list[str] | None = None) -> None:
    run_realbg(parse_args(argv))


if __name__ == "__main__":
    main()
