//! Node configuration: a TOML file, read key by key so that `msnode config check`
//! can name every wrong key or value at once instead of stopping at the first.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The whole node configuration, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub peers: Vec<Peer>,
    pub results: ResultsConfig,
    pub analysis: AnalysisConfig,
    pub selection: SelectionConfig,
    pub prior: PriorConfig,
    pub jobs: JobsConfig,
    pub model: ModelConfig,
    pub logging: LoggingConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub tls: TlsConfig,
}

/// DICOM TLS credentials (PEM files), read by `crate::net::tls`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// This node's certificate chain: the TLS listener's, and the client certificate shown to
    /// peers with `tls = true`.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// When set, a client on the TLS port must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
    /// The CAs a TLS peer's certificate must chain to when msnode connects to it.
    pub peer_ca: Option<PathBuf>,
}

/// The admin HTTP server: health, readiness, metrics and the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: std::net::SocketAddr,
    /// A file holding the bearer token every request must carry; required off loopback.
    pub token_file: Option<PathBuf>,
    /// Show Patient ID on the status page (never names or birth dates).
    pub show_patient_id: bool,
}

/// How the data directory is guarded.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Below this much free space new associations are rejected, C-STORE answers A700 and
    /// readiness fails.
    pub min_free_mb: u64,
    /// Forget a study this many days after its last activity once every job that used it is
    /// done; None keeps everything.
    pub keep_days: Option<f64>,
}

/// How FLAIR series are recognised (`crate::workflow::selection` applies the rules).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionConfig {
    /// Case-insensitive patterns (`*` matches any run) for Series Description, Protocol Name and
    /// Sequence Name.
    pub name_patterns: Vec<String>,
    /// Inversion times of FLAIR, ms: lowest and highest.
    pub inversion_time_ms: [f64; 2],
}

/// Which earlier FLAIR of the patient is the prior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorPolicy {
    /// The latest earlier study at least the minimum interval before.
    MostRecent,
    /// The earliest study: the baseline.
    Oldest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PriorConfig {
    pub policy: PriorPolicy,
    /// A prior must be at least this many days older than the current study.
    pub min_interval_days: u32,
    /// How long asking one PACS for a prior (C-FIND, then C-MOVE) may take before the job gives up.
    pub retrieve_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobsConfig {
    /// Analyses run at the same time (each holds its own model session).
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Our AE title: the called AE title every association must use.
    pub ae_title: String,
    pub bind: String,
    pub port: u16,
    /// A second listener speaking DICOM over TLS (needs `[tls] certificate` and `private_key`).
    pub tls_port: Option<u16>,
    /// Everything the node writes lives under this folder unless configured otherwise.
    pub data_dir: PathBuf,
    /// SQLite index; `<data_dir>/msnode.sqlite` when not set.
    pub database: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub max_pdu: u32,
    pub max_associations: usize,
    /// Time allowed for the association request after the TCP connection opens.
    pub association_timeout: Duration,
    /// An association that sends nothing for this long is aborted.
    pub idle_timeout: Duration,
    pub max_instance_bytes: u64,
}

/// A DICOM application entity we know, and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// May open associations to us and store instances.
    pub store_to_us: bool,
    /// We may ask it for prior studies (C-FIND, then C-MOVE or C-GET).
    pub query_for_priors: bool,
    /// How a prior found on it is fetched.
    pub retrieve: RetrieveMethod,
    /// Associations we open to it use TLS, verified against `[tls] peer_ca`.
    pub tls: bool,
}

