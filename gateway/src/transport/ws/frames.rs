//! WebSocket frames after the handshake, sans-IO: the server's reader of client frames and
//! writer of its own. Frame headers are decoded and payloads unmasked by the
//! `websocket-sans-io` crate (a push parser whose state is a few words, so an idle
//! connection keeps no buffer); this module adds what RFC 6455 asks of a server on top of it:
//! masking required, message sequencing (fragments, interleaved control frames), control
//! frame rules, a message size bound, and the close handshake's payload.
//!
//! # Contract
//!
//! [`Reader::feed`] takes bytes as they arrive (any split) and:
//! - hands every byte of binary message payload, unmasked, to `data` as
//!   [`Part::Binary`] (a ringgate stream may cut its frames anywhere across messages, so
//!   payload is passed on as it arrives), and calls it with [`Part::End`] and no bytes when
//!   a message ends (the conformance harness echoes per message; the gateway ignores it);
//! - queues a Pong for each Ping into `replies`;
//! - returns [`Fed`]: how many bytes it took, whether a whole frame arrived, and a Close
//!   from the peer when one did (the caller echoes it and closes);
//! - or fails with a [`Violation`], whose [`Violation::code`] is the close code to send.
//!
//! Text messages are a violation for the gateway (1003: it speaks binary only); the same
//! reader, made with [`Reader::with_text`], passes each on whole as [`Part::Text`] after
//! UTF-8 validation, for the conformance harness.

use bytes::{BufMut, BytesMut};
use websocket_sans_io::{FrameInfo, Opcode, WebsocketFrameDecoder, WebsocketFrameEvent};

/// Close codes (RFC 6455 §7.4.1).
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// ringgate's own closes: 4000 + the reason code.
    pub const RINGGATE_BASE: u16 = 4000;
}

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// A client broke the WebSocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A text message: the gateway speaks binary only.
    Text,
    /// A frame without a mask (clients must mask).
    Unmasked,
    /// A message over the size bound.
    TooBig,
    /// Reserved bits or opcodes, a fragmented or oversized control frame, a continuation
    /// with no message, or a new message inside one.
    Framing,
    /// A Close payload of one byte, or with a code a peer may not send.
    BadClose,
    /// Invalid UTF-8 in a text message or a close reason.
    BadUtf8,
}

impl Violation {
    pub const ALL: [Violation; 6] = [
        Violation::Text,
        Violation::Unmasked,
        Violation::TooBig,
        Violation::Framing,
        Violation::BadClose,
        Violation::BadUtf8,
    ];

    /// The close code that says so.
    pub fn code(self) -> u16 {
        match self {
            Violation::Text => code::UNSUPPORTED_DATA,
            Violation::TooBig => code::MESSAGE_TOO_BIG,
            Violation::BadUtf8 => code::INVALID_PAYLOAD,
            Violation::Unmasked | Violation::Framing | Violation::BadClose => code::PROTOCOL_ERROR,
        }
    }

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Violation::Text => "text_frame",
            Violation::Unmasked => "unmasked_frame",
            Violation::TooBig => "message_too_big",
            Violation::Framing => "framing",
            Violation::BadClose => "bad_close",
            Violation::BadUtf8 => "bad_utf8",
        }
    }
}

/// What the bytes handed to `data` are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Binary message payload, as it arrives.
    Binary,
    /// The binary message ended (no bytes).
    End,
    /// A whole, valid text message (only with [`Reader::with_text`]).
    Text,
}

/// What one [`Reader::feed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// Bytes of the input taken (all of it, unless a Close ended the stream).
    pub consumed: usize,
    /// Payload bytes handed to `data`.
    pub data: usize,
    /// At least one whole frame arrived (a Ping or Pong counts as life).
    pub frames: bool,
    /// The peer sent Close with this code (`Some(None)`: no code); nothing after it is read.
    pub close: Option<Option<u16>>,
}

/// The message being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    None,
    Binary,
    Text,
}

