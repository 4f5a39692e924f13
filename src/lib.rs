//! msnode: a clinical node for multiple-sclerosis follow-up MRI. `ARCHITECTURE.md` maps the data
//! flow onto these modules:
//!
//! - [`config`]: the TOML configuration, every problem named; [`settings`]: configuration -> the
//!   settings each stage takes
//! - [`dicom`]: UIDs, SOP classes, transfer syntaxes, DIMSE status, attribute readers, file meta,
//!   the modules every new object shares
//! - [`net`]: DICOM networking: the SCP that receives, the SCU that sends, DIMSE command sets
//! - [`ingest`]: a received instance checked and made durable; [`store`]: the files;
//!   [`index`]: the SQLite index, the workflow's jobs and outbox
//! - [`workflow`]: complete series -> FLAIR -> prior -> job -> results delivered to PACS
//! - [`volume`]: series -> volume, NIfTI in and out
//! - [`register`]: the prior aligned to the current scan
//! - [`prepare`]: the network's input on the model grid, and its output back on the current grid
//! - [`infer`]: model directories and ONNX Runtime with nnU-Net's sliding window
//! - [`lesions`]: connected lesions, their volumes, new or enlarging
//! - [`outputs`]: DICOM-SEG, the TID 1500 report, overlay series and previews
//! - [`analyze`]: the [`analyze::Analyzer`] that runs one analysis through those stages
//! - [`node`]: the daemon wiring the SCP, the workflow and the admin server; [`reload`]: what a
//!   SIGHUP changes; [`logging`]: log output
//! - [`admin`]: the admin HTTP server (health, readiness, metrics, status page); [`metrics`]:
//!   every counter, gauge and histogram
//! - [`fuzzing`]: the hostile-input entry points that `fuzz/` and the corpus test drive

pub mod admin;
pub mod analyze;
pub mod config;
pub mod dicom;
pub mod fuzzing;
pub mod index;
pub mod infer;
pub mod ingest;
pub mod lesions;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod outputs;
pub mod prepare;
pub mod register;
pub mod reload;
pub mod settings;
pub mod store;
pub mod volume;
pub mod workflow;
