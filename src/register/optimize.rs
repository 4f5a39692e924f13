//! Multi-resolution registration of a moving (prior) volume to a fixed (current) one.
//!
//! Pyramid levels have the same physical voxel size in both images (integer shrink factors
//! towards `levels_mm`, so 3-5 mm slices are only shrunk in-plane; the default ends on the
//! images' own voxels, which is where the result is judged); samples are the voxels of the fixed
//! brain mask grown by 1.5 mm (the whole brain and its surface against the CSF) on a
//! regular stride (deterministic); the moving image is read with trilinear interpolation and its
//! analytic gradient; BFGS with a backtracking line search maximises NCC over scaled parameters
//! (rotations as arc length at `radius_mm`). Start: the DICOM geometry (both images in patient
//! coordinates) or the centres of mass, whichever correlates better.

use ndarray::Array3;
use rayon::prelude::*;

use super::mask::{brain_mask, head_mask};
use super::metric::{MAX_PARAMETERS, NccSums, Quality, masked_correlation};
use super::resample::{Grid, Image, Interpolation, resample, shrink};
use super::{RegisterError, Transform, mat3, rotation, rotation_factors};
use crate::volume::{Volume, invert};

/// Degrees of freedom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// 3 rotations and 3 translations.
    Rigid,
    /// Rigid first, then a full affine (12) refinement at the two finest levels: follows the
    /// scale differences between scanners or visits (about 1 % on the Lesjak pairs).
    Affine,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisterOptions {
    pub model: Model,
    /// Voxel size (mm) aimed at by each pyramid level, coarse to fine. The default's last level
    /// (0.75 mm) keeps the in-plane resolution of clinical FLAIRs (0.5-1 mm) as it is.
    pub levels_mm: Vec<f64>,
    /// Samples per level at most (taken on a regular stride over the fixed brain mask, grown by
    /// 1.5 mm).
    pub max_samples: usize,
    /// Optimiser iterations per level at most.
    pub max_iterations: usize,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            model: Model::Rigid,
            levels_mm: vec![6.0, 3.0, 1.5, 0.75],
            max_samples: 50_000,
            max_iterations: 100,
        }
    }
}

/// Which starting point was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    Geometry,
    CentresOfMass,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelReport {
    pub spacing_mm: [f64; 3],
    pub samples: usize,
    pub iterations: usize,
    pub metric: f64,
}

#[derive(Debug, Clone)]
pub struct Registration {
    /// Fixed (current) point -> moving (prior) point, LPS mm.
    pub transform: Transform,
    pub quality: Quality,
    pub start: Start,
    pub levels: Vec<LevelReport>,
}

/// Rotation arm: one radian of rotation weighs as much as this many mm of translation.
const RADIUS_MM: f64 = 80.0;
/// Voxel size (mm) the head and brain masks are made at, or the finest level's if coarser.
const MASK_MM: f64 = 1.5;
/// Width of the brain's rim left out of the quality figure.
const RIM_MM: f64 = 3.0;
/// How far the sampled region reaches beyond the brain mask.
const MARGIN_MM: f64 = 1.5;
/// Fewer than this share of samples inside the moving image means the images do not overlap.
const MIN_OVERLAP: f64 = 0.25;