/// Reads client frames; see the module docs. 64 bytes; between messages it holds no state
/// that a new reader would not have ([`Reader::at_rest`]), so a connection can drop it.
#[derive(Debug, Clone)]
pub struct Reader {
    decoder: WebsocketFrameDecoder,
    message: Message,
    /// Bytes of the current message so far.
    message_len: u64,
    max_message: u64,
    /// The frame being read: its opcode and whether it is a control frame collected whole.
    frame: Opcode,
    /// Accept text messages (the conformance harness); the gateway refuses them.
    text: bool,
    /// The last byte taken ended a frame (or none was taken yet).
    between_frames: bool,
    /// A control frame's payload, or a text message's tail of an incomplete UTF-8 sequence
    /// (only while one is being read; `None` keeps an idle connection at no allocation).
    scratch: Option<Box<Scratch>>,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    control: Vec<u8>,
    /// A text message so far (only with `text`), validated as it grows.
    text: Vec<u8>,
    /// How much of `text` is known to be valid UTF-8 (each byte is checked once).
    checked: usize,
}

impl Reader {
    /// A reader of binary messages of at most `max_message` bytes.
    pub fn new(max_message: u64) -> Reader {
        Reader {
            decoder: WebsocketFrameDecoder::new(),
            message: Message::None,
            message_len: 0,
            max_message,
            frame: Opcode::Binary,
            text: false,
            between_frames: true,
            scratch: None,
        }
    }

    /// A reader that also accepts text messages (handed to `data` once whole and valid).
    pub fn with_text(max_message: u64) -> Reader {
        Reader { text: true, ..Reader::new(max_message) }
    }

    /// Whether the last message ended (a text harness echoes per message).
    pub fn in_message(&self) -> bool {
        self.message != Message::None
    }

    /// Whether the reader is where a new one starts: between messages and frames (no part
    /// of a header taken either), holding nothing.
    pub fn at_rest(&self) -> bool {
        self.between_frames && self.message == Message::None && self.scratch.is_none()
    }

