//! DICOM networking: DIMSE command sets, negotiated syntaxes, the SCP and the SCU.

pub mod dimse;
pub mod scp;
pub mod scu;
pub mod syntaxes;

use dicom_ul::pdu::Pdu;

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
