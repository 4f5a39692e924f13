//! Query/Retrieve as a client: C-FIND a peer (Patient Root), and C-MOVE what it found to an AE
//! title (the moved instances arrive through the SCP like any other C-STORE) or C-GET it (the
//! instances come back on the same association and go through [`Ingest`] as the SCP's do).

use dicom_object::InMemDicomObject;
use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValueType, Pdu, PresentationContextResultReason};

use super::dimse::{self, Command, SubOperations};
use super::identifier::{self, IdentifierError, MAX_IDENTIFIER_BYTES, QUERY_TRANSFER_SYNTAXES};
use super::scu::{ClientAssociation, Remote, ScuError, connect, send_command};
use crate::dicom::Status;
use crate::dicom::sop_class::{
    ENHANCED_MR_IMAGE_STORAGE, MR_IMAGE_STORAGE, PATIENT_ROOT_FIND, PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
};
use crate::dicom::trim_padding;
use crate::ingest::{IncomingInstance, Ingest, StoreRequest};
use crate::logging::chain;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Scu(#[from] ScuError),
    #[error("identifier")]
    Identifier(#[from] IdentifierError),
    #[error(transparent)]
    Dimse(#[from] dimse::DimseError),
    #[error("{called_ae} accepted no {model} presentation context")]
    NotAccepted {
        called_ae: String,
        model: &'static str,
    },
    #[error("{called_ae} answered the {operation} with status {status:#06x}{}", comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        called_ae: String,
        operation: &'static str,
        status: u16,
        comment: Option<String>,
    },
}

/// An association carrying one query/retrieve model, and the context it was accepted on.
struct QueryAssociation {
    association: ClientAssociation,
    context_id: u8,
    transfer_syntax: String,
}

async fn open(remote: &Remote, model: &'static str) -> Result<QueryAssociation, RetrieveError> {
    open_with(remote, model, ClientAssociationOptions::new()).await
}

/// [`open`] with the model proposed after the presentation contexts `options` holds already.
async fn open_with(
    remote: &Remote,
    model: &'static str,
    options: ClientAssociationOptions<'static>,
) -> Result<QueryAssociation, RetrieveError> {
    let options = options.with_presentation_context(model, QUERY_TRANSFER_SYNTAXES.to_vec());
    let association = connect(remote, options).await?;
    let Some(context) = association
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && trim_padding(&pc.abstract_syntax) == model
        })
        .map(|pc| (pc.id, trim_padding(&pc.transfer_syntax).to_string()))
    else {
        let _ = association.abort().await;
        return Err(RetrieveError::NotAccepted {
            called_ae: remote.called_ae.clone(),
            model,
        });
    };
    Ok(QueryAssociation {
        association,
        context_id: context.0,
        transfer_syntax: context.1,
    })
}

impl QueryAssociation {
    /// Send a command and the identifier that follows it.
    async fn request(
        &mut self,
        remote: &Remote,
        command: Vec<u8>,
        identifier: &InMemDicomObject,
    ) -> Result<(), RetrieveError> {
        let data = identifier::encode(identifier, &self.transfer_syntax)?;
        send_command(&mut self.association, remote, self.context_id, command).await?;
        let io = |e| ScuError::Io(remote.called_ae.clone(), e);
        self.association
            .send_data(self.context_id, &data)
            .await
            .map_err(io)?;
        Ok(())
    }

    /// The next response, and the data set that follows it when its command says one does.
    /// Command and data may share a PDU or not; both are bounded in size.
    async fn receive(&mut self, remote: &Remote) -> Result<(Command, Vec<u8>), RetrieveError> {
        let mut command_bytes = Vec::new();
        let mut command: Option<Command> = None;
        let mut data = Vec::new();
        loop {
            let pdu = self
                .association
                .receive()
                .await
                .map_err(|e| ScuError::Association(remote.called_ae.clone(), e.into()))?;
            let Pdu::PData { data: values } = pdu else {
                return Err(ScuError::UnexpectedPdu(super::pdu_kind(&pdu)).into());
            };
            for value in values {
                let (buffer, limit) = match value.value_type {
                    PDataValueType::Command if command.is_none() => {
                        (&mut command_bytes, dimse::MAX_COMMAND_SET_BYTES)
                    }
                    PDataValueType::Data if command.is_some() => (&mut data, MAX_IDENTIFIER_BYTES),
                    _ => {
                        return Err(ScuError::UnexpectedPdu(
                            "a P-DATA fragment out of order".into(),
                        )
                        .into());
                    }
                };
                if buffer.len() + value.data.len() > limit {
                    return Err(IdentifierError::TooLarge.into());
                }
                buffer.extend_from_slice(&value.data);
                if !value.is_last {
                    continue;
                }
                match command.take() {
                    None => {
                        let decoded = Command::decode(&command_bytes)?;
                        if !decoded.has_data_set {
                            return Ok((decoded, data));
                        }
                        command = Some(decoded);
                    }
                    Some(done) => return Ok((done, data)),
                }
            }
        }
    }

