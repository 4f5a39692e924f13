//! Resampling a volume onto any grid through a [`Transform`]: nearest neighbour (label maps),
//! trilinear, and cubic B-spline (images; the model's third-order spline), plus the separable
//! filters (B-spline prefilter, Gaussian smoothing) and the shrinking the registration pyramid uses.

use ndarray::{Array3, ArrayBase, Ix3};
use rayon::prelude::*;

use super::{RegisterError, Transform, matmul};
use crate::volume::{Affine, Volume, invert};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// For label maps: every output voxel holds one of the input's values.
    Nearest,
    Linear,
    /// Cubic B-spline (interpolating: the input is prefiltered into spline coefficients).
    BSpline,
}

/// Where a volume's voxels lie: `dims` as `[columns, rows, slices]`, `affine` voxel -> LPS mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub dims: [usize; 3],
    pub affine: Affine,
}

impl Grid {
    pub fn of(volume: &Volume) -> Grid {
        Grid {
            dims: volume.dims(),
            affine: volume.affine,
        }
    }

    /// Voxel size along columns, rows and slices, in mm.
    pub fn spacing(&self) -> [f64; 3] {
        [0, 1, 2].map(|c| {
            (0..3)
                .map(|r| self.affine[r][c].powi(2))
                .sum::<f64>()
                .sqrt()
        })
    }

    /// The same orientation and field of view (centred) with voxels of `spacing` mm along
    /// columns, rows and slices (x, y, z).
    pub fn with_spacing(&self, spacing: [f64; 3]) -> Result<Grid, RegisterError> {
        if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(RegisterError::Input(format!(
                "voxel spacing {spacing:?} mm: every value must be positive"
            )));
        }
        let old = self.spacing();
        let mut dims = [0; 3];
        let mut index_map = [[0.0; 4]; 4];
        index_map[3][3] = 1.0;
        for a in 0..3 {
            let extent = self.dims[a] as f64 * old[a];
            dims[a] = ((extent / spacing[a]) - 1e-6).ceil().max(1.0) as usize;
            let ratio = spacing[a] / old[a];
            // New voxel centre i' in old continuous index, the new field of view centred on the old.
            let margin = (extent - dims[a] as f64 * spacing[a]) / 2.0;
            index_map[a][a] = ratio;
            index_map[a][3] = -0.5 + (0.5 * spacing[a] + margin) / old[a];
        }
        Ok(Grid {
            dims,
            affine: matmul(&self.affine, &index_map),
        })
    }

    /// The model's working grid: `spacing_mm` in the model card's (z, y, x) order.
    pub fn for_model(&self, spacing_zyx: [f64; 3]) -> Result<Grid, RegisterError> {
        self.with_spacing([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]])
    }

    /// A volume with `data` ([slice, row, column]) on this grid.
    pub fn volume(&self, data: Array3<f32>) -> Volume {
        Volume {
            data,
            affine: self.affine,
            slices: Vec::new(),
        }
    }

    pub(crate) fn voxels(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Resample `source` onto `grid`: the output voxel at `x` takes the source's value at
/// `transform(x)` (the ITK convention; identity when both are in the same patient space).
/// Voxels that map outside the source get 0.
pub fn resample(
    source: &Volume,
    transform: &Transform,
    grid: &Grid,
    interpolation: Interpolation,
) -> Result<Volume, RegisterError> {
    if grid.voxels() == 0 || source.data.is_empty() {
        return Err(RegisterError::Input(
            "cannot resample an empty volume or onto an empty grid".into(),
        ));
    }
    let to_source = invert(&source.affine)
        .ok_or_else(|| RegisterError::Input("the source volume's affine is singular".into()))?;
    let index_map = matmul(&to_source, &matmul(&transform.affine, &grid.affine));
    let values = match interpolation {
        Interpolation::BSpline => ndarray::CowArray::from(bspline_coefficients(&source.data)),
        _ => source.data.as_standard_layout(),
    };
    let image = Image::new(&values);
    let [n0, n1, n2] = grid.dims;
    let mut out = vec![0.0f32; n0 * n1 * n2];
    out.par_chunks_mut(n0 * n1)
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..n1 {
                for i in 0..n0 {
                    let p = crate::volume::apply(&index_map, [i as f64, j as f64, k as f64]);
                    if image.inside(p) {
                        slice[j * n0 + i] = match interpolation {
                            Interpolation::Nearest => image.nearest(p),
                            Interpolation::Linear => image.linear(p),
                            Interpolation::BSpline => image.cubic(p),
                        };
                    }
                }
            }
        });
    Ok(Volume {
        data: Array3::from_shape_vec((n2, n1, n0), out)
            .map_err(|e| RegisterError::Input(e.to_string()))?,
        affine: grid.affine,
        slices: Vec::new(),
    })
}

