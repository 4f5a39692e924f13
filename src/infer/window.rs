//! Sliding-window arithmetic, as nnU-Net v2 does it (`compute_steps_for_sliding_window`,
//! `compute_gaussian`, `pad_nd_image`), so that msnode and nnU-Net see the same tiles with the
//! same weights.

use ndarray::Array3;

/// Tile start positions along one axis: `ceil((size - tile) / (tile * step_fraction)) + 1` steps,
/// spread evenly and rounded half to even (numpy's `round`). `size` must be at least `tile`.
pub fn steps(size: usize, tile: usize, step_fraction: f64) -> Vec<usize> {
    debug_assert!(size >= tile, "pad the image to the tile first");
    let target_step = tile as f64 * step_fraction;
    let count = ((size - tile) as f64 / target_step).ceil() as usize + 1;
    if count == 1 {
        return vec![0];
    }
    let actual_step = (size - tile) as f64 / (count - 1) as f64;
    (0..count)
        .map(|i| (actual_step * i as f64).round_ties_even() as usize)
        .collect()
}

/// Every tile origin over a 3D image, z slowest, as nnU-Net iterates them.
pub fn tile_origins(size: [usize; 3], tile: [usize; 3], step_fraction: f64) -> Vec<[usize; 3]> {
    let [sz, sy, sx] = [0, 1, 2].map(|a| steps(size[a], tile[a], step_fraction));
    let mut origins = Vec::with_capacity(sz.len() * sy.len() * sx.len());
    for &z in &sz {
        for &y in &sy {
            for &x in &sx {
                origins.push([z, y, x]);
            }
        }
    }
    origins
}

/// Padding (below, above) per axis that brings an image up to at least the tile size, split as
/// nnU-Net splits it: the odd voxel goes above.
pub fn padding(size: [usize; 3], tile: [usize; 3]) -> [(usize, usize); 3] {
    [0, 1, 2].map(|a| {
        let missing = tile[a].saturating_sub(size[a]);
        (missing / 2, missing - missing / 2)
    })
}

/// One axis of scipy's `gaussian_filter` applied to a unit impulse at the tile centre
/// (truncate = 4 sigma, mode 'constant'): the normalised kernel, zero beyond its radius.
fn gaussian_profile(tile: usize, sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let kernel_sum: f64 = (-radius..=radius)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .sum();
    let centre = (tile / 2) as i64;
    (0..tile as i64)
        .map(|i| {
            let d = i - centre;
            if d.abs() > radius {
                0.0
            } else {
                (-0.5 * (d as f64 / sigma).powi(2)).exp() / kernel_sum
            }
        })
        .collect()
}

/// The importance map that weights each tile's prediction: a Gaussian with sigma = tile *
/// `sigma_scale` (1/8 in nnU-Net), scaled to a maximum of 1, with zeros replaced by the smallest
/// non-zero value so that no voxel gets zero weight.
pub fn gaussian_importance(tile: [usize; 3], sigma_scale: f64) -> Array3<f32> {
    let profiles = tile.map(|t| gaussian_profile(t, t as f64 * sigma_scale));
    let mut map = Array3::from_shape_fn((tile[0], tile[1], tile[2]), |(z, y, x)| {
        profiles[0][z] * profiles[1][y] * profiles[2][x]
    });
    let max = map.iter().cloned().fold(0.0, f64::max);
    map.mapv_inplace(|v| v / max);
    let min_nonzero = map
        .iter()
        .cloned()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    map.mapv(|v| {
        if v > 0.0 {
            v as f32
        } else {
            min_nonzero as f32
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_match_hand_worked_cases() {
        // Equal sizes: one tile.
        assert_eq!(steps(128, 128, 0.5), vec![0]);
        // 200 - 128 = 72 over target step 64: ceil(1.125) + 1 = 3 steps of 36.
        assert_eq!(steps(200, 128, 0.5), vec![0, 36, 72]);
        // 160 - 64 = 96 over 32: 4 steps of exactly 32.
        assert_eq!(steps(160, 64, 0.5), vec![0, 32, 64, 96]);
        // 150 - 64 = 86 over 32: ceil(2.6875) + 1 = 4 steps of 28.667: 0, 28.67, 57.33, 86.
        assert_eq!(steps(150, 64, 0.5), vec![0, 29, 57, 86]);
        // Ties round to even: 13 - 8 = 5 over 4: ceil(1.25) + 1 = 3 steps of 2.5 -> 0, 2 (not 3), 5.
        assert_eq!(steps(13, 8, 0.5), vec![0, 2, 5]);
        // 11 - 4 = 7 over 2: 5 steps of 1.75 -> 0, 1.75, 3.5 (to 4, even), 5.25, 7.
        assert_eq!(steps(11, 4, 0.5), vec![0, 2, 4, 5, 7]);
        // 7 - 4 = 3 over 2: ceil(1.5) + 1 = 3 steps of 1.5 -> 0, 2 (1.5 up to 2), 3.
        assert_eq!(steps(7, 4, 0.5), vec![0, 2, 3]);
    }

    #[test]
    fn origins_cover_the_image() {
        let origins = tile_origins([40, 100, 70], [32, 64, 64], 0.5);
        assert_eq!(origins.len(), 2 * 3 * 2);
        assert_eq!(origins[0], [0, 0, 0]);
        assert_eq!(*origins.last().unwrap(), [8, 36, 6]);
    }

    #[test]
    fn padding_puts_the_odd_voxel_above() {
        assert_eq!(
            padding([20, 64, 70], [32, 64, 64]),
            [(6, 6), (0, 0), (0, 0)]
        );
        assert_eq!(
            padding([21, 63, 10], [32, 64, 16]),
            [(5, 6), (0, 1), (3, 3)]
        );
    }

    #[test]
    fn gaussian_is_one_at_the_centre_and_matches_the_closed_form() {
        let map = gaussian_importance([16, 8, 8], 1.0 / 8.0);
        assert_eq!(map[[8, 4, 4]], 1.0);
        // sigma = 2 along z, 1 along y and x; relative to the centre, exp(-d^2 / (2 sigma^2)) per axis.
        let expected = (-0.5f64 * (3.0f64 / 2.0).powi(2)).exp() * (-0.5f64 * 2.0f64.powi(2)).exp();
        assert!(
            (map[[5, 6, 4]] as f64 - expected).abs() < 1e-6,
            "{}",
            map[[5, 6, 4]]
        );
        // Beyond 4 sigma (y = 0 is 4 voxels from the centre, radius int(4 + 0.5) = 4: still inside).
        assert!(map.iter().all(|v| *v > 0.0));
    }

    #[test]
    fn zeros_beyond_the_radius_take_the_smallest_weight() {
        // sigma = 1 along an axis of 32: the radius is 4 voxels, the rest is zero before the fix.
        let map = gaussian_importance([32, 8, 8], 1.0 / 32.0);
        let min = map.iter().cloned().fold(f32::INFINITY, f32::min);
        assert!(min > 0.0);
        assert_eq!(map[[0, 0, 0]], min);
    }
}
