//! DICOM over TLS with DCMTK as the real peer on both sides: `echoscu`/`storescu +tls` against
//! the node's TLS port (client certificates verified against a CA; an untrusted one refused in
//! the handshake), and `msnode send`/`echo` to a `storescp +tls` that verifies the node's own
//! certificate. Keys and certificates are made here with `openssl`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ExtraToml, Node, files_in, free_port, run, synthetic_series, text, tool};

/// Certificates made for one test: a CA, leaves it issued, and a rogue CA's leaf.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki {
            dir: dir.to_owned(),
        };
        pki.make_ca("ca");
        pki.make_ca("rogue-ca");
        for (name, ca) in [
            ("node", "ca"),
            ("client", "ca"),
            ("pacs", "ca"),
            ("rogue", "rogue-ca"),
        ] {
            pki.make_leaf(name, ca);
        }
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let output = run(Command::new("openssl").current_dir(&self.dir).args(args));
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            text(&output)
        );
    }

    fn make_ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=msnode test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// A leaf for 127.0.0.1 and localhost, usable as server and as client.
    fn make_leaf(&self, name: &str, ca: &str) {
        std::fs::write(
            self.path(&format!("{name}.ext")),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// DCMTK's TLS arguments for a peer holding `name`'s key and certificate, trusting `ca`.
    fn dcmtk_args(&self, name: &str, ca: &str) -> Vec<String> {
        vec![
            "+tls".into(),
            self.path(&format!("{name}.key")).display().to_string(),
            self.path(&format!("{name}.crt")).display().to_string(),
            "+cf".into(),
            self.path(&format!("{ca}.crt")).display().to_string(),
        ]
    }
}

/// The node's `[tls]` table: its certificate, and the test CA as `trust_key` (`client_ca` or
/// `peer_ca`).
fn tls_table(pki: &Pki, trust_key: &str) -> String {
    format!(
        "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{trust_key} = \"{}\"\n",
        pki.path("node.crt").display(),
        pki.path("node.key").display(),
        pki.path("ca.crt").display(),
    )
}

fn echoscu(port: u16, tls: &[String]) -> std::process::Output {
    run(Command::new(tool("echoscu"))
        .args(tls)
        .args(["-aet", "ECHOSCU", "-aec", common::NODE_AE, "127.0.0.1"])
        .arg(port.to_string()))
}

#[test]
fn the_tls_port_serves_trusted_dcmtk_peers_and_refuses_untrusted_certificates() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::new(&work.path().join("pki"));
    let tls_port = free_port();
    let node = Node::start_sections(ExtraToml {
        node: &format!("tls_port = {tls_port}"),
        tail: &tls_table(&pki, "client_ca"),
        ..ExtraToml::default()
    });
    common::wait_for_port(tls_port);

    let trusted = pki.dcmtk_args("client", "ca");
    let echo = echoscu(tls_port, &trusted);
    assert!(echo.status.success(), "echoscu +tls: {}", text(&echo));

    let series = synthetic_series(&work.path().join("series"), 5, 64, 7);
    let store = run(Command::new(tool("storescu"))
        .env("TCP_NODELAY", "1")
        .args(&trusted)
        .args(["-aet", "STORESCU", "-aec", common::NODE_AE, "127.0.0.1"])
        .arg(tls_port.to_string())
        .args(&series));
    assert!(store.status.success(), "storescu +tls: {}", text(&store));
    let indexed = node.indexed();
    assert_eq!(
        indexed.len(),
        series.len(),
        "every instance sent over TLS is indexed"
    );
    for file in &series {
        let uid = common::sop_instance_uid(file);
        assert!(
            indexed.iter().any(|row| row.sop_instance_uid == uid),
            "{uid} not indexed"
        );
    }

    // A certificate from another CA, no certificate at all, and plain DICOM on the TLS port.
    let rogue = echoscu(tls_port, &pki.dcmtk_args("rogue", "ca"));
    assert!(
        !rogue.status.success(),
        "an untrusted client certificate was accepted"
    );
    let mut anonymous = vec!["+tla".to_string(), "+cf".into()];
    anonymous.push(pki.path("ca.crt").display().to_string());
    let anonymous = echoscu(tls_port, &anonymous);
    assert!(
        !anonymous.status.success(),
        "a client without a certificate was accepted"
    );
    let plain = echoscu(tls_port, &[]);
    assert!(
        !plain.status.success(),
        "plain DICOM was answered on the TLS port"
    );
    // The plain port still speaks plain DICOM.
    let plain_port = echoscu(node.port, &[]);
    assert!(plain_port.status.success(), "{}", text(&plain_port));

    let rows = node.ended_associations(6);
    let over_tls: Vec<_> = rows
        .iter()
        .filter(|a| a.outcome.ends_with("over TLS"))
        .collect();
    assert_eq!(over_tls.len(), 2, "echo and store over TLS: {rows:#?}");
    let store_row = over_tls
        .iter()
        .find(|a| a.instances_stored == series.len() as i64)
        .unwrap_or_else(|| {
            panic!(
                "no TLS association stored {} instances: {rows:#?}",
                series.len()
            )
        });
    assert_eq!(store_row.calling_ae, "STORESCU");
    assert_eq!(store_row.outcome, "released over TLS");
    let handshakes: Vec<_> = rows
        .iter()
        .filter(|a| a.outcome.contains("TLS") && a.outcome.starts_with("failed"))
        .collect();
    assert!(
        handshakes.len() >= 2,
        "the refused handshakes are audited: {rows:#?}"
    );
    assert!(
        handshakes.iter().any(|a| a.outcome.contains("certificate")),
        "the untrusted certificate is named as the reason: {handshakes:#?}"
    );
    let log = node.log();
    assert!(log.contains("DICOM TLS listening"), "{log}");
    // Each refused handshake is counted: the untrusted and the missing certificate, the plain
    // request, and this test's own port probe.
    let (status, metrics) = common::http_get(node.admin_port, "/metrics", None);
    assert_eq!(status, 200);
    let handshake_failures: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("msnode_associations_rejected_total{reason=\"tls_handshake\"} ")
        })
        .unwrap_or_else(|| panic!("no tls_handshake rejections counted:\n{metrics}"))
        .parse()
        .unwrap();
    assert_eq!(handshake_failures, 4.0, "{metrics}");
}

