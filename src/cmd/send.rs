//! `msnode send PEER PATH...`: C-STORE files to a peer, each in its own transfer syntax.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use msnode::dicom::status;
use msnode::net::scu::{self, ScuError};
use msnode::settings::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// A configured peer's AE title, or AE@host:port.
    peer: String,
    /// Files and folders (walked).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let remote = settings.remote(&args.peer)?;
    let mut files = Vec::new();
    let (mut failed, mut skipped) = (0usize, 0usize);
    for path in scu::collect_files(&args.paths) {
        match scu::inspect(&path) {
            Ok(file) => files.push(file),
            // Files that are not DICOM (previews, NIfTI, JSON beside the objects) are not sent.
            Err(ScuError::NotDicom { .. } | ScuError::BadMeta { .. }) => skipped += 1,
            Err(e) => {
                eprintln!("not sent: {}", crate::render(&e.into()));
                failed += 1;
            }
        }
    }
    if files.is_empty() {
        bail!("no DICOM files found under the given paths");
    }
    let started = Instant::now();
    let results = scu::send(&remote, &files).await?;
    let mut sent = 0usize;
    for result in &results {
        match &result.outcome {
            Ok(0) => sent += 1,
            Ok(warning) if status::is_stored(*warning) => {
                sent += 1;
                eprintln!(
                    "{}: stored with warning status {warning:#06x}",
                    result.path.display()
                );
            }
            Ok(status) => {
                failed += 1;
                eprintln!(
                    "{}: refused with status {status:#06x}",
                    result.path.display()
                );
            }
            Err(reason) => {
                failed += 1;
                eprintln!("{}: not sent: {reason}", result.path.display());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} of {} instance(s) to {} in {seconds:.2} s ({:.0} instances/s); {failed} failed; \
         {skipped} file(s) skipped, not DICOM",
        sent + failed,
        remote.called_ae,
        sent as f64 / seconds.max(1e-9)
    );
    Ok(super::exit_code(failed == 0))
}
