//! WebSocket (RFC 6455) over TCP or TLS, for browsers: each binary message carries
//! client-protocol bytes exactly as on TCP, and the decoder sees one byte stream (a message
//! may hold several frames or part of one).
//!
//! A connection starts in the opening handshake ([`handshake`]): request bytes accumulate in
//! a buffer of their own, bounded at 8 KiB, and the wait is bounded by the session's auth
//! deadline. Once upgraded the buffer and the handshake rules are dropped; the frame reader
//! ([`frames`]) and the reply buffer exist only while a frame is partly read or a reply is
//! waiting, so an idle WebSocket is its socket and 32 bytes, like TCP plus one allocation.
//! wss is the same over rustls ([`crate::transport::tls`]), in the same allocation.
//!
//! Closing: the gateway's own Close frame (in a binary message, like every frame) goes
//! first, then a WebSocket Close with code 4000 + the reason code and the reason's name as
//! text. A WebSocket protocol violation closes with the RFC's code (1002, 1003, 1007, 1009)
//! and no ringgate frame; a client's Close is echoed with its code. permessage-deflate is not
//! negotiated: zlib would keep ~256 KiB + 32 KiB per connection.

pub mod frames;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;

use std::io;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use ringgate_codec::ReasonCode;

use super::tls::TlsIo;
use super::{ConnFd, Failure, ReadOutcome, Wrote};
use frames::{Part, Reader, Violation, code};
use handshake::{Refusal, Rules};

/// Room above `max_frame_len` a binary message may take: the largest client frame header
/// (op, length, seq, a route key of up to 255 bytes) with some to spare.
pub const HEADER_ROOM: u64 = 512;

/// Settings of a WebSocket listener, shared by its connections during their handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    pub rules: Rules,
    /// Largest binary message: the client frame limit plus its header.
    pub max_message: u64,
    /// `listen.trusted_proxies`: `X-Forwarded-For` is read past these.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The stream under a WebSocket: a socket (ws) or rustls over one (wss). A WebSocket is
/// generic over it so that wss keeps rustls's state in the same allocation as its own.
pub(crate) trait Under {
    fn fd(&self) -> &ConnFd;
    /// Reads once: the bytes are `buf[..n]` for `Some(n)`, else what went into `plain`.
    fn read_once(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> (ReadOutcome, Option<usize>);
    /// Writes what the socket (or rustls) takes of `out`.
    fn write(&mut self, out: &mut BytesMut) -> io::Result<Wrote>;
    /// Whether the stream has bytes of its own to write (TLS records).
    fn wants_write(&self) -> bool;
    /// Shuts the stream down (TLS: close_notify first).
    fn close(self);
}

impl Under for ConnFd {
    fn fd(&self) -> &ConnFd {
        self
    }

    fn read_once(&mut self, buf: &mut [u8], _: &mut Vec<u8>) -> (ReadOutcome, Option<usize>) {
        let mut n = 0;
        (super::tcp::read(self, buf, &mut |b| n = b.len()), Some(n))
    }

    fn write(&mut self, out: &mut BytesMut) -> io::Result<Wrote> {
        super::tcp::write(self, out)
    }

    fn wants_write(&self) -> bool {
        false
    }

    fn close(self) {
        super::tcp::close(&self);
    }
}

impl Under for TlsIo {
    fn fd(&self) -> &ConnFd {
        &self.fd
    }

