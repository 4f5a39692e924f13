//! Build-time facts for `msnode --version`, and rebuilds when a migration changes (`sqlx::migrate!`
//! embeds them at compile time).

use std::process::Command;

/// The default model directories of `Config::default()` (follow-up and single-visit), relative
/// to the source tree.
const DEFAULT_MODEL_CARD: &str = "models/realbg/model_card.json";
const SINGLE_VISIT_MODEL_CARD: &str = "models/single-visit/model_card.json";

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed={DEFAULT_MODEL_CARD}");
    println!("cargo:rerun-if-changed={SINGLE_VISIT_MODEL_CARD}");
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
    println!(
        "cargo:rustc-env=MSNODE_DEFAULT_MODEL={}",
        model_identity(DEFAULT_MODEL_CARD)
    );
    println!(
        "cargo:rustc-env=MSNODE_SINGLE_VISIT_MODEL={}",
        model_identity(SINGLE_VISIT_MODEL_CARD)
    );
}

/// "name version" from a model card, "unknown unknown" when it cannot be read.
fn model_identity(card_path: &str) -> String {
    let card = std::fs::read_to_string(card_path).unwrap_or_default();
    let field = |key: &str| -> String {
        // The card is JSON written by training/; a top-level string field is enough here.
        card.split(&format!("\"{key}\":"))
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or("unknown")
            .to_string()
    };
    format!("{} {}", field("name"), field("version"))
}