/// How a prior is fetched from a PACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrieveMethod {
    /// C-MOVE to our own AE title: the PACS opens an association to us (it must know our address).
    Move,
    /// C-GET: the instances come back on our own association (for a PACS that cannot reach us).
    Get,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultsConfig {
    /// AE titles (of configured peers) that receive every result.
    pub destinations: Vec<String>,
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// Lesion probability threshold; the model card's default when not set.
    pub probability_threshold: Option<f32>,
    /// Lesions smaller than this are dropped; the model card's default when not set.
    pub min_lesion_volume_mm3: Option<f32>,
    /// A series is complete when no instance arrived for this long.
    pub stable_series_timeout: Duration,
    /// Degrees of freedom of the prior-to-current alignment.
    pub registration: crate::register::Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Auto,
    Cuda,
    Cpu,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub dir: PathBuf,
    /// The single-visit model, run when a job has no prior (its lesion load); None: such a job
    /// ends `no_prior`.
    pub single_visit_dir: Option<PathBuf>,
    pub execution_provider: ExecutionProvider,
    /// Path of libonnxruntime; `ORT_DYLIB_PATH` when not set.
    pub onnxruntime_library: Option<PathBuf>,
    /// 0 lets ONNX Runtime choose.
    pub intra_threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `msnode=debug`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: NodeConfig {
                ae_title: "MSNODE".into(),
                bind: "0.0.0.0".into(),
                port: 11112,
                tls_port: None,
                data_dir: PathBuf::from("msnode-data"),
                database: None,
            },
            network: NetworkConfig {
                max_pdu: 262_144,
                max_associations: 16,
                association_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(120),
                max_instance_bytes: 2048 * 1024 * 1024,
            },
            peers: Vec::new(),
            results: ResultsConfig {
                destinations: Vec::new(),
                max_attempts: 5,
                retry_delay: Duration::from_secs(60),
            },
            analysis: AnalysisConfig {
                probability_threshold: None,
                min_lesion_volume_mm3: None,
                stable_series_timeout: Duration::from_secs(60),
                registration: crate::register::Model::Rigid,
            },
            selection: SelectionConfig {
                name_patterns: crate::workflow::selection::DEFAULT_NAME_PATTERNS
                    .map(String::from)
                    .to_vec(),
                inversion_time_ms: crate::workflow::selection::DEFAULT_INVERSION_TIME_MS,
            },
            prior: PriorConfig {
                policy: PriorPolicy::MostRecent,
                min_interval_days: 30,
                retrieve_timeout: Duration::from_secs(300),
            },
            jobs: JobsConfig { workers: 1 },
            model: ModelConfig {
                dir: PathBuf::from("models/realbg"),
                single_visit_dir: Some(PathBuf::from("models/single-visit")),
                execution_provider: ExecutionProvider::Auto,
                onnxruntime_library: None,
                intra_threads: 0,
            },
            logging: LoggingConfig {
                format: LogFormat::Human,
                level: "info".into(),
            },
            admin: AdminConfig {
                bind: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                token_file: None,
                show_patient_id: false,
            },
            storage: StorageConfig {
                min_free_mb: 1024,
                keep_days: None,
            },
            tls: TlsConfig::default(),
        }
    }
}

impl Config {
    pub fn database_path(&self) -> PathBuf {
        self.node
            .database
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("msnode.sqlite"))
    }

    pub fn peer(&self, ae_title: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.ae_title == ae_title)
    }

    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parse TOML text; on failure, every problem found is returned.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            vec![Problem::new("", format!("not valid TOML: {}", e.message()))]
        })?;
        let mut problems = Vec::new();
        let config = read_config(&table, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// One wrong key or value: where it is and why it is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Reads the keys of one TOML table, remembers which were read, and reports the rest as unknown.
struct Section<'a> {
    prefix: String,
    table: Option<&'a Table>,
    seen: BTreeSet<&'static str>,
}

impl<'a> Section<'a> {
    fn new(prefix: String, table: Option<&'a Table>) -> Self {
        Section {
            prefix,
            table,
            seen: BTreeSet::new(),
        }
    }

