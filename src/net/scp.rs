//! The DICOM listener: accepts connections, negotiates associations with known peers only, and
//! answers C-ECHO, C-STORE, C-FIND (study and series level), C-MOVE (to a configured peer) and
//! C-GET (back on the same association). Each association runs in its own task; the number of concurrent
//! associations is bounded; shutdown stops accepting and lets running associations finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_object::InMemDicomObject;
use dicom_ul::ServerAssociationOptions;
use dicom_ul::association::Error as UlError;
use dicom_ul::association::server::{
    AccessControl, AsyncServerAssociation, AsyncTlsStream, Negotiation,
};
use dicom_ul::pdu::RequestorRoles;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, PDataValue, PDataValueType,
    Pdu, PresentationContextResultReason, UserIdentity,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::dimse::{self, Command, MAX_COMMAND_SET_BYTES, Reply, SubOperations};
use super::identifier::{self, MAX_IDENTIFIER_BYTES};
use super::scu::{self, Remote};
use super::{UlFailure, pdu_kind};
use super::{admission, qr, syntaxes};
use crate::config::Config;
use crate::dicom::{Status, status, trim_padding};
use crate::ingest::{IncomingInstance, Ingest, RefusalCause, StoreRequest};
use crate::logging::chain;
use crate::metrics::Metrics;

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
        check_titles(this_ae_title, &self.allowed_callers, calling, called)
    }
}

/// The called AE title must be ours and the calling one a peer allowed to store.
fn check_titles(
    this_ae_title: &str,
    allowed_callers: &[String],
    calling: &str,
    called: &str,
) -> Result<(), AssociationRJServiceUserReason> {
    if called != this_ae_title {
        return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
    }
    if !allowed_callers.iter().any(|ae| ae == calling) {
        return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
    }
    Ok(())
}

/// A C-GET's instances come back on the requestor's association, so it proposes the storage
/// classes with itself as SCP (PS3.7 D.3.3.4): those roles are granted; others keep the defaults.
struct StorageRoles;

impl Negotiation for StorageRoles {
    fn negotiate_roles(&self, sop_class_uid: &str, scu: bool, scp: bool) -> Option<RequestorRoles> {
        syntaxes::is_storage_sop_class(trim_padding(sop_class_uid))
            .then_some(RequestorRoles { scu, scp })
    }
}

/// Who may associate and where a C-MOVE may send: the part of the configuration a reload
/// changes. Each association keeps the tables it started with.
#[derive(Debug, Clone, Default)]
pub struct PeerTables {
    /// Peers with `store_to_us`, by AE title.
    pub allowed_callers: Arc<Vec<String>>,
    /// Every configured peer, by AE title.
    pub move_destinations: Vec<Remote>,
}

impl PeerTables {
    pub fn new(config: &Config, move_destinations: Vec<Remote>) -> PeerTables {
        PeerTables {
            allowed_callers: Arc::new(
                config
                    .peers
                    .iter()
                    .filter(|p| p.store_to_us)
                    .map(|p| p.ae_title.clone())
                    .collect(),
            ),
            move_destinations,
        }
    }
}

/// Shared state of the listener.
pub struct Scp {
    /// What a reload does not change: our AE title, the network limits, the data directory.
    config: Arc<Config>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    peers: watch::Receiver<Arc<PeerTables>>,
}

