//! DIMSE command sets: the few messages msnode sends and understands, as typed values.
//!
//! Command sets are always Implicit VR Little Endian (PS3.7 6.3.1).

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::dicom::Status;
use crate::dicom::read::{int, text};
use crate::dicom::sop_class::VERIFICATION;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_FIND_RSP: u16 = 0x8020;
pub const C_MOVE_RQ: u16 = 0x0021;
pub const C_MOVE_RSP: u16 = 0x8021;
pub const C_GET_RQ: u16 = 0x0010;
pub const C_GET_RSP: u16 = 0x8010;
/// C-CANCEL-RQ: a peer stops its C-FIND, C-MOVE or C-GET in progress.
pub const C_CANCEL_RQ: u16 = 0x0FFF;

/// A command set is a few hundred bytes; this bounds what a peer can make us hold for one.
pub const MAX_COMMAND_SET_BYTES: usize = 64 * 1024;

/// Command Data Set Type value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("the command set cannot be parsed")]
    Parse(#[source] Box<dicom_object::ReadError>),
    #[error("the command set lacks {0}")]
    Missing(&'static str),
    #[error("the command set is malformed: {0}")]
    Malformed(&'static str),
    #[error("cannot encode a command set")]
    Encode(#[source] Box<dicom_object::WriteError>),
}

/// A received command set, reduced to what msnode acts upon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub has_data_set: bool,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
    /// C-MOVE-RQ: the AE title the instances go to.
    pub move_destination: Option<String>,
    /// C-MOVE-RSP / C-GET-RSP: progress of the sub-operations.
    pub sub_operations: SubOperations,
}

/// Counts of a C-MOVE's or C-GET's C-STORE sub-operations (PS3.7 9.3.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
}

impl SubOperations {
    fn elements(&self) -> Vec<DataElement<InMemDicomObject>> {
        [
            (tags::NUMBER_OF_REMAINING_SUBOPERATIONS, self.remaining),
            (tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, self.completed),
            (tags::NUMBER_OF_FAILED_SUBOPERATIONS, self.failed),
            (tags::NUMBER_OF_WARNING_SUBOPERATIONS, self.warning),
        ]
        .into_iter()
        .filter_map(|(tag, n)| n.map(|n| DataElement::new(tag, VR::US, dicom_value!(U16, [n]))))
        .collect()
    }

    fn read(obj: &InMemDicomObject) -> SubOperations {
        SubOperations {
            remaining: optional_u16(obj, tags::NUMBER_OF_REMAINING_SUBOPERATIONS),
            completed: optional_u16(obj, tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
            failed: optional_u16(obj, tags::NUMBER_OF_FAILED_SUBOPERATIONS),
            warning: optional_u16(obj, tags::NUMBER_OF_WARNING_SUBOPERATIONS),
        }
    }
}

/// A whole command set as one P-DATA-TF PDU (command sets are small: one fragment).
pub fn command_pdu(presentation_context_id: u8, command: Vec<u8>) -> dicom_ul::Pdu {
    dicom_ul::Pdu::PData {
        data: vec![dicom_ul::pdu::PDataValue {
            presentation_context_id,
            value_type: dicom_ul::pdu::PDataValueType::Command,
            is_last: true,
            data: command,
        }],
    }
}

fn optional_u16(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    int(obj, tag).and_then(|v| u16::try_from(v).ok())
}

impl Command {
    pub fn decode(bytes: &[u8]) -> Result<Command, DimseError> {
        check_flat(bytes)?;
        let obj =
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|e| DimseError::Parse(Box::new(e)))?;
        let command_field = optional_u16(&obj, tags::COMMAND_FIELD)
            .ok_or(DimseError::Missing("Command Field (0000,0100)"))?;
        // Requests carry Message ID; responses carry Message ID Being Responded To.
        let message_id = optional_u16(&obj, tags::MESSAGE_ID)
            .or_else(|| optional_u16(&obj, tags::MESSAGE_ID_BEING_RESPONDED_TO))
            .ok_or(DimseError::Missing("Message ID (0000,0110)"))?;
        let has_data_set = optional_u16(&obj, tags::COMMAND_DATA_SET_TYPE)
            .ok_or(DimseError::Missing("Command Data Set Type (0000,0800)"))?
            != NO_DATA_SET;
        Ok(Command {
            command_field,
            message_id,
            affected_sop_class_uid: text(&obj, tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance_uid: text(&obj, tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set,
            status: optional_u16(&obj, tags::STATUS),
            error_comment: text(&obj, tags::ERROR_COMMENT),
            move_destination: text(&obj, tags::MOVE_DESTINATION),
            sub_operations: SubOperations::read(&obj),
        })
    }
}

/// A command set is a flat list of group 0000 elements of defined length (PS3.7 6.3.1). Anything
/// else is refused before it is parsed, so a peer can make the parser neither nest (sequences,
/// items) nor reserve a declared length that the bytes do not hold.
fn check_flat(bytes: &[u8]) -> Result<(), DimseError> {
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 8)
            .ok_or(DimseError::Malformed("an element header is cut short"))?;
        if u16::from_le_bytes([header[0], header[1]]) != 0 {
            return Err(DimseError::Malformed("an element lies outside group 0000"));
        }
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if length == u32::MAX {
            return Err(DimseError::Malformed("an element has an undefined length"));
        }
        let tag = (0, u16::from_le_bytes([header[2], header[3]]));
        crate::dicom::structure::check_implicit_value(tag, length).map_err(|_| {
            DimseError::Malformed("a value is not a whole number of its VR's values")
        })?;
        let length = length as usize;
        if length > bytes.len() - at - 8 {
            return Err(DimseError::Malformed(
                "an element is longer than the command set",
            ));
        }
        at += 8 + length;
    }
    Ok(())
}

fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>, DimseError> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut bytes = Vec::with_capacity(256);
    obj.write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DimseError::Encode(Box::new(e)))?;
    Ok(bytes)
}