    fn key_path(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// The value of `key` if present and of the right type; a problem otherwise.
    fn get<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        self.seen.insert(key);
        let value = self.table?.get(key)?;
        match value.clone().try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(Problem::new(
                    self.key_path(key),
                    format!("{} (found {})", e.message(), describe(value)),
                ));
                None
            }
        }
    }

    /// Like `get`, then checked by `check`, which says why a value is wrong.
    fn get_checked<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        problems: &mut Vec<Problem>,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> Option<T> {
        let value = self.get::<T>(key, problems)?;
        match check(&value) {
            Ok(()) => Some(value),
            Err(why) => {
                problems.push(Problem::new(self.key_path(key), why));
                None
            }
        }
    }

    fn finish(self, problems: &mut Vec<Problem>) {
        if let Some(table) = self.table {
            for key in table.keys() {
                if !self.seen.contains(key.as_str()) {
                    let known = self.seen.iter().copied().collect::<Vec<_>>().join(", ");
                    problems.push(Problem::new(
                        self.key_path(key),
                        format!("unknown key (known keys here: {known})"),
                    ));
                }
            }
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(x) => format!("float {x}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

const SECTIONS: [&str; 13] = [
    "node",
    "network",
    "peers",
    "results",
    "analysis",
    "selection",
    "prior",
    "jobs",
    "model",
    "logging",
    "admin",
    "storage",
    "tls",
];

fn section_table<'a>(
    root: &'a Table,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'a Table> {
    match root.get(name)? {
        Value::Table(t) => Some(t),
        other => {
            problems.push(Problem::new(
                name,
                format!("must be a table [{name}], found {}", describe(other)),
            ));
            None
        }
    }
}

fn read_config(root: &Table, problems: &mut Vec<Problem>) -> Config {
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(Problem::new(
                key.as_str(),
                format!("unknown section (known: {})", SECTIONS.join(", ")),
            ));
        }
    }
    let defaults = Config::default();
    let config = Config {
        node: read_node(root, defaults.node, problems),
        network: read_network(root, defaults.network, problems),
        peers: read_peers(root, problems),
        results: read_results(root, defaults.results, problems),
        analysis: read_analysis(root, defaults.analysis, problems),
        selection: read_selection(root, defaults.selection, problems),
        prior: read_prior(root, defaults.prior, problems),
        jobs: read_jobs(root, defaults.jobs, problems),
        model: read_model(root, defaults.model, problems),
        logging: read_logging(root, defaults.logging, problems),
        admin: read_admin(root, defaults.admin, problems),
        storage: read_storage(root, defaults.storage, problems),
        tls: read_tls(root, problems),
    };
    check_cross_references(&config, problems);
    config
}

/// AE titles are at most 16 characters of the default repertoire, no backslash, not all spaces.
pub fn check_ae_title(ae: &String) -> Result<(), String> {
    if ae.trim().is_empty() {
        return Err("an AE title must not be empty".into());
    }
    if ae.len() > 16 {
        return Err(format!("{ae:?} is longer than 16 characters"));
    }
    if !ae.chars().all(|c| c.is_ascii_graphic() || c == ' ') || ae.contains('\\') {
        return Err(format!(
            "{ae:?} may hold only printable ASCII characters and no backslash"
        ));
    }
    Ok(())
}

fn positive_secs(v: &f64) -> Result<(), String> {
    if *v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(format!("must be a positive number of seconds, found {v}"))
    }
}

fn listening_port(p: &u16) -> Result<(), String> {
    if *p == 0 {
        Err("port 0 is not a listening port".into())
    } else {
        Ok(())
    }
}

fn read_node(root: &Table, d: NodeConfig, problems: &mut Vec<Problem>) -> NodeConfig {
    let mut s = Section::new("node".into(), section_table(root, "node", problems));
    let node = NodeConfig {
        ae_title: s
            .get_checked("ae_title", problems, check_ae_title)
            .unwrap_or(d.ae_title),
        bind: s
            .get_checked("bind", problems, |b: &String| {
                b.parse::<std::net::IpAddr>()
                    .map(|_| ())
                    .map_err(|_| format!("{b:?} is not an IP address such as 0.0.0.0 or 127.0.0.1"))
            })
            .unwrap_or(d.bind),
        port: s
            .get_checked("port", problems, listening_port)
            .unwrap_or(d.port),
        tls_port: s
            .get_checked("tls_port", problems, listening_port)
            .or(d.tls_port),
        data_dir: s.get::<PathBuf>("data_dir", problems).unwrap_or(d.data_dir),
        database: s.get::<PathBuf>("database", problems).or(d.database),
    };
    s.finish(problems);
    node
}

