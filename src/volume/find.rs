//! Where a series' files are: a folder, a file, or a series held in the store.

use std::path::{Path, PathBuf};

use super::VolumeError;

/// The DICOM files of a series: a folder (walked; files without the DICM prefix are ignored), a
/// single file, or a Series Instance UID held in the store under `data_dir`.
pub fn series_files(source: &str, data_dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let path = Path::new(source);
    let folder = if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    } else if path.is_dir() {
        path.to_path_buf()
    } else {
        // The store keeps `dicom/<study>/<series>/<sop>.dcm`.
        let studies = data_dir.join("dicom");
        let found = std::fs::read_dir(&studies)
            .map_err(|e| VolumeError::io(&studies, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(source))
            .find(|p| p.is_dir());
        found.ok_or_else(|| VolumeError::NotFound {
            what: source.to_string(),
            store: studies.display().to_string(),
        })?
    };
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&folder)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && has_dicm_prefix(e.path()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(VolumeError::Empty(folder.display().to_string()));
    }
    Ok(files)
}

fn has_dicm_prefix(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
}
