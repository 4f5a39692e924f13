//! The node's counters, gauges and histograms: the one place they live. Stages record into a
//! shared [`Metrics`]; the admin server renders it in Prometheus' text format, after setting the
//! gauges that are read from the index and the file system at scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the node exports. Cloning shares the same values.
pub struct Metrics {
    registry: Registry,
    pub instances_received: Counter,
    pub instances_refused: Family<ReasonLabel, Counter>,
    pub stored_bytes: Counter,
    pub ingest_seconds: Histogram,
    pub commit_shared_by: Histogram,
    pub associations_open: Gauge,
    pub associations: Counter,
    pub associations_rejected: Family<ReasonLabel, Counter>,
    pub jobs: Family<StateLabel, Gauge>,
    pub job_stage_seconds: Histograms<StageLabel>,
    pub outbox_pending: Family<DestinationLabel, Gauge>,
    pub delivery_failures: Family<DestinationLabel, Counter>,
    pub data_free_bytes: Gauge<u64, AtomicU64>,
    pub model: Family<ModelLabel, Gauge>,
    pub retention_studies: Counter,
    pub retention_bytes: Counter,
}

/// 1 ms to about 33 s: an instance's durable store.
fn ingest_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 50 ms to about 27 min: a stage of an analysis, or one delivery round.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("msnode");
        let m = Metrics {
            registry: Registry::default(),
            instances_received: Counter::default(),
            instances_refused: Family::default(),
            stored_bytes: Counter::default(),
            ingest_seconds: ingest_histogram(),
            commit_shared_by: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            associations_open: Gauge::default(),
            associations: Counter::default(),
            associations_rejected: Family::default(),
            jobs: Family::default(),
            job_stage_seconds: Family::new_with_constructor(stage_histogram),
            outbox_pending: Family::default(),
            delivery_failures: Family::default(),
            data_free_bytes: Gauge::default(),
            model: Family::default(),
            retention_studies: Counter::default(),
            retention_bytes: Counter::default(),
        };
        let r = &mut registry;
        r.register(
            "instances_received",
            "Instances stored, indexed and acknowledged with Success",
            m.instances_received.clone(),
        );
        r.register(
            "instances_refused",
            "C-STORE requests answered with a failure status, by reason",
            m.instances_refused.clone(),
        );
        r.register_with_unit(
            "stored",
            "Bytes of acknowledged instances",
            Unit::Bytes,
            m.stored_bytes.clone(),
        );
        r.register_with_unit(
            "ingest",
            "From an instance's last byte to its Success (file fsync, folder fsync, index commit)",
            Unit::Seconds,
            m.ingest_seconds.clone(),
        );
        r.register(
            "ingest_commit_shared_by",
            "For each acknowledged instance, how many instances shared its folder fsync and index commit (group commit across associations)",
            m.commit_shared_by.clone(),
        );
        r.register(
            "associations_open",
            "Associations open now",
            m.associations_open.clone(),
        );
        r.register(
            "associations",
            "Associations accepted",
            m.associations.clone(),
        );
        r.register(
            "associations_rejected",
            "Association requests rejected or failed before acceptance, by reason",
            m.associations_rejected.clone(),
        );
        r.register("jobs", "Jobs by state", m.jobs.clone());
        r.register_with_unit(
            "job_stage",
            "Duration of each analysis stage, and of each delivery round",
            Unit::Seconds,
            m.job_stage_seconds.clone(),
        );
        r.register(
            "outbox_pending",
            "Results waiting to be delivered, by destination",
            m.outbox_pending.clone(),
        );
        r.register(
            "delivery_failures",
            "Delivery attempts that did not end with the destination holding the object",
            m.delivery_failures.clone(),
        );
        r.register_with_unit(
            "data_free",
            "Free space of the data directory's file system",
            Unit::Bytes,
            m.data_free_bytes.clone(),
        );
        r.register(
            "model_info",
            "The model the node runs (value 1)",
            m.model.clone(),
        );
        r.register(
            "retention_studies",
            "Studies forgotten by retention ([storage] keep_days)",
            m.retention_studies.clone(),
        );
        r.register_with_unit(
            "retention_freed",
            "Bytes of instances removed by retention",
            Unit::Bytes,
            m.retention_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn refused(&self, reason: &str) {
        self.instances_refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.associations_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn stage(&self, stage: &str, seconds: f64) {
        self.job_stage_seconds
            .get_or_create(&StageLabel {
                stage: stage.into(),
            })
            .observe(seconds);
    }

    pub fn delivery_failed(&self, destination: &str) {
        self.delivery_failures
            .get_or_create(&DestinationLabel {
                destination: destination.into(),
            })
            .inc();
    }

    /// Prometheus text exposition format (version 0.0.4 / OpenMetrics text).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.instances_received.inc();
        m.stored_bytes.inc_by(1234);
        m.refused("malformed");
        m.ingest_seconds.observe(0.004);
        m.stage("infer", 2.5);
        m.data_free_bytes.set(1 << 40);
        let text = m.render();
        for line in [
            "msnode_instances_received_total 1",
            "msnode_stored_bytes_total 1234",
            "msnode_instances_refused_total{reason=\"malformed\"} 1",
            "msnode_ingest_seconds_count 1",
            "msnode_job_stage_seconds_count{stage=\"infer\"} 1",
            "msnode_data_free_bytes 1099511627776",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