/// Trilinear samples of `source` at chosen points of a grid: only where they are needed (the
/// lesion voxels), not over a whole resampled volume.
pub struct PointSampler<'a> {
    values: ndarray::CowArray<'a, f32, Ix3>,
    /// Grid voxel index (column, row, slice) -> source voxel index.
    index_map: Affine,
}

impl<'a> PointSampler<'a> {
    /// Samples of `source` at voxels of `grid`, `transform` mapping grid points to source points.
    pub fn new(
        source: &'a Volume,
        transform: &Transform,
        grid: &Grid,
    ) -> Result<PointSampler<'a>, RegisterError> {
        if source.data.is_empty() {
            return Err(RegisterError::Input("cannot sample an empty volume".into()));
        }
        let to_source = invert(&source.affine)
            .ok_or_else(|| RegisterError::Input("the source volume's affine is singular".into()))?;
        Ok(PointSampler {
            values: source.data.as_standard_layout(),
            index_map: matmul(&to_source, &matmul(&transform.affine, &grid.affine)),
        })
    }

    /// The source's value at grid voxel `[slice, row, column]`, as [`resample`] with
    /// [`Interpolation::Linear`] gives it there (0 outside the source).
    pub fn linear_at(&self, [k, j, i]: [usize; 3]) -> f32 {
        let image = Image::new(&self.values);
        let p = crate::volume::apply(&self.index_map, [i as f64, j as f64, k as f64]);
        if image.inside(p) {
            image.linear(p)
        } else {
            0.0
        }
    }
}

/// A volume's voxels with the index arithmetic the samplers need.
pub(crate) struct Image<'a> {
    data: &'a [f32],
    /// `[columns, rows, slices]`.
    n: [usize; 3],
}

impl<'a> Image<'a> {
    /// `data` must be in standard (C) layout: callers pass `as_standard_layout()` of what
    /// they were given, or arrays this module made.
    pub(crate) fn new<S: ndarray::Data<Elem = f32>>(data: &'a ArrayBase<S, Ix3>) -> Image<'a> {
        let (k, j, i) = data.dim();
        Image {
            data: data
                .as_slice()
                .expect("callers pass arrays in standard layout"),
            n: [i, j, k],
        }
    }

    /// Within half a voxel of the outermost voxel centres (the extent the voxels cover).
    #[inline]
    pub(crate) fn inside(&self, p: [f64; 3]) -> bool {
        (0..3).all(|a| p[a] >= -0.5 && p[a] <= self.n[a] as f64 - 0.5)
    }

    #[inline]
    fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[(k * self.n[1] + j) * self.n[0] + i]
    }

    fn nearest(&self, p: [f64; 3]) -> f32 {
        let [i, j, k] = [0, 1, 2].map(|a| (p[a].round().max(0.0) as usize).min(self.n[a] - 1));
        self.at(i, j, k)
    }

    /// Lower neighbour and weight of the upper one along axis `a`, clamped at the borders.
    #[inline]
    fn linear_axis(&self, p: f64, a: usize) -> (usize, usize, f64, bool) {
        let last = self.n[a] - 1;
        let x = p.clamp(0.0, last as f64);
        let lo = (x.floor() as usize).min(last.saturating_sub(1));
        let hi = (lo + 1).min(last);
        // The gradient is zero where the position was clamped (constant extension).
        let varies = hi > lo && p > 0.0 && p < last as f64;
        (lo, hi, x - lo as f64, varies)
    }

    fn linear(&self, p: [f64; 3]) -> f32 {
        self.linear_gradient(p).0
    }

