//! The load generator's WebSocket client layer, over a TCP or TLS stream: the RFC 6455
//! upgrade request (its 101 answer parsed by `httparse`), and framing with
//! `websocket-sans-io` (the same frame codec the gateway uses): every write becomes one
//! masked binary frame, every server frame is unwrapped back into the byte stream the
//! client session decodes.

use bytes::BytesMut;
use websocket_sans_io::{Opcode, WebsocketFrameDecoder, WebsocketFrameEvent};

/// The path a benchmark connects to (the gateway's default `[ws] path`).
pub const PATH: &str = "/ws";

/// The subprotocol ringgate speaks over WebSocket.
pub const SUBPROTOCOL: &str = "ringgate.v1";

/// The upgrade request. The key is fixed: the load generator does not check the accept
/// header against it (the gateway's own tests do), it measures the gateway.
pub fn request(host: &str) -> Vec<u8> {
    format!(
        "GET {PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the answer to [`request`] from `input`: `Ok(Some(n))` once a 101 with the
/// subprotocol arrived in its first `n` bytes, `Ok(None)` while incomplete, or an error
/// naming the status the gateway refused with.
pub fn response(input: &[u8]) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let n = match parsed.parse(input).map_err(std::io::Error::other)? {
        httparse::Status::Partial if input.len() > 8192 => return Err(std::io::Error::other("ws: answer too long")),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    if parsed.code != Some(101) {
        return Err(std::io::Error::other(format!("ws: refused with {}", parsed.code.unwrap_or(0))));
    }
    let chosen = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-protocol") && h.value.eq_ignore_ascii_case(SUBPROTOCOL.as_bytes())
    });
    if !chosen {
        return Err(std::io::Error::other("ws: subprotocol not selected"));
    }
    Ok(Some(n))
}

/// One connection's framing state (a few words).
#[derive(Debug)]
pub struct Framing {
    decoder: WebsocketFrameDecoder,
    /// The frame being read carries message data (binary or continuation).
    data: bool,
    /// A mask per frame; any sequence will do for a load generator.
    mask: u32,
}

impl Framing {
    pub fn new(seed: u32) -> Framing {
        Framing { decoder: WebsocketFrameDecoder::new(), data: false, mask: seed | 1 }
    }

    /// Appends to `out` the message payload in `input`; false once the server sent Close
    /// (or broke framing): the connection is over.
    pub fn unwrap(&mut self, input: &mut [u8], out: &mut BytesMut) -> bool {
        let mut at = 0;
        loop {
            let rest = input.get_mut(at..).unwrap_or_default();
            let Ok(step) = self.decoder.add_data(rest);
            let n = step.consumed_bytes;
            match step.event {
                None if n == 0 => return true,
                None => {}
                Some(WebsocketFrameEvent::Start { frame_info, .. }) => {
                    if frame_info.opcode == Opcode::ConnectionClose || !frame_info.is_reasonable() {
                        return false;
                    }
                    self.data = matches!(frame_info.opcode, Opcode::Binary | Opcode::Continuation);
                }
                Some(WebsocketFrameEvent::PayloadChunk { .. }) if self.data => {
                    out.extend_from_slice(rest.get(..n).unwrap_or_default());
                }
                Some(WebsocketFrameEvent::PayloadChunk { .. }) => {}
                Some(WebsocketFrameEvent::End { .. }) => self.data = false,
            }
            at += n;
        }
    }

    /// `plain` as one masked, final binary frame.
    pub fn wrap(&mut self, plain: &[u8]) -> Vec<u8> {
        // xorshift: a different mask per frame.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        ringgate::transport::ws::frames::client_frame(Opcode::Binary, true, self.mask.to_be_bytes(), plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_frame_unwraps_to_the_same_bytes_in_any_split() {
        let mut client = Framing::new(7);
        let frame = client.wrap(b"hello, ringgate");
        // The gateway's reader accepts it (masked, binary) and yields the payload.
        let mut server = ringgate::transport::ws::frames::Reader::new(1 << 16);
        let mut got = Vec::new();
        let mut replies = BytesMut::new();
        let mut copy = frame.clone();
        server.feed(&mut copy, &mut |d, _| got.extend_from_slice(d), &mut replies).expect("valid frame");
        assert_eq!(got, b"hello, ringgate");
        // A server frame, cut at every point, unwraps to its payload.
        let mut server_frame = BytesMut::new();
        ringgate::transport::ws::frames::encode(Opcode::Binary, b"push bytes", &mut server_frame);
        for cut in 0..server_frame.len() {
            let mut framing = Framing::new(1);
            let mut out = BytesMut::new();
            let (a, b) = server_frame.split_at(cut);
            assert!(framing.unwrap(&mut a.to_vec(), &mut out));
            assert!(framing.unwrap(&mut b.to_vec(), &mut out));
            assert_eq!(&out[..], b"push bytes", "cut at {cut}");
        }
    }

    #[test]
    fn a_close_frame_ends_the_connection() {
        let mut close = BytesMut::new();
        ringgate::transport::ws::frames::encode_close(4001, "normal", &mut close);
        let mut out = BytesMut::new();
        assert!(!Framing::new(1).unwrap(&mut close.to_vec(), &mut out));
    }

    #[test]
    fn the_answer_must_be_101_with_the_subprotocol() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: x\r\nSec-WebSocket-Protocol: ringgate.v1\r\n\r\nrest";
        assert_eq!(response(ok).expect("101"), Some(ok.len() - 4));
        assert_eq!(response(&ok[..20]).expect("partial"), None);
        assert!(response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
    }
}
