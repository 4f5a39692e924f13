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
