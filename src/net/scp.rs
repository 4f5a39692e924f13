//! The DICOM listener: accepts connections, negotiates associations with known peers only, and
//! answers C-ECHO and C-STORE. Each association runs in its own task; the number of concurrent
//! associations is bounded; shutdown stops accepting and lets running associations finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::ServerAssociationOptions;
use dicom_ul::association::Error as UlError;
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu,
    UserIdentity,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::dimse::{self, Command};
use super::syntaxes;
use super::{UlFailure, pdu_kind};
use crate::config::Config;
use crate::dicom::{Status, trim_padding};
use crate::ingest::{IncomingInstance, Ingest, StoreRequest};
use crate::logging::chain;

/// Who may associate: the called AE title must be ours and the calling AE a peer allowed to store.
/// It also remembers the titles it was shown, so that a rejection can be audited.
struct PeerAccess {
    allowed_callers: Arc<Vec<String>>,
    seen: Arc<Mutex<Option<(String, String)>>>,
}

impl AccessControl for PeerAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let calling = trim_padding(calling_ae_title.trim_start());
        let called = trim_padding(called_ae_title.trim_start());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((calling.to_string(), called.to_string()));
        }
        if called != this_ae_title {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed_callers.iter().any(|ae| ae == calling) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Shared state of the listener.
pub struct Scp {
    config: Arc<Config>,
    ingest: Arc<Ingest>,
    allowed_callers: Arc<Vec<String>>,
}

impl Scp {
    pub fn new(config: Arc<Config>, ingest: Arc<Ingest>) -> Arc<Scp> {
        let allowed_callers = config
            .peers
            .iter()
            .filter(|p| p.store_to_us)
            .map(|p| p.ae_title.clone())
            .collect();
        Arc::new(Scp {
            config,
            ingest,
            allowed_callers: Arc::new(allowed_callers),
        })
    }

    /// Accept connections until `shutdown` completes, then wait (up to `grace`) for running
    /// associations to end.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) {
        let limit = self.config.network.max_associations;
        let slots = Arc::new(Semaphore::new(limit));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (socket, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let scp = self.clone();
            tokio::spawn(async move {
                scp.handle_connection(socket, peer).await;
                drop(permit);
            });
        }
        info!("no longer accepting associations; waiting for running ones to end");
        match tokio::time::timeout(grace, slots.acquire_many(limit as u32)).await {
            Ok(_) => info!("all associations ended"),
            Err(_) => warn!("associations still running after the grace period; stopping anyway"),
        }
    }

    fn server_options(
        &self,
        seen: Arc<Mutex<Option<(String, String)>>>,
    ) -> ServerAssociationOptions<'static, PeerAccess, DefaultNegotiation> {
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(PeerAccess {
                allowed_callers: self.allowed_callers.clone(),
                seen,
            })
            .ae_title(self.config.node.ae_title.clone())
            .max_pdu_length(self.config.network.max_pdu)
            // Enforced on every read after the association is up: an idle or stuck peer is dropped.
            .read_timeout(self.config.network.idle_timeout)
            .write_timeout(self.config.network.idle_timeout);
        for uid in syntaxes::scp_abstract_syntaxes() {
            options = options.with_abstract_syntax(uid);
        }
        for uid in syntaxes::ACCEPTED_TRANSFER_SYNTAXES {
            options = options.with_transfer_syntax(uid);
        }
        options
    }

    async fn handle_connection(self: Arc<Self>, socket: TcpStream, peer: SocketAddr) {
        if let Err(e) = socket.set_nodelay(true) {
            warn!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let seen = Arc::new(Mutex::new(None));
        let options = self.server_options(seen.clone());
        let index = self.ingest.index();
        let established = tokio::time::timeout(
            self.config.network.association_timeout,
            options.establish_async(socket),
        )
        .await;
        let (calling, called) = seen
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(|| ("?".into(), "?".into()));
        let association = match established {
            Ok(Ok(association)) => association,
            Ok(Err(e)) => {
                let outcome = match &e {
                    UlError::Rejected { association_rj, .. } => match &association_rj.source {
                        AssociationRJSource::ServiceUser(reason) => format!("rejected: {reason}"),
                        other => format!("rejected: {other:?}"),
                    },
                    _ => format!("failed: {}", chain(&UlFailure::from(e))),
                };
                warn!(%peer, calling_ae = %calling, called_ae = %called, "association {outcome}");
                if let Err(e) = index
                    .record_refused_association(&calling, &called, &peer.to_string(), &outcome)
                    .await
                {
                    error!(error = %chain(&e), "cannot audit a rejected association");
                }
                return;
            }
            Err(_) => {
                warn!(%peer, "no association request within the association timeout");
                return;
            }
        };
        let audit_id = match index
            .begin_association(&calling, &called, &peer.to_string(), "accepted")
            .await
        {
            Ok(id) => Some(id),
            Err(e) => {
                error!(error = %chain(&e), "cannot audit an association");
                None
            }
        };
        let span =
            info_span!("association", id = audit_id.unwrap_or(-1), calling_ae = %calling, %peer);
        let outcome = AssociationHandler {
            ingest: &self.ingest,
            calling_ae: calling.clone(),
            audit_id,
            stored: 0,
            refused: 0,
        }
        .run(association)
        .instrument(span)
        .await;
        if let Some(id) = audit_id
            && let Err(e) = index
                .end_association(id, outcome.stored, outcome.refused, &outcome.text)
                .await
        {
            error!(error = %chain(&e), "cannot audit the end of an association");
        }
    }
}

