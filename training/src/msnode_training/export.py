"""ONNX export of a trained nnU-Net network (deep supervision off), the model card the node reads, the human
MODEL_CARD.md, and the ONNX Runtime vs PyTorch parity check on real inputs."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from onnx import numpy_helper

from msnode_training.channels import CHANNEL_DESCRIPTIONS
from msnode_training.inference import (
    ModelGeometry,
    foreground_probability,
    lesion_mask,
    onnx_runner,
    torch_runner,
)
from msnode_training.metrics import voxel_dice
from msnode_training.nnunet_data import CONFIGURATION, LABELS, NETWORK_SIZES, sized_plans, total_stride
from msnode_training.readers import LongitudinalCase

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
CARD_SCHEMA_VERSION = "1"


@dataclass
class TrainedModel:
    network: torch.nn.Module
    plans: dict
    dataset_json: dict

    @property
    def configuration(self) -> dict:
        return self.plans["configurations"][CONFIGURATION]

    @property
    def input_channels(self) -> list[str]:
        names = self.dataset_json["channel_names"]
        return [names[str(i)] for i in range(len(names))]

    @property
    def single_visit(self) -> bool:
        """One input channel, the current FLAIR: no prior."""
        return self.input_channels == ["current"]

    def inputs(self, case: LongitudinalCase) -> tuple[np.ndarray | None, np.ndarray]:
        """(prior, current) as `foreground_probability` takes them for this model (prior None: single visit)."""
        return (None if self.single_visit else case.prior), case.current

    def geometry(self, mirror_axes: tuple[int, ...] = ()) -> ModelGeometry:
        return ModelGeometry(tuple(float(v) for v in self.configuration["spacing"]),
                             tuple(int(v) for v in self.configuration["patch_size"]),
                             len(self.dataset_json["labels"]), mirror_axes)


def load_trained_model(results_folder: Path, checkpoint: Path) -> TrainedModel:
    """The network of an nnU-Net results folder (plans.json, dataset.json) with deep supervision off."""
    plans = json.loads((results_folder / "plans.json").read_text())
    dataset_json = json.loads((results_folder / "dataset.json").read_text())
    network = network_from_plans(plans, dataset_json)
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    network.load_state_dict(weights)
    network.eval()
    return TrainedModel(network, plans, dataset_json)


def export_onnx(model: TrainedModel, onnx_path: Path) -> None:
    """Opset 17, float32, dynamic batch and spatial axes (each edge a multiple of the network's total stride)."""
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    patch = model.configuration["patch_size"]
    example = torch.zeros((1, len(model.input_channels), *patch), dtype=torch.float32)
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    torch.onnx.export(model.network, (example,), str(onnx_path), input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], opset_version=OPSET, dynamic_axes={INPUT_NAME: axes,
                                                                                     OUTPUT_NAME: axes},
                      dynamo=False)
    onnx.checker.check_model(onnx.load(str(onnx_path)))


NNUNET_README = """# nnU-Net checkpoint of {name}

The weights `model.onnx` was exported from, in nnU-Net v2's layout, so that nnU-Net's own `nnUNetPredictor` can
run the same model: `plans.json` and `dataset.json` from the training run's results folder, and
`fold_0/checkpoint_final.pth` (network weights, trainer name and mirroring axes only; optimizer state dropped).
The trainer class is msnode's own (`MsnodeTrainer`, in `training/`), so the predictor is built with
`manual_initialization` rather than from the folder: see `tests/tools/nnunet_predict.py`.

Used by the parity test (`tests/infer.rs`: `msnode infer` against `nnUNetPredictor`) and by `benches/infer.py`.
Same licence as the model (MIT OR Apache-2.0).
"""


REBUILT_NOTE = """
This copy was rebuilt from `{onnx}` (`msnode-rebuild-checkpoint`), because the training run's own checkpoint was
not kept: the network the plans describe with the ONNX file's initializers, bit for bit. The parity test then
checks the exported graph and msnode's pipeline against nnU-Net's network and predictor on those weights.
"""


