//! Query/Retrieve against real peers: Orthanc (Debian's package) as the PACS that holds the
//! prior, which msnode finds with C-FIND and fetches with C-MOVE or C-GET; and DCMTK's
//! findscu/movescu/getscu querying and retrieving from msnode.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dicom_dictionary_std::tags;

/// Orthanc with its own configuration, storage and ports, knowing msnode as a modality.
struct Orthanc {
    child: Child,
    http_port: u16,
    dir: PathBuf,
}

const ORTHANC_AE: &str = "ORTHANC";

impl Orthanc {
    fn start(dir: &Path, dicom_port: u16, node_port: u16) -> Orthanc {
        std::fs::create_dir_all(dir).unwrap();
        let http_port = free_port();
        let config = serde_json::json!({
            "Name": "msnode-test",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "DicomAet": ORTHANC_AE,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "SyncStorageArea": true,
            "Plugins": [],
            "DicomModalities": { "msnode": [NODE_AE, "127.0.0.1", node_port] },
        });
        let config_path = dir.join("orthanc.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
        let child = Command::new(tool("Orthanc"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start Orthanc (apt install orthanc)");
        let orthanc = Orthanc {
            child,
            http_port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while orthanc.get("/system").is_none() {
            assert!(
                Instant::now() < deadline,
                "Orthanc did not start:\n{}",
                orthanc.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        orthanc
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
    }

    /// GET on Orthanc's REST API, as JSON; None when it does not answer.
    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let output = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}{path}", self.http_port)])
            .output()
            .expect("curl is needed (apt install curl)");
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Every series Orthanc holds, with its main tags and instances.
    fn series(&self) -> Vec<serde_json::Value> {
        self.get("/series?expand")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node that asks ORTHANC for priors and sends its results there.
/// A node that asks Orthanc for priors. Without `single_visit` a job without a prior ends
/// `no_prior`; with it, that model reports the visit's lesion load.
fn node_with_pacs(orthanc_port: u16, extra: &str, single_visit: Option<&Path>) -> Node {
    let single_visit = single_visit.unwrap_or(Path::new(""));
    Node::start(&format!(
        r#"
[analysis]
stable_series_timeout_s = 1

[results]
destinations = ["{ORTHANC_AE}"]
max_attempts = 20
retry_delay_s = 1

[prior]
retrieve_timeout_s = 120

[model]
dir = {model:?}
single_visit_dir = {single_visit:?}
execution_provider = "cpu"
intra_threads = 2
onnxruntime_library = {ort:?}

[[peers]]
ae_title = "{ORTHANC_AE}"
host = "127.0.0.1"
port = {orthanc_port}
store_to_us = true
query_for_priors = true
{extra}
"#,
        model = shipped_model_dir(),
        ort = onnxruntime_library(),
    ))
}

fn wait_until(seconds: u64, what: &str, log: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {seconds} s\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn storescu_to(port: u16, called: &str, files: &[PathBuf]) {
    let output = run(Command::new(tool("storescu"))
        .args([
            "-aet",
            "STORESCU",
            "-aec",
            called,
            "127.0.0.1",
            &port.to_string(),
        ])
        .args(files));
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn a_prior_only_pacs_holds_is_queried_moved_and_the_results_reach_that_pacs() {
    prior_from_orthanc("", "moved");
}

#[test]
fn a_pacs_that_cannot_reach_the_node_gives_the_prior_by_c_get() {
    // Orthanc knows msnode's AE title at a port where nothing listens: a C-MOVE would fail.
    prior_from_orthanc("retrieve = \"get\"", "got");
}

/// Orthanc holds the prior only; the node fetches it (`peer_extra` configures how) and Orthanc
/// ends up with the results.
fn prior_from_orthanc(peer_extra: &str, verb: &str) {
    let work = tempfile::tempdir().unwrap();
    let orthanc_port = free_port();
    let node = node_with_pacs(orthanc_port, peer_extra, None);
    let node_port_for_orthanc = if verb == "got" { 1 } else { node.port };
    let orthanc = Orthanc::start(
        &work.path().join("orthanc"),
        orthanc_port,
        node_port_for_orthanc,
    );
    let (prior, current) = lesjak_visits(work.path());
    storescu_to(orthanc_port, ORTHANC_AE, &files_in(&prior));
    let (prior_uid, current_uid) = (
        series_instance_uid(&files_in(&prior)[0]),
        series_instance_uid(&files_in(&current)[0]),
    );
    assert!(node.indexed().is_empty(), "the node holds nothing yet");

    storescu_to(node.port, NODE_AE, &files_in(&current));
    let current_slices = files_in(&current).len();
    let log = || format!("node:\n{}\northanc:\n{}", node.log(), orthanc.log());
    wait_until(400, "the job with a prior from PACS", log, || {
        jobs(&node)
            .iter()
            .any(|j| j["current_series"] == current_uid.as_str() && j["state"] == "done")
    });

    // One job: the moved prior started none of its own.
    let jobs = jobs(&node);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let job = &jobs[0];
    assert_eq!(job["prior_series"], prior_uid.as_str(), "{job:#}");
    let query = job["prior_query"].as_str().unwrap();
    assert!(
        query.contains(ORTHANC_AE) && query.contains(&format!("{verb} 1 FLAIR series")),
        "{query}"
    );
    assert!(
        query.contains(&format!("({} instances)", files_in(&prior).len())),
        "{query}"
    );
    let detail = run(node.cli().args(["job", &job["id"].to_string(), "--json"]));
    let detail: serde_json::Value = serde_json::from_slice(&detail.stdout).unwrap();
    let states: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "queued",
            "running",
            "waiting_for_prior",
            "queued",
            "running",
            "delivering",
            "done"
        ],
        "{detail:#}"
    );
    let indexed_prior = node
        .indexed()
        .iter()
        .filter(|i| i.series_instance_uid == prior_uid)
        .count();
    assert_eq!(indexed_prior, files_in(&prior).len());

    // Orthanc holds the SEG, the SR and the overlay series, each referring to the current series.
    let series = orthanc.series();
    let by_modality = |modality: &str| -> Vec<&serde_json::Value> {
        series
            .iter()
            .filter(|s| s["MainDicomTags"]["Modality"] == modality)
            .collect()
    };
    let (seg, sr) = (by_modality("SEG"), by_modality("SR"));
    assert_eq!((seg.len(), sr.len()), (1, 1), "{series:#?}");
    for result in [seg[0], sr[0]] {
        assert_eq!(result["Instances"].as_array().unwrap().len(), 1);
    }
    let overlay: Vec<&serde_json::Value> = series
        .iter()
        .filter(|s| s["MainDicomTags"]["SeriesNumber"] == "9903")
        .collect();
    assert_eq!(overlay.len(), 1, "{series:#?}");
    assert_eq!(
        overlay[0]["Instances"].as_array().unwrap().len(),
        current_slices
    );
    let seg_instance = seg[0]["Instances"][0].as_str().unwrap();
    let tags = orthanc
        .get(&format!("/instances/{seg_instance}/tags?simplify"))
        .unwrap();
    assert_eq!(
        tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"],
        current_uid.as_str(),
        "{tags:#}"
    );
}

#[test]
fn a_patient_pacs_knows_nothing_about_ends_no_prior_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let orthanc_port = free_port();
    let node = node_with_pacs(orthanc_port, "", None);
    let orthanc = Orthanc::start(&work.path().join("orthanc"), orthanc_port, node.port);
    let (_, current) = lesjak_visits(work.path());
    storescu_to(node.port, NODE_AE, &files_in(&current));
    let log = || format!("node:\n{}\northanc:\n{}", node.log(), orthanc.log());
    wait_until(120, "the job to end", log, || {
        jobs(&node).iter().any(|j| j["state"] == "no_prior")
    });
    let job = &jobs(&node)[0];
    let reason = job["reason"].as_str().unwrap();
    assert_eq!(reason, NOTHING_AT_PACS);
    assert_eq!(job["prior_query"].as_str(), Some(reason));
}

const NOTHING_AT_PACS: &str =
    "no prior in the index; ORTHANC: no MR study of the patient dated 20100623 or earlier";

#[test]
fn with_a_single_visit_model_a_patient_pacs_knows_nothing_about_gets_a_lesion_load() {
    let work = tempfile::tempdir().unwrap();
    let orthanc_port = free_port();
    let node = node_with_pacs(orthanc_port, "", Some(&single_visit_model_dir()));
    let orthanc = Orthanc::start(&work.path().join("orthanc"), orthanc_port, node.port);
    let (_, current) = lesjak_visits(work.path());
    storescu_to(node.port, NODE_AE, &files_in(&current));
    let log = || format!("node:\n{}\northanc:\n{}", node.log(), orthanc.log());
    wait_until(300, "the lesion-load job to finish", log, || {
        jobs(&node).iter().any(|j| j["state"] == "done")
    });
    let job = &jobs(&node)[0];
    assert_eq!(job["prior_series"], serde_json::Value::Null);
    assert_eq!(job["prior_query"].as_str(), Some(NOTHING_AT_PACS));
    let why = job["prior_why"].as_str().unwrap();
    assert!(
        why.starts_with("no prior: ") && why.contains(NOTHING_AT_PACS),
        "{why}"
    );
    assert!(
        why.ends_with("the lesion load of this visit is reported"),
        "{why}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(job["summary"].as_str().unwrap()).unwrap();
    assert_eq!(summary["kind"], "lesion_load");
    assert_eq!(summary["model"], "msnode-single-visit");
    assert_eq!(summary["registration"], serde_json::Value::Null);
    assert_eq!(summary["totals"]["new"], 0);
    // The SEG, the report and one overlay image per slice reached PACS (Orthanc).
    assert_eq!(
        summary["for_pacs"].as_array().unwrap().len(),
        files_in(&current).len() + 2
    );
}

/// A response file findscu extracted, as its identifier.
fn extracted(dir: &Path) -> Vec<dicom_object::DefaultDicomObject> {
    let mut found: Vec<_> = files_in(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rsp"))
        })
        .map(|p| dicom_object::open_file(p).unwrap())
        .collect();
    found.sort_by_key(|o| o.meta().media_storage_sop_instance_uid().to_string());
    found
}

fn value(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

#[test]
fn findscu_movescu_and_getscu_query_and_retrieve_what_the_node_stores() {
    let work = tempfile::tempdir().unwrap();
    let move_port = free_port();
    let node = Node::start(&format!(
        r#"
[[peers]]
ae_title = "FINDSCU"
host = "127.0.0.1"
port = 1
store_to_us = true

[[peers]]
ae_title = "MOVESCU"
host = "127.0.0.1"
port = {move_port}
store_to_us = true

[[peers]]
ae_title = "GETSCU"
host = "127.0.0.1"
port = 1
store_to_us = true
"#
    ));
    let (prior, current) = lesjak_visits(work.path());
    for folder in [&prior, &current] {
        storescu_to(node.port, NODE_AE, &files_in(folder));
    }
    let port = node.port.to_string();

    // Study level, Study Root, a date range that keeps the first visit only.
    let found = work.path().join("found");
    std::fs::create_dir_all(&found).unwrap();
    let output = run(Command::new(tool("findscu"))
        .args(["-S", "-X", "-od"])
        .arg(&found)
        .args(["-aet", "FINDSCU", "-aec", NODE_AE, "127.0.0.1", &port])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=LESJAK01"])
        .args(["-k", "StudyDate=-20100601", "-k", "StudyInstanceUID"])
        .args([
            "-k",
            "ModalitiesInStudy",
            "-k",
            "NumberOfStudyRelatedInstances",
        ])
        .args(["-k", "PatientName"]));
    assert!(output.status.success(), "{}", text(&output));
    let studies = extracted(&found);
    assert_eq!(studies.len(), 1, "{}", text(&output));
    let prior_file = dicom_object::open_file(&files_in(&prior)[0]).unwrap();
    assert_eq!(
        value(&studies[0], tags::STUDY_INSTANCE_UID),
        value(&prior_file, tags::STUDY_INSTANCE_UID)
    );
    assert_eq!(value(&studies[0], tags::MODALITIES_IN_STUDY), "MR");
    assert_eq!(
        value(&studies[0], tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        files_in(&prior).len().to_string()
    );
    assert_eq!(
        value(&studies[0], tags::PATIENT_NAME),
        "",
        "names are not kept"
    );

    // Series level, Patient Root, a wildcard on the description.
    std::fs::remove_dir_all(&found).unwrap();
    std::fs::create_dir_all(&found).unwrap();
    let output = run(Command::new(tool("findscu"))
        .args(["-P", "-X", "-od"])
        .arg(&found)
        .args(["-aet", "FINDSCU", "-aec", NODE_AE, "127.0.0.1", &port])
        .args([
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            "PatientID=LESJAK01",
        ])
        .args(["-k", "SeriesDescription=*FLAIR", "-k", "SeriesInstanceUID"])
        .args(["-k", "StudyInstanceUID"]));
    assert!(output.status.success(), "{}", text(&output));
    let series = extracted(&found);
    assert_eq!(series.len(), 2, "{}", text(&output));

    // C-MOVE the current series to movescu's own receiver.
    let current_file = dicom_object::open_file(&files_in(&current)[0]).unwrap();
    let moved = work.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let output = run(Command::new(tool("movescu"))
        .args(["-S", "-od"])
        .arg(&moved)
        .args([
            "-aet",
            "MOVESCU",
            "-aem",
            "MOVESCU",
            "+P",
            &move_port.to_string(),
        ])
        .args(["-aec", NODE_AE, "127.0.0.1", &port])
        .args(["-k", "QueryRetrieveLevel=SERIES"])
        .arg("-k")
        .arg(format!(
            "StudyInstanceUID={}",
            value(&current_file, tags::STUDY_INSTANCE_UID)
        ))
        .arg("-k")
        .arg(format!(
            "SeriesInstanceUID={}",
            value(&current_file, tags::SERIES_INSTANCE_UID)
        )));
    assert!(output.status.success(), "{}", text(&output));
    let received = files_in(&moved);
    assert_eq!(
        received.len(),
        files_in(&current).len(),
        "{}",
        text(&output)
    );
    for file in &received {
        let original = files_in(&current)
            .into_iter()
            .find(|f| sop_instance_uid(f) == sop_instance_uid(file))
            .expect("a moved instance the node was not sent");
        assert_eq!(data_set_bytes(&original), data_set_bytes(file));
    }

    // C-GET the prior series back on getscu's own association.
    let got = work.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let output = run(Command::new(tool("getscu"))
        .args(["-S", "-od"])
        .arg(&got)
        .args(["-aet", "GETSCU", "-aec", NODE_AE, "127.0.0.1", &port])
        .args(["-k", "QueryRetrieveLevel=SERIES"])
        .arg("-k")
        .arg(format!(
            "StudyInstanceUID={}",
            value(&prior_file, tags::STUDY_INSTANCE_UID)
        ))
        .arg("-k")
        .arg(format!(
            "SeriesInstanceUID={}",
            value(&prior_file, tags::SERIES_INSTANCE_UID)
        )));
    assert!(output.status.success(), "{}", text(&output));
    let received = files_in(&got);
    assert_eq!(received.len(), files_in(&prior).len(), "{}", text(&output));
    for file in &received {
        let original = files_in(&prior)
            .into_iter()
            .find(|f| sop_instance_uid(f) == sop_instance_uid(file))
            .expect("an instance the node was not sent");
        assert_eq!(data_set_bytes(&original), data_set_bytes(file));
    }

    // A destination that is not a configured peer is refused with A801.
    let output = run(Command::new(tool("movescu"))
        .args(["-S", "-aet", "MOVESCU", "-aem", "NOBODY"])
        .args(["-aec", NODE_AE, "127.0.0.1", &port])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .arg("-k")
        .arg(format!(
            "StudyInstanceUID={}",
            value(&current_file, tags::STUDY_INSTANCE_UID)
        )));
    let said = text(&output);
    assert!(said.contains("MoveDestinationUnknown"), "{said}");
}

#[test]
fn results_wait_for_an_orthanc_that_is_down_and_arrive_once_when_it_is_back() {
    let work = tempfile::tempdir().unwrap();
    let orthanc_port = free_port();
    let node = node_with_pacs(orthanc_port, "", None);
    let (prior, current) = lesjak_visits(work.path());
    for folder in [&prior, &current] {
        storescu_to(node.port, NODE_AE, &files_in(folder));
    }
    let current_uid = series_instance_uid(&files_in(&current)[0]);
    // Orthanc is down: the analysis runs, and every delivery fails at least once.
    wait_until(
        300,
        "failed delivery attempts",
        || node.log(),
        || {
            jobs(&node)
                .iter()
                .any(|j| j["current_series"] == current_uid.as_str() && j["state"] == "delivering")
                && node.log().contains("delivery incomplete")
        },
    );
    let orthanc = Orthanc::start(&work.path().join("orthanc"), orthanc_port, node.port);
    let log = || format!("node:\n{}\northanc:\n{}", node.log(), orthanc.log());
    wait_until(120, "the deliveries after Orthanc is back", log, || {
        jobs(&node)
            .iter()
            .any(|j| j["current_series"] == current_uid.as_str() && j["state"] == "done")
    });
    let job = jobs(&node)
        .into_iter()
        .find(|j| j["current_series"] == current_uid.as_str())
        .unwrap();
    let detail = run(node.cli().args(["job", &job["id"].to_string(), "--json"]));
    let detail: serde_json::Value = serde_json::from_slice(&detail.stdout).unwrap();
    let deliveries = detail["deliveries"].as_array().unwrap();
    let expected = files_in(&current).len() + 2;
    assert_eq!(deliveries.len(), expected);
    assert!(
        deliveries
            .iter()
            .all(|d| d["state"] == "sent" && d["attempts"].as_i64().unwrap() >= 2),
        "{deliveries:#?}"
    );
    // Orthanc holds each result once: one SEG, one SR, one overlay image per slice.
    let statistics = orthanc.get("/statistics").unwrap();
    assert_eq!(statistics["CountInstances"], expected, "{statistics:#}");
    let changes = orthanc.get("/changes?limit=10000").unwrap();
    let new_instances = changes["Changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ChangeType"] == "NewInstance")
        .count();
    assert_eq!(new_instances, expected, "an instance arrived twice");
}

#[test]
fn a_pacs_that_never_answers_is_given_up_after_the_retrieve_timeout() {
    let work = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel does) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let node = Node::start(&format!(
        r#"
[analysis]
stable_series_timeout_s = 1

[prior]
retrieve_timeout_s = 2

[model]
single_visit_dir = ""

[[peers]]
ae_title = "SILENT"
host = "127.0.0.1"
port = {silent_port}
store_to_us = true
query_for_priors = true
"#
    ));
    let (_, current) = lesjak_visits(work.path());
    storescu_to(node.port, NODE_AE, &files_in(&current));
    let started = Instant::now();
    wait_until(
        60,
        "the job to give up",
        || node.log(),
        || jobs(&node).iter().any(|j| j["state"] == "no_prior"),
    );
    let job = &jobs(&node)[0];
    assert_eq!(
        job["reason"].as_str().unwrap(),
        "no prior in the index; SILENT: no prior within 2 s"
    );
    // Given up at the timeout, not at the 30 s association timeout.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