    async fn release(self) {
        let _ = self.association.release().await;
    }
}

fn refused(remote: &Remote, operation: &'static str, response: &Command) -> RetrieveError {
    RetrieveError::Refused {
        called_ae: remote.called_ae.clone(),
        operation,
        status: response.status.unwrap_or(0xFFFF),
        comment: response.error_comment.clone(),
    }
}

fn is_pending(status: Option<u16>) -> bool {
    matches!(status, Some(0xFF00 | 0xFF01))
}

/// C-FIND with the Patient Root model: every match the peer returns.
pub async fn find(
    remote: &Remote,
    keys: &InMemDicomObject,
) -> Result<Vec<InMemDicomObject>, RetrieveError> {
    let mut qa = open(remote, PATIENT_ROOT_FIND).await?;
    qa.request(remote, dimse::find_request(1, PATIENT_ROOT_FIND)?, keys)
        .await?;
    let mut matches = Vec::new();
    loop {
        let (response, bytes) = qa.receive(remote).await?;
        if response.has_data_set && is_pending(response.status) {
            matches.push(identifier::decode(&bytes, &qa.transfer_syntax)?);
        }
        match response.status {
            status if is_pending(status) => continue,
            Some(0x0000) => break,
            _ => {
                qa.release().await;
                return Err(refused(remote, "C-FIND", &response));
            }
        }
    }
    qa.release().await;
    Ok(matches)
}

/// What a C-MOVE did, by the peer's final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveOutcome {
    pub status: u16,
    pub sub_operations: SubOperations,
}

/// C-MOVE with the Patient Root model to `destination`; returns when the peer's final response
/// arrives (every sub-operation has ended by then).
pub async fn move_to(
    remote: &Remote,
    keys: &InMemDicomObject,
    destination: &str,
) -> Result<MoveOutcome, RetrieveError> {
    let mut qa = open(remote, PATIENT_ROOT_MOVE).await?;
    qa.request(
        remote,
        dimse::move_request(1, PATIENT_ROOT_MOVE, destination)?,
        keys,
    )
    .await?;
    loop {
        // A data set after a C-MOVE response lists failed instances: not needed here.
        let (response, _) = qa.receive(remote).await?;
        match response.status {
            status if is_pending(status) => continue,
            Some(status)
                if status == Status::Success.code()
                    || status == Status::SubOperationsFailed.code() =>
            {
                qa.release().await;
                return Ok(MoveOutcome {
                    status,
                    sub_operations: response.sub_operations,
                });
            }
            _ => {
                qa.release().await;
                return Err(refused(remote, "C-MOVE", &response));
            }
        }
    }
}

/// The storage classes a C-GET of a prior may bring back, proposed in the transfer syntaxes the
/// SCP accepts, with our SCP role for them (PS3.7 D.3.3.4).
fn get_options() -> ClientAssociationOptions<'static> {
    let mut options = ClientAssociationOptions::new();
    for class in [MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE] {
        options = options
            .with_presentation_context(class, super::syntaxes::ACCEPTED_TRANSFER_SYNTAXES.to_vec())
            .with_role_selection(class, false, true);
    }
    options
}

