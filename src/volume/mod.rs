//! Series to volume and back: the analysis works on [`Volume`]s, and results go back onto the
//! source slices through [`Volume::slices`].
//!
//! Conventions, used everywhere in msnode:
//! - voxels are `data[[k, j, i]]`: slice `k`, row `j`, column `i` (DICOM frame order, C layout);
//! - `affine` maps the voxel index `(i, j, k, 1)` to DICOM patient coordinates (LPS, mm) of the
//!   voxel centre. NIfTI files are RAS; [`nifti`] converts at the boundary.

pub mod find;
pub mod import;
pub mod load;
pub mod nifti;

use ndarray::Array3;

pub use find::dicom_files;
pub use import::{ImportOptions, ImportReport, import_nifti};
pub use load::{LoadOptions, load_series};
pub use nifti::{read_nifti, write_nifti};

/// A 4 x 4 matrix, rows first.
pub type Affine = [[f64; 4]; 4];

/// Where one slice of a volume came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSource {
    pub sop_instance_uid: String,
    /// Frame Number (1-based) inside a multi-frame instance; `None` for single-frame instances.
    pub frame: Option<u32>,
}

/// A 3D scalar volume with its geometry in patient coordinates.
#[derive(Debug, Clone)]
pub struct Volume {
    /// `[slices, rows, columns]`.
    pub data: Array3<f32>,
    /// Voxel index (column, row, slice) to LPS millimetres.
    pub affine: Affine,
    /// One entry per slice `k` (empty for volumes that did not come from DICOM).
    pub slices: Vec<SliceSource>,
}

impl Volume {
    /// `[columns, rows, slices]`, the order of the affine's index.
    pub fn dims(&self) -> [usize; 3] {
        let (k, j, i) = self.data.dim();
        [i, j, k]
    }

    /// Voxel size along columns, rows and slices, in mm.
    pub fn spacing(&self) -> [f64; 3] {
        [0, 1, 2].map(|c| norm(column(&self.affine, c)))
    }

    /// LPS position of a voxel centre; fractional indices are allowed.
    pub fn world(&self, index: [f64; 3]) -> [f64; 3] {
        apply(&self.affine, index)
    }
}

/// Why a series or NIfTI file did not become a volume, or a volume could not be written. A
/// message says what failed; the cause, where there is one, is its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: not a readable DICOM file")]
    Dicom {
        path: String,
        source: Box<dicom_object::ReadError>,
    },
    #[error("{path}: {attribute} is missing or unreadable{context}")]
    MissingAttribute {
        path: String,
        attribute: &'static str,
        context: String,
    },
    #[error("{path}: cannot decode the pixel data")]
    Decode {
        path: String,
        source: Box<dicom_pixeldata::Error>,
    },
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },
    #[error("{path}: malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error("no DICOM image found in {0}")]
    Empty(String),
    #[error("not one volume: mixed orientations: {0}")]
    MixedOrientations(String),
    #[error("not one volume: differing {what}: {detail}")]
    DifferingGeometry { what: &'static str, detail: String },
    #[error("not one volume: {0}")]
    MissingSlices(String),
    #[error("not one volume: non-uniform slice spacing: {0}")]
    NonUniformSpacing(String),
    #[error("not one volume: duplicate slice positions: {0}")]
    DuplicatePositions(String),
    #[error(
        "the series holds {volumes} volumes of {positions} slice positions each (repeated positions, as in EPI or other time series); pick one by temporal index 0..{volumes} (`--volume N`)"
    )]
    SeveralVolumes { volumes: usize, positions: usize },
    #[error("temporal index {index} is out of range: the series holds {volumes} volumes")]
    NoSuchVolume { index: usize, volumes: usize },
    #[error("{path}: not a NIfTI-1 file: {message}")]
    Nifti { path: String, message: String },
    #[error("{path}: cannot read it as NIfTI-1")]
    NiftiRead {
        path: String,
        source: std::io::Error,
    },
    #[error("the NIfTI voxels do not fill its dimensions")]
    NiftiShape(#[source] ndarray::ShapeError),
    #[error("cannot write it as DICOM: {0}")]
    NotRepresentable(String),
}

impl VolumeError {
    /// Reading `path` failed.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> VolumeError {
        VolumeError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Writing `path` failed.
    pub(crate) fn write(
        path: &std::path::Path,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> VolumeError {
        VolumeError::Write {
            path: path.display().to_string(),
            source: source.into(),
        }
    }
}

// Small fixed-size linear algebra: the geometry needs no more than this.

pub(crate) fn column(a: &Affine, c: usize) -> [f64; 3] {
    [a[0][c], a[1][c], a[2][c]]
}

pub(crate) fn apply(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (r, o) in out.iter_mut().enumerate() {
        *o = a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3];
    }
    out
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// The affine whose columns are `x`, `y`, `z` and whose translation is `origin`.
pub(crate) fn from_columns(x: [f64; 3], y: [f64; 3], z: [f64; 3], origin: [f64; 3]) -> Affine {
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r] = [x[r], y[r], z[r], origin[r]];
    }
    a[3][3] = 1.0;
    a
}

/// Inverse of an affine (3 x 3 part by cofactors); `None` when it is singular.
#[allow(clippy::needless_range_loop)] // cofactor index arithmetic reads clearer with indices
pub fn invert(a: &Affine) -> Option<Affine> {
    let m = |r: usize, c: usize| a[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    if det.abs() < 1e-12 {
        return None;
    }
    let mut inv = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            // Cofactor of (c, r), transposed.
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            inv[r][c] = (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det;
        }
    }
    for row in inv.iter_mut().take(3) {
        row[3] = -(row[0] * a[0][3] + row[1] * a[1][3] + row[2] * a[2][3]);
    }
    inv[3][3] = 1.0;
    Some(inv)
}

/// LPS <-> RAS: negate the first two world axes (its own inverse).
pub fn flip_lps_ras(a: &Affine) -> Affine {
    let mut out = *a;
    for row in out.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_of_an_oblique_affine_round_trips() {
        let a = from_columns(
            [0.7, 0.1, -0.2],
            [-0.1, 0.9, 0.05],
            [0.3, -0.2, 3.1],
            [-120.0, 40.5, 7.25],
        );
        let inv = invert(&a).unwrap();
        let p = [12.0, 200.5, 33.0];
        let back = apply(&inv, apply(&a, p));
        for c in 0..3 {
            assert!((back[c] - p[c]).abs() < 1e-9, "{back:?} != {p:?}");
        }
        assert!(
            invert(&from_columns(
                [1.0, 0.0, 0.0],
                [2.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
                [0.0; 3]
            ))
            .is_none()
        );
    }
}
