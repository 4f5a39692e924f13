//! DICOM networking: DIMSE command sets, negotiated syntaxes, the SCP and the SCU.

pub mod dimse;
pub mod scp;
pub mod scu;
pub mod syntaxes;