fn read_network(root: &Table, d: NetworkConfig, problems: &mut Vec<Problem>) -> NetworkConfig {
    let mut s = Section::new("network".into(), section_table(root, "network", problems));
    let network = NetworkConfig {
        max_pdu: s
            .get_checked("max_pdu", problems, |v: &u32| {
                if (4096..=16_777_216).contains(v) {
                    Ok(())
                } else {
                    Err(format!(
                        "must be between 4096 and 16777216 bytes, found {v}"
                    ))
                }
            })
            .unwrap_or(d.max_pdu),
        max_associations: s
            .get_checked("max_associations", problems, |v: &usize| {
                if *v >= 1 {
                    Ok(())
                } else {
                    Err("must be at least 1".into())
                }
            })
            .unwrap_or(d.max_associations),
        association_timeout: s
            .get_checked("association_timeout_s", problems, positive_secs)
            .map(Duration::from_secs_f64)
            .unwrap_or(d.association_timeout),
        idle_timeout: s
            .get_checked("idle_timeout_s", problems, positive_secs)
            .map(Duration::from_secs_f64)
            .unwrap_or(d.idle_timeout),
        max_instance_bytes: s
            .get_checked("max_instance_mb", problems, |v: &f64| {
                if *v > 0.0 {
                    Ok(())
                } else {
                    Err(format!("must be positive, found {v}"))
                }
            })
            .map(|mb| (mb * 1024.0 * 1024.0) as u64)
            .unwrap_or(d.max_instance_bytes),
    };
    s.finish(problems);
    network
}

fn read_peers(root: &Table, problems: &mut Vec<Problem>) -> Vec<Peer> {
    let Some(value) = root.get("peers") else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        problems.push(Problem::new(
            "peers",
            "must be a list of [[peers]] tables".to_string(),
        ));
        return Vec::new();
    };
    let mut peers = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("peers[{i}]");
        match item {
            Value::Table(table) => peers.extend(read_peer(prefix, table, problems)),
            _ => problems.push(Problem::new(prefix, "must be a table".to_string())),
        }
    }
    peers
}

fn parse_retrieve_method(v: &str) -> Result<RetrieveMethod, String> {
    match v {
        "move" => Ok(RetrieveMethod::Move),
        "get" => Ok(RetrieveMethod::Get),
        other => Err(format!("must be \"move\" or \"get\", found {other:?}")),
    }
}

/// One `[[peers]]` table; None when a required key is missing or wrong (the problem is named).
fn read_peer(prefix: String, table: &Table, problems: &mut Vec<Problem>) -> Option<Peer> {
    let mut s = Section::new(prefix.clone(), Some(table));
    let ae_title = s.get_checked("ae_title", problems, check_ae_title);
    let host = s.get_checked("host", problems, |h: &String| {
        if h.trim().is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(())
        }
    });
    let port = s.get_checked("port", problems, |p: &u16| {
        if *p == 0 {
            Err("port 0 is not valid".into())
        } else {
            Ok(())
        }
    });
    let store_to_us = s.get::<bool>("store_to_us", problems).unwrap_or(false);
    let query_for_priors = s.get::<bool>("query_for_priors", problems).unwrap_or(false);
    let retrieve = s
        .get_checked("retrieve", problems, |v: &String| {
            parse_retrieve_method(v).map(|_| ())
        })
        .and_then(|v| parse_retrieve_method(&v).ok())
        .unwrap_or(RetrieveMethod::Move);
    let tls = s.get::<bool>("tls", problems).unwrap_or(false);
    for (key, present) in [
        ("ae_title", ae_title.is_some()),
        ("host", host.is_some()),
        ("port", port.is_some()),
    ] {
        if !present && !table.contains_key(key) {
            problems.push(Problem::new(format!("{prefix}.{key}"), "is required"));
        }
    }
    if query_for_priors && !store_to_us && retrieve == RetrieveMethod::Move {
        problems.push(Problem::new(
            format!("{prefix}.query_for_priors"),
            "needs store_to_us = true with retrieve = \"move\": the prior it moves to us arrives in a C-STORE association from that peer",
        ));
    }
    s.finish(problems);
    Some(Peer {
        ae_title: ae_title?,
        host: host?,
        port: port?,
        store_to_us,
        query_for_priors,
        retrieve,
        tls,
    })
}

