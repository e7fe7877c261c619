//! The gateway's side of one client connection.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::client::{
    self, Auth, AuthFail, AuthOk, ClientDecoder, ClientFrame, Close, GoAway, Kick, PROTOCOL_VERSION, SendFrame,
};
use crate::header::Decoded;
use crate::reason::ReasonCode;

/// Limits and timers of a server session. Shared by all sessions of a worker.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A connection must authenticate within this long of being accepted.
    pub auth_timeout: Duration,
    /// Told to the client in AuthOk; the client sends at least one frame per interval.
    pub heartbeat_interval: Duration,
    /// A connection silent for `idle_multiple * heartbeat_interval` is closed (`idle_timeout`).
    pub idle_multiple: u32,
    /// Largest client frame body accepted.
    pub max_frame_len: usize,
    /// Most Sends a connection may have without an Ack; more are answered `too_many_in_flight`.
    pub max_in_flight: u32,
    /// Most bytes of output a connection may have queued; more closes it (`slow_consumer`).
    pub max_outbound: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auth_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            idle_multiple: 3,
            max_frame_len: crate::limits::DEFAULT_MAX_FRAME_LEN,
            max_in_flight: 64,
            max_outbound: 256 * 1024,
        }
    }
}

impl ServerConfig {
    /// How long a connection may stay silent once authenticated.
    pub fn idle_timeout(&self) -> Duration {
        self.heartbeat_interval.saturating_mul(self.idle_multiple.max(1))
    }
}

/// Where a server session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Waiting for the Auth frame.
    AwaitingAuth,
    /// Auth was handed out as [`ServerEvent::Auth`]; waiting for `accept` or `reject`.
    Authenticating,
    /// Authenticated: Sends, pushes and heartbeats flow.
    Open,
    /// A Close was queued or received: flush the output, then close the transport.
    Closed(ReasonCode),
}

/// What the gateway must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Verify the credentials, then call [`ServerSession::accept`] or [`ServerSession::reject`].
    Auth(Auth),
    /// Route to a backend, then call [`ServerSession::ack`] exactly once with its seq.
    Send(SendFrame),
    /// A Ping arrived; its Pong is already queued. Nothing to do but count it.
    Pinged,
    /// The session ended; flush [`ServerSession::output`] (it holds the Close frame when we
    /// closed) and close the transport.
    Closed { reason: ReasonCode, by_peer: bool },
}

/// The gateway's state machine for one client connection.
///
/// # Call order
///
/// 1. [`new`](Self::new) when the transport is accepted.
/// 2. On bytes from the client: append them to an input buffer, then call
///    [`handle_input`](Self::handle_input) until it returns `None`; act on each event.
/// 3. Answer events: `accept`/`reject` for `Auth`, `ack` for every `Send`; call `push`,
///    `kick`, `go_away`, `close` as the gateway decides.
/// 4. After any call, write out [`output`](Self::output) (take it with `split()`).
/// 5. Arm a timer for [`poll_timeout`](Self::poll_timeout); when it fires call
///    [`handle_timeout`](Self::handle_timeout). The deadline moves with every inbound frame,
///    but the timer need not: `handle_timeout` ignores an early call and the next
///    `poll_timeout` gives the new deadline, so one coarse timer per connection suffices.
/// 6. Once [`state`](Self::state) is `Closed`, flush the output and close the transport.
#[derive(Debug)]
pub struct ServerSession {
    state: ServerState,
    /// Auth deadline before `Open`; time of the last inbound frame after.
    clock: Instant,
    push_seq: u64,
    output: BytesMut,
    // Limits as u32: sessions are many, and these never need more.
    max_frame_len: u32,
    idle_timeout_ms: u32,
    in_flight: u32,
    max_in_flight: u32,
    max_outbound: u32,
}

impl ServerSession {
    /// A session for a connection accepted at `now`.
    pub fn new(config: &ServerConfig, now: Instant) -> Self {
        ServerSession {
            state: ServerState::AwaitingAuth,
            clock: now + config.auth_timeout,
            push_seq: 0,
            output: BytesMut::new(),
            max_frame_len: u32::try_from(config.max_frame_len).unwrap_or(u32::MAX),
            idle_timeout_ms: u32::try_from(config.idle_timeout().as_millis()).unwrap_or(u32::MAX),
            in_flight: 0,
            max_in_flight: config.max_in_flight,
            max_outbound: u32::try_from(config.max_outbound).unwrap_or(u32::MAX),
        }
    }

