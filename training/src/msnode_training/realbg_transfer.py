"""Transfer experiment at the real-background setting (issue 19, part 7): does pretraining pay on the realbg grid?

De novo against two pretraining strategies, each fine-tuned on N = 2, 5, 10 real-background pairs (the first N of
one pool, the same for every strategy), with the same fine-tuning iterations and seeds:
  * none: fine-tuning from random weights;
  * other_pathology: supervised pretraining on real-background pairs whose only labelled change is another
    pathology (`realpairs.other_pathology_pair`: a tumour-like mass or a stroke-like wedge on the current visit);
  * inpainting: self-supervised context inpainting on the same pretraining pairs' images (labels unused).
Both pretraining strategies see the same images, so they differ only in their objective. The network, grid and
pair generator are those of the shipped `models/realbg` (3 x 1 x 1 mm, network `realbg`).

Every model gets its post-processing (threshold x minimum volume, false-positive-aware) on the validation pairs
only, then is scored on held-out real-background pairs (ONNX Runtime, Python path) and on the real patient03 pair
through `msnode analyze` (import-nifti DICOM, the node's registration and brain mask: what the node really does).
Every stage writes a marker (`stages.json`): rerunning the same command resumes.

    PYTHONPATH=training/src OMP_NUM_THREADS=1 python -m msnode_training.realbg_transfer \\
        --work training/work/transfer_realbg --binary target/release/msnode --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from msnode_training.baseline import DATA_CITATION
from msnode_training.checkpoint_choice import ScoredProbability, fp_aware_postprocessing
from msnode_training.export import build_model_card, export_onnx, load_trained_model, onnx_session, validate_model_card
from msnode_training.inference import onnx_runner
from msnode_training.nnunet_data import (
    NETWORK_SIZES,
    plan_and_preprocess,
    write_raw_dataset,
    write_splits,
)
from msnode_training.node_eval import evaluate_through_node
from msnode_training.paths import set_nnunet_environment
from msnode_training.readers import LongitudinalCase
from msnode_training.realbg import (
    POSTPROCESSING_MIN_VOLUMES_MM3,
    POSTPROCESSING_THRESHOLDS,
    PRETRAINING_OBJECTIVE,
    Stages,
    log,
    network_pair_spacing,
    other_pathology_seed,
    pair_seeds,
    probability_of,
    run_training_stage,
    score_cases,
    write_other_pathology_dataset,
)
from msnode_training.realpairs import RealPairConfig, generate_pairs, read_pair
from msnode_training.trainers import TrainingSettings

FINETUNE_DATASET_ID = 530
PRETRAIN_DATASET_ID = 531
STRATEGIES = ("none", "other_pathology", "inpainting")


@dataclass
class TransferConfig:
    work_dir: Path
    results_dir: Path  # transfer_realbg.md / .json are written here
    binary: Path  # the msnode binary that scores patient03 through `msnode analyze`
    seed: int = 0
    network_size: str = "realbg"
    sizes: tuple[int, ...] = (2, 5, 10)
    strategies: tuple[str, ...] = STRATEGIES
    pretrain_pairs: int = 8
    validation_pairs: int = 3
    test_pairs: int = 4
    pretrain_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=12, iterations_per_epoch=25, val_iterations_per_epoch=1, save_every_epochs=1,
        foreground_oversampling=0.8))
    finetune_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=8, iterations_per_epoch=25, val_iterations_per_epoch=1, save_every_epochs=1,
        foreground_oversampling=0.8))
    thresholds: tuple[float, ...] = POSTPROCESSING_THRESHOLDS
    min_volumes_mm3: tuple[float, ...] = POSTPROCESSING_MIN_VOLUMES_MM3
    threads: int = 1
    data_workers: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or "none" not in self.strategies:
            raise ValueError(f"strategies must include 'none' and come from {STRATEGIES}; got {self.strategies}")
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError("sizes must be positive")
        if self.network_size not in NETWORK_SIZES:
            raise ValueError(f"network_size must be one of {sorted(NETWORK_SIZES)}")

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def write_size_splits(dataset_id: int, pool: Sequence[str], validation: Sequence[str],
                      sizes: Sequence[int]) -> None:
    """Fold k of splits_final.json trains on the first sizes[k] pool pairs (one fold per fine-tuning size, so that
    each size has its own results folder); every fold validates on the same pairs."""
    write_splits(dataset_id, [(pool[:n], validation) for n in sizes])


def prepare_datasets(config: TransferConfig, stages: Stages) -> dict[str, Any]:
    """The pairs (cached) and both nnU-Net datasets: fine-tuning (pool + validation, planned here) and pretraining
    (preprocessed with the fine-tuning plans, so every model has the same network). Returns the pair folders."""
    spacing = network_pair_spacing(config.network_size)
    pair_config = RealPairConfig(spacing_zyx=spacing)
    seeds = pair_seeds(config.seed)
    pretrain_seed = other_pathology_seed(config.seed)
    root = config.work_dir / "pairs"
    wanted = {"pool": (seeds["train"], max(config.sizes), "ms"),
              "validation": (seeds["validation"], config.validation_pairs, "ms"),
              "test": (seeds["test"], config.test_pairs, "ms"),
              "pretrain": (pretrain_seed, config.pretrain_pairs, "other_pathology")}
    dirs: dict[str, list[Path]] = {}
    for split, (seed, n, kind) in wanted.items():
        t = time.monotonic()
        dirs[split], record = generate_pairs(root, seed, range(n), pair_config, config.data_workers, kind)
        log(f"pairs {split}: {n} {kind} (seed {seed}; {record}; {time.monotonic() - t:.0f} s)")
    if not stages.finished("preprocess"):
        t = time.monotonic()
        cases = [read_pair(d)[0] for d in dirs["pool"] + dirs["validation"]]
        write_raw_dataset(cases, FINETUNE_DATASET_ID, "msnodeTransferFinetune", spacing,
                          "new or enlarging MS lesions: real-background pairs (transfer experiment)")
        identifier = plan_and_preprocess(FINETUNE_DATASET_ID, NETWORK_SIZES[config.network_size])
        write_size_splits(FINETUNE_DATASET_ID, [d.name for d in dirs["pool"]],
                          [d.name for d in dirs["validation"]], config.sizes)
        write_other_pathology_dataset(dirs["pretrain"], FINETUNE_DATASET_ID, PRETRAIN_DATASET_ID,
                                      "msnodeTransferOtherPathology", spacing, identifier)
        stages.mark("preprocess", {"identifier": identifier, "seconds": round(time.monotonic() - t, 1)})
    return {"dirs": dirs, "seeds": {**seeds, "pretrain": pretrain_seed}, "pair_config_key": pair_config.key()}


def evaluate_model(config: TransferConfig, name: str, record: dict[str, Any], validation: Sequence[LongitudinalCase],
                   test: Sequence[LongitudinalCase]) -> dict[str, Any]:
    """Export, post-processing on the validation pairs, held-out pairs (ONNX Runtime) and patient03 (the node)."""
    if not config.binary.is_file():  # checked here, not at the start: the training stages do not need it
        raise FileNotFoundError(f"{config.binary}: the msnode binary is needed to score patient03 through the node")
    model = load_trained_model(Path(record["results_folder"]), Path(record["checkpoint"]))
    model.network.cpu()
    model_dir = config.work_dir / "models" / name
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "model.onnx"
    export_onnx(model, onnx_path)
    t = time.monotonic()
    runner = onnx_runner(onnx_session(onnx_path, config.threads))
    validation_p = [probability_of(c, model, runner) for c in validation]
    choice = fp_aware_postprocessing(
        [ScoredProbability(c.case_id, p, c.label, c.geometry.spacing_zyx) for c, p in zip(validation, validation_p)],
        config.thresholds, config.min_volumes_mm3)
    validation_scores = score_cases(validation, validation_p, choice.threshold, choice.min_lesion_volume_mm3)
    del validation_p
    test_scores = score_cases(test, [probability_of(c, model, runner) for c in test], choice.threshold,
                              choice.min_lesion_volume_mm3)
    python_seconds = time.monotonic() - t
    card = build_model_card(f"msnode-transfer-{name}", "0.0.0", onnx_path, model, choice.threshold,
                            choice.min_lesion_volume_mm3, {"experiment": "realbg_transfer", "model": name,
                                                           "citation": DATA_CITATION},
                            {"validation": validation_scores["summary"]})
    problems = validate_model_card(card, model_dir)
    if problems:
        raise ValueError(f"model card of {name} invalid: {problems}")
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    node = evaluate_through_node(config.binary, model_dir, "patient03", config.work_dir / "node_eval",
                                 threads=config.threads)
    log(f"{name}: threshold {choice.threshold}, min {choice.min_lesion_volume_mm3} mm3; validation F1 "
        f"{validation_scores['summary']['mean_f1']}, held-out F1 {test_scores['summary']['mean_f1']}, patient03 "
        f"(node) F1 {node['summary']['mean_f1']}")
    return {"threshold": choice.threshold, "min_lesion_volume_mm3": choice.min_lesion_volume_mm3,
            "validation": validation_scores["summary"], "held_out": test_scores["summary"],
            "patient03_node": {k: node[k] for k in ("analyze_seconds", "threads", "registration", "summary")},
            "python_evaluation_seconds": round(python_seconds, 1)}


def run_transfer(config: TransferConfig) -> dict[str, Any]:
    started = datetime.now(timezone.utc)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    set_nnunet_environment(config.work_dir / "nnunet")
    torch.set_num_threads(config.threads)
    stages = Stages(config.work_dir)
    if not stages.finished("run"):
        stages.mark("run", run_record(started, config.threads))
    data = prepare_datasets(config, stages)
    identifier = stages.done["preprocess"]["identifier"]

    pretrained: dict[str, Path | None] = {"none": None}
    for strategy in config.strategies:
        if strategy == "none":
            continue
        settings = replace(config.pretrain_settings, seed=config.seed, progress_label=f"pretrain {strategy}")
        record = run_training_stage(stages, f"pretrain_{strategy}", PRETRAINING_OBJECTIVE[strategy], identifier,
                                    settings, None, config.work_dir / "pretrained" / strategy / "checkpoint.pth",
                                    dataset_id=PRETRAIN_DATASET_ID)
        pretrained[strategy] = Path(record["checkpoint"])

    validation = [read_pair(d)[0] for d in data["dirs"]["validation"]]
    test = [read_pair(d)[0] for d in data["dirs"]["test"]]
    for fold, size in enumerate(config.sizes):
        for strategy in config.strategies:
            name = f"{strategy}_n{size}"
            settings = replace(config.finetune_settings, seed=config.seed, progress_label=f"fine-tune {name}")
            record = run_training_stage(stages, f"finetune_{name}", "segmentation", identifier, settings,
                                        pretrained[strategy], config.work_dir / "finetuned" / name / "checkpoint.pth",
                                        dataset_id=FINETUNE_DATASET_ID, fold=fold)
            if not stages.finished(f"evaluate_{name}"):
                stages.mark(f"evaluate_{name}", evaluate_model(config, name, record, validation, test))
    return write_results(config, stages, data)


def run_record(started: datetime, threads: int) -> dict[str, Any]:
    return {"started": started.isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": threads}}


def write_results(config: TransferConfig, stages: Stages, data: dict[str, Any]) -> dict[str, Any]:
    """The table of every evaluated model (all of them after a whole run; those finished so far with
    `--report-only`)."""
    rows = []
    for size in config.sizes:
        for strategy in config.strategies:
            name = f"{strategy}_n{size}"
            if stages.finished(f"evaluate_{name}"):
                record = stages.done[f"finetune_{name}"]
                rows.append({"pretraining": strategy, "n_finetune_pairs": size,
                             "finetune_seconds": record["seconds"], "epochs_run": record["epochs_run"],
                             **stages.done[f"evaluate_{name}"]})
    pretraining_seconds = {s: stages.done[f"pretrain_{s}"]["seconds"] for s in config.strategies
                           if stages.finished(f"pretrain_{s}")}
    run = stages.done["run"]
    result = {"date": run["started"], "config": config.as_dict(), "machine": run["machine"],
              "pairs": {"seeds": data["seeds"], "pair_config_key": data["pair_config_key"]},
              "pretraining_seconds": pretraining_seconds, "rows": rows,
              "complete": len(rows) == len(config.sizes) * len(config.strategies)}
    config.results_dir.mkdir(parents=True, exist_ok=True)
    (config.results_dir / "transfer_realbg.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (config.results_dir / "transfer_realbg.md").write_text(results_markdown(result))
    log(f"transfer experiment written to {config.results_dir}")
    return result


def _triple(summary: dict[str, Any]) -> str:
    return " / ".join("-" if summary.get(k) is None else f"{summary[k]:.3f}"
                      for k in ("mean_f1", "mean_ppv", "mean_sensitivity"))


def results_markdown(result: dict[str, Any]) -> str:
    config = result["config"]
    ft, pre = config["finetune_settings"], config["pretrain_settings"]
    lines = [
        "# Transfer experiment at the real-background setting (issue 19, part 7)", "",
        f"Date {result['date']}; machine {result['machine']}. Network `{config['network_size']}`, 3 x 1 x 1 mm "
        f"pair grid; pretraining {pre['epochs']} x {pre['iterations_per_epoch']} iterations on "
        f"{config['pretrain_pairs']} real-background other-pathology pairs (both strategies, same images); "
        f"fine-tuning {ft['epochs']} x {ft['iterations_per_epoch']} iterations for every model, seed "
        f"{config['seed']}; post-processing on {config['validation_pairs']} validation pairs; "
        f"{config['test_pairs']} held-out pairs (pair seeds {result['pairs']['seeds']}, key "
        f"{result['pairs']['pair_config_key']}); patient03 through `msnode analyze` with the node's default registration "
        f"(rigid).",
        "",
        "F1 / PPV / sensitivity (MSSEG-2 lesion-wise).", "",
        "| pretraining | N | held-out pairs | patient03 (node) | patient03 FP | thr | min mm3 | fine-tune s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        node = row["patient03_node"]["summary"]
        lines.append(f"| {row['pretraining']} | {row['n_finetune_pairs']} | {_triple(row['held_out'])} | "
                     f"{_triple(node)} | {node['false_positive_lesions_per_case']} | {row['threshold']} | "
                     f"{row['min_lesion_volume_mm3']} | {row['finetune_seconds']} |")
    if not result["complete"]:
        lines += ["", "**Incomplete**: only the models evaluated so far (the run was stopped or is still going)."]
    lines += ["", f"Pretraining seconds: {result['pretraining_seconds']}.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[TransferConfig, bool]:
    from msnode_training.paths import work_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=work_dir() / "transfer_realbg")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[2] / "experiments")
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--pretrain-pairs", type=int, default=8)
    parser.add_argument("--validation-pairs", type=int, default=3)
    parser.add_argument("--test-pairs", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--report-only", action="store_true",
                        help="write the table of the models evaluated so far (from stages.json); train nothing")
    args = parser.parse_args(argv)
    defaults = TransferConfig(Path("."), Path("."), Path("."))
    return TransferConfig(
        work_dir=args.work, results_dir=args.results, binary=args.binary, seed=args.seed, sizes=tuple(args.sizes),
        strategies=tuple(args.strategies), pretrain_pairs=args.pretrain_pairs,
        validation_pairs=args.validation_pairs, test_pairs=args.test_pairs,
        pretrain_settings=replace(defaults.pretrain_settings, epochs=args.pretrain_epochs,
                                  iterations_per_epoch=args.iterations),
        finetune_settings=replace(defaults.finetune_settings, epochs=args.finetune_epochs,
                                  iterations_per_epoch=args.iterations),
        threads=args.threads, data_workers=args.workers), args.report_only


def main(argv: list[str] | None = None) -> None:
    config, report_only = parse_args(argv)
    if report_only:
        set_nnunet_environment(config.work_dir / "nnunet")
        stages = Stages(config.work_dir)
        if not stages.finished("run"):  # a run started before runs were recorded: its pair cache's age
            # (in memory only: the running command owns stages.json)
            created = (config.work_dir / "pairs").stat().st_ctime
            stages.done["run"] = run_record(datetime.fromtimestamp(created, timezone.utc), config.threads)
        write_results(config, stages, prepare_datasets(config, stages))
    else:
        run_transfer(config)


if __name__ == "__main__":
    main()