fn read_results(root: &Table, d: ResultsConfig, problems: &mut Vec<Problem>) -> ResultsConfig {
    let mut s = Section::new("results".into(), section_table(root, "results", problems));
    let results = ResultsConfig {
        destinations: s.get("destinations", problems).unwrap_or(d.destinations),
        max_attempts: s
            .get_checked("max_attempts", problems, |v: &u32| {
                if *v >= 1 {
                    Ok(())
                } else {
                    Err("must be at least 1".into())
                }
            })
            .unwrap_or(d.max_attempts),
        retry_delay: s
            .get_checked("retry_delay_s", problems, positive_secs)
            .map(Duration::from_secs_f64)
            .unwrap_or(d.retry_delay),
    };
    s.finish(problems);
    results
}

fn read_analysis(root: &Table, d: AnalysisConfig, problems: &mut Vec<Problem>) -> AnalysisConfig {
    let mut s = Section::new("analysis".into(), section_table(root, "analysis", problems));
    let parse_model = |v: &str| match v {
        "rigid" => Ok(crate::register::Model::Rigid),
        "affine" => Ok(crate::register::Model::Affine),
        other => Err(format!("must be \"rigid\" or \"affine\", found {other:?}")),
    };
    let analysis = AnalysisConfig {
        probability_threshold: s
            .get_checked("probability_threshold", problems, |v: &f32| {
                if *v > 0.0 && *v < 1.0 {
                    Ok(())
                } else {
                    Err(format!("must lie strictly between 0 and 1, found {v}"))
                }
            })
            .or(d.probability_threshold),
        min_lesion_volume_mm3: s
            .get_checked("min_lesion_volume_mm3", problems, |v: &f32| {
                if *v >= 0.0 && v.is_finite() {
                    Ok(())
                } else {
                    Err(format!("must be zero or more, found {v}"))
                }
            })
            .or(d.min_lesion_volume_mm3),
        stable_series_timeout: s
            .get_checked("stable_series_timeout_s", problems, positive_secs)
            .map(Duration::from_secs_f64)
            .unwrap_or(d.stable_series_timeout),
        registration: s
            .get_checked("registration", problems, |v: &String| {
                parse_model(v).map(|_| ())
            })
            .and_then(|v| parse_model(&v).ok())
            .unwrap_or(d.registration),
    };
    s.finish(problems);
    analysis
}

fn read_selection(
    root: &Table,
    d: SelectionConfig,
    problems: &mut Vec<Problem>,
) -> SelectionConfig {
    let mut s = Section::new(
        "selection".into(),
        section_table(root, "selection", problems),
    );
    let selection = SelectionConfig {
        name_patterns: s
            .get_checked("name_patterns", problems, |v: &Vec<String>| {
                if v.iter().any(|p| p.trim_matches('*').is_empty()) {
                    Err("a pattern must hold more than '*'".into())
                } else {
                    Ok(())
                }
            })
            .unwrap_or(d.name_patterns),
        inversion_time_ms: s
            .get_checked("inversion_time_ms", problems, |v: &[f64; 2]| {
                if v[0] > 0.0 && v[0] < v[1] {
                    Ok(())
                } else {
                    Err(format!(
                        "must be [lowest, highest] with 0 < lowest < highest, found {v:?}"
                    ))
                }
            })
            .unwrap_or(d.inversion_time_ms),
    };
    s.finish(problems);
    selection
}