def export_nnunet_checkpoint(results_folder: Path, checkpoint: Path, out: Path, name: str) -> None:
    """`out` = plans.json, dataset.json and fold_0/checkpoint_final.pth with what nnU-Net's predictor reads."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    for file in ("plans.json", "dataset.json"):
        (out / file).write_text((results_folder / file).read_text())
    torch.save({key: saved[key] for key in ("network_weights", "trainer_name", "inference_allowed_mirroring_axes")},
               out / "fold_0" / "checkpoint_final.pth")
    (out / "README.md").write_text(NNUNET_README.format(name=name))


def network_from_plans(plans: dict, dataset_json: dict) -> torch.nn.Module:
    """The plans' network (deep supervision off), weights as initialised."""
    manager = PlansManager(plans)
    configuration = manager.get_configuration(CONFIGURATION)
    return get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                  configuration.network_arch_init_kwargs_req_import,
                                  len(dataset_json["channel_names"]),
                                  manager.get_label_manager(dataset_json).num_segmentation_heads,
                                  allow_init=True, deep_supervision=False)


def unused_head(name: str, network: torch.nn.Module) -> bool:
    """A segmentation head other than the last: with deep supervision off only the last one runs."""
    heads = len(network.decoder.seg_layers)
    return any(name.startswith(f"decoder.seg_layers.{i}.") for i in range(heads - 1))


