//! The client's side of one connection: auth, heartbeat schedule, seq tracking and
//! reconnect hints. Shared by tests, the load generator and future client SDKs.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::backoff::Jitter;
use crate::client::Auth;
use crate::client::{
    self, AuthFail, AuthOk, ClientDecoder, ClientFrame, Close, GoAway, Kick, PROTOCOL_VERSION, Platform, PushFrame,
};
use crate::header::Decoded;
use crate::reason::ReasonCode;

/// Who the client is and how it keeps time.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub token: String,
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub resume_token: Option<bytes::Bytes>,
    /// Give up when AuthOk has not arrived within this long.
    pub auth_timeout: Duration,
    /// The server is presumed dead after `idle_multiple` heartbeat intervals of silence.
    pub idle_multiple: u32,
    pub max_frame_len: usize,
    /// Seeds the reconnect jitter; give each client its own.
    pub jitter_seed: u64,
}

impl ClientConfig {
    /// A config with the given identity and default timers.
    pub fn new(token: impl Into<String>, user_id: impl Into<String>, device_id: impl Into<String>) -> Self {
        ClientConfig {
            token: token.into(),
            user_id: user_id.into(),
            device_id: device_id.into(),
            platform: Platform::Unspecified,
            resume_token: None,
            auth_timeout: Duration::from_secs(10),
            idle_multiple: 3,
            max_frame_len: crate::limits::DEFAULT_MAX_FRAME_LEN,
            jitter_seed: 0,
        }
    }
}

/// Where a client session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Authenticating,
    Open,
    Closed(ReasonCode),
}

/// What the application learns from the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Authenticated(AuthOk),
    AuthFailed(AuthFail),
    /// The outcome of the Send with this seq; `rtt` is the time since it was queued.
    Ack {
        seq: u64,
        code: ReasonCode,
        rtt: Duration,
    },
    Push(PushFrame),
    Kicked(Kick),
    /// Reconnect, elsewhere if `go_away.alternatives` names addresses, after `reconnect_in`
    /// (the server's hint plus this client's share of its jitter).
    GoAway {
        go_away: GoAway,
        reconnect_in: Duration,
    },
    /// The connection is over; close the transport once the output is flushed.
    Closed {
        reason: ReasonCode,
        by_peer: bool,
    },
}

/// Why a Send was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the session is not authenticated yet")]
    NotOpen,
    #[error("the session is closed ({0})")]
    Closed(ReasonCode),
    #[error("{0} sends are already in flight, the server's limit")]
    TooManyInFlight(u32),
    #[error("route key longer than 255 bytes or payload too large")]
    Invalid,
    #[error("the server sent GoAway: reconnect before sending more")]
    GoingAway,
}

/// The client's state machine for one connection.
///
/// # Call order
///
/// 1. [`new`](Self::new): queues the Auth frame. Write [`output`](Self::output) out.
/// 2. On bytes from the server: [`handle_input`](Self::handle_input), then drain
///    [`poll_event`](Self::poll_event) and write the output (Pongs, Closes).
/// 3. [`send`](Self::send) queues Sends once `Authenticated` was seen.
/// 4. Sleep until [`poll_timeout`](Self::poll_timeout), then call
///    [`handle_timeout`](Self::handle_timeout): it queues Pings when the connection has been
///    quiet for a heartbeat interval and closes when the server has gone silent.
#[derive(Debug)]
pub struct ClientSession {
    /// The server is presumed dead after this many heartbeat intervals of silence.
    idle_multiple: u32,
    state: ClientState,
    decoder: ClientDecoder,
    output: BytesMut,
    events: VecDeque<ClientEvent>,
    next_seq: u64,
    in_flight: HashMap<u64, Instant>,
    max_in_flight: u32,
    heartbeat: Duration,
    auth_deadline: Instant,
    last_tx: Instant,
    last_rx: Instant,
    jitter: Jitter,
    /// GoAway received: no new Sends; close once the in-flight ones are acked.
    going_away: bool,
}