/// Error Comment is LO: at most 64 characters.
fn error_comment(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A response to `request`: its command field, status and optional comment, whether an
/// identifier follows (C-FIND matches), and sub-operation counts (C-MOVE, C-GET).
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub field: u16,
    pub status: Status,
    pub comment: Option<&'a str>,
    pub data_set: bool,
    pub sub_operations: SubOperations,
}

impl<'a> Reply<'a> {
    pub fn new(field: u16, status: Status) -> Reply<'a> {
        Reply {
            field,
            status,
            comment: None,
            data_set: false,
            sub_operations: SubOperations::default(),
        }
    }

    pub fn comment(self, comment: &'a str) -> Reply<'a> {
        Reply {
            comment: Some(comment),
            ..self
        }
    }
}

fn data_set_type(data_set: bool) -> DataElement<InMemDicomObject> {
    // Any value other than 0101 means a data set follows.
    let value = if data_set { 0x0000 } else { NO_DATA_SET };
    DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        dicom_value!(U16, [value]),
    )
}

fn uid_element(tag: dicom_core::Tag, uid: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(uid))
}

/// Encode the response `reply` to `request`.
pub fn respond(request: &Command, reply: Reply<'_>) -> Result<Vec<u8>, DimseError> {
    let mut elements = vec![
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [reply.field]),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [request.message_id]),
        ),
        data_set_type(reply.data_set),
        DataElement::new(
            tags::STATUS,
            VR::US,
            dicom_value!(U16, [reply.status.code()]),
        ),
    ];
    if let Some(uid) = &request.affected_sop_class_uid {
        elements.push(uid_element(tags::AFFECTED_SOP_CLASS_UID, uid));
    }
    if let Some(uid) = &request.affected_sop_instance_uid {
        elements.push(uid_element(tags::AFFECTED_SOP_INSTANCE_UID, uid));
    }
    if let Some(text) = reply.comment {
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(error_comment(text)),
        ));
    }
    elements.extend(reply.sub_operations.elements());
    encode(elements)
}

/// The response to a C-ECHO or C-STORE request.
pub fn response(
    request: &Command,
    response_field: u16,
    status: Status,
    comment: Option<&str>,
) -> Result<Vec<u8>, DimseError> {
    let mut reply = Reply::new(response_field, status);
    reply.comment = comment;
    respond(request, reply)
}

/// A request with the elements every request carries, plus `extra`.
fn request(
    field: u16,
    message_id: u16,
    sop_class_uid: &str,
    data_set: bool,
    extra: Vec<DataElement<InMemDicomObject>>,
) -> Result<Vec<u8>, DimseError> {
    let mut elements = vec![
        uid_element(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [field])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        data_set_type(data_set),
    ];
    if field != C_ECHO_RQ {
        // Priority: medium.
        elements.push(DataElement::new(
            tags::PRIORITY,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ));
    }
    elements.extend(extra);
    encode(elements)
}

pub fn echo_request(message_id: u16) -> Result<Vec<u8>, DimseError> {
    request(C_ECHO_RQ, message_id, VERIFICATION, false, vec![])
}

