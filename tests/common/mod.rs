//! Shared test harness: a running `msnode serve` on a free port with its own data directory, and
//! the real peers (DCMTK, pynetdicom) the tests talk to it with.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use msnode::index::{Index, StoredInstance};

pub const NODE_AE: &str = "MSNODE";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The model the node runs by default (the configuration's `[model] dir`), from the repository root.
pub fn shipped_model_dir() -> PathBuf {
    repo_root().join(msnode::config::Config::default().model.dir)
}

/// The shipped single-visit model (`[model] single_visit_dir`'s default).
pub fn single_visit_model_dir() -> PathBuf {
    let default = msnode::config::Config::default().model.single_visit_dir;
    repo_root().join(default.expect("a single-visit model by default"))
}

/// `../shared/data` beside the repository (CI clones main next to shared/).
pub fn shared_data() -> PathBuf {
    let dir = repo_root().join("../shared/data");
    assert!(
        dir.is_dir(),
        "{} is missing: the tests read the shared real data there",
        dir.display()
    );
    dir
}

/// A required program from the system (DCMTK and the like), found on PATH; the test fails
/// (never skips) when it is missing. The virtual environment is not searched: pynetdicom installs
/// its own `storescu` and `echoscu` there.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run `make setup` (DCMTK from apt, Python helpers in .venv)");
}

/// The Python of the project's virtual environment, with pydicom and pynetdicom.
/// The virtual environment's site-packages, whatever Python version `make setup` made it with.
pub fn site_packages() -> PathBuf {
    let lib = repo_root().join(".venv/lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make setup`", lib.display()))
        .map(|entry| entry.unwrap().path().join("site-packages"))
        .find(|path| path.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {}: run `make setup`", lib.display()))
}

/// The ONNX Runtime library shipped in the venv's onnxruntime==1.31.1 wheel.
pub fn onnxruntime_library() -> PathBuf {
    let library = site_packages().join("onnxruntime/capi/libonnxruntime.so.1.31.1");
    assert!(
        library.is_file(),
        "{} is missing: run `make setup`",
        library.display()
    );
    library
}

