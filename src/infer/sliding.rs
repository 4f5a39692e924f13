//! Sliding-window prediction over a (channels, z, y, x) image, nnU-Net v2 style: pad to the tile,
//! run batches of tiles (optionally mirrored), weight each tile's logits with the Gaussian
//! importance map, and divide by the summed weights.
//!
//! Memory: besides the input (and a padded copy only when the image is smaller than a tile),
//! only the accumulated logits, the summed weights and one batch of tiles are held.

use ndarray::{Array3, Array4, Array5, ArrayView4, Axis, Slice, s};

use super::card::Activation;
use super::window::{gaussian_importance, padding, tile_origins};

#[derive(Debug, Clone, PartialEq)]
pub struct WindowSettings {
    /// Tile (patch) size, (z, y, x).
    pub tile: [usize; 3],
    /// Step between tiles as a fraction of the tile: 0.5 in nnU-Net.
    pub step_fraction: f64,
    /// Tiles per network call.
    pub batch: usize,
    /// Spatial axes to mirror (0 = z, 1 = y, 2 = x); empty for no test-time mirroring.
    pub mirror_axes: Vec<usize>,
}

/// Every non-empty subset of the mirror axes, as nnU-Net enumerates them.
fn mirror_combinations(axes: &[usize]) -> Vec<Vec<usize>> {
    let mut combos = Vec::new();
    for size in 1..=axes.len() {
        let mut indices: Vec<usize> = (0..size).collect();
        loop {
            combos.push(indices.iter().map(|&i| axes[i]).collect());
            // Next combination in lexicographic order.
            let Some(pos) = (0..size)
                .rev()
                .find(|&i| indices[i] != i + axes.len() - size)
            else {
                break;
            };
            indices[pos] += 1;
            for j in pos + 1..size {
                indices[j] = indices[j - 1] + 1;
            }
        }
    }
    combos
}

/// Reverse the given spatial axes of a (batch, channels, z, y, x) array.
fn flip(mut array: Array5<f32>, spatial_axes: &[usize]) -> Array5<f32> {
    for &axis in spatial_axes {
        array.invert_axis(Axis(axis + 2));
    }
    // `invert_axis` only changes strides: make the memory standard for the network.
    array.as_standard_layout().into_owned()
}

fn run_mirrored<E>(
    batch: Array5<f32>,
    mirror: &[Vec<usize>],
    network: &mut impl FnMut(Array5<f32>) -> Result<Array5<f32>, E>,
) -> Result<Array5<f32>, E> {
    let mut sum = network(batch.clone())?;
    for axes in mirror {
        let flipped = network(flip(batch.clone(), axes))?;
        sum += &flip(flipped, axes);
    }
    let n = (mirror.len() + 1) as f32;
    sum.mapv_inplace(|v| v / n);
    Ok(sum)
}

/// Logits over the whole image, (out_channels, z, y, x), from `network` applied tile by tile.
/// `network` maps (batch, channels, tz, ty, tx) to (batch, out_channels, tz, ty, tx).
pub fn predict_logits<E>(
    input: ArrayView4<f32>,
    settings: &WindowSettings,
    out_channels: usize,
    mut network: impl FnMut(Array5<f32>) -> Result<Array5<f32>, E>,
) -> Result<Array4<f32>, E> {
    let (channels, z, y, x) = input.dim();
    let size = [z, y, x];
    let tile = settings.tile;
    let pad = padding(size, tile);
    let padded_input;
    let input = if pad.iter().any(|&(a, b)| a + b > 0) {
        let padded_size = [0, 1, 2].map(|a| size[a] + pad[a].0 + pad[a].1);
        let mut p =
            Array4::<f32>::zeros((channels, padded_size[0], padded_size[1], padded_size[2]));
        p.slice_mut(s![
            ..,
            pad[0].0..pad[0].0 + z,
            pad[1].0..pad[1].0 + y,
            pad[2].0..pad[2].0 + x
        ])
        .assign(&input);
        padded_input = p;
        padded_input.view()
    } else {
        input
    };
    let (_, pz, py, px) = input.dim();
    let gaussian: Array3<f32> = gaussian_importance(tile, 1.0 / 8.0);
    let mut logits = Array4::<f32>::zeros((out_channels, pz, py, px));
    let mut weights = Array3::<f32>::zeros((pz, py, px));
    let mirror = mirror_combinations(&settings.mirror_axes);
    let origins = tile_origins([pz, py, px], tile, settings.step_fraction);
    for chunk in origins.chunks(settings.batch.max(1)) {
        let mut batch = Array5::<f32>::zeros((chunk.len(), channels, tile[0], tile[1], tile[2]));
        for (b, o) in chunk.iter().enumerate() {
            batch.index_axis_mut(Axis(0), b).assign(&input.slice(s![
                ..,
                o[0]..o[0] + tile[0],
                o[1]..o[1] + tile[1],
                o[2]..o[2] + tile[2]
            ]));
        }
        let out = run_mirrored(batch, &mirror, &mut network)?;
        for (b, o) in chunk.iter().enumerate() {
            let region = s![
                ..,
                o[0]..o[0] + tile[0],
                o[1]..o[1] + tile[1],
                o[2]..o[2] + tile[2]
            ];
            let mut target = logits.slice_mut(region);
            target += &(&out.index_axis(Axis(0), b) * &gaussian);
            let mut w = weights.slice_mut(s![
                o[0]..o[0] + tile[0],
                o[1]..o[1] + tile[1],
                o[2]..o[2] + tile[2]
            ]);
            w += &gaussian;
        }
    }
    for mut channel in logits.axis_iter_mut(Axis(0)) {
        channel /= &weights;
    }
    // Back to the unpadded image.
    let crop = [0, 1, 2].map(|a| Slice::from(pad[a].0..pad[a].0 + size[a]));
    Ok(logits.slice(s![.., crop[0], crop[1], crop[2]]).to_owned())
}

