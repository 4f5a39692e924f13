//! One file per command of the `msnode` binary, each with its arguments and a `run` that builds
//! what it needs from the library's settings and prints the result (mini-redis's `cmd/`).

pub mod analyze;
pub mod audit;
pub mod config;
pub mod echo;
pub mod explain;
pub mod export_nifti;
pub mod import_nifti;
pub mod infer;
pub mod jobs;
pub mod register;
pub mod send;
pub mod serve;
pub mod status;

use std::process::ExitCode;

/// Success when `ok`, else failure.
pub fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