/// Register `moving` (prior) to `fixed` (current).
pub fn register(
    fixed: &Volume,
    moving: &Volume,
    options: &RegisterOptions,
) -> Result<Registration, RegisterError> {
    if options.levels_mm.is_empty() || options.levels_mm.iter().any(|l| l.is_nan() || *l <= 0.0) {
        return Err(RegisterError::Input(
            "pyramid levels must be positive voxel sizes in mm".into(),
        ));
    }
    if options.max_samples < 100 {
        return Err(RegisterError::Input(
            "at least 100 samples per level".into(),
        ));
    }
    for (which, v) in [("fixed", fixed), ("moving", moving)] {
        if v.data.iter().any(|x| !x.is_finite()) {
            return Err(RegisterError::Input(format!(
                "the {which} image holds NaN or infinite voxels"
            )));
        }
        if invert(&v.affine).is_none() {
            return Err(RegisterError::Input(format!(
                "the {which} image's affine is singular"
            )));
        }
    }
    let factors =
        |v: &Volume, level: f64| v.spacing().map(|s| ((level / s).round() as usize).max(1));
    let level_of = |v: &Volume, level: f64| -> Result<Volume, RegisterError> {
        let f = factors(v, level);
        if f == [1, 1, 1] {
            Ok(v.clone())
        } else {
            shrink(v, f)
        }
    };
    // The pyramid, coarse to fine: the finest level from the originals, each coarser one from
    // the next finer (cheaper).
    let mut images = Vec::with_capacity(options.levels_mm.len());
    for &level in options.levels_mm.iter().rev() {
        let (f, m) = match images.last() {
            Some((f, m)) => (f, m),
            None => (fixed, moving),
        };
        let next = (level_of(f, level)?, level_of(m, level)?);
        images.push(next);
    }
    images.reverse();
    // Masks are made on the finest level at least MASK_MM coarse (the finest level if none is).
    let on = options
        .levels_mm
        .iter()
        .rposition(|l| *l >= MASK_MM)
        .unwrap_or(images.len() - 1);
    let (fixed_small, moving_small) = &images[on];
    let fixed_head = head_mask(fixed_small)?;
    let brain = brain_mask(fixed_small, &fixed_head)?;
    // The samples cover the whole brain and its surface against the CSF, which pins down scale
    // and position best (the brain mask stops at the surface).
    let region = super::mask::dilate(&brain, fixed_small.spacing(), MARGIN_MM);
    let moving_head = head_mask(moving_small)?;
    // The quality figure looks at the brain's interior, off the surface where CSF and dura
    // change between visits, so that it stays comparable between pairs.
    let interior = super::mask::erode(&brain, fixed_small.spacing(), RIM_MM);
    let centre = centre_of_mass(fixed_small, &brain);
    let shift = {
        let a = centre_of_mass(fixed_small, &fixed_head);
        let b = centre_of_mass(moving_small, &moving_head);
        [b[0] - a[0], b[1] - a[1], b[2] - a[2]]
    };
    let mask_affine = fixed_small.affine;

    let mut levels = Vec::new();
    for (f, m) in images {
        let mask = mask_on(&region, mask_affine, &Grid::of(&f))?;
        levels.push(Level::new(f, m, &mask, centre, options.max_samples)?);
    }
    // Start: patient coordinates as they are, or the head centres of mass brought together.
    let coarsest = &levels[0];
    let geometry = coarsest.ncc(Model::Rigid, &[0.0; 6]).map(|(v, _)| v);
    let com = coarsest
        .ncc(Model::Rigid, &[0.0, 0.0, 0.0, shift[0], shift[1], shift[2]])
        .map(|(v, _)| v);
    let (start, mut parameters) = match (geometry, com) {
        (Some(g), Some(c)) if c > g => (
            Start::CentresOfMass,
            vec![0.0, 0.0, 0.0, shift[0], shift[1], shift[2]],
        ),
        (Some(_), _) => (Start::Geometry, vec![0.0; 6]),
        (None, Some(_)) => (
            Start::CentresOfMass,
            vec![0.0, 0.0, 0.0, shift[0], shift[1], shift[2]],
        ),
        (None, None) => {
            return Err(RegisterError::NoOverlap {
                samples: coarsest.sums(Model::Rigid, &[0.0; 6]).n as usize,
            });
        }
    };

    let mut reports = Vec::new();
    for level in &levels {
        let (p, iterations, metric) =
            level.optimise(Model::Rigid, parameters, options.max_iterations)?;
        parameters = p;
        reports.push(level.report(iterations, metric));
    }
    let mut model = Model::Rigid;
    if options.model == Model::Affine {
        parameters = rigid_to_affine(&parameters);
        model = Model::Affine;
        for level in levels.iter().skip(levels.len().saturating_sub(2)) {
            let (p, iterations, metric) =
                level.optimise(Model::Affine, parameters, options.max_iterations)?;
            parameters = p;
            reports.push(level.report(iterations, metric));
        }
    }
    let transform = to_transform(model, &parameters, centre);
    let metric = reports.last().map(|r| r.metric).unwrap_or(0.0);
    let brain_full = mask_on(&interior, mask_affine, &Grid::of(fixed))?;
    let (brain_correlation, overlap) = masked_correlation(fixed, moving, &transform, &brain_full)?;
    Ok(Registration {
        transform,
        quality: Quality {
            metric,
            brain_correlation,
            overlap,
        },
        start,
        levels: reports,
    })
}

/// A mask of the fixed image (voxel -> LPS `affine`) on another grid of the same image.
pub(crate) fn mask_on(
    mask: &Array3<bool>,
    affine: crate::volume::Affine,
    grid: &Grid,
) -> Result<Array3<bool>, RegisterError> {
    let as_volume = Volume {
        data: mask.mapv(|m| if m { 1.0 } else { 0.0 }),
        affine,
        slices: Vec::new(),
    };
    Ok(resample(
        &as_volume,
        &Transform::identity(),
        grid,
        Interpolation::Nearest,
    )?
    .data
    .mapv(|v| v > 0.5))
}

