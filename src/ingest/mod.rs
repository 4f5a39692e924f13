//! Receiving one instance: stream its data set to a part file behind a file meta group, check it,
//! place it durably and index it. Independent of the network, so the SCP only feeds it bytes.
//!
//! The data set is stored exactly as received (no re-encoding): the file is preamble + "DICM" +
//! group 0002 naming the negotiated transfer syntax + the received bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use tokio::io::AsyncWriteExt;

mod structure;

use crate::index::{Index, InstanceRecord};
use crate::net::dimse::{Status, trim_padding};
use crate::net::syntaxes::{DEFLATED_EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::store::{Store, check_uid};

/// Our implementation class UID, written into every file meta group and association.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.266657200200615317207891857678802307883";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("MSNODE_", env!("CARGO_PKG_VERSION"));

/// Why an instance was not stored: the DIMSE status to answer and a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    pub reason: String,
}

impl Refusal {
    fn new(status: Status, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
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

/// An instance whose data set is streaming in.
pub struct IncomingInstance {
    request: StoreRequest,
    part_path: PathBuf,
    /// `None` once the instance was refused: further bytes are discarded.
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    /// Where the data set starts in the part file (after preamble and file meta group).
    data_offset: u64,
    received: u64,
    refusal: Option<Refusal>,
}

/// The receive -> index stage.
pub struct Ingest {
    store: Store,
    index: Index,
    max_instance_bytes: u64,
    next_part: AtomicU64,
}

/// A stored instance, as reported to the caller.
#[derive(Debug, Clone)]
pub struct Stored {
    pub relative_path: PathBuf,
    pub size: u64,
}

impl Ingest {
    pub fn new(store: Store, index: Index, max_instance_bytes: u64) -> Arc<Ingest> {
        Arc::new(Ingest {
            store,
            index,
            max_instance_bytes,
            next_part: AtomicU64::new(0),
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Open the part file and write the file meta group for the announced instance.
    pub async fn begin(&self, request: StoreRequest) -> IncomingInstance {
        let n = self.next_part.fetch_add(1, Ordering::Relaxed);
        let part_path = self
            .store
            .incoming_path(&format!("{}-{n}", std::process::id()));
        let mut incoming = IncomingInstance {
            request,
            part_path,
            file: None,
            data_offset: 0,
            received: 0,
            refusal: None,
        };
        match self.open_part(&incoming.request, &incoming.part_path).await {
            Ok((file, data_offset)) => {
                incoming.file = Some(file);
                incoming.data_offset = data_offset;
            }
            Err(refusal) => incoming.refusal = Some(refusal),
        }
        incoming
    }

    async fn open_part(
        &self,
        request: &StoreRequest,
        part_path: &Path,
    ) -> Result<(tokio::io::BufWriter<tokio::fs::File>, u64), Refusal> {
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(request.sop_class_uid.as_str())
            .media_storage_sop_instance_uid(request.sop_instance_uid.as_str())
            .transfer_syntax(request.transfer_syntax_uid.as_str())
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
            .source_application_entity_title(request.calling_ae.as_str())
            .build()
            .map_err(|e| {
                Refusal::new(
                    Status::CannotUnderstand,
                    format!("cannot build file meta: {e}"),
                )
            })?;
        let mut header = Vec::with_capacity(512);
        header.extend_from_slice(&[0u8; 128]);
        header.extend_from_slice(b"DICM");
        meta.write(&mut header).map_err(|e| {
            Refusal::new(
                Status::CannotUnderstand,
                format!("cannot write file meta: {e}"),
            )
        })?;
        let out_of_space = |e: std::io::Error| {
            Refusal::new(
                Status::OutOfResources,
                format!("cannot write to the data directory: {e}"),
            )
        };
        let file = tokio::fs::File::create(part_path)
            .await
            .map_err(out_of_space)?;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(&header).await.map_err(out_of_space)?;
        Ok((file, header.len() as u64))
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
                Status::OutOfResources,
                format!("instance larger than the limit of {limit_mib} MiB"),
            )
            .await;
            return;
        }
        if let Some(file) = incoming.file.as_mut()
            && let Err(e) = file.write_all(bytes).await
        {
            self.reject(
                incoming,
                Status::OutOfResources,
                format!("cannot write to the data directory: {e}"),
            )
            .await;
        }
    }

    /// Refuse the instance now; its remaining bytes are dropped as they arrive.
    pub async fn reject(
        &self,
        incoming: &mut IncomingInstance,
        status: Status,
        reason: impl Into<String>,
    ) {
        incoming.refusal = Some(Refusal::new(status, reason));
        incoming.file = None;
        let _ = tokio::fs::remove_file(&incoming.part_path).await;
    }

    /// Drop an instance whose transfer was interrupted.
    pub async fn abandon(&self, incoming: IncomingInstance) {
        drop(incoming.file);
        let _ = tokio::fs::remove_file(&incoming.part_path).await;
    }

    /// The data set is complete: make it durable, check it, place it and index it.
    /// Only an `Ok` may be answered with Success.
    pub async fn finish(&self, mut incoming: IncomingInstance) -> Result<Stored, Refusal> {
        if let Some(refusal) = incoming.refusal.take() {
            return Err(refusal);
        }
        let Some(mut file) = incoming.file.take() else {
            return Err(Refusal::new(Status::ProcessingFailure, "no part file"));
        };
        let io_refusal = |e: std::io::Error| {
            Refusal::new(
                Status::OutOfResources,
                format!("cannot write to the data directory: {e}"),
            )
        };
        let flushed = file.flush().await;
        let std_file = file.into_inner().into_std().await;
        let part_path = incoming.part_path.clone();
        let request = incoming.request.clone();
        let store = self.store.clone();
        let size = incoming.received;
        let data_offset = incoming.data_offset;
        let placed = match flushed {
            Err(e) => Err(io_refusal(e)),
            Ok(()) => tokio::task::spawn_blocking(move || {
                std_file.sync_all().map_err(io_refusal)?;
                drop(std_file);
                let record = read_record(&part_path, &request, data_offset, size)?;
                store
                    .place(&part_path, Path::new(&record.file_path))
                    .map_err(|e| Refusal::new(Status::OutOfResources, e.to_string()))?;
                Ok(record)
            })
            .await
            .unwrap_or_else(|e| {
                Err(Refusal::new(
                    Status::ProcessingFailure,
                    format!("storage task failed: {e}"),
                ))
            }),
        };
        let record = match placed {
            Ok(record) => record,
            Err(refusal) => {
                let _ = tokio::fs::remove_file(&incoming.part_path).await;
                return Err(refusal);
            }
        };
        let previous = self.index.record_instance(&record).await.map_err(|e| {
            Refusal::new(
                Status::OutOfResources,
                format!("cannot index the instance: {e}"),
            )
        })?;
        if let Some(old) = previous
            && let Err(e) = self.store.remove(Path::new(&old))
        {
            tracing::warn!(path = %old, error = %e, "cannot remove the replaced copy of a re-sent instance");
        }
        Ok(Stored {
            relative_path: PathBuf::from(record.file_path),
            size: record.file_size,
        })
    }
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| trim_padding(s.trim_start()).to_string())
        .filter(|s| !s.is_empty())
}

fn integer(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

/// Parse the written part file and build its index record, refusing what is malformed or
/// contradicts the C-STORE request.
fn read_record(
    part_path: &Path,
    request: &StoreRequest,
    data_offset: u64,
    data_set_size: u64,
) -> Result<InstanceRecord, Refusal> {
    let malformed =
        |e: String| Refusal::new(Status::CannotUnderstand, format!("malformed data set: {e}"));
    let deflated = request.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LE;
    let options = if deflated {
        // A deflated stream cannot be walked without inflating it: parse it whole instead.
        OpenFileOptions::new()
    } else {
        let file = std::fs::File::open(part_path).map_err(|e| malformed(e.to_string()))?;
        structure::check_data_set(
            file,
            data_offset,
            request.transfer_syntax_uid != IMPLICIT_VR_LE,
        )
        .map_err(malformed)?;
        // The structure is sound: attributes before the pixel data are all the index needs.
        OpenFileOptions::new().read_until(tags::PIXEL_DATA)
    };
    let obj = options
        .open_file(part_path)
        .map_err(|e| malformed(e.to_string()))?;
    let mismatch = |what: &str| Refusal::new(Status::DataSetDoesNotMatchSopClass, what.to_string());
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
        check_uid(what, uid)
            .map_err(|e| Refusal::new(Status::DataSetDoesNotMatchSopClass, e.to_string()))?;
    }
    let relative = Store::instance_path(&study, &series, &sop_instance)
        .map_err(|e| Refusal::new(Status::DataSetDoesNotMatchSopClass, e.to_string()))?;
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
        series_number: integer(&obj, tags::SERIES_NUMBER),
        series_description: text(&obj, tags::SERIES_DESCRIPTION),
        frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID),
        sop_class_uid: sop_class,
        sop_instance_uid: sop_instance,
        instance_number: integer(&obj, tags::INSTANCE_NUMBER),
        transfer_syntax_uid: request.transfer_syntax_uid.clone(),
        file_path: relative.to_string_lossy().into_owned(),
        file_size: data_offset + data_set_size,
        calling_ae: request.calling_ae.clone(),
        association: request.association,
    })
}
