//! The SOP classes msnode receives, writes or negotiates, by their names in the standard.

use dicom_dictionary_std::uids;

pub const VERIFICATION: &str = uids::VERIFICATION;
pub const MR_IMAGE_STORAGE: &str = uids::MR_IMAGE_STORAGE;
pub const ENHANCED_MR_IMAGE_STORAGE: &str = uids::ENHANCED_MR_IMAGE_STORAGE;
pub const SEGMENTATION_STORAGE: &str = uids::SEGMENTATION_STORAGE;
pub const COMPREHENSIVE_3D_SR_STORAGE: &str = uids::COMPREHENSIVE3_DSR_STORAGE;
pub const ENHANCED_SR_STORAGE: &str = uids::ENHANCED_SR_STORAGE;
pub const SECONDARY_CAPTURE_IMAGE_STORAGE: &str = uids::SECONDARY_CAPTURE_IMAGE_STORAGE;
