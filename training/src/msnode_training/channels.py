"""The network's input channels and their normalisation, shared by dataset conversion and inference.

Two-visit models, channel order: 0 = prior FLAIR, 1 = current FLAIR, 2 = current_minus_prior, where current_minus_prior is
zscore(current) - zscore(prior), each z-score taken inside the nonzero mask, and 0 outside it. The nonzero mask
is nnU-Net's: voxels where any channel is nonzero, holes filled. After that every channel is z-scored inside the
mask (0 outside), which is nnU-Net's ZScoreNormalization with use_mask_for_norm.

Single-visit models (no prior, issue 19 part 6) have one channel, `current`: the FLAIR itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

INPUT_CHANNELS = ("prior", "current", "current_minus_prior")
CHANNEL_DESCRIPTIONS = {
    "prior": "FLAIR of the earlier visit, on the current visit's grid (rigidly aligned), raw intensities",
    "current": "FLAIR of the later visit, raw intensities",
    "current_minus_prior": "zscore(current) - zscore(prior), z-scores inside the nonzero mask, 0 outside",
}
SINGLE_VISIT_CHANNELS = ("current",)
SINGLE_VISIT_CHANNEL_DESCRIPTIONS = {
    "current": "FLAIR of the visit (no prior), skull-stripped, raw intensities",
}


def nonzero_mask(channels: np.ndarray) -> np.ndarray:
    """nnU-Net's crop mask: any channel nonzero, holes filled. `channels` is (C, z, y, x)."""
    return ndimage.binary_fill_holes(np.any(channels != 0, axis=0))


def zscore_in_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(image.shape, dtype=np.float32)
    if mask.any():
        values = image[mask].astype(np.float64)
        out[mask] = ((values - values.mean()) / max(float(values.std()), 1e-8)).astype(np.float32)
    return out


def raw_input_channels(prior: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The three channels as written to nnU-Net's raw dataset (before nnU-Net's own normalisation)."""
    two = np.stack([prior, current]).astype(np.float32)
    mask = nonzero_mask(two)
    difference = zscore_in_mask(current, mask) - zscore_in_mask(prior, mask)
    return np.concatenate([two, difference[None]], axis=0)


def model_input_channels(prior: np.ndarray | None, current: np.ndarray) -> np.ndarray:
    """The raw channels of a two-visit case, or of a single-visit case (`prior` None: the current FLAIR alone)."""
    if prior is None:
        return current[None].astype(np.float32)
    return raw_input_channels(prior, current)


def normalise_channels(channels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.stack([zscore_in_mask(c, mask) for c in channels])


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    nz = np.argwhere(mask)
    if len(nz) == 0:
        return tuple(slice(0, s) for s in mask.shape)  # type: ignore[return-value]
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]
