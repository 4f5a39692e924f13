//! The fuzz targets (`msnode::fuzzing`) over the committed corpus (`fuzz/corpus/`), and a bounded,
//! deterministic mutation run around each seed: what `cargo fuzz` does for hours on nightly, done
//! for seconds on stable in `make test`, so a regression in the hostile-input paths fails CI.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use msnode::dicom::transfer_syntax::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use msnode::fuzzing::{self, INSTANCE_LIMIT, SEED_INSTANCE_UID, TARGETS};

/// Mutated inputs per target, spread over its seeds.
const MUTATIONS_PER_TARGET: usize = 5000;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// xorshift64*: the same mutations on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break length and count fields: zero, one, the largest, the undefined length,
/// just past a 16 MiB PDU.
const INTERESTING: [u32; 7] = [
    0,
    1,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0xFFFF_FFFE,
    0x0100_0001,
    0x8000,
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len());
        match rng.below(7) {
            0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[at] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)],
            2 if data.len() >= 4 => {
                let at = rng.below(data.len() - 3);
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                data[at..at + 4].copy_from_slice(&bytes);
            }
            3 => data.truncate(at),
            4 if !data.is_empty() => {
                let end = (at + 1 + rng.below(256)).min(data.len());
                let chunk = data[at..end].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, chunk);
            }
            5 if !data.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            _ if !other.is_empty() => {
                // Splice: the head of this seed, the tail of another.
                let from = rng.below(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    data
}

fn findings_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

#[test]
fn every_target_survives_its_corpus_and_bounded_mutations_of_it() {
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut executions = 0usize;
    for (target, run) in TARGETS {
        let started = std::time::Instant::now();
        let seeds = corpus(target);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        let mut inputs: Vec<(String, Vec<u8>)> = seeds.clone();
        for n in 0..MUTATIONS_PER_TARGET {
            let (name, seed) = &seeds[n % seeds.len()];
            let other = &seeds[rng.below(seeds.len())].1;
            inputs.push((
                format!("{name}-mutation-{n}"),
                mutate(&mut rng, seed, other),
            ));
        }
        for (name, input) in inputs {
            executions += 1;
            if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
                let dir = findings_dir().join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(&name), &input).unwrap();
                failures.push(format!("{target}/{name}"));
            }
        }
        eprintln!(
            "{target}: {MUTATIONS_PER_TARGET} mutations in {:.1?}",
            started.elapsed()
        );
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} of {executions} inputs panicked (written to {}): {failures:?}",
        failures.len(),
        findings_dir().display()
    );
}

/// The seeds are what they claim: real inputs the node accepts, so the mutations start from
/// the paths that matter rather than from the first error check. (`regression-*` files are
/// inputs that once failed a target; they stay in the corpus and are not seeds.)
#[test]
fn the_seeds_are_accepted_inputs() {
    let corpus = |target: &str| {
        corpus(target)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("regression-"))
            .collect::<Vec<_>>()
    };
    for (name, data) in corpus("command_set") {
        msnode::net::dimse::Command::decode(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, data) in corpus("stored_instance") {
        let ts = [EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE][data[0] as usize];
        let request = msnode::ingest::StoreRequest {
            sop_class_uid: msnode::dicom::sop_class::MR_IMAGE_STORAGE.into(),
            sop_instance_uid: SEED_INSTANCE_UID.into(),
            transfer_syntax_uid: ts.into(),
            calling_ae: "FUZZ".into(),
            association: None,
        };
        let record = msnode::ingest::examine(&data[1..], &request, INSTANCE_LIMIT)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(record.modality.as_deref(), Some("MR"), "{name}");
    }
    for (name, data) in corpus("query_identifier") {
        let ts = if data[0] == 0 {
            IMPLICIT_VR_LE
        } else {
            EXPLICIT_VR_LE
        };
        msnode::net::identifier::decode(&data[1..], ts).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, data) in corpus("association_pdu") {
        let pdu = dicom_ul::pdu::read_pdu(&data[..], 1 << 20, false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(pdu.is_some(), "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in corpus("series_volume") {
        let files: Vec<PathBuf> = fuzzing::split_files(&data)
            .into_iter()
            .enumerate()
            .map(|(n, bytes)| {
                let path = dir.path().join(format!("{name}-{n}.dcm"));
                std::fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        let volume = msnode::volume::load::load_series(&files, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            volume.dims().iter().all(|&d| d > 1),
            "{name}: {:?}",
            volume.dims()
        );
    }
}
