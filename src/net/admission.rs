//! A look at the A-ASSOCIATE-RQ before dicom-ul answers it. dicom-ul accepts a request of which it
//! can accept no presentation context (its A-ASSOCIATE-AC accepts nothing and the association
//! stays open to no use); DCMTK rejects such a request, and so does msnode.

use std::time::Duration;

use dicom_ul::pdu::{AssociationRQ, Pdu, read_pdu};
use tokio::net::TcpStream;

use super::syntaxes::{ACCEPTED_TRANSFER_SYNTAXES, scp_abstract_syntaxes};
use crate::dicom::trim_padding;

/// Largest request looked at in advance. A request is a few kilobytes even with a hundred
/// contexts; a larger one goes to dicom-ul unseen, and is then checked after it was accepted.
const MAX_PEEKED_REQUEST: usize = 64 * 1024;

/// The association request waiting on `socket`, read without taking it off the socket, so that
/// dicom-ul still reads it as the first PDU. `None` when the first PDU is not a request, is
/// malformed or larger than [`MAX_PEEKED_REQUEST`], or the peer closed: dicom-ul answers those.
pub async fn peek_request(socket: &TcpStream, max_pdu: u32) -> Option<AssociationRQ> {
    let mut buffer = vec![0u8; MAX_PEEKED_REQUEST];
    loop {
        let seen = socket.peek(&mut buffer).await.ok()?;
        if seen == 0 {
            return None;
        }
        if seen >= 6 {
            if buffer[0] != 0x01 {
                return None;
            }
            let length = u32::from_be_bytes([buffer[2], buffer[3], buffer[4], buffer[5]]) as usize;
            let total = length.checked_add(6)?;
            if total > MAX_PEEKED_REQUEST {
                return None;
            }
            if seen >= total {
                return match read_pdu(&buffer[..total], max_pdu, false) {
                    Ok(Some(Pdu::AssociationRQ(request))) => Some(request),
                    _ => None,
                };
            }
        }
        // Part of the request is here: peek returns at once until the rest arrives.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether at least one proposed presentation context names an abstract syntax msnode
/// negotiates together with a transfer syntax it accepts.
pub fn accepts_some_context(request: &AssociationRQ) -> bool {
    request.presentation_contexts.iter().any(|context| {
        let abstract_syntax = trim_padding(&context.abstract_syntax);
        scp_abstract_syntaxes().any(|known| known == abstract_syntax)
            && context
                .transfer_syntaxes
                .iter()
                .any(|ts| ACCEPTED_TRANSFER_SYNTAXES.contains(&trim_padding(ts)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextProposed;

    fn request(contexts: &[(&str, &[&str])]) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: "MSNODE".into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: contexts
                .iter()
                .enumerate()
                .map(
                    |(i, (abstract_syntax, syntaxes))| PresentationContextProposed {
                        id: (2 * i + 1) as u8,
                        abstract_syntax: abstract_syntax.to_string(),
                        transfer_syntaxes: syntaxes.iter().map(|s| s.to_string()).collect(),
                    },
                )
                .collect(),
            user_variables: Vec::new(),
        }
    }

    #[test]
    fn a_request_is_acceptable_when_one_context_pairs_a_known_class_and_syntax() {
        const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
        const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
        const EXPLICIT: &str = "1.2.840.10008.1.2.1";
        const UNKNOWN_SYNTAX: &str = "1.2.3.4";
        assert!(!accepts_some_context(&request(&[])));
        assert!(!accepts_some_context(&request(&[(CT, &[EXPLICIT])])));
        assert!(!accepts_some_context(&request(&[(MR, &[UNKNOWN_SYNTAX])])));
        assert!(accepts_some_context(&request(&[
            (CT, &[EXPLICIT]),
            (&format!("{MR}\0"), &[UNKNOWN_SYNTAX, EXPLICIT])
        ])));
    }
}
