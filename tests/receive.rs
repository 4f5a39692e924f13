//! The receiving half of the node against real peers: DCMTK (echoscu, storescu, storescp, dcmcjpeg,
//! dcmcrle, dcmcjpls, dcmconv) and pynetdicom, over TCP to the running binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use msnode::dicom::transfer_syntax::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE};

fn pydicom_test_file(name: &str) -> PathBuf {
    let path = site_packages().join("pydicom/data/test_files").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make setup`",
        path.display()
    );
    path
}

/// Assert that every file was stored once, with the data set byte for byte as sent.
fn assert_stored_as_sent(node: &Node, files: &[PathBuf]) {
    let indexed = node.indexed();
    let by_uid: BTreeMap<&str, &msnode::index::StoredInstance> = indexed
        .iter()
        .map(|i| (i.sop_instance_uid.as_str(), i))
        .collect();
    assert_eq!(by_uid.len(), indexed.len(), "an instance is indexed twice");
    for file in files {
        let uid = sop_instance_uid(file);
        let row = by_uid
            .get(uid.as_str())
            .unwrap_or_else(|| panic!("{} ({uid}) is not indexed", file.display()));
        let stored = node.data_dir().join(&row.file_path);
        let (stored_bytes, sent_bytes) = (data_set_bytes(&stored), data_set_bytes(file));
        let first_difference = stored_bytes
            .iter()
            .zip(&sent_bytes)
            .position(|(a, b)| a != b);
        assert!(
            stored_bytes == sent_bytes,
            "{} is not stored byte for byte: {} bytes stored, {} sent, first difference at {first_difference:?}",
            file.display(),
            stored_bytes.len(),
            sent_bytes.len()
        );
        assert_eq!(
            row.file_size as u64,
            std::fs::metadata(&stored).unwrap().len()
        );
    }
}

#[test]
fn dcmtk_echo_and_store_keep_every_byte_and_index_each_instance_once() {
    let node = Node::start("");
    let echo = run(Command::new(tool("echoscu")).env("TCP_NODELAY", "1").args([
        "-aec",
        NODE_AE,
        "127.0.0.1",
        &node.port.to_string(),
    ]));
    assert!(echo.status.success(), "echoscu failed:\n{}", text(&echo));

    let files = ge_series(4);
    assert_eq!(files.len(), 150);
    let store = node.storescu("STORESCU", &files);
    assert!(store.status.success(), "storescu failed:\n{}", text(&store));
    assert_eq!(node.indexed().len(), 150);
    assert_stored_as_sent(&node, &files);

    // Sending the same instances again replaces them and creates no duplicate.
    let again = node.storescu("STORESCU", &files[..20]);
    assert!(again.status.success(), "{}", text(&again));
    let indexed = node.indexed();
    assert_eq!(indexed.len(), 150);
    assert!(indexed.iter().all(|i| i.calling_ae == "STORESCU"));
    assert_stored_as_sent(&node, &files);

    let status = run(node.cli().arg("status"));
    let status_text = text(&status);
    assert!(status.status.success(), "{status_text}");
    assert!(status_text.contains("instances 150"), "{status_text}");
    assert!(status_text.contains("released"), "{status_text}");
}

#[test]
fn every_accepted_transfer_syntax_is_stored_as_received() {
    let node = Node::start("");
    let work = tempfile::tempdir().unwrap();
    let source = ge_series(5)[0].clone();
    let mut files = vec![source.clone()];
    // DCMTK recompresses a real GE slice into each syntax it can write.
    for (name, program, args) in [
        ("jpeg_lossless_sv1.dcm", "dcmcjpeg", vec!["+e1"]),
        ("jpeg_lossless.dcm", "dcmcjpeg", vec!["+el"]),
        ("rle.dcm", "dcmcrle", vec![]),
        ("jpegls_lossless.dcm", "dcmcjpls", vec![]),
        ("deflated.dcm", "dcmconv", vec!["+td"]),
        ("implicit.dcm", "dcmconv", vec!["+ti"]),
    ] {
        let out = work.path().join(name);
        let output = run(Command::new(tool(program))
            .args(&args)
            .arg(&source)
            .arg(&out));
        assert!(
            output.status.success(),
            "{program} failed: {}",
            text(&output)
        );
        // Each variant is its own instance.
        let output = run(Command::new(tool("dcmodify"))
            .args(["-nb", "-gin"])
            .arg(&out));
        assert!(
            output.status.success(),
            "dcmodify failed: {}",
            text(&output)
        );
        files.push(out);
    }
    // Real files of the remaining syntaxes, shipped with pydicom.
    // Near-lossless JPEG-LS needs unsigned pixels, which the GE data is not.
    let unsigned = synthetic_series(&work.path().join("synthetic"), 1, 256, 3).remove(0);
    let near_lossless = work.path().join("jpegls_near_lossless.dcm");
    let output = run(Command::new(tool("dcmcjpls"))
        .arg("+en")
        .arg(&unsigned)
        .arg(&near_lossless));
    assert!(
        output.status.success(),
        "dcmcjpls +en failed: {}",
        text(&output)
    );
    files.push(near_lossless);
    for name in [
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_jp2klossless.dcm",
        "JPEG2000.dcm",
    ] {
        files.push(pydicom_test_file(name));
    }
    let expected: BTreeSet<&str> = msnode::net::syntaxes::ACCEPTED_TRANSFER_SYNTAXES
        .into_iter()
        .collect();
    let sent: BTreeSet<String> = files
        .iter()
        .map(|f| msnode::net::scu::inspect(f).unwrap().transfer_syntax_uid)
        .collect();
    assert_eq!(
        sent.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        expected,
        "the test must cover every accepted transfer syntax"
    );

    let report = node.pynetdicom_store(&files, None);
    for entry in report.as_array().unwrap() {
        assert_eq!(entry["status"], 0, "{entry}");
    }
    assert_stored_as_sent(&node, &files);
    let indexed = node.indexed();
    let stored_syntaxes: BTreeSet<&str> = indexed
        .iter()
        .map(|i| i.transfer_syntax_uid.as_str())
        .collect();
    assert_eq!(stored_syntaxes, expected);
}

#[test]
fn unknown_calling_and_wrong_called_ae_titles_are_rejected() {
    let node = Node::start("");
    let port = node.port.to_string();
    // The start-up probe connection is the first row.
    for (n, (calling, called, reason)) in [
        ("STRANGER", NODE_AE, "calling AE title not recognized"),
        ("QUERY_ONLY", NODE_AE, "calling AE title not recognized"),
        ("ECHOSCU", "SOMEONE_ELSE", "called AE title not recognized"),
    ]
    .into_iter()
    .enumerate()
    {
        let output = run(Command::new(tool("echoscu")).args([
            "-aet",
            calling,
            "-aec",
            called,
            "127.0.0.1",
            &port,
        ]));
        assert!(
            !output.status.success(),
            "{calling} -> {called} was accepted"
        );
        assert!(
            text(&output).contains("Association Rejected"),
            "{}",
            text(&output)
        );
        let audit = node.ended_associations(n + 2);
        assert_eq!(audit[0].calling_ae, calling);
        assert_eq!(audit[0].outcome, format!("rejected: {reason}"));
    }
    let ok = run(Command::new(tool("echoscu")).args([
        "-aet",
        "ECHOSCU",
        "-aec",
        NODE_AE,
        "127.0.0.1",
        &port,
    ]));
    assert!(ok.status.success(), "{}", text(&ok));
}

/// A copy of `source` whose data set is cut short in the middle of its header.
/// The DIMSE status of each C-STORE in a `dicom_peer.py` report, in sending order.
fn store_statuses(report: &serde_json::Value) -> Vec<i64> {
    report
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_i64().unwrap())
        .collect()
}

fn truncated_copy(source: &PathBuf, out: &PathBuf) {
    let bytes = std::fs::read(source).unwrap();
    let group_length = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    let start = 144 + group_length;
    let mut broken = bytes[..start + 301].to_vec();
    // An element header announcing far more bytes than follow.
    broken.extend_from_slice(&[0x08, 0x00, 0x3e, 0x10, b'L', b'O', 0xff, 0x7f]);
    std::fs::write(out, broken).unwrap();
}

#[test]
fn a_malformed_instance_is_refused_and_the_association_goes_on() {
    let node = Node::start("");
    let work = tempfile::tempdir().unwrap();
    let series = ge_series(6);
    let bad = work.path().join("bad.dcm");
    truncated_copy(&series[1], &bad);
    let files = vec![series[0].clone(), bad.clone(), series[2].clone()];
    let report = node.pynetdicom_store(&files, None);
    let statuses = store_statuses(&report);
    assert_eq!(statuses, vec![0, 0xC000, 0], "{report}");
    let comment = report[1]["comment"].as_str().unwrap();
    assert!(comment.starts_with("malformed data set: "), "{report}");
    let indexed = node.indexed();
    assert_eq!(indexed.len(), 2);
    assert_stored_as_sent(&node, &[series[0].clone(), series[2].clone()]);
    let audit = node.ended_associations(2);
    assert_eq!(
        (audit[0].instances_stored, audit[0].instances_refused),
        (2, 1)
    );
    assert!(
        node.log().contains("instance refused"),
        "the refusal is not logged"
    );
    // Nothing of the refused instance is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(node.data_dir().join("incoming"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn instances_too_big_to_hold_in_memory_stream_to_disk_and_are_checked_all_the_same() {
    // 2560 x 2560 x 16 bit = 13 MB: past the 8 MiB that msnode holds in memory per instance.
    let node = Node::start("");
    let work = tempfile::tempdir().unwrap();
    let series = synthetic_series(&work.path().join("big"), 2, 2560, 7);
    assert!(std::fs::metadata(&series[0]).unwrap().len() > 9 << 20);
    // Cut inside the pixel data, far past the first 8 MiB: only the spilled file shows the damage.
    let cut = work.path().join("cut.dcm");
    let bytes = std::fs::read(&series[1]).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let report = node.pynetdicom_store(&[series[0].clone(), cut], None);
    let statuses = store_statuses(&report);
    assert_eq!(statuses, vec![0, 0xC000], "{report}");
    assert!(
        report[1]["comment"]
            .as_str()
            .unwrap()
            .starts_with("malformed data set: "),
        "{report}"
    );
    assert_eq!(node.indexed().len(), 1);
    assert_stored_as_sent(&node, &series[..1]);
    let leftovers: Vec<_> = std::fs::read_dir(node.data_dir().join("incoming"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_instance_over_the_size_limit_is_refused_while_smaller_ones_are_stored() {
    // 0.1 MiB: the 215 KB Siemens mosaic is too big, the 25 KB GE slices are not.
    let node = Node::start("max_instance_mb = 0.1");
    let big = shared_data().join("dicom/dcm_qa_nih/In/20180918Si/mr_0003");
    let mut big_files: Vec<PathBuf> = std::fs::read_dir(&big)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    big_files.sort();
    let small = ge_series(7);
    let files = vec![small[0].clone(), big_files[0].clone(), small[1].clone()];
    let report = node.pynetdicom_store(&files, None);
    let statuses = store_statuses(&report);
    assert_eq!(statuses, vec![0, 0xA700, 0], "{report}");
    assert!(
        report[1]["comment"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{report}"
    );
    assert_eq!(node.indexed().len(), 2);
}

#[test]
fn ten_concurrent_associations_all_succeed() {
    let node = Node::start("max_associations = 16");
    let files: Vec<PathBuf> = (4..=7).flat_map(ge_series).collect();
    let chunks: Vec<Vec<PathBuf>> = files.chunks(60).map(|c| c.to_vec()).collect();
    assert_eq!(chunks.len(), 10);
    let children: Vec<_> = chunks
        .iter()
        .map(|chunk| {
            Command::new(tool("storescu"))
                .env("TCP_NODELAY", "1")
                .args([
                    "-aet",
                    "STORESCU",
                    "-aec",
                    NODE_AE,
                    "127.0.0.1",
                    &node.port.to_string(),
                ])
                .args(chunk)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    assert_eq!(node.indexed().len(), 600);
    assert_stored_as_sent(&node, &files);
    // Ten associations plus the start-up probe connection.
    let audit = node.ended_associations(11);
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.outcome == "released" && a.instances_stored == 60)
            .count(),
        10,
        "{audit:#?}\n{}",
        node.log()
    );
    // The ten associations overlapped in time.
    let mut overlap = 0;
    for a in &audit {
        for b in &audit {
            if a.id < b.id && b.started_at < a.ended_at.clone().unwrap() {
                overlap += 1;
            }
        }
    }
    assert!(overlap > 0, "the associations ran one after another");
}

#[test]
fn msnode_send_delivers_to_dcmtk_storescp() {
    let node = Node::start("");
    let inbox = tempfile::tempdir().unwrap();
    let port = free_port();
    // +B: storescp writes the data set bit-preserving, so bytes can be compared.
    let mut storescp = Command::new(tool("storescp"))
        .env("TCP_NODELAY", "1")
        .args(["-aet", "STORESCP", "+B", "-od"])
        .arg(inbox.path())
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let echo = run(node
        .cli()
        .args(["echo", &format!("STORESCP@127.0.0.1:{port}")]));
    assert!(echo.status.success(), "{}", text(&echo));
    assert!(text(&echo).contains("status 0x0000"), "{}", text(&echo));
    let folder = shared_data().join("dicom/dcm_qa_nih/In/20180918GE/mr_0005");
    let output = run(node
        .cli()
        .arg("send")
        .arg(format!("STORESCP@127.0.0.1:{port}"))
        .arg(&folder));
    let _ = storescp.kill();
    let _ = storescp.wait();
    // The folder also holds a README: it is skipped, not counted as a failed instance.
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("sent 150 of 150")
            && report.contains("0 failed; 1 file(s) skipped, not DICOM"),
        "{report}"
    );
    let received: Vec<PathBuf> = std::fs::read_dir(inbox.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(received.len(), 150);
    let sent: BTreeMap<String, PathBuf> = ge_series(5)
        .into_iter()
        .map(|f| (sop_instance_uid(&f), f))
        .collect();
    for file in received {
        let original = &sent[&sop_instance_uid(&file)];
        assert_eq!(
            data_set_bytes(&file),
            data_set_bytes(original),
            "{}",
            file.display()
        );
    }
}

#[test]
fn msnode_echo_fails_clearly_when_the_peer_is_down() {
    let node = Node::start("");
    let closed = free_port();
    let down = run(node
        .cli()
        .args(["echo", &format!("PACS@127.0.0.1:{closed}")]));
    assert!(!down.status.success());
    assert!(
        text(&down).contains("cannot associate with PACS at 127.0.0.1"),
        "{}",
        text(&down)
    );
    let unknown = run(node.cli().args(["echo", "NOT_CONFIGURED"]));
    assert!(
        text(&unknown).contains("neither a configured peer nor AE@host:port"),
        "{}",
        text(&unknown)
    );
}

#[test]
fn a_silent_association_is_aborted_after_the_idle_timeout() {
    let node = Node::start("idle_timeout_s = 1\nassociation_timeout_s = 1");
    let output = run(Command::new(python())
        .arg(repo_root().join("tests/tools/dicom_peer.py"))
        .args([
            "hold",
            "127.0.0.1",
            &node.port.to_string(),
            "PYNETDICOM",
            NODE_AE,
            "3",
        ]));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(&output)));
    assert_eq!(report["established_after"], false, "{report}");
    assert_eq!(node.ended_associations(2)[0].outcome, "timed out");
    // A connection that never sends an association request is closed too.
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut socket, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the connection");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A P-DATA-TF where an association request belongs, carrying what looks like a patient's name:
/// the association fails, and neither the log nor the audit row holds the PDU's bytes.
#[test]
fn a_pdu_out_of_place_is_named_by_kind_and_never_dumped() {
    use std::io::{Read, Write};
    let node = Node::start("");
    let name = b"DOE^JOHNATHAN^SECRET";
    let mut value = vec![1u8, 0x02]; // presentation context 1, last data fragment
    value.extend_from_slice(name);
    let mut item = (value.len() as u32).to_be_bytes().to_vec();
    item.extend_from_slice(&value);
    let mut pdu = vec![0x04, 0x00];
    pdu.extend_from_slice(&(item.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&item);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    socket.write_all(&pdu).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    // The other row is the harness's readiness probe (it connects and closes).
    let rows = node.ended_associations(2);
    let probe = "failed: connection closed by peer";
    let outcome = &rows
        .iter()
        .find(|r| r.outcome != probe)
        .unwrap_or_else(|| panic!("no row but the probe's: {rows:#?}"))
        .outcome;
    assert!(outcome.contains("P-DATA-TF"), "{outcome}");
    // As text, and as a debug dump writes bytes ("JOHN" is 74, 79, 72, 78).
    let secrets = ["JOHNATHAN", "74, 79, 72, 78"];
    let log = node.log();
    assert!(log.contains("P-DATA-TF"), "{log}");
    for secret in secrets {
        assert!(!outcome.contains(secret), "{outcome}");
        assert!(!log.contains(secret), "the PDU reached the log:\n{log}");
    }
}

/// A peer that never ends a command set, starts a second C-STORE before the first one's data set
/// ended (after more than is held in memory), or nests thousands of sequences in a command set is
/// aborted with the reason; nothing is left in `incoming/` and the node goes on serving.
#[test]
fn hostile_command_sets_and_interleaved_stores_are_aborted_and_leave_nothing_behind() {
    let node = Node::start("");
    let cases = [
        ("endless-command", "a command set of more than 65536 bytes"),
        (
            "interleaved-store",
            "a new command before the data set of the C-STORE in progress ended",
        ),
        (
            "nested-command",
            "the command set is malformed: an element has an undefined length",
        ),
    ];
    for (n, (scenario, reason)) in cases.into_iter().enumerate() {
        let output = run(Command::new(python())
            .arg(repo_root().join("tests/tools/dicom_peer.py"))
            .args([
                "raw",
                "127.0.0.1",
                &node.port.to_string(),
                "PYNETDICOM",
                NODE_AE,
            ])
            .arg(scenario));
        assert!(output.status.success(), "{}", text(&output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["aborted_by_peer"], true, "{scenario}: {report}");
        // One row more than the harness's readiness probe for each case so far.
        let rows = node.ended_associations(n + 2);
        assert!(
            rows.iter()
                .any(|r| r.outcome == format!("aborted: {reason}")),
            "{scenario}: {rows:#?}"
        );
    }
    let incoming: Vec<_> = std::fs::read_dir(node.data_dir().join("incoming"))
        .unwrap()
        .collect();
    assert!(incoming.is_empty(), "left behind: {incoming:?}");
    let echo = run(Command::new(tool("echoscu"))
        .args(["-aec", NODE_AE, "127.0.0.1"])
        .arg(node.port.to_string()));
    assert!(echo.status.success(), "{}", text(&echo));
}

/// A copy of `source` whose data set is `data_set`, behind a file meta group naming `ts`.
fn file_with_data_set(dir: &Path, name: &str, source: &Path, ts: &str, data_set: &[u8]) -> PathBuf {
    let original = dicom_object::open_file(source).unwrap();
    let meta = msnode::dicom::meta::file_meta(
        original.meta().media_storage_sop_class_uid(),
        original.meta().media_storage_sop_instance_uid(),
        ts,
    )
    .build()
    .unwrap();
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    meta.write(&mut bytes).unwrap();
    bytes.extend_from_slice(data_set);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `inner` wrapped `levels` times in a defined-length sequence of one defined-length item
/// (explicit VR), as a parser that recurses would walk it.
fn nested_defined_length(levels: usize, inner: Vec<u8>) -> Vec<u8> {
    let mut nested = inner;
    for _ in 0..levels {
        let mut item = vec![0xfe, 0xff, 0x00, 0xe0];
        item.extend_from_slice(&(nested.len() as u32).to_le_bytes());
        item.extend(nested);
        let mut sq = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0];
        sq.extend_from_slice(&(item.len() as u32).to_le_bytes());
        sq.extend(item);
        nested = sq;
    }
    nested
}

#[test]
fn nesting_inside_defined_lengths_and_deflate_bombs_are_refused_and_the_node_lives() {
    let node = Node::start("max_instance_mb = 8");
    let work = tempfile::tempdir().unwrap();
    let source = &ge_series(4)[0];
    let original = data_set_bytes(source);
    // 3000 levels of defined-length nesting ahead of the real attributes.
    let mut deep = nested_defined_length(3000, Vec::new());
    deep.extend_from_slice(&original);
    let deep = file_with_data_set(work.path(), "deep.dcm", source, EXPLICIT_VR_LE, &deep);
    // A deflated data set of well under 1 MiB that inflates to 64 MiB (private OB of zeros).
    let mut huge = original.clone();
    huge.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]);
    huge.extend_from_slice(&(64u32 << 20).to_le_bytes());
    huge.resize(huge.len() + (64 << 20), 0);
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &huge).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let bomb = file_with_data_set(
        work.path(),
        "bomb.dcm",
        source,
        DEFLATED_EXPLICIT_VR_LE,
        &bomb,
    );

    let report = node.pynetdicom_store(&[deep, bomb], None);
    assert_eq!(report[0]["status"], 0xC000, "{report}");
    assert_eq!(report[1]["status"], 0xA700, "{report}");
    assert!(node.indexed().is_empty());
    let log = node.log();
    assert!(log.contains("sequences nested too deeply"), "{log}");
    assert!(
        log.contains("inflates to more than the 8 MiB limit"),
        "{log}"
    );
    // A well-formed deflated instance still goes in.
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, &original).unwrap();
    let fine = encoder.finish().unwrap();
    let fine = file_with_data_set(
        work.path(),
        "fine.dcm",
        source,
        DEFLATED_EXPLICIT_VR_LE,
        &fine,
    );
    let report = node.pynetdicom_store(&[fine], None);
    assert_eq!(report[0]["status"], 0, "{report}");
    assert_eq!(node.indexed().len(), 1);
}

fn propose(node: &Node, sop_classes: &[&str], abort: bool) -> serde_json::Value {
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/tools/dicom_peer.py"))
        .args(["propose", "127.0.0.1", &node.port.to_string()])
        .args(["PYNETDICOM", NODE_AE]);
    if abort {
        command.arg("--abort");
    }
    let output = run(command.args(sop_classes));
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A request that offers nothing msnode accepts is rejected as DCMTK's storescp rejects it
/// (A-ASSOCIATE-RJ, permanent, by the service user), and audited with the reason; a peer's own
/// A-ABORT is logged and audited as that, not as a broken association.
#[test]
fn a_request_offering_nothing_acceptable_is_rejected_and_a_peers_abort_is_named() {
    const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
    const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
    let node = Node::start("");
    let report = propose(&node, &[CT_IMAGE_STORAGE], false);
    assert_eq!(report["established"], false, "{report}");
    assert_eq!(report["rejected"], true, "{report}");
    // Result 1: rejected-permanent; source 1: DICOM UL service-user; reason 1: no reason given.
    assert_eq!(
        (&report["result"], &report["source"], &report["reason"]),
        (&1.into(), &1.into(), &1.into()),
        "{report}"
    );
    let rows = node.ended_associations(2);
    assert!(
        rows.iter().any(|r| r.outcome
            == "rejected: no acceptable presentation context among 1 offered"
            && r.calling_ae == "PYNETDICOM"),
        "{rows:#?}"
    );

    let report = propose(&node, &[MR_IMAGE_STORAGE], true);
    assert_eq!(report["established"], true, "{report}");
    let rows = node.ended_associations(3);
    assert!(
        rows.iter().any(|r| r.outcome == "aborted by peer"),
        "{rows:#?}"
    );
    let log = node.log();
    assert!(log.contains("peer aborted the association"), "{log}");
    assert!(!log.contains("association broken"), "{log}");

    let report = propose(&node, &[CT_IMAGE_STORAGE, MR_IMAGE_STORAGE], false);
    assert_eq!(report["established"], true, "{report}");
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// An instance of `source` with a private OB element of `size` zero bytes ahead of its own
/// attributes' end: as a file in `ts` (deflated when asked).
fn padded_instance(dir: &Path, name: &str, source: &Path, size: u32, deflated: bool) -> PathBuf {
    let mut data = data_set_bytes(source);
    data.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]);
    data.extend_from_slice(&size.to_le_bytes());
    data.resize(data.len() + size as usize, 0);
    if !deflated {
        return file_with_data_set(dir, name, source, EXPLICIT_VR_LE, &data);
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &data).unwrap();
    let deflated = encoder.finish().unwrap();
    file_with_data_set(dir, name, source, DEFLATED_EXPLICIT_VR_LE, &deflated)
}

/// The README's bound, measured: 16 associations at once (the default limit), each sending what
/// costs the node most memory: a deflated instance that inflates to 128 MiB, an instance with a
/// 64 MiB attribute before its pixel data, or just under 8 MiB of an instance that then stalls.
/// Under the default 2 GiB instance limit all are legal; the deflated and large ones are stored.
/// The server's peak RSS grows by less than 16 x (8 MiB + 2 x max_pdu + 192 KiB) + 48 MiB.
#[test]
fn sixteen_worst_case_associations_stay_within_the_memory_bound() {
    let node = Node::start("");
    let work = tempfile::tempdir().unwrap();
    let sources = ge_series(4);
    let before = peak_rss(node.pid());
    let deflated: Vec<PathBuf> = (0..6)
        .map(|i| {
            padded_instance(
                work.path(),
                &format!("d{i}.dcm"),
                &sources[i],
                128 << 20,
                true,
            )
        })
        .collect();
    let large: Vec<PathBuf> = (0..5)
        .map(|i| {
            padded_instance(
                work.path(),
                &format!("l{i}.dcm"),
                &sources[10 + i],
                64 << 20,
                false,
            )
        })
        .collect();
    let reports: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let held: Vec<_> = (0..5)
            .map(|_| {
                scope.spawn(|| {
                    let output = run(Command::new(python())
                        .arg(repo_root().join("tests/tools/dicom_peer.py"))
                        .args(["raw", "127.0.0.1", &node.port.to_string()])
                        .args(["PYNETDICOM", NODE_AE, "held-store"]));
                    assert!(output.status.success(), "{}", text(&output));
                })
            })
            .collect();
        let stores: Vec<_> = deflated
            .iter()
            .chain(&large)
            .map(|file| scope.spawn(|| node.pynetdicom_store(std::slice::from_ref(file), None)))
            .collect();
        held.into_iter().for_each(|h| h.join().unwrap());
        stores.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for report in &reports {
        assert_eq!(report[0]["status"], 0, "{report}");
    }
    let after = peak_rss(node.pid());
    let max_pdu: u64 = 262_144;
    let bound = 16 * ((8 << 20) + 2 * max_pdu + (192 << 10)) + (48 << 20);
    eprintln!(
        "peak RSS {} MiB before, {} MiB after; growth {} MiB, bound {} MiB",
        before >> 20,
        after >> 20,
        (after - before) >> 20,
        bound >> 20
    );
    assert!(
        after - before <= bound,
        "peak RSS grew by {} MiB, past the bound of {} MiB",
        (after - before) >> 20,
        bound >> 20
    );
    assert_eq!(node.indexed().len(), 11);
    let incoming: Vec<_> = std::fs::read_dir(node.data_dir().join("incoming"))
        .unwrap()
        .collect();
    assert!(incoming.is_empty(), "{incoming:?}");
}

/// A size-limited tmpfs mounted over `dir` for the life of the guard (root or passwordless sudo).
/// The data directory fills up during ingest: the instances that no longer fit are answered
/// A700 with the reason, every instance answered Success is on disk and indexed (also after a
/// restart), nothing is left in `incoming/`, and the node goes on answering.
#[test]
fn a_full_disk_answers_out_of_resources_and_loses_nothing_acknowledged() {
    // No reserve: the file system itself runs out.
    let mut node = Node::start("\n[storage]\nmin_free_mb = 0");
    node.kill();
    let _filesystem = SmallFilesystem::mount(&node.data_dir(), 24);
    node.spawn();
    let work = tempfile::tempdir().unwrap();
    let sources = ge_series(4);
    let files: Vec<PathBuf> = (0..12)
        .map(|i| {
            padded_instance(
                work.path(),
                &format!("i{i}.dcm"),
                &sources[i],
                3 << 20,
                false,
            )
        })
        .collect();
    let success_log = work.path().join("acknowledged.txt");
    let report = node.pynetdicom_store(&files, Some(&success_log));
    let statuses: Vec<i64> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap_or(-1))
        .collect();
    eprintln!("statuses: {statuses:?}");
    let stored = statuses.iter().filter(|&&s| s == 0).count();
    assert!(stored >= 3, "{report}");
    assert!(statuses.contains(&0xA700), "{report}");
    assert!(statuses.iter().all(|&s| s == 0 || s == 0xA700), "{report}");
    assert!(
        report
            .to_string()
            .contains("cannot write to the data directory")
            || report.to_string().contains("cannot index the instance"),
        "{report}"
    );
    let acknowledged: BTreeSet<String> = std::fs::read_to_string(&success_log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(acknowledged.len(), stored);
    for restart in [false, true] {
        if restart {
            node.kill();
            node.spawn();
        }
        let indexed: BTreeSet<String> = node
            .indexed()
            .into_iter()
            .map(|i| i.sop_instance_uid)
            .collect();
        assert_eq!(indexed, acknowledged, "restarted: {restart}");
        for instance in node.indexed() {
            let path = node.data_dir().join(&instance.file_path);
            assert!(path.is_file(), "{}", path.display());
        }
        let incoming: Vec<_> = std::fs::read_dir(node.data_dir().join("incoming"))
            .unwrap()
            .collect();
        assert!(incoming.is_empty(), "{incoming:?}");
    }
    let echo = run(Command::new(tool("echoscu"))
        .args(["-aet", "ECHOSCU", "-aec", NODE_AE, "127.0.0.1"])
        .arg(node.port.to_string()));
    assert!(echo.status.success(), "{}", text(&echo));
}

/// Another process holds the index's write lock (SQLite `BEGIN EXCLUSIVE`) for 3 s while
/// instances arrive: their stores wait for it (busy timeout 30 s) and succeed, none is answered
/// before its row is committed, and every one is indexed once.
/// Another process holding the index's write lock for `seconds`; returns once it holds it.
fn lock_index(node: &Node, seconds: u64) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut locker = Command::new(python())
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             db.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n\
             db.execute('COMMIT')\n",
        )
        .arg(node.data_dir().join("msnode.sqlite"))
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(locker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    locker
}

#[test]
fn a_locked_index_delays_stores_and_loses_nothing() {
    let node = Node::start("");
    let mut locker = lock_index(&node, 3);
    let files = ge_series(5)[..5].to_vec();
    let started = Instant::now();
    let report = node.pynetdicom_store(&files, None);
    let waited = started.elapsed();
    assert!(locker.wait().unwrap().success());
    for entry in report.as_array().unwrap() {
        assert_eq!(entry["status"], 0, "{report}");
    }
    assert!(
        waited >= Duration::from_secs(2),
        "answered after {waited:?}: before the lock ended"
    );
    let indexed: BTreeSet<String> = node
        .indexed()
        .into_iter()
        .map(|i| i.sop_instance_uid)
        .collect();
    let sent: BTreeSet<String> = files.iter().map(|f| sop_instance_uid(f)).collect();
    assert_eq!(indexed, sent);
}

#[test]
fn an_index_locked_past_the_busy_timeout_refuses_with_a700_and_keeps_no_orphan() {
    let node = Node::start("");
    let file = ge_series(5)[..1].to_vec();
    // The association is audited first, then the lock is taken, then the instance arrives: only
    // the store waits out SQLite's 30 s busy timeout.
    let store = node.paused_store(&file[0], 3);
    node.wait_for_log("association accepted", 1);
    let mut locker = lock_index(&node, 36);
    let report = report(store);
    let entry = &report[0];
    assert_eq!(entry["status"], 0xA700, "{report}");
    assert!(
        entry["comment"].as_str().unwrap().contains("cannot index"),
        "{report}"
    );
    let stored: Vec<PathBuf> = walkdir::WalkDir::new(node.data_dir().join("dicom"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    assert!(
        stored.is_empty(),
        "a refused instance stayed in the store: {stored:?}"
    );
    assert!(locker.wait().unwrap().success());
    // The sender tries again once the lock is gone, and that copy is kept.
    let report = node.pynetdicom_store(&file, None);
    assert_eq!(report[0]["status"], 0, "{report}");
    let indexed: Vec<String> = node
        .indexed()
        .into_iter()
        .map(|i| i.sop_instance_uid)
        .collect();
    assert_eq!(indexed, [sop_instance_uid(&file[0])]);
    assert!(
        node.log().contains("cannot index the instance"),
        "the refusal is logged"
    );
}
