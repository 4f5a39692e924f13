//! The similarity the registration optimises (normalised cross-correlation, with its gradient
//! with respect to the transform parameters) and the quality figures reported for every result.
//!
//! NCC rather than Mattes mutual information: prior and current are FLAIRs of the same patient,
//! whose intensities differ between visits by an (almost) linear gain and offset, which NCC is
//! invariant to; the Lesjak pairs and the SimpleITK benchmark (`benches/register.py`, Mattes MI)
//! show it as accurate.

use ndarray::Array3;

use super::resample::Image;
use super::{RegisterError, Transform};
use crate::volume::{Volume, invert};

/// Most parameters a transform model has (affine: 9 matrix entries and 3 translations).
pub(crate) const MAX_PARAMETERS: usize = 12;

/// How well a registration worked, for reports and for flagging a weak pairing.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quality {
    /// The optimised metric at convergence: NCC of the fixed samples (the brain grown by 1.5 mm)
    /// with the aligned moving image at the finest pyramid level (1 is a perfect linear relation).
    pub metric: f64,
    /// Pearson correlation of the fixed image and the aligned moving image (trilinear) inside
    /// the fixed brain mask less its outer 3 mm, at the fixed image's own resolution.
    pub brain_correlation: f64,
    /// Share of the brain-mask voxels that the transform maps inside the moving image.
    pub overlap: f64,
}

/// Running sums for NCC and its gradient over a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NccSums {
    pub n: f64,
    sf: f64,
    sm: f64,
    sff: f64,
    smm: f64,
    sfm: f64,
    dm: [f64; MAX_PARAMETERS],
    fdm: [f64; MAX_PARAMETERS],
    mdm: [f64; MAX_PARAMETERS],
}

impl NccSums {
    /// One sample: fixed value `f`, moving value `m`, derivative of `m` per parameter.
    #[inline]
    pub(crate) fn add(&mut self, f: f64, m: f64, dm: &[f64]) {
        self.n += 1.0;
        self.sf += f;
        self.sm += m;
        self.sff += f * f;
        self.smm += m * m;
        self.sfm += f * m;
        for (q, d) in dm.iter().enumerate() {
            self.dm[q] += d;
            self.fdm[q] += f * d;
            self.mdm[q] += m * d;
        }
    }

    pub(crate) fn merge(mut self, other: &NccSums) -> NccSums {
        self.n += other.n;
        self.sf += other.sf;
        self.sm += other.sm;
        self.sff += other.sff;
        self.smm += other.smm;
        self.sfm += other.sfm;
        for q in 0..MAX_PARAMETERS {
            self.dm[q] += other.dm[q];
            self.fdm[q] += other.fdm[q];
            self.mdm[q] += other.mdm[q];
        }
        self
    }

    /// NCC and its derivative with respect to each of the first `count` parameters; `None`
    /// when either side is constant over the samples.
    pub(crate) fn ncc(&self, count: usize) -> Option<(f64, Vec<f64>)> {
        let n = self.n;
        let a = self.sfm - self.sf * self.sm / n;
        let b = self.sff - self.sf * self.sf / n;
        let c = self.smm - self.sm * self.sm / n;
        if n < 2.0 || b <= 0.0 || c <= 0.0 {
            return None;
        }
        let root = (b * c).sqrt();
        let ncc = a / root;
        let gradient = (0..count)
            .map(|q| {
                let da = self.fdm[q] - self.sf * self.dm[q] / n;
                let dc = 2.0 * (self.mdm[q] - self.sm * self.dm[q] / n);
                da / root - 0.5 * ncc * dc / c
            })
            .collect();
        Some((ncc, gradient))
    }
}

/// Pearson correlation of `fixed` with `moving` seen through `transform` (trilinear), over the
/// fixed voxels where `mask` holds; also the share of those voxels that fall inside `moving`.
pub fn masked_correlation(
    fixed: &Volume,
    moving: &Volume,
    transform: &Transform,
    mask: &Array3<bool>,
) -> Result<(f64, f64), RegisterError> {
    if mask.dim() != fixed.data.dim() {
        return Err(RegisterError::Input(format!(
            "mask {:?} and fixed image {:?} differ in size",
            mask.dim(),
            fixed.data.dim()
        )));
    }
    let to_index = invert(&moving.affine)
        .ok_or_else(|| RegisterError::Input("the moving volume's affine is singular".into()))?;
    let map = super::matmul(&to_index, &super::matmul(&transform.affine, &fixed.affine));
    let values = moving.data.as_standard_layout();
    let image = Image::new(&values);
    let mut sums = NccSums::default();
    let mut total = 0usize;
    for ((k, j, i), m) in mask.indexed_iter() {
        if !*m {
            continue;
        }
        total += 1;
        let p = crate::volume::apply(&map, [i as f64, j as f64, k as f64]);
        if image.inside(p) {
            let (value, _) = image.linear_gradient(p);
            sums.add(f64::from(fixed.data[[k, j, i]]), f64::from(value), &[]);
        }
    }
    let overlap = if total == 0 {
        0.0
    } else {
        sums.n / total as f64
    };
    let correlation = sums.ncc(0).map(|(r, _)| r).unwrap_or(0.0);
    Ok((correlation, overlap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ncc_is_invariant_to_gain_and_offset_and_its_gradient_matches_differences() {
        let f: Vec<f64> = (0..50).map(|i| ((i * 37) % 23) as f64).collect();
        let m = |p: f64| -> Vec<f64> {
            f.iter()
                .enumerate()
                .map(|(i, v)| 3.0 * v + 7.0 + p * (i as f64).sin())
                .collect()
        };
        let sums = |p: f64| {
            let mut s = NccSums::default();
            for (i, (a, b)) in f.iter().zip(m(p)).enumerate() {
                s.add(*a, b, &[(i as f64).sin()]);
            }
            s
        };
        let (at_zero, _) = sums(0.0).ncc(1).unwrap();
        assert!((at_zero - 1.0).abs() < 1e-12);
        let (value, gradient) = sums(0.3).ncc(1).unwrap();
        let h = 1e-6;
        let numeric =
            (sums(0.3 + h).ncc(1).unwrap().0 - sums(0.3 - h).ncc(1).unwrap().0) / (2.0 * h);
        assert!(value < 1.0);
        assert!(
            (gradient[0] - numeric).abs() < 1e-6,
            "{} vs {numeric}",
            gradient[0]
        );
    }
}
