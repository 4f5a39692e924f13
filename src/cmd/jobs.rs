//! `msnode jobs`, `msnode job ID`, `msnode retry ID`: the workflow's jobs as the index holds them.

use std::process::ExitCode;

use anyhow::{Context, bail};
use msnode::index::{Index, JobRow, JobState};
use msnode::settings::Settings;

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only jobs in this state (queued, waiting_for_prior, running, delivering, done, failed, no_prior).
    #[arg(long)]
    state: Option<JobState>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    limit: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct JobArgs {
    id: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

async fn open(settings: &Settings) -> anyhow::Result<Index> {
    Index::open(&settings.database)
        .await
        .context("the jobs are kept in the index of the configured data directory")
}

pub async fn list(args: ListArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let index = open(settings).await?;
    let jobs = index.jobs(args.state, args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:<17}  {:<20}  {:<64}  reason",
        "id", "state", "updated", "current series"
    );
    for job in &jobs {
        println!(
            "{:>5}  {:<17}  {:<20}  {:<64}  {}",
            job.id,
            job.state,
            job.updated_at.get(..19).unwrap_or(&job.updated_at),
            job.current_series,
            job.reason.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(args: JobArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let index = open(settings).await?;
    let Some(job) = index.job(args.id).await? else {
        bail!("no job {}", args.id);
    };
    let events = index.job_events(job.id).await?;
    let outbox = index.job_outbox(job.id).await?;
    let summary: Option<serde_json::Value> = job
        .summary
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    if args.json {
        let value = serde_json::json!({
            "job": job, "events": events, "deliveries": outbox, "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_job(&job, summary.as_ref());
    println!("events:");
    for e in &events {
        println!(
            "  {}  {:<17}  {}",
            e.at,
            e.state,
            e.reason.as_deref().unwrap_or("")
        );
    }
    println!("deliveries:");
    for d in &outbox {
        let status = d
            .last_status
            .map(|s| format!("{s:#06x}"))
            .unwrap_or_default();
        println!(
            "  {:<16}  {:<7}  attempts {}  {}  {}  {}",
            d.destination,
            d.state,
            d.attempts,
            status,
            d.last_error.as_deref().unwrap_or(""),
            d.file_path
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_job(job: &JobRow, summary: Option<&serde_json::Value>) {
    println!("job {}: {}", job.id, job.state);
    if let Some(reason) = &job.reason {
        println!("reason     {reason}");
    }
    println!("current    {}", job.current_series);
    let lesion_load = summary.is_some_and(|s| s["kind"] == "lesion_load");
    println!(
        "prior      {}",
        job.prior_series.as_deref().unwrap_or(if lesion_load {
            "(none: lesion load of this visit)"
        } else {
            "(none yet)"
        })
    );
    if let Some(why) = &job.prior_why {
        println!("           {why}");
    }
    if let Some(query) = &job.prior_query {
        println!("from PACS  {query}");
    }
    if let Some(s) = summary {
        let volume = s["totals"]["total_volume_mm3"].as_f64().unwrap_or(0.0);
        if lesion_load {
            println!(
                "lesions    {} (lesion load, no prior), {volume:.1} mm3",
                s["totals"]["count"]
            );
        } else {
            println!(
                "lesions    {} ({} new, {} enlarging), {volume:.1} mm3",
                s["totals"]["count"], s["totals"]["new"], s["totals"]["enlarging"],
            );
            println!(
                "registration brain correlation {:.3}{}",
                s["registration"]["quality"]["brain_correlation"]
                    .as_f64()
                    .unwrap_or(0.0),
                if s["registration"]["weak"] == true {
                    " (WEAK PAIRING)"
                } else {
                    ""
                }
            );
        }
        let t = |k: &str| s["timings"][k].as_f64().unwrap_or(0.0);
        println!(
            "timings    load {:.1} s, register {:.1} s, preprocess {:.1} s, infer {:.1} s, lesions {:.1} s, outputs {:.1} s: {:.1} s",
            t("load"),
            t("register"),
            t("preprocess"),
            t("infer"),
            t("lesions"),
            t("outputs"),
            t("total")
        );
        if let Some(lesions) = s["lesions"].as_array().filter(|l| !l.is_empty()) {
            println!(
                "{:>4}  {:<9}  {:>10}  {:>26}",
                "id", "change", "volume mm3", "centroid LPS mm"
            );
            for l in lesions {
                let c = |i: usize| l["centroid_lps"][i].as_f64().unwrap_or(0.0);
                println!(
                    "{:>4}  {:<9}  {:>10.1}  {:>8.1} {:>8.1} {:>8.1}",
                    l["id"].as_u64().unwrap_or(0),
                    l["change"].as_str().unwrap_or("-"),
                    l["volume_mm3"].as_f64().unwrap_or(0.0),
                    c(0),
                    c(1),
                    c(2)
                );
            }
        }
    }
}

pub async fn retry(args: JobArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let index = open(settings).await?;
    if !index.requeue_job(args.id).await? {
        bail!(
            "job {} is not failed, no_prior or done (only those can be run again)",
            args.id
        );
    }
    println!("job {} queued again", args.id);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ReprocessArgs {
    /// Series Instance UID of a stored series.
    series: String,
}

/// A new job for a stored series, whatever its verdict: its results get new UIDs and supersede
/// the earlier ones.
pub async fn reprocess(args: ReprocessArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let index = open(settings).await?;
    if index.series_files(&args.series).await?.is_empty() {
        bail!("no series {} in the index", args.series);
    }
    let input = format!("reprocess {}", msnode::index::now_rfc3339());
    match index.create_job(&args.series, &input).await? {
        Some(id) => println!("job {id} queued for series {}", args.series),
        None => bail!("a job for this input exists already"),
    }
    Ok(ExitCode::SUCCESS)
}
