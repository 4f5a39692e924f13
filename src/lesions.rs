//! The lesions stage: from a lesion-probability map on the current FLAIR grid to a list of lesions
//! with their volumes and positions, each classed as new or enlarging when there is a prior visit.
//!
//! Rules:
//! - a voxel is lesion when its probability is at or above the threshold;
//! - lesions are 26-connected components (voxels touching by a face, an edge or a corner);
//! - lesions smaller than the minimum volume (mm3) are dropped;
//! - new or enlarging: when the model has one class for both, the aligned prior decides. A lesion is
//!   *enlarging* when at least [`ENLARGING_PRIOR_FRACTION`] of its voxels were already hyperintense at the
//!   prior visit (z-score of the prior inside the brain at least [`PRIOR_HYPERINTENSE_Z`]): a lesion was
//!   there and grew. Otherwise it is *new*;
//! - without a prior (a single-visit analysis: the lesion load of a first visit) a lesion has no change.

use ndarray::{Array3, ArrayView3};
use serde::Serialize;

use crate::volume::{Affine, apply};

/// Prior z-score above which a voxel counts as already hyperintense (lesion-like on FLAIR).
pub const PRIOR_HYPERINTENSE_Z: f32 = 2.0;
/// Fraction of a lesion's voxels that must be hyperintense at the prior visit for it to be enlarging.
pub const ENLARGING_PRIOR_FRACTION: f64 = 0.3;

/// What an analysis reports: change between two visits, or the lesion load of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisKind {
    /// New and enlarging lesions of the current visit against its prior.
    FollowUp,
    /// Every lesion of one visit (no prior): their count and total volume.
    LesionLoad,
}

impl AnalysisKind {
    /// The kind a model with these input channels makes.
    pub fn of_channels(channels: &[crate::prepare::Channel]) -> AnalysisKind {
        if channels.iter().any(|c| c.needs_prior()) {
            AnalysisKind::FollowUp
        } else {
            AnalysisKind::LesionLoad
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    New,
    Enlarging,
}

/// One lesion. Indices are (column, row, slice) of the current FLAIR grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesion {
    /// 1-based, in the order lesions are first met scanning slice by slice.
    pub id: u32,
    pub voxels: usize,
    pub volume_mm3: f64,
    /// Centre of mass in patient coordinates (LPS, mm).
    pub centroid_lps: [f64; 3],
    /// Bounding box, inclusive voxel indices (column, row, slice).
    pub bbox_min: [usize; 3],
    pub bbox_max: [usize; 3],
    /// Bounding box size along the grid's axes, in mm.
    pub extent_mm: [f64; 3],
    pub max_probability: f32,
    pub mean_probability: f32,
    /// New or enlarging; None when there was no prior to compare with.
    pub change: Option<Change>,
    /// Fraction of the lesion's voxels already hyperintense at the prior visit (None without one).
    pub prior_hyperintense_fraction: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionSummary {
    pub count: usize,
    pub new: usize,
    pub enlarging: usize,
    pub total_volume_mm3: f64,
}

/// The lesions found, and the label map (0 = background, n = lesion n) on the same grid.
#[derive(Debug, Clone)]
pub struct LesionMap {
    pub labels: Array3<u32>,
    pub lesions: Vec<Lesion>,
}

impl LesionMap {
    pub fn summary(&self) -> LesionSummary {
        LesionSummary {
            count: self.lesions.len(),
            new: self
                .lesions
                .iter()
                .filter(|l| l.change == Some(Change::New))
                .count(),
            enlarging: self
                .lesions
                .iter()
                .filter(|l| l.change == Some(Change::Enlarging))
                .count(),
            total_volume_mm3: total_volume_mm3(&self.lesions),
        }
    }
}

/// The lesions' volumes added up: 0 (not the -0 that `f64::sum` starts from) when there is none.
pub fn total_volume_mm3(lesions: &[Lesion]) -> f64 {
    lesions.iter().fold(0.0, |total, l| total + l.volume_mm3)
}

/// Volume of one voxel, mm3, from a voxel -> LPS affine.
pub fn voxel_volume(affine: &Affine) -> f64 {
    let m = |r: usize, c: usize| affine[r][c];
    (m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0)))
    .abs()
}

fn spacing(affine: &Affine) -> [f64; 3] {
    [0, 1, 2].map(|c| (affine[0][c].powi(2) + affine[1][c].powi(2) + affine[2][c].powi(2)).sqrt())
}