    /// Takes `input` (unmasked in place); see the module docs.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        data: &mut dyn FnMut(&[u8], Part),
        replies: &mut BytesMut,
    ) -> Result<Fed, Violation> {
        let mut fed = Fed::default();
        loop {
            let rest = input.get_mut(fed.consumed..).unwrap_or_default();
            // Infallible with the crate's default `large_frames` feature.
            let Ok(step) = self.decoder.add_data(rest);
            let n = step.consumed_bytes;
            if n > 0 || step.event.is_some() {
                self.between_frames = matches!(step.event, Some(WebsocketFrameEvent::End { .. }));
            }
            match step.event {
                None if n == 0 => return Ok(fed),
                None => {}
                Some(WebsocketFrameEvent::Start { frame_info, .. }) => self.start(&frame_info)?,
                Some(WebsocketFrameEvent::PayloadChunk { .. }) => {
                    let chunk = rest.get(..n).unwrap_or_default();
                    fed.data += self.payload(chunk, data)?;
                }
                Some(WebsocketFrameEvent::End { frame_info, .. }) => {
                    fed.frames = true;
                    if let Some(close) = self.end(&frame_info, data, replies)? {
                        fed.consumed += n;
                        fed.close = Some(close);
                        return Ok(fed);
                    }
                }
            }
            fed.consumed += n;
        }
    }

    fn start(&mut self, frame: &FrameInfo) -> Result<(), Violation> {
        if frame.mask.is_none() {
            return Err(Violation::Unmasked);
        }
        if !frame.is_reasonable() {
            return Err(Violation::Framing);
        }
        self.frame = frame.opcode;
        match frame.opcode {
            Opcode::Ping | Opcode::Pong | Opcode::ConnectionClose => {
                if frame.payload_length > MAX_CONTROL as u64 {
                    return Err(Violation::Framing);
                }
                self.scratch.get_or_insert_with(Box::default).control.clear();
                return Ok(());
            }
            Opcode::Continuation if self.message == Message::None => return Err(Violation::Framing),
            Opcode::Continuation => {}
            _ if self.message != Message::None => return Err(Violation::Framing),
            Opcode::Text if !self.text => return Err(Violation::Text),
            Opcode::Text => self.message = Message::Text,
            _ => self.message = Message::Binary,
        }
        if frame.opcode != Opcode::Continuation {
            self.message_len = 0;
        }
        self.message_len = self.message_len.saturating_add(frame.payload_length);
        if self.message_len > self.max_message {
            return Err(Violation::TooBig);
        }
        Ok(())
    }

    fn payload(&mut self, chunk: &[u8], data: &mut dyn FnMut(&[u8], Part)) -> Result<usize, Violation> {
        match self.frame {
            Opcode::Ping | Opcode::Pong | Opcode::ConnectionClose => {
                self.scratch.get_or_insert_with(Box::default).control.extend_from_slice(chunk);
                Ok(0)
            }
            _ if self.message == Message::Text => {
                let scratch = self.scratch.get_or_insert_with(Box::default);
                scratch.text.extend_from_slice(chunk);
                // Fail fast on a sequence that can never become valid UTF-8; an incomplete
                // one at the end waits for the next chunk.
                let unchecked = scratch.text.get(scratch.checked..).unwrap_or_default();
                match std::str::from_utf8(unchecked) {
                    Ok(_) => scratch.checked = scratch.text.len(),
                    Err(e) if e.error_len().is_some() => return Err(Violation::BadUtf8),
                    Err(e) => scratch.checked += e.valid_up_to(),
                }
                Ok(0)
            }
            _ => {
                data(chunk, Part::Binary);
                Ok(chunk.len())
            }
        }
    }

    /// A frame ended: acts on a control frame; returns the peer's Close when it was one.
    fn end(
        &mut self,
        frame: &FrameInfo,
        data: &mut dyn FnMut(&[u8], Part),
        replies: &mut BytesMut,
    ) -> Result<Option<Option<u16>>, Violation> {
        match frame.opcode {
            Opcode::Ping => {
                let payload = self.take_control();
                encode(Opcode::Pong, &payload, replies);
                Ok(None)
            }
            Opcode::Pong => {
                self.take_control();
                Ok(None)
            }
            Opcode::ConnectionClose => {
                let payload = self.take_control();
                close_payload(&payload).map(Some)
            }
            _ if frame.fin => {
                if self.message == Message::Text {
                    let scratch = self.scratch.take().unwrap_or_default();
                    if scratch.checked != scratch.text.len() {
                        return Err(Violation::BadUtf8);
                    }
                    data(&scratch.text, Part::Text);
                } else {
                    data(&[], Part::End);
                }
                self.message = Message::None;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

impl Reader {
    /// The control frame just read; the scratch goes too unless a text message it also
    /// holds is still being read (a control frame may come between its fragments).
    fn take_control(&mut self) -> Vec<u8> {
        let Some(scratch) = self.scratch.as_mut() else { return Vec::new() };
        let control = std::mem::take(&mut scratch.control);
        if self.message != Message::Text {
            self.scratch = None;
        }
        control
    }
}

/// Checks a Close payload (RFC 6455 §5.5.1, §7.4): empty, or a code a peer may send and
/// a UTF-8 reason.
fn close_payload(payload: &[u8]) -> Result<Option<u16>, Violation> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(Violation::BadClose),
        [a, b, reason @ ..] => (u16::from_be_bytes([*a, *b]), reason),
    };
    let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
    if !allowed {
        return Err(Violation::BadClose);
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(Violation::BadUtf8);
    }
    Ok(Some(code))
}

/// Appends one unmasked, final frame of `opcode` carrying `payload`.
pub fn encode(opcode: Opcode, payload: &[u8], out: &mut BytesMut) {
    let info = FrameInfo { opcode, payload_length: payload.len() as u64, mask: None, fin: true, reserved: 0 };
    let header = websocket_sans_io::WebsocketFrameEncoder::new().start_frame(&info);
    out.reserve(header.len() + payload.len());
    out.put_slice(&header);
    out.put_slice(payload);
}

/// Appends a Close frame with `code` and `reason` (cut to fit a control frame).
pub fn encode_close(code: u16, reason: &str, out: &mut BytesMut) {
    let mut payload = Vec::with_capacity(MAX_CONTROL);
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(reason.get(..end).unwrap_or_default().as_bytes());
    encode(Opcode::ConnectionClose, &payload, out);
}

/// The header of an unmasked, final binary frame of `len` bytes.
pub fn binary_header(len: usize) -> impl AsRef<[u8]> {
    let info = FrameInfo { opcode: Opcode::Binary, payload_length: len as u64, mask: None, fin: true, reserved: 0 };
    websocket_sans_io::WebsocketFrameEncoder::new().start_frame(&info)
}

/// Masks `payload` as a client would; for tests and the load generator's clients.
pub fn client_frame(opcode: Opcode, fin: bool, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let info = FrameInfo { opcode, payload_length: payload.len() as u64, mask: Some(mask), fin, reserved: 0 };
    let mut encoder = websocket_sans_io::WebsocketFrameEncoder::new();
    let mut out = encoder.start_frame(&info).to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(body) = out.get_mut(start..) {
        encoder.transform_frame_payload(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [1, 2, 3, 4];

    /// Feeds `input` in pieces of `chunk` bytes; returns the data, the replies and the
    /// outcome of the last call.
    fn feed_all(reader: &mut Reader, input: &[u8], chunk: usize) -> (Vec<u8>, BytesMut, Result<Fed, Violation>) {
        let (mut data, mut replies) = (Vec::new(), BytesMut::new());
        let mut last = Ok(Fed::default());
        for piece in input.chunks(chunk.max(1)) {
            let mut piece = piece.to_vec();
            last = reader.feed(&mut piece, &mut |d, _| data.extend_from_slice(d), &mut replies);
            if !matches!(last, Ok(Fed { close: None, .. })) {
                break;
            }
        }
        (data, replies, last)
    }

    #[test]
    fn fragments_and_interleaved_pings_reach_the_stream_in_order_at_any_split() {
        let mut input = client_frame(Opcode::Binary, false, MASK, b"hello ");
        input.extend(client_frame(Opcode::Ping, true, MASK, b"p"));
        input.extend(client_frame(Opcode::Continuation, true, MASK, b"world"));
        for chunk in [1, 2, 3, 7, input.len()] {
            let mut reader = Reader::new(1 << 20);
            let (data, replies, last) = feed_all(&mut reader, &input, chunk);
            assert_eq!(data, b"hello world", "chunk {chunk}");
            assert_eq!(&replies[..], [0x8a, 0x01, b'p'], "a Pong echoing the Ping");
            assert!(last.is_ok());
            assert!(!reader.in_message());
            assert!(reader.at_rest(), "chunk {chunk}: nothing held after the message");
        }
    }

    #[test]
    fn payload_chunks_of_any_length_unmask_right() {
        // websocket-sans-io adds each chunk's length to the mask phase as a u8: a chunk of 253
        // bytes or more after a phase of 3 wraps (see Cargo.toml's profile note).
        let payload: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        let frame = client_frame(Opcode::Binary, true, [9, 8, 7, 6], &payload);
        let header = frame.len() - payload.len();
        for first in [1usize, 2, 3] {
            let mut reader = Reader::new(1 << 20);
            let (mut data, mut replies) = (Vec::new(), BytesMut::new());
            let cuts = [header + first, header + first + 255, frame.len()];
            let mut at = 0;
            for cut in cuts {
                let mut piece = frame[at..cut].to_vec();
                reader.feed(&mut piece, &mut |d, _| data.extend_from_slice(d), &mut replies).unwrap();
                at = cut;
            }
            assert_eq!(data, payload, "first chunk {first}");
        }
    }

    #[test]
    fn a_reader_is_at_rest_only_between_whole_frames() {
        let frame = client_frame(Opcode::Binary, true, MASK, b"abc");
        let mut replies = BytesMut::new();
        for cut in 1..frame.len() {
            let mut reader = Reader::new(100);
            reader.feed(&mut frame[..cut].to_vec(), &mut |_, _| {}, &mut replies).unwrap();
            assert!(!reader.at_rest(), "cut at {cut}: part of a frame is held");
            reader.feed(&mut frame[cut..].to_vec(), &mut |_, _| {}, &mut replies).unwrap();
            assert!(reader.at_rest(), "cut at {cut}");
        }
    }

    #[test]
    fn each_violation_has_its_close_code() {
        let oversized = client_frame(Opcode::Binary, true, MASK, &[0; 101]);
        let cases: [(Vec<u8>, Violation, u16); 7] = [
            (client_frame(Opcode::Text, true, MASK, b"hi"), Violation::Text, 1003),
            (vec![0x82, 0x02, b'h', b'i'], Violation::Unmasked, 1002),
            (oversized, Violation::TooBig, 1009),
            (client_frame(Opcode::Continuation, true, MASK, b"x"), Violation::Framing, 1002),
            (client_frame(Opcode::Ping, false, MASK, b"x"), Violation::Framing, 1002),
            (client_frame(Opcode::ConnectionClose, true, MASK, &[0x03, 0xed]), Violation::BadClose, 1002),
            (client_frame(Opcode::ConnectionClose, true, MASK, &[0x03, 0xe8, 0xff]), Violation::BadUtf8, 1007),
        ];
        for (input, violation, code) in cases {
            let (_, _, last) = feed_all(&mut Reader::new(100), &input, input.len());
            assert_eq!(last, Err(violation), "{input:?}");
            assert_eq!(violation.code(), code);
        }
    }

    #[test]
    fn a_close_stops_the_reader_and_carries_its_code() {
        let mut input = client_frame(Opcode::ConnectionClose, true, MASK, &[0x03, 0xe8, b'o', b'k']);
        input.extend(client_frame(Opcode::Binary, true, MASK, b"after"));
        let (data, _, last) = feed_all(&mut Reader::new(100), &input, input.len());
        assert!(data.is_empty());
        let fed = last.unwrap();
        assert_eq!(fed.close, Some(Some(1000)));
        assert_eq!(fed.consumed, 10, "nothing after the Close (2 + 4 mask + 4 bytes) is taken");
    }

    #[test]
    fn a_ping_between_text_fragments_keeps_the_text_so_far() {
        let mut input = client_frame(Opcode::Text, false, MASK, b"frag1");
        input.extend(client_frame(Opcode::Ping, true, MASK, b"p"));
        input.extend(client_frame(Opcode::Continuation, true, MASK, b"frag2"));
        let mut got = Vec::new();
        let mut replies = BytesMut::new();
        Reader::with_text(100).feed(&mut input, &mut |d, part| got.push((d.to_vec(), part)), &mut replies).unwrap();
        assert_eq!(got, [(b"frag1frag2".to_vec(), Part::Text)]);
        assert_eq!(&replies[..], [0x8a, 0x01, b'p']);
    }

    #[test]
    fn text_is_passed_on_whole_and_validated_in_harness_mode() {
        let mut input = client_frame(Opcode::Text, false, MASK, "h\u{e9}".as_bytes().get(..2).unwrap());
        input.extend(client_frame(Opcode::Continuation, true, MASK, "h\u{e9}".as_bytes().get(2..).unwrap()));
        let mut got = Vec::new();
        let mut reader = Reader::with_text(100);
        let mut replies = BytesMut::new();
        reader.feed(&mut input, &mut |d, text| got.push((d.to_vec(), text)), &mut replies).unwrap();
        assert_eq!(got, [("h\u{e9}".as_bytes().to_vec(), Part::Text)]);
        let mut bad = client_frame(Opcode::Text, true, MASK, &[0xff]);
        assert_eq!(Reader::with_text(100).feed(&mut bad, &mut |_, _| {}, &mut replies), Err(Violation::BadUtf8));
    }

    #[test]
    fn server_frames_are_unmasked_with_the_short_and_long_lengths() {
        let mut out = BytesMut::new();
        encode_close(4000 + 12, "server_shutdown", &mut out);
        assert_eq!(&out[..4], [0x88, 17, 0x0f, 0xac]);
        assert_eq!(binary_header(5).as_ref(), [0x82, 5]);
        assert_eq!(binary_header(300).as_ref(), [0x82, 126, 1, 44]);
        assert_eq!(binary_header(70_000).as_ref(), [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
