"""Run nnU-Net v2's own predictor (nnUNetPredictor) on the channels `msnode infer --inputs-out`
wrote, with the model directory's nnU-Net checkpoint: the peer for the parity test and the
inference benchmark.

nnU-Net does its own preprocessing (crop to the nonzero region, z-score per channel inside it,
resampling to the plans' spacing, which is the identity on the model grid), its sliding window
(half-tile steps, Gaussian weights) and, with --mirror, test-time mirroring over the checkpoint's
axes. The foreground probability is written on the input grid, 0 outside the channels' nonzero
mask (holes filled, as nnU-Net makes it) as the model card's post-processing says (nnU-Net's own export leaves the network's output
there). Prints a JSON line with timings.

Usage: nnunet_predict.py --model-dir models/compact --inputs DIR --out PROB.nii.gz [--mirror] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.ndimage import binary_fill_holes
from msnode_training.export import load_trained_model
from msnode_training.nnunet_data import CONFIGURATION
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True, help="folder with one <channel>.nii.gz per channel")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    card = json.loads((args.model_dir / "model_card.json").read_text())
    nnunet_dir = args.model_dir / "nnunet"
    checkpoint_path = nnunet_dir / "fold_0" / "checkpoint_final.pth"
    started = time.perf_counter()
    model = load_trained_model(nnunet_dir, checkpoint_path)
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    plans = PlansManager(model.plans)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=args.mirror,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.manual_initialization(model.network, plans, plans.get_configuration(CONFIGURATION),
                                    [checkpoint["network_weights"]], model.dataset_json,
                                    checkpoint["trainer_name"], tuple(checkpoint["inference_allowed_mirroring_axes"]))

    images = [sitk.ReadImage(str(args.inputs / f"{name}.nii.gz")) for name in card["input_channels"]]
    data = np.stack([sitk.GetArrayFromImage(image).astype(np.float32) for image in images])
    spacing_zyx = list(images[0].GetSpacing())[::-1]
    loaded = time.perf_counter()
    _, probabilities = predictor.predict_single_npy_array(data, {"spacing": spacing_zyx}, None, None, True)
    predicted = time.perf_counter()

    foreground = np.asarray(probabilities[1], dtype=np.float32)
    foreground[~binary_fill_holes(np.any(data != 0, axis=0))] = 0.0
    out = sitk.GetImageFromArray(foreground)
    out.CopyInformation(images[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(args.out))
    print(json.dumps({"load_seconds": loaded - started, "predict_seconds": predicted - loaded,
                      "shape": list(data.shape), "mirroring": args.mirror}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
