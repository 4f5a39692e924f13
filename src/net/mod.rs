//! DICOM networking: the association request looked at before it is answered (`admission`), DIMSE command sets (`dimse`), query/retrieve identifiers (`identifier`),
//! negotiated syntaxes (`syntaxes`), the SCP (`scp`, with `qr` answering C-FIND and C-MOVE), the
//! SCU (`scu`: C-ECHO, C-STORE), query/retrieve as a client (`retrieve`: C-FIND, C-MOVE) and
//! the rustls configurations of DICOM over TLS (`tls`).

pub mod admission;
pub mod dimse;
pub mod identifier;
pub mod qr;
pub mod retrieve;
pub mod scp;
pub mod scu;
pub mod syntaxes;
pub mod tls;

use std::fmt;

use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::Pdu;

/// A dicom-ul error as msnode shows it (logs, audit rows, job reasons): a PDU the peer sent is
/// named by its kind, never dumped, since its bytes may carry patient data.
#[derive(Debug)]
pub struct UlFailure(pub Box<UlError>);

impl From<UlError> for UlFailure {
    fn from(e: UlError) -> UlFailure {
        UlFailure(Box::new(e))
    }
}

impl fmt::Display for UlFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            UlError::UnexpectedPdu { pdu, .. } => {
                write!(f, "unexpected {} PDU from the peer", pdu_kind(pdu))
            }
            UlError::UnknownPdu { pdu, .. } => write!(f, "{} PDU from the peer", pdu_kind(pdu)),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for UlFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            UlError::UnexpectedPdu { .. } | UlError::UnknownPdu { .. } => None,
            other => std::error::Error::source(other),
        }
    }
}

/// What kind of PDU this is, for logs and errors: never its content, which may carry patient data.
pub fn pdu_kind(pdu: &Pdu) -> String {
    match pdu {
        Pdu::Unknown { pdu_type, .. } => format!("unknown (type {pdu_type:#04x})"),
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ".into(),
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC".into(),
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ".into(),
        Pdu::PData { .. } => "P-DATA-TF".into(),
        Pdu::ReleaseRQ => "A-RELEASE-RQ".into(),
        Pdu::ReleaseRP => "A-RELEASE-RP".into(),
        Pdu::AbortRQ { .. } => "A-ABORT".into(),
    }
}