impl ClientSession {
    /// A session whose transport connected at `now`; the Auth frame is queued.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        // The credentials go into the Auth frame and are not kept: a client holding many
        // sessions (the load generator holds hundreds of thousands) pays for them once.
        let ClientConfig {
            token,
            user_id,
            device_id,
            platform,
            resume_token,
            auth_timeout,
            idle_multiple,
            max_frame_len,
            jitter_seed,
        } = config;
        let auth = ClientFrame::Auth(Auth {
            protocol_version: PROTOCOL_VERSION,
            token,
            user_id,
            device_id,
            platform,
            resume_token,
        });
        let mut session = ClientSession {
            decoder: ClientDecoder::new(max_frame_len),
            jitter: Jitter::new(jitter_seed),
            auth_deadline: now + auth_timeout,
            idle_multiple,
            state: ClientState::Authenticating,
            output: BytesMut::new(),
            events: VecDeque::new(),
            next_seq: 1,
            in_flight: HashMap::new(),
            max_in_flight: u32::MAX,
            heartbeat: Duration::from_secs(30),
            last_tx: now,
            last_rx: now,
            going_away: false,
        };
        session.queue(&auth);
        session
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Sends queued and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes queued for the server. Take them with `split()`.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// Frees what a quiet session holds: the output buffer once written out, the event
    /// queue once drained, the in-flight table once every Send is acked. A client holding
    /// many connections calls it when one goes quiet; the next frame allocates again.
    pub fn release_idle_memory(&mut self) {
        // Not guarded by `capacity()`: once written out with `advance()` it reads 0 while
        // the allocation is still held. An empty `BytesMut::new()` allocates nothing.
        if self.output.is_empty() {
            self.output = BytesMut::new();
        }
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        if self.in_flight.is_empty() && self.in_flight.capacity() > 0 {
            self.in_flight = HashMap::new();
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Decodes every whole frame in `input` into events.
    pub fn handle_input(&mut self, input: &mut BytesMut, now: Instant) {
        while !matches!(self.state, ClientState::Closed(_)) {
            match self.decoder.decode(input) {
                Ok(Decoded::Frame(frame)) => {
                    self.last_rx = now;
                    self.on_frame(frame, now);
                }
                Ok(Decoded::NeedMore(_)) => return,
                Err(e) => return self.close_with(e.reason(), false),
            }
        }
    }

    fn on_frame(&mut self, frame: ClientFrame, now: Instant) {
        match (self.state, frame) {
            (ClientState::Authenticating, ClientFrame::AuthOk(ok)) => {
                self.state = ClientState::Open;
                self.heartbeat = ok.heartbeat_interval;
                self.max_in_flight = if ok.max_in_flight == 0 { u32::MAX } else { ok.max_in_flight };
                self.events.push_back(ClientEvent::Authenticated(ok));
            }
            (ClientState::Authenticating, ClientFrame::AuthFail(fail)) => {
                let reason = fail.reason;
                self.events.push_back(ClientEvent::AuthFailed(fail));
                self.ended(reason, true);
            }
            (ClientState::Open, ClientFrame::Ack(ack)) => {
                let sent = self.in_flight.remove(&ack.seq).unwrap_or(now);
                let rtt = now.saturating_duration_since(sent);
                self.events.push_back(ClientEvent::Ack { seq: ack.seq, code: ack.code, rtt });
                self.leave_if_done();
            }
            (ClientState::Open, ClientFrame::Push(push)) => self.events.push_back(ClientEvent::Push(push)),
            (ClientState::Open, ClientFrame::Ping) => {
                client::encode_pong(&mut self.output);
                self.last_tx = now;
            }
            (ClientState::Open, ClientFrame::Pong) => {}
            (_, ClientFrame::Kick(kick)) => {
                let reason = kick.reason;
                self.events.push_back(ClientEvent::Kicked(kick));
                self.ended(reason, true);
            }
            (_, ClientFrame::GoAway(go_away)) => {
                let reconnect_in = go_away.reconnect_after + self.jitter.up_to(go_away.reconnect_jitter);
                self.events.push_back(ClientEvent::GoAway { go_away, reconnect_in });
                self.going_away = true;
                self.leave_if_done();
            }
            (_, ClientFrame::Close(close)) => self.ended(close.reason, true),
            (_, _) => self.close_with(ReasonCode::UNEXPECTED_FRAME, false),
        }
    }

    /// Queues a Send and returns its seq.
    pub fn send(&mut self, route_key: Option<&[u8]>, payload: &[u8], now: Instant) -> Result<u64, SendError> {
        match self.state {
            ClientState::Authenticating => return Err(SendError::NotOpen),
            ClientState::Closed(reason) => return Err(SendError::Closed(reason)),
            ClientState::Open => {}
        }
        if self.going_away {
            return Err(SendError::GoingAway);
        }
        if self.in_flight.len() >= self.max_in_flight as usize {
            return Err(SendError::TooManyInFlight(self.max_in_flight));
        }
        let seq = self.next_seq;
        client::encode_send(seq, route_key, payload, &mut self.output).map_err(|_| SendError::Invalid)?;
        self.next_seq += 1;
        self.in_flight.insert(seq, now);
        self.last_tx = now;
        Ok(seq)
    }

    /// After GoAway, closes (normally) once every in-flight Send has its Ack.
    fn leave_if_done(&mut self) {
        if self.going_away && self.in_flight.is_empty() && !matches!(self.state, ClientState::Closed(_)) {
            self.close_with(ReasonCode::NORMAL, false);
        }
    }

    /// True once a GoAway arrived.
    pub fn going_away(&self) -> bool {
        self.going_away
    }

    /// Closes the session from the client's side, queueing a Close frame.
    pub fn close(&mut self, reason: ReasonCode) {
        if !matches!(self.state, ClientState::Closed(_)) {
            self.close_with(reason, false);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::Authenticating => Some(self.auth_deadline),
            ClientState::Open => Some((self.last_tx + self.heartbeat).min(self.server_deadline())),
            ClientState::Closed(_) => None,
        }
    }

    /// Queues a Ping when due; closes when the server has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ClientState::Authenticating if now >= self.auth_deadline => {
                self.close_with(ReasonCode::AUTH_TIMEOUT, false);
            }
            ClientState::Open if now >= self.server_deadline() => self.close_with(ReasonCode::IDLE_TIMEOUT, false),
            ClientState::Open if now >= self.last_tx + self.heartbeat => {
                client::encode_ping(&mut self.output);
                self.last_tx = now;
            }
            _ => {}
        }
    }

    fn server_deadline(&self) -> Instant {
        self.last_rx + self.heartbeat.saturating_mul(self.idle_multiple.max(1))
    }

    fn close_with(&mut self, reason: ReasonCode, by_peer: bool) {
        self.queue(&ClientFrame::Close(Close { reason, message: String::new() }));
        self.ended(reason, by_peer);
    }

    fn ended(&mut self, reason: ReasonCode, by_peer: bool) {
        self.state = ClientState::Closed(reason);
        self.events.push_back(ClientEvent::Closed { reason, by_peer });
    }

    fn queue(&mut self, frame: &ClientFrame) {
        // Frames built here are far below the encodable maximum.
        let _ = frame.encode(&mut self.output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ServerConfig, ServerEvent, ServerSession};
    use bytes::Buf;

    /// Moves bytes between a client and a server session in memory, like quinn-proto's pair.
    struct Pair {
        client: ClientSession,
        server: ServerSession,
        now: Instant,
        to_server: BytesMut,
        to_client: BytesMut,
        server_events: Vec<ServerEvent>,
    }

    impl Pair {
        fn new(server_config: ServerConfig) -> Pair {
            let now = Instant::now();
            Pair {
                client: ClientSession::new(ClientConfig::new("tok", "alice", "phone"), now),
                server: ServerSession::new(&server_config, now),
                now,
                to_server: BytesMut::new(),
                to_client: BytesMut::new(),
                server_events: Vec::new(),
            }
        }

        /// Delivers everything queued both ways, one byte at a time to stress chunking.
        fn drive(&mut self) {
            for _ in 0..16 {
                let c = self.client.output().split();
                let s = self.server.output().split();
                if c.is_empty() && s.is_empty() {
                    return;
                }
                for byte in c {
                    self.to_server.extend_from_slice(&[byte]);
                    while let Some(e) = self.server.handle_input(&mut self.to_server, self.now) {
                        if e != ServerEvent::Pinged {
                            self.server_events.push(e);
                        }
                    }
                }
                for byte in s {
                    self.to_client.extend_from_slice(&[byte]);
                    self.client.handle_input(&mut self.to_client, self.now);
                }
            }
        }

        fn events(&mut self) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.client.poll_event()).collect()
        }
    }

    fn ok(interval: Duration) -> AuthOk {
        AuthOk {
            connection_id: 1,
            node_id: "n".into(),
            heartbeat_interval: interval,
            server_time_ms: 0,
            protocol_version: 1,
            max_frame_len: 65536,
            max_in_flight: 1,
            resume_token: None,
        }
    }

    fn authenticated_pair() -> Pair {
        let mut p = Pair::new(ServerConfig { heartbeat_interval: Duration::from_secs(10), ..Default::default() });
        p.drive();
        assert!(matches!(p.server_events.pop(), Some(ServerEvent::Auth(a)) if a.user_id == "alice"));
        p.server.accept(&ok(Duration::from_secs(10)), p.now);
        p.drive();
        assert!(matches!(p.events()[..], [ClientEvent::Authenticated(_)]));
        p
    }

    #[test]
    fn send_ack_push_round_trip() {
        let mut p = authenticated_pair();
        let seq = p.client.send(Some(b"room:1"), b"hello", p.now).unwrap();
        assert_eq!(p.client.send(None, b"x", p.now), Err(SendError::TooManyInFlight(1)));
        p.drive();
        assert!(matches!(p.server_events.pop(), Some(ServerEvent::Send(s)) if s.seq == seq && s.payload == "hello"));
        p.server.push(b"world").unwrap();
        p.server.ack(seq, ReasonCode::OK);
        p.now += Duration::from_millis(5);
        p.drive();
        let events = p.events();
        assert!(matches!(&events[0], ClientEvent::Push(push) if push.seq == 1 && push.payload == "world"));
        assert!(
            matches!(events[1], ClientEvent::Ack { seq: 1, code: ReasonCode::OK, rtt } if rtt == Duration::from_millis(5))
        );
        assert_eq!(p.client.in_flight(), 0);
    }

    #[test]
    fn a_quiet_session_releases_its_buffers_and_keeps_working() {
        let mut p = authenticated_pair();
        // A connection's first frame after the output was released lands in a buffer of
        // exactly its size...
        *p.client.output() = BytesMut::new();
        let seq = p.client.send(None, b"hello", p.now).unwrap();
        // ...written out the way a socket writer does it: copied, then `advance`d.
        let n = p.client.output().len();
        p.to_server.extend_from_slice(&p.client.output()[..n]);
        p.client.output().advance(n);
        while let Some(e) = p.server.handle_input(&mut p.to_server, p.now) {
            p.server_events.push(e);
        }
        p.server.ack(seq, ReasonCode::OK);
        p.drive();
        assert_eq!(p.events().len(), 1);
        // Written out, drained and acked: the buffers are still allocated, though the
        // output's capacity reads 0 after `advance` (`try_reclaim` would show the allocation
        // but also reclaim it, so it is asked only after)...
        assert_eq!(p.client.output().capacity(), 0);
        p.client.release_idle_memory();
        // ...and then are not.
        assert!(!p.client.output().try_reclaim(1), "the output's allocation is freed");
        assert_eq!(p.client.events.capacity(), 0);
        assert_eq!(p.client.in_flight.capacity(), 0);
        let seq = p.client.send(None, b"again", p.now).unwrap();
        // A session with work pending keeps it.
        p.client.release_idle_memory();
        assert_eq!(p.client.in_flight(), 1);
        assert!(!p.client.output().is_empty());
        p.drive();
        assert!(matches!(p.server_events.pop(), Some(ServerEvent::Send(s)) if s.seq == seq && s.payload == "again"));
    }

    #[test]
    fn heartbeats_keep_both_sides_alive() {
        let mut p = authenticated_pair();
        for _ in 0..10 {
            p.now = p.client.poll_timeout().unwrap();
            p.client.handle_timeout(p.now);
            assert!(p.server.handle_timeout(p.now).is_none());
            p.drive();
        }
        assert_eq!(p.client.state(), ClientState::Open);
        assert_eq!(p.server.state(), crate::session::ServerState::Open);
    }

    #[test]
    fn silent_server_is_detected() {
        let mut p = authenticated_pair();
        // Pings go out but nothing comes back.
        for _ in 0..5 {
            let Some(deadline) = p.client.poll_timeout() else { break };
            p.now = deadline;
            p.client.handle_timeout(p.now);
            p.client.output().clear();
        }
        assert_eq!(p.client.state(), ClientState::Closed(ReasonCode::IDLE_TIMEOUT));
    }

    #[test]
    fn go_away_hint_includes_bounded_jitter() {
        let mut p = authenticated_pair();
        let go_away = GoAway {
            reason: ReasonCode::SERVER_DRAINING,
            alternatives: vec!["10.0.0.2:7000".into()],
            reconnect_after: Duration::from_secs(1),
            reconnect_jitter: Duration::from_secs(2),
        };
        let seq = p.client.send(None, b"in flight", p.now).unwrap();
        p.drive();
        p.server.go_away(&go_away);
        p.drive();
        match &p.events()[..] {
            [ClientEvent::GoAway { reconnect_in, go_away: g }] => {
                assert!(*reconnect_in >= Duration::from_secs(1) && *reconnect_in <= Duration::from_secs(3));
                assert_eq!(g.alternatives, ["10.0.0.2:7000"]);
            }
            other => panic!("{other:?}"),
        }
        // No new Sends after GoAway; the in-flight one still gets its Ack, then the client leaves.
        assert_eq!(p.client.send(None, b"late", p.now), Err(SendError::GoingAway));
        p.server.ack(seq, ReasonCode::OK);
        p.drive();
        let events = p.events();
        assert!(matches!(events[0], ClientEvent::Ack { seq: s, .. } if s == seq));
        assert_eq!(events[1], ClientEvent::Closed { reason: ReasonCode::NORMAL, by_peer: false });
    }

    #[test]
    fn auth_fail_and_kick_end_the_session() {
        let mut p = Pair::new(ServerConfig::default());
        p.drive();
        p.server.reject(ReasonCode::AUTH_EXPIRED, "token expired");
        p.drive();
        let events = p.events();
        assert!(matches!(&events[0], ClientEvent::AuthFailed(f) if f.reason == ReasonCode::AUTH_EXPIRED));
        assert_eq!(events[1], ClientEvent::Closed { reason: ReasonCode::AUTH_EXPIRED, by_peer: true });

        let mut p = authenticated_pair();
        p.server.kick(ReasonCode::REPLACED, "logged in elsewhere");
        p.drive();
        let events = p.events();
        assert!(matches!(&events[0], ClientEvent::Kicked(k) if k.reason == ReasonCode::REPLACED));
        assert_eq!(p.client.state(), ClientState::Closed(ReasonCode::REPLACED));
    }
}
