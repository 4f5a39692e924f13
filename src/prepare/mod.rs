//! The prepare stage: from the current scan and the aligned prior to the network's input on the
//! model grid, and from the network's output back to the current scan's grid. The arithmetic is
//! the training pipeline's (`training/src/msnode_training/channels.py`), so the network sees at
//! inference what it saw in training:
//!
//! model grid (the card's spacing, the current scan's orientation and field of view) -> both
//! visits resampled there (cubic B-spline) -> the current scan's brain only -> channels
//! ([`Channel`]) -> nnU-Net's nonzero mask, crop to its bounding box -> normalisation
//! ([`Normalization`]) -> network -> uncrop -> linear back to the current grid.

pub mod normalize;

use std::fmt;

use ndarray::{Array3, Array4, ArrayView3, Axis, s};
use serde::Deserialize;

use crate::register::{
    Grid, Interpolation, PointSampler, RegisterError, Transform, brain_mask, head_mask, resample,
};
use crate::volume::Volume;

pub use normalize::{Normalization, Scheme, nonzero_mask, normalize};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot make the model grid")]
    ModelGrid(#[source] RegisterError),
    #[error("cannot resample the {what}")]
    Resample {
        what: &'static str,
        #[source]
        source: RegisterError,
    },
    #[error("cannot find the brain of the {what}")]
    Brain {
        what: &'static str,
        #[source]
        source: RegisterError,
    },
    #[error("no channel to build a mask from")]
    NoChannel,
    #[error("the model's {0} channel needs a prior visit")]
    NeedsPrior(Channel),
    #[error("{what} differ in size: {a:?} and {b:?}")]
    SizeMismatch {
        what: &'static str,
        a: (usize, usize, usize),
        b: (usize, usize, usize),
    },
    #[error("clip percentiles {lower} and {upper} must lie between 0 and 100, the lower first")]
    Percentiles { lower: f32, upper: f32 },
}

/// One input channel of a model, as the model card names it: a two-visit model takes the prior
/// too, a single-visit model the current scan only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The prior visit, aligned to the current one.
    Prior,
    Current,
    /// The current visit minus the prior, each z-scored inside the nonzero mask first.
    CurrentMinusPrior,
}

impl Channel {
    /// Whether the channel is made from the prior visit.
    pub fn needs_prior(self) -> bool {
        !matches!(self, Channel::Current)
    }

    /// The name the model card and the training pipeline use.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Prior => "prior",
            Channel::Current => "current",
            Channel::CurrentMinusPrior => "current_minus_prior",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the model expects of its input (from its card).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    /// Voxel spacing of the model grid, mm, axis order (z, y, x).
    pub spacing_mm: [f64; 3],
    pub channels: Vec<Channel>,
    pub normalization: Normalization,
}

/// Where the cropped input sits in the whole model grid: inclusive start, exclusive end,
/// [slice, row, column].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub start: [usize; 3],
    pub end: [usize; 3],
}

impl Crop {
    /// The bounding box of `mask`, or the whole array when the mask is empty.
    fn around(mask: &Array3<bool>) -> Crop {
        let (n0, n1, n2) = mask.dim();
        let mut start = [usize::MAX; 3];
        let mut end = [0usize; 3];
        for ((k, j, i), &on) in mask.indexed_iter() {
            if on {
                for (a, v) in [k, j, i].into_iter().enumerate() {
                    start[a] = start[a].min(v);
                    end[a] = end[a].max(v + 1);
                }
            }
        }
        if start[0] == usize::MAX {
            return Crop {
                start: [0; 3],
                end: [n0, n1, n2],
            };
        }
        Crop { start, end }
    }

    fn shape(&self) -> (usize, usize, usize) {
        (
            self.end[0] - self.start[0],
            self.end[1] - self.start[1],
            self.end[2] - self.start[2],
        )
    }
}

/// The network's input and what is needed to put its output back.
pub struct ModelInput {
    /// Normalised channels in the card's order, cropped: [channel, z, y, x].
    pub channels: Array4<f32>,
    pub crop: Crop,
    pub grid: Grid,
    /// nnU-Net's nonzero mask on the whole model grid: nothing outside it is a lesion.
    pub mask: Array3<bool>,
    /// The aligned prior's intensity inside the current scan's brain (None without a prior).
    pub prior_brain: Option<BrainStats>,
    /// The same channels on the whole model grid before normalisation, in the card's order: what
    /// nnU-Net's own preprocessing (crop, z-score) starts from.
    pub raw: Vec<(Channel, Volume)>,
}

/// The prior visit and the registration's transform, which maps current points to prior points.
#[derive(Clone, Copy)]
pub struct AlignedPrior<'a> {
    pub volume: &'a Volume,
    pub to_prior: &'a Transform,
}

/// The current scan on the model grid with its brain: the part of the network's input that needs
/// no prior, so it can be made while the prior is being aligned.
pub struct CurrentOnModelGrid {
    grid: Grid,
    brain: Array3<bool>,
    /// Skull-stripped intensities.
    data: Array3<f32>,
}

