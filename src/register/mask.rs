//! Head (foreground) and brain masks from the FLAIR itself: thresholds from the image's own
//! histogram (Otsu), connected components, hole filling and Euclidean morphology in millimetres,
//! so thick 2D slices are handled like any other spacing.

use std::collections::VecDeque;

use ndarray::Array3;

use super::RegisterError;
use super::resample::filter_lines;
use crate::volume::Volume;

/// The head: everything brighter than a tenth of the typical tissue intensity (the mean above
/// Otsu's air/tissue threshold), so the darker scalp is kept; its largest connected part, with
/// the holes (skull, CSF, sinuses) filled in 3D and slice by slice.
pub fn head_mask(volume: &Volume) -> Result<Array3<bool>, RegisterError> {
    let values: Vec<f32> = volume
        .data
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let constant = || RegisterError::NoForeground {
        which: "input",
        why: "the image is constant".into(),
    };
    let threshold = otsu(&values).ok_or_else(constant)?;
    let tissue: Vec<f64> = values
        .iter()
        .filter(|v| **v > threshold)
        .map(|v| f64::from(*v))
        .collect();
    if tissue.is_empty() {
        return Err(constant());
    }
    let level = (0.1 * tissue.iter().sum::<f64>() / tissue.len() as f64) as f32;
    let bright = volume.data.mapv(|v| v > level);
    let head = largest_component(&bright).ok_or_else(|| RegisterError::NoForeground {
        which: "input",
        why: "nothing above the air threshold".into(),
    })?;
    Ok(fill_holes_by_slice(&fill_holes(&head)))
}

/// The brain, good enough for normalisation and cropping (not a segmentation): tissue brighter
/// than Otsu's threshold inside the head (which separates it from bone and CSF), opened to cut
/// it from the scalp, eyes and neck, its largest part grown back, closed over the sulci and with
/// the ventricles filled.
pub fn brain_mask(volume: &Volume, head: &Array3<bool>) -> Result<Array3<bool>, RegisterError> {
    if head.dim() != volume.data.dim() {
        return Err(RegisterError::Input(format!(
            "head mask {:?} and image {:?} differ in size",
            head.dim(),
            volume.data.dim()
        )));
    }
    let spacing = volume.spacing();
    let inside: Vec<f32> = volume
        .data
        .iter()
        .zip(head.iter())
        .filter(|(_, m)| **m)
        .map(|(v, _)| *v)
        .collect();
    let no_brain = |why: &str| RegisterError::NoForeground {
        which: "input",
        why: why.into(),
    };
    let threshold = otsu(&inside).ok_or_else(|| no_brain("the head is uniform"))?;
    let tissue = ndarray::Zip::from(head)
        .and(&volume.data)
        .map_collect(|h, v| *h && *v > threshold);
    let core = erode(&tissue, spacing, OPENING_MM);
    let seed = largest_component(&core).ok_or_else(|| no_brain("no tissue inside the skull"))?;
    let grown = dilate(&seed, spacing, OPENING_MM + 1.0);
    let brain = ndarray::Zip::from(&grown)
        .and(&tissue)
        .map_collect(|g, t| *g && *t);
    let closed = erode(&dilate(&brain, spacing, CLOSING_MM), spacing, CLOSING_MM);
    Ok(fill_holes_by_slice(&fill_holes(&closed)))
}

/// Opening radius that breaks the bridges between the brain and the scalp, orbits or neck.
const OPENING_MM: f64 = 4.0;
/// Closing radius that takes in the CSF of the sulci.
const CLOSING_MM: f64 = 3.0;

