//! `msnode audit [--since WHEN]`: the append-only audit trail: who sent us what (each
//! association, accepted or rejected) and what we sent where (each delivery attempt).

use std::process::ExitCode;

use anyhow::{Context, bail};
use msnode::index::{AuditEvent, Index};
use msnode::settings::Settings;
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime, UtcOffset};

#[derive(clap::Args)]
pub struct Args {
    /// From when: a duration back from now (30m, 24h, 7d), a date (2026-12-01, UTC midnight) or an
    /// RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let since = since(&args.since, OffsetDateTime::now_utc())?;
    let index = Index::open(&settings.database)
        .await
        .context("the audit trail is kept in the index of the configured data directory")?;
    let events = index.audit_events(&since).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("audit events since {since}: {}", events.len());
    for event in &events {
        println!("{}", line(event));
    }
    Ok(ExitCode::SUCCESS)
}

fn line(e: &AuditEvent) -> String {
    let at = e.at.get(..19).unwrap_or(&e.at);
    let outcome = e.outcome.as_deref().unwrap_or("");
    match e.kind.as_str() {
        "association" => format!(
            "{at}  association {:>5} from {:<16} {:<21}  stored {} refused {}  {outcome}",
            e.association.unwrap_or_default(),
            e.ae_title,
            e.peer_address.as_deref().unwrap_or(""),
            e.instances_stored.unwrap_or_default(),
            e.instances_refused.unwrap_or_default(),
        ),
        _ => {
            let answer = match e.status {
                Some(status) => format!("status {status:#06x}"),
                None => outcome.to_string(),
            };
            format!(
                "{at}  delivery    job {:>5} to   {:<16} {}  {answer}",
                e.job.unwrap_or_default(),
                e.ae_title,
                e.sop_instance_uid.as_deref().unwrap_or(""),
            )
        }
    }
}

/// `--since` as an RFC 3339 UTC time, the form the index stores.
fn since(text: &str, now: OffsetDateTime) -> anyhow::Result<String> {
    let text = text.trim();
    let back = |unit: char, seconds: i64| -> Option<anyhow::Result<OffsetDateTime>> {
        let n = text.strip_suffix(unit)?;
        Some(
            n.parse::<i64>()
                .map(|n| now - Duration::seconds(n.saturating_mul(seconds)))
                .with_context(|| format!("{text:?}: not a number of {unit}")),
        )
    };
    let start = if let Some(t) = back('m', 60)
        .or_else(|| back('h', 3600))
        .or_else(|| back('d', 86400))
    {
        t?
    } else if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        t
    } else if let Ok(d) = Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        d.midnight().assume_utc()
    } else {
        bail!(
            "--since {text:?}: expected 30m, 24h, 7d, a date such as 2026-12-01, or an RFC 3339 time"
        );
    };
    Ok(start.to_offset(UtcOffset::UTC).format(&Rfc3339)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now = OffsetDateTime::parse("2026-12-02T06:00:00Z", &Rfc3339).unwrap();
        assert_eq!(since("24h", now).unwrap(), "2026-12-01T06:00:00Z");
        assert_eq!(since("30m", now).unwrap(), "2026-12-02T05:30:00Z");
        assert_eq!(since("7d", now).unwrap(), "2026-11-25T06:00:00Z");
        assert_eq!(since("2026-12-01", now).unwrap(), "2026-12-01T00:00:00Z");
        assert_eq!(
            since("2026-12-01T10:00:00+02:00", now).unwrap(),
            "2026-12-01T08:00:00Z"
        );
        assert!(since("yesterday", now).is_err());
        assert!(since("xh", now).is_err());
    }
}