/// Intensity-weighted centre of the masked voxels, LPS mm.
fn centre_of_mass(volume: &Volume, mask: &Array3<bool>) -> [f64; 3] {
    let mut sum = [0.0; 3];
    let mut weight = 0.0;
    for ((k, j, i), m) in mask.indexed_iter() {
        if *m {
            let w = f64::from(volume.data[[k, j, i]].max(0.0));
            let p = volume.world([i as f64, j as f64, k as f64]);
            for c in 0..3 {
                sum[c] += w * p[c];
            }
            weight += w;
        }
    }
    if weight == 0.0 {
        return volume.world(volume.dims().map(|d| (d as f64 - 1.0) / 2.0));
    }
    sum.map(|s| s / weight)
}

fn rigid_to_affine(p: &[f64]) -> Vec<f64> {
    let r = rotation([p[0], p[1], p[2]]);
    let mut out: Vec<f64> = r.iter().flatten().copied().collect();
    out.extend_from_slice(&p[3..6]);
    out
}

fn matrix_of(model: Model, p: &[f64]) -> [[f64; 3]; 3] {
    match model {
        Model::Rigid => rotation([p[0], p[1], p[2]]),
        Model::Affine => [[p[0], p[1], p[2]], [p[3], p[4], p[5]], [p[6], p[7], p[8]]],
    }
}

fn to_transform(model: Model, p: &[f64], centre: [f64; 3]) -> Transform {
    let n = p.len();
    Transform::from_matrix(matrix_of(model, p), [p[n - 3], p[n - 2], p[n - 1]], centre)
}

/// Scale of each parameter: what one unit of it moves a point at the rotation arm, in mm.
fn scales(model: Model) -> Vec<f64> {
    match model {
        Model::Rigid => vec![RADIUS_MM, RADIUS_MM, RADIUS_MM, 1.0, 1.0, 1.0],
        Model::Affine => {
            let mut s = vec![RADIUS_MM; 9];
            s.extend([1.0, 1.0, 1.0]);
            s
        }
    }
}

/// One pyramid level: the fixed samples and the moving image.
struct Level {
    fixed_spacing: [f64; 3],
    /// Fixed sample positions (LPS mm) and values.
    points: Vec<[f64; 3]>,
    values: Vec<f64>,
    moving: Volume,
    /// Moving patient coordinates -> moving voxel index.
    to_index: crate::volume::Affine,
    centre: [f64; 3],
}

const CHUNK: usize = 2048;

impl Level {
    fn new(
        fixed: Volume,
        moving: Volume,
        mask: &Array3<bool>,
        centre: [f64; 3],
        max_samples: usize,
    ) -> Result<Level, RegisterError> {
        let count = mask.iter().filter(|m| **m).count();
        if count < 10 {
            return Err(RegisterError::NoForeground {
                which: "fixed",
                why: format!("the brain mask holds {count} voxels at this resolution"),
            });
        }
        let step = count.div_ceil(max_samples);
        let (points, values) = mask
            .indexed_iter()
            .filter(|(_, m)| **m)
            .step_by(step)
            .map(|((k, j, i), _)| {
                (
                    fixed.world([i as f64, j as f64, k as f64]),
                    f64::from(fixed.data[[k, j, i]]),
                )
            })
            .unzip();
        let to_index = invert(&moving.affine)
            .ok_or_else(|| RegisterError::Input("singular moving affine".into()))?;
        Ok(Level {
            fixed_spacing: fixed.spacing(),
            points,
            values,
            moving,
            to_index,
            centre,
        })
    }

    fn report(&self, iterations: usize, metric: f64) -> LevelReport {
        LevelReport {
            spacing_mm: self.fixed_spacing,
            samples: self.points.len(),
            iterations,
            metric,
        }
    }

