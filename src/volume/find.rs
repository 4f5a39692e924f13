//! The DICOM files a user names: a folder or a file. (The series the node stores are found by
//! the index: `Index::series_files`.)

use std::path::{Path, PathBuf};

use super::VolumeError;

/// The DICOM files at `path`: a single file, or a folder walked for files with the DICM prefix
/// (others are ignored).
pub fn dicom_files(path: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let folder = path;
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(folder)
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