    fn read_once(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> (ReadOutcome, Option<usize>) {
        // rustls hands the plaintext over in pieces: collect it.
        (self.read(buf, &mut |b| plain.extend_from_slice(b)), None)
    }

    fn write(&mut self, out: &mut BytesMut) -> io::Result<Wrote> {
        TlsIo::write(self, out)
    }

    fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    fn close(self) {
        TlsIo::close(self);
    }
}

/// Where a WebSocket connection is.
enum Phase {
    /// The request head so far, and the rules it is checked against.
    Handshake(Box<(BytesMut, Arc<WsSettings>)>),
    /// Upgraded. The frame reader exists only while a frame or message is partly read: an
    /// idle connection holds none.
    Open(Option<Box<Reader>>),
    /// Refused (its HTTP response is queued), or closing: nothing more is read.
    Done {
        /// The close code to send instead of 4000 + reason: a violation's, or the peer's echo.
        code: Option<u16>,
        refused: bool,
    },
}

/// What a WebSocket has to say before anything else, in one allocation made only when there
/// is something (the upgrade's response, which is also when a forwarded address is known).
#[derive(Default)]
struct Replies {
    out: BytesMut,
    forwarded: Option<std::net::IpAddr>,
}

/// A WebSocket connection: its stream and a few words of its own (an idle ws connection is
/// the socket and 32 bytes).
pub(crate) struct WsIo<U> {
    pub under: U,
    phase: Phase,
    /// Bytes of our own to write before anything else: the handshake response, Pongs; and
    /// the client address a trusted proxy forwarded, until the worker takes it.
    replies: Option<Box<Replies>>,
    /// Largest binary message, for the readers made after the upgrade.
    max_message: u32,
}

impl<U: Under> WsIo<U> {
    pub fn new(under: U, settings: Arc<WsSettings>) -> WsIo<U> {
        let max_message = u32::try_from(settings.max_message).unwrap_or(u32::MAX);
        WsIo { under, phase: Phase::Handshake(Box::new((BytesMut::new(), settings))), replies: None, max_message }
    }

    pub fn fd(&self) -> &ConnFd {
        self.under.fd()
    }

    /// Reads once and passes binary payload on to `input`. `Alive` when only control
    /// frames arrived.
    pub fn read(&mut self, buf: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
        let mut plain = Vec::new();
        let (outcome, in_buf) = self.under.read_once(buf, &mut plain);
        if !matches!(outcome, ReadOutcome::Data(_)) {
            return outcome;
        }
        let bytes: &mut [u8] = match in_buf {
            Some(n) => buf.get_mut(..n).unwrap_or_default(),
            None => &mut plain,
        };
        self.take(bytes, input)
    }

    fn replies(&mut self) -> &mut BytesMut {
        &mut self.replies.get_or_insert_with(Box::default).out
    }

    /// The client address the upgrade request's `X-Forwarded-For` gave (past the trusted
    /// proxies), once: the worker takes it right after the read that completed the upgrade.
    pub fn take_forwarded(&mut self) -> Option<std::net::IpAddr> {
        self.replies.as_mut()?.forwarded.take()
    }

    /// Runs received bytes through the handshake or the frame reader.
    fn take(&mut self, bytes: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
        if let Phase::Handshake(state) = &mut self.phase {
            let (head, settings) = &mut **state;
            head.extend_from_slice(bytes);
            match handshake::parse(head, &settings.rules, &settings.trusted_proxies) {
                Ok(None) => return ReadOutcome::Data(0),
                Ok(Some(upgrade)) => {
                    let mut rest = head.split_off(upgrade.consumed.min(head.len()));
                    self.phase = Phase::Open(None);
                    self.replies().put_slice(&upgrade.response);
                    if let Some(replies) = self.replies.as_mut() {
                        replies.forwarded = upgrade.forwarded_for;
                    }
                    return match self.frames(&mut rest, input) {
                        ReadOutcome::Alive => ReadOutcome::Data(0),
                        other => other,
                    };
                }
                Err(refusal) => return self.refuse(refusal),
            }
        }
        self.frames(bytes, input)
    }