/// C-GET with the Patient Root model: the peer's C-STORE sub-operations arrive on this
/// association and are stored through `ingest` (checked, made durable and indexed before
/// Success is answered, as the SCP does); returns at the peer's final response.
pub async fn get(
    remote: &Remote,
    keys: &InMemDicomObject,
    ingest: &Ingest,
) -> Result<MoveOutcome, RetrieveError> {
    let mut qa = open_with(remote, PATIENT_ROOT_GET, get_options()).await?;
    qa.request(remote, dimse::get_request(1, PATIENT_ROOT_GET)?, keys)
        .await?;
    let mut command_bytes = Vec::new();
    let mut storing: Option<(Command, u8, IncomingInstance)> = None;
    loop {
        let pdu = qa
            .association
            .receive()
            .await
            .map_err(|e| ScuError::Association(remote.called_ae.clone(), e.into()))?;
        let Pdu::PData { data: values } = pdu else {
            if let Some((_, _, incoming)) = storing.take() {
                ingest.abandon(incoming).await;
            }
            return Err(ScuError::UnexpectedPdu(super::pdu_kind(&pdu)).into());
        };
        for value in values {
            if value.value_type == PDataValueType::Data {
                let Some((command, pc, incoming)) = storing.as_mut() else {
                    return Err(ScuError::UnexpectedPdu("data without a C-STORE".into()).into());
                };
                ingest.push(incoming, &value.data).await;
                if value.is_last {
                    let (command, pc) = (command.clone(), *pc);
                    if let Some((_, _, incoming)) = storing.take() {
                        store_sub_operation(&mut qa, remote, ingest, &command, pc, incoming)
                            .await?;
                    }
                }
                continue;
            }
            if command_bytes.len() + value.data.len() > dimse::MAX_COMMAND_SET_BYTES {
                return Err(IdentifierError::TooLarge.into());
            }
            command_bytes.extend_from_slice(&value.data);
            if !value.is_last {
                continue;
            }
            let command = Command::decode(&std::mem::take(&mut command_bytes))?;
            if command.command_field == dimse::C_STORE_RQ {
                let incoming =
                    begin_sub_store(&qa, remote, ingest, &command, value.presentation_context_id);
                storing = Some((command, value.presentation_context_id, incoming));
                continue;
            }
            if command.has_data_set {
                // A failed-instances list after a C-GET response: not needed here.
                qa.receive(remote).await?;
            }
            match command.status {
                status if is_pending(status) => {}
                Some(status)
                    if status == Status::Success.code()
                        || status == Status::SubOperationsFailed.code() =>
                {
                    qa.release().await;
                    return Ok(MoveOutcome {
                        status,
                        sub_operations: command.sub_operations,
                    });
                }
                _ => {
                    qa.release().await;
                    return Err(refused(remote, "C-GET", &command));
                }
            }
        }
    }
}

fn begin_sub_store(
    qa: &QueryAssociation,
    remote: &Remote,
    ingest: &Ingest,
    command: &Command,
    pc: u8,
) -> IncomingInstance {
    let transfer_syntax_uid = qa
        .association
        .presentation_contexts()
        .iter()
        .find(|c| c.id == pc)
        .map(|c| trim_padding(&c.transfer_syntax).to_string())
        .unwrap_or_default();
    ingest.begin(StoreRequest {
        sop_class_uid: command.affected_sop_class_uid.clone().unwrap_or_default(),
        sop_instance_uid: command
            .affected_sop_instance_uid
            .clone()
            .unwrap_or_default(),
        transfer_syntax_uid,
        calling_ae: remote.called_ae.clone(),
        association: None,
    })
}

/// Finish one C-STORE sub-operation and answer it with the ingest's status.
async fn store_sub_operation(
    qa: &mut QueryAssociation,
    remote: &Remote,
    ingest: &Ingest,
    command: &Command,
    pc: u8,
    incoming: IncomingInstance,
) -> Result<(), RetrieveError> {
    let reply = match ingest.finish(incoming).await {
        Ok(_) => dimse::respond(
            command,
            dimse::Reply::new(dimse::C_STORE_RSP, Status::Success),
        )?,
        Err(refusal) => {
            tracing::warn!(peer = %remote.called_ae, reason = %refusal.reason, "C-GET instance refused");
            dimse::respond(
                command,
                dimse::Reply::new(dimse::C_STORE_RSP, refusal.status()).comment(&refusal.reason),
            )?
        }
    };
    send_command(&mut qa.association, remote, pc, reply)
        .await
        .map_err(|e| {
            tracing::warn!(error = %chain(&e), "cannot answer a C-GET sub-operation");
            e.into()
        })
}
