//! msnode: a clinical node for multiple-sclerosis follow-up MRI.
//!
//! Data flow and the module that owns each stage are described in `ARCHITECTURE.md`.

pub mod analyze;
pub mod config;
pub mod dicom;
pub mod index;
pub mod infer;
pub mod ingest;
pub mod lesions;
pub mod logging;
pub mod net;
pub mod node;
pub mod outputs;
pub mod prepare;
pub mod register;
pub mod settings;
pub mod store;
pub mod volume;
pub mod workflow;