impl Scp {
    pub fn new(
        config: Arc<Config>,
        ingest: Arc<Ingest>,
        peers: watch::Receiver<Arc<PeerTables>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Scp> {
        Arc::new(Scp {
            config,
            ingest,
            metrics,
            peers,
        })
    }

    /// Accept connections on the DICOM port (and the TLS port, when there is one) until
    /// `shutdown` completes, then wait (up to `grace`) for running associations to end. Both
    /// ports share the association limit.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsListener>,
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
            let (accepted, tls_config) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => (accepted, None),
                accepted = accept_tls(&tls) => (accepted, tls.as_ref().map(|t| t.config.clone())),
            };
            let (socket, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let scp = self.clone();
            tokio::spawn(async move {
                scp.handle_connection(socket, peer, tls_config).await;
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
        peers: &PeerTables,
        seen: Arc<Mutex<Option<(String, String)>>>,
    ) -> ServerAssociationOptions<'static, PeerAccess, StorageRoles> {
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(PeerAccess {
                allowed_callers: peers.allowed_callers.clone(),
                seen,
            })
            .with_negotiation(StorageRoles)
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

    async fn handle_connection(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
    ) {
        if let Err(e) = socket.set_nodelay(true) {
            warn!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let index = self.ingest.index();
        let peers = self.peers.borrow().clone();
        let admission = match tls {
            None => self.admit(socket, &peers).await,
            Some(config) => self.admit_tls(socket, &peers, config).await,
        };
        let (association, calling) = match admission {
            Admission::Accepted(association, calling) => (association, calling),
            Admission::Refused {
                calling,
                called,
                outcome,
                reason,
            } => {
                warn!(%peer, calling_ae = %calling, called_ae = %called, "association {outcome}");
                self.metrics.rejected(reason);
                if let Err(e) = index
                    .record_refused_association(&calling, &called, &peer.to_string(), &outcome)
                    .await
                {
                    error!(error = %chain(&e), "cannot audit a rejected association");
                }
                return;
            }
            Admission::TimedOut => {
                warn!(%peer, "no association request within the association timeout");
                self.metrics.rejected("no_request");
                return;
            }
        };
        self.metrics.associations.inc();
        self.metrics.associations_open.inc();
        let called = self.config.node.ae_title.clone();
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
        let over_tls = matches!(association, Established::Tls(_));
        let span = info_span!("association", id = audit_id.unwrap_or(-1), calling_ae = %calling, %peer, tls = over_tls);
        let handler = AssociationHandler {
            ingest: &self.ingest,
            scp: &self,
            peers,
            calling_ae: calling.clone(),
            audit_id,
            stored: 0,
            refused: 0,
        };
        let mut outcome = match association {
            Established::Tcp(association) => handler.run(*association).instrument(span).await,
            Established::Tls(association) => handler.run(*association).instrument(span).await,
        };
        if over_tls {
            outcome.text.push_str(" over TLS");
        }
        self.metrics.associations_open.dec();
        if let Some(id) = audit_id
            && let Err(e) = index
                .end_association(id, outcome.stored, outcome.refused, &outcome.text)
                .await
        {
            error!(error = %chain(&e), "cannot audit the end of an association");
        }
    }

    /// Negotiates the association within the association timeout: a request from a known peer
    /// that offers nothing msnode accepts, or that comes while the storage reserve is breached,
    /// is rejected here; the rest by dicom-ul.
    async fn admit(&self, mut socket: TcpStream, peers: &PeerTables) -> Admission {
        let deadline = tokio::time::Instant::now() + self.config.network.association_timeout;
        let request = match tokio::time::timeout_at(
            deadline,
            admission::peek_request(&socket, self.config.network.max_pdu),
        )
        .await
        {
            Ok(request) => request,
            Err(_) => return Admission::TimedOut,
        };
        if let Some(request) = request
            && let Some(refusal) = self.screen(&mut socket, peers, &request).await
        {
            return refusal;
        }
        let seen = Arc::new(Mutex::new(None));
        let options = self.server_options(peers, seen.clone());
        let established = tokio::time::timeout_at(deadline, options.establish_async(socket))
            .await
            .map(|result| result.map(|a| Established::Tcp(Box::new(a))));
        admission_of(established, &seen)
    }

    /// [`Scp::admit`] on the TLS port. The request is encrypted, so it cannot be looked at
    /// before dicom-ul answers it: an association offering nothing acceptable is aborted once
    /// up, and the storage reserve answers each C-STORE with A700 instead of a rejection.
    async fn admit_tls(
        &self,
        socket: TcpStream,
        peers: &PeerTables,
        config: Arc<ServerConfig>,
    ) -> Admission {
        let deadline = tokio::time::Instant::now() + self.config.network.association_timeout;
        let seen = Arc::new(Mutex::new(None));
        let options = self.server_options(peers, seen.clone()).tls_config(config);
        let established = tokio::time::timeout_at(deadline, options.establish_tls_async(socket))
            .await
            .map(|result| result.map(|a| Established::Tls(Box::new(a))));
        admission_of(established, &seen)
    }

    /// The refusal of a request from a known peer that offers no acceptable presentation
    /// context or comes while the storage reserve is breached; None lets dicom-ul judge it.
    async fn screen(
        &self,
        socket: &mut TcpStream,
        peers: &PeerTables,
        request: &AssociationRQ,
    ) -> Option<Admission> {
        let calling = trim_padding(request.calling_ae_title.trim_start()).to_string();
        let called = trim_padding(request.called_ae_title.trim_start()).to_string();
        if !self.titles_allowed(peers, &calling, &called) {
            return None;
        }
        if !admission::accepts_some_context(request) {
            reject(
                socket,
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
            )
            .await;
            return Some(Admission::Refused {
                calling,
                called,
                outcome: format!(
                    "rejected: no acceptable presentation context among {} offered",
                    request.presentation_contexts.len()
                ),
                reason: "no_acceptable_context",
            });
        }
        // Transient: the peer may try again once space is freed.
        let why = self.ingest.free_space().err()?;
        reject(
            socket,
            AssociationRJResult::Transient,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        )
        .await;
        Some(Admission::Refused {
            calling,
            called,
            outcome: format!("rejected: {why}"),
            reason: "storage_reserve",
        })
    }

    fn titles_allowed(&self, peers: &PeerTables, calling: &str, called: &str) -> bool {
        check_titles(
            &self.config.node.ae_title,
            &peers.allowed_callers,
            calling,
            called,
        )
        .is_ok()
    }
}

/// The TLS port: its listener and the configuration of its handshakes.
pub struct TlsListener {
    pub listener: TcpListener,
    pub config: Arc<ServerConfig>,
}

/// The next connection on the TLS port; never, when there is none.
async fn accept_tls(tls: &Option<TlsListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some(tls) => tls.listener.accept().await,
        None => std::future::pending().await,
    }
}

/// What dicom-ul's answer to the request (within the association timeout, or not) means, with
/// the titles the access control saw.
fn admission_of(
    established: Result<Result<Established, UlError>, tokio::time::error::Elapsed>,
    seen: &Mutex<Option<(String, String)>>,
) -> Admission {
    let (calling, called) = seen
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or_else(|| ("?".into(), "?".into()));
    match established {
        Ok(Ok(association)) => Admission::Accepted(association, calling),
        Ok(Err(e)) => Admission::Refused {
            calling,
            called,
            reason: refusal_reason(&e),
            outcome: match &e {
                UlError::Rejected { association_rj, .. } => match &association_rj.source {
                    AssociationRJSource::ServiceUser(reason) => format!("rejected: {reason}"),
                    other => format!("rejected: {other:?}"),
                },
                _ => format!("failed: {}", chain(&UlFailure::from(e))),
            },
        },
        Err(_) => Admission::TimedOut,
    }
}

/// The label of a failed establishment in the rejection metric.
fn refusal_reason(e: &UlError) -> &'static str {
    match e {
        UlError::Rejected { association_rj, .. } => match &association_rj.source {
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            ) => "calling_ae_title_not_recognized",
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ) => "called_ae_title_not_recognized",
            _ => "rejected",
        },
        UlError::TlsHandshake { .. } => "tls_handshake",
        UlError::TlsNotSupported => "tls_expected",
        _ => "failed",
    }
}