    fn frames(&mut self, bytes: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
        if bytes.is_empty() {
            return ReadOutcome::Data(0);
        }
        let Phase::Open(slot) = &mut self.phase else { return ReadOutcome::Gone };
        let max_message = u64::from(self.max_message);
        let reader = slot.get_or_insert_with(|| Box::new(Reader::new(max_message)));
        // Pongs are rare: they go to a buffer that allocates only when written, and into the
        // connection's reply box only then (not a box made and dropped on every read).
        let mut pongs = BytesMut::new();
        let fed = reader.feed(
            bytes,
            &mut |data, part| {
                if part == Part::Binary {
                    input(data)
                }
            },
            &mut pongs,
        );
        if reader.at_rest() {
            *slot = None;
        }
        if !pongs.is_empty() {
            self.replies().extend_from_slice(&pongs);
        }
        match fed {
            Ok(fed) if fed.close.is_some() => {
                self.phase = Phase::Done { code: Some(fed.close.flatten().unwrap_or(code::NORMAL)), refused: false };
                ReadOutcome::Gone
            }
            Ok(fed) if fed.data > 0 => ReadOutcome::Data(fed.data),
            Ok(fed) if fed.frames => ReadOutcome::Alive,
            Ok(_) => ReadOutcome::Data(0),
            Err(violation) => {
                self.phase = Phase::Done { code: Some(violation.code()), refused: false };
                ReadOutcome::Failed(Failure::Ws(WsFailure::Violation(violation)))
            }
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> ReadOutcome {
        let replies = self.replies();
        replies.clear();
        replies.put_slice(&refusal.response());
        self.phase = Phase::Done { code: None, refused: true };
        ReadOutcome::Failed(Failure::Ws(WsFailure::Refused(refusal)))
    }

    /// Frames the session's output as one binary message; dropped before the upgrade (only
    /// the auth deadline's Close can come then, and the client cannot read it).
    pub fn stage(&mut self, out: BytesMut, transit: &mut BytesMut) {
        if !matches!(self.phase, Phase::Open(_)) {
            return;
        }
        let header = frames::binary_header(out.len());
        transit.reserve(header.as_ref().len() + out.len());
        transit.put_slice(header.as_ref());
        transit.put_slice(&out);
    }

    /// Whether replies of our own are waiting (or TLS records).
    pub fn wants_write(&self) -> bool {
        self.replies.as_ref().is_some_and(|r| !r.out.is_empty()) || self.under.wants_write()
    }

    /// Replies first (`transit` ends on a frame boundary, so they go after it), then out.
    pub fn write(&mut self, transit: &mut BytesMut) -> io::Result<Wrote> {
        if let Some(replies) = self.replies.take() {
            if transit.is_empty() {
                *transit = replies.out;
            } else {
                transit.extend_from_slice(&replies.out);
            }
        }
        self.under.write(transit)
    }

    /// Still before the 101 (for wss: the TLS handshake included).
    pub fn handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// A connection given up while still in the handshake: its failure, for the counters.
    pub fn abandoned(&self) -> Option<Failure> {
        matches!(self.phase, Phase::Handshake(_)).then_some(Failure::Ws(WsFailure::HandshakeTimeout))
    }

    /// Writes what is pending and the WebSocket Close (unless refused), then closes.
    pub fn close(mut self, reason: ReasonCode, unsent: &[u8]) {
        let mut out = BytesMut::from(unsent);
        if let Some(replies) = self.replies.take() {
            out.extend_from_slice(&replies.out);
        }
        match self.phase {
            Phase::Handshake(_) | Phase::Done { refused: true, .. } => {}
            Phase::Done { code: Some(code), .. } => frames::encode_close(code, "", &mut out),
            Phase::Open(_) | Phase::Done { code: None, .. } => {
                let code = u16::try_from(reason.0).map_or(code::GOING_AWAY, |r| code::RINGGATE_BASE.saturating_add(r));
                frames::encode_close(code, reason.name().unwrap_or(""), &mut out);
            }
        }
        while !out.is_empty() && matches!(self.under.write(&mut out), Ok(Wrote::Bytes(n)) if n > 0) {}
        self.under.close();
    }
}

/// How a WebSocket failed, counted by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsFailure {
    Refused(Refusal),
    Violation(Violation),
    /// The handshake did not complete by the auth deadline.
    HandshakeTimeout,
}

impl WsFailure {
    /// Every label, for creating the counters once.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Refusal::ALL
            .iter()
            .map(|r| r.name())
            .chain(Violation::ALL.iter().map(|v| v.name()))
            .chain(std::iter::once("handshake_timeout"))
    }

    pub fn name(self) -> &'static str {
        match self {
            WsFailure::Refused(r) => r.name(),
            WsFailure::Violation(v) => v.name(),
            WsFailure::HandshakeTimeout => "handshake_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_websocket_is_its_socket_and_a_few_words() {
        // The allocation an idle ws connection adds to TCP's socket: phase, replies, bound.
        let own = std::mem::size_of::<WsIo<ConnFd>>() - std::mem::size_of::<ConnFd>();
        assert!(own <= 32, "{own} bytes beside the socket");
        let own = std::mem::size_of::<WsIo<TlsIo>>() - std::mem::size_of::<TlsIo>();
        assert!(own <= 32, "{own} bytes beside rustls");
    }
}