fn read_prior(root: &Table, d: PriorConfig, problems: &mut Vec<Problem>) -> PriorConfig {
    let mut s = Section::new("prior".into(), section_table(root, "prior", problems));
    let parse = |v: &str| match v {
        "most_recent" => Ok(PriorPolicy::MostRecent),
        "oldest" | "baseline" => Ok(PriorPolicy::Oldest),
        other => Err(format!(
            "must be \"most_recent\", \"oldest\" or \"baseline\", found {other:?}"
        )),
    };
    let prior = PriorConfig {
        policy: s
            .get_checked("policy", problems, |v: &String| parse(v).map(|_| ()))
            .and_then(|v| parse(&v).ok())
            .unwrap_or(d.policy),
        min_interval_days: s
            .get::<u32>("min_interval_days", problems)
            .unwrap_or(d.min_interval_days),
        retrieve_timeout: s
            .get_checked("retrieve_timeout_s", problems, |v: &u64| {
                if *v == 0 {
                    Err("must be at least 1".into())
                } else {
                    Ok(())
                }
            })
            .map(Duration::from_secs)
            .unwrap_or(d.retrieve_timeout),
    };
    s.finish(problems);
    prior
}

fn read_jobs(root: &Table, d: JobsConfig, problems: &mut Vec<Problem>) -> JobsConfig {
    let mut s = Section::new("jobs".into(), section_table(root, "jobs", problems));
    let jobs = JobsConfig {
        workers: s
            .get_checked("workers", problems, |v: &usize| {
                if (1..=64).contains(v) {
                    Ok(())
                } else {
                    Err(format!("must be between 1 and 64, found {v}"))
                }
            })
            .unwrap_or(d.workers),
    };
    s.finish(problems);
    jobs
}

fn read_admin(root: &Table, d: AdminConfig, problems: &mut Vec<Problem>) -> AdminConfig {
    let mut s = Section::new("admin".into(), section_table(root, "admin", problems));
    let admin = AdminConfig {
        bind: s
            .get_checked("bind", problems, |b: &String| {
                b.parse::<std::net::SocketAddr>()
                    .map(|_| ())
                    .map_err(|_| format!("{b:?} is not an address and port such as 127.0.0.1:8080"))
            })
            .and_then(|b: String| b.parse().ok())
            .unwrap_or(d.bind),
        token_file: s.get::<PathBuf>("token_file", problems).or(d.token_file),
        show_patient_id: s
            .get("show_patient_id", problems)
            .unwrap_or(d.show_patient_id),
    };
    s.finish(problems);
    if !admin.bind.ip().is_loopback() && admin.token_file.is_none() {
        problems.push(Problem::new(
            "admin.token_file",
            format!(
                "required when admin.bind ({}) is not a loopback address: the status page and metrics would be open to the network",
                admin.bind
            ),
        ));
    }
    admin
}

fn read_storage(root: &Table, d: StorageConfig, problems: &mut Vec<Problem>) -> StorageConfig {
    let mut s = Section::new("storage".into(), section_table(root, "storage", problems));
    let storage = StorageConfig {
        min_free_mb: s.get("min_free_mb", problems).unwrap_or(d.min_free_mb),
        keep_days: s
            .get_checked("keep_days", problems, |v: &f64| {
                // Shorter than a series takes to be judged would forget studies not yet analysed.
                if v.is_finite() && *v >= 0.0001 {
                    Ok(())
                } else {
                    Err(format!(
                        "must be a number of days of at least 0.0001 (8.6 s), found {v}"
                    ))
                }
            })
            .or(d.keep_days),
    };
    s.finish(problems);
    storage
}

fn read_tls(root: &Table, problems: &mut Vec<Problem>) -> TlsConfig {
    let mut s = Section::new("tls".into(), section_table(root, "tls", problems));
    let tls = TlsConfig {
        certificate: s.get("certificate", problems),
        private_key: s.get("private_key", problems),
        client_ca: s.get("client_ca", problems),
        peer_ca: s.get("peer_ca", problems),
    };
    s.finish(problems);
    tls
}

