//! `msnode serve`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use msnode::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_: Args, config: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    msnode::node::serve(config, path).await?;
    Ok(ExitCode::SUCCESS)
}