/// How an association ended, for the audit trail.
struct Outcome {
    text: String,
    stored: u64,
    refused: u64,
}

/// A C-STORE whose data set is still arriving.
struct PendingStore {
    command: Command,
    presentation_context_id: u8,
    incoming: IncomingInstance,
}

/// A command set is a few hundred bytes; this bounds what a peer can make us hold for one.
const MAX_COMMAND_SET_BYTES: usize = 64 * 1024;

/// Why the association must be aborted: the peer broke the protocol.
#[derive(Debug, thiserror::Error)]
enum ProtocolViolation {
    #[error(transparent)]
    Command(#[from] dimse::DimseError),
    #[error("data set fragment without a C-STORE request")]
    UnexpectedData,
    #[error("a command set of more than {MAX_COMMAND_SET_BYTES} bytes")]
    CommandTooLarge,
    #[error("a new command before the data set of the C-STORE in progress ended")]
    InterleavedCommand,
    #[error("command for an unknown presentation context {0}")]
    UnknownPresentationContext(u8),
    #[error("cannot send a response")]
    Send(#[source] UlFailure),
}

struct AssociationHandler<'a> {
    ingest: &'a Ingest,
    calling_ae: String,
    audit_id: Option<i64>,
    stored: u64,
    refused: u64,
}

type ServerAssociation = dicom_ul::association::server::AsyncServerAssociation<TcpStream>;

impl AssociationHandler<'_> {
    async fn run(mut self, mut association: ServerAssociation) -> Outcome {
        info!(
            presentation_contexts = association.presentation_contexts().len(),
            "association accepted"
        );
        let mut command_bytes: Vec<u8> = Vec::new();
        let mut pending: Option<PendingStore> = None;
        let text = loop {
            let pdu = match association.receive().await {
                Ok(pdu) => pdu,
                Err(UlError::Timeout { .. }) => {
                    warn!("association idle for too long; aborting");
                    let _ = association.abort().await;
                    break "timed out".to_string();
                }
                Err(e) => {
                    let why = chain(&UlFailure::from(e));
                    warn!(error = %why, "association broken");
                    break format!("broken: {why}");
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    if let Err(violation) = self
                        .handle_pdata(&mut association, data, &mut command_bytes, &mut pending)
                        .await
                    {
                        let violation = chain(&violation);
                        warn!(%violation, "protocol violation; aborting");
                        let _ = association.abort().await;
                        break format!("aborted: {violation}");
                    }
                }
                Pdu::ReleaseRQ => {
                    let _ = association.send(&Pdu::ReleaseRP).await;
                    break "released".to_string();
                }
                Pdu::AbortRQ { source } => {
                    warn!(?source, "peer aborted the association");
                    break "aborted by peer".to_string();
                }
                other => {
                    warn!(pdu = %pdu_kind(&other), "unexpected PDU; aborting");
                    let _ = association.abort().await;
                    break "aborted: unexpected PDU".to_string();
                }
            }
        };
        if let Some(pending) = pending {
            warn!(sop_instance_uid = ?pending.command.affected_sop_instance_uid, "transfer interrupted; nothing stored");
            self.ingest.abandon(pending.incoming).await;
        }
        info!(outcome = %text, stored = self.stored, refused = self.refused, "association ended");
        Outcome {
            text,
            stored: self.stored,
            refused: self.refused,
        }
    }

