//! What happens on a failover connection before the first CONNECT: the
//! STARTTLS exchange of RFC 8156 §10 / RFC 7653 §8.2, as bytes in and out.
//!
//! The primary (requester) sends STARTTLS; the secondary (responder) answers
//! REPLY without a status and both run the TLS handshake. A REPLY with a
//! status (TLSConnectionRefused), anything but STARTTLS as a secure
//! responder's first message, or data pipelined behind STARTTLS ends the
//! connection: never a fall-back to plain text. An insecure responder answers
//! STARTTLS with TLSConnectionRefused; an insecure pair goes straight to
//! CONNECT. STARTTLS and REPLY are RFC 9915-format messages (4-octet header)
//! in the same 2-octet-length framing, encoded by the codec.

use crate::wire::{
    ClientMessage, DhcpOption, FrameDecoder, MAX_FRAME_LEN, Message, MessageType, Options, Status, StatusCode,
};

/// What the connection must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes (in plain text).
    Send(Vec<u8>),
    /// Run the TLS handshake now; failover messages follow inside TLS.
    StartTls,
    /// The preamble is over; these bytes already received are the start of
    /// the failover message stream (insecure mode only).
    Established(Vec<u8>),
    /// Close the connection, for this reason.
    Refuse(String),
}

#[derive(Debug)]
enum Phase {
    /// Requester: STARTTLS sent, waiting for the REPLY.
    AwaitReply,
    /// Responder: waiting for the first message.
    AwaitFirst,
    Done,
}

#[derive(Debug)]
pub struct Preamble {
    secure: bool,
    phase: Phase,
    dec: FrameDecoder,
}

/// The transaction id the requester uses (any value; the REPLY echoes it).
const XID: u32 = 1;

