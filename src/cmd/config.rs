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
        Ok(config) => {
            // The keys are right; the TLS files they name must hold what they should.
            let problems = msnode::net::tls::check(&config);
            for problem in &problems {
                eprintln!("{}: {}", file.display(), msnode::logging::chain(problem));
            }
            if !problems.is_empty() {
                return ExitCode::FAILURE;
            }
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", crate::render(&e.into()));
            ExitCode::FAILURE
        }
    }
}