    async fn handle_pdata(
        &mut self,
        association: &mut ServerAssociation,
        values: Vec<PDataValue>,
        command_bytes: &mut Vec<u8>,
        pending: &mut Option<PendingStore>,
    ) -> Result<(), ProtocolViolation> {
        for value in values {
            match value.value_type {
                PDataValueType::Command => {
                    if command_bytes.len() + value.data.len() > MAX_COMMAND_SET_BYTES {
                        return Err(ProtocolViolation::CommandTooLarge);
                    }
                    command_bytes.extend_from_slice(&value.data);
                    if value.is_last {
                        let command = Command::decode(command_bytes)?;
                        command_bytes.clear();
                        self.handle_command(
                            association,
                            command,
                            value.presentation_context_id,
                            pending,
                        )
                        .await?;
                    }
                }
                PDataValueType::Data => {
                    let Some(store) = pending.as_mut() else {
                        return Err(ProtocolViolation::UnexpectedData);
                    };
                    self.ingest.push(&mut store.incoming, &value.data).await;
                    if value.is_last
                        && let Some(store) = pending.take()
                    {
                        self.finish_store(association, store).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_command(
        &mut self,
        association: &mut ServerAssociation,
        command: Command,
        presentation_context_id: u8,
        pending: &mut Option<PendingStore>,
    ) -> Result<(), ProtocolViolation> {
        // Without asynchronous operations negotiated, a peer finishes one C-STORE before the
        // next command; the pending transfer is dropped (its part file removed) by the caller.
        if pending.is_some() {
            return Err(ProtocolViolation::InterleavedCommand);
        }
        let context = association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == presentation_context_id)
            .ok_or(ProtocolViolation::UnknownPresentationContext(
                presentation_context_id,
            ))?;
        let transfer_syntax_uid = trim_padding(&context.transfer_syntax).to_string();
        let abstract_syntax = trim_padding(&context.abstract_syntax).to_string();
        match command.command_field {
            dimse::C_ECHO_RQ => {
                debug!(message_id = command.message_id, "C-ECHO");
                let rsp = dimse::response(&command, dimse::C_ECHO_RSP, Status::Success, None)?;
                send_command(association, presentation_context_id, rsp).await
            }
            dimse::C_STORE_RQ if command.has_data_set => {
                let sop_class_uid = command.affected_sop_class_uid.clone().unwrap_or_default();
                let sop_instance_uid = command
                    .affected_sop_instance_uid
                    .clone()
                    .unwrap_or_default();
                let request = StoreRequest {
                    sop_class_uid: sop_class_uid.clone(),
                    sop_instance_uid,
                    transfer_syntax_uid,
                    calling_ae: self.calling_ae.clone(),
                    association: self.audit_id,
                };
                let mut incoming = self.ingest.begin(request);
                if sop_class_uid != abstract_syntax
                    || !syntaxes::is_storage_sop_class(&sop_class_uid)
                {
                    // Refuse, but still take in (and drop) the data set that follows.
                    self.ingest
                        .reject(
                            &mut incoming,
                            Status::SopClassNotSupported,
                            "SOP class not negotiated on this presentation context",
                        )
                        .await;
                }
                *pending = Some(PendingStore {
                    command,
                    presentation_context_id,
                    incoming,
                });
                Ok(())
            }
            other => {
                warn!(
                    command_field = format!("{other:#06x}"),
                    "unsupported DIMSE command"
                );
                let rsp = dimse::response(
                    &command,
                    other | 0x8000,
                    Status::UnrecognizedOperation,
                    Some("msnode accepts only C-ECHO and C-STORE"),
                )?;
                send_command(association, presentation_context_id, rsp).await
            }
        }
    }

    async fn finish_store(
        &mut self,
        association: &mut ServerAssociation,
        store: PendingStore,
    ) -> Result<(), ProtocolViolation> {
        let sop_instance_uid = store
            .command
            .affected_sop_instance_uid
            .clone()
            .unwrap_or_default();
        let rsp = match self.ingest.finish(store.incoming).await {
            Ok(stored) => {
                self.stored += 1;
                debug!(%sop_instance_uid, bytes = stored.size, "stored");
                dimse::response(&store.command, dimse::C_STORE_RSP, Status::Success, None)?
            }
            Err(refusal) => {
                self.refused += 1;
                warn!(%sop_instance_uid, status = format!("{:#06x}", refusal.status.code()), reason = %refusal.reason, "instance refused");
                dimse::response(
                    &store.command,
                    dimse::C_STORE_RSP,
                    refusal.status,
                    Some(&refusal.reason),
                )?
            }
        };
        send_command(association, store.presentation_context_id, rsp).await
    }
}

async fn send_command(
    association: &mut ServerAssociation,
    presentation_context_id: u8,
    bytes: Vec<u8>,
) -> Result<(), ProtocolViolation> {
    association
        .send(&dimse::command_pdu(presentation_context_id, bytes))
        .await
        .map_err(|e| ProtocolViolation::Send(e.into()))?;
    Ok(())
}