def weights_from_onnx(onnx_path: Path, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's state dict with every tensor taken from the ONNX file's initializers, which
    `torch.onnx.export` names after the parameters. PlainConvUNet reaches one tensor under several names (a conv
    is also `all_modules.0`, the decoder holds the encoder): each tensor must be found under one of them, except
    the unused heads (zeros)."""
    initializers = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
                    for i in onnx.load(str(onnx_path)).graph.initializer}
    state = network.state_dict(keep_vars=True)
    names_of: dict[int, list[str]] = {}
    for name, tensor in state.items():
        names_of.setdefault(id(tensor), []).append(name)
    weights: dict[str, torch.Tensor] = {}
    for names in names_of.values():
        found = [initializers[n] for n in names if n in initializers]
        if not found and unused_head(names[0], network):
            # Deep supervision's coarser heads: not in the graph, they cannot change an output.
            found = [torch.zeros_like(state[names[0]])]
        if not found:
            raise ValueError(f"{onnx_path}: no initializer for {names[0]} (nor its aliases {names[1:]})")
        if found[0].shape != state[names[0]].shape:
            raise ValueError(f"{onnx_path}: {names[0]} is {tuple(found[0].shape)} in the ONNX file, "
                             f"{tuple(state[names[0]].shape)} in the network")
        weights.update({n: found[0] for n in names})
    return weights


def nnunet_checkpoint_from_onnx(onnx_path: Path, plans: dict, dataset_json: dict, out: Path, name: str,
                                mirror_axes: tuple[int, ...]) -> None:
    """`export_nnunet_checkpoint`'s layout rebuilt from an exported ONNX file, for a model whose training
    checkpoint was not kept: the network the plans describe, with the ONNX file's weights (bit for bit)."""
    network = network_from_plans(plans, dataset_json)
    network.load_state_dict(weights_from_onnx(onnx_path, network))
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    torch.save({"network_weights": network.state_dict(), "trainer_name": "MsnodeTrainer",
                "inference_allowed_mirroring_axes": tuple(mirror_axes)}, out / "fold_0" / "checkpoint_final.pth")
    (out / "README.md").write_text(NNUNET_README.format(name=name) + REBUILT_NOTE.format(onnx=onnx_path.name))


def rebuild_nnunet_folder(model_dir: Path, size: str, template: Path) -> Path:
    """`model_dir/nnunet` rebuilt from the folder's ONNX file and card (`msnode-rebuild-checkpoint`): the plans are
    `template`'s with network `size`, which must give the card's patch and spacing; dataset.json from the card."""
    card = json.loads((model_dir / "model_card.json").read_text())
    plans = sized_plans(json.loads((template / "plans.json").read_text()), NETWORK_SIZES[size])
    configuration = plans["configurations"][CONFIGURATION]
    if configuration["patch_size"] != card["patch_size"] or configuration["spacing"] != card["spacing_mm"]:
        raise ValueError(f"{size}: patch {configuration['patch_size']} at {configuration['spacing']} mm, "
                         f"the card says {card['patch_size']} at {card['spacing_mm']} mm")
    template_dataset = json.loads((template / "dataset.json").read_text())
    dataset_json = {"channel_names": {str(i): c for i, c in enumerate(card["input_channels"])},
                    "labels": {label: int(value) for value, label in card["output_labels"].items()},
                    "file_ending": template_dataset["file_ending"],
                    "overwrite_image_reader_writer": template_dataset["overwrite_image_reader_writer"],
                    "description": f"{card['name']} {card['version']}, rebuilt from its ONNX file"}
    out = model_dir / "nnunet"
    nnunet_checkpoint_from_onnx(model_dir / card["onnx_file"], plans, dataset_json, out, card["name"],
                                tuple(card["mirror_axes"]))
    return out


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def onnx_session(onnx_path: Path, threads: int = 2) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def parity_check(model: TrainedModel, onnx_path: Path, case: LongitudinalCase, threshold: float,
                 min_lesion_volume_mm3: float) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on one real case through the full inference path: Dice and lesion-volume
    difference at the card's threshold, and at the 99.5th percentile of the PyTorch probability inside the
    brain so that the comparison never rests on two empty masks."""
    geometry = model.geometry()
    prior, current = model.inputs(case)
    probability_torch = foreground_probability(prior, current, case.geometry, geometry, torch_runner(model.network))
    session = onnx_session(onnx_path)
    started = time.monotonic()
    probability_onnx = foreground_probability(prior, current, case.geometry, geometry, onnx_runner(session))
    onnx_seconds = time.monotonic() - started
    spacing = case.geometry.spacing_zyx
    inside = current > 0 if prior is None else (prior > 0) | (current > 0)
    percentile_threshold = float(np.percentile(probability_torch[inside], 99.5))
    largest_difference = float(np.abs(probability_torch - probability_onnx).max())
    report: dict[str, Any] = {"case": case.case_id, "max_abs_probability_difference": largest_difference,
                              # The whole Python inference path (resampling, channels, sliding window, no mirroring)
                              # with ONNX Runtime on 2 CPU threads: the CPU cost of one case.
                              "onnx_cpu_seconds_2_threads": round(onnx_seconds, 2)}
    for name, cut, min_volume in (("card_threshold", threshold, min_lesion_volume_mm3),
                                  ("percentile_99_5", percentile_threshold, 0.0)):
        mask_torch = lesion_mask(probability_torch, spacing, cut, min_volume) if min_volume else \
            (probability_torch >= cut).astype(np.uint8)
        mask_onnx = lesion_mask(probability_onnx, spacing, cut, min_volume) if min_volume else \
            (probability_onnx >= cut).astype(np.uint8)
        volume_torch = float(mask_torch.sum() * case.geometry.voxel_volume_mm3)
        volume_onnx = float(mask_onnx.sum() * case.geometry.voxel_volume_mm3)
        relative = abs(volume_onnx - volume_torch) / volume_torch if volume_torch > 0 else float(volume_onnx > 0)
        report[name] = {"threshold": cut, "dice": voxel_dice(mask_torch, mask_onnx), "volume_torch_mm3": volume_torch,
                        "volume_onnx_mm3": volume_onnx, "relative_volume_difference": relative}
    report["passes"] = all(report[n]["dice"] >= 0.99 and report[n]["relative_volume_difference"] <= 0.01
                           for n in ("card_threshold", "percentile_99_5")) and \
        report["percentile_99_5"]["volume_torch_mm3"] > 0
    return report


def build_model_card(name: str, version: str, onnx_path: Path, model: TrainedModel, threshold: float,
                     min_lesion_volume_mm3: float, provenance: dict, evaluation: dict,
                     mirror_axes: tuple[int, ...] = (0, 1, 2), channel_descriptions: dict[str, str] | None = None,
                     preprocessing: list[str] | None = None) -> dict[str, Any]:
    """The card the node reads. Input channels and output labels come from the model's dataset.json;
    `channel_descriptions` and `preprocessing` default to the two-visit model's."""
    configuration = model.configuration
    descriptions = CHANNEL_DESCRIPTIONS if channel_descriptions is None else channel_descriptions
    return {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_of(onnx_path),
        "opset": OPSET,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_channels": model.input_channels,
        "input_channel_descriptions": {c: descriptions[c] for c in model.input_channels},
        "axis_order": "arrays are (z, y, x) as SimpleITK reads them (x fastest); tensors are (batch, channel, z, y, x)",
        "spacing_mm": [float(v) for v in configuration["spacing"]],
        "patch_size": [int(v) for v in configuration["patch_size"]],
        "dynamic_spatial": True,
        "spatial_divisor": total_stride(configuration),
        "normalization": {"scheme": "zscore", "use_mask": True, "clip_percentiles": None,
                          "mask": "nonzero: any input channel nonzero, holes filled; 0 outside after normalisation"},
        "preprocessing": list(preprocessing) if preprocessing is not None else [
            "align the prior to the current visit (rigid) on one grid; skull-strip both "
            "(training data were brain-only)",
            "resample both visits to spacing_mm (third-order B-spline)",
            "build the channels in input_channels order",
            "crop to the bounding box of the nonzero mask",
            "z-score every channel inside the nonzero mask, 0 outside",
            "sliding window: tiles of patch_size, step half a tile, Gaussian weights sigma = tile / 8, logits "
            "averaged with these weights; images smaller than a tile are zero-padded",
            "softmax over output labels, probability of label 1 resampled (linear) back to the input grid and set "
            "to 0 outside the input's nonzero mask",
            "threshold at default_threshold, drop connected components (6-neighbour) of min_lesion_volume_mm3 or less",
        ],
        "output_activation": "softmax",
        "output_labels": {str(v): k for k, v in model.dataset_json.get("labels", LABELS).items()},
        "default_threshold": float(threshold),
        "min_lesion_volume_mm3": float(min_lesion_volume_mm3),
        "mirror_axes": list(mirror_axes),
        "provenance": provenance,
        "evaluation": evaluation,
        "intended_use": "research and evaluation only; not cleared for clinical use",
    }


CARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "version": str, "onnx_file": str, "onnx_sha256": str, "input_name": str, "output_name": str,
    "input_channels": list, "spacing_mm": list, "patch_size": list, "dynamic_spatial": bool,
    "normalization": dict, "output_activation": str, "output_labels": dict, "default_threshold": (int, float),
    "min_lesion_volume_mm3": (int, float), "mirror_axes": list, "provenance": dict, "evaluation": dict,
}


