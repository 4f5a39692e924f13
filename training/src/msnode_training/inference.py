"""Sliding-window prediction as nnU-Net does it, for a torch network or an ONNX Runtime session.

The same code serves training-time validation, evaluation and the ONNX parity check, and it is what the node
reimplements: tiles of the patch size, step half a tile, Gaussian importance (sigma = tile / 8, max 1), logits
summed with these weights and divided by the summed weights, optional mirroring, softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations, product
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnode_training.channels import (
    bounding_box,
    nonzero_mask,
    model_input_channels,
    normalise_channels,
)
from msnode_training.metrics import remove_small_components
from msnode_training.volumes import Geometry, resample_array

PatchRunner = Callable[[np.ndarray], np.ndarray]


@lru_cache(maxsize=8)
def gaussian_importance(patch_size: tuple[int, ...], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    delta = np.zeros(patch_size, dtype=np.float64)
    delta[tuple(s // 2 for s in patch_size)] = 1
    weights = ndimage.gaussian_filter(delta, [s * sigma_scale for s in patch_size], mode="constant", cval=0)
    weights = weights / weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return weights.astype(np.float32)


def sliding_window_starts(size: int, tile: int, step_fraction: float = 0.5) -> list[int]:
    """nnU-Net's steps: ceil((size - tile) / (tile * step)) + 1 tiles spread evenly."""
    if size <= tile:
        return [0]
    n_steps = int(np.ceil((size - tile) / (tile * step_fraction))) + 1
    span = size - tile
    return [int(np.round(span / (n_steps - 1) * i)) for i in range(n_steps)]


def predict_logits(image: np.ndarray, run_patch: PatchRunner, patch_size: Sequence[int], num_classes: int,
                   mirror_axes: Sequence[int] = ()) -> np.ndarray:
    """Logits (K, z, y, x) for a normalised image (C, z, y, x); images smaller than a tile are padded."""
    patch = tuple(int(p) for p in patch_size)
    spatial = image.shape[1:]
    padded_shape = tuple(max(s, p) for s, p in zip(spatial, patch))
    pad_before = [(ps - s) // 2 for ps, s in zip(padded_shape, spatial)]
    padded = np.zeros((image.shape[0], *padded_shape), dtype=np.float32)
    inner = tuple(slice(b, b + s) for b, s in zip(pad_before, spatial))
    padded[(slice(None), *inner)] = image
    weights = gaussian_importance(patch)
    summed = np.zeros((num_classes, *padded_shape), dtype=np.float32)
    weight_sum = np.zeros(padded_shape, dtype=np.float32)
    mirror_sets = [c for r in range(len(mirror_axes) + 1) for c in combinations(mirror_axes, r)]
    for start in product(*[sliding_window_starts(s, p) for s, p in zip(padded_shape, patch)]):
        window = tuple(slice(a, a + p) for a, p in zip(start, patch))
        tile = padded[(slice(None), *window)][None]
        logits = np.zeros((num_classes, *patch), dtype=np.float32)
        for axes in mirror_sets:
            flip_axes = tuple(a + 2 for a in axes)
            out = run_patch(np.ascontiguousarray(np.flip(tile, flip_axes)) if axes else tile)
            logits += (np.flip(out, flip_axes) if axes else out)[0]
        summed[(slice(None), *window)] += logits / len(mirror_sets) * weights
        weight_sum[window] += weights
    result = summed / weight_sum
    return result[(slice(None), *inner)]


def softmax_foreground(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=0, keepdims=True)
    exp = np.exp(shifted)
    return (exp[1] / exp.sum(axis=0)).astype(np.float32)


def torch_runner(network: "torch.nn.Module") -> PatchRunner:  # noqa: F821
    import torch

    network.eval()
    device = next(network.parameters()).device  # tiles go where the weights are (CPU, or the training GPU)

    def run(tile: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            output = network(torch.from_numpy(np.ascontiguousarray(tile)).to(device))
            if isinstance(output, (list, tuple)):  # deep supervision: full resolution first
                output = output[0]
            return output.float().cpu().numpy()

    return run


def onnx_runner(session: "onnxruntime.InferenceSession") -> PatchRunner:  # noqa: F821
    input_name = session.get_inputs()[0].name

    def run(tile: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: tile.astype(np.float32)})[0]

    return run


@dataclass(frozen=True)
class ModelGeometry:
    """What inference needs to know about a model (the model card carries the same facts)."""

    spacing_zyx: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    num_classes: int = 2
    mirror_axes: tuple[int, ...] = ()


def foreground_probability(prior: np.ndarray | None, current: np.ndarray, geometry: Geometry,
                           model: ModelGeometry, run_patch: PatchRunner) -> np.ndarray:
    """Lesion probability on the input grid: resample to the model spacing, build and normalise the channels
    inside the nonzero mask's bounding box, slide the window, resample the probability back (linear) and zero it
    outside the input's nonzero mask. `prior` None: a single-visit model (one channel, the current FLAIR)."""
    original_prior, original_current = prior, current
    target = geometry.with_spacing(model.spacing_zyx)
    same_grid = target.shape_zyx == geometry.shape_zyx and np.allclose(target.spacing_zyx, geometry.spacing_zyx)
    if not same_grid:
        if prior is not None:
            prior = resample_array(prior.astype(np.float32), geometry, target, sitk.sitkBSpline)
        current = resample_array(current.astype(np.float32), geometry, target, sitk.sitkBSpline)
    channels = model_input_channels(prior, current)
    mask = nonzero_mask(channels)
    box = bounding_box(mask)
    cropped = normalise_channels(channels[(slice(None), *box)], mask[box])
    logits = predict_logits(cropped, run_patch, model.patch_size, model.num_classes, model.mirror_axes)
    probability = np.zeros(mask.shape, dtype=np.float32)
    probability[box] = softmax_foreground(logits)
    if not same_grid:
        probability = resample_array(probability, target, geometry, sitk.sitkLinear)
        # Linear resampling smears probability past the edge of the input; nothing outside it is a lesion.
        probability[~nonzero_mask(model_input_channels(original_prior, original_current))] = 0
    return probability


def lesion_mask(probability: np.ndarray, spacing_zyx: tuple[float, float, float], threshold: float,
                min_lesion_volume_mm3: float) -> np.ndarray:
    return remove_small_components(probability >= threshold, spacing_zyx, min_lesion_volume_mm3)
