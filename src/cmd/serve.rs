//! `msnode serve`: the daemon.

use std::process::ExitCode;

use msnode::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_: Args, config: Config) -> anyhow::Result<ExitCode> {
    msnode::node::serve(config).await?;
    Ok(ExitCode::SUCCESS)
}