fn read_model(root: &Table, d: ModelConfig, problems: &mut Vec<Problem>) -> ModelConfig {
    let mut s = Section::new("model".into(), section_table(root, "model", problems));
    let model = ModelConfig {
        dir: s.get::<PathBuf>("dir", problems).unwrap_or(d.dir),
        // An empty path switches the single-visit analysis off.
        single_visit_dir: match s.get::<PathBuf>("single_visit_dir", problems) {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir),
            None => d.single_visit_dir,
        },
        execution_provider: s
            .get_checked("execution_provider", problems, |v: &String| {
                parse_execution_provider(v).map(|_| ())
            })
            .and_then(|v| parse_execution_provider(&v).ok())
            .unwrap_or(d.execution_provider),
        onnxruntime_library: s
            .get::<PathBuf>("onnxruntime_library", problems)
            .or(d.onnxruntime_library),
        intra_threads: s
            .get::<usize>("intra_threads", problems)
            .unwrap_or(d.intra_threads),
    };
    s.finish(problems);
    model
}

fn parse_execution_provider(v: &str) -> Result<ExecutionProvider, String> {
    match v {
        "auto" => Ok(ExecutionProvider::Auto),
        "cuda" => Ok(ExecutionProvider::Cuda),
        "cpu" => Ok(ExecutionProvider::Cpu),
        other => Err(format!(
            "must be \"auto\", \"cuda\" or \"cpu\", found {other:?}"
        )),
    }
}

fn read_logging(root: &Table, d: LoggingConfig, problems: &mut Vec<Problem>) -> LoggingConfig {
    let mut s = Section::new("logging".into(), section_table(root, "logging", problems));
    let logging = LoggingConfig {
        format: s
            .get_checked("format", problems, |v: &String| match v.as_str() {
                "human" | "json" => Ok(()),
                other => Err(format!("must be \"human\" or \"json\", found {other:?}")),
            })
            .map(|v| {
                if v == "json" {
                    LogFormat::Json
                } else {
                    LogFormat::Human
                }
            })
            .unwrap_or(d.format),
        level: s
            .get_checked("level", problems, |v: &String| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| ())
                    .map_err(|e| {
                        format!("not a log filter ({e}); try \"info\" or \"msnode=debug\"")
                    })
            })
            .unwrap_or(d.level),
    };
    s.finish(problems);
    logging
}

fn check_cross_references(config: &Config, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (i, peer) in config.peers.iter().enumerate() {
        if !seen.insert(peer.ae_title.as_str()) {
            problems.push(Problem::new(
                format!("peers[{i}].ae_title"),
                format!("{:?} is configured twice", peer.ae_title),
            ));
        }
        if peer.ae_title == config.node.ae_title {
            problems.push(Problem::new(
                format!("peers[{i}].ae_title"),
                format!("{:?} is this node's own AE title", peer.ae_title),
            ));
        }
    }
    check_tls_references(config, problems);
    for (i, dest) in config.results.destinations.iter().enumerate() {
        if config.peer(dest).is_none() {
            problems.push(Problem::new(
                format!("results.destinations[{i}]"),
                format!("{dest:?} is not a configured peer (add a [[peers]] entry for it)"),
            ));
        }
    }
}