/// Answer an association request with A-ASSOCIATE-RJ and close the connection.
async fn reject(socket: &mut TcpStream, result: AssociationRJResult, source: AssociationRJSource) {
    // The request was only peeked. Closing a socket with unread bytes sends a reset, which can
    // destroy the rejection before the peer reads it: read what is there first.
    let mut unread = [0u8; 4096];
    while let Ok(n) = socket.try_read(&mut unread) {
        if n == 0 {
            break;
        }
    }
    let rejection = Pdu::AssociationRJ(AssociationRJ { result, source });
    let mut bytes = Vec::new();
    if dicom_ul::pdu::write_pdu(&mut bytes, &rejection).is_ok() {
        let _ = socket.write_all(&bytes).await;
    }
    let _ = socket.shutdown().await;
}

/// What became of a connection's association request.
/// An association that is up, over TCP or over TLS.
enum Established {
    Tcp(Box<ServerAssociation<TcpStream>>),
    Tls(Box<ServerAssociation<AsyncTlsStream>>),
}

enum Admission {
    Accepted(Established, String),
    Refused {
        calling: String,
        called: String,
        outcome: String,
        /// A short label for the rejection metric.
        reason: &'static str,
    },
    TimedOut,
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

/// A C-FIND or C-MOVE whose identifier is still arriving.
struct PendingQuery {
    command: Command,
    presentation_context_id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
    identifier: Vec<u8>,
}

/// The data set the association is receiving.
enum Pending {
    Store(Box<PendingStore>),
    Query(PendingQuery),
}

/// Why the association must be aborted: the peer broke the protocol.
#[derive(Debug, thiserror::Error)]
enum ProtocolViolation {
    #[error(transparent)]
    Command(#[from] dimse::DimseError),
    #[error("data set fragment without a C-STORE, C-FIND or C-MOVE request")]
    UnexpectedData,
    #[error("an identifier of more than {MAX_IDENTIFIER_BYTES} bytes")]
    IdentifierTooLarge,
    #[error("a command set of more than {MAX_COMMAND_SET_BYTES} bytes")]
    CommandTooLarge,
    #[error("a new command before the data set of the C-STORE in progress ended")]
    InterleavedCommand,
    #[error("command for an unknown presentation context {0}")]
    UnknownPresentationContext(u8),
    #[error("cannot send a response")]
    Send(#[source] UlFailure),
    #[error("cannot send a response's identifier or a C-GET's instance")]
    SendData(#[source] std::io::Error),
    #[error("no response to a C-GET's C-STORE")]
    Receive(#[source] UlFailure),
    #[error("a {0} PDU instead of a C-GET's C-STORE response")]
    UnexpectedPdu(String),
}

struct AssociationHandler<'a> {
    ingest: &'a Ingest,
    scp: &'a Scp,
    peers: Arc<PeerTables>,
    calling_ae: String,
    audit_id: Option<i64>,
    stored: u64,
    refused: u64,
}

type ServerAssociation<S> = AsyncServerAssociation<S>;

/// What an association runs over: TCP, or TLS on the TLS port.
trait DicomStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> DicomStream for S {}

impl AssociationHandler<'_> {
    async fn run<S: DicomStream>(mut self, mut association: ServerAssociation<S>) -> Outcome {
        let accepted = association
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .count();
        if accepted == 0 {
            // Only a request too large to look at in advance (see `admission`), or one on the
            // TLS port, gets this far.
            warn!("no presentation context accepted; aborting");
            let _ = association.abort().await;
            return Outcome {
                text: "aborted: no acceptable presentation context".into(),
                stored: 0,
                refused: 0,
            };
        }
        info!(presentation_contexts = accepted, "association accepted");
        let mut command_bytes: Vec<u8> = Vec::new();
        let mut pending: Option<Pending> = None;
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
        if let Some(Pending::Store(pending)) = pending {
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

    async fn handle_pdata<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        values: Vec<PDataValue>,
        command_bytes: &mut Vec<u8>,
        pending: &mut Option<Pending>,
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
                PDataValueType::Data => match pending.as_mut() {
                    None => return Err(ProtocolViolation::UnexpectedData),
                    Some(Pending::Store(store)) => {
                        self.ingest.push(&mut store.incoming, &value.data).await;
                        if value.is_last
                            && let Some(Pending::Store(store)) = pending.take()
                        {
                            self.finish_store(association, *store).await?;
                        }
                    }
                    Some(Pending::Query(query)) => {
                        if query.identifier.len() + value.data.len() > MAX_IDENTIFIER_BYTES {
                            return Err(ProtocolViolation::IdentifierTooLarge);
                        }
                        query.identifier.extend_from_slice(&value.data);
                        if value.is_last
                            && let Some(Pending::Query(query)) = pending.take()
                        {
                            self.answer_query(association, query).await?;
                        }
                    }
                },
            }
        }
        Ok(())
    }

    async fn handle_command<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        command: Command,
        presentation_context_id: u8,
        pending: &mut Option<Pending>,
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
                let store = self
                    .begin_store(
                        command,
                        presentation_context_id,
                        &abstract_syntax,
                        transfer_syntax_uid,
                    )
                    .await;
                *pending = Some(Pending::Store(Box::new(store)));
                Ok(())
            }
            dimse::C_FIND_RQ | dimse::C_MOVE_RQ | dimse::C_GET_RQ if command.has_data_set => {
                *pending = Some(Pending::Query(PendingQuery {
                    command,
                    presentation_context_id,
                    abstract_syntax,
                    transfer_syntax: transfer_syntax_uid,
                    identifier: Vec::new(),
                }));
                Ok(())
            }
            // Answers are sent as soon as they are known: there is nothing left to cancel.
            dimse::C_CANCEL_RQ => {
                debug!(message_id = command.message_id, "C-CANCEL after the answer");
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
                    Some("msnode answers C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET"),
                )?;
                send_command(association, presentation_context_id, rsp).await
            }
        }
    }

    /// Start taking in a C-STORE's data set; one whose SOP class is not the context's is
    /// refused, but its data set is still taken in (and dropped).
    async fn begin_store(
        &self,
        command: Command,
        presentation_context_id: u8,
        abstract_syntax: &str,
        transfer_syntax_uid: String,
    ) -> PendingStore {
        let sop_class_uid = command.affected_sop_class_uid.clone().unwrap_or_default();
        let request = StoreRequest {
            sop_class_uid: sop_class_uid.clone(),
            sop_instance_uid: command
                .affected_sop_instance_uid
                .clone()
                .unwrap_or_default(),
            transfer_syntax_uid,
            calling_ae: self.calling_ae.clone(),
            association: self.audit_id,
        };
        let mut incoming = self.ingest.begin(request);
        if sop_class_uid != abstract_syntax || !syntaxes::is_storage_sop_class(&sop_class_uid) {
            self.ingest
                .reject(
                    &mut incoming,
                    RefusalCause::NotNegotiated,
                    "SOP class not negotiated on this presentation context",
                )
                .await;
        }
        PendingStore {
            command,
            presentation_context_id,
            incoming,
        }
    }

    /// Answer a C-FIND or C-MOVE whose identifier has arrived. A query msnode cannot answer
    /// gets a failure status; the association goes on.
    async fn answer_query<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        query: PendingQuery,
    ) -> Result<(), ProtocolViolation> {
        let field = query.command.command_field;
        let (models, rsp_field) = match field {
            dimse::C_FIND_RQ => (&syntaxes::FIND_MODELS, dimse::C_FIND_RSP),
            dimse::C_MOVE_RQ => (&syntaxes::MOVE_MODELS, dimse::C_MOVE_RSP),
            _ => (&syntaxes::GET_MODELS, dimse::C_GET_RSP),
        };
        let (status, why) = if !models.contains(&query.abstract_syntax.as_str())
            || query.command.affected_sop_class_uid.as_deref() != Some(&query.abstract_syntax)
        {
            (
                Status::SopClassNotSupported,
                "SOP class not negotiated on this presentation context".to_string(),
            )
        } else {
            match identifier::decode(&query.identifier, &query.transfer_syntax) {
                Ok(request) if field == dimse::C_FIND_RQ => {
                    return self.answer_find(association, &query, &request).await;
                }
                Ok(request) if field == dimse::C_MOVE_RQ => {
                    return self.answer_move(association, &query, &request).await;
                }
                Ok(request) => return self.answer_get(association, &query, &request).await,
                Err(e) => (Status::DataSetDoesNotMatchSopClass, chain(&e)),
            }
        };
        warn!(command_field = format!("{:#06x}", query.command.command_field), reason = %why, "query refused");
        let rsp = dimse::respond(&query.command, Reply::new(rsp_field, status).comment(&why))?;
        send_command(association, query.presentation_context_id, rsp).await
    }

    async fn answer_find<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        query: &PendingQuery,
        request: &InMemDicomObject,
    ) -> Result<(), ProtocolViolation> {
        let pc = query.presentation_context_id;
        let ae_title = &self.scp.config.node.ae_title;
        let matches = match qr::find(self.ingest.index(), request, ae_title).await {
            Ok(matches) => matches,
            Err(e) => {
                let why = chain(&e);
                warn!(reason = %why, "C-FIND refused");
                let reply = Reply::new(dimse::C_FIND_RSP, Status::CannotUnderstand).comment(&why);
                return send_command(association, pc, dimse::respond(&query.command, reply)?).await;
            }
        };
        info!(matches = matches.len(), "C-FIND answered");
        for found in &matches {
            let mut reply = Reply::new(dimse::C_FIND_RSP, Status::Pending);
            reply.data_set = true;
            send_command(association, pc, dimse::respond(&query.command, reply)?).await?;
            let bytes = identifier::encode(found, &query.transfer_syntax)
                .map_err(|e| ProtocolViolation::SendData(std::io::Error::other(e)))?;
            send_data(association, pc, &bytes).await?;
        }
        let done = Reply::new(dimse::C_FIND_RSP, Status::Success);
        send_command(association, pc, dimse::respond(&query.command, done)?).await
    }

    async fn answer_move<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        query: &PendingQuery,
        request: &InMemDicomObject,
    ) -> Result<(), ProtocolViolation> {
        let pc = query.presentation_context_id;
        let destination = query.command.move_destination.clone().unwrap_or_default();
        let reply = match self
            .peers
            .move_destinations
            .iter()
            .find(|r| r.called_ae == destination)
        {
            None => Err((
                Status::MoveDestinationUnknown,
                format!("move destination {destination:?} is not a configured peer"),
            )),
            Some(remote) => self.move_files(remote, query, request).await,
        };
        let rsp = match &reply {
            Ok((status, counts)) => {
                let mut reply = Reply::new(dimse::C_MOVE_RSP, *status);
                reply.sub_operations = *counts;
                dimse::respond(&query.command, reply)?
            }
            Err((status, why)) => {
                warn!(%destination, reason = %why, "C-MOVE refused");
                let reply = Reply::new(dimse::C_MOVE_RSP, *status).comment(why);
                dimse::respond(&query.command, reply)?
            }
        };
        send_command(association, pc, rsp).await
    }

    /// Send what a C-MOVE names to `remote`: the final status and sub-operation counts, or the
    /// failure status and why.
    async fn move_files(
        &self,
        remote: &Remote,
        query: &PendingQuery,
        request: &InMemDicomObject,
    ) -> Result<(Status, SubOperations), (Status, String)> {
        let outgoing = self.outgoing_files(request).await?;
        let originator = (self.calling_ae.as_str(), query.command.message_id);
        let results = scu::send_for(remote, &outgoing, Some(originator))
            .await
            .map_err(|e| (Status::UnableToPerformSubOperations, chain(&e)))?;
        let outcomes: Vec<Result<u16, String>> = results.into_iter().map(|r| r.outcome).collect();
        let (status, counts) = sub_operation_counts(&outcomes);
        info!(destination = %remote.called_ae, instances = outgoing.len(), completed = ?counts.completed, failed = ?counts.failed, "C-MOVE done");
        Ok((status, counts))
    }

    /// The stored files a retrieve names, with their identity, or the failure status and why.
    async fn outgoing_files(
        &self,
        request: &InMemDicomObject,
    ) -> Result<Vec<scu::OutgoingFile>, (Status, String)> {
        let files = qr::files_to_retrieve(self.ingest.index(), request)
            .await
            .map_err(|e| (Status::DataSetDoesNotMatchSopClass, chain(&e)))?;
        let data_dir = self.scp.config.node.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|f| scu::inspect(&data_dir.join(&f.file_path)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| (Status::ProcessingFailure, e.to_string()))?
        .map_err(|e| (Status::UnableToPerformSubOperations, chain(&e)))
    }

    /// C-GET: each instance is sent back on this association, on a storage context the
    /// requestor proposed with its SCP role in the file's own transfer syntax.
    async fn answer_get<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        query: &PendingQuery,
        request: &InMemDicomObject,
    ) -> Result<(), ProtocolViolation> {
        let pc = query.presentation_context_id;
        let outgoing = match self.outgoing_files(request).await {
            Ok(files) => files,
            Err((status, why)) => {
                warn!(reason = %why, "C-GET refused");
                let reply = Reply::new(dimse::C_GET_RSP, status).comment(&why);
                return send_command(association, pc, dimse::respond(&query.command, reply)?).await;
            }
        };
        let mut outcomes = Vec::with_capacity(outgoing.len());
        for (n, file) in outgoing.iter().enumerate() {
            outcomes.push(store_back(association, file, n).await?);
        }
        let (status, counts) = sub_operation_counts(&outcomes);
        info!(instances = outgoing.len(), completed = ?counts.completed, failed = ?counts.failed, "C-GET done");
        let mut reply = Reply::new(dimse::C_GET_RSP, status);
        reply.sub_operations = counts;
        send_command(association, pc, dimse::respond(&query.command, reply)?).await
    }

    async fn finish_store<S: DicomStream>(
        &mut self,
        association: &mut ServerAssociation<S>,
        store: PendingStore,
    ) -> Result<(), ProtocolViolation> {
        let sop_instance_uid = store
            .command
            .affected_sop_instance_uid
            .clone()
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let finished = self.ingest.finish(store.incoming).await;
        let metrics = &self.scp.metrics;
        let rsp = match finished {
            Ok(stored) => {
                metrics
                    .ingest_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.instances_received.inc();
                metrics.stored_bytes.inc_by(stored.size);
                metrics
                    .commit_shared_by
                    .observe(stored.committed_with as f64);
                self.stored += 1;
                debug!(%sop_instance_uid, bytes = stored.size, "stored");
                dimse::response(&store.command, dimse::C_STORE_RSP, Status::Success, None)?
            }
            Err(refusal) => {
                metrics.refused(refusal.cause.label());
                self.refused += 1;
                warn!(%sop_instance_uid, status = format!("{:#06x}", refusal.status().code()), reason = %refusal.reason, "instance refused");
                dimse::response(
                    &store.command,
                    dimse::C_STORE_RSP,
                    refusal.status(),
                    Some(&refusal.reason),
                )?
            }
        };
        send_command(association, store.presentation_context_id, rsp).await
    }
}

