//! Intensity normalisation as the model card specifies, the same arithmetic as the training
//! pipeline (`training/src/msnode_training/channels.py`): nnU-Net's nonzero mask, percentiles as
//! numpy's (linear), z-score in double precision with the population standard deviation.

use ndarray::Array3;
use serde::Deserialize;

use super::PrepareError;
use crate::register::mask::fill_holes;

/// The intensity normalisation schemes msnode implements; a card naming another is refused when
/// it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Scheme {
    #[serde(rename = "zscore")]
    ZScore,
}

/// How each input channel is normalised (the model card's `normalization`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Normalization {
    pub scheme: Scheme,
    /// z-score inside the foreground (non-zero) mask rather than over the whole image.
    pub use_mask: bool,
    /// Clip to these percentiles (computed inside the mask) before the z-score.
    pub clip_percentiles: Option<[f32; 2]>,
}

impl Normalization {
    /// Plain z-score inside a mask, no clipping: for the difference channel and the prior's
    /// z-map, whatever the model's own normalisation.
    pub const ZSCORE_IN_MASK: Normalization = Normalization {
        scheme: Scheme::ZScore,
        use_mask: true,
        clip_percentiles: None,
    };
}

/// nnU-Net's crop and normalisation mask: voxels where any channel is nonzero, holes filled.
pub fn nonzero_mask(channels: &[&Array3<f32>]) -> Result<Array3<bool>, PrepareError> {
    let first = channels.first().ok_or(PrepareError::NoChannel)?;
    if let Some(other) = channels.iter().find(|c| c.dim() != first.dim()) {
        return Err(PrepareError::SizeMismatch {
            what: "channels",
            a: first.dim(),
            b: other.dim(),
        });
    }
    let mut any = Array3::from_elem(first.dim(), false);
    for c in channels {
        ndarray::Zip::from(&mut any)
            .and(*c)
            .for_each(|a, v| *a |= *v != 0.0);
    }
    Ok(fill_holes(&any))
}

/// Normalise `image` as `spec` says: clip to the percentiles (taken inside the mask when
/// `use_mask`), then z-score; with `use_mask`, statistics come from inside `mask` and voxels
/// outside it are 0.
pub fn normalize(
    image: &Array3<f32>,
    mask: &Array3<bool>,
    spec: &Normalization,
) -> Result<Array3<f32>, PrepareError> {
    let Scheme::ZScore = spec.scheme;
    if mask.dim() != image.dim() {
        return Err(PrepareError::SizeMismatch {
            what: "mask and image",
            a: mask.dim(),
            b: image.dim(),
        });
    }
    let selected = |m: bool| !spec.use_mask || m;
    let mut values: Vec<f64> = image
        .iter()
        .zip(mask.iter())
        .filter(|(_, m)| selected(**m))
        .map(|(v, _)| f64::from(*v))
        .collect();
    if values.is_empty() {
        // Nothing to normalise: nnU-Net and the training pipeline leave zeros.
        return Ok(Array3::zeros(image.dim()));
    }
    let (lo, hi) = match spec.clip_percentiles {
        Some([a, b]) => {
            if !(0.0..=100.0).contains(&a) || !(0.0..=100.0).contains(&b) || a > b {
                return Err(PrepareError::Percentiles { lower: a, upper: b });
            }
            values.sort_unstable_by(f64::total_cmp);
            (
                percentile(&values, f64::from(a)),
                percentile(&values, f64::from(b)),
            )
        }
        None => (f64::NEG_INFINITY, f64::INFINITY),
    };
    let n = values.len() as f64;
    let mean = values.iter().map(|v| v.clamp(lo, hi)).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|v| (v.clamp(lo, hi) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = variance.sqrt().max(1e-8);
    let mut out = Array3::zeros(image.dim());
    ndarray::Zip::from(&mut out)
        .and(image)
        .and(mask)
        .for_each(|o, v, m| {
            if selected(*m) {
                *o = ((f64::from(*v).clamp(lo, hi) - mean) / std) as f32;
            }
        });
    Ok(out)
}

/// numpy's default (linear) percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(use_mask: bool, clip: Option<[f32; 2]>) -> Normalization {
        Normalization {
            scheme: Scheme::ZScore,
            use_mask,
            clip_percentiles: clip,
        }
    }

    #[test]
    fn zscore_inside_the_mask_and_zero_outside() {
        let image =
            Array3::from_shape_vec((1, 1, 6), vec![1.0, 2.0, 3.0, 4.0, 100.0, 0.0]).unwrap();
        let mask =
            Array3::from_shape_vec((1, 1, 6), vec![true, true, true, true, false, false]).unwrap();
        let out = normalize(&image, &mask, &spec(true, None)).unwrap();
        let sd = 1.25f64.sqrt(); // population std of 1..4
        for (i, v) in [1.0, 2.0, 3.0, 4.0].iter().enumerate() {
            assert!((f64::from(out[[0, 0, i]]) - (v - 2.5) / sd).abs() < 1e-6);
        }
        assert_eq!(out[[0, 0, 4]], 0.0);
        assert_eq!(out[[0, 0, 5]], 0.0);
    }

    #[test]
    fn percentiles_clip_as_numpy_before_the_zscore() {
        // numpy.percentile(range(11), [10, 90]) == [1, 9]
        let image = Array3::from_shape_fn((1, 1, 11), |(_, _, i)| i as f32);
        let mask = Array3::from_elem((1, 1, 11), true);
        let out = normalize(&image, &mask, &spec(false, Some([10.0, 90.0]))).unwrap();
        // Clipped values 1,1,2..8,9,9: mean 5.
        assert!(out[[0, 0, 0]] == out[[0, 0, 1]] && out[[0, 0, 5]].abs() < 1e-6);
        assert!(out[[0, 0, 10]] == out[[0, 0, 9]] && out[[0, 0, 10]] > 0.0);
        assert!(matches!(
            normalize(&image, &mask, &spec(true, Some([90.0, 10.0]))),
            Err(PrepareError::Percentiles { .. })
        ));
    }

    #[test]
    fn an_unknown_scheme_is_refused_by_name() {
        let why = serde_json::from_str::<Normalization>(
            r#"{"scheme": "minmax", "use_mask": true, "clip_percentiles": null}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(why.contains("minmax"), "{why}");
    }

    #[test]
    fn nonzero_mask_fills_enclosed_zeros() {
        let mut a = Array3::zeros((5, 5, 5));
        for (k, j, i) in ndarray::indices((5, 5, 5)) {
            if (1..=3).contains(&k) && (1..=3).contains(&j) && (1..=3).contains(&i) {
                a[[k, j, i]] = 1.0f32;
            }
        }
        a[[2, 2, 2]] = 0.0;
        let b = Array3::zeros((5, 5, 5));
        let m = nonzero_mask(&[&a, &b]).unwrap();
        assert!(m[[2, 2, 2]]);
        assert_eq!(m.iter().filter(|v| **v).count(), 27);
        assert!(nonzero_mask(&[&a, &Array3::zeros((4, 5, 5))]).is_err());
    }
}
