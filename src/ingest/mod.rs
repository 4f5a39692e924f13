//! Receiving one instance: stream its data set to a part file behind a file meta group, check it,
//! place it durably and index it. Independent of the network, so the SCP only feeds it bytes.
//!
//! Instances under a few MiB are held in memory until complete and then checked, written and
//! fsynced under their final name in one blocking step; larger ones stream to a part file as they
//! arrive and are renamed into place. The folder entry and the index row are then committed
//! together with whatever other associations have ready at that moment ([`commit`]: one folder
//! fsync per series and one SQLite transaction for all of them).
//!
//! The data set is stored exactly as received (no re-encoding): the file is preamble + "DICM" +
//! group 0002 naming the negotiated transfer syntax + the received bytes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use tokio::io::AsyncWriteExt;

use crate::dicom::Status;
use crate::dicom::meta::file_meta;
use crate::dicom::read::{int, text};
use crate::dicom::structure;
use crate::dicom::transfer_syntax::{DEFLATED_EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::dicom::uid;
use crate::index::{Index, InstanceRecord};
use crate::store::Store;

mod commit;
use commit::GroupCommit;

/// Why an instance was not stored: what kind of refusal (which gives the DIMSE status) and a
/// reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub cause: RefusalCause,
    pub reason: String,
}

/// The kinds of refusal an admin tells apart (the refusal metric's `reason` label): A700 alone
/// covers four of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCause {
    /// The SOP class is not the one negotiated on the presentation context, or not storage.
    NotNegotiated,
    /// Larger than `[network] max_instance_mb`, as sent or once inflated.
    TooLarge,
    /// The data directory's free space is below `[storage] min_free_mb`.
    StorageReserve,
    /// Writing, syncing or placing the file failed (disk full, I/O error).
    WriteFailed,
    /// The index did not take the instance's row (locked past its busy timeout, disk full).
    IndexFailed,
    /// Not a parsable data set.
    Malformed,
    /// The data set contradicts its request or lacks the identifying UIDs.
    DoesNotMatch,
    /// msnode itself failed.
    Internal,
}

impl RefusalCause {
    pub fn status(self) -> Status {
        match self {
            RefusalCause::NotNegotiated => Status::SopClassNotSupported,
            RefusalCause::TooLarge
            | RefusalCause::StorageReserve
            | RefusalCause::WriteFailed
            | RefusalCause::IndexFailed => Status::OutOfResources,
            RefusalCause::Malformed => Status::CannotUnderstand,
            RefusalCause::DoesNotMatch => Status::DataSetDoesNotMatchSopClass,
            RefusalCause::Internal => Status::ProcessingFailure,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RefusalCause::NotNegotiated => "sop_class_not_negotiated",
            RefusalCause::TooLarge => "too_large",
            RefusalCause::StorageReserve => "storage_reserve",
            RefusalCause::WriteFailed => "write_failed",
            RefusalCause::IndexFailed => "index_failed",
            RefusalCause::Malformed => "malformed",
            RefusalCause::DoesNotMatch => "does_not_match_sop_class",
            RefusalCause::Internal => "internal",
        }
    }
}

impl Refusal {
    fn new(cause: RefusalCause, reason: impl Into<String>) -> Self {
        Refusal {
            cause,
            reason: reason.into(),
        }
    }

    /// The DIMSE status the C-STORE is answered with.
    pub fn status(&self) -> Status {
        self.cause.status()
    }
}

/// What the C-STORE request says about the instance that follows.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub calling_ae: String,
    pub association: Option<i64>,
}

/// Instances up to this size are held in memory until complete, so that checking, writing,
/// syncing and placing each one is a single blocking step. Larger ones stream to their part file.
/// Memory in the worst case: this times the number of concurrent associations.
const IN_MEMORY_LIMIT: usize = 8 << 20;

/// Where the bytes of an incoming instance go, file meta group first.
enum Sink {
    Memory(Vec<u8>),
    File(tokio::io::BufWriter<tokio::fs::File>),
}

/// An instance whose data set is streaming in.
pub struct IncomingInstance {
    request: StoreRequest,
    part_path: PathBuf,
    /// `None` once the instance was refused: further bytes are discarded.
    sink: Option<Sink>,
    /// Where the data set starts (after preamble and file meta group).
    data_offset: u64,
    received: u64,
    refusal: Option<Refusal>,
}

/// The receive -> index stage.
pub struct Ingest {
    store: Store,
    index: Index,
    max_instance_bytes: u64,
    /// The free-space reserve of the data directory's file system.
    min_free_bytes: u64,
    next_part: AtomicU64,
    commits: GroupCommit,
}