def validate_model_card(card: dict[str, Any], model_dir: Path) -> list[str]:
    """Problems with a model card and its ONNX file; an empty list means the node can use it."""
    problems = [f"missing or mistyped field {k!r}" for k, t in CARD_FIELDS.items()
                if k not in card or not isinstance(card[k], t) or (t is not bool and isinstance(card[k], bool))]
    if problems:
        return problems
    if card["output_activation"] not in ("softmax", "sigmoid"):
        problems.append("output_activation must be softmax or sigmoid")
    if len(card["spacing_mm"]) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in card["spacing_mm"]):
        problems.append("spacing_mm must be three positive numbers (z, y, x)")
    if len(card["patch_size"]) != 3 or not all(isinstance(v, int) and v > 0 for v in card["patch_size"]):
        problems.append("patch_size must be three positive integers (z, y, x)")
    norm = card["normalization"]
    if norm.get("scheme") != "zscore" or not isinstance(norm.get("use_mask"), bool) or not (
            norm.get("clip_percentiles") is None or len(norm["clip_percentiles"]) == 2):
        problems.append("normalization must be zscore with use_mask and clip_percentiles [lo, hi] or null")
    if card["output_labels"].get("0") != "background" or "1" not in card["output_labels"]:
        problems.append("output_labels must map '0' to background and name label '1'")
    if not 0 < card["default_threshold"] < 1:
        problems.append("default_threshold must lie in (0, 1)")
    if any(a not in (0, 1, 2) for a in card["mirror_axes"]):
        problems.append("mirror_axes must be spatial axes 0, 1, 2")
    onnx_path = model_dir / card["onnx_file"]
    if not onnx_path.is_file():
        return problems + [f"{onnx_path} is missing"]
    if sha256_of(onnx_path) != card["onnx_sha256"]:
        problems.append("onnx_sha256 does not match the ONNX file")
    graph = onnx.load(str(onnx_path)).graph
    output_names = [o.name for o in graph.output]
    if [i.name for i in graph.input] != [card["input_name"]] or card["output_name"] not in output_names:
        problems.append("input_name/output_name do not match the ONNX graph")
    else:
        dims = graph.input[0].type.tensor_type.shape.dim
        if dims[1].dim_value != len(card["input_channels"]):
            problems.append("ONNX input channel count differs from input_channels")
        spatial_dynamic = all(d.dim_param for d in dims[2:])
        if spatial_dynamic != card["dynamic_spatial"]:
            problems.append("dynamic_spatial does not match the ONNX input shape")
    return problems