/// Otsu's threshold over 256 bins between the minimum and the 99.9th percentile.
pub(crate) fn otsu(values: &[f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let lo = f64::from(sorted[0]);
    let hi = f64::from(sorted[((sorted.len() - 1) as f64 * 0.999) as usize]);
    if hi <= lo {
        return None;
    }
    const BINS: usize = 256;
    let width = (hi - lo) / BINS as f64;
    let mut histogram = [0f64; BINS];
    for v in &sorted {
        let b = ((f64::from(*v) - lo) / width) as usize;
        histogram[b.min(BINS - 1)] += 1.0;
    }
    let total: f64 = histogram.iter().sum();
    let sum_all: f64 = histogram
        .iter()
        .enumerate()
        .map(|(b, n)| b as f64 * n)
        .sum();
    let (mut weight, mut sum, mut best, mut best_bin) = (0.0, 0.0, -1.0, 0);
    for (b, n) in histogram.iter().enumerate() {
        weight += n;
        sum += b as f64 * n;
        let rest = total - weight;
        if weight == 0.0 || rest == 0.0 {
            continue;
        }
        let between = weight * rest * (sum / weight - (sum_all - sum) / rest).powi(2);
        if between > best {
            best = between;
            best_bin = b;
        }
    }
    Some((lo + (best_bin as f64 + 1.0) * width) as f32)
}

const NEIGHBOURS: [[i64; 3]; 6] = [
    [-1, 0, 0],
    [1, 0, 0],
    [0, -1, 0],
    [0, 1, 0],
    [0, 0, -1],
    [0, 0, 1],
];

/// Breadth-first flood over 6-neighbours (`[k, j, i]` offsets) of voxels where `open` holds,
/// starting from `seeds`; returns the reached set.
fn flood(
    open: &Array3<bool>,
    seeds: impl Iterator<Item = (usize, usize, usize)>,
    neighbours: &[[i64; 3]],
) -> Array3<bool> {
    let dims = open.dim();
    let mut reached = Array3::from_elem(dims, false);
    let mut queue = VecDeque::new();
    for s in seeds {
        if open[s] && !reached[s] {
            reached[s] = true;
            queue.push_back(s);
        }
    }
    let limit = [dims.0 as i64, dims.1 as i64, dims.2 as i64];
    while let Some((k, j, i)) = queue.pop_front() {
        for d in neighbours {
            let (nk, nj, ni) = (k as i64 + d[0], j as i64 + d[1], i as i64 + d[2]);
            if nk < 0 || nj < 0 || ni < 0 || nk >= limit[0] || nj >= limit[1] || ni >= limit[2] {
                continue;
            }
            let n = (nk as usize, nj as usize, ni as usize);
            if open[n] && !reached[n] {
                reached[n] = true;
                queue.push_back(n);
            }
        }
    }
    reached
}

/// The largest 6-connected component; `None` when the mask is empty. Ties go to the first in
/// memory order, so the result is deterministic.
pub(crate) fn largest_component(mask: &Array3<bool>) -> Option<Array3<bool>> {
    let mut label = Array3::<u32>::zeros(mask.dim());
    let mut sizes = vec![0usize];
    let mut queue = VecDeque::new();
    let dims = mask.dim();
    for start in ndarray::indices(dims) {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0;
        label[start] = id;
        queue.push_back(start);
        while let Some((k, j, i)) = queue.pop_front() {
            size += 1;
            for d in NEIGHBOURS {
                let (nk, nj, ni) = (k as i64 + d[0], j as i64 + d[1], i as i64 + d[2]);
                if nk < 0 || nj < 0 || ni < 0 {
                    continue;
                }
                let n = (nk as usize, nj as usize, ni as usize);
                if n.0 < dims.0 && n.1 < dims.1 && n.2 < dims.2 && mask[n] && label[n] == 0 {
                    label[n] = id;
                    queue.push_back(n);
                }
            }
        }
        sizes.push(size);
    }
    let (best, _) = sizes
        .iter()
        .enumerate()
        .skip(1)
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
    Some(label.mapv(|l| l == best as u32))
}

/// Fill what the background reaches from the volume's border through 6-neighbours only
/// (scipy's `binary_fill_holes`, as nnU-Net's nonzero mask).
pub(crate) fn fill_holes(mask: &Array3<bool>) -> Array3<bool> {
    let (n0, n1, n2) = mask.dim();
    let background = mask.mapv(|m| !m);
    let border = ndarray::indices(mask.dim())
        .into_iter()
        .filter(|&(k, j, i)| {
            k == 0 || j == 0 || i == 0 || k == n0 - 1 || j == n1 - 1 || i == n2 - 1
        });
    let outside = flood(&background, border, &NEIGHBOURS);
    outside.mapv(|o| !o)
}

/// Fill holes in each slice on its own: a head cut by the first or last slice of a 2D
/// acquisition is open there in 3D.
fn fill_holes_by_slice(mask: &Array3<bool>) -> Array3<bool> {
    let (_, n1, n2) = mask.dim();
    let background = mask.mapv(|m| !m);
    let border = ndarray::indices(mask.dim())
        .into_iter()
        .filter(|&(_, j, i)| j == 0 || i == 0 || j == n1 - 1 || i == n2 - 1);
    let outside = flood(&background, border, &NEIGHBOURS[2..]);
    outside.mapv(|o| !o)
}

/// Squared Euclidean distance (mm^2) from every voxel to the nearest voxel where `target` holds
/// (exact, separable: Felzenszwalb and Huttenlocher).
fn squared_distance(target: &Array3<bool>, spacing: [f64; 3]) -> Array3<f32> {
    const FAR: f32 = 1e12;
    let mut d = target.mapv(|t| if t { 0.0 } else { FAR });
    // Columns, rows, slices: data axis order is [slice, row, column].
    for (axis, s) in spacing.iter().enumerate() {
        let s2 = s * s;
        filter_lines(&mut d, axis, |f| lower_envelope(f, s2));
    }
    d
}

/// One pass of the 1D distance transform: `f[p] <- min_q f[q] + s2 (p - q)^2`.
fn lower_envelope(f: &mut [f64], s2: f64) {
    // Millions of lines per mask: each thread reuses its buffers.
    thread_local! {
        static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<usize>, Vec<f64>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    }
    SCRATCH.with_borrow_mut(|(source, v, z)| {
        source.clear();
        source.extend_from_slice(f);
        v.clear();
        v.resize(f.len(), 0);
        z.clear();
        z.resize(f.len() + 1, 0.0);
        envelope(f, s2, source, v, z);
    });
}

/// [`lower_envelope`] on its buffers: `source` a copy of the line, `v` and `z` its length (+1).
fn envelope(f: &mut [f64], s2: f64, source: &[f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    let mut k = 0usize;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let intersect = |q: usize, p: usize| {
        ((source[q] + s2 * (q * q) as f64) - (source[p] + s2 * (p * p) as f64))
            / (2.0 * s2 * (q as f64 - p as f64))
    };
    for q in 1..n {
        let mut x = intersect(q, v[k]);
        while x <= z[k] {
            k -= 1;
            x = intersect(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = x;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (p, out) in f.iter_mut().enumerate() {
        while z[k + 1] < p as f64 {
            k += 1;
        }
        let q = v[k];
        *out = s2 * (p as f64 - q as f64).powi(2) + source[q];
    }
}

/// Voxels farther than `radius` mm from the background.
pub(crate) fn erode(mask: &Array3<bool>, spacing: [f64; 3], radius: f64) -> Array3<bool> {
    // Only the mask can survive, and the nearest background of each of its voxels lies in the
    // mask's bounding box grown by one voxel: the transform runs on that box alone.
    within_box(mask, [1; 3], |part| {
        let d = squared_distance(&part.mapv(|m| !m), spacing);
        d.mapv(|v| f64::from(v) > radius * radius)
    })
}

/// Voxels within `radius` mm of the mask.
pub(crate) fn dilate(mask: &Array3<bool>, spacing: [f64; 3], radius: f64) -> Array3<bool> {
    // Nothing farther than `radius` from the mask's bounding box can be reached.
    let margin = [2, 1, 0].map(|axis| (radius / spacing[axis]).ceil() as usize + 1);
    within_box(mask, margin, |part| {
        let d = squared_distance(&part.to_owned(), spacing);
        d.mapv(|v| f64::from(v) <= radius * radius)
    })
}

/// `morphology` applied to the mask's bounding box grown by `margin` voxels per array axis
/// (clipped to the volume); false outside it, and everywhere for an empty mask.
fn within_box(
    mask: &Array3<bool>,
    margin: [usize; 3],
    morphology: impl Fn(ndarray::ArrayView3<bool>) -> Array3<bool>,
) -> Array3<bool> {
    let mut out = Array3::from_elem(mask.dim(), false);
    let dims = [mask.dim().0, mask.dim().1, mask.dim().2];
    let mut low = dims;
    let mut high = [0usize; 3];
    for ((k, j, i), _) in mask.indexed_iter().filter(|(_, m)| **m) {
        for (axis, index) in [k, j, i].into_iter().enumerate() {
            low[axis] = low[axis].min(index);
            high[axis] = high[axis].max(index + 1);
        }
    }
    if high[0] == 0 {
        return out;
    }
    let range = |axis: usize| {
        let start = low[axis].saturating_sub(margin[axis]);
        let end = (high[axis] + margin[axis]).min(dims[axis]);
        ndarray::Slice::from(start..end)
    };
    let region = ndarray::s![range(0), range(1), range(2)];
    out.slice_mut(region)
        .assign(&morphology(mask.slice(region)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn morphology_on_the_bounding_box_equals_the_whole_volume() {
        let spacing = [0.72, 0.72, 3.0];
        // A blob with specks away from the border, one touching it, and an empty mask.
        for (centre, radius) in [
            ([5.0, 14.0, 17.0], 6.0),
            ([1.0, 3.0, 28.0], 9.0),
            ([-99.0; 3], 1.0),
        ] {
            let mask = Array3::from_shape_fn((12, 30, 32), |(k, j, i)| {
                let d = [
                    (k as f64 - centre[0]) * spacing[2],
                    (j as f64 - centre[1]) * spacing[1],
                    (i as f64 - centre[2]) * spacing[0],
                ];
                d.iter().map(|x| x * x).sum::<f64>() < radius * radius
                    || (k + 2 * j + 3 * i) % 37 == 0
                        && centre[0] > 0.0
                        && k < 9
                        && (4..25).contains(&j)
                        && (3..24).contains(&i)
            });
            for r in [1.5, 3.0, 4.0] {
                assert!(mask.iter().any(|m| *m) == (centre[0] > -99.0));
                let whole_erode =
                    squared_distance(&mask.mapv(|m| !m), spacing).mapv(|v| f64::from(v) > r * r);
                let whole_dilate = squared_distance(&mask, spacing).mapv(|v| f64::from(v) <= r * r);
                assert_eq!(erode(&mask, spacing, r), whole_erode, "erode {r} mm");
                assert_eq!(dilate(&mask, spacing, r), whole_dilate, "dilate {r} mm");
            }
        }
    }

    #[test]
    fn distance_transform_is_euclidean_in_millimetres() {
        let mut target = Array3::from_elem((5, 9, 9), false);
        target[[2, 4, 4]] = true;
        let d = squared_distance(&target, [1.0, 2.0, 3.0]);
        assert_eq!(d[[2, 4, 4]], 0.0);
        assert_eq!(d[[2, 4, 7]], 9.0); // 3 columns of 1 mm
        assert_eq!(d[[2, 6, 4]], 16.0); // 2 rows of 2 mm
        assert_eq!(d[[4, 5, 5]], 1.0 + 4.0 + 36.0);
    }

    #[test]
    fn holes_are_filled_and_the_largest_part_kept() {
        let mut m = Array3::from_elem((7, 7, 7), false);
        for (k, j, i) in ndarray::indices((7, 7, 7)) {
            let shell = (1..=5).contains(&k) && (1..=5).contains(&j) && (1..=5).contains(&i);
            m[[k, j, i]] = shell && !(k == 3 && j == 3 && i == 3);
        }
        m[[0, 0, 0]] = true; // a speck apart from the cube
        let largest = largest_component(&m).unwrap();
        assert!(!largest[[0, 0, 0]] && largest[[1, 1, 1]]);
        assert!(!largest[[3, 3, 3]]);
        assert!(fill_holes(&largest)[[3, 3, 3]]);
        assert_eq!(fill_holes(&largest).iter().filter(|v| **v).count(), 125);
        assert!(largest_component(&Array3::from_elem((2, 2, 2), false)).is_none());
    }

    #[test]
    fn otsu_separates_two_populations() {
        let values: Vec<f32> = (0..1000)
            .map(|i| {
                if i % 2 == 0 {
                    10.0 + (i % 7) as f32
                } else {
                    200.0 + (i % 11) as f32
                }
            })
            .collect();
        let t = otsu(&values).unwrap();
        assert!(t > 16.0 && t < 200.0, "{t}");
        assert!(otsu(&[3.0; 10]).is_none());
    }
}