/// One C-GET sub-operation: the peer's C-STORE status, or why the file was not sent.
async fn store_back<S: DicomStream>(
    association: &mut ServerAssociation<S>,
    file: &scu::OutgoingFile,
    n: usize,
) -> Result<Result<u16, String>, ProtocolViolation> {
    let Some(context) = association
        .presentation_contexts()
        .iter()
        .find(|c| {
            trim_padding(&c.abstract_syntax) == file.sop_class_uid
                && trim_padding(&c.transfer_syntax) == file.transfer_syntax_uid
        })
        .map(|c| c.id)
    else {
        return Ok(Err(format!(
            "no storage context for {} in {}",
            file.sop_class_uid, file.transfer_syntax_uid
        )));
    };
    let data = match scu::data_set_bytes(&file.path) {
        Ok(data) => data,
        Err(e) => return Ok(Err(chain(&e))),
    };
    let message_id = (n % 0xFFFF) as u16 + 1;
    let command = dimse::store_request(
        message_id,
        &file.sop_class_uid,
        &file.sop_instance_uid,
        None,
    )?;
    send_command(association, context, command).await?;
    send_data(association, context, &data).await?;
    let response = receive_response(association).await?;
    Ok(Ok(response.status.unwrap_or(0xFFFF)))
}

/// Sub-operation counts and the final status from each sub-operation's outcome: the peer's
/// C-STORE status, or why nothing was sent.
fn sub_operation_counts(outcomes: &[Result<u16, String>]) -> (Status, SubOperations) {
    let count = |f: &dyn Fn(&Result<u16, String>) -> bool| {
        u16::try_from(outcomes.iter().filter(|o| f(o)).count()).unwrap_or(u16::MAX)
    };
    let counts = SubOperations {
        remaining: Some(0),
        completed: Some(count(&|o| matches!(o, Ok(0)))),
        warning: Some(count(&|o| matches!(o, Ok(s) if status::is_warning(*s)))),
        failed: Some(count(&|o| !matches!(o, Ok(s) if status::is_stored(*s)))),
    };
    let status = if counts.failed == Some(0) && counts.warning == Some(0) {
        Status::Success
    } else {
        Status::SubOperationsFailed
    };
    (status, counts)
}

