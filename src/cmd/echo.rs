//! `msnode echo PEER`: C-ECHO a peer.

use std::process::ExitCode;

use msnode::net::scu;
use msnode::settings::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// A configured peer's AE title, or AE@host:port.
    peer: String,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let remote = settings.remote(&args.peer)?;
    let (elapsed, status) = scu::echo(&remote).await?;
    println!(
        "C-ECHO {} at {}: status {status:#06x} in {:.1} ms",
        remote.called_ae,
        remote.address,
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(super::exit_code(status == 0))
}
