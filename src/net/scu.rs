//! The DICOM client side: C-ECHO a peer, and C-STORE files to it exactly as they are on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_object::meta::FileMetaTable;
use dicom_ul::ClientAssociationOptions;
use dicom_ul::association::client::{AsyncClientAssociation, AsyncTlsStream};
use dicom_ul::association::{AsyncPDataWriter, Error as UlError};
use dicom_ul::pdu::{
    PDataValueType, Pdu, PresentationContextNegotiated, PresentationContextResultReason,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::UlFailure;
use super::dimse::{self, Command};
use super::tls::{self, TlsError};
use crate::config::TlsConfig;
use crate::dicom::sop_class::VERIFICATION;
use crate::dicom::trim_padding;

/// Where to reach a peer.
#[derive(Debug, Clone)]
pub struct Remote {
    pub calling_ae: String,
    pub called_ae: String,
    /// host:port
    pub address: String,
    pub max_pdu: u32,
    pub timeout: Duration,
    /// Set for a peer with `tls = true`.
    pub tls: Option<PeerTls>,
}

/// How to reach a TLS peer: the name its certificate must carry, and the files of `[tls]`
/// (read for each association, so renewed certificates are used without a restart).
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub server_name: String,
    pub files: TlsConfig,
}

/// An association msnode opened, over TCP or over TLS.
pub(super) enum ClientAssociation {
    Tcp(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<AsyncTlsStream>>),
}

impl ClientAssociation {
    pub(super) fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        match self {
            ClientAssociation::Tcp(a) => a.presentation_contexts(),
            ClientAssociation::Tls(a) => a.presentation_contexts(),
        }
    }

    pub(super) async fn send(&mut self, pdu: &Pdu) -> Result<(), UlError> {
        match self {
            ClientAssociation::Tcp(a) => a.send(pdu).await,
            ClientAssociation::Tls(a) => a.send(pdu).await,
        }
    }

    pub(super) async fn receive(&mut self) -> Result<Pdu, UlError> {
        match self {
            ClientAssociation::Tcp(a) => a.receive().await,
            ClientAssociation::Tls(a) => a.receive().await,
        }
    }

    /// A data set in as many P-DATA PDUs as the peer's maximum length needs.
    pub(super) async fn send_data(&mut self, context_id: u8, data: &[u8]) -> std::io::Result<()> {
        match self {
            ClientAssociation::Tcp(a) => write_data(a.send_pdata(context_id), data).await,
            ClientAssociation::Tls(a) => write_data(a.send_pdata(context_id), data).await,
        }
    }

    pub(super) async fn release(self) -> Result<(), UlError> {
        match self {
            ClientAssociation::Tcp(a) => a.release().await,
            ClientAssociation::Tls(a) => a.release().await,
        }
    }

    pub(super) async fn abort(self) -> Result<(), UlError> {
        match self {
            ClientAssociation::Tcp(a) => a.abort().await,
            ClientAssociation::Tls(a) => a.abort().await,
        }
    }
}

async fn write_data<W: AsyncWrite + Unpin>(
    mut writer: AsyncPDataWriter<W>,
    data: &[u8],
) -> std::io::Result<()> {
    writer.write_all(data).await?;
    writer.finish().await
}

