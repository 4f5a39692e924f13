//! The one home of what every DICOM-speaking stage shares: UIDs (`uid`), the SOP classes and
//! transfer syntaxes msnode knows (`sop_class`, `transfer_syntax`), DIMSE status codes (`status`),
//! attribute readers (`read`), the file meta group and writing files (`meta`), and the modules
//! every new object carries (`object`).
//!
//! Policy lives with its stage: what the SCP negotiates is `net::syntaxes`, what a result says is
//! `outputs`.

pub mod meta;
pub mod object;
pub mod read;
pub mod sop_class;
pub mod status;
pub mod structure;
pub mod transfer_syntax;
pub mod uid;

pub use read::trim_padding;
pub use status::Status;
pub use uid::new_uid;