impl CurrentOnModelGrid {
    pub fn new(current: &Volume, spec: &Preprocessing) -> Result<Self, PrepareError> {
        let grid = Grid::of(current)
            .for_model(spec.spacing_mm)
            .map_err(PrepareError::ModelGrid)?;
        let resampled = on_model_grid(current, &Transform::identity(), &grid, "current scan")?;
        // The model was trained on skull-stripped visits: keep the current scan's brain only.
        let brain = brain_of(&resampled, "current scan on the model grid")?;
        let data = skull_strip(resampled.data, &brain);
        Ok(CurrentOnModelGrid { grid, brain, data })
    }
}

fn on_model_grid(
    volume: &Volume,
    transform: &Transform,
    grid: &Grid,
    what: &'static str,
) -> Result<Volume, PrepareError> {
    resample(volume, transform, grid, Interpolation::BSpline)
        .map_err(|source| PrepareError::Resample { what, source })
}

/// Build the network's input from the current scan on the model grid and, for a two-visit
/// model, the aligned prior.
pub fn model_input(
    current: CurrentOnModelGrid,
    prior: Option<AlignedPrior<'_>>,
    spec: &Preprocessing,
) -> Result<ModelInput, PrepareError> {
    if prior.is_none()
        && let Some(&channel) = spec.channels.iter().find(|c| c.needs_prior())
    {
        return Err(PrepareError::NeedsPrior(channel));
    }
    let CurrentOnModelGrid {
        grid,
        brain,
        data: current_data,
    } = current;
    let prior_data = match prior {
        Some(p) => Some(skull_strip(
            on_model_grid(p.volume, p.to_prior, &grid, "prior scan")?.data,
            &brain,
        )),
        None => None,
    };
    let mask = match &prior_data {
        Some(prior_data) => nonzero_mask(&[prior_data, &current_data])?,
        None => nonzero_mask(&[&current_data])?,
    };
    let plain = Normalization::ZSCORE_IN_MASK;
    let difference = match &prior_data {
        Some(prior_data) if spec.channels.contains(&Channel::CurrentMinusPrior) => {
            Some(normalize(&current_data, &mask, &plain)? - normalize(prior_data, &mask, &plain)?)
        }
        _ => None,
    };
    let crop = Crop::around(&mask);
    let (c0, c1, c2) = crop.shape();
    let window = s![
        crop.start[0]..crop.end[0],
        crop.start[1]..crop.end[1],
        crop.start[2]..crop.end[2]
    ];
    let mut channels = Array4::<f32>::zeros((spec.channels.len(), c0, c1, c2));
    let mut raw = Vec::with_capacity(spec.channels.len());
    for (c, &channel) in spec.channels.iter().enumerate() {
        let data = match channel {
            Channel::Current => Some(&current_data),
            Channel::Prior => prior_data.as_ref(),
            Channel::CurrentMinusPrior => difference.as_ref(),
        }
        .ok_or(PrepareError::NeedsPrior(channel))?;
        let normalised = normalize(data, &mask, &spec.normalization)?;
        channels
            .index_axis_mut(Axis(0), c)
            .assign(&normalised.slice(window));
        raw.push((channel, grid.volume(data.clone())));
    }
    let prior_brain = prior_data.as_ref().map(|p| BrainStats::of(p, &brain));
    Ok(ModelInput {
        channels,
        crop,
        grid,
        mask,
        prior_brain,
        raw,
    })
}

impl ModelInput {
    /// One output channel of the network (cropped, [z, y, x]) on the whole model grid, 0 outside
    /// the nonzero mask (as the model card's post-processing says: the network saw nothing there).
    pub fn uncrop(&self, output: ArrayView3<f32>) -> Volume {
        let [nx, ny, nz] = self.grid.dims;
        let mut whole = Array3::<f32>::zeros((nz, ny, nx));
        let (o, (c0, c1, c2)) = (self.crop.start, output.dim());
        whole
            .slice_mut(s![o[0]..o[0] + c0, o[1]..o[1] + c1, o[2]..o[2] + c2])
            .assign(&output);
        ndarray::Zip::from(&mut whole)
            .and(&self.mask)
            .for_each(|p, &inside| {
                if !inside {
                    *p = 0.0;
                }
            });
        self.grid.volume(whole)
    }
}

/// A map on the model grid brought back to the current scan's grid (linear).
pub fn to_current_grid(on_model: &Volume, current: &Volume) -> Result<Volume, PrepareError> {
    resample(
        on_model,
        &Transform::identity(),
        &Grid::of(current),
        Interpolation::Linear,
    )
    .map_err(|source| PrepareError::Resample {
        what: "probability back to the current grid",
        source,
    })
}

/// Mean and (population) standard deviation of the aligned prior inside the current scan's brain,
/// measured on the model grid where both are at hand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrainStats {
    pub mean: f64,
    pub std: f64,
}

