//! Where a visit comes from: the files of a DICOM series (from the index, or a folder given on the
//! command line) or a NIfTI file.

use std::path::{Path, PathBuf};

use crate::index::{Index, IndexError};
use crate::volume::{LoadOptions, Volume, VolumeError, load_series, read_nifti};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what} is neither a file, a folder nor a series in the index {database}")]
    NotFound { what: String, database: PathBuf },
    #[error("cannot look up {what} in the index")]
    Index {
        what: String,
        #[source]
        source: IndexError,
    },
    #[error("cannot list the DICOM files of {what}")]
    Files {
        what: String,
        #[source]
        source: VolumeError,
    },
}

/// A visit to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanSource {
    /// The instances of one series, in any order.
    Series(Vec<PathBuf>),
    /// A NIfTI file (its first volume).
    Nifti(PathBuf),
}

/// A loaded visit.
pub struct Scan {
    pub volume: Volume,
    /// The DICOM files, when the visit was a series.
    pub files: Vec<PathBuf>,
}

impl ScanSource {
    /// A path given by a user: a `.nii`/`.nii.gz` file is NIfTI, anything else is DICOM.
    pub fn is_nifti(path: &Path) -> bool {
        let name = path.to_string_lossy().to_ascii_lowercase();
        name.ends_with(".nii") || name.ends_with(".nii.gz")
    }

    /// What a user names on the command line: a NIfTI file, a DICOM file or folder, or the
    /// Series Instance UID of a series the index of `data_dir` holds (`database`).
    pub async fn resolve(
        what: &str,
        data_dir: &Path,
        database: &Path,
    ) -> Result<ScanSource, SourceError> {
        let path = Path::new(what);
        if path.exists() {
            if ScanSource::is_nifti(path) {
                return Ok(ScanSource::Nifti(path.to_owned()));
            }
            return crate::volume::dicom_files(path)
                .map(ScanSource::Series)
                .map_err(|source| SourceError::Files {
                    what: what.to_owned(),
                    source,
                });
        }
        let index_error = |source| SourceError::Index {
            what: what.to_owned(),
            source,
        };
        let index = Index::open(database).await.map_err(index_error)?;
        let files = index.series_files(what).await.map_err(index_error);
        index.close().await;
        let files = files?;
        if files.is_empty() {
            return Err(SourceError::NotFound {
                what: what.to_owned(),
                database: database.to_owned(),
            });
        }
        Ok(ScanSource::Series(
            files.into_iter().map(|f| data_dir.join(f)).collect(),
        ))
    }

    pub fn load(&self) -> Result<Scan, VolumeError> {
        match self {
            ScanSource::Nifti(path) => Ok(Scan {
                volume: read_nifti(path)?.volume(0)?,
                files: Vec::new(),
            }),
            ScanSource::Series(files) => Ok(Scan {
                volume: load_series(files, &LoadOptions::default())?,
                files: files.clone(),
            }),
        }
    }
}
