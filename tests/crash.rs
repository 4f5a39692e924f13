//! Crash safety: SIGKILL the server in the middle of a transfer, restart it, and check that every
//! instance that was answered with Success is on disk and in the index, and that no half-written
//! file is visible.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigkill_mid_transfer_loses_nothing_acknowledged() {
    let mut node = Node::start("");
    let work = tempfile::tempdir().unwrap();
    // 520 KB slices: each takes long enough that the kill lands inside a transfer.
    let files = synthetic_series(&work.path().join("series"), 150, 512, 7);
    let success_log = work.path().join("acknowledged.txt");
    let sender = node
        .peer_store()
        .arg("--success-log")
        .arg(&success_log)
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let acknowledged_count = || {
        std::fs::read_to_string(&success_log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while acknowledged_count() < 40 {
        assert!(
            Instant::now() < deadline,
            "the sender made no progress:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    node.kill();
    let _ = sender.wait_with_output();
    let acknowledged: Vec<String> = std::fs::read_to_string(&success_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        acknowledged.len() >= 40 && acknowledged.len() < files.len(),
        "{}",
        acknowledged.len()
    );

    node.spawn();
    let incoming: Vec<PathBuf> = std::fs::read_dir(node.data_dir().join("incoming"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        incoming.is_empty(),
        "half-written transfers survived a restart: {incoming:?}"
    );

    let sources: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (sop_instance_uid(f), f.clone()))
        .collect();
    let indexed: BTreeMap<String, msnode::index::StoredInstance> = node
        .indexed()
        .into_iter()
        .map(|i| (i.sop_instance_uid.clone(), i))
        .collect();
    for uid in &acknowledged {
        let row = indexed
            .get(uid)
            .unwrap_or_else(|| panic!("acknowledged {uid} is not in the index"));
        let stored = node.data_dir().join(&row.file_path);
        assert_eq!(
            data_set_bytes(&stored),
            data_set_bytes(&sources[uid]),
            "{uid} is damaged"
        );
    }
    // Every file visible in the store is whole: the same bytes as its source.
    for entry in walk(&node.data_dir().join("dicom")) {
        let uid = sop_instance_uid(&entry);
        assert_eq!(
            data_set_bytes(&entry),
            data_set_bytes(&sources[&uid]),
            "{} is partial",
            entry.display()
        );
    }
    // The node takes more after the restart.
    let report = node.pynetdicom_store(&files[files.len() - 3..], None);
    assert!(
        report.as_array().unwrap().iter().all(|e| e["status"] == 0),
        "{report}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
