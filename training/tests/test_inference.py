import numpy as np
import pytest

from msnode_training.channels import (
    bounding_box,
    nonzero_mask,
    normalise_channels,
    raw_input_channels,
)
from msnode_training.inference import (
    gaussian_importance,
    predict_logits,
    sliding_window_starts,
    softmax_foreground,
)


def test_channels_are_prior_current_and_normalised_difference() -> None:
    rng = np.random.default_rng(0)
    prior = np.zeros((6, 8, 8), dtype=np.float32)
    current = np.zeros_like(prior)
    prior[1:5, 2:6, 2:6] = rng.uniform(100, 200, (4, 4, 4))
    current[1:5, 2:6, 2:6] = 2 * prior[1:5, 2:6, 2:6] + 50  # same anatomy, other scanner scale
    channels = raw_input_channels(prior, current)
    assert channels.shape == (3, 6, 8, 8)
    np.testing.assert_array_equal(channels[0], prior)
    np.testing.assert_array_equal(channels[1], current)
    # An affine intensity change alone is no change after z-scoring.
    np.testing.assert_allclose(channels[2], 0, atol=1e-5)
    mask = nonzero_mask(channels)
    assert mask.sum() == 64
    normalised = normalise_channels(channels[:2], mask)
    assert normalised[0][mask].mean() == pytest.approx(0, abs=1e-5)
    assert normalised[0][mask].std() == pytest.approx(1, abs=1e-4)
    assert np.all(normalised[:, ~mask] == 0)
    assert bounding_box(mask) == (slice(1, 5), slice(2, 6), slice(2, 6))


def test_sliding_window_matches_nnunet() -> None:
    from nnunetv2.inference.sliding_window_prediction import (
        compute_steps_for_sliding_window,
    )

    for size, tile in [((80, 120, 117), (32, 48, 48)), ((32, 48, 48), (32, 48, 48)), ((33, 200, 61), (32, 64, 48))]:
        expected = compute_steps_for_sliding_window(size, tile, 0.5)
        assert [sliding_window_starts(s, t) for s, t in zip(size, tile)] == [list(e) for e in expected]


def test_gaussian_importance_matches_nnunet() -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    ours = gaussian_importance((16, 24, 24))
    import torch

    theirs = compute_gaussian((16, 24, 24), sigma_scale=1.0 / 8, value_scaling_factor=1.0, dtype=torch.float32,
                              device=torch.device("cpu")).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert ours.max() == pytest.approx(1.0) and ours.min() > 0


def test_stitching_reproduces_a_pointwise_network() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 20, 37, 9)).astype(np.float32)  # smaller than the tile along x: padded

    def identity(tile: np.ndarray) -> np.ndarray:
        return tile.copy()

    logits = predict_logits(image, identity, (16, 16, 16), 2)
    np.testing.assert_allclose(logits, image, atol=1e-5)
    mirrored = predict_logits(image, identity, (16, 16, 16), 2, mirror_axes=(0, 1, 2))
    np.testing.assert_allclose(mirrored, image, atol=1e-5)


def test_softmax_foreground() -> None:
    logits = np.zeros((2, 1, 1, 2), dtype=np.float32)
    logits[1, 0, 0, 1] = np.log(3.0)
    np.testing.assert_allclose(softmax_foreground(logits)[0, 0], [0.5, 0.75], rtol=1e-6)
