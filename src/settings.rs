//! The configuration turned into the settings each stage takes, in one place (as ripgrep turns
//! its flags into `HiArgs`): the command line and the daemon build their stages from these, so
//! nothing outside the library decides what a configuration key means.

use std::path::PathBuf;
use std::time::Duration;

use crate::admin::AdminSettings;
use crate::analyze::AnalysisSettings;
use crate::config::{Config, Peer, TlsConfig};
use crate::infer::RuntimeSettings;
use crate::net::scu::{PeerTls, Remote};
use crate::register::RegisterOptions;
use crate::workflow::selection::SelectionRules;
use crate::workflow::{Destination, PriorSource, WorkflowSettings};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0:?} is neither a configured peer nor AE@host:port")]
    UnknownPeer(String),
}

/// What the node's stages run with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store's data directory.
    pub data_dir: PathBuf,
    /// The SQLite index.
    pub database: PathBuf,
    pub analysis: AnalysisSettings,
    /// The single-visit model's analysis (a visit without a prior), when configured.
    pub single_visit: Option<AnalysisSettings>,
    pub workflow: WorkflowSettings,
    /// Our AE title, the calling AE title of every association we open.
    pub ae_title: String,
    pub admin: AdminSettings,
    /// The data directory's free-space reserve.
    pub min_free_bytes: u64,
    max_pdu: u32,
    association_timeout: Duration,
    peers: Vec<Peer>,
    tls: TlsConfig,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let analysis = AnalysisSettings {
            model_dir: config.model.dir.clone(),
            runtime: RuntimeSettings {
                library: config.model.onnxruntime_library.clone(),
                provider: config.model.execution_provider,
                intra_threads: config.model.intra_threads,
            },
            mirror: false,
            threshold: config.analysis.probability_threshold,
            min_lesion_volume_mm3: config.analysis.min_lesion_volume_mm3.map(f64::from),
            registration: RegisterOptions {
                model: config.analysis.registration,
                ..RegisterOptions::default()
            },
        };
        // The single-visit model keeps its own card's threshold and minimum volume: `[analysis]`
        // overrides were chosen for the follow-up model.
        let single_visit = config
            .model
            .single_visit_dir
            .as_ref()
            .map(|dir| AnalysisSettings {
                model_dir: dir.clone(),
                threshold: None,
                min_lesion_volume_mm3: None,
                ..analysis.clone()
            });
        let mut settings = Settings {
            data_dir: config.node.data_dir.clone(),
            database: config.database_path(),
            workflow: WorkflowSettings {
                data_dir: config.node.data_dir.clone(),
                stable_after: config.analysis.stable_series_timeout,
                selection: SelectionRules {
                    name_patterns: config.selection.name_patterns.clone(),
                    inversion_time_ms: config.selection.inversion_time_ms,
                },
                prior: config.prior.clone(),
                prior_sources: Vec::new(),
                workers: config.jobs.workers,
                analysis: analysis.clone(),
                single_visit: single_visit.clone(),
                destinations: Vec::new(),
                max_attempts: config.results.max_attempts,
                retry_delay: config.results.retry_delay,
                keep_for: config
                    .storage
                    .keep_days
                    .map(|days| Duration::from_secs_f64(days * 86_400.0)),
            },
            analysis,
            single_visit,
            ae_title: config.node.ae_title.clone(),
            admin: AdminSettings {
                bind: config.admin.bind,
                token_file: config.admin.token_file.clone(),
                show_patient_id: config.admin.show_patient_id,
            },
            min_free_bytes: config.storage.min_free_mb.saturating_mul(1 << 20),
            max_pdu: config.network.max_pdu,
            association_timeout: config.network.association_timeout,
            peers: config.peers.clone(),
            tls: config.tls.clone(),
        };
        // `config check` makes sure every destination is a configured peer.
        settings.workflow.destinations = config
            .results
            .destinations
            .iter()
            .filter_map(|ae| {
                let remote = settings.remote(ae).ok()?;
                Some(Destination {
                    ae_title: ae.clone(),
                    remote,
                })
            })
            .collect();
        settings.workflow.prior_sources = config
            .peers
            .iter()
            .filter(|p| p.query_for_priors)
            .filter_map(|p| {
                Some(PriorSource {
                    remote: settings.remote(&p.ae_title).ok()?,
                    retrieve: p.retrieve,
                })
            })
            .collect();
        settings
    }

    /// Every configured peer (where a C-MOVE we answer may send).
    pub fn peers(&self) -> Vec<Remote> {
        self.peers
            .iter()
            .filter_map(|p| self.remote(&p.ae_title).ok())
            .collect()
    }

    /// A peer named by its AE title (from the configuration) or given as AE@host:port.
    pub fn remote(&self, peer: &str) -> Result<Remote, SettingsError> {
        let (called_ae, address, tls) = match self.peers.iter().find(|p| p.ae_title == peer) {
            Some(p) => (
                p.ae_title.clone(),
                format!("{}:{}", p.host, p.port),
                p.tls.then(|| PeerTls {
                    server_name: p.host.clone(),
                    files: self.tls.clone(),
                }),
            ),
            // A peer given on the command line speaks plain DICOM.
            None => match peer.split_once('@') {
                Some((ae, address)) if address.contains(':') => {
                    (ae.to_string(), address.to_string(), None)
                }
                _ => return Err(SettingsError::UnknownPeer(peer.to_string())),
            },
        };
        Ok(Remote {
            calling_ae: self.ae_title.clone(),
            called_ae,
            address,
            max_pdu: self.max_pdu,
            timeout: self.association_timeout,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::Model;

    #[test]
    fn stage_settings_follow_the_configuration() {
        let config = Config::parse(
            "[node]\nae_title = \"NODE_A\"\ndata_dir = \"/srv/msnode\"\n\
             [[peers]]\nae_title = \"PACS\"\nhost = \"10.0.0.5\"\nport = 104\n\
             [analysis]\nprobability_threshold = 0.4\nmin_lesion_volume_mm3 = 12.0\nregistration = \"affine\"\n\
             [model]\ndir = \"/opt/model\"\nexecution_provider = \"cpu\"\nintra_threads = 2\n",
        )
        .unwrap();
        let settings = Settings::from_config(&config);
        assert_eq!(
            settings.database,
            PathBuf::from("/srv/msnode/msnode.sqlite")
        );
        assert_eq!(settings.analysis.model_dir, PathBuf::from("/opt/model"));
        assert_eq!(settings.analysis.threshold, Some(0.4));
        assert_eq!(settings.analysis.min_lesion_volume_mm3, Some(12.0));
        assert_eq!(settings.analysis.registration.model, Model::Affine);
        // The single-visit model runs with its own card's post-processing, not the overrides.
        let single = settings.single_visit.as_ref().unwrap();
        assert_eq!(single.model_dir, PathBuf::from("models/single-visit"));
        assert_eq!(
            (single.threshold, single.min_lesion_volume_mm3),
            (None, None)
        );
        assert_eq!(single.runtime, settings.analysis.runtime);
        assert_eq!(settings.workflow.single_visit.as_ref(), Some(single));
        let default = Settings::from_config(&Config::parse("").unwrap());
        assert_eq!(default.analysis.registration.model, Model::Rigid);
        let off =
            Settings::from_config(&Config::parse("[model]\nsingle_visit_dir = \"\"\n").unwrap());
        assert!(off.single_visit.is_none() && off.workflow.single_visit.is_none());
        let problems = Config::parse("[analysis]\nregistration = \"elastic\"\n").unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.to_string().contains("must be \"rigid\" or \"affine\"")),
            "{problems:?}"
        );
        assert_eq!(settings.analysis.runtime.intra_threads, 2);
        assert_eq!(
            settings.analysis.runtime.provider,
            crate::config::ExecutionProvider::Cpu
        );

        let pacs = settings.remote("PACS").unwrap();
        assert_eq!(
            (
                pacs.calling_ae.as_str(),
                pacs.called_ae.as_str(),
                pacs.address.as_str()
            ),
            ("NODE_A", "PACS", "10.0.0.5:104")
        );
        let direct = settings.remote("OTHER@127.0.0.1:11113").unwrap();
        assert_eq!(direct.address, "127.0.0.1:11113");
        assert!(matches!(
            settings.remote("NOWHERE"),
            Err(SettingsError::UnknownPeer(_))
        ));
    }
}