#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("cannot associate with {called_ae} at {address}")]
    Associate {
        called_ae: String,
        address: String,
        source: UlFailure,
    },
    #[error("association with {0} failed")]
    Association(String, #[source] UlFailure),
    #[error("connection to {0} failed")]
    Io(String, #[source] std::io::Error),
    #[error(transparent)]
    Dimse(#[from] dimse::DimseError),
    #[error("the peer answered with an unexpected {0} PDU")]
    UnexpectedPdu(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("{path}: not a DICOM file with a file meta group ({reason})")]
    NotDicom { path: PathBuf, reason: &'static str },
    #[error("{path}: not a DICOM file with a file meta group")]
    BadMeta {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up TLS for {0}")]
    Tls(String, #[source] Box<TlsError>),
    #[error("the peer accepted none of the proposed presentation contexts")]
    NothingAccepted,
    #[error("{0} distinct SOP class / transfer syntax pairs; one association carries at most 128")]
    TooManyContexts(usize),
}

fn associate_error(remote: &Remote, source: UlError) -> ScuError {
    ScuError::Associate {
        called_ae: remote.called_ae.clone(),
        address: remote.address.clone(),
        source: source.into(),
    }
}

pub(super) async fn connect(
    remote: &Remote,
    options: ClientAssociationOptions<'_>,
) -> Result<ClientAssociation, ScuError> {
    let options = options
        .calling_ae_title(remote.calling_ae.clone())
        .called_ae_title(remote.called_ae.clone())
        .max_pdu_length(remote.max_pdu)
        .read_timeout(remote.timeout)
        .write_timeout(remote.timeout)
        .connection_timeout(remote.timeout);
    // Without TCP_NODELAY each message waits for the peer's delayed ACK (about 40 ms).
    let nodelay = |socket: &TcpStream| {
        socket
            .set_nodelay(true)
            .map_err(|e| ScuError::Io(remote.called_ae.clone(), e))
    };
    match &remote.tls {
        None => {
            let mut association = options
                .establish_async(remote.address.as_str())
                .await
                .map_err(|e| associate_error(remote, e))?;
            nodelay(association.inner_stream())?;
            Ok(ClientAssociation::Tcp(Box::new(association)))
        }
        Some(peer) => {
            let config = tls::client_config(&peer.files)
                .map_err(|e| ScuError::Tls(remote.called_ae.clone(), Box::new(e)))?;
            let mut association = options
                .tls_config(config)
                .server_name(&peer.server_name)
                .establish_tls_async(remote.address.as_str())
                .await
                .map_err(|e| associate_error(remote, e))?;
            nodelay(association.inner_stream().get_ref().0)?;
            Ok(ClientAssociation::Tls(Box::new(association)))
        }
    }
}

/// Read PDUs until a complete command set arrives.
pub(super) async fn receive_command(
    association: &mut ClientAssociation,
    remote: &Remote,
) -> Result<Command, ScuError> {
    let mut bytes = Vec::new();
    loop {
        let pdu = association
            .receive()
            .await
            .map_err(|e| ScuError::Association(remote.called_ae.clone(), e.into()))?;
        match pdu {
            Pdu::PData { data } => {
                for value in data {
                    if value.value_type == PDataValueType::Command {
                        bytes.extend_from_slice(&value.data);
                        if value.is_last {
                            return Ok(Command::decode(&bytes)?);
                        }
                    }
                }
            }
            other => return Err(ScuError::UnexpectedPdu(super::pdu_kind(&other))),
        }
    }
}

pub(super) async fn send_command(
    association: &mut ClientAssociation,
    remote: &Remote,
    presentation_context_id: u8,
    data: Vec<u8>,
) -> Result<(), ScuError> {
    association
        .send(&dimse::command_pdu(presentation_context_id, data))
        .await
        .map_err(|e| ScuError::Association(remote.called_ae.clone(), e.into()))
}

/// C-ECHO: returns the round-trip time of the whole exchange and the status the peer answered.
pub async fn echo(remote: &Remote) -> Result<(Duration, u16), ScuError> {
    let started = Instant::now();
    let options = ClientAssociationOptions::new().with_abstract_syntax(VERIFICATION);
    let mut association = connect(remote, options).await?;
    let context_id = association
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.id)
        .ok_or(ScuError::NothingAccepted)?;
    send_command(
        &mut association,
        remote,
        context_id,
        dimse::echo_request(1)?,
    )
    .await?;
    let response = receive_command(&mut association, remote).await?;
    let _ = association.release().await;
    Ok((started.elapsed(), response.status.unwrap_or(0xFFFF)))
}

/// A DICOM file ready to send: its identity and where its data set starts.
#[derive(Debug, Clone)]
pub struct OutgoingFile {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
}

/// Read the file meta group of `path`.
pub fn inspect(path: &Path) -> Result<OutgoingFile, ScuError> {
    let bad_meta = |source: Box<dyn std::error::Error + Send + Sync>| ScuError::BadMeta {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(|source| ScuError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut preamble = [0u8; 128];
    std::io::Read::read_exact(&mut file, &mut preamble).map_err(|e| bad_meta(Box::new(e)))?;
    let meta = FileMetaTable::from_reader(std::io::BufReader::new(file))
        .map_err(|e| bad_meta(Box::new(e)))?;
    Ok(OutgoingFile {
        path: path.to_owned(),
        sop_class_uid: trim_padding(meta.media_storage_sop_class_uid()).to_string(),
        sop_instance_uid: trim_padding(meta.media_storage_sop_instance_uid()).to_string(),
        transfer_syntax_uid: trim_padding(meta.transfer_syntax()).to_string(),
    })
}

/// The data set bytes of a DICOM file: everything after the file meta group.
pub(super) fn data_set_bytes(path: &Path) -> Result<Vec<u8>, ScuError> {
    let bytes = std::fs::read(path).map_err(|source| ScuError::Read {
        path: path.to_owned(),
        source,
    })?;
    // Preamble (128) + "DICM" (4) + (0002,0000) UL element (12) whose value is the group's remaining length.
    let group_length = bytes
        .get(140..144)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| ScuError::NotDicom {
            path: path.to_owned(),
            reason: "file too short",
        })?;
    let start = 144 + group_length;
    if bytes.get(132..136) != Some(&[0x02, 0x00, 0x00, 0x00]) || start > bytes.len() {
        return Err(ScuError::NotDicom {
            path: path.to_owned(),
            reason: "no File Meta Information Group Length",
        });
    }
    Ok(bytes[start..].to_vec())
}

/// Every file under the given paths (folders are walked), sorted for a stable order.
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        for entry in walkdir::WalkDir::new(path)
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    files
}

/// The outcome of sending one file.
#[derive(Debug, Clone)]
pub struct SendResult {
    pub path: PathBuf,
    /// DIMSE status from the peer, or the local reason it was not sent.
    pub outcome: Result<u16, String>,
}

/// Why one file was not stored on an open association.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// This file could not be sent; the association is still usable for the next one.
    #[error("{0}")]
    NotSent(String),
    /// The association failed (abort, timeout, broken connection): nothing more can be sent on
    /// it, and whether the peer kept this file is unknown.
    #[error(transparent)]
    Association(ScuError),
}

/// An association open for C-STOREs of a known set of files, one file at a time, so that a
/// caller can record each answer as it arrives.
pub struct StoreAssociation<'r> {
    association: ClientAssociation,
    remote: &'r Remote,
    /// (SOP class, transfer syntax) -> accepted presentation context id.
    accepted: BTreeMap<(String, String), u8>,
    stores_sent: usize,
}

impl<'r> StoreAssociation<'r> {
    /// Associate with `remote`, proposing one context per SOP class / transfer syntax pair
    /// among `files` (no transcoding).
    pub async fn open(
        remote: &'r Remote,
        files: &[OutgoingFile],
    ) -> Result<StoreAssociation<'r>, ScuError> {
        let mut proposed: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.sop_class_uid.clone(), f.transfer_syntax_uid.clone()))
            .collect();
        proposed.sort_unstable();
        proposed.dedup();
        if proposed.len() > 128 {
            return Err(ScuError::TooManyContexts(proposed.len()));
        }
        let mut options = ClientAssociationOptions::new();
        for (sop_class, ts) in &proposed {
            options = options.with_presentation_context(sop_class.clone(), vec![ts.clone()]);
        }
        let association = connect(remote, options).await?;
        // Presentation context ids are odd numbers 1, 3, 5... in the order proposed.
        let accepted: BTreeMap<(String, String), u8> = association
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|pc| {
                let index = (pc.id as usize).checked_sub(1)? / 2;
                proposed.get(index).map(|key| (key.clone(), pc.id))
            })
            .collect();
        if accepted.is_empty() {
            let _ = association.abort().await;
            return Err(ScuError::NothingAccepted);
        }
        Ok(StoreAssociation {
            association,
            remote,
            accepted,
            stores_sent: 0,
        })
    }

    /// C-STORE one file and wait for its response status. A C-MOVE's sub-operation names the
    /// move's originator (AE title and message ID).
    pub async fn store(
        &mut self,
        file: &OutgoingFile,
        move_originator: Option<(&str, u16)>,
    ) -> Result<u16, StoreFailure> {
        let key = (file.sop_class_uid.clone(), file.transfer_syntax_uid.clone());
        let Some(&context_id) = self.accepted.get(&key) else {
            return Err(StoreFailure::NotSent(format!(
                "the peer did not accept SOP class {} in transfer syntax {}",
                file.sop_class_uid, file.transfer_syntax_uid
            )));
        };
        let data = data_set_bytes(&file.path)
            .map_err(|e| StoreFailure::NotSent(crate::logging::chain(&e)))?;
        let message_id = (self.stores_sent % 0xFFFF) as u16 + 1;
        self.stores_sent += 1;
        let command = dimse::store_request(
            message_id,
            &file.sop_class_uid,
            &file.sop_instance_uid,
            move_originator,
        )
        .map_err(|e| StoreFailure::NotSent(crate::logging::chain(&e)))?;
        self.exchange(context_id, command, &data)
            .await
            .map_err(StoreFailure::Association)
    }

    async fn exchange(
        &mut self,
        context_id: u8,
        command: Vec<u8>,
        data: &[u8],
    ) -> Result<u16, ScuError> {
        let called_ae = &self.remote.called_ae;
        send_command(&mut self.association, self.remote, context_id, command).await?;
        // The P-DATA writer has no timeout of its own: a peer that stops reading must not hold
        // a delivery for ever.
        let timeout = self.remote.timeout;
        let written = tokio::time::timeout(timeout, self.association.send_data(context_id, data))
            .await
            .map_err(|_| ScuError::Timeout(format!("{called_ae} to take the data set")))?;
        written.map_err(|e| ScuError::Io(called_ae.clone(), e))?;
        let response = receive_command(&mut self.association, self.remote).await?;
        Ok(response.status.unwrap_or(0xFFFF))
    }

    /// Release the association; a peer that does not answer the release is not an error, since
    /// every store was already answered.
    pub async fn release(self) {
        let _ = self.association.release().await;
    }

    /// Abort after a failure, so the peer does not wait for its own timeout.
    pub async fn abort(self) {
        let _ = self.association.abort().await;
    }
}

