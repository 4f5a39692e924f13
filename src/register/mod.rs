//! Align the prior to the current scan: rigid (or affine) registration, and the resampling and
//! head and brain masks it needs (the prepare stage uses them too).
//!
//! A [`Transform`] follows the ITK convention: it maps a point of the *fixed* (current) image to
//! the corresponding point of the *moving* (prior) image, both in patient coordinates (LPS, mm).
//! Resampling the moving image onto the fixed grid uses it as given, and [`itk`] reads and writes
//! it as an ITK transform file, so SimpleITK and ITK-based tools agree with us on its meaning.

pub mod itk;
pub mod mask;
pub mod metric;
pub mod optimize;
pub mod resample;

use crate::volume::{Affine, Volume, apply, invert};

pub use mask::{brain_mask, head_mask};
pub use metric::Quality;
pub use optimize::{Model, RegisterOptions, Registration, register};
pub use resample::{Grid, Interpolation, PointSampler, resample};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Input(String),
    #[error("the {which} image has no foreground: {why}")]
    NoForeground { which: &'static str, why: String },
    #[error(
        "the images do not overlap after alignment ({samples} of the fixed samples fall inside the moving image); check that both are of the same patient and body part"
    )]
    NoOverlap { samples: usize },
    #[error("{path}: {message}")]
    TransformFile { path: String, message: String },
    #[error("the transform is singular and cannot be inverted")]
    Singular,
}

/// A spatial mapping between patient coordinates (LPS, mm): fixed point -> moving point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub affine: Affine,
}

impl Transform {
    pub fn identity() -> Transform {
        let mut affine = [[0.0; 4]; 4];
        for (r, row) in affine.iter_mut().enumerate() {
            row[r] = 1.0;
        }
        Transform { affine }
    }

    /// A pure translation by `t` mm.
    pub fn translation(t: [f64; 3]) -> Transform {
        let mut out = Transform::identity();
        for (r, v) in t.iter().enumerate() {
            out.affine[r][3] = *v;
        }
        out
    }

    /// Rotation by Euler angles (radians, about x then y then z: `R = Rz Ry Rx`) about `centre`,
    /// followed by the translation `t`: `x -> R (x - c) + c + t`, as ITK's Euler3DTransform with ComputeZYX.
    pub fn rigid(angles: [f64; 3], t: [f64; 3], centre: [f64; 3]) -> Transform {
        let r = rotation(angles);
        Transform::from_matrix(r, t, centre)
    }

    /// `x -> M (x - c) + c + t`.
    pub fn from_matrix(m: [[f64; 3]; 3], t: [f64; 3], centre: [f64; 3]) -> Transform {
        let mut affine = [[0.0; 4]; 4];
        for r in 0..3 {
            affine[r][..3].copy_from_slice(&m[r]);
            let mc: f64 = (0..3).map(|c| m[r][c] * centre[c]).sum();
            affine[r][3] = centre[r] + t[r] - mc;
        }
        affine[3][3] = 1.0;
        Transform { affine }
    }

    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        apply(&self.affine, p)
    }

    pub fn inverse(&self) -> Result<Transform, RegisterError> {
        invert(&self.affine)
            .map(|affine| Transform { affine })
            .ok_or(RegisterError::Singular)
    }

    /// First `self`, then `next`: `x -> next(self(x))`.
    pub fn then(&self, next: &Transform) -> Transform {
        Transform {
            affine: matmul(&next.affine, &self.affine),
        }
    }

    /// The same voxels placed where this transform sends them (the head moved in the scanner):
    /// the returned volume's voxel at `x` in `volume` now lies at `self(x)`.
    pub fn relocate(&self, volume: &Volume) -> Volume {
        Volume {
            affine: matmul(&self.affine, &volume.affine),
            ..volume.clone()
        }
    }

    /// Mean distance (mm) between where `self` and `other` send the given points.
    pub fn mean_displacement(&self, other: &Transform, points: &[[f64; 3]]) -> f64 {
        if points.is_empty() {
            return 0.0;
        }
        let total: f64 = points
            .iter()
            .map(|p| {
                let (a, b) = (self.apply(*p), other.apply(*p));
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
            })
            .sum();
        total / points.len() as f64
    }
}

/// `R = Rz Ry Rx` for Euler angles (x, y, z) in radians.
pub(crate) fn rotation(angles: [f64; 3]) -> [[f64; 3]; 3] {
    let [rx, ry, rz] = rotation_factors(angles);
    mat3(&rz, &mat3(&ry, &rx))
}

/// The three elementary rotations `[Rx, Ry, Rz]`.
pub(crate) fn rotation_factors(angles: [f64; 3]) -> [[[f64; 3]; 3]; 3] {
    let (sx, cx) = angles[0].sin_cos();
    let (sy, cy) = angles[1].sin_cos();
    let (sz, cz) = angles[2].sin_cos();
    [
        [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]],
        [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]],
        [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]],
    ]
}

pub(crate) fn mat3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

pub(crate) fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// Patient coordinates of the voxels where `mask` is set, every `step`-th one (in memory order).
pub fn mask_points(volume: &Volume, mask: &ndarray::Array3<bool>, step: usize) -> Vec<[f64; 3]> {
    mask.indexed_iter()
        .filter(|(_, m)| **m)
        .step_by(step.max(1))
        .map(|((k, j, i), _)| volume.world([i as f64, j as f64, k as f64]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rigid_transform_composes_with_its_inverse_to_identity() {
        let t = Transform::rigid([0.1, -0.2, 0.25], [5.0, -3.0, 12.0], [10.0, 20.0, -30.0]);
        let back = t.then(&t.inverse().unwrap());
        let p = [30.0, -40.0, 50.0];
        let q = back.apply(p);
        for c in 0..3 {
            assert!((q[c] - p[c]).abs() < 1e-9);
        }
        // The centre moves only by the translation.
        let c = t.apply([10.0, 20.0, -30.0]);
        assert!((c[0] - 15.0).abs() < 1e-9 && (c[1] - 17.0).abs() < 1e-9);
        assert!((c[2] + 18.0).abs() < 1e-9);
    }

    #[test]
    fn euler_order_is_z_after_y_after_x() {
        // 90 degrees about x sends y to z; then 90 degrees about z sends that z to z.
        let r = rotation([
            std::f64::consts::FRAC_PI_2,
            0.0,
            std::f64::consts::FRAC_PI_2,
        ]);
        let y = [r[0][1], r[1][1], r[2][1]];
        assert!((y[2] - 1.0).abs() < 1e-12, "{y:?}");
        // x: unchanged by Rx, then Rz sends x to y.
        let x = [r[0][0], r[1][0], r[2][0]];
        assert!((x[1] - 1.0).abs() < 1e-12, "{x:?}");
    }
}