    fn sums(&self, model: Model, p: &[f64]) -> NccSums {
        let transform = to_transform(model, p, self.centre);
        let map = super::matmul(&self.to_index, &transform.affine);
        // d(world)/d(index)^-1: turns index-space gradients into patient-space ones.
        let inv: [[f64; 3]; 3] =
            std::array::from_fn(|r| std::array::from_fn(|c| self.to_index[r][c]));
        // Derivatives of the matrix with respect to each matrix parameter (rigid: the angles).
        let partials: Vec<[[f64; 3]; 3]> = match model {
            Model::Rigid => {
                let [rx, ry, rz] = rotation_factors([p[0], p[1], p[2]]);
                let [dx, dy, dz] = rotation_derivatives([p[0], p[1], p[2]]);
                vec![
                    mat3(&rz, &mat3(&ry, &dx)),
                    mat3(&rz, &mat3(&dy, &rx)),
                    mat3(&dz, &mat3(&ry, &rx)),
                ]
            }
            Model::Affine => Vec::new(),
        };
        let image = Image::new(&self.moving.data);
        let count = p.len();
        let chunks: Vec<NccSums> = self
            .points
            .par_chunks(CHUNK)
            .zip(self.values.par_chunks(CHUNK))
            .map(|(points, values)| {
                let mut sums = NccSums::default();
                let mut dm = [0.0; MAX_PARAMETERS];
                for (x, f) in points.iter().zip(values) {
                    let q = crate::volume::apply(&map, *x);
                    if !image.inside(q) {
                        continue;
                    }
                    let (value, g_index) = image.linear_gradient(q);
                    let g: [f64; 3] =
                        std::array::from_fn(|c| (0..3).map(|a| g_index[a] * inv[a][c]).sum());
                    let d = [
                        x[0] - self.centre[0],
                        x[1] - self.centre[1],
                        x[2] - self.centre[2],
                    ];
                    match model {
                        Model::Rigid => {
                            for (slot, r) in dm.iter_mut().zip(&partials) {
                                *slot = (0..3)
                                    .map(|row| {
                                        g[row] * (0..3).map(|c| r[row][c] * d[c]).sum::<f64>()
                                    })
                                    .sum();
                            }
                        }
                        Model::Affine => {
                            for row in 0..3 {
                                for c in 0..3 {
                                    dm[row * 3 + c] = g[row] * d[c];
                                }
                            }
                        }
                    }
                    dm[count - 3..count].copy_from_slice(&g);
                    sums.add(*f, f64::from(value), &dm[..count]);
                }
                sums
            })
            .collect();
        chunks.iter().fold(NccSums::default(), |a, b| a.merge(b))
    }

    /// NCC and its gradient; `None` when too few samples land inside the moving image.
    fn ncc(&self, model: Model, p: &[f64]) -> Option<(f64, Vec<f64>)> {
        let sums = self.sums(model, p);
        if sums.n < MIN_OVERLAP * self.points.len() as f64 {
            return None;
        }
        sums.ncc(p.len())
    }

    /// BFGS on `-NCC` in scaled parameters; returns the parameters, iterations and final NCC.
    fn optimise(
        &self,
        model: Model,
        start: Vec<f64>,
        max_iterations: usize,
    ) -> Result<(Vec<f64>, usize, f64), RegisterError> {
        let scale = scales(model);
        let n = start.len();
        let first_step = self.fixed_spacing.iter().cloned().fold(0.0, f64::max);
        let tolerance = 0.01
            * self
                .fixed_spacing
                .iter()
                .cloned()
                .fold(f64::INFINITY, f64::min);
        let evaluate = |u: &[f64]| -> Option<(f64, Vec<f64>)> {
            let p: Vec<f64> = u.iter().zip(&scale).map(|(v, s)| v / s).collect();
            self.ncc(model, &p)
                .map(|(v, g)| (-v, g.iter().zip(&scale).map(|(d, s)| -d / s).collect()))
        };
        let mut u: Vec<f64> = start.iter().zip(&scale).map(|(v, s)| v * s).collect();
        let (mut value, mut gradient) = evaluate(&u).ok_or(RegisterError::NoOverlap {
            samples: self.sums(model, &start).n as usize,
        })?;
        let mut inverse_hessian: Option<Vec<Vec<f64>>> = None;
        let mut iterations = 0;
        while iterations < max_iterations {
            iterations += 1;
            let gnorm = norm(&gradient);
            if gnorm == 0.0 {
                break;
            }
            // The first step (and any after a reset) is a steepest-descent step of one voxel.
            let h = inverse_hessian
                .clone()
                .unwrap_or_else(|| identity(n, first_step / gnorm));
            let mut direction: Vec<f64> = (0..n)
                .map(|r| -(0..n).map(|c| h[r][c] * gradient[c]).sum::<f64>())
                .collect();
            let mut slope: f64 = direction.iter().zip(&gradient).map(|(d, g)| d * g).sum();
            if slope >= 0.0 {
                inverse_hessian = None;
                direction = gradient.iter().map(|g| -g * first_step / gnorm).collect();
                slope = -first_step * gnorm;
            }
            let mut alpha = 1.0;
            let mut accepted = None;
            for _ in 0..12 {
                let trial: Vec<f64> = u
                    .iter()
                    .zip(&direction)
                    .map(|(a, d)| a + alpha * d)
                    .collect();
                if let Some((v, g)) = evaluate(&trial)
                    && v <= value + 1e-4 * alpha * slope
                {
                    accepted = Some((trial, v, g));
                    break;
                }
                alpha *= 0.5;
            }
            let Some((trial, v, g)) = accepted else {
                if inverse_hessian.is_some() {
                    inverse_hessian = None;
                    continue;
                }
                break;
            };
            let s: Vec<f64> = trial.iter().zip(&u).map(|(a, b)| a - b).collect();
            let y: Vec<f64> = g.iter().zip(&gradient).map(|(a, b)| a - b).collect();
            let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
            if sy > 1e-12 {
                let mut h = inverse_hessian
                    .take()
                    .unwrap_or_else(|| identity(n, sy / y.iter().map(|v| v * v).sum::<f64>()));
                bfgs_update(&mut h, &s, &y, sy);
                inverse_hessian = Some(h);
            }
            let moved = norm(&s);
            u = trial;
            value = v;
            gradient = g;
            if moved < tolerance {
                break;
            }
        }
        let p = u.iter().zip(&scale).map(|(v, s)| v / s).collect();
        Ok((p, iterations, -value))
    }
}

