//! What msnode negotiates: the storage SOP classes it keeps and the transfer syntaxes it accepts.

use super::dimse::VERIFICATION_SOP_CLASS;

pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
pub const ENHANCED_MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4.1";
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
pub const COMPREHENSIVE_3D_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.34";
pub const ENHANCED_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.22";
pub const SECONDARY_CAPTURE_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

/// Storage SOP classes msnode accepts: the MR inputs, and its own outputs so round trips can be tested.
pub const STORAGE_SOP_CLASSES: [&str; 6] = [
    MR_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    SEGMENTATION_STORAGE,
    COMPREHENSIVE_3D_SR_STORAGE,
    ENHANCED_SR_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
];

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// Transfer syntaxes accepted for storage. The data set is stored as received, so accepting a
/// compressed syntax costs nothing here; decoding happens when a series becomes a volume.
pub const ACCEPTED_TRANSFER_SYNTAXES: [&str; 11] = [
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    "1.2.840.10008.1.2.4.50", // JPEG baseline (process 1)
    "1.2.840.10008.1.2.4.57", // JPEG lossless (process 14)
    "1.2.840.10008.1.2.4.70", // JPEG lossless, first-order prediction (process 14, SV1)
    "1.2.840.10008.1.2.4.80", // JPEG-LS lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 lossless only
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.5",    // RLE lossless
];

/// Every abstract syntax the SCP negotiates.
pub fn scp_abstract_syntaxes() -> impl Iterator<Item = &'static str> {
    std::iter::once(VERIFICATION_SOP_CLASS).chain(STORAGE_SOP_CLASSES)
}

pub fn is_storage_sop_class(uid: &str) -> bool {
    STORAGE_SOP_CLASSES.contains(&uid)
}