/// A C-STORE request; one that is a sub-operation of a C-MOVE we serve names the move's
/// originator (AE title, message ID).
pub fn store_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    move_originator: Option<(&str, u16)>,
) -> Result<Vec<u8>, DimseError> {
    let mut extra = vec![uid_element(
        tags::AFFECTED_SOP_INSTANCE_UID,
        sop_instance_uid,
    )];
    if let Some((ae_title, message_id)) = move_originator {
        extra.push(DataElement::new(
            tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
            VR::AE,
            PrimitiveValue::from(ae_title),
        ));
        extra.push(DataElement::new(
            tags::MOVE_ORIGINATOR_MESSAGE_ID,
            VR::US,
            dicom_value!(U16, [message_id]),
        ));
    }
    request(C_STORE_RQ, message_id, sop_class_uid, true, extra)
}

/// A C-FIND request; the identifier follows as a data set.
pub fn find_request(message_id: u16, sop_class_uid: &str) -> Result<Vec<u8>, DimseError> {
    request(C_FIND_RQ, message_id, sop_class_uid, true, vec![])
}

/// A C-MOVE request to `destination`; the identifier follows as a data set.
pub fn move_request(
    message_id: u16,
    sop_class_uid: &str,
    destination: &str,
) -> Result<Vec<u8>, DimseError> {
    request(
        C_MOVE_RQ,
        message_id,
        sop_class_uid,
        true,
        vec![DataElement::new(
            tags::MOVE_DESTINATION,
            VR::AE,
            PrimitiveValue::from(destination),
        )],
    )
}

/// A C-GET request; the identifier follows as a data set.
pub fn get_request(message_id: u16, sop_class_uid: &str) -> Result<Vec<u8>, DimseError> {
    request(C_GET_RQ, message_id, sop_class_uid, true, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_or_oversized_command_sets_are_refused_before_parsing() {
        let valid = store_request(1, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4", None).unwrap();
        // Thousands of nested sequences of undefined length: would overflow the parser's stack.
        let mut nested = valid.clone();
        for _ in 0..5000 {
            nested.extend_from_slice(&[0x00, 0x00, 0x99, 0x99, 0xFF, 0xFF, 0xFF, 0xFF]);
            nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        // One element declaring 2 GiB with a few bytes behind it: would be reserved in full.
        let mut huge = valid.clone();
        huge.extend_from_slice(&[0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x80, 1, 2, 3]);
        let mut outside = valid.clone();
        outside.extend_from_slice(&[0x08, 0x00, 0x10, 0x00, 0x02, 0x00, 0x00, 0x00, b'A', b'B']);
        let mut cut = valid.clone();
        cut.extend_from_slice(&[0x00, 0x00, 0x00]);
        // Attribute Identifier List (AT) of 6 bytes: the parser reads one tag and takes the
        // next header from the wrong place (found by libFuzzer).
        let mut part_tag = valid.clone();
        part_tag.extend_from_slice(&[0x00, 0x00, 0x05, 0x10, 6, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        for (what, bytes) in [
            ("nested", nested),
            ("huge", huge),
            ("outside", outside),
            ("cut", cut),
            ("part of a tag", part_tag),
        ] {
            assert!(
                matches!(Command::decode(&bytes), Err(DimseError::Malformed(_))),
                "{what} accepted"
            );
        }
        assert!(Command::decode(&valid).is_ok());
    }

    #[test]
    fn store_request_round_trips_and_is_answered() {
        let bytes = store_request(
            7,
            "1.2.840.10008.5.1.4.1.1.4",
            "1.2.3.4",
            Some(("MOVER", 9)),
        )
        .unwrap();
        let command = Command::decode(&bytes).unwrap();
        assert_eq!(command.command_field, C_STORE_RQ);
        assert_eq!(command.message_id, 7);
        assert!(command.has_data_set);
        assert_eq!(
            command.affected_sop_instance_uid.as_deref(),
            Some("1.2.3.4")
        );

        let long_reason = "x".repeat(100);
        let rsp = response(
            &command,
            C_STORE_RSP,
            Status::CannotUnderstand,
            Some(&long_reason),
        )
        .unwrap();
        let rsp = Command::decode(&rsp).unwrap();
        assert_eq!(rsp.command_field, C_STORE_RSP);
        assert_eq!(rsp.message_id, 7);
        assert_eq!(rsp.status, Some(0xC000));
        assert!(!rsp.has_data_set);
        assert_eq!(rsp.error_comment.unwrap().len(), 64);
        assert_eq!(
            rsp.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.4")
        );
    }

    #[test]
    fn echo_has_no_data_set() {
        let command = Command::decode(&echo_request(3).unwrap()).unwrap();
        assert_eq!(
            (
                command.command_field,
                command.message_id,
                command.has_data_set
            ),
            (C_ECHO_RQ, 3, false)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Command::decode(&[0xff; 7]).is_err());
        assert!(Command::decode(&[]).is_err());
    }
}
