//! Readiness: can the node take and analyse a study now? Each check names what it found.

use std::fmt;
use std::time::Duration;

use super::{Admin, ModelCheck};
use crate::logging::chain;

/// A lock held longer than this by another writer makes the index "not ready".
const INDEX_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One check: what it looked at, and what it found (Ok) or why it failed (Err).
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub result: Result<String, String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(what) => write!(f, "ok {}: {what}", self.name),
            Err(why) => write!(f, "FAILED {}: {why}", self.name),
        }
    }
}

/// The index, the store and the models (the single-visit one when configured), in that order.
pub async fn run(admin: &Admin) -> Vec<Check> {
    let mut checks = vec![
        index(admin).await,
        storage(admin).await,
        model("model", &admin.models.follow_up),
    ];
    if let Some(single_visit) = &admin.models.single_visit {
        checks.push(model("single_visit_model", single_visit));
    }
    checks
}

async fn index(admin: &Admin) -> Check {
    let result = match tokio::time::timeout(
        INDEX_CHECK_TIMEOUT,
        admin.ingest.index().check_writable(),
    )
    .await
    {
        Ok(Ok(())) => Ok("takes writes".to_string()),
        Ok(Err(e)) => Err(format!("cannot write: {}", chain(&e))),
        Err(_) => Err(format!(
            "write lock not granted within {} s (another process holds it?)",
            INDEX_CHECK_TIMEOUT.as_secs()
        )),
    };
    Check {
        name: "index",
        result,
    }
}

async fn storage(admin: &Admin) -> Check {
    let ingest = admin.ingest.clone();
    let result = tokio::task::spawn_blocking(move || {
        ingest
            .store()
            .check_writable()
            .map_err(|e| format!("the data directory does not take writes: {e}"))?;
        let free = ingest.free_space()?;
        Ok(format!("takes writes, {} MiB free", free >> 20))
    })
    .await
    .unwrap_or_else(|e| Err(format!("the check did not finish: {e}")));
    Check {
        name: "storage",
        result,
    }
}

fn model(name: &'static str, check: &ModelCheck) -> Check {
    Check {
        name,
        result: match check {
            Ok(m) => Ok(format!(
                "{} {} verified (sha256 {})",
                m.name, m.version, m.sha256
            )),
            Err(why) => Err(why.clone()),
        },
    }
}