/// The peer's response to a request we sent on this association (a C-GET's C-STORE).
async fn receive_response<S: DicomStream>(
    association: &mut ServerAssociation<S>,
) -> Result<Command, ProtocolViolation> {
    let mut bytes = Vec::new();
    loop {
        let pdu = association
            .receive()
            .await
            .map_err(|e| ProtocolViolation::Receive(e.into()))?;
        let Pdu::PData { data } = pdu else {
            return Err(ProtocolViolation::UnexpectedPdu(pdu_kind(&pdu)));
        };
        for value in data {
            if value.value_type != PDataValueType::Command {
                return Err(ProtocolViolation::UnexpectedData);
            }
            if bytes.len() + value.data.len() > MAX_COMMAND_SET_BYTES {
                return Err(ProtocolViolation::CommandTooLarge);
            }
            bytes.extend_from_slice(&value.data);
            if value.is_last {
                return Ok(Command::decode(&bytes)?);
            }
        }
    }
}

/// A data set after a command (a C-FIND match, a C-GET's instance), in as many P-DATA PDUs as
/// the peer's maximum length needs.
async fn send_data<S: DicomStream>(
    association: &mut ServerAssociation<S>,
    presentation_context_id: u8,
    bytes: &[u8],
) -> Result<(), ProtocolViolation> {
    let mut writer = association.send_pdata(presentation_context_id);
    writer
        .write_all(bytes)
        .await
        .map_err(ProtocolViolation::SendData)?;
    writer.finish().await.map_err(ProtocolViolation::SendData)
}

async fn send_command<S: DicomStream>(
    association: &mut ServerAssociation<S>,
    presentation_context_id: u8,
    bytes: Vec<u8>,
) -> Result<(), ProtocolViolation> {
    association
        .send(&dimse::command_pdu(presentation_context_id, bytes))
        .await
        .map_err(|e| ProtocolViolation::Send(e.into()))?;
    Ok(())
}
