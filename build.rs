//! Build-time facts for `msnode --version`, and rebuilds when a migration changes (`sqlx::migrate!`
//! embeds them at compile time).

use std::process::Command;

/// The default model directory of `Config::default()`, relative to the source tree.
const DEFAULT_MODEL_CARD: &str = "models/compact/model_card.json";

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed={DEFAULT_MODEL_CARD}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    // A build without the checkout (the Docker images) is told its commit.
    println!("cargo:rerun-if-env-changed=MSNODE_GIT_COMMIT");
    let commit = std::env::var("MSNODE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    let commit = commit
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown (not built from a git checkout)".into());
    println!("cargo:rustc-env=MSNODE_GIT_COMMIT={commit}");
    let card = std::fs::read_to_string(DEFAULT_MODEL_CARD).unwrap_or_default();
    let field = |key: &str| -> String {
        // The card is JSON written by training/; a top-level string field is enough here.
        card.split(&format!("\"{key}\":"))
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or("unknown")
            .to_string()
    };
    println!(
        "cargo:rustc-env=MSNODE_DEFAULT_MODEL={} {}",
        field("name"),
        field("version")
    );
}
