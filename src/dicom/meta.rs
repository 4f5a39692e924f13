//! Our implementation's identity, the file meta group and writing a new object as a file.

use std::path::Path;

use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use super::transfer_syntax::EXPLICIT_VR_LE;

/// Our implementation class UID, written into every file meta group and association.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.266657200200615317207891857678802307883";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("MSNODE_", env!("CARGO_PKG_VERSION"));

/// The file meta group of an instance: its class, instance and transfer syntax, and our
/// implementation. Callers add what else they know (the source AE) before building it.
pub fn file_meta(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
) -> FileMetaTableBuilder {
    FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(transfer_syntax_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
}

/// Why a new object could not be written as a file (boxed: the causes are large).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Meta(Box<dicom_object::meta::Error>),
    #[error(transparent)]
    Write(Box<dicom_object::WriteError>),
}

/// Write a new object as a DICOM file (Explicit VR Little Endian) at `path`.
pub fn write_file(
    obj: InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    path: &Path,
) -> Result<(), WriteError> {
    let meta = file_meta(sop_class_uid, sop_instance_uid, EXPLICIT_VR_LE)
        .build()
        .map_err(|e| WriteError::Meta(Box::new(e)))?;
    obj.with_exact_meta(meta)
        .write_to_file(path)
        .map_err(|e| WriteError::Write(Box::new(e)))
}
