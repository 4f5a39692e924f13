//! The admin HTTP server of a running `msnode serve`: health, readiness, Prometheus metrics and
//! the status page, the bearer token off loopback, and the free-space reserve (a small tmpfs).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

#[test]
fn health_readiness_metrics_and_the_status_page_show_what_the_node_did() {
    let node = Node::start("");
    assert_eq!(
        http_get(node.admin_port, "/healthz", None),
        (200, "ok\n".into())
    );
    let (status, ready) = http_get(node.admin_port, "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    for line in [
        "ok index: takes writes",
        "ok storage: takes writes",
        "ok model: msnode-realbg ",
        "ok single_visit_model: msnode-single-visit ",
    ] {
        assert!(ready.contains(line), "{line:?} in {ready}");
    }
    assert!(ready.contains("verified (sha256 "), "{ready}");

    let files = ge_series(5)[..5].to_vec();
    let store = node.storescu("STORESCU", &files);
    assert!(store.status.success(), "{}", text(&store));
    assert!(!echo_from(&node, "STRANGER"));

    let (status, text) = http_get(node.admin_port, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(metric(&text, "msnode_instances_received_total"), 5.0);
    assert_eq!(metric(&text, "msnode_ingest_seconds_count"), 5.0);
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let stored = metric(&text, "msnode_stored_bytes_total");
    // Stored files are the received data sets behind a file meta group of our own.
    assert!(
        (stored - bytes as f64).abs() < 5.0 * 1024.0,
        "{stored} vs {bytes}"
    );
    assert_eq!(metric(&text, "msnode_associations_total"), 1.0);
    assert_eq!(metric(&text, "msnode_associations_open"), 0.0);
    assert_eq!(
        metric(
            &text,
            "msnode_associations_rejected_total{reason=\"calling_ae_title_not_recognized\"}"
        ),
        1.0
    );
    assert!(metric(&text, "msnode_data_free_bytes") > 0.0);
    // One sample per model the node runs: the follow-up and the single-visit model.
    let models: Vec<(String, f64)> = samples(&text)
        .into_iter()
        .filter(|(name, _)| name.starts_with("msnode_model_info{"))
        .collect();
    for name in ["msnode-realbg", "msnode-single-visit"] {
        let model = models
            .iter()
            .find(|(labels, _)| labels.contains(&format!("name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no model info for {name} in\n{text}"));
        assert!(model.0.contains("sha256=\""), "{model:?}");
        assert_eq!(model.1, 1.0);
    }
    assert_eq!(models.len(), 2, "{models:?}");

    let (status, page) = http_get(node.admin_port, "/", None);
    assert_eq!(status, 200, "{page}");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for part in [
        "Readiness",
        "instances 5",
        "Recent associations",
        "STORESCU",
        "STRANGER",
    ] {
        assert!(page.contains(part), "{part:?} missing in {page}");
    }
    assert!(!page.contains("<script"), "no JavaScript");
    // Never a patient's name or birth date; Patient ID only where the site allows it.
    let header = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(&files[0])
        .unwrap();
    for tag in [
        dicom_dictionary_std::tags::PATIENT_NAME,
        dicom_dictionary_std::tags::PATIENT_BIRTH_DATE,
        dicom_dictionary_std::tags::PATIENT_ID,
    ] {
        if let Some(value) = msnode::dicom::read::text(&header, tag).filter(|v| v.len() > 2) {
            assert!(!page.contains(&value), "{tag:?} {value:?} is on the page");
        }
    }
    let (status, _) = http_get(node.admin_port, "/jobs/1/previews/..%2Fmsnode.sqlite", None);
    assert_eq!(status, 404);
}

#[test]
fn off_loopback_the_admin_server_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("open.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n\n[admin]\nbind = \"0.0.0.0:{port}\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let check = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .args(["config", "check"])
        .arg(&config));
    assert!(!check.status.success());
    assert!(
        text(&check).contains("admin.token_file: required when admin.bind (0.0.0.0:"),
        "{}",
        text(&check)
    );
    let serve = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .arg("--config")
        .arg(&config)
        .arg("serve"));
    assert!(!serve.status.success(), "{}", text(&serve));
    assert!(
        text(&serve).contains("admin.token_file"),
        "{}",
        text(&serve)
    );

    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let node = Node::start_with("", &format!("token_file = {token_file:?}"));
    let (status, _) = http_get(node.admin_port, "/metrics", None);
    assert_eq!(status, 401);
    let (status, _) = http_get(node.admin_port, "/", Some("wrong"));
    assert_eq!(status, 401);
    let (status, body) = http_get(node.admin_port, "/metrics", Some("s3cret-token"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("msnode_instances_received_total 0"), "{body}");
    assert_eq!(http_get(node.admin_port, "/healthz", None).0, 200);
    let (_, page) = http_get(node.admin_port, "/", Some("s3cret-token"));
    assert!(!page.contains("s3cret-token"), "the token is never shown");
}

/// Below `[storage] min_free_mb`: an open association's C-STORE gets A700, a new association is
/// rejected (transient), readiness fails naming the storage check, and the metrics count both.
#[test]
fn below_the_free_space_reserve_stores_and_associations_are_refused_and_readiness_fails() {
    let mut node = Node::start("\n[storage]\nmin_free_mb = 8");
    node.kill();
    let _filesystem = SmallFilesystem::mount(&node.data_dir(), 16);
    node.spawn();
    let files = ge_series(5)[..2].to_vec();
    let first = node.pynetdicom_store(&files[..1], None);
    assert_eq!(first[0]["status"], 0, "{first}");
    assert_eq!(http_get(node.admin_port, "/readyz", None).0, 200);

    // An association opens while there is room; then the disk fills up before its C-STORE.
    let store = node.paused_store(&files[1], 2);
    node.wait_for_log("association accepted", 2);
    let ballast: PathBuf = node.data_dir().join("ballast");
    std::fs::write(&ballast, vec![0u8; 10 << 20]).unwrap();
    let report = report(store);
    assert_eq!(report[0]["status"], 0xA700, "{report}");
    assert!(
        report[0]["comment"]
            .as_str()
            .unwrap()
            .contains("below the reserve of 8 MiB"),
        "{report}"
    );

    assert!(!echo_from(&node, "ECHOSCU"), "rejected below the reserve");
    let (status, ready) = http_get(node.admin_port, "/readyz", None);
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains("FAILED storage: free space ")
            && ready.contains("below the reserve of 8 MiB"),
        "{ready}"
    );
    assert!(ready.contains("ok index"), "{ready}");
    let (_, text) = http_get(node.admin_port, "/metrics", None);
    assert_eq!(
        metric(
            &text,
            "msnode_associations_rejected_total{reason=\"storage_reserve\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "msnode_instances_refused_total{reason=\"storage_reserve\"}"
        ),
        1.0
    );
    assert!(
        node.log().contains("rejected: free space "),
        "the rejection is logged: {}",
        node.log()
    );

    // Space freed: the node takes instances again without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let again = node.pynetdicom_store(&files[1..2], None);
    assert_eq!(again[0]["status"], 0, "{again}");
    assert_eq!(http_get(node.admin_port, "/readyz", None).0, 200);
}

#[test]
fn the_audit_trail_records_every_association_and_cannot_be_rewritten() {
    let node = Node::start("");
    let files = ge_series(5)[..2].to_vec();
    let store = node.storescu("STORESCU", &files);
    assert!(store.status.success(), "{}", text(&store));
    assert!(!echo_from(&node, "STRANGER"));

    let output = run(node.cli().args(["audit", "--since", "1h", "--json"]));
    assert!(output.status.success(), "{}", text(&output));
    let events: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(events.iter().all(|e| e["kind"] == "association"));
    let by = |ae: &str| {
        events
            .iter()
            .find(|e| e["ae_title"] == ae)
            .unwrap_or_else(|| panic!("no event from {ae}: {events:#?}"))
    };
    // The test's own start-up probe (a TCP connection that sends nothing) is there too.
    assert_eq!(by("?")["outcome"], "failed: connection closed by peer");
    let stored = by("STORESCU");
    assert_eq!(stored["instances_stored"], 2);
    assert_eq!(stored["outcome"], "released");
    assert!(
        stored["peer_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        by("STRANGER")["outcome"]
            .as_str()
            .unwrap()
            .contains("calling AE title not recognized"),
        "{events:#?}"
    );
    assert_eq!(events.len(), 3, "{events:#?}");
    let listing = text(&run(node.cli().args(["audit"])));
    assert!(listing.contains("audit events since "), "{listing}");
    assert!(listing.contains("from STORESCU"), "{listing}");
    let future = run(node
        .cli()
        .args(["audit", "--since", "2999-01-01", "--json"]));
    assert_eq!(String::from_utf8_lossy(&future.stdout).trim(), "[]");

    for statement in [
        "UPDATE audit_events SET ae_title = 'X'",
        "DELETE FROM audit_events",
    ] {
        let attempt = run(Command::new(python())
            .arg("-c")
            .arg("import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute(sys.argv[2])")
            .arg(node.data_dir().join("msnode.sqlite"))
            .arg(statement));
        assert!(!attempt.status.success(), "{statement} was allowed");
        assert!(text(&attempt).contains("append-only"), "{}", text(&attempt));
    }
}

fn hang_up(node: &Node) {
    let output = run(Command::new("kill").args(["-HUP", &node.pid().to_string()]));
    assert!(output.status.success(), "{}", text(&output));
}

fn echo_from(node: &Node, ae: &str) -> bool {
    run(Command::new(tool("echoscu"))
        .args(["-aet", ae, "-aec", NODE_AE, "127.0.0.1"])
        .arg(node.port.to_string()))
    .status
    .success()
}

/// SIGHUP re-reads the peers without dropping an association that is open; an invalid file is
/// refused with its problems named and the running configuration stays.
#[test]
fn a_sighup_reloads_the_peers_and_an_open_association_keeps_going() {
    let node = Node::start("");
    assert!(!echo_from(&node, "NEWPEER"));
    let file = ge_series(5)[..1].to_vec();
    let store = node.paused_store(&file[0], 3);
    node.wait_for_log("association accepted", 1);

    // PYNETDICOM is replaced by NEWPEER, and the port changes (which waits for a restart).
    let original = std::fs::read_to_string(&node.config_path).unwrap();
    let changed = original
        .replace("ae_title = \"PYNETDICOM\"", "ae_title = \"NEWPEER\"")
        .replace(&format!("port = {}\n", node.port), "port = 1\n");
    assert_ne!(changed, original);
    std::fs::write(&node.config_path, &changed).unwrap();
    hang_up(&node);
    node.wait_for_log("configuration reloaded", 1);
    assert!(
        node.log()
            .contains("this section changed; it takes effect at the next start")
    );
    assert!(echo_from(&node, "NEWPEER"), "{}", node.log());

    let report = report(store);
    assert_eq!(
        report[0]["status"], 0,
        "the open association went on: {report}"
    );
    let again = node.peer_store().arg(&file[0]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("association not established"),
        "a removed peer is rejected: {}",
        text(&again)
    );

    std::fs::write(&node.config_path, "[results]\nmax_attempts = \"many\"\n").unwrap();
    hang_up(&node);
    node.wait_for_log("configuration not reloaded; the running one stays", 1);
    assert!(
        node.log().contains("results.max_attempts"),
        "{}",
        node.log()
    );
    assert!(
        echo_from(&node, "NEWPEER"),
        "the running configuration stays"
    );
    let (_, page) = http_get(node.admin_port, "/", None);
    assert!(
        page.contains("NEWPEER"),
        "the page shows the reloaded configuration"
    );
}