/// Probabilities from logits: softmax over the channel axis, or a sigmoid per channel.
pub fn activate(mut logits: Array4<f32>, activation: Activation) -> Array4<f32> {
    match activation {
        Activation::Sigmoid => logits.mapv_inplace(|v| 1.0 / (1.0 + (-v).exp())),
        Activation::Softmax => {
            let max = logits.fold_axis(Axis(0), f32::NEG_INFINITY, |a, b| a.max(*b));
            for mut channel in logits.axis_iter_mut(Axis(0)) {
                channel -= &max;
                channel.mapv_inplace(f32::exp);
            }
            let sum = logits.sum_axis(Axis(0));
            for mut channel in logits.axis_iter_mut(Axis(0)) {
                channel /= &sum;
            }
        }
    }
    logits
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn mirror_combinations_are_every_non_empty_subset() {
        assert_eq!(
            mirror_combinations(&[0, 1, 2]),
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
        assert!(mirror_combinations(&[]).is_empty());
    }

    /// A "network" that returns its first input channel and its negation: every tile agrees with
    /// the whole image, so the stitched result must equal the input wherever it is.
    fn echo(batch: Array5<f32>) -> Result<Array5<f32>, ()> {
        let first = batch.slice(s![.., 0..1, .., .., ..]).to_owned();
        Ok(ndarray::concatenate(Axis(1), &[first.view(), (-&first).view()]).unwrap())
    }

    #[test]
    fn stitching_reproduces_a_translation_equivariant_network() {
        let input = Array::from_shape_fn((2, 21, 37, 30), |(c, z, y, x)| {
            (c * 1000 + z * 100 + y * 10 + x) as f32
        });
        for mirror_axes in [vec![], vec![0, 1, 2]] {
            let settings = WindowSettings {
                tile: [8, 16, 16],
                step_fraction: 0.5,
                batch: 3,
                mirror_axes,
            };
            let logits = predict_logits(input.view(), &settings, 2, echo).unwrap();
            assert_eq!(logits.dim(), (2, 21, 37, 30));
            for ((c, z, y, x), v) in logits.indexed_iter() {
                let expected = input[[0, z, y, x]] * if c == 0 { 1.0 } else { -1.0 };
                assert!(
                    (v - expected).abs() < 1e-2,
                    "{v} != {expected} at {:?}",
                    (c, z, y, x)
                );
            }
        }
    }

    #[test]
    fn images_smaller_than_a_tile_are_padded_and_cropped() {
        let input = Array::from_shape_fn((1, 5, 6, 7), |(_, z, y, x)| (z + y + x) as f32 + 1.0);
        let settings = WindowSettings {
            tile: [8, 8, 8],
            step_fraction: 0.5,
            batch: 1,
            mirror_axes: vec![2],
        };
        let mut calls = 0;
        let logits = predict_logits(input.view(), &settings, 2, |b| {
            calls += 1;
            assert_eq!(b.dim(), (1, 1, 8, 8, 8));
            echo(b)
        })
        .unwrap();
        assert_eq!(calls, 2, "one tile, plus its mirror");
        assert_eq!(logits.dim(), (2, 5, 6, 7));
        assert!((logits[[0, 4, 5, 6]] - 16.0).abs() < 1e-4);
    }

    #[test]
    fn softmax_and_sigmoid() {
        let logits = Array::from_shape_vec((2, 1, 1, 2), vec![0.0, 2.0, 0.0, 0.0]).unwrap();
        let p = activate(logits.clone(), Activation::Softmax);
        assert!((p[[0, 0, 0, 0]] - 0.5).abs() < 1e-6);
        assert!((p[[1, 0, 0, 1]] - 1.0 / (1.0 + 2f32.exp())).abs() < 1e-6);
        let q = activate(logits, Activation::Sigmoid);
        assert!((q[[0, 0, 0, 1]] - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
    }
}