/// C-STORE every file in one association, each in its own transfer syntax (no transcoding).
pub async fn send(remote: &Remote, files: &[OutgoingFile]) -> Result<Vec<SendResult>, ScuError> {
    send_for(remote, files, None).await
}

/// [`send`] on behalf of a C-MOVE: each C-STORE names the move's originator (AE title and
/// message ID) when one is given. Fails only when no association could be made; when it breaks
/// half-way, the files already answered keep their status and the rest say why they were not sent.
pub async fn send_for(
    remote: &Remote,
    files: &[OutgoingFile],
    move_originator: Option<(&str, u16)>,
) -> Result<Vec<SendResult>, ScuError> {
    let mut association = StoreAssociation::open(remote, files).await?;
    let mut results = Vec::with_capacity(files.len());
    let mut broken: Option<String> = None;
    for file in files {
        let outcome = match &broken {
            Some(why) => Err(format!("not sent: {why}")),
            None => match association.store(file, move_originator).await {
                Ok(status) => Ok(status),
                Err(StoreFailure::NotSent(why)) => Err(why),
                Err(StoreFailure::Association(e)) => {
                    let why = crate::logging::chain(&e);
                    broken = Some(why.clone());
                    Err(why)
                }
            },
        };
        results.push(SendResult {
            path: file.path.clone(),
            outcome,
        });
    }
    match broken {
        None => association.release().await,
        Some(_) => association.abort().await,
    }
    Ok(results)
}