    /// Current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, ServerState::Closed(_))
    }

    /// Sends handed out and not yet acked.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Bytes queued for the client. Take them with `split()` and write them out.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// Decodes the next frame from `input` and returns what the gateway must act on, or
    /// `None` when `input` holds no whole frame (or the session is closed).
    pub fn handle_input(&mut self, input: &mut BytesMut, now: Instant) -> Option<ServerEvent> {
        while !self.is_closed() {
            // Until the session is open only Auth and Close are allowed: no larger frame is read.
            let limit = match self.state {
                ServerState::Open => self.max_frame_len as usize,
                _ => (self.max_frame_len as usize).min(crate::limits::MAX_AUTH_BODY_LEN),
            };
            let frame = match ClientDecoder::new(limit).decode(input) {
                Ok(Decoded::Frame(frame)) => frame,
                Ok(Decoded::NeedMore(_)) => return None,
                Err(e) => return Some(self.close_with(e.reason(), &e.to_string())),
            };
            if let Some(event) = self.on_frame(frame, now) {
                return Some(event);
            }
        }
        None
    }

    fn on_frame(&mut self, frame: ClientFrame, now: Instant) -> Option<ServerEvent> {
        if self.state == ServerState::Open {
            self.clock = now;
        }
        match (self.state, frame) {
            (_, ClientFrame::Close(c)) => {
                self.state = ServerState::Closed(c.reason);
                Some(ServerEvent::Closed { reason: c.reason, by_peer: true })
            }
            (ServerState::AwaitingAuth, ClientFrame::Auth(auth)) => self.on_auth(auth),
            (ServerState::Open, ClientFrame::Ping) => {
                client::encode_pong(&mut self.output);
                // A client that pings without reading is a slow consumer too.
                Some(self.check_outbound().unwrap_or(ServerEvent::Pinged))
            }
            (ServerState::Open, ClientFrame::Pong) => None,
            (ServerState::Open, ClientFrame::Send(send)) => self.on_send(send),
            (_, other) => {
                let message = format!("{} not allowed in state {:?}", other.name(), self.state);
                Some(self.close_with(ReasonCode::UNEXPECTED_FRAME, &message))
            }
        }
    }

    fn on_auth(&mut self, auth: Auth) -> Option<ServerEvent> {
        if auth.protocol_version != PROTOCOL_VERSION {
            let message = format!("protocol version {} is not supported", auth.protocol_version);
            return Some(self.reject(ReasonCode::UNSUPPORTED_VERSION, &message));
        }
        self.state = ServerState::Authenticating;
        Some(ServerEvent::Auth(auth))
    }

    fn on_send(&mut self, send: SendFrame) -> Option<ServerEvent> {
        if self.in_flight >= self.max_in_flight {
            client::encode_ack(send.seq, ReasonCode::TOO_MANY_IN_FLIGHT, &mut self.output);
            return self.check_outbound();
        }
        self.in_flight += 1;
        Some(ServerEvent::Send(send))
    }

    /// A transport-level keepalive arrived (a WebSocket Ping or Pong): it counts as life
    /// like any frame, moving the idle deadline.
    pub fn handle_life(&mut self, now: Instant) {
        if self.state == ServerState::Open {
            self.clock = now;
        }
    }

    /// Accepts the Auth handed out: queues AuthOk and starts the idle timer.
    pub fn accept(&mut self, ok: &AuthOk, now: Instant) {
        if self.state != ServerState::Authenticating {
            return;
        }
        self.state = ServerState::Open;
        self.clock = now;
        self.queue(&ClientFrame::AuthOk(ok.clone()));
    }

    /// Refuses the Auth: queues AuthFail and Close, and ends the session.
    pub fn reject(&mut self, reason: ReasonCode, message: &str) -> ServerEvent {
        let fail = AuthFail { reason, message: message.to_owned(), supported_versions: vec![PROTOCOL_VERSION] };
        self.queue(&ClientFrame::AuthFail(fail));
        self.close_with(reason, message)
    }

    /// Answers one Send. Returns the close event if the Ack overflowed the output bound.
    pub fn ack(&mut self, seq: u64, code: ReasonCode) -> Option<ServerEvent> {
        if self.is_closed() {
            return None;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        client::encode_ack(seq, code, &mut self.output);
        self.check_outbound()
    }

    /// Queues a Push; returns its seq, or the close event when the client is a slow consumer
    /// (or `None` in the error when the session was already closed).
    pub fn push(&mut self, payload: &[u8]) -> Result<u64, Option<ServerEvent>> {
        if self.state != ServerState::Open || !self.push_fits(payload.len()) {
            return Err(None);
        }
        self.push_seq += 1;
        if client::encode_push(self.push_seq, payload, &mut self.output).is_err() {
            return Err(Some(self.close_with(ReasonCode::INTERNAL_ERROR, "push payload too large")));
        }
        match self.check_outbound() {
            None => Ok(self.push_seq),
            Some(closed) => Err(Some(closed)),
        }
    }

    /// Whether a Push of `payload_len` bytes fits the frame limit the client was told in
    /// AuthOk (a larger one is refused, not sent: the client would close on it).
    pub fn push_fits(&self, payload_len: usize) -> bool {
        crate::varint::encoded_len(self.push_seq + 1).saturating_add(payload_len) <= self.max_frame_len as usize
    }

    /// Queues a Kick and a Close, ending the session.
    pub fn kick(&mut self, reason: ReasonCode, message: &str) -> Option<ServerEvent> {
        if self.is_closed() {
            return None;
        }
        self.queue(&ClientFrame::Kick(Kick { reason, message: message.to_owned() }));
        Some(self.close_with(reason, message))
    }

    /// Queues a GoAway; the session stays open so in-flight Sends still get their Acks.
    pub fn go_away(&mut self, go_away: &GoAway) {
        if !self.is_closed() {
            self.queue(&ClientFrame::GoAway(go_away.clone()));
        }
    }

    /// Ends the session with `reason`, queueing the Close frame. Returns the close event
    /// (`None` if it had already ended).
    pub fn close(&mut self, reason: ReasonCode, message: &str) -> Option<ServerEvent> {
        (!self.is_closed()).then(|| self.close_with(reason, message))
    }

    /// When [`handle_timeout`](Self::handle_timeout) next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::AwaitingAuth | ServerState::Authenticating => Some(self.clock),
            ServerState::Open => Some(self.clock + Duration::from_millis(u64::from(self.idle_timeout_ms))),
            ServerState::Closed(_) => None,
        }
    }

    /// Closes the session if its deadline has passed; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ServerEvent> {
        let deadline = self.poll_timeout()?;
        if now < deadline {
            return None;
        }
        let reason = match self.state {
            ServerState::Open => ReasonCode::IDLE_TIMEOUT,
            _ => ReasonCode::AUTH_TIMEOUT,
        };
        Some(self.close_with(reason, ""))
    }

    fn check_outbound(&mut self) -> Option<ServerEvent> {
        if self.output.len() <= self.max_outbound as usize {
            return None;
        }
        // Nothing queued here has been handed to the transport, so dropping it keeps frame
        // boundaries intact; the client learns why from the Close frame.
        self.output.clear();
        Some(self.close_with(ReasonCode::SLOW_CONSUMER, "outbound queue full"))
    }

    fn close_with(&mut self, reason: ReasonCode, message: &str) -> ServerEvent {
        self.queue(&ClientFrame::Close(Close { reason, message: message.to_owned() }));
        self.state = ServerState::Closed(reason);
        ServerEvent::Closed { reason, by_peer: false }
    }

    fn queue(&mut self, frame: &ClientFrame) {
        // Control frames built here are far below the encodable maximum.
        let _ = frame.encode(&mut self.output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Platform;

    fn auth(version: u32) -> ClientFrame {
        ClientFrame::Auth(Auth {
            protocol_version: version,
            token: "t".into(),
            user_id: "alice".into(),
            device_id: "phone".into(),
            platform: Platform::Ios,
            resume_token: None,
        })
    }

    fn bytes(frames: &[ClientFrame]) -> BytesMut {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf).unwrap();
        }
        buf
    }

    fn decode_output(s: &mut ServerSession) -> Vec<ClientFrame> {
        let mut out = s.output().split();
        let mut frames = Vec::new();
        while let Decoded::Frame(f) = ClientDecoder::default().decode(&mut out).unwrap() {
            frames.push(f);
        }
        frames
    }

    fn ok() -> AuthOk {
        AuthOk {
            connection_id: 7,
            node_id: "n1".into(),
            heartbeat_interval: Duration::from_secs(30),
            server_time_ms: 1,
            protocol_version: 1,
            max_frame_len: 65536,
            max_in_flight: 2,
            resume_token: None,
        }
    }

    fn open(config: &ServerConfig, t0: Instant) -> ServerSession {
        let mut s = ServerSession::new(config, t0);
        let mut input = bytes(&[auth(1)]);
        assert!(matches!(s.handle_input(&mut input, t0), Some(ServerEvent::Auth(_))));
        s.accept(&ok(), t0);
        decode_output(&mut s);
        s
    }

    #[test]
    fn a_push_larger_than_the_client_limit_is_refused_and_the_session_stays_open() {
        let t0 = Instant::now();
        let config = ServerConfig { max_frame_len: 1000, ..ServerConfig::default() };
        let mut s = open(&config, t0);
        // The body is the seq varint (1 byte for seq 1) and the payload.
        assert!(s.push_fits(999) && !s.push_fits(1000));
        assert_eq!(s.push(&[1; 1000]), Err(None), "not sent");
        assert!(s.output().is_empty());
        assert!(!s.is_closed());
        assert_eq!(s.push(&[2; 999]), Ok(1));
        let out = decode_output(&mut s);
        assert!(matches!(&out[..], [ClientFrame::Push(p)] if p.payload.len() == 999));
    }

    #[test]
    fn unknown_version_gets_auth_fail_then_close() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(&ServerConfig::default(), t0);
        let event = s.handle_input(&mut bytes(&[auth(9)]), t0);
        assert_eq!(event, Some(ServerEvent::Closed { reason: ReasonCode::UNSUPPORTED_VERSION, by_peer: false }));
        let out = decode_output(&mut s);
        assert!(matches!(&out[0], ClientFrame::AuthFail(f) if f.supported_versions == [1]));
        assert!(matches!(&out[1], ClientFrame::Close(c) if c.reason == ReasonCode::UNSUPPORTED_VERSION));
    }

    #[test]
    fn before_auth_no_frame_larger_than_the_largest_auth_is_read() {
        use crate::limits::{MAX_AUTH_BODY_LEN, MAX_ID_LEN, MAX_TOKEN_LEN};
        let t0 = Instant::now();
        // The largest valid Auth fits the pre-auth bound.
        let largest = ClientFrame::Auth(Auth {
            protocol_version: u32::MAX,
            token: "t".repeat(MAX_TOKEN_LEN),
            user_id: "u".repeat(MAX_ID_LEN),
            device_id: "d".repeat(MAX_ID_LEN),
            platform: Platform::Web,
            resume_token: Some(vec![0xff; MAX_TOKEN_LEN].into()),
        });
        let mut s = ServerSession::new(&ServerConfig::default(), t0);
        let mut input = bytes(&[largest]);
        assert!(input.len() <= MAX_AUTH_BODY_LEN + 4, "{} bytes", input.len());
        let event = s.handle_input(&mut input, t0);
        assert!(matches!(event, Some(ServerEvent::Closed { reason: ReasonCode::UNSUPPORTED_VERSION, .. })));
        // A header announcing a larger body closes at once, before the body arrives, although
        // it is within max_frame_len (64 KiB by default).
        for state_open in [false, true] {
            let mut s = if state_open {
                open(&ServerConfig::default(), t0)
            } else {
                ServerSession::new(&ServerConfig::default(), t0)
            };
            let len = MAX_AUTH_BODY_LEN as u32 + 1;
            let mut header =
                BytesMut::from(&[if state_open { 0x20 } else { 0x10 }, (len as u8) | 0x80, (len >> 7) as u8][..]);
            let event = s.handle_input(&mut header, t0);
            if state_open {
                assert_eq!(event, None, "an open session waits for a big Send's body");
            } else {
                assert_eq!(event, Some(ServerEvent::Closed { reason: ReasonCode::FRAME_TOO_LARGE, by_peer: false }));
            }
        }
    }

    #[test]
    fn send_before_auth_is_unexpected() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(&ServerConfig::default(), t0);
        let send = ClientFrame::Send(SendFrame { seq: 1, route_key: None, payload: "x".into() });
        let event = s.handle_input(&mut bytes(&[send]), t0);
        assert_eq!(event, Some(ServerEvent::Closed { reason: ReasonCode::UNEXPECTED_FRAME, by_peer: false }));
    }

    #[test]
    fn auth_deadline_then_idle_deadline() {
        let config = ServerConfig::default();
        let t0 = Instant::now();
        let mut s = ServerSession::new(&config, t0);
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            s.handle_timeout(t0 + config.auth_timeout),
            Some(ServerEvent::Closed { reason: ReasonCode::AUTH_TIMEOUT, by_peer: false })
        );

        let mut s = open(&config, t0);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(s.handle_input(&mut bytes(&[ClientFrame::Ping]), t1), Some(ServerEvent::Pinged));
        assert_eq!(decode_output(&mut s), vec![ClientFrame::Pong]);
        // Early call (old deadline) does nothing; the new deadline counts from the ping.
        assert_eq!(s.handle_timeout(t0 + config.idle_timeout()), None);
        assert_eq!(s.poll_timeout(), Some(t1 + config.idle_timeout()));
        assert!(s.handle_timeout(t1 + config.idle_timeout()).is_some());
        assert_eq!(s.state(), ServerState::Closed(ReasonCode::IDLE_TIMEOUT));
    }

    #[test]
    fn in_flight_limit_answers_without_forwarding() {
        let config = ServerConfig { max_in_flight: 2, ..Default::default() };
        let t0 = Instant::now();
        let mut s = open(&config, t0);
        let send = |seq| ClientFrame::Send(SendFrame { seq, route_key: None, payload: "p".into() });
        let mut input = bytes(&[send(1), send(2), send(3)]);
        assert!(matches!(s.handle_input(&mut input, t0), Some(ServerEvent::Send(f)) if f.seq == 1));
        assert!(matches!(s.handle_input(&mut input, t0), Some(ServerEvent::Send(f)) if f.seq == 2));
        assert_eq!(s.handle_input(&mut input, t0), None);
        let out = decode_output(&mut s);
        assert_eq!(out, vec![ClientFrame::Ack(client::AckFrame { seq: 3, code: ReasonCode::TOO_MANY_IN_FLIGHT })]);
        s.ack(1, ReasonCode::OK);
        assert_eq!(s.in_flight(), 1);
    }

    #[test]
    fn slow_consumer_drops_queue_and_closes() {
        let config = ServerConfig { max_outbound: 1000, ..Default::default() };
        let t0 = Instant::now();
        let mut s = open(&config, t0);
        for _ in 0..9 {
            s.push(&[0u8; 100]).unwrap();
        }
        let closed = s.push(&[0u8; 100]).unwrap_err();
        assert_eq!(closed, Some(ServerEvent::Closed { reason: ReasonCode::SLOW_CONSUMER, by_peer: false }));
        let out = decode_output(&mut s);
        assert!(matches!(&out[..], [ClientFrame::Close(c)] if c.reason == ReasonCode::SLOW_CONSUMER));
        assert_eq!(s.push(b"late"), Err(None));
    }

    #[test]
    fn pings_without_reading_are_bounded() {
        let config = ServerConfig { max_outbound: 100, ..Default::default() };
        let t0 = Instant::now();
        let mut s = open(&config, t0);
        let mut input = bytes(&vec![ClientFrame::Ping; 60]);
        let mut closed = None;
        while let Some(event) = s.handle_input(&mut input, t0) {
            if event != ServerEvent::Pinged {
                closed = Some(event);
            }
        }
        assert_eq!(closed, Some(ServerEvent::Closed { reason: ReasonCode::SLOW_CONSUMER, by_peer: false }));
    }

    #[test]
    fn garbage_closes_with_protocol_reason() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(&ServerConfig::default(), t0);
        let mut input = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let event = s.handle_input(&mut input, t0);
        assert_eq!(event, Some(ServerEvent::Closed { reason: ReasonCode::UNKNOWN_OP, by_peer: false }));
        assert!(s.handle_input(&mut input, t0).is_none());
    }
}