pub fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make setup`",
        python.display()
    );
    python
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something listens on the loopback `port` (10 s at most).
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run a command to completion, capturing its output.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Lines added to the standard test configuration: in its `[node]`, `[network]` and `[admin]`
/// tables, and after everything (more `[[peers]]`, other tables).
#[derive(Default)]
pub struct ExtraToml<'a> {
    pub node: &'a str,
    pub network: &'a str,
    pub admin: &'a str,
    pub tail: &'a str,
}

/// A running `msnode serve`.
pub struct Node {
    pub port: u16,
    /// The admin HTTP server's port, on loopback.
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Start a node whose configuration is the standard test one plus `extra` TOML lines
    /// (which may override keys of [network]).
    pub fn start(network_extra: &str) -> Node {
        Node::start_with(network_extra, "")
    }

    /// [`Node::start`] with `admin_extra` lines in its `[admin]` table.
    pub fn start_with(network_extra: &str, admin_extra: &str) -> Node {
        Node::start_sections(ExtraToml {
            network: network_extra,
            admin: admin_extra,
            ..ExtraToml::default()
        })
    }

    /// The standard test configuration with `extra`'s lines added.
    pub fn start_sections(extra: ExtraToml) -> Node {
        let ExtraToml {
            node: node_extra,
            network: network_extra,
            admin: admin_extra,
            tail,
        } = extra;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("msnode.toml");
        let config = format!(
            r#"
[node]
ae_title = "{NODE_AE}"
bind = "127.0.0.1"
port = {port}
data_dir = "{data}"
{node_extra}

[network]
{network_extra}

[[peers]]
ae_title = "STORESCU"
host = "127.0.0.1"
port = 1
store_to_us = true

[[peers]]
ae_title = "ECHOSCU"
host = "127.0.0.1"
port = 1
store_to_us = true

[[peers]]
ae_title = "PYNETDICOM"
host = "127.0.0.1"
port = 1
store_to_us = true

[[peers]]
ae_title = "QUERY_ONLY"
host = "127.0.0.1"
port = 1
store_to_us = false

[admin]
bind = "127.0.0.1:{admin_port}"
{admin_extra}

[logging]
level = "debug"

{tail}
"#,
            data = dir.path().join("data").display()
        );
        std::fs::write(&config_path, config).unwrap();
        let mut node = Node {
            port,
            admin_port,
            dir,
            config_path,
            child: None,
        };
        node.spawn();
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// The server's process ID (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Start (or restart) the server and wait until it accepts connections.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_msnode"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start msnode");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("msnode exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "msnode did not start listening:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The msnode CLI with this node's configuration.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_msnode"));
        command.arg("--config").arg(&self.config_path);
        command
    }

    /// Every indexed instance (opens the SQLite index as another reader would).
    pub fn indexed(&self) -> Vec<StoredInstance> {
        let db = self.data_dir().join("msnode.sqlite");
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let index = Index::open(&db).await.unwrap();
            let rows = index.instances().await.unwrap();
            index.close().await;
            rows
        })
    }

    pub fn associations(&self) -> Vec<msnode::index::AssociationRow> {
        let db = self.data_dir().join("msnode.sqlite");
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let index = Index::open(&db).await.unwrap();
            let rows = index.recent_associations(1000).await.unwrap();
            index.close().await;
            rows
        })
    }

    /// The audit trail once `count` associations have ended (the server closes a row just after
    /// answering the peer, so a test that has just seen its peer finish waits for it).
    pub fn ended_associations(&self, count: usize) -> Vec<msnode::index::AssociationRow> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows: Vec<_> = self
                .associations()
                .into_iter()
                .filter(|a| a.ended_at.is_some())
                .collect();
            if rows.len() >= count || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// DCMTK storescu with Nagle off, as the notes require for fair figures.
    pub fn storescu(&self, calling: &str, files: &[PathBuf]) -> Output {
        let mut command = Command::new(tool("storescu"));
        command
            .env("TCP_NODELAY", "1")
            .args(["-aet", calling, "-aec", NODE_AE, "127.0.0.1"])
            .arg(self.port.to_string())
            .args(files);
        run(&mut command)
    }

    /// The pynetdicom peer: sends each file as-is; returns its JSON report.
    /// `dicom_peer.py store` to this node as PYNETDICOM; options and files are added by the caller.
    pub fn peer_store(&self) -> Command {
        let mut command = Command::new(python());
        command
            .arg(repo_root().join("tests/tools/dicom_peer.py"))
            .args([
                "store",
                "127.0.0.1",
                &self.port.to_string(),
                "PYNETDICOM",
                NODE_AE,
            ]);
        command
    }

    /// One association storing `file` `pause` seconds after it is established, running in the
    /// background; [`report`] waits for its JSON report.
    pub fn paused_store(&self, file: &Path, pause: u32) -> Child {
        self.peer_store()
            .args(["--pause", &pause.to_string()])
            .arg(file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Wait until the log holds `what` at least `times` times.
    pub fn wait_for_log(&self, what: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches(what).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pynetdicom_store(
        &self,
        files: &[PathBuf],
        success_log: Option<&Path>,
    ) -> serde_json::Value {
        let mut command = self.peer_store();
        if let Some(log) = success_log {
            command.arg("--success-log").arg(log);
        }
        command.args(files);
        let output = run(&mut command);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("pynetdicom peer gave no JSON ({e}):\n{}", text(&output)))
    }
}

/// The JSON report of a `dicom_peer.py` child, once it ended.
pub fn report(child: Child) -> serde_json::Value {
    let output = child.wait_with_output().unwrap();
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", text(&output)))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The data set bytes of a DICOM file: everything after its file meta group.
pub fn data_set_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[128..132],
        b"DICM",
        "{} has no DICM prefix",
        path.display()
    );
    let group_length = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group_length..].to_vec()
}

/// The Patient Name a test file carries (asserted present: tests look for it where it must not be).
pub fn patient_name(path: &Path) -> String {
    let header = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = msnode::dicom::read::text(&header, dicom_dictionary_std::tags::PATIENT_NAME)
        .unwrap_or_default();
    assert!(
        !name.is_empty(),
        "{} carries no patient name",
        path.display()
    );
    name
}

/// SOP Instance UID from a file's meta group.
pub fn sop_instance_uid(path: &Path) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    obj.meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}

/// Series Instance UID of a DICOM file.
pub fn series_instance_uid(path: &Path) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    msnode::dicom::read::text(&obj, dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
        .unwrap_or_else(|| panic!("{} has no Series Instance UID", path.display()))
}

/// The real GE series from dcm_qa_nih (150 slices of about 25 KB each).
pub fn ge_series(n: usize) -> Vec<PathBuf> {
    let dir = shared_data().join(format!("dicom/dcm_qa_nih/In/20180918GE/mr_000{n}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

/// Write a synthetic MR series with the project's generator; returns its files.
pub fn synthetic_series(dir: &Path, slices: usize, size: usize, seed: u64) -> Vec<PathBuf> {
    let output = run(Command::new(python())
        .arg(repo_root().join("tests/tools/make_mr_series.py"))
        .arg(dir)
        .args([
            "--slices",
            &slices.to_string(),
            "--size",
            &size.to_string(),
            "--seed",
            &seed.to_string(),
        ]));
    assert!(output.status.success(), "{}", text(&output));
    files_in(dir)
}

/// The files of a folder, sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Two visits of Lesjak patient01 as acquired DICOM series: (prior, current) folders.
pub fn lesjak_visits(dir: &Path) -> (PathBuf, PathBuf) {
    let pair = repo_root().join("tests/data/lesjak-longitudinal/patient01");
    let mut folders = Vec::new();
    for (visit, date) in [("study1", "20100101"), ("study2", "20100723")] {
        let out = dir.join(visit);
        let output = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
            .arg("import-nifti")
            .arg(pair.join(format!("{visit}_FLAIR.nii.gz")))
            .arg(&out)
            .args(["--patient-id", "LESJAK01", "--study-date", date])
            .args(["--series-description", "AX T2 FLAIR", "--as-acquired"]));
        assert!(output.status.success(), "{}", text(&output));
        folders.push(out);
    }
    (folders[0].clone(), folders[1].clone())
}

/// The node's jobs, as `msnode jobs --json` lists them.
pub fn jobs(node: &Node) -> Vec<serde_json::Value> {
    let output = run(node.cli().args(["jobs", "--json"]));
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A tmpfs of `mib` MiB mounted on `dir` (root, or passwordless sudo), unmounted on drop.
pub struct SmallFilesystem(PathBuf);

impl SmallFilesystem {
    pub fn mount(dir: &Path, mib: u64) -> SmallFilesystem {
        std::fs::create_dir_all(dir).unwrap();
        let output = run(privileged("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m"))
            .arg("msnode-test")
            .arg(dir));
        assert!(
            output.status.success(),
            "the test mounts a tmpfs (needs root or passwordless sudo): {}",
            text(&output)
        );
        SmallFilesystem(dir.to_path_buf())
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = privileged("umount").arg("-l").arg(&self.0).status();
    }
}

/// `program` as root: directly when we are root, else through `sudo -n`.
fn privileged(program: &str) -> Command {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.args(["-n", program]);
        command
    }
}

/// A plain HTTP/1.1 GET on loopback: the status code and the body.
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The samples of a /metrics answer, read by the Prometheus client's OpenMetrics parser (which
/// fails on text that breaks the format): "name{labels}" -> value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    use std::io::Write;
    let mut parser = Command::new(python())
        .arg(repo_root().join("tests/tools/parse_metrics.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not valid OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn metric(text: &str, name: &str) -> f64 {
    *samples(text)
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}