    /// Trilinear value and its derivative along each voxel index axis.
    #[inline]
    pub(crate) fn linear_gradient(&self, p: [f64; 3]) -> (f32, [f64; 3]) {
        let (i0, i1, fx, vx) = self.linear_axis(p[0], 0);
        let (j0, j1, fy, vy) = self.linear_axis(p[1], 1);
        let (k0, k1, fz, vz) = self.linear_axis(p[2], 2);
        let c = |i, j, k| f64::from(self.at(i, j, k));
        let (c000, c100, c010, c110) = (c(i0, j0, k0), c(i1, j0, k0), c(i0, j1, k0), c(i1, j1, k0));
        let (c001, c101, c011, c111) = (c(i0, j0, k1), c(i1, j0, k1), c(i0, j1, k1), c(i1, j1, k1));
        let c00 = c000 + (c100 - c000) * fx;
        let c10 = c010 + (c110 - c010) * fx;
        let c01 = c001 + (c101 - c001) * fx;
        let c11 = c011 + (c111 - c011) * fx;
        let c0 = c00 + (c10 - c00) * fy;
        let c1 = c01 + (c11 - c01) * fy;
        let value = c0 + (c1 - c0) * fz;
        let mut gradient = [0.0; 3];
        if vx {
            let d0 = (c100 - c000) + ((c110 - c010) - (c100 - c000)) * fy;
            let d1 = (c101 - c001) + ((c111 - c011) - (c101 - c001)) * fy;
            gradient[0] = d0 + (d1 - d0) * fz;
        }
        if vy {
            gradient[1] = (c10 - c00) + ((c11 - c01) - (c10 - c00)) * fz;
        }
        if vz {
            gradient[2] = c1 - c0;
        }
        (value as f32, gradient)
    }

    /// Cubic B-spline evaluation; `self` holds spline coefficients, mirrored at the borders.
    fn cubic(&self, p: [f64; 3]) -> f32 {
        let mut index = [[0usize; 4]; 3];
        let mut weight = [[0.0f64; 4]; 3];
        for a in 0..3 {
            let base = p[a].floor();
            let t = p[a] - base;
            weight[a] = [
                (1.0 - t).powi(3) / 6.0,
                (4.0 - 6.0 * t * t + 3.0 * t.powi(3)) / 6.0,
                (1.0 + 3.0 * t + 3.0 * t * t - 3.0 * t.powi(3)) / 6.0,
                t.powi(3) / 6.0,
            ];
            for (m, slot) in index[a].iter_mut().enumerate() {
                *slot = mirror(base as i64 - 1 + m as i64, self.n[a]);
            }
        }
        let mut value = 0.0;
        for (wk, &k) in weight[2].iter().zip(&index[2]) {
            for (wj, &j) in weight[1].iter().zip(&index[1]) {
                let row = (k * self.n[1] + j) * self.n[0];
                let mut line = 0.0;
                for (wi, &i) in weight[0].iter().zip(&index[0]) {
                    line += wi * f64::from(self.data[row + i]);
                }
                value += wk * wj * line;
            }
        }
        value as f32
    }
}