fn frame(m: &Message) -> Vec<u8> {
    // Our own fixed small messages always encode.
    let body = m.encode().unwrap_or_default();
    let mut f = (body.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

fn message(t: MessageType, xid: u32, status: Option<(StatusCode, &str)>) -> Message {
    let mut options = Options::new();
    if let Some((code, text)) = status {
        options.push(DhcpOption::StatusCode(Status::new(code, text)));
    }
    Message::Client(ClientMessage { msg_type: t, transaction_id: xid, options })
}

impl Preamble {
    /// The primary's side: the preamble and what to send first.
    pub fn requester(secure: bool) -> (Preamble, Vec<Step>) {
        let dec = FrameDecoder::new(MAX_FRAME_LEN);
        if !secure {
            return (Preamble { secure, phase: Phase::Done, dec }, vec![Step::Established(Vec::new())]);
        }
        let p = Preamble { secure, phase: Phase::AwaitReply, dec };
        (p, vec![Step::Send(frame(&message(MessageType::StartTls, XID, None)))])
    }

    /// The secondary's side.
    pub fn responder(secure: bool) -> Preamble {
        Preamble { secure, phase: Phase::AwaitFirst, dec: FrameDecoder::new(MAX_FRAME_LEN) }
    }

    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Bytes received in plain text.
    pub fn push(&mut self, data: &[u8]) -> Vec<Step> {
        if self.done() {
            return vec![Step::Refuse("data after the preamble".into())];
        }
        if let Err(e) = self.dec.push(data) {
            self.phase = Phase::Done;
            return vec![Step::Refuse(format!("bad frame: {e}"))];
        }
        match self.phase {
            Phase::AwaitReply => self.reply(),
            Phase::AwaitFirst => self.first(),
            Phase::Done => Vec::new(),
        }
    }

    fn reply(&mut self) -> Vec<Step> {
        let m = match self.dec.next_frame() {
            Ok(Some(f)) => Message::decode(f),
            Ok(None) => return Vec::new(),
            Err(e) => {
                self.phase = Phase::Done;
                return vec![Step::Refuse(format!("bad frame: {e}"))];
            }
        };
        self.phase = Phase::Done;
        let m = match m {
            Ok(Message::Client(c)) if c.msg_type == MessageType::Reply => c,
            Ok(other) => return vec![Step::Refuse(format!("expected REPLY to STARTTLS, got {}", other.msg_type()))],
            Err(e) => return vec![Step::Refuse(format!("undecodable answer to STARTTLS: {e}"))],
        };
        match m.options.status() {
            None => {}
            Some(s) if s.code == StatusCode::SUCCESS => {}
            // TLSConnectionRefused (or anything else): never fall back to plain text.
            Some(s) => {
                return vec![Step::Refuse(format!(
                    "the partner refused TLS ({}: {}); closing (RFC 7653 §8.2)",
                    s.code.name(),
                    s.message
                ))];
            }
        }
        if self.dec.buffered() > 0 {
            return vec![Step::Refuse("data after REPLY before the TLS handshake".into())];
        }
        vec![Step::StartTls]
    }

    fn first(&mut self) -> Vec<Step> {
        let Some(t) = self.dec.peek(2) else { return Vec::new() };
        let starttls = t == MessageType::StartTls.code();
        if !starttls {
            self.phase = Phase::Done;
            if self.secure {
                // §10 / RFC 7653 §8.2: a secure server closes connections not secured by TLS.
                return vec![Step::Refuse(format!("first message is type {t}, not STARTTLS: not secured by TLS"))];
            }
            return vec![Step::Established(self.dec.take_buffered())];
        }
        let xid = match self.dec.next_frame() {
            Ok(Some(f)) => match Message::decode(f) {
                Ok(Message::Client(c)) => c.transaction_id,
                Ok(Message::Relay(_)) => 0,
                Err(e) => {
                    self.phase = Phase::Done;
                    return vec![Step::Refuse(format!("malformed STARTTLS: {e}"))];
                }
            },
            Ok(None) => return Vec::new(),
            Err(e) => {
                self.phase = Phase::Done;
                return vec![Step::Refuse(format!("bad frame: {e}"))];
            }
        };
        self.phase = Phase::Done;
        if !self.secure {
            let r = message(MessageType::Reply, xid, Some((StatusCode::TLS_CONNECTION_REFUSED, "TLS is not available")));
            return vec![
                Step::Send(frame(&r)),
                Step::Refuse("STARTTLS received but this server is configured insecure: TLSConnectionRefused".into()),
            ];
        }
        if self.dec.buffered() > 0 {
            return vec![Step::Refuse("data after STARTTLS before the handshake".into())];
        }
        vec![Step::Send(frame(&message(MessageType::Reply, xid, None))), Step::StartTls]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends(steps: &[Step]) -> Vec<u8> {
        steps.iter().filter_map(|s| if let Step::Send(b) = s { Some(b.clone()) } else { None }).flatten().collect()
    }

    #[test]
    fn secure_pair_agrees_on_tls() {
        let (mut req, first) = Preamble::requester(true);
        let mut resp = Preamble::responder(true);
        let answer = resp.push(&sends(&first));
        assert_eq!(answer.last(), Some(&Step::StartTls));
        assert_eq!(req.push(&sends(&answer)), vec![Step::StartTls]);
    }

    #[test]
    fn an_insecure_responder_refuses_starttls_and_the_requester_closes() {
        let (mut req, first) = Preamble::requester(true);
        let mut resp = Preamble::responder(false);
        let answer = resp.push(&sends(&first));
        assert!(matches!(answer.last(), Some(Step::Refuse(_))));
        let r = req.push(&sends(&answer));
        assert!(matches!(&r[..], [Step::Refuse(why)] if why.contains("TLSConnectionRefused")), "{r:?}");
    }

    #[test]
    fn a_secure_responder_refuses_plain_connect_and_byte_by_byte_input_works() {
        let connect = crate::wire::FailoverMessage::new(MessageType::Connect, 7, 0).encode_frame().unwrap();
        let mut resp = Preamble::responder(true);
        let mut out = Vec::new();
        for b in &connect {
            out.extend(resp.push(std::slice::from_ref(b)));
            if resp.done() {
                break;
            }
        }
        assert!(matches!(&out[..], [Step::Refuse(why)] if why.contains("not STARTTLS")), "{out:?}");
        // Insecure: the CONNECT is handed on whole.
        let mut resp = Preamble::responder(false);
        assert_eq!(resp.push(&connect), vec![Step::Established(connect.clone())]);
    }

    #[test]
    fn data_pipelined_behind_starttls_is_refused() {
        let (_, first) = Preamble::requester(true);
        let mut bytes = sends(&first);
        bytes.extend_from_slice(&[0, 4, 1, 2, 3, 4]);
        let mut resp = Preamble::responder(true);
        assert!(matches!(resp.push(&bytes).last(), Some(Step::Refuse(_))));
    }
}