/// DCMTK's storescp as a TLS PACS: it requires and verifies a client certificate.
fn tls_storescp(pki: &Pki, port: u16, out: &Path, server: &str) -> Child {
    std::fs::create_dir_all(out).unwrap();
    let child = Command::new(tool("storescp"))
        .args(pki.dcmtk_args(server, "ca"))
        .args(["--aetitle", "TLSPACS", "-od"])
        .arg(out)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start storescp");
    common::wait_for_port(port);
    child
}

#[test]
fn results_go_to_a_tls_pacs_that_verifies_the_nodes_certificate() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::new(&work.path().join("pki"));
    let pacs_port = free_port();
    let rogue_port = free_port();
    let tls = tls_table(&pki, "peer_ca");
    let tail = format!(
        "[[peers]]\nae_title = \"TLSPACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\ntls = true\n\n\
         [[peers]]\nae_title = \"ROGUEPACS\"\nhost = \"127.0.0.1\"\nport = {rogue_port}\ntls = true\n\n{tls}"
    );
    let node = Node::start_sections(ExtraToml {
        tail: &tail,
        ..ExtraToml::default()
    });
    let received = work.path().join("received");
    let mut pacs = tls_storescp(&pki, pacs_port, &received, "pacs");
    let mut rogue = tls_storescp(&pki, rogue_port, &work.path().join("rogue"), "rogue");

    let echo = run(node.cli().args(["echo", "TLSPACS"]));
    assert!(
        echo.status.success(),
        "msnode echo over TLS: {}",
        text(&echo)
    );

    let series = synthetic_series(&work.path().join("series"), 4, 64, 11);
    let send = run(node.cli().arg("send").arg("TLSPACS").args(&series));
    assert!(
        send.status.success(),
        "msnode send over TLS: {}",
        text(&send)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(&received).len() < series.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut got: Vec<String> = files_in(&received)
        .iter()
        .map(|f| common::sop_instance_uid(f))
        .collect();
    let mut sent: Vec<String> = series.iter().map(|f| common::sop_instance_uid(f)).collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "the TLS PACS holds every instance sent");

    // A PACS whose certificate is from a CA the node does not trust is not talked to.
    let refused = run(node.cli().args(["echo", "ROGUEPACS"]));
    assert!(
        !refused.status.success(),
        "an untrusted PACS certificate was accepted"
    );
    let why = text(&refused);
    assert!(
        why.contains("certificate") && why.contains("ROGUEPACS"),
        "the reason names the peer and its certificate: {why}"
    );

    // config check reads the files the keys name.
    let broken = work.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&node.config_path).unwrap().replace(
            &pki.path("ca.crt").display().to_string(),
            "/nonexistent/ca.crt",
        ),
    )
    .unwrap();
    let check = run(node.cli().args(["config", "check"]).arg(&broken));
    assert!(!check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("/nonexistent/ca.crt"),
        "{}",
        text(&check)
    );
    let check = run(node.cli().args(["config", "check"]).arg(&node.config_path));
    assert!(check.status.success(), "{}", text(&check));

    let _ = pacs.kill();
    let _ = rogue.kill();
    let _ = pacs.wait();
    let _ = rogue.wait();
}