/// Whole-sample mirror of index `i` into `0..n`.
fn mirror(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

/// Apply `filter` to every line of `data` along `axis` (0 = columns, 1 = rows, 2 = slices).
pub(crate) fn filter_lines(
    data: &mut Array3<f32>,
    axis: usize,
    filter: impl Fn(&mut [f64]) + Sync,
) {
    let (n2, n1, n0) = data.dim();
    let n = [n0, n1, n2];
    let strides = [1, n0, n0 * n1];
    let (len, stride) = (n[axis], strides[axis]);
    // The first voxel of every line along `axis`, in ascending order: each block of
    // `len * stride` voxels starts `stride` lines.
    let block = len * stride;
    let starts: Vec<usize> = (0..n0 * n1 * n2 / block.max(1))
        .flat_map(|outer| (0..stride).map(move |inner| outer * block + inner))
        .collect();
    if !data.is_standard_layout() {
        *data = data.as_standard_layout().into_owned();
    }
    let flat = data.as_slice_mut().expect("made standard layout above");
    let source: &[f32] = flat;
    let filtered: Vec<Vec<f32>> = starts
        .par_chunks(512)
        .map(|chunk| {
            let mut out = Vec::with_capacity(chunk.len() * len);
            let mut line = vec![0.0f64; len];
            for &start in chunk {
                for (m, v) in line.iter_mut().enumerate() {
                    *v = f64::from(source[start + m * stride]);
                }
                filter(&mut line);
                out.extend(line.iter().map(|v| *v as f32));
            }
            out
        })
        .collect();
    for (chunk, values) in starts.chunks(512).zip(filtered) {
        for (line, &start) in values.chunks(len).zip(chunk) {
            for (m, v) in line.iter().enumerate() {
                flat[start + m * stride] = *v;
            }
        }
    }
}

/// Cubic B-spline interpolation coefficients (Unser's recursive filter, mirror boundaries).
pub(crate) fn bspline_coefficients(data: &Array3<f32>) -> Array3<f32> {
    let mut c = data.as_standard_layout().into_owned();
    for axis in 0..3 {
        filter_lines(&mut c, axis, bspline_prefilter);
    }
    c
}

fn bspline_prefilter(s: &mut [f64]) {
    let n = s.len();
    if n < 2 {
        return;
    }
    let z = 3f64.sqrt() - 2.0;
    for v in s.iter_mut() {
        *v *= 6.0; // (1 - z)(1 - 1/z)
    }
    // Causal initialisation: mirror-symmetric signal, truncated where z^k is negligible.
    let horizon = ((1e-12f64).ln() / z.abs().ln()).ceil() as usize;
    s[0] = if horizon < n {
        let mut zk = 1.0;
        let mut sum = 0.0;
        for v in &s[..horizon] {
            sum += zk * v;
            zk *= z;
        }
        sum
    } else {
        let zn = z.powi(n as i32 - 1);
        let mut z2n = zn * zn / z;
        let mut sum = s[0] + zn * s[n - 1];
        let mut zk = z;
        for v in &s[1..n - 1] {
            sum += (zk + z2n) * v;
            z2n /= z;
            zk *= z;
        }
        sum / (1.0 - zn * zn)
    };
    for k in 1..n {
        s[k] += z * s[k - 1];
    }
    s[n - 1] = (z / (z * z - 1.0)) * (s[n - 1] + z * s[n - 2]);
    for k in (0..n - 1).rev() {
        s[k] = z * (s[k + 1] - s[k]);
    }
}

/// Gaussian smoothing with a standard deviation of `sigma` voxels along each axis (0: untouched).
pub(crate) fn smooth(data: &mut Array3<f32>, sigma: [f64; 3]) {
    for (axis, &s) in sigma.iter().enumerate() {
        if s < 0.05 {
            continue;
        }
        let radius = (3.0 * s).ceil() as i64;
        let kernel: Vec<f64> = (-radius..=radius)
            .map(|x| (-(x * x) as f64 / (2.0 * s * s)).exp())
            .collect();
        let total: f64 = kernel.iter().sum();
        let kernel: Vec<f64> = kernel.iter().map(|w| w / total).collect();
        filter_lines(data, axis, |line| {
            // Mirror-padded copy, so the convolution below needs no index arithmetic.
            let n = line.len() as i64;
            let padded: Vec<f64> = (-radius..n + radius)
                .map(|m| line[mirror(m, line.len())])
                .collect();
            for (m, out) in line.iter_mut().enumerate() {
                *out = kernel.iter().zip(&padded[m..]).map(|(w, v)| w * v).sum();
            }
        });
    }
}

/// One pyramid level: smoothed (sigma of half the factor, in voxels, as ITK) and shrunk by an
/// integer `factor` along each axis.
pub(crate) fn shrink(volume: &Volume, factor: [usize; 3]) -> Result<Volume, RegisterError> {
    let mut smoothed = volume.clone();
    smooth(
        &mut smoothed.data,
        factor.map(|f| if f > 1 { 0.5 * f as f64 } else { 0.0 }),
    );
    let dims = volume.dims();
    let mut index_map = [[0.0; 4]; 4];
    index_map[3][3] = 1.0;
    let mut new_dims = [0; 3];
    for a in 0..3 {
        let f = factor[a].max(1);
        new_dims[a] = (dims[a] / f).max(1);
        index_map[a][a] = f as f64;
        index_map[a][3] = (f as f64 - 1.0) / 2.0;
    }
    let grid = Grid {
        dims: new_dims,
        affine: matmul(&volume.affine, &index_map),
    };
    resample(
        &smoothed,
        &Transform::identity(),
        &grid,
        Interpolation::Linear,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::from_columns;

    #[test]
    fn filter_lines_visits_every_line_of_each_axis_once() {
        let data = Array3::from_shape_fn((3, 4, 5), |(k, j, i)| (100 * k + 10 * j + i) as f32);
        // axis 0 = columns (the last array axis), 1 = rows, 2 = slices.
        for (axis, array_axis) in [(0, 2), (1, 1), (2, 0)] {
            let mut reversed = data.clone();
            filter_lines(&mut reversed, axis, |line| line.reverse());
            let mut expected = data.clone();
            expected.invert_axis(ndarray::Axis(array_axis));
            assert_eq!(reversed, expected, "axis {axis}");
        }
    }

    fn volume(data: Array3<f32>, spacing: [f64; 3]) -> Volume {
        Volume {
            data,
            affine: from_columns(
                [spacing[0], 0.0, 0.0],
                [0.0, spacing[1], 0.0],
                [0.0, 0.0, spacing[2]],
                [-10.0, 5.0, 2.0],
            ),
            slices: Vec::new(),
        }
    }

    fn ramp() -> Volume {
        let data = Array3::from_shape_fn((7, 9, 11), |(k, j, i)| {
            ((i * 3 + j * 7 + k * 11) % 17) as f32 + 0.5 * i as f32
        });
        volume(data, [0.8, 0.9, 3.0])
    }

    #[test]
    fn point_samples_equal_the_linear_resample_at_every_voxel() {
        let v = ramp();
        let grid = Grid::of(&v).with_spacing([0.7, 1.1, 2.0]).unwrap();
        let moved = Transform::rigid([0.05, -0.03, 0.1], [1.5, -2.0, 0.7], [0.0, 0.0, 10.0]);
        let whole = resample(&v, &moved, &grid, Interpolation::Linear).unwrap();
        let sampler = PointSampler::new(&v, &moved, &grid).unwrap();
        let outside = whole.data.iter().filter(|x| **x == 0.0).count();
        assert!(outside > 0, "some voxels should map outside the source");
        for ((k, j, i), expected) in whole.data.indexed_iter() {
            assert_eq!(sampler.linear_at([k, j, i]), *expected, "voxel {k} {j} {i}");
        }
    }

    #[test]
    fn identity_reproduces_the_image_with_every_interpolator() {
        let v = ramp();
        for interpolation in [
            Interpolation::Nearest,
            Interpolation::Linear,
            Interpolation::BSpline,
        ] {
            let out = resample(&v, &Transform::identity(), &Grid::of(&v), interpolation).unwrap();
            let worst = (&out.data - &v.data).fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(worst < 1e-3, "{interpolation:?}: max difference {worst}");
        }
    }

    #[test]
    fn bspline_reproduces_a_quadratic_between_voxels() {
        // A cubic spline is exact for polynomials up to degree 3 away from the borders (the
        // mirror boundary's influence decays as 0.27 per voxel).
        let data = Array3::from_shape_fn((24, 24, 24), |(k, j, i)| {
            let (x, y, z) = (i as f32, j as f32, k as f32);
            0.5 * x * x - 0.2 * y * z + 3.0 * z
        });
        let v = volume(data, [1.0, 1.0, 1.0]);
        let half = Transform::translation([0.5, 0.25, 0.5]);
        let out = resample(&v, &half, &Grid::of(&v), Interpolation::BSpline).unwrap();
        let linear = resample(&v, &half, &Grid::of(&v), Interpolation::Linear).unwrap();
        let truth = |i: f64, j: f64, k: f64| {
            let (x, y, z) = (i + 0.5, j + 0.25, k + 0.5);
            0.5 * x * x - 0.2 * y * z + 3.0 * z
        };
        for (k, j, i) in [(11, 11, 11), (10, 12, 11), (12, 10, 11)] {
            let t = truth(i as f64, j as f64, k as f64);
            let b = f64::from(out.data[[k, j, i]]);
            let l = f64::from(linear.data[[k, j, i]]);
            assert!((b - t).abs() < 1e-3, "B-spline {b} vs {t}");
            // Trilinear overestimates the quadratic by x(1-x)/2 at the half voxel.
            assert!((l - t - 0.125).abs() < 0.01, "linear {l} vs {t}");
        }
    }

    #[test]
    fn coarser_grid_covers_the_same_field_of_view() {
        let v = ramp();
        let grid = Grid::of(&v).for_model([2.0, 2.0, 2.0]).unwrap();
        assert_eq!(grid.dims, [5, 5, 11]); // 8.8 / 2, 8.1 / 2, 21 / 2 mm, rounded up
        assert!(grid.spacing().iter().all(|s| (s - 2.0).abs() < 1e-12));
        // Centres of the two fields of view coincide.
        let centre =
            |g: &Grid| crate::volume::apply(&g.affine, g.dims.map(|d| (d as f64 - 1.0) / 2.0));
        let (a, b) = (centre(&grid), centre(&Grid::of(&v)));
        assert!((0..3).all(|c| (a[c] - b[c]).abs() < 1e-9), "{a:?} {b:?}");
        assert!(Grid::of(&v).with_spacing([1.0, 0.0, 1.0]).is_err());
    }

    #[test]
    fn mirror_folds_indices_back() {
        assert_eq!(
            (-3..9).map(|i| mirror(i, 4)).collect::<Vec<_>>(),
            vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]
        );
    }
}
