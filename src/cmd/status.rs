//! `msnode status`: what the node holds and its recent associations.

use std::process::ExitCode;

use anyhow::Context;
use msnode::index::{AssociationRow, Counts, Index};
use msnode::settings::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// How many recent associations to list.
    #[arg(long, default_value_t = 10)]
    associations: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let index = Index::open(&settings.database)
        .await
        .context("msnode status reads the index of the configured data directory")?;
    let counts = index.counts().await?;
    let recent = index.recent_associations(args.associations).await?;
    let workflow = index.workflow_counts().await?;
    if args.json {
        let mut value = as_json(&counts, &recent);
        value["jobs"] = by_state(&workflow.jobs);
        value["outbox"] = by_state(&workflow.outbox);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_text(settings, &counts, &recent);
        let line = |counts: &[(String, i64)]| {
            counts
                .iter()
                .map(|(state, n)| format!("{state} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("jobs: {}", line(&workflow.jobs));
        println!("outbox: {}", line(&workflow.outbox));
    }
    Ok(ExitCode::SUCCESS)
}

/// `{"state": count, ...}`.
fn by_state(counts: &[(String, i64)]) -> serde_json::Value {
    counts
        .iter()
        .map(|(state, n)| (state.clone(), serde_json::json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn as_json(counts: &Counts, recent: &[AssociationRow]) -> serde_json::Value {
    serde_json::json!({
        "patients": counts.patients,
        "studies": counts.studies,
        "series": counts.series,
        "instances": counts.instances,
        "bytes": counts.bytes,
        "recent_associations": recent.iter().map(|a| serde_json::json!({
            "id": a.id, "calling_ae": a.calling_ae, "called_ae": a.called_ae,
            "peer_address": a.peer_address, "started_at": a.started_at, "ended_at": a.ended_at,
            "instances_stored": a.instances_stored, "instances_refused": a.instances_refused,
            "outcome": a.outcome,
        })).collect::<Vec<_>>(),
    })
}

fn print_text(settings: &Settings, counts: &Counts, recent: &[AssociationRow]) {
    println!("database   {}", settings.database.display());
    println!(
        "patients {}  studies {}  series {}  instances {}  ({:.1} MiB)",
        counts.patients,
        counts.studies,
        counts.series,
        counts.instances,
        counts.bytes as f64 / 1048576.0
    );
    println!("recent associations:");
    println!(
        "{:>5}  {:<20}  {:<16}  {:<21}  {:>6}  {:>7}  outcome",
        "id", "started", "calling AE", "peer", "stored", "refused"
    );
    for a in recent {
        println!(
            "{:>5}  {:<20}  {:<16}  {:<21}  {:>6}  {:>7}  {}",
            a.id,
            a.started_at.get(..19).unwrap_or(&a.started_at),
            a.calling_ae,
            a.peer_address,
            a.instances_stored,
            a.instances_refused,
            a.outcome
        );
    }
}