/// Every TLS key must be used and every TLS use must have its files named; whether the files
/// hold what they should is `crate::net::tls`'s check.
fn check_tls_references(config: &Config, problems: &mut Vec<Problem>) {
    let tls = &config.tls;
    let tls_peers = config.peers.iter().any(|p| p.tls);
    if tls.certificate.is_some() != tls.private_key.is_some() {
        let missing = if tls.certificate.is_some() {
            "tls.private_key"
        } else {
            "tls.certificate"
        };
        problems.push(Problem::new(
            missing,
            "is required with the other half of the key pair",
        ));
    }
    if let Some(port) = config.node.tls_port {
        if port == config.node.port {
            problems.push(Problem::new(
                "node.tls_port",
                format!("{port} is also node.port"),
            ));
        }
        if tls.certificate.is_none() && tls.private_key.is_none() {
            problems.push(Problem::new(
                "tls.certificate",
                "is required with node.tls_port (and tls.private_key)",
            ));
        }
    } else if tls.client_ca.is_some() {
        problems.push(Problem::new(
            "tls.client_ca",
            "does nothing without node.tls_port",
        ));
    }
    match (tls_peers, tls.peer_ca.is_some()) {
        (true, false) => problems.push(Problem::new(
            "tls.peer_ca",
            "is required when a peer has tls = true: its certificate must be verified",
        )),
        (false, true) => problems.push(Problem::new(
            "tls.peer_ca",
            "does nothing: no peer has tls = true",
        )),
        _ => {}
    }
    if !tls_peers && config.node.tls_port.is_none() && tls.certificate.is_some() {
        problems.push(Problem::new(
            "tls.certificate",
            "does nothing without node.tls_port or a peer with tls = true",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../config/msnode.example.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.node.ae_title, "MSNODE");
        assert!(config.peers.iter().any(|p| p.store_to_us));
    }

    #[test]
    fn every_problem_is_named() {
        let text = r#"
[node]
ae_title = "THIS_TITLE_IS_FAR_TOO_LONG"
port = 70000
colour = "blue"

[network]
idle_timeout_s = -3

[[peers]]
ae_title = "PACS"
host = "pacs.example"

[results]
destinations = ["NOWHERE"]

[model]
execution_provider = "gpu"

[extra]
"#;
        let problems = Config::parse(text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "node.ae_title",
            "node.port",
            "node.colour",
            "network.idle_timeout_s",
            "peers[0].port",
            "results.destinations[0]",
            "model.execution_provider",
            "extra",
        ] {
            assert!(
                keys.contains(&expected),
                "{expected} not reported in {problems:?}"
            );
        }
        assert_eq!(problems.len(), 8, "{problems:#?}");
        let gpu = problems
            .iter()
            .find(|p| p.key == "model.execution_provider")
            .unwrap();
        assert!(gpu.message.contains("\"gpu\""), "{}", gpu.message);
    }

    #[test]
    fn tls_keys_are_required_where_used_and_refused_where_they_do_nothing() {
        let keys = |text: &str| -> Vec<String> {
            Config::parse(text)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.key)
                .collect()
        };
        let peer = "[[peers]]\nae_title = \"PACS\"\nhost = \"pacs\"\nport = 104\ntls = true\n";
        assert_eq!(keys(peer), ["tls.peer_ca"]);
        assert_eq!(keys("[node]\ntls_port = 2762\n"), ["tls.certificate"]);
        assert_eq!(
            keys(
                "[node]\nport = 2762\ntls_port = 2762\n[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\n"
            ),
            ["node.tls_port"]
        );
        assert_eq!(
            keys("[tls]\ncertificate = \"c\"\n"),
            ["tls.private_key", "tls.certificate"]
        );
        assert_eq!(
            keys("[tls]\nclient_ca = \"ca\"\npeer_ca = \"ca\"\n"),
            ["tls.client_ca", "tls.peer_ca"]
        );
        let ok = Config::parse(&format!(
            "[node]\ntls_port = 2762\n[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\nclient_ca = \"ca\"\npeer_ca = \"ca\"\n{peer}"
        ))
        .unwrap();
        assert_eq!(ok.node.tls_port, Some(2762));
        assert!(ok.peers[0].tls);
        assert_eq!(ok.tls.client_ca, Some(PathBuf::from("ca")));
    }

    #[test]
    fn duplicate_peers_are_refused() {
        let text = r#"
[[peers]]
ae_title = "A"
host = "127.0.0.1"
port = 104
[[peers]]
ae_title = "A"
host = "127.0.0.1"
port = 105
"#;
        let problems = Config::parse(text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "peers[1].ae_title");
    }
}