/// A stored instance, as reported to the caller.
#[derive(Debug, Clone)]
pub struct Stored {
    pub relative_path: PathBuf,
    pub size: u64,
    /// How many instances (this one included) were made durable by the same commit.
    pub committed_with: usize,
}

fn write_refusal(e: impl std::error::Error + 'static) -> Refusal {
    Refusal::new(
        RefusalCause::WriteFailed,
        format!(
            "cannot write to the data directory: {}",
            crate::logging::chain(&e)
        ),
    )
}

impl Ingest {
    pub fn new(
        store: Store,
        index: Index,
        max_instance_bytes: u64,
        min_free_bytes: u64,
    ) -> Arc<Ingest> {
        Arc::new(Ingest {
            store,
            index,
            max_instance_bytes,
            min_free_bytes,
            next_part: AtomicU64::new(0),
            commits: GroupCommit::default(),
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Free bytes of the data directory, or why the store must not take more: below the
    /// reserve, or the file system cannot be asked.
    pub fn free_space(&self) -> Result<u64, String> {
        let free = self
            .store
            .free_bytes()
            .map_err(|e| format!("cannot read the data directory's free space: {e}"))?;
        if free < self.min_free_bytes {
            // Short enough for a C-STORE response's Error Comment (64 characters).
            return Err(format!(
                "free space {} MiB is below the reserve of {} MiB",
                free >> 20,
                self.min_free_bytes >> 20
            ));
        }
        Ok(free)
    }

    /// Start an instance: its file meta group, built from the C-STORE request.
    pub fn begin(&self, request: StoreRequest) -> IncomingInstance {
        let n = self.next_part.fetch_add(1, Ordering::Relaxed);
        let part_path = self
            .store
            .incoming_path(&format!("{}-{n}", std::process::id()));
        let mut incoming = IncomingInstance {
            request,
            part_path,
            sink: None,
            data_offset: 0,
            received: 0,
            refusal: None,
        };
        if let Err(why) = self.free_space() {
            incoming.refusal = Some(Refusal::new(RefusalCause::StorageReserve, why));
            return incoming;
        }
        match file_header(&incoming.request) {
            Ok(header) => {
                incoming.data_offset = header.len() as u64;
                incoming.sink = Some(Sink::Memory(header));
            }
            Err(refusal) => incoming.refusal = Some(refusal),
        }
        incoming
    }

    /// Append received data set bytes. Past the size limit the instance is refused and the rest
    /// of its bytes are counted and dropped, never held.
    pub async fn push(&self, incoming: &mut IncomingInstance, bytes: &[u8]) {
        incoming.received += bytes.len() as u64;
        if incoming.refusal.is_some() {
            return;
        }
        if incoming.received > self.max_instance_bytes {
            let limit_mib = self.max_instance_bytes >> 20;
            self.reject(
                incoming,
                RefusalCause::TooLarge,
                format!("instance larger than the limit of {limit_mib} MiB"),
            )
            .await;
            return;
        }
        let written = match incoming.sink.take() {
            Some(Sink::Memory(mut buffer)) if buffer.len() + bytes.len() <= IN_MEMORY_LIMIT => {
                buffer.extend_from_slice(bytes);
                Ok(Sink::Memory(buffer))
            }
            Some(Sink::Memory(buffer)) => spill(&incoming.part_path, &buffer, bytes)
                .await
                .map(Sink::File),
            Some(Sink::File(mut file)) => file.write_all(bytes).await.map(|()| Sink::File(file)),
            None => return,
        };
        match written {
            Ok(sink) => incoming.sink = Some(sink),
            Err(e) => {
                let refusal = write_refusal(e);
                self.reject(incoming, refusal.cause, refusal.reason).await;
            }
        }
    }

    /// Refuse the instance now; its remaining bytes are dropped as they arrive.
    pub async fn reject(
        &self,
        incoming: &mut IncomingInstance,
        cause: RefusalCause,
        reason: impl Into<String>,
    ) {
        incoming.refusal = Some(Refusal::new(cause, reason));
        discard(incoming).await;
    }

    /// After a refused index write, remove the file just placed unless an earlier, acknowledged
    /// copy of the same instance is indexed at that path: the sender was told it failed and will
    /// send it again, so the store keeps no file the index does not know.
    async fn remove_unindexed(&self, file_path: &str) {
        match self.index.file_is_indexed(file_path).await {
            Ok(false) => {
                if let Err(e) = self.store.remove(Path::new(file_path)) {
                    tracing::warn!(path = %file_path, error = %e, "cannot remove an instance that was not indexed");
                }
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(path = %file_path, error = %crate::logging::chain(&e), "cannot tell whether an instance that was not indexed replaced an indexed copy; left in place");
            }
        }
    }

    /// Drop an instance whose transfer was interrupted.
    pub async fn abandon(&self, mut incoming: IncomingInstance) {
        discard(&mut incoming).await;
    }

    /// The data set is complete: check it, make it durable, place it and index it.
    /// Only an `Ok` may be answered with Success.
    pub async fn finish(&self, mut incoming: IncomingInstance) -> Result<Stored, Refusal> {
        if let Some(refusal) = incoming.refusal.take() {
            return Err(refusal);
        }
        let complete = match incoming.sink.take() {
            Some(Sink::Memory(bytes)) => Complete::Memory(bytes),
            Some(Sink::File(mut file)) => match file.flush().await {
                Ok(()) => Complete::File(file.into_inner().into_std().await),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&incoming.part_path).await;
                    return Err(write_refusal(e));
                }
            },
            None => return Err(Refusal::new(RefusalCause::Malformed, "no data set")),
        };
        let store = self.store.clone();
        let size = incoming.received;
        let data_offset = incoming.data_offset;
        let max_bytes = self.max_instance_bytes;
        let IncomingInstance {
            request, part_path, ..
        } = incoming;
        let record = tokio::task::spawn_blocking(move || {
            place_durably(
                &store,
                complete,
                &part_path,
                &request,
                data_offset,
                size,
                max_bytes,
            )
        })
        .await
        .unwrap_or_else(|e| {
            Err(Refusal::new(
                RefusalCause::Internal,
                format!("storage task failed: {}", crate::logging::chain(&e)),
            ))
        })?;
        let (file_path, file_size) = (record.file_path.clone(), record.file_size);
        let (previous, committed_with) =
            match self.commits.commit(&self.store, &self.index, record).await {
                Ok(indexed) => (indexed.previous, indexed.committed_with),
                Err(refusal) => {
                    self.remove_unindexed(&file_path).await;
                    return Err(refusal);
                }
            };
        if let Some(old) = previous
            && let Err(e) = self.store.remove(Path::new(&old))
        {
            tracing::warn!(path = %old, error = %e, "cannot remove the replaced copy of a re-sent instance");
        }
        Ok(Stored {
            relative_path: PathBuf::from(file_path),
            size: file_size,
            committed_with,
        })
    }
}

/// Check a complete data set as [`Ingest::finish`] does, without storing or indexing it: the
/// same limit, structure walk, inflation and identity checks (the fuzzer drives this).
pub fn examine(
    data_set: &[u8],
    request: &StoreRequest,
    max_bytes: u64,
) -> Result<InstanceRecord, Refusal> {
    if data_set.len() as u64 > max_bytes {
        return Err(Refusal::new(
            RefusalCause::TooLarge,
            "instance larger than the limit",
        ));
    }
    let mut bytes = file_header(request)?;
    let data_offset = bytes.len() as u64;
    bytes.extend_from_slice(data_set);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "msnode-examine-{}-{}.inflated",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    read_record(
        std::io::Cursor::new(&bytes[..]),
        request,
        data_offset,
        data_set.len() as u64,
        max_bytes,
        &scratch,
    )
}

/// Preamble, "DICM" and the file meta group for the announced instance.
fn file_header(request: &StoreRequest) -> Result<Vec<u8>, Refusal> {
    let meta = file_meta(
        &request.sop_class_uid,
        &request.sop_instance_uid,
        &request.transfer_syntax_uid,
    )
    .source_application_entity_title(request.calling_ae.as_str())
    .build()
    .map_err(|e| {
        Refusal::new(
            RefusalCause::Malformed,
            format!("cannot build file meta: {}", crate::logging::chain(&e)),
        )
    })?;
    let mut header = Vec::with_capacity(512);
    header.extend_from_slice(&[0u8; 128]);
    header.extend_from_slice(b"DICM");
    meta.write(&mut header).map_err(|e| {
        Refusal::new(
            RefusalCause::Internal,
            format!("cannot write file meta: {}", crate::logging::chain(&e)),
        )
    })?;
    Ok(header)
}

/// The instance outgrew memory: move what was buffered to its part file and go on there.
async fn spill(
    part_path: &Path,
    buffered: &[u8],
    bytes: &[u8],
) -> std::io::Result<tokio::io::BufWriter<tokio::fs::File>> {
    let file = tokio::fs::File::create(part_path).await?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    file.write_all(buffered).await?;
    file.write_all(bytes).await?;
    Ok(file)
}

/// Drop what was received of a refused or interrupted instance.
async fn discard(incoming: &mut IncomingInstance) {
    if let Some(Sink::File(file)) = incoming.sink.take() {
        drop(file);
        let _ = tokio::fs::remove_file(&incoming.part_path).await;
    }
}

/// A fully received instance.
enum Complete {
    Memory(Vec<u8>),
    /// Written to the part file, not yet synced.
    File(std::fs::File),
}

/// Check the instance, write and fsync its part file, and rename it into place durably.
/// Blocking; whatever fails leaves no part file behind.
fn place_durably(
    store: &Store,
    complete: Complete,
    part_path: &Path,
    request: &StoreRequest,
    data_offset: u64,
    data_set_size: u64,
    max_bytes: u64,
) -> Result<InstanceRecord, Refusal> {
    let placed = match complete {
        Complete::Memory(bytes) => {
            // Checked before it touches the disk: a malformed instance is never written.
            read_record(
                std::io::Cursor::new(&bytes[..]),
                request,
                data_offset,
                data_set_size,
                max_bytes,
                &part_path.with_extension("inflated"),
            )
            .and_then(|record| {
                store
                    .write_instance(Path::new(&record.file_path), &bytes, part_path)
                    .map_err(write_refusal)?;
                Ok(record)
            })
        }
        Complete::File(file) => file
            .sync_all()
            .map_err(write_refusal)
            .and_then(|()| {
                drop(file);
                let file = std::fs::File::open(part_path).map_err(write_refusal)?;
                read_record(
                    file,
                    request,
                    data_offset,
                    data_set_size,
                    max_bytes,
                    &part_path.with_extension("inflated"),
                )
            })
            .and_then(|record| {
                store
                    .move_into_place(part_path, Path::new(&record.file_path))
                    .map_err(write_refusal)?;
                Ok(record)
            }),
    };
    if placed.is_err() {
        let _ = std::fs::remove_file(part_path);
    }
    placed
}

/// Inflate the data set that starts at `data_offset` into `sink`, refused past `max_bytes`.
fn inflate<R: Read + Seek, W: Write>(
    source: &mut R,
    data_offset: u64,
    max_bytes: u64,
    sink: &mut W,
) -> Result<u64, Refusal> {
    structure::inflate_into(source, data_offset, max_bytes, sink).map_err(|e| match e {
        structure::InflateError::TooLarge(_) => Refusal::new(
            RefusalCause::TooLarge,
            format!(
                "the deflated data set inflates to more than the {} MiB limit",
                max_bytes >> 20
            ),
        ),
        malformed => Refusal::new(RefusalCause::Malformed, crate::logging::chain(&malformed)),
    })
}

/// The attributes the index keeps, and the character set their text is in: the only ones read
/// from a received instance, so what else it holds (a huge private element, deep sequences)
/// costs no memory.
const INDEXED: [dicom_core::Tag; 16] = [
    tags::SPECIFIC_CHARACTER_SET,
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::MODALITY,
    tags::STUDY_DESCRIPTION,
    tags::SERIES_DESCRIPTION,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SERIES_NUMBER,
    tags::INSTANCE_NUMBER,
    tags::FRAME_OF_REFERENCE_UID,
];

/// An indexed attribute longer than this is malformed (each is at most 64 characters, or a few
/// values of them).
const MAX_INDEXED_ELEMENT: u64 = 64 * 1024;

fn malformed(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(RefusalCause::Malformed, format!("malformed data set: {e}"))
}

/// Walk the data set that starts at `data_offset` and parse its indexed attributes alone.
fn read_indexed<R: Read + Seek>(
    mut source: R,
    data_offset: u64,
    explicit_vr: bool,
) -> Result<InMemDicomObject, Refusal> {
    let places = structure::check_and_locate(&mut source, data_offset, explicit_vr, &INDEXED)
        .map_err(malformed)?;
    let mut bytes = Vec::new();
    for place in places {
        let length = place.end - place.start;
        if length > MAX_INDEXED_ELEMENT {
            return Err(malformed(format!(
                "an identifying attribute of {length} bytes"
            )));
        }
        source
            .seek(SeekFrom::Start(place.start))
            .and_then(|_| (&mut source).take(length).read_to_end(&mut bytes))
            .map_err(malformed)?;
    }
    let ts = if explicit_vr {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts).map_err(malformed)
}

/// Check a received instance (preamble, file meta group, data set) and build its index record,
/// refusing what is malformed or contradicts the C-STORE request. A deflated data set is
/// inflated, at most to `max_bytes` (the instance size limit counts inflated bytes), into
/// `scratch`, never whole into memory, and checked there.
fn read_record<R: Read + Seek>(
    mut source: R,
    request: &StoreRequest,
    data_offset: u64,
    data_set_size: u64,
    max_bytes: u64,
    scratch: &Path,
) -> Result<InstanceRecord, Refusal> {
    let obj = if request.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LE {
        let inflated = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(scratch)
            .map_err(write_refusal)
            .and_then(|file| {
                let mut sink = std::io::BufWriter::new(file);
                inflate(&mut source, data_offset, max_bytes, &mut sink)?;
                sink.into_inner().map_err(|e| write_refusal(e.into_error()))
            });
        let obj = inflated.and_then(|file| read_indexed(file, 0, true));
        let _ = std::fs::remove_file(scratch);
        obj?
    } else {
        read_indexed(
            source,
            data_offset,
            request.transfer_syntax_uid != IMPLICIT_VR_LE,
        )?
    };
    let mismatch = |what: &str| Refusal::new(RefusalCause::DoesNotMatch, what.to_string());
    let sop_instance =
        text(&obj, tags::SOP_INSTANCE_UID).ok_or_else(|| mismatch("no SOP Instance UID"))?;
    if sop_instance != request.sop_instance_uid {
        return Err(mismatch(
            "SOP Instance UID differs from the C-STORE request",
        ));
    }
    let sop_class = text(&obj, tags::SOP_CLASS_UID).ok_or_else(|| mismatch("no SOP Class UID"))?;
    if sop_class != request.sop_class_uid {
        return Err(mismatch("SOP Class UID differs from the C-STORE request"));
    }
    let study =
        text(&obj, tags::STUDY_INSTANCE_UID).ok_or_else(|| mismatch("no Study Instance UID"))?;
    let series =
        text(&obj, tags::SERIES_INSTANCE_UID).ok_or_else(|| mismatch("no Series Instance UID"))?;
    for (what, uid) in [
        ("Study Instance UID", &study),
        ("Series Instance UID", &series),
        ("SOP Instance UID", &sop_instance),
    ] {
        uid::check(what, uid)
            .map_err(|e| Refusal::new(RefusalCause::DoesNotMatch, e.to_string()))?;
    }
    let relative = Store::instance_path(&study, &series, &sop_instance)
        .map_err(|e| Refusal::new(RefusalCause::DoesNotMatch, e.to_string()))?;
    Ok(InstanceRecord {
        patient_id: text(&obj, tags::PATIENT_ID).unwrap_or_default(),
        issuer_of_patient_id: text(&obj, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(),
        study_instance_uid: study,
        study_date: text(&obj, tags::STUDY_DATE),
        study_time: text(&obj, tags::STUDY_TIME),
        accession_number: text(&obj, tags::ACCESSION_NUMBER),
        study_description: text(&obj, tags::STUDY_DESCRIPTION),
        series_instance_uid: series,
        modality: text(&obj, tags::MODALITY),
        series_number: int(&obj, tags::SERIES_NUMBER),
        series_description: text(&obj, tags::SERIES_DESCRIPTION),
        frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID),
        sop_class_uid: sop_class,
        sop_instance_uid: sop_instance,
        instance_number: int(&obj, tags::INSTANCE_NUMBER),
        transfer_syntax_uid: request.transfer_syntax_uid.clone(),
        file_path: relative.to_string_lossy().into_owned(),
        file_size: data_offset + data_set_size,
        calling_ae: request.calling_ae.clone(),
        association: request.association,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn deflated(bytes: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_deflate_bomb_is_refused_at_the_inflated_limit() {
        // 64 MiB of zeros deflate to about 64 KiB.
        let bomb = deflated(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let mut source = Cursor::new([vec![0u8; 10], bomb].concat());
        let refusal = inflate(&mut source, 10, 8 << 20, &mut std::io::sink()).unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::TooLarge);
        assert!(refusal.reason.contains("8 MiB"), "{}", refusal.reason);

        let small = b"within the limit".repeat(100);
        let mut source = Cursor::new([vec![0u8; 3], deflated(&small)].concat());
        let mut inflated = Vec::new();
        inflate(&mut source, 3, 8 << 20, &mut inflated).unwrap();
        assert_eq!(inflated, small);
        let mut garbage = Cursor::new(vec![0xFFu8; 100]);
        let refusal = inflate(&mut garbage, 0, 8 << 20, &mut std::io::sink()).unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::Malformed);
    }
}