def format_figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def method_summary(provenance: dict[str, Any]) -> str:
    """A few sentences on how the model was made, from the card's provenance (its `method` when it has one)."""
    if isinstance(provenance.get("method"), str):
        return provenance["method"]
    data = provenance.get("training_data", {})
    finetune, pretrain = data.get("finetune", {}), data.get("pretraining", {})
    iterations = provenance.get("iterations", {})
    if not finetune:
        return "Exported without pipeline provenance; see the JSON below."
    return (
        f"A 3D PlainConvUNet ({provenance.get('network', {}).get('features_per_stage')} features per stage) trained "
        f"with nnU-Net v2. Pretraining: {pretrain.get('strategy')} on {pretrain.get('cases')} synthetic cases "
        f"({iterations.get('pretrain')} iterations). Fine-tuning ({provenance.get('finetuning_strategy')}, pretrained "
        f"weights after plans transfer) on {finetune.get('synthetic_ms')} synthetic MS pairs, "
        f"{finetune.get('semi_synthetic')} semi-synthetic pairs (real lesions removed from a real FLAIR) and the "
        f"Lesjak longitudinal patients {finetune.get('lesjak_longitudinal')}, for "
        f"{iterations.get('finetune_epochs_run')} epochs of {iterations.get('finetune_iterations_per_epoch')} "
        f"iterations, with validation F1 on {finetune.get('validation_synthetic_ms')} held-out synthetic pairs "
        "driving learning-rate reduction and early stopping. Threshold and minimum lesion volume were chosen on "
        "those validation pairs, so their figures below are optimistic; the Lesjak and synthetic test figures are "
        "not tuned on."
    )


def quantization_note(card: dict[str, Any]) -> str:
    """For a quantised model: what was quantised and from which model; its figures are not the source's."""
    record = card.get("quantization")
    if record is None:
        return ""
    return (f"\n**Quantised model**: {record['scheme']}, calibrated ({record['calibration']}) on "
            f"{record['calibration_tiles']} inference tiles, from `{record['source_model']}` (ONNX sha256 "
            f"{record['source_onnx_sha256'][:12]}...); kept in fp32: {len(record['kept_in_fp32'])} convolution(s). "
            f"The table above is empty on purpose: the source's figures are under `evaluation.fp32_source` in "
            f"model_card.json, and this model's own are in the repository's notes.\n")


