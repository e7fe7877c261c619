//! WebSocket (RFC 6455) over TCP or TLS, for browsers: each binary message carries
//! client-protocol bytes exactly as on TCP, and the decoder sees one byte stream (a message
//! may hold several frames or part of one).
//!
//! A connection starts in the opening handshake ([`handshake`]): request bytes accumulate in
//! a buffer of their own, bounded at 8 KiB, and the wait is bounded by the session's auth
//! deadline. Once upgraded the buffer and the handshake rules are dropped; what stays is the
//! frame reader's few words ([`frames`]) and an empty reply buffer, so an idle WebSocket
//! holds no buffer, like TCP. wss is the same over rustls ([`crate::transport::tls`]).
//!
//! Closing: the gateway's own Close frame (in a binary message, like every frame) goes
//! first, then a WebSocket Close with code 4000 + the reason code and the reason's name as
//! text. A WebSocket protocol violation closes with the RFC's code (1002, 1003, 1007, 1009)
//! and no ringgate frame; a client's Close is echoed with its code. permessage-deflate is not
//! negotiated: zlib would keep ~256 KiB + 32 KiB per connection.

pub mod frames;
pub mod handshake;

use std::io;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use ringgate_codec::ReasonCode;

use super::tls::TlsIo;
use super::{ConnFd, Failure, ReadOutcome, Wrote};
use frames::{Reader, Violation, code};
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
}

/// The socket under a WebSocket: plain TCP (ws) or TLS (wss).
pub(crate) enum Under {
    Tcp(ConnFd),
    Tls(Box<TlsIo>),
}

impl Under {
    /// Writes what the socket (or rustls) takes of `out`.
    fn write(&mut self, out: &mut BytesMut) -> io::Result<Wrote> {
        match self {
            Under::Tcp(fd) => super::tcp::write(fd, out),
            Under::Tls(t) => t.write(out),
        }
    }

    /// Shuts the socket down (TLS: close_notify first).
    fn close(self) {
        match self {
            Under::Tcp(fd) => super::tcp::close(&fd),
            Under::Tls(t) => t.close(),
        }
    }
}

/// Where a WebSocket connection is.
enum Phase {
    /// The request head so far, and the rules it is checked against.
    Handshake(Box<(BytesMut, Arc<WsSettings>)>),
    Open(Reader),
    /// Refused, or the peer broke the protocol: nothing more is read.
    Done,
}

/// A WebSocket connection.
pub(crate) struct WsIo {
    pub under: Under,
    phase: Phase,
    /// Bytes of our own to write before anything else: the handshake response, Pongs.
    replies: BytesMut,
    /// The close code to send instead of 4000 + reason: a violation's, or the peer's echo.
    close_code: Option<u16>,
    /// A refusal whose HTTP response is in `replies`.
    refused: bool,
}

impl WsIo {
    pub fn new(under: Under, settings: Arc<WsSettings>) -> WsIo {
        WsIo {
            under,
            phase: Phase::Handshake(Box::new((BytesMut::new(), settings))),
            replies: BytesMut::new(),
            close_code: None,
            refused: false,
        }
    }

    pub fn fd(&self) -> &ConnFd {
        match &self.under {
            Under::Tcp(fd) => fd,
            Under::Tls(t) => &t.fd,
        }
    }

    /// Reads once and passes binary payload on to `input`. `Alive` when only control
    /// frames arrived.
    pub fn read(&mut self, buf: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
        // TLS: the plaintext, collected first (rustls hands it over in pieces).
        let mut plain = Vec::new();
        let mut n = 0;
        let outcome = match &mut self.under {
            Under::Tcp(fd) => super::tcp::read(fd, buf, &mut |b| n = b.len()),
            Under::Tls(t) => t.read(buf, &mut |b| plain.extend_from_slice(b)),
        };
        if !matches!(outcome, ReadOutcome::Data(_)) {
            return outcome;
        }
        let bytes: &mut [u8] = if plain.is_empty() { buf.get_mut(..n).unwrap_or_default() } else { &mut plain };
        self.take(bytes, input)
    }

    /// Runs received bytes through the handshake or the frame reader.
    fn take(&mut self, bytes: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
        if let Phase::Handshake(state) = &mut self.phase {
            let (head, settings) = &mut **state;
            head.extend_from_slice(bytes);
            match handshake::parse(head, &settings.rules) {
                Ok(None) => return ReadOutcome::Data(0),
                Ok(Some(upgrade)) => {
                    self.replies.put_slice(&upgrade.response);
                    let mut rest = head.split_off(upgrade.consumed.min(head.len()));
                    self.phase = Phase::Open(Reader::new(settings.max_message));
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
        let Phase::Open(reader) = &mut self.phase else { return ReadOutcome::Gone };
        match reader.feed(bytes, &mut |data, _| input(data), &mut self.replies) {
            Ok(fed) if fed.close.is_some() => {
                self.close_code = Some(fed.close.flatten().unwrap_or(code::NORMAL));
                self.phase = Phase::Done;
                ReadOutcome::Gone
            }
            Ok(fed) if fed.data > 0 => ReadOutcome::Data(fed.data),
            Ok(fed) if fed.frames => ReadOutcome::Alive,
            Ok(_) => ReadOutcome::Data(0),
            Err(violation) => {
                self.close_code = Some(violation.code());
                self.phase = Phase::Done;
                ReadOutcome::Failed(Failure::Ws(WsFailure::Violation(violation)))
            }
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> ReadOutcome {
        self.replies.clear();
        self.replies.put_slice(&refusal.response());
        self.refused = true;
        self.phase = Phase::Done;
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
        !self.replies.is_empty() || matches!(&self.under, Under::Tls(t) if t.tls.wants_write())
    }

    /// Replies first (`transit` ends on a frame boundary, so they go after it), then out.
    pub fn write(&mut self, transit: &mut BytesMut) -> io::Result<Wrote> {
        if !self.replies.is_empty() {
            if transit.is_empty() {
                *transit = std::mem::take(&mut self.replies);
            } else {
                transit.extend_from_slice(&self.replies);
                self.replies.clear();
            }
        }
        self.under.write(transit)
    }

    /// A connection given up while still in the handshake: its failure, for the counters.
    pub fn abandoned(&self) -> Option<Failure> {
        matches!(self.phase, Phase::Handshake(_)).then_some(Failure::Ws(WsFailure::HandshakeTimeout))
    }

    /// Writes what is pending and the WebSocket Close (unless refused), then closes.
    pub fn close(mut self, reason: ReasonCode, unsent: &[u8]) {
        let mut out = BytesMut::from(unsent);
        out.extend_from_slice(&self.replies);
        self.replies.clear();
        let upgraded = !self.refused && !matches!(self.phase, Phase::Handshake(_));
        if upgraded {
            match self.close_code {
                Some(code) => frames::encode_close(code, "", &mut out),
                None => {
                    let code =
                        u16::try_from(reason.0).map_or(code::GOING_AWAY, |r| code::RINGGATE_BASE.saturating_add(r));
                    frames::encode_close(code, reason.name().unwrap_or(""), &mut out);
                }
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
