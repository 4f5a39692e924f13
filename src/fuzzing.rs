//! What a hostile peer's bytes reach, as plain functions of those bytes: `fuzz/` (cargo fuzz on
//! the nightly toolchain) and `tests/fuzz_corpus.rs` (a bounded mutation run on stable, in
//! `make test`) drive these same functions over the corpus in `fuzz/corpus/`. Each must return
//! whatever the input; a panic, an abort or an allocation past the fuzzer's limit is a finding.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_ul::pdu::{PDataValueType, Pdu, read_pdu};

use crate::dicom::sop_class::MR_IMAGE_STORAGE;
use crate::dicom::transfer_syntax::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::ingest::{self, StoreRequest};
use crate::net::dimse::Command;
use crate::net::{admission, identifier};
use crate::volume::load::{LoadOptions, load_series};

/// The instance size limit the fuzzed ingest runs with: the default configuration's is 2 GiB,
/// a fuzzer's memory limit is 2 GiB, so a smaller one shows a bound that is not enforced.
pub const INSTANCE_LIMIT: u64 = 8 << 20;

/// SOP Instance UID of the instances in the corpus' `instance` seeds.
pub const SEED_INSTANCE_UID: &str = "2.25.268623980968786058706813692519717064409";

/// Separates the files of one `series` input.
pub const FILE_SEPARATOR: &[u8] = b"\nMSNODE-FUZZ-NEXT-FILE\n";

/// Transfer syntax chosen by an input's first byte.
fn transfer_syntax(selector: u8) -> &'static str {
    match selector % 3 {
        0 => EXPLICIT_VR_LE,
        1 => IMPLICIT_VR_LE,
        _ => DEFLATED_EXPLICIT_VR_LE,
    }
}

/// A DIMSE command set as the SCP receives it.
pub fn command_set(data: &[u8]) {
    let _ = Command::decode(data);
}

/// A C-FIND/C-MOVE/C-GET identifier: first byte implicit (even) or explicit (odd) VR.
pub fn query_identifier(data: &[u8]) {
    let Some((selector, bytes)) = data.split_first() else {
        return;
    };
    let ts = if selector % 2 == 0 {
        IMPLICIT_VR_LE
    } else {
        EXPLICIT_VR_LE
    };
    if let Ok(identifier) = identifier::decode(bytes, ts) {
        let _ = identifier::Level::of(&identifier);
        let _ = identifier::encode(&identifier, ts);
    }
}

/// One PDU off the wire: dicom-ul's reader, then what msnode does with an association request
/// (the admission check) and with P-DATA (command fragments decoded when complete).
pub fn association_pdu(data: &[u8]) {
    match read_pdu(data, 1 << 20, false) {
        Ok(Some(Pdu::AssociationRQ(request))) => {
            let _ = admission::accepts_some_context(&request);
        }
        Ok(Some(Pdu::PData { data })) => {
            let mut command = Vec::new();
            for value in data {
                if value.value_type == PDataValueType::Command {
                    command.extend_from_slice(&value.data);
                    if value.is_last {
                        let _ = Command::decode(&command);
                        command.clear();
                    }
                }
            }
        }
        _ => {}
    }
}

/// A C-STORE data set (first byte: explicit, implicit or deflated), checked as ingest checks it:
/// size limit, structure walk, inflation, identity. An accepted one must carry the request's UID.
pub fn stored_instance(data: &[u8]) {
    let Some((selector, data_set)) = data.split_first() else {
        return;
    };
    let request = StoreRequest {
        sop_class_uid: MR_IMAGE_STORAGE.into(),
        sop_instance_uid: SEED_INSTANCE_UID.into(),
        transfer_syntax_uid: transfer_syntax(*selector).into(),
        calling_ae: "FUZZ".into(),
        association: None,
    };
    if let Ok(record) = ingest::examine(data_set, &request, INSTANCE_LIMIT) {
        assert_eq!(record.sop_instance_uid, SEED_INSTANCE_UID);
    }
}

/// Stored files (whole Part 10 files, [`FILE_SEPARATOR`] between them) loaded as one series.
pub fn series_volume(data: &[u8]) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "msnode-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for (n, bytes) in split_files(data).into_iter().take(8).enumerate() {
        let path = dir.join(format!("{n}.dcm"));
        if std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(bytes))
            .is_ok()
        {
            files.push(path);
        }
    }
    if let Ok(volume) = load_series(&files, &LoadOptions::default()) {
        assert_eq!(volume.slices.len(), volume.dims()[2]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The files of one `series_volume` input.
pub fn split_files(data: &[u8]) -> Vec<&[u8]> {
    let separator = FILE_SEPARATOR;
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest
        .windows(separator.len())
        .position(|window| window == separator)
    {
        parts.push(&rest[..at]);
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest);
    parts
}

/// A fuzz target: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/` and the corpus test call them.
pub const TARGETS: [(&str, Target); 5] = [
    ("command_set", command_set),
    ("query_identifier", query_identifier),
    ("association_pdu", association_pdu),
    ("stored_instance", stored_instance),
    ("series_volume", series_volume),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_split_at_the_separator() {
        let data = [b"a".as_slice(), FILE_SEPARATOR, b"bc", FILE_SEPARATOR].concat();
        assert_eq!(split_files(&data), vec![&b"a"[..], b"bc", b""]);
    }
}