impl BrainStats {
    fn of(image: &Array3<f32>, brain: &Array3<bool>) -> BrainStats {
        let (mut n, mut sum, mut squares) = (0usize, 0.0f64, 0.0f64);
        ndarray::Zip::from(image)
            .and(brain)
            .for_each(|&v, &inside| {
                if inside {
                    let v = f64::from(v);
                    n += 1;
                    sum += v;
                    squares += v * v;
                }
            });
        let mean = sum / n.max(1) as f64;
        let variance = (squares / n.max(1) as f64 - mean * mean).max(0.0);
        BrainStats {
            mean,
            std: variance.sqrt().max(1e-8),
        }
    }
}

/// The aligned prior z-scored inside the current scan's brain, sampled (linearly) at voxels of
/// the current grid on request: what decides whether a lesion is new or enlarging. Only lesion
/// voxels are asked for, so the prior is never resampled whole onto the current grid.
pub struct PriorZ<'a> {
    sampler: PointSampler<'a>,
    stats: BrainStats,
}

impl<'a> PriorZ<'a> {
    pub fn new(
        current: &Volume,
        prior: AlignedPrior<'a>,
        stats: BrainStats,
    ) -> Result<PriorZ<'a>, PrepareError> {
        let sampler = PointSampler::new(prior.volume, prior.to_prior, &Grid::of(current)).map_err(
            |source| PrepareError::Resample {
                what: "prior onto the current grid",
                source,
            },
        )?;
        Ok(PriorZ { sampler, stats })
    }

    /// The z-score at current voxel `[slice, row, column]`.
    pub fn at(&self, voxel: [usize; 3]) -> f32 {
        ((f64::from(self.sampler.linear_at(voxel)) - self.stats.mean) / self.stats.std) as f32
    }
}

fn brain_of(volume: &Volume, what: &'static str) -> Result<Array3<bool>, PrepareError> {
    head_mask(volume)
        .and_then(|head| brain_mask(volume, &head))
        .map_err(|source| PrepareError::Brain { what, source })
}

/// Zero outside the brain and below zero (B-spline overshoot), as the training data are.
fn skull_strip(mut data: Array3<f32>, brain: &Array3<bool>) -> Array3<f32> {
    ndarray::Zip::from(&mut data).and(brain).for_each(|d, &b| {
        *d = if b { d.max(0.0) } else { 0.0 };
    });
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_grid(dims: [usize; 3]) -> Grid {
        let mut affine = [[0.0; 4]; 4];
        for (r, row) in affine.iter_mut().enumerate() {
            row[r] = 1.0;
        }
        Grid { dims, affine }
    }

    #[test]
    fn channels_read_as_the_card_names_them() {
        let channels: Vec<Channel> =
            serde_json::from_str(r#"["prior", "current", "current_minus_prior"]"#).unwrap();
        assert_eq!(
            channels,
            [Channel::Prior, Channel::Current, Channel::CurrentMinusPrior]
        );
        assert_eq!(
            channels.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["prior", "current", "current_minus_prior"]
        );
        let why = serde_json::from_str::<Vec<Channel>>(r#"["t1"]"#)
            .unwrap_err()
            .to_string();
        assert!(why.contains("t1"), "{why}");
    }

    #[test]
    fn crop_is_the_bounding_box_and_uncrop_puts_the_output_back() {
        let mut mask = Array3::from_elem((4, 5, 6), false);
        mask[[1, 2, 3]] = true;
        mask[[2, 3, 1]] = true;
        let crop = Crop::around(&mask);
        assert_eq!(crop.start, [1, 2, 1]);
        assert_eq!(crop.end, [3, 4, 4]);
        assert_eq!(crop.shape(), (2, 2, 3));
        let empty = Crop::around(&Array3::from_elem((4, 5, 6), false));
        assert_eq!((empty.start, empty.end), ([0; 3], [4, 5, 6]));

        let input = ModelInput {
            channels: Array4::zeros((1, 2, 2, 3)),
            crop,
            grid: identity_grid([6, 5, 4]),
            mask: mask.clone(),
            prior_brain: None,
            raw: Vec::new(),
        };
        let output = Array3::from_elem((2, 2, 3), 0.75f32);
        let whole = input.uncrop(output.view());
        assert_eq!(whole.data.dim(), (4, 5, 6));
        // Only the mask's voxels keep the network's output; the rest of the crop is 0.
        assert_eq!(whole.data[[1, 2, 3]], 0.75);
        assert_eq!(whole.data[[2, 3, 1]], 0.75);
        assert_eq!(whole.data[[1, 2, 1]], 0.0);
        assert_eq!(whole.data[[0, 0, 0]], 0.0);
        assert_eq!(whole.data.iter().filter(|v| **v > 0.0).count(), 2);
    }

    #[test]
    fn skull_strip_keeps_the_brain_and_drops_negative_overshoot() {
        let data = Array3::from_shape_vec((1, 1, 3), vec![5.0f32, -1.0, 7.0]).unwrap();
        let brain = Array3::from_shape_vec((1, 1, 3), vec![true, true, false]).unwrap();
        assert_eq!(
            skull_strip(data, &brain).into_raw_vec_and_offset().0,
            [5.0, 0.0, 0.0]
        );
    }
}
