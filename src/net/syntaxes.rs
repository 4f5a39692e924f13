//! What msnode negotiates: the storage SOP classes it keeps, the query/retrieve models it
//! answers, and the transfer syntaxes it accepts.

use crate::dicom::sop_class::{
    COMPREHENSIVE_3D_SR_STORAGE, ENHANCED_MR_IMAGE_STORAGE, ENHANCED_SR_STORAGE, MR_IMAGE_STORAGE,
    PATIENT_ROOT_FIND, PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, SECONDARY_CAPTURE_IMAGE_STORAGE,
    SEGMENTATION_STORAGE, STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE, VERIFICATION,
};
use crate::dicom::transfer_syntax::{
    DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_2000, JPEG_2000_LOSSLESS,
    JPEG_BASELINE, JPEG_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
};

/// Storage SOP classes msnode accepts: the MR inputs, and its own outputs so round trips can be tested.
pub const STORAGE_SOP_CLASSES: [&str; 6] = [
    MR_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    SEGMENTATION_STORAGE,
    COMPREHENSIVE_3D_SR_STORAGE,
    ENHANCED_SR_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
];

/// Transfer syntaxes accepted for storage. The data set is stored as received, so accepting a
/// compressed syntax costs nothing here; decoding happens when a series becomes a volume.
pub const ACCEPTED_TRANSFER_SYNTAXES: [&str; 11] = [
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    JPEG_BASELINE,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_2000,
    RLE_LOSSLESS,
];

/// Query/Retrieve models the SCP answers: C-FIND, C-MOVE and C-GET, Patient and Study Root.
pub const FIND_MODELS: [&str; 2] = [PATIENT_ROOT_FIND, STUDY_ROOT_FIND];
pub const MOVE_MODELS: [&str; 2] = [PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE];
pub const GET_MODELS: [&str; 2] = [PATIENT_ROOT_GET, STUDY_ROOT_GET];

/// Every abstract syntax the SCP negotiates.
pub fn scp_abstract_syntaxes() -> impl Iterator<Item = &'static str> {
    std::iter::once(VERIFICATION)
        .chain(STORAGE_SOP_CLASSES)
        .chain(FIND_MODELS)
        .chain(MOVE_MODELS)
        .chain(GET_MODELS)
}

pub fn is_storage_sop_class(uid: &str) -> bool {
    STORAGE_SOP_CLASSES.contains(&uid)
}
