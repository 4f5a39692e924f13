//! DIMSE status codes msnode answers with (PS3.4 B.2.3, PS3.7 C): the SCP sends them, and an
//! ingest refusal names the one its reason deserves.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// A700: the instance is larger than we accept, or storage is full.
    OutOfResources,
    /// A900: the data set does not match what the command says, or lacks identifying attributes.
    DataSetDoesNotMatchSopClass,
    /// C000: the data set cannot be parsed.
    CannotUnderstand,
    /// 0122
    SopClassNotSupported,
    /// 0211
    UnrecognizedOperation,
    /// 0110
    ProcessingFailure,
    /// FF00: a C-FIND match or a C-MOVE progress report follows; more responses come.
    Pending,
    /// B000: a C-MOVE or C-GET ended with some sub-operations failed.
    SubOperationsFailed,
    /// A801: the C-MOVE destination is not a known peer.
    MoveDestinationUnknown,
    /// A702: no sub-operation could be performed (the move destination cannot be reached).
    UnableToPerformSubOperations,
}

impl Status {
    /// A short name for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::OutOfResources => "out_of_resources",
            Status::DataSetDoesNotMatchSopClass => "data_set_does_not_match_sop_class",
            Status::CannotUnderstand => "cannot_understand",
            Status::SopClassNotSupported => "sop_class_not_supported",
            Status::UnrecognizedOperation => "unrecognized_operation",
            Status::ProcessingFailure => "processing_failure",
            Status::Pending => "pending",
            Status::SubOperationsFailed => "sub_operations_failed",
            Status::MoveDestinationUnknown => "move_destination_unknown",
            Status::UnableToPerformSubOperations => "unable_to_perform_sub_operations",
        }
    }

    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0x0000,
            Status::OutOfResources => 0xA700,
            Status::DataSetDoesNotMatchSopClass => 0xA900,
            Status::CannotUnderstand => 0xC000,
            Status::SopClassNotSupported => 0x0122,
            Status::UnrecognizedOperation => 0x0211,
            Status::ProcessingFailure => 0x0110,
            Status::Pending => 0xFF00,
            Status::SubOperationsFailed => 0xB000,
            Status::MoveDestinationUnknown => 0xA801,
            Status::UnableToPerformSubOperations => 0xA702,
        }
    }
}

/// A warning status of a storage or retrieve response (PS3.4 B.2.3, C.4.2.1.5): 0001 or Bxxx.
/// The object was stored all the same.
pub fn is_warning(code: u16) -> bool {
    code == 0x0001 || (code & 0xF000) == 0xB000
}

/// Whether a C-STORE response with this status means the peer holds the object: success or a
/// warning. Anything else (Axxx, Cxxx, 01xx, 02xx) is a refusal.
pub fn is_stored(code: u16) -> bool {
    code == 0x0000 || is_warning(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_count_as_stored_and_failures_do_not() {
        for stored in [0x0000, 0x0001, 0xB000, 0xB006, 0xB007] {
            assert!(is_stored(stored), "{stored:#06x}");
        }
        for refused in [0xA700, 0xA900, 0xC000, 0x0110, 0x0122, 0x0211, 0xFF00] {
            assert!(!is_stored(refused), "{refused:#06x}");
        }
        assert!(!is_warning(0x0000));
    }
}