fn rotation_derivatives(angles: [f64; 3]) -> [[[f64; 3]; 3]; 3] {
    let (sx, cx) = angles[0].sin_cos();
    let (sy, cy) = angles[1].sin_cos();
    let (sz, cz) = angles[2].sin_cos();
    [
        [[0.0, 0.0, 0.0], [0.0, -sx, -cx], [0.0, cx, -sx]],
        [[-sy, 0.0, cy], [0.0, 0.0, 0.0], [-cy, 0.0, -sy]],
        [[-sz, -cz, 0.0], [cz, -sz, 0.0], [0.0, 0.0, 0.0]],
    ]
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn identity(n: usize, diagonal: f64) -> Vec<Vec<f64>> {
    (0..n)
        .map(|r| {
            (0..n)
                .map(|c| if r == c { diagonal } else { 0.0 })
                .collect()
        })
        .collect()
}

/// `H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T`.
fn bfgs_update(h: &mut [Vec<f64>], s: &[f64], y: &[f64], sy: f64) {
    let n = s.len();
    let rho = 1.0 / sy;
    let hy: Vec<f64> = (0..n)
        .map(|r| (0..n).map(|c| h[r][c] * y[c]).sum())
        .collect();
    let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
    for r in 0..n {
        for c in 0..n {
            h[r][c] += -rho * (hy[r] * s[c] + s[r] * hy[c]) + (rho * rho * yhy + rho) * s[r] * s[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let volume = |data: Array3<f32>| Volume {
            data,
            affine: Transform::identity().affine,
            slices: Vec::new(),
        };
        let good = volume(Array3::from_shape_fn((8, 8, 8), |(k, j, i)| {
            (i + j * k) as f32
        }));
        let constant = volume(Array3::from_elem((8, 8, 8), 5.0));
        let mut nan = good.clone();
        nan.data[[1, 2, 3]] = f32::NAN;
        let empty = volume(Array3::zeros((0, 8, 8)));
        let options = RegisterOptions::default();
        assert!(matches!(
            register(&constant, &good, &options),
            Err(RegisterError::NoForeground { .. })
        ));
        assert!(
            register(&good, &nan, &options)
                .unwrap_err()
                .to_string()
                .contains("NaN")
        );
        assert!(register(&empty, &good, &options).is_err());
        let no_levels = RegisterOptions {
            levels_mm: vec![],
            ..RegisterOptions::default()
        };
        assert!(register(&good, &good, &no_levels).is_err());
    }

    #[test]
    fn rotation_derivatives_match_differences() {
        let a = [0.2, -0.3, 0.4];
        let d = rotation_derivatives(a);
        let f = rotation_factors(a);
        for axis in 0..3 {
            let mut hi = a;
            let mut lo = a;
            hi[axis] += 1e-6;
            lo[axis] -= 1e-6;
            let (fh, fl) = (rotation_factors(hi)[axis], rotation_factors(lo)[axis]);
            for r in 0..3 {
                for c in 0..3 {
                    let numeric = (fh[r][c] - fl[r][c]) / 2e-6;
                    assert!((numeric - d[axis][r][c]).abs() < 1e-6, "axis {axis}");
                }
            }
            assert!(f[axis][axis][axis] == 1.0);
        }
    }
}
