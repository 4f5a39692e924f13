"""Command-line entry points (see training/README.md). Each guards nnU-Net's worker processes by running only
from its console-script `main`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def generate_main(argv: list[str] | None = None) -> None:
    """Write synthetic cases in the MSSEG-2 layout."""
    from msnode_training.synth import SCENARIOS, SynthConfig, generate_dataset

    parser = argparse.ArgumentParser(description=generate_main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, default="ms")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic output spacing in mm")
    args = parser.parse_args(argv)
    written = generate_dataset(args.out, args.cases, args.seed, SynthConfig(scenario=args.scenario,
                                                                             spacing_mm=args.spacing),
                               args.first_index)
    print(f"wrote {len(written)} cases to {args.out}")


def make_dataset_main(argv: list[str] | None = None) -> None:
    """Convert MSSEG-2-layout case folders (real or synthetic) and/or the Lesjak longitudinal patients into an
    nnU-Net v2 raw dataset, then plan and preprocess it (or transfer plans from a pretraining dataset)."""
    from msnode_training.nnunet_data import (
        NETWORK_SIZES,
        plan_and_preprocess,
        plans_identifier,
        transfer_plans_and_preprocess,
        write_raw_dataset,
    )
    from msnode_training.paths import (
        lesjak_longitudinal_dir,
        set_nnunet_environment,
        work_dir,
    )
    from msnode_training.readers import (
        list_lesjak_longitudinal,
        list_msseg2_cases,
        read_lesjak_longitudinal_case,
        read_msseg2_case,
    )

    parser = argparse.ArgumentParser(description=make_dataset_main.__doc__)
    parser.add_argument("--work", type=Path, default=work_dir() / "nnunet")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--msseg2", type=Path, action="append", default=[], help="folder of MSSEG-2 case folders")
    parser.add_argument("--lesjak-longitudinal", action="store_true")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"))
    parser.add_argument("--size", choices=sorted(NETWORK_SIZES), default="small")
    parser.add_argument("--transfer-plans-from", type=int, default=None, help="pretraining dataset id")
    args = parser.parse_args(argv)
    set_nnunet_environment(args.work)

    def cases():
        for root in args.msseg2:
            yield from (read_msseg2_case(p) for p in list_msseg2_cases(root))
        if args.lesjak_longitudinal:
            for p in list_lesjak_longitudinal(lesjak_longitudinal_dir()):
                case = read_lesjak_longitudinal_case(p)
                case.case_id = f"lesjak_{p.name}"
                yield case

    folder = write_raw_dataset(cases(), args.id, args.name, tuple(args.spacing) if args.spacing else None)
    print(f"raw dataset {folder}")
    size = NETWORK_SIZES[args.size]
    if args.transfer_plans_from is not None:
        transfer_plans_and_preprocess(args.transfer_plans_from, args.id, plans_identifier(size))
    else:
        plan_and_preprocess(args.id, size)
    print(f"plans {plans_identifier(size)}")


def train_main(argv: list[str] | None = None) -> None:
    """Train fold 0 of a preprocessed dataset with the msnode trainer classes."""
    from msnode_training.paths import set_nnunet_environment, work_dir
    from msnode_training.train import TRAINERS, train
    from msnode_training.trainers import STRATEGIES, TrainingSettings

    parser = argparse.ArgumentParser(description=train_main.__doc__)
    parser.add_argument("--work", type=Path, default=work_dir() / "nnunet")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--plans", default="msnodePlans_small")
    parser.add_argument("--objective", choices=sorted(TRAINERS), default="segmentation")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--strategy", choices=STRATEGIES, default="full")
    parser.add_argument("--f1-every", type=int, default=0)
    parser.add_argument("--pretrained", type=Path, default=None, help="checkpoint to start from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    set_nnunet_environment(args.work)
    settings = TrainingSettings(epochs=args.epochs, iterations_per_epoch=args.iterations,
                                val_iterations_per_epoch=args.val_iterations, initial_lr=args.lr,
                                strategy=args.strategy, f1_every_epochs=args.f1_every, seed=args.seed)
    trainer = train(args.id, args.plans, args.objective, settings, args.pretrained)
    print(json.dumps({"output_folder": trainer.output_folder, "best_f1": trainer.best_f1,
                      "epochs_run": trainer.current_epoch}))


def evaluate_main(argv: list[str] | None = None) -> None:
    """Score predicted masks against truth masks (same file names) with the MSSEG-2 rules; prints JSON."""
    from msnode_training.metrics import score_case, summarize
    from msnode_training.volumes import read_volume

    parser = argparse.ArgumentParser(description=evaluate_main.__doc__)
    parser.add_argument("--truth", type=Path, required=True, help="folder of truth masks (.nii.gz)")
    parser.add_argument("--prediction", type=Path, required=True, help="folder of predicted masks (.nii.gz)")
    args = parser.parse_args(argv)
    per_case = {}
    scores = []
    for truth_path in sorted(args.truth.glob("*.nii.gz")):
        truth, geometry = read_volume(truth_path, np.uint8)
        prediction, _ = read_volume(args.prediction / truth_path.name, np.uint8)
        scores.append(score_case(truth, prediction, geometry.spacing_zyx))
        per_case[truth_path.name] = scores[-1].as_dict()
    print(json.dumps({"summary": summarize(scores), "cases": per_case}, indent=2))


def rebuild_checkpoint_main(argv: list[str] | None = None) -> None:
    """Rebuild a model folder's nnunet/ checkpoint (what nnUNetPredictor runs) from its model.onnx and card: the
    card's network size applied to a template plans.json, the ONNX file's weights."""
    from msnode_training.export import rebuild_nnunet_folder
    from msnode_training.nnunet_data import NETWORK_SIZES
    from msnode_training.paths import models_dir

    parser = argparse.ArgumentParser(description=rebuild_checkpoint_main.__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model.onnx and model_card.json")
    parser.add_argument("--size", required=True, choices=sorted(NETWORK_SIZES), help="the network the card names")
    parser.add_argument("--template", type=Path, default=models_dir() / "compact" / "nnunet",
                        help="an nnunet/ folder whose plans.json and dataset.json give the fields the size leaves")
    args = parser.parse_args(argv)
    try:
        out = rebuild_nnunet_folder(args.model_dir, args.size, args.template)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    print(f"wrote {out}")


def export_main(argv: list[str] | None = None) -> None:
    """Export a trained network to ONNX and write its model card (without evaluation figures)."""
    from msnode_training.export import (
        build_model_card,
        export_onnx,
        load_trained_model,
        validate_model_card,
        write_model_card_markdown,
    )
    from msnode_training.pipeline import package_versions

    parser = argparse.ArgumentParser(description=export_main.__doc__)
    parser.add_argument("--results-folder", type=Path, required=True, help="nnU-Net trainer folder with plans.json")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--min-lesion-volume", type=float, default=3.0)
    args = parser.parse_args(argv)
    model = load_trained_model(args.results_folder, args.checkpoint)
    onnx_path = args.out / "model.onnx"
    export_onnx(model, onnx_path)
    card = build_model_card(args.name, args.version, onnx_path, model, args.threshold, args.min_lesion_volume,
                            {"checkpoint": str(args.checkpoint), "package_versions": package_versions()}, {})
    problems = validate_model_card(card, args.out)
    if problems:
        raise SystemExit(f"model card invalid: {problems}")
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_model_card_markdown(card, args.out / "MODEL_CARD.md")
    print(f"exported {onnx_path}")


def parity_main(argv: list[str] | None = None) -> None:
    """ONNX Runtime vs PyTorch on a Lesjak longitudinal patient; exits non-zero when parity fails."""
    from msnode_training.export import load_trained_model, parity_check
    from msnode_training.paths import lesjak_longitudinal_dir
    from msnode_training.readers import read_lesjak_longitudinal_case

    parser = argparse.ArgumentParser(description=parity_main.__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model.onnx and model_card.json")
    parser.add_argument("--results-folder", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--patient", default="patient01")
    args = parser.parse_args(argv)
    card = json.loads((args.model_dir / "model_card.json").read_text())
    model = load_trained_model(args.results_folder, args.checkpoint)
    case = read_lesjak_longitudinal_case(lesjak_longitudinal_dir() / args.patient)
    report = parity_check(model, args.model_dir / card["onnx_file"], case, card["default_threshold"],
                          card["min_lesion_volume_mm3"])
    print(json.dumps(report, indent=2))
    if not report["passes"]:
        raise SystemExit(1)


def pipeline_main(argv: list[str] | None = None) -> None:
    """Generate data, pretrain, fine-tune, tune post-processing, evaluate, export with model card."""
    from msnode_training.paths import work_dir
    from msnode_training.pipeline import PRETRAINING_STAGES, PipelineConfig, run_pipeline
    from msnode_training.trainers import STRATEGIES, TrainingSettings

    parser = argparse.ArgumentParser(description=pipeline_main.__doc__)
    parser.add_argument("--work", type=Path, default=work_dir() / "pipeline")
    parser.add_argument("--out", type=Path, required=True, help="model folder, e.g. models/compact")
    parser.add_argument("--name", default="msnode-tiny")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretraining", choices=sorted(PRETRAINING_STAGES), default="other_pathology")
    parser.add_argument("--strategies", choices=STRATEGIES, nargs="+", default=["full"],
                        help="fine-tuning strategies, searched with the learning rates on validation F1")
    parser.add_argument("--pretrain-cases", type=int, default=4)
    parser.add_argument("--ms-cases", type=int, default=4)
    parser.add_argument("--semi-synthetic-cases", type=int, default=2)
    parser.add_argument("--validation-cases", type=int, default=2)
    parser.add_argument("--test-cases", type=int, default=4, help="held-out synthetic pairs scored after export")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-2])
    parser.add_argument("--f1-every", type=int, default=1, help="epochs between validation F1 evaluations")
    parser.add_argument("--f1-threshold", type=float, default=0.5, help="probability cut of the validation F1")
    parser.add_argument("--foreground-oversampling", type=float, default=0.33, help="share of patches on a lesion")
    parser.add_argument("--early-stopping-patience", type=int, default=5, help="F1 validations")
    parser.add_argument("--lr-reduce-patience", type=int, default=2, help="F1 validations")
    parser.add_argument("--msseg2", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--training-scale", default="", help="a sentence for the model card, e.g. reduced CPU run")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                        help="probability thresholds for the post-processing search on validation")
    parser.add_argument("--min-volumes", type=float, nargs="+", default=[3.0, 10.0, 30.0],
                        help="minimum lesion volumes (mm3) for the post-processing search on validation")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    config = PipelineConfig(
        work_dir=args.work, export_dir=args.out, seed=args.seed, spacing_mm=args.spacing, network_size=args.size,
        pretraining=args.pretraining, pretrain_cases=args.pretrain_cases, finetune_ms_cases=args.ms_cases,
        finetune_semi_synthetic_cases=args.semi_synthetic_cases, validation_cases=args.validation_cases,
        synthetic_test_cases=args.test_cases, msseg2_root=args.msseg2, learning_rates=tuple(args.learning_rates),
        finetune_strategies=tuple(args.strategies), training_scale=args.training_scale,
        thresholds=tuple(args.thresholds), min_volumes_mm3=tuple(args.min_volumes), model_name=args.name,
        model_version=args.version,
        pretrain_settings=TrainingSettings(epochs=args.pretrain_epochs, iterations_per_epoch=args.iterations,
                                           val_iterations_per_epoch=1,
                                           foreground_oversampling=args.foreground_oversampling),
        finetune_settings=TrainingSettings(epochs=args.finetune_epochs, iterations_per_epoch=args.iterations,
                                           val_iterations_per_epoch=1, f1_every_epochs=args.f1_every,
                                           f1_threshold=args.f1_threshold,
                                           foreground_oversampling=args.foreground_oversampling,
                                           early_stopping_patience=args.early_stopping_patience,
                                           lr_reduce_patience=args.lr_reduce_patience))
    result = run_pipeline(config)
    evaluation = result["card"]["evaluation"]
    print(json.dumps({"export_dir": result["export_dir"], "seconds": result["seconds"],
                      "lesjak_longitudinal_test": evaluation["lesjak_longitudinal_test"],
                      "synthetic_test": evaluation.get("synthetic_test")}, indent=2))


def held_out_main(argv: list[str] | None = None) -> None:
    """Score an exported model on held-out synthetic pairs through ONNX Runtime and write the figures into its
    model card (for a model exported before the pipeline did this itself)."""
    from msnode_training.held_out import record_synthetic_test
    from msnode_training.pipeline import synthetic_cases
    from msnode_training.synth import stream_seed

    parser = argparse.ArgumentParser(description=held_out_main.__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model.onnx and model_card.json")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--pipeline-seed", type=int, required=True,
                        help="the seed the model was trained with (its test stream is disjoint from its training)")
    args = parser.parse_args(argv)
    card = json.loads((args.model_dir / "model_card.json").read_text())
    seed = stream_seed(args.pipeline_seed, "synthetic_test")
    cases = synthetic_cases("ms", seed, range(args.cases), float(card["spacing_mm"][0]))
    result = record_synthetic_test(args.model_dir, cases, seed)
    print(json.dumps({k: result[k] for k in ("summary", "onnx_cpu_seconds_per_case")}, indent=2))


def real_pairs_main(argv: list[str] | None = None) -> None:
    """Real-background training pairs (real FLAIRs with real lesion shapes inserted), cached under --out."""
    import dataclasses

    from msnode_training.realpairs import DEFAULT_BACKGROUNDS, RealPairConfig, generate_pairs, pairs_dir
    from msnode_training.synth import SEED_STREAMS, stream_seed

    parser = argparse.ArgumentParser(description=real_pairs_main.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="cache root; pairs go to OUT/<key>_seed<S>/")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="series seed (or the run seed with --stream)")
    parser.add_argument("--stream", choices=[k for k in SEED_STREAMS if k.startswith("real_pairs")], default=None,
                        help="draw from this stream of the run seed (synth.stream_seed)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 1.0, 1.0], metavar=("Z", "Y", "X"))
    parser.add_argument("--backgrounds", nargs="+", choices=DEFAULT_BACKGROUNDS, default=list(DEFAULT_BACKGROUNDS))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    seed = stream_seed(args.seed, args.stream) if args.stream else args.seed
    config = dataclasses.replace(RealPairConfig(), spacing_zyx=tuple(args.spacing),
                                 backgrounds=tuple(args.backgrounds))
    dirs, info = generate_pairs(args.out, seed, range(args.first_index, args.first_index + args.pairs), config,
                                args.workers)
    print(json.dumps({"folder": str(pairs_dir(args.out, seed, config)), "seed": seed, "pairs": len(dirs), **info},
                     indent=2))


def baseline_main(argv: list[str] | None = None) -> None:
    """Subtraction baseline: tune on generated validation pairs, score on held-out generated pairs and patient03."""
    from msnode_training.baseline import run_baseline
    from msnode_training.paths import TRAINING_DIR, work_dir

    parser = argparse.ArgumentParser(description=baseline_main.__doc__)
    parser.add_argument("--work", type=Path, default=work_dir() / "real_pairs", help="pair cache root")
    parser.add_argument("--out", type=Path, default=TRAINING_DIR / "experiments")
    parser.add_argument("--seed", type=int, default=0, help="run seed (validation and test streams)")
    parser.add_argument("--validation-pairs", type=int, default=16)
    parser.add_argument("--test-pairs", type=int, default=16)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0])
    parser.add_argument("--min-volumes", type=float, nargs="+", default=[3.0, 10.0, 30.0, 60.0])
    parser.add_argument("--smoothings", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    result = run_baseline(args.work, args.out, args.seed, args.validation_pairs, args.test_pairs, args.thresholds,
                          args.min_volumes, args.smoothings, args.workers)
    print(json.dumps({"chosen": result["chosen"], "generation": result["generation"],
                      **{k: v["summary"] for k, v in result["evaluations"].items()}}, indent=2))