/// Label 26-connected components of `mask` (array order [slice, row, column]); returns the label
/// map and the voxels (k, j, i) of each component, in order of first appearance.
pub fn connected_components(mask: ArrayView3<bool>) -> (Array3<u32>, Vec<Vec<[usize; 3]>>) {
    let (nk, nj, ni) = mask.dim();
    let mut labels = Array3::<u32>::zeros((nk, nj, ni));
    let mut components = Vec::new();
    let mut stack = Vec::new();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                if !mask[[k, j, i]] || labels[[k, j, i]] != 0 {
                    continue;
                }
                let label = components.len() as u32 + 1;
                let mut voxels = Vec::new();
                labels[[k, j, i]] = label;
                stack.push([k, j, i]);
                while let Some([ck, cj, ci]) = stack.pop() {
                    voxels.push([ck, cj, ci]);
                    for dk in -1i64..=1 {
                        for dj in -1i64..=1 {
                            for di in -1i64..=1 {
                                let (qk, qj, qi) = (ck as i64 + dk, cj as i64 + dj, ci as i64 + di);
                                if qk < 0
                                    || qj < 0
                                    || qi < 0
                                    || qk >= nk as i64
                                    || qj >= nj as i64
                                    || qi >= ni as i64
                                {
                                    continue;
                                }
                                let q = [qk as usize, qj as usize, qi as usize];
                                if mask[q] && labels[q] == 0 {
                                    labels[q] = label;
                                    stack.push(q);
                                }
                            }
                        }
                    }
                }
                components.push(voxels);
            }
        }
    }
    (labels, components)
}

