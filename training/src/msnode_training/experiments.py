"""Transfer-learning experiments: de novo training against each pretraining strategy with the same N fine-tuning
cases, for each N; evaluation with the MSSEG-2 rules on held-out synthetic cases and on the real Lesjak pairs
(never used for fine-tuning). Writes `results.md` and `results.json`.

Every strategy sees the same data and seeds: one fine-tuning pool (the first N cases for size N), one validation
set (F1 checkpoint selection and the post-processing search, both on validation data only), one synthetic test
set. One plans file (planned on the fine-tuning data, transferred to the pretraining datasets) gives every model
the same network and spacing. Each pretraining strategy is trained once and reused across sizes; "both" reuses
the inpainting checkpoint as its first stage.
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
from typing import Any

import torch

from msnode_training.export import load_trained_model
from msnode_training.nnunet_data import NETWORK_SIZES, plan_and_preprocess, write_raw_dataset, write_split
from msnode_training.paths import data_workers, set_nnunet_environment, work_dir
from msnode_training.pipeline import (
    FINETUNE_DATASET_ID,
    PRETRAINING_STAGES,
    evaluate_cases,
    finetune_and_keep,
    lesjak_cases,
    package_versions,
    prepare_pretraining_dataset,
    probability_for,
    run_pretraining_stage,
    synthetic_cases,
)
from msnode_training.search import search_best, search_postprocessing
from msnode_training.synth import stream_seed
from msnode_training.train import default_device
from msnode_training.trainers import STRATEGIES, TrainingSettings

STRATEGY_ORDER = ("none", "other_pathology", "inpainting", "both")
METRICS = ("f1", "ppv", "sensitivity")


@dataclass
class ExperimentConfig:
    work_dir: Path
    out_dir: Path
    sizes: tuple[int, ...] = (5, 10, 20)
    strategies: tuple[str, ...] = STRATEGY_ORDER
    seed: int = 0
    spacing_mm: float = 2.0
    network_size: str = "tiny"
    pretrain_cases: int = 8
    validation_cases: int = 3
    test_cases: int = 6
    real_test_patients: tuple[str, ...] = ("patient01", "patient03")
    pretrain_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=4, iterations_per_epoch=10, val_iterations_per_epoch=1))
    finetune_settings: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=10, iterations_per_epoch=10, val_iterations_per_epoch=1, f1_every_epochs=2,
        early_stopping_patience=10))
    search: bool = False  # learning rate x fine-tuning strategy on validation F1, per pretraining strategy
    learning_rates: tuple[float, ...] = (1e-2, 3e-3)
    finetune_strategies: tuple[str, ...] = ("full", "lower_encoder_lr")
    thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    min_volumes_mm3: tuple[float, ...] = (3.0, 10.0, 30.0)
    label: str = ""

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in PRETRAINING_STAGES]
        if unknown:
            raise ValueError(f"unknown pretraining strategies {unknown}; expected {sorted(PRETRAINING_STAGES)}")
        if "none" not in self.strategies:
            raise ValueError("the de novo baseline 'none' is needed for the differences")
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError("sizes must be positive")
        bad = [s for s in self.finetune_strategies if s not in STRATEGIES]
        if bad:
            raise ValueError(f"unknown fine-tuning strategies {bad}")

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(default_device()),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "data_workers": data_workers(), "augmentation_workers": os.environ.get("nnUNet_n_proc_DA")}


def metric_block(summary: dict[str, Any]) -> dict[str, Any]:
    return {"f1": summary["mean_f1"], "ppv": summary["mean_ppv"], "sensitivity": summary["mean_sensitivity"],
            "dice": summary["mean_dice"], "mean_n_false_positives": summary["mean_n_false_positives"],
            "true_lesions": summary["true_lesions"], "true_lesions_detected": summary["true_lesions_detected"],
            "predicted_lesions": summary["predicted_lesions"], "cases": summary["cases"]}


def differences(rows: list[dict[str, Any]], evaluations: list[str]) -> list[dict[str, Any]]:
    """Fine-tuned (pretrained) minus de novo, per size, per evaluation set and metric (None where undefined)."""
    baseline = {row["n_finetune_cases"]: row for row in rows if row["pretraining"] == "none"}
    out = []
    for row in rows:
        if row["pretraining"] == "none":
            continue
        base = baseline[row["n_finetune_cases"]]
        entry: dict[str, Any] = {"pretraining": row["pretraining"], "n_finetune_cases": row["n_finetune_cases"]}
        for name in evaluations:
            for metric in METRICS:
                a, b = row["evaluation"][name][metric], base["evaluation"][name][metric]
                entry[f"{name}.{metric}"] = None if a is None or b is None else round(a - b, 4)
        out.append(entry)
    return out


def run_experiments(config: ExperimentConfig) -> dict[str, Any]:
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    torch.manual_seed(config.seed)
    set_nnunet_environment(config.work_dir / "nnunet")
    size = NETWORK_SIZES[config.network_size]
    stage_seconds: dict[str, float] = {}

    # Shared data: fine-tuning pool (first N for size N), validation, synthetic test, real pairs (test only).
    pool_seed, validation_seed, test_seed, pretrain_seed = (
        stream_seed(config.seed, s) for s in ("finetune_ms", "validation", "synthetic_test", "pretraining"))
    t = time.monotonic()
    pool = list(synthetic_cases("ms", pool_seed, range(max(config.sizes)), config.spacing_mm))
    validation = list(synthetic_cases("ms", validation_seed, range(config.validation_cases), config.spacing_mm))
    test = list(synthetic_cases("ms", test_seed, range(config.test_cases), config.spacing_mm))
    for case in test:
        case.case_id = f"test_{case.case_id}"
    pool_ids = [c.case_id for c in pool]
    validation_ids = [c.case_id for c in validation]
    write_raw_dataset(pool + validation, FINETUNE_DATASET_ID, "msnodeExperiment", (config.spacing_mm,) * 3,
                      "new or enlarging MS lesions: synthetic fine-tuning pool and validation")
    identifier = plan_and_preprocess(FINETUNE_DATASET_ID, size)
    real = list(lesjak_cases(config.real_test_patients))
    evaluations = ["synthetic_test"] + [c.case_id for c in real]
    stage_seconds["data_and_planning"] = round(time.monotonic() - t, 1)

    # Pretraining: each stage once (the inpainting checkpoint is also the first stage of "both").
    t = time.monotonic()
    scenarios = sorted({s for strategy in config.strategies for s, _ in PRETRAINING_STAGES[strategy]})
    pretrain_case_ids = {s: prepare_pretraining_dataset(s, pretrain_seed, config.pretrain_cases, config.spacing_mm,
                                                        FINETUNE_DATASET_ID, identifier) for s in scenarios}
    stage_seconds["pretraining_data"] = round(time.monotonic() - t, 1)
    stage_cache: dict[tuple[tuple[str, str], ...], tuple[Path, float]] = {}
    pretrained: dict[str, dict[str, Any]] = {}
    pretrain_settings = replace(config.pretrain_settings, seed=config.seed)
    for strategy in config.strategies:
        checkpoint, seconds, stages = None, 0.0, PRETRAINING_STAGES[strategy]
        for k in range(1, len(stages) + 1):
            prefix = stages[:k]
            if prefix not in stage_cache:
                t = time.monotonic()
                scenario, objective = prefix[-1]
                kept = config.work_dir / "pretrained" / "__".join(f"{s}-{o}" for s, o in prefix) / "checkpoint.pth"
                run_pretraining_stage(scenario, objective, identifier, pretrain_settings, checkpoint, kept)
                stage_cache[prefix] = (kept, round(time.monotonic() - t, 1))
            checkpoint, stage_time = stage_cache[prefix]
            seconds += stage_time
        pretrained[strategy] = {"checkpoint": checkpoint, "seconds": round(seconds, 1),
                                "stages": [list(s) for s in stages]}

    rows: list[dict[str, Any]] = []
    searches: dict[str, Any] = {}
    chosen: dict[str, tuple[float, str]] = {}
    device = default_device()

    def assemble(complete: bool) -> dict[str, Any]:
        order = {s: i for i, s in enumerate(config.strategies)}
        ordered = sorted(rows, key=lambda r: (r["n_finetune_cases"], order[r["pretraining"]]))
        return {
            "label": config.label,
            "complete": complete,
            "date": started.isoformat(timespec="seconds"),
            "total_seconds": round(time.monotonic() - t0, 1),
            "machine": machine(),
            "settings": config.as_dict(),
            "plans_identifier": identifier,
            "seeds": {"global": config.seed, "finetune_pool": pool_seed, "validation": validation_seed,
                      "synthetic_test": test_seed, "pretraining": pretrain_seed},
            "data": {"finetune_pool": pool_ids, "validation": validation_ids,
                     "synthetic_test": [c.case_id for c in test], "real_test": [c.case_id for c in real],
                     "pretraining": pretrain_case_ids, "real_pairs_in_finetuning": False},
            "evaluations": evaluations,
            "rules": "MSSEG-2 (animaSegPerfAnalyzer): lesion-wise detection alpha 0.10, beta 0.70, gamma 0.65; "
                     "components of 3 mm3 or less ignored; 6-neighbour connectivity; synthetic_test is the mean "
                     "over test cases with new lesions",
            "pretraining": {s: {"seconds": v["seconds"], "stages": v["stages"]} for s, v in pretrained.items()},
            "hyperparameter_search": searches or None,
            "stage_seconds": stage_seconds,
            "rows": ordered,
            "differences_vs_de_novo": differences(ordered, evaluations),
            "package_versions": package_versions(),
        }

    # Sizes outer, strategies inner: the results are rewritten after every model, so a run stopped early still
    # holds complete comparisons at the sizes it finished (largest first, where the search runs).
    for n in sorted(config.sizes, reverse=True):
        write_split(FINETUNE_DATASET_ID, pool_ids[:n], validation_ids)
        for strategy in config.strategies:
            checkpoint = pretrained[strategy]["checkpoint"]
            ft_strategies = config.finetune_strategies if strategy != "none" else ("full",)
            runs: dict[tuple[float, str], tuple[Any, Path, float]] = {}

            def train_and_score(candidate: tuple[float, str]) -> float:
                lr, ft_strategy = candidate
                settings = replace(config.finetune_settings, initial_lr=lr, strategy=ft_strategy, seed=config.seed)
                t = time.monotonic()
                kept = config.work_dir / "finetuned" / strategy / f"n{n}" / f"lr{lr:g}_{ft_strategy}" / "checkpoint.pth"
                trainer, kept = finetune_and_keep(FINETUNE_DATASET_ID, identifier, settings, checkpoint, kept)
                runs[candidate] = (trainer, kept, round(time.monotonic() - t, 1))
                return float(trainer.best_f1 if trainer.best_f1 is not None else 0.0)

            if config.search and n == max(config.sizes):
                # The search runs once per strategy, at the largest size, on validation F1 only.
                candidates = [(lr, s) for lr in config.learning_rates for s in ft_strategies]
                chosen[strategy], scores = search_best(candidates, train_and_score)
                searches[strategy] = {"at_n": n, "validation_f1": {f"lr={lr:g},{s}": v for (lr, s), v in scores.items()},
                                      "chosen_learning_rate": chosen[strategy][0],
                                      "chosen_finetune_strategy": chosen[strategy][1]}
            else:
                chosen.setdefault(strategy, (config.finetune_settings.initial_lr, config.finetune_settings.strategy))
                train_and_score(chosen[strategy])
            trainer, kept, finetune_seconds = runs[chosen[strategy]]
            model = load_trained_model(Path(trainer.output_folder_base), kept)
            model.network.to(device)
            choice = search_postprocessing([probability_for(c, model, config.spacing_mm) for c in validation],
                                           config.thresholds, config.min_volumes_mm3)
            evaluation = {"synthetic_test": metric_block(evaluate_cases(
                model, test, config.spacing_mm, choice.threshold, choice.min_lesion_volume_mm3)[0])}
            for case in real:
                evaluation[case.case_id] = metric_block(evaluate_cases(
                    model, [case], config.spacing_mm, choice.threshold, choice.min_lesion_volume_mm3)[0])
            rows.append({
                "pretraining": strategy, "n_finetune_cases": n, "finetune_cases": pool_ids[:n],
                "seed": config.seed, "learning_rate": chosen[strategy][0], "finetune_strategy": chosen[strategy][1],
                "threshold": choice.threshold, "min_lesion_volume_mm3": choice.min_lesion_volume_mm3,
                "validation_f1_best_epoch": trainer.best_f1, "validation_f1_postprocessed": choice.summary["mean_f1"],
                "epochs_run": trainer.current_epoch, "stopped_early": trainer.stop_early,
                "pretrain_seconds": pretrained[strategy]["seconds"], "finetune_seconds": finetune_seconds,
                "checkpoint": str(kept.relative_to(config.work_dir)), "evaluation": evaluation,
            })
            write_results(assemble(complete=False), config.out_dir)
    result = assemble(complete=True)
    write_results(result, config.out_dir)
    return result


def fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def signed(value: Any) -> str:
    return "–" if value is None else f"{value:+.3f}"


def results_markdown(result: dict[str, Any]) -> str:
    settings, m = result["settings"], result["machine"]
    evals = result["evaluations"]
    lines = [f"# Transfer-learning experiments{': ' + result['label'] if result['label'] else ''}", "",
             *([] if result.get("complete", True) else
               ["**Partial**: the run stopped before every model was trained; the rows below are the finished ones.",
                ""]),
             f"Date {result['date']}; total wall time {result['total_seconds']:.0f} s. Machine: {m['platform']}, "
             f"{m['cpu_count']} CPUs, torch threads {m['torch_threads']}, device {m['device']}"
             f"{' (' + m['gpu'] + ')' if m.get('gpu') else ''}.", "",
             f"Network `{settings['network_size']}` ({result['plans_identifier']}), spacing {settings['spacing_mm']} mm; "
             f"pretraining {settings['pretrain_cases']} cases x {settings['pretrain_settings']['epochs']} epochs x "
             f"{settings['pretrain_settings']['iterations_per_epoch']} iterations per stage; fine-tuning "
             f"{settings['finetune_settings']['epochs']} epochs x {settings['finetune_settings']['iterations_per_epoch']} "
             f"iterations, validation F1 every {settings['finetune_settings']['f1_every_epochs']} epochs "
             f"({settings['validation_cases']} synthetic validation cases); synthetic test {settings['test_cases']} "
             f"held-out cases; real test: {', '.join(result['data']['real_test'])} (never fine-tuned on). "
             f"Seeds: {result['seeds']}. Hyperparameter search: {'on' if settings['search'] else 'off'}.", "",
             f"Rules: {result['rules']}.", "",
             "F1 / PPV / sensitivity per evaluation set; thr and min = post-processing chosen on validation.", ""]
    header = ["pretraining", "N"] + [f"{e} F1 / PPV / Sens" for e in evals] + \
             ["lr", "fine-tune", "thr", "min mm3", "pretrain s", "fine-tune s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["pretraining"], str(row["n_finetune_cases"])]
        cells += [" / ".join(fmt(row["evaluation"][e][k]) for k in METRICS) for e in evals]
        cells += [f"{row['learning_rate']:g}", row["finetune_strategy"], fmt(row["threshold"]),
                  fmt(row["min_lesion_volume_mm3"]), fmt(row["pretrain_seconds"]), fmt(row["finetune_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Pretrained minus de novo (same N)", ""]
    header = ["pretraining", "N"] + [f"Δ {e} F1 / PPV / Sens" for e in evals]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in result["differences_vs_de_novo"]:
        cells = [d["pretraining"], str(d["n_finetune_cases"])]
        cells += [" / ".join(signed(d[f"{e}.{k}"]) for k in METRICS) for e in evals]
        lines.append("| " + " | ".join(cells) + " |")
    if result["hyperparameter_search"]:
        lines += ["", "## Hyperparameter search (validation F1)", ""]
        for strategy, s in result["hyperparameter_search"].items():
            lines.append(f"- {strategy} (N={s['at_n']}): chosen lr {s['chosen_learning_rate']:g}, "
                         f"{s['chosen_finetune_strategy']}; scores {s['validation_f1']}")
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(results_markdown(result))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=None, help="work folder (default: <work>/experiments)")
    p.add_argument("--out", type=Path, default=Path("experiments"), help="where results.md/.json go")
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGY_ORDER), choices=list(STRATEGY_ORDER))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", type=float, default=2.0)
    p.add_argument("--network-size", default="tiny", choices=sorted(NETWORK_SIZES))
    p.add_argument("--pretrain-cases", type=int, default=8)
    p.add_argument("--validation-cases", type=int, default=3)
    p.add_argument("--test-cases", type=int, default=6)
    p.add_argument("--real-test-patients", nargs="+", default=["patient01", "patient03"])
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--iterations", type=int, default=10, help="iterations per epoch")
    p.add_argument("--f1-every", type=int, default=2)
    p.add_argument("--f1-threshold", type=float, default=0.5, help="probability cut of the validation F1 in training")
    p.add_argument("--foreground-oversampling", type=float, default=0.33, help="share of patches on a lesion")
    p.add_argument("--learning-rate", type=float, default=1e-2, help="used when --search is off")
    p.add_argument("--finetune-strategy", default="full", choices=list(STRATEGIES), help="used when --search is off")
    p.add_argument("--search", action="store_true", help="learning rate x fine-tuning strategy search")
    p.add_argument("--learning-rates", type=float, nargs="+", default=[1e-2, 3e-3])
    p.add_argument("--finetune-strategies", nargs="+", default=["full", "lower_encoder_lr"], choices=list(STRATEGIES))
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--min-volumes", type=float, nargs="+", default=[3.0, 10.0, 30.0])
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--label", default="")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    config = ExperimentConfig(
        work_dir=a.work or work_dir() / "experiments", out_dir=a.out, sizes=tuple(a.sizes),
        strategies=tuple(a.strategies), seed=a.seed, spacing_mm=a.spacing, network_size=a.network_size,
        pretrain_cases=a.pretrain_cases, validation_cases=a.validation_cases, test_cases=a.test_cases,
        real_test_patients=tuple(a.real_test_patients),
        pretrain_settings=TrainingSettings(epochs=a.pretrain_epochs, iterations_per_epoch=a.iterations,
                                           val_iterations_per_epoch=1,
                                           foreground_oversampling=a.foreground_oversampling),
        finetune_settings=TrainingSettings(epochs=a.finetune_epochs, iterations_per_epoch=a.iterations,
                                           val_iterations_per_epoch=1, f1_every_epochs=a.f1_every,
                                           f1_threshold=a.f1_threshold,
                                           foreground_oversampling=a.foreground_oversampling,
                                           early_stopping_patience=10, initial_lr=a.learning_rate,
                                           strategy=a.finetune_strategy),
        search=a.search, learning_rates=tuple(a.learning_rates), finetune_strategies=tuple(a.finetune_strategies),
        thresholds=tuple(a.thresholds), min_volumes_mm3=tuple(a.min_volumes), label=a.label)
    result = run_experiments(config)
    print(results_markdown(result))


if __name__ == "__main__":
    main()
