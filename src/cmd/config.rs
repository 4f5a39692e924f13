//! `msnode config check FILE`: name every wrong key or value of a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use msnode::config::Config;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a configuration file and name every wrong key or value.
    Check { file: PathBuf },
}

pub fn run(command: Command) -> ExitCode {
    let Command::Check { file } = command;
    match Config::load(&file) {
        Ok(_) => {
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", crate::render(&e.into()));
            ExitCode::FAILURE
        }
    }
}