/// Find lesions in `probability` ([slice, row, column] on the grid of `affine`).
/// `prior_z` gives the aligned prior, z-scored inside the brain, at a voxel `[slice, row, column]`
/// of the same grid (it is asked only for lesion voxels); without it no lesion has a change (the
/// lesion load of a single visit).
pub fn find_lesions(
    probability: ArrayView3<f32>,
    affine: &Affine,
    prior_z: Option<&dyn Fn([usize; 3]) -> f32>,
    threshold: f32,
    min_volume_mm3: f64,
) -> LesionMap {
    let (labels, components) = connected_components(probability.mapv(|p| p >= threshold).view());
    let voxel_mm3 = voxel_volume(affine);
    let voxel_size = spacing(affine);
    let mut relabel = vec![0u32; components.len() + 1];
    let mut lesions = Vec::new();
    for (index, voxels) in components.iter().enumerate() {
        let volume_mm3 = voxels.len() as f64 * voxel_mm3;
        if volume_mm3 < min_volume_mm3 {
            continue;
        }
        let id = lesions.len() as u32 + 1;
        relabel[index + 1] = id;
        let mut sum = [0.0f64; 3];
        let mut bbox_min = [usize::MAX; 3];
        let mut bbox_max = [0usize; 3];
        let (mut max_p, mut sum_p) = (f32::MIN, 0.0f64);
        let mut hyperintense = 0usize;
        for &[k, j, i] in voxels {
            let ijk = [i, j, k];
            for a in 0..3 {
                sum[a] += ijk[a] as f64;
                bbox_min[a] = bbox_min[a].min(ijk[a]);
                bbox_max[a] = bbox_max[a].max(ijk[a]);
            }
            let p = probability[[k, j, i]];
            max_p = max_p.max(p);
            sum_p += p as f64;
            if prior_z.is_some_and(|z| z([k, j, i]) >= PRIOR_HYPERINTENSE_Z) {
                hyperintense += 1;
            }
        }
        let n = voxels.len() as f64;
        let prior_hyperintense_fraction = prior_z.map(|_| hyperintense as f64 / n);
        lesions.push(Lesion {
            id,
            voxels: voxels.len(),
            volume_mm3,
            centroid_lps: apply(affine, sum.map(|s| s / n)),
            bbox_min,
            bbox_max,
            extent_mm: [0, 1, 2].map(|a| (bbox_max[a] - bbox_min[a] + 1) as f64 * voxel_size[a]),
            max_probability: max_p,
            mean_probability: (sum_p / n) as f32,
            change: prior_hyperintense_fraction.map(|fraction| {
                if fraction >= ENLARGING_PRIOR_FRACTION {
                    Change::Enlarging
                } else {
                    Change::New
                }
            }),
            prior_hyperintense_fraction,
        });
    }
    LesionMap {
        labels: labels.mapv(|l| relabel[l as usize]),
        lesions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 x 1 mm in-plane, 3 mm slices, origin at (10, 20, 30).
    fn affine() -> Affine {
        [
            [1.0, 0.0, 0.0, 10.0],
            [0.0, 1.0, 0.0, 20.0],
            [0.0, 0.0, 3.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    #[test]
    fn components_touching_by_a_corner_are_one_lesion() {
        let mut p = Array3::<f32>::zeros((4, 10, 10));
        // Lesion A: 2 x 2 x 2 cube plus a voxel touching it only by a corner.
        for k in 0..2 {
            for j in 1..3 {
                for i in 1..3 {
                    p[[k, j, i]] = 0.9;
                }
            }
        }
        p[[2, 3, 3]] = 0.6;
        // Lesion B: a single voxel far away, below the minimum volume.
        p[[3, 8, 8]] = 0.95;
        // Below threshold: ignored.
        p[[0, 8, 1]] = 0.4;
        let map = find_lesions(p.view(), &affine(), None, 0.5, 4.0);
        assert_eq!(map.lesions.len(), 1, "{:?}", map.lesions);
        let a = &map.lesions[0];
        assert_eq!(a.voxels, 9);
        // Anisotropic voxels: 9 x (1 x 1 x 3) mm3.
        assert!((a.volume_mm3 - 27.0).abs() < 1e-9);
        assert_eq!((a.bbox_min, a.bbox_max), ([1, 1, 0], [3, 3, 2]));
        assert_eq!(a.extent_mm, [3.0, 3.0, 9.0]);
        assert!((a.max_probability - 0.9).abs() < 1e-6);
        assert!((a.mean_probability - (8.0 * 0.9 + 0.6) / 9.0).abs() < 1e-6);
        // Centroid: i and j = (8 * 1.5 + 3) / 9, k = (4 * 0 + 4 * 1 + 2) / 9.
        let c = (8.0 * 1.5 + 3.0) / 9.0;
        let expected = [10.0 + c, 20.0 + c, 30.0 + 3.0 * 6.0 / 9.0];
        for (got, want) in a.centroid_lps.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9);
        }
        assert_eq!(
            map.labels[[3, 8, 8]],
            0,
            "the dropped lesion is not in the label map"
        );
        assert_eq!(map.labels[[2, 3, 3]], 1);
        // No prior: a lesion load, neither new nor enlarging.
        assert_eq!(
            map.summary(),
            LesionSummary {
                count: 1,
                new: 0,
                enlarging: 0,
                total_volume_mm3: 27.0
            }
        );
    }

    #[test]
    fn the_minimum_volume_rule_keeps_lesions_of_exactly_that_volume() {
        let mut p = Array3::<f32>::zeros((2, 5, 5));
        p[[0, 0, 0]] = 1.0; // 3 mm3
        p[[1, 4, 4]] = 1.0;
        p[[1, 4, 3]] = 1.0; // 6 mm3
        let map = find_lesions(p.view(), &affine(), None, 0.5, 3.0);
        assert_eq!(
            map.lesions.iter().map(|l| l.volume_mm3).collect::<Vec<_>>(),
            vec![3.0, 6.0]
        );
        let map = find_lesions(p.view(), &affine(), None, 0.5, 3.5);
        assert_eq!(map.lesions.len(), 1);
        assert_eq!(map.lesions[0].id, 1, "ids are renumbered after dropping");
    }

    #[test]
    fn a_lesion_hyperintense_at_the_prior_visit_is_enlarging() {
        let mut p = Array3::<f32>::zeros((1, 6, 12));
        let mut prior = Array3::<f32>::zeros((1, 6, 12));
        for i in 0..4 {
            p[[0, 1, i]] = 0.8; // lesion 1: prior hyperintense in 2 of 4 voxels -> enlarging
            p[[0, 4, i + 7]] = 0.8; // lesion 2: prior hyperintense in 1 of 4 -> new (25 % < 30 %)
        }
        prior[[0, 1, 0]] = 2.5;
        prior[[0, 1, 1]] = 3.0;
        prior[[0, 4, 7]] = 2.5;
        let map = find_lesions(p.view(), &affine(), Some(&|v| prior[v]), 0.5, 0.0);
        let changes: Vec<Option<Change>> = map.lesions.iter().map(|l| l.change).collect();
        assert_eq!(changes, vec![Some(Change::Enlarging), Some(Change::New)]);
        assert_eq!(map.lesions[0].prior_hyperintense_fraction, Some(0.5));
        assert_eq!(map.summary().enlarging, 1);

        // The same map without a prior: the lesion load of one visit, no change for any lesion.
        let load = find_lesions(p.view(), &affine(), None, 0.5, 0.0);
        assert!(load.lesions.iter().all(|l| l.change.is_none()));
        assert!(
            load.lesions
                .iter()
                .all(|l| l.prior_hyperintense_fraction.is_none())
        );
        let summary = load.summary();
        assert_eq!((summary.count, summary.new, summary.enlarging), (2, 0, 0));
    }

    #[test]
    fn no_lesion_is_a_total_of_plus_zero() {
        let map = find_lesions(
            Array3::<f32>::zeros((2, 3, 3)).view(),
            &affine(),
            None,
            0.5,
            0.0,
        );
        let total = map.summary().total_volume_mm3;
        assert!(total == 0.0 && total.is_sign_positive(), "{total}");
    }
}
