//! Re-reading the configuration on SIGHUP: which parts change while the node runs (peers,
//! destinations and retries, analysis thresholds and registration, FLAIR selection, the prior
//! policy) and which wait for the next start (everything that opened a socket, a file or a
//! session: node, network, jobs, model, logging, admin, storage).

use crate::config::Config;

/// `new` with every section that cannot change while the node runs taken from `running`, and
/// the names of those sections that `new` would have changed.
pub fn merge(running: &Config, new: Config) -> (Config, Vec<&'static str>) {
    let mut waiting = Vec::new();
    let mut keep = |name: &'static str, differs: bool| {
        if differs {
            waiting.push(name);
        }
    };
    keep("node", new.node != running.node);
    keep("network", new.network != running.network);
    keep("jobs", new.jobs != running.jobs);
    keep("model", new.model != running.model);
    keep("logging", new.logging != running.logging);
    keep("admin", new.admin != running.admin);
    keep("storage", new.storage != running.storage);
    let merged = Config {
        node: running.node.clone(),
        network: running.network.clone(),
        jobs: running.jobs.clone(),
        model: running.model.clone(),
        logging: running.logging.clone(),
        admin: running.admin.clone(),
        storage: running.storage.clone(),
        ..new
    };
    (merged, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_thresholds_change_and_the_port_waits() {
        let running = Config::default();
        let new = Config::parse(
            "[node]\nport = 11999\n[analysis]\nprobability_threshold = 0.3\n\
             [[peers]]\nae_title = \"NEWPACS\"\nhost = \"10.0.0.9\"\nport = 104\n",
        )
        .unwrap();
        let (merged, waiting) = merge(&running, new);
        assert_eq!(waiting, ["node"]);
        assert_eq!(merged.node.port, running.node.port);
        assert_eq!(merged.analysis.probability_threshold, Some(0.3));
        assert_eq!(merged.peers.len(), 1);
    }
}
