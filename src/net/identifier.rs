//! Query/Retrieve identifiers: the data set after a C-FIND, C-MOVE or C-GET command, and the
//! matches a C-FIND answers with. Encoded in the presentation context's transfer syntax; a
//! received one is bounded in size and its structure checked before it is parsed.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::dicom::read::text;
use crate::dicom::structure::check_data_set;
use crate::dicom::transfer_syntax::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// Identifiers are a few dozen keys; this bounds what a peer can make us hold for one.
pub const MAX_IDENTIFIER_BYTES: usize = 64 * 1024;

/// The transfer syntaxes msnode proposes and accepts for query/retrieve contexts.
pub const QUERY_TRANSFER_SYNTAXES: [&str; 2] = [EXPLICIT_VR_LE, IMPLICIT_VR_LE];

#[derive(Debug, thiserror::Error)]
pub enum IdentifierError {
    #[error("an identifier of more than {MAX_IDENTIFIER_BYTES} bytes")]
    TooLarge,
    #[error("identifiers in transfer syntax {0} are not accepted")]
    TransferSyntax(String),
    #[error("the identifier is malformed: {0}")]
    Malformed(String),
    #[error("the identifier cannot be parsed")]
    Parse(#[source] Box<dicom_object::ReadError>),
    #[error("cannot encode an identifier")]
    Encode(#[source] Box<dicom_object::WriteError>),
    #[error("Query/Retrieve Level {0:?} is not STUDY, SERIES or IMAGE")]
    Level(String),
}

/// Query/Retrieve Level (0008,0052).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Study,
    Series,
    Image,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }

    pub fn of(identifier: &InMemDicomObject) -> Result<Level, IdentifierError> {
        match text(identifier, tags::QUERY_RETRIEVE_LEVEL).as_deref() {
            Some("STUDY") => Ok(Level::Study),
            Some("SERIES") => Ok(Level::Series),
            Some("IMAGE") => Ok(Level::Image),
            other => Err(IdentifierError::Level(
                other.unwrap_or_default().to_string(),
            )),
        }
    }
}

fn is_query_syntax(ts_uid: &str) -> bool {
    QUERY_TRANSFER_SYNTAXES.contains(&ts_uid)
}

/// Parse a received identifier.
pub fn decode(bytes: &[u8], ts_uid: &str) -> Result<InMemDicomObject, IdentifierError> {
    if bytes.len() > MAX_IDENTIFIER_BYTES {
        return Err(IdentifierError::TooLarge);
    }
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .filter(|_| is_query_syntax(ts_uid))
        .ok_or_else(|| IdentifierError::TransferSyntax(ts_uid.to_string()))?;
    check_data_set(std::io::Cursor::new(bytes), 0, ts_uid == EXPLICIT_VR_LE)
        .map_err(IdentifierError::Malformed)?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| IdentifierError::Parse(Box::new(e)))
}

/// Encode an identifier to send.
pub fn encode(identifier: &InMemDicomObject, ts_uid: &str) -> Result<Vec<u8>, IdentifierError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .filter(|_| is_query_syntax(ts_uid))
        .ok_or_else(|| IdentifierError::TransferSyntax(ts_uid.to_string()))?;
    let mut bytes = Vec::with_capacity(512);
    identifier
        .write_dataset_with_ts(&mut bytes, ts)
        .map_err(|e| IdentifierError::Encode(Box::new(e)))?;
    Ok(bytes)
}

/// Builds identifiers key by key.
#[derive(Debug, Clone)]
pub struct Keys(InMemDicomObject);

impl Keys {
    pub fn at(level: Level) -> Keys {
        Keys(InMemDicomObject::new_empty()).with(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.as_str())
    }

    /// A key with a value to match, or to return when `value` is empty.
    pub fn with(mut self, tag: Tag, vr: VR, value: &str) -> Keys {
        let value = if value.is_empty() {
            PrimitiveValue::Empty
        } else {
            PrimitiveValue::from(value)
        };
        self.0.put(DataElement::new(tag, vr, value));
        self
    }

    pub fn build(self) -> InMemDicomObject {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_round_trip_in_both_syntaxes_and_bad_ones_are_refused() {
        let keys = Keys::at(Level::Series)
            .with(tags::PATIENT_ID, VR::LO, "P1")
            .with(tags::SERIES_INSTANCE_UID, VR::UI, "")
            .build();
        for ts in QUERY_TRANSFER_SYNTAXES {
            let bytes = encode(&keys, ts).unwrap();
            let back = decode(&bytes, ts).unwrap();
            assert_eq!(Level::of(&back).unwrap(), Level::Series);
            assert_eq!(text(&back, tags::PATIENT_ID).as_deref(), Some("P1"));
            assert!(back.element(tags::SERIES_INSTANCE_UID).is_ok());
        }
        let bytes = encode(&keys, EXPLICIT_VR_LE).unwrap();
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3], EXPLICIT_VR_LE),
            Err(IdentifierError::Malformed(_))
        ));
        assert!(matches!(
            decode(&vec![0u8; MAX_IDENTIFIER_BYTES + 1], EXPLICIT_VR_LE),
            Err(IdentifierError::TooLarge)
        ));
        assert!(matches!(
            decode(
                &bytes,
                crate::dicom::transfer_syntax::DEFLATED_EXPLICIT_VR_LE
            ),
            Err(IdentifierError::TransferSyntax(_))
        ));
        let no_level = InMemDicomObject::new_empty();
        assert!(matches!(
            Level::of(&no_level),
            Err(IdentifierError::Level(_))
        ));
    }
}