def write_model_card_markdown(card: dict[str, Any], path: Path) -> None:
    """The human-readable companion of model_card.json."""
    provenance, evaluation = card["provenance"], card["evaluation"]
    columns = ("mean_f1", "mean_sensitivity", "mean_ppv", "mean_dice", "mean_n_false_positives",
               "mean_false_positive_volume_mm3")
    rows = "\n".join(f"| {name} | {' | '.join(format_figure(figures.get(k)) for k in columns)} |"
                     for name, figures in evaluation.items() if isinstance(figures, dict) and "mean_f1" in figures)
    held_out = evaluation.get("synthetic_test_provenance")
    held_out_note = "" if held_out is None else (
        f"\n`synthetic_test`: {evaluation['synthetic_test'].get('cases')} held-out synthetic pairs (seed "
        f"{held_out['seed']}), {held_out['runtime']}; ONNX Runtime CPU seconds per case "
        f"{json.dumps(held_out['onnx_cpu_seconds_per_case'])}.\n")
    channels = "\n".join(f"{i}. `{c}`: {card['input_channel_descriptions'].get(c, '')}"
                         for i, c in enumerate(card["input_channels"]))
    single_visit = "prior" not in card["input_channels"]
    task = ("all FLAIR-hyperintense multiple-sclerosis lesions on a single FLAIR (no prior visit)" if single_visit
            else "candidate new or\nenlarging multiple-sclerosis lesions between a prior and a current FLAIR")
    inputs_note = "The FLAIR must be skull-stripped." if single_visit else \
        "Both visits must be rigidly aligned and skull-stripped."
    data_limits = ("- Real evaluation data: one Lesjak cross-sectional patient (patient26, CC-BY, Lesjak et al., "
                   "Neuroinformatics 2017),\n  never used for training or tuning. One patient says little about "
                   "performance elsewhere.\n- Training cases are built on one real scan (patient07) with real lesion "
                   "shapes inserted;\n  expect a domain gap on other scanners and protocols." if single_visit else
                   "- Real evaluation data here are the Lesjak longitudinal patients (CC-BY; Lesjak et al., "
                   "Neuroinformatics 2016):\n  two patients, thick-slice 2D FLAIR. Figures on so few cases say little "
                   "about performance elsewhere.\n- Synthetic training data (MNI152 anatomy from nilearn, Lesjak "
                   "cross-sectional FLAIRs, CC-BY, Lesjak et al. 2017)\n  differ from clinical scans; expect a domain gap.")
    label_limit = ("Every FLAIR hyperintensity that looks like an MS lesion is labelled; other hyperintense "
                   "pathology may be marked too." if single_visit else
                   "Only change that is brighter at the current visit is labelled; shrinking lesions are not reported.")
    text = f"""# Model card: {card['name']} {card['version']}

**Intended use: research and evaluation only. Not cleared for clinical use.** The model marks {task}; every output needs review by a
qualified reader.

## Files
- `{card['onnx_file']}` (sha256 `{card['onnx_sha256']}`), ONNX opset {card.get('opset')},
  input `{card['input_name']}` (batch, channel, z, y, x), output `{card['output_name']}` (batch, label, z, y, x),
  {card['output_activation']} over labels.
- `model_card.json`: the same facts for the node (schema in `training/README.md`).

## Input
{channels}

Spacing {card['spacing_mm']} mm (z, y, x); patch {card['patch_size']}; dynamic spatial size: {card['dynamic_spatial']}
(edges multiples of {card.get('spatial_divisor')}). Normalisation: z-score per channel inside the nonzero mask.
{inputs_note} Defaults: threshold {card['default_threshold']},
minimum lesion volume {card['min_lesion_volume_mm3']} mm3, test-time mirroring axes {card['mirror_axes']}.

## Data and method
{method_summary(provenance)}
{chr(10) + "**Training scale**: " + provenance["training_scale"] + chr(10) if provenance.get("training_scale") else ""}
```json
{json.dumps({k: v for k, v in provenance.items() if k != "log"}, indent=2)}
```

The full training log (case lists, learning-rate search, validation F1 per epoch) is in `model_card.json`.

## Evaluation (MSSEG-2 rules: lesion-wise F1, sensitivity, PPV; voxel Dice; nFP and VFP on cases without new lesions)
| set | F1 | sensitivity | PPV | Dice | nFP | VFP mm3 |
|---|---|---|---|---|---|---|
{rows}
{held_out_note}
Parity ONNX Runtime vs PyTorch: {json.dumps(evaluation.get('onnx_parity', {}))}
{quantization_note(card)}

## Limits
{data_limits}
- {label_limit}
"""
    path.write_text(text)
