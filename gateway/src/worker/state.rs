//! A worker's state: its connections, its user and room indexes, its link to the backend,
//! and its timers. Owned by one thread; nothing here is shared or locked.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ringgate_codec::ReasonCode;
use ringgate_codec::client::{Auth, AuthOk, PROTOCOL_VERSION, SendFrame};
use ringgate_codec::session::{ServerEvent, ServerSession};

use super::conn::{Conn, ConnIdentity, ConnIds, user_key};
use super::link::Link;
use super::stats::WorkerStats;
use super::timer::TimerWheel;
use crate::auth;
use crate::config::Config;
use crate::inbox::{WORKER_SHIFT, WorkerMsg};
use crate::metrics::FrameOut;
use crate::transport::{Failure, Io, ReadOutcome};
use ringgate_router::Ring;

/// Names a backend link across ring changes: its address, or `None` for the embedded backend.
pub(crate) type LinkKey = Option<std::net::SocketAddr>;

/// A node-wide push waiting for the other workers' delivered counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PushTally {
    pub link: LinkKey,
    pub push_id: u64,
    pub delivered: u32,
    pub waiting: usize,
    /// When the push was read: a tally whose counts did not all come back (a peer's inbox
    /// was full) is reported with what it has after [`TALLY_TIMEOUT`].
    pub started: Instant,
}

/// A worker's connections not yet authenticated, and those of them on TLS or wss.
#[derive(Debug, Default)]
struct Unauthenticated {
    all: u32,
    tls: u32,
}

impl Unauthenticated {
    /// One of them logged in or ended.
    fn left(&mut self, tls: bool) {
        self.all = self.all.saturating_sub(1);
        if tls {
            self.tls = self.tls.saturating_sub(1);
        }
    }
}

/// Longest a node-wide push waits for its counts before its PushResult goes out anyway
/// (longer than any relay call: the API's timeout is at most 60 s, its default 1 s).
pub(crate) const TALLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Worker {
    pub index: usize,
    pub config: Arc<Config>,
    /// Boxed: a table bucket is then 16 bytes instead of a whole connection, which matters
    /// because the table keeps up to twice the buckets it needs.
    /// Fx-hashed: a lookup per frame, and SipHash cost ~5% of a worker's CPU under echo load.
    pub conns: FxHashMap<u64, Box<Conn>>,
    /// user_key(user id) -> connections; see [`user_key`].
    pub users: FxHashMap<u64, ConnIds>,
    pub rooms: HashMap<Rc<str>, FxHashSet<u64>>,
    /// One link per backend, in the ring's order (or the embedded backend's one link).
    pub links: Vec<Link>,
    pub ring: Ring,
    pub peers: Vec<flume::Sender<WorkerMsg>>,
    pub timers: TimerWheel,
    pub stats: Arc<WorkerStats>,
    /// Prometheus handles, created once for this worker.
    pub metrics: crate::metrics::WorkerMetrics,
    /// Connections on the node, shared by its workers (`limits.max_connections` is per node).
    pub node_active: Arc<std::sync::atomic::AtomicUsize>,
    /// What WebSocket handshakes check, from `[ws]` (replaced on reload).
    pub ws_settings: Arc<crate::transport::ws::WsSettings>,
    /// The TLS listener's configuration (replaced on a certificate reload).
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// The same for wss (ALPN `http/1.1`).
    pub wss_config: Option<Arc<rustls::ServerConfig>>,
    pub push_tallies: FxHashMap<u64, PushTally>,
    /// Draining: connections not told yet (taken on the first GoAway message).
    pub(super) drain_queue: Option<Vec<u64>>,
    pub node_epoch: u64,
    /// `None`: single node, the in-process index is the registry.
    pub registry: Option<crate::registry::redis::RegistryTx>,
    /// The node's per-address admission table.
    pub admission: Arc<crate::admission::Admission>,
    /// Connections the open-file limit allows the node (`usize::MAX`: no limit); the node
    /// holds at most the smaller of this and `limits.max_connections`.
    pub file_capacity: usize,
    /// The node's RSS against `limits.max_memory`.
    pub memory: Arc<crate::memory::MemoryGuard>,
    /// The keys of `auth.jwks_url` (empty without one).
    pub jwks: crate::auth::token::JwksKeys,
    /// This worker's connections not yet authenticated.
    unauthenticated: Unauthenticated,
    /// The relay's queue for link pushes other nodes must deliver too (with `[redis]`).
    pub forward: Option<flume::Sender<crate::inbox::Forward>>,
    next_tally: u64,
    /// Messages to each peer that must not be lost (device-policy displacements; a
    /// connection's room joins, leaves and kicks from a backend), held in order while the
    /// peer's inbox is full and sent again each tick.
    backlog: Vec<std::collections::VecDeque<WorkerMsg>>,
    read_buf: Box<[u8]>,
    next_conn: u64,
    dirty: Vec<u64>,
    due: Vec<u64>,
}

impl Worker {
    pub fn new(
        index: usize,
        config: Arc<Config>,
        links: Vec<Link>,
        peers: Vec<flume::Sender<WorkerMsg>>,
        stats: Arc<WorkerStats>,
    ) -> Worker {
        Worker {
            index,
            metrics: crate::metrics::WorkerMetrics::new(index),
            node_active: Arc::default(),
            tls_config: None,
            wss_config: None,
            ws_settings: ws_settings(&config),
            push_tallies: FxHashMap::default(),
            drain_queue: None,
            node_epoch: 0,
            registry: None,
            admission: Arc::new(crate::admission::Admission::new(config.admission.clone())),
            file_capacity: usize::MAX,
            memory: Arc::new(crate::memory::MemoryGuard::new(None)),
            jwks: Arc::default(),
            unauthenticated: Unauthenticated::default(),
            forward: None,
            next_tally: 0,
            backlog: Vec::new(),
            read_buf: vec![0; config.read_buffer].into_boxed_slice(),
            timers: TimerWheel::new(config.timer_tick, 4096, Instant::now()),
            config,
            conns: FxHashMap::default(),
            users: FxHashMap::default(),
            rooms: HashMap::new(),
            ring: Ring::new(links.iter().filter_map(|l| l.addr)),
            links,
            peers,
            stats,
            next_conn: 0,
            dirty: Vec::new(),
            due: Vec::new(),
        }
    }

    /// Whether the node holds as many connections as it may.
    pub fn is_full(&self) -> bool {
        self.node_active.load(std::sync::atomic::Ordering::Relaxed) >= self.capacity()
    }

    /// The most connections the node may hold now (`limits.max_connections` reloads).
    pub fn capacity(&self) -> usize {
        self.config.max_connections.min(self.file_capacity)
    }

    /// Connection `id` counts for `peer` in the admission table from now on (a QUIC
    /// connection, whose endpoint admitted its address at the handshake's start).
    pub fn adopt_peer(&mut self, id: u64, peer: crate::admission::AddrKey) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.peer = peer;
        }
    }

    /// Registers an accepted socket from `peer` and returns its id; gives the socket back,
    /// with why, when a limit refuses it (the caller then tells the client what it can).
    pub fn admit(
        &mut self,
        io: Io,
        peer: Option<crate::admission::AddrKey>,
        now: Instant,
    ) -> Result<u64, (Io, crate::metrics::Refused)> {
        use crate::metrics::Refused;
        let limits = &self.config.admission;
        let tls = io.transport().is_tls();
        let refused = if self.unauthenticated.all >= limits.max_unauthenticated {
            Some(Refused::Unauthenticated)
        } else if tls && self.unauthenticated.tls >= limits.max_tls_handshakes {
            Some(Refused::TlsHandshakes)
        } else if self.memory.is_high() {
            Some(Refused::Memory)
        } else {
            None
        };
        if let Some(why) = refused {
            self.metrics.refused(why);
            return Err((io, why));
        }
        // Taken before the check, so two workers admitting at once cannot both take the last.
        let before = self.node_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if before >= self.capacity() {
            self.node_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let why = if before >= self.config.max_connections { Refused::NodeFull } else { Refused::Files };
            self.metrics.refused(why);
            return Err((io, why));
        }
        if let Some(key) = peer
            && let Err(refusal) = self.admission.admit(key, now)
        {
            self.node_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.metrics.refused(Refused::Address(refusal));
            return Err((io, Refused::Address(refusal)));
        }
        self.unauthenticated.all += 1;
        self.unauthenticated.tls += u32::from(tls);
        self.next_conn += 1;
        let id = ((self.index as u64 + 1) << WORKER_SHIFT) | self.next_conn;
        let session = ServerSession::new(&self.config.session, now);
        if io.handshaking() {
            // One timer, the handshake deadline (never after the session's): on_tick closes a
            // connection it finds still in its handshake, and otherwise re-arms it for the
            // session's deadline, so the connection keeps a single chain of timers.
            self.timers.arm(id, now + self.config.handshake_timeout.min(self.config.session.auth_timeout));
        } else if let Some(deadline) = session.poll_timeout() {
            self.timers.arm(id, deadline);
        }
        let transport = io.transport() as usize;
        let mut conn = Box::new(Conn::new(session, io));
        conn.peer = peer.unwrap_or(0);
        self.conns.insert(id, conn);
        WorkerStats::inc(&self.stats.active);
        self.metrics.accepted[transport].increment(1);
        self.metrics.active[transport].increment(1.0);
        Ok(id)
    }

    /// The transport of `id` is readable: read everything available and act on it. A QUIC
    /// stream registers `cx` once it has nothing more.
    pub fn on_readable(&mut self, id: u64, cx: &mut Context<'_>) {
        let now = Instant::now();
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            match conn.read_into(&mut self.read_buf, cx) {
                ReadOutcome::Data(n) => {
                    self.metrics.bytes_in.increment(n as u64);
                    // A WebSocket from a trusted proxy counts under X-Forwarded-For's address
                    // from its upgrade on (before its Auth, which may be in the same read).
                    if conn.peer == 0
                        && let Some(ip) = conn.io.take_forwarded()
                        && !self.admit_forwarded(id, ip, now)
                    {
                        return;
                    }
                    self.process_input(id, now)
                }
                ReadOutcome::Alive => {
                    conn.session.handle_life(now);
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Gone => return self.on_socket_gone(id),
                ReadOutcome::Failed(failure) => {
                    self.count_failure(failure);
                    return self.on_socket_gone(id);
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.trim();
            // Frames the session answered by itself (Pongs, too-many-in-flight Acks) raise no
            // event but still need writing, and so do TLS handshake records.
            if !conn.session.output().is_empty() || conn.transport_wants_write() {
                self.dirty.push(id);
            }
        }
        self.flush_dirty();
    }

    /// Counts connection `id` under `ip`'s address; closes it (false) when that address is
    /// over a limit.
    fn admit_forwarded(&mut self, id: u64, ip: std::net::IpAddr, now: Instant) -> bool {
        use crate::metrics::Refused;
        let key = self.admission.key(ip);
        match self.admission.admit(key, now) {
            Ok(()) => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.peer = key;
                }
                true
            }
            Err(refusal) => {
                self.metrics.refused(Refused::Address(refusal));
                self.end(id, refusal.reason());
                false
            }
        }
    }

    fn count_failure(&self, failure: Failure) {
        match failure {
            Failure::Tls => self.metrics.tls_failed.increment(1),
            Failure::Ws(ws) => self.metrics.ws_failed(ws.name()),
        }
    }

    /// The peer closed or the socket failed: drop the connection without a Close frame.
    /// A partial frame left in the input makes it a protocol error (a truncated frame).
    pub fn on_socket_gone(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let reason = if conn.has_partial_input() { ReasonCode::PROTOCOL_ERROR } else { ReasonCode::NORMAL };
        let _ = conn.session.close(reason, "");
        conn.session.output().clear();
        self.finish(id, reason);
    }

    fn process_input(&mut self, id: u64, now: Instant) {
        loop {
            let event = {
                let Some(conn) = self.conns.get_mut(&id) else { return };
                let (session, input) = conn.session_and_input();
                session.handle_input(input, now)
            };
            match event {
                None => return,
                Some(ServerEvent::Auth(auth)) => {
                    self.metrics.frames_in_auth.increment(1);
                    self.on_auth(id, auth, now)
                }
                Some(ServerEvent::Send(send)) => {
                    self.metrics.frames_in_send.increment(1);
                    self.on_send(id, send)
                }
                Some(ServerEvent::Pinged) => {
                    self.metrics.frames_in_ping.increment(1);
                    self.metrics.frame_out(FrameOut::Pong);
                }
                Some(ServerEvent::Closed { reason, by_peer }) => {
                    if by_peer {
                        self.metrics.frames_in_close.increment(1);
                    } else {
                        self.metrics.frame_out(FrameOut::Close);
                    }
                    return self.end(id, reason);
                }
            }
        }
    }

    fn on_auth(&mut self, id: u64, auth: Auth, now: Instant) {
        let mut result = auth::authenticate(&self.config.auth, &self.jwks, &auth);
        if let Some(r) = &self.registry
            && result.is_ok()
            && !r.fail_open
            && !r.up.load(std::sync::atomic::Ordering::Relaxed)
        {
            result = Err(auth::Refusal {
                reason: ReasonCode::AUTH_UNAVAILABLE,
                text: "the location registry is unavailable",
                detail: "redis down and redis.fail_open = false".into(),
            });
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        match result {
            Ok(identity) => {
                let ok = AuthOk {
                    connection_id: id,
                    node_id: self.config.node_id.clone(),
                    heartbeat_interval: self.config.session.heartbeat_interval,
                    server_time_ms: unix_ms(),
                    protocol_version: PROTOCOL_VERSION,
                    max_frame_len: self.config.session.max_frame_len as u32,
                    max_in_flight: self.config.session.max_in_flight,
                    resume_token: None,
                };
                let armed = conn.session.poll_timeout();
                conn.session.accept(&ok, now);
                self.metrics.frame_out(FrameOut::AuthOk);
                // The wheel holds the auth deadline; when it fires the session gives the idle
                // deadline. Re-arm now only if the idle deadline comes first.
                if let Some(deadline) = conn.session.poll_timeout()
                    && armed.is_none_or(|armed| deadline < armed)
                {
                    self.timers.arm(id, deadline);
                }
                // Seconds since this node started: 4 bytes per connection, and the record's
                // since_ms is derived from it the same way at login and at close.
                let since_s = u32::try_from(unix_ms().saturating_sub(self.node_epoch) / 1000).unwrap_or(u32::MAX);
                let since_ms = self.node_epoch + u64::from(since_s) * 1000;
                let node = (self.config.node_id.as_str(), self.node_epoch);
                let who = (identity.user_id.as_str(), identity.device_id.as_str(), identity.platform.as_str());
                register(&self.registry, &self.metrics, node, (id, since_ms), who, true);
                let key = user_key(&identity.user_id);
                conn.identity = Some(ConnIdentity {
                    user_id: identity.user_id.into_boxed_str(),
                    device_id: identity.device_id.into_boxed_str(),
                    platform: identity.platform,
                    since_s,
                    rooms: None,
                });
                self.users.entry(key).or_default().insert(id);
                self.metrics.auth_ok.increment(1);
                self.unauthenticated.left(conn.io.transport().is_tls());
                if conn.peer != 0 {
                    self.admission.authenticated(conn.peer);
                }
                if let Some(link) = Self::route_in(&self.ring, &mut self.links, identity_key(conn)) {
                    link.conn_opened(id, conn);
                }
                self.mark_dirty(id);
                self.announce_login(id);
            }
            Err(auth::Refusal { reason, text, detail }) => {
                self.metrics.auth_failed(reason);
                tracing::debug!(
                    target: "ringgate::auth",
                    conn = id,
                    transport = conn.io.transport().name(),
                    reason = reason.name().unwrap_or("other"),
                    detail,
                    "login refused"
                );
                // Only the client's faults: a node that cannot check logins (Redis down with
                // fail_open off) or a key removed too early must not ban whole NATs.
                if conn.peer != 0 && matches!(reason, ReasonCode::AUTH_INVALID | ReasonCode::AUTH_EXPIRED) {
                    self.admission.login_failed(conn.peer, now);
                }
                self.metrics.frame_out(FrameOut::AuthFail);
                self.metrics.frame_out(FrameOut::Close);
                conn.session.reject(reason, text);
                self.end(id, reason);
            }
        }
    }

    fn on_send(&mut self, id: u64, send: SendFrame) {
        self.metrics.sends.increment(1);
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let key = send.route_key.as_deref().unwrap_or_else(|| identity_key(conn));
        let result = match Self::route_in(&self.ring, &mut self.links, key) {
            Some(link) => link.forward(id, conn, send.seq, send.route_key, send.payload),
            None => Err(ReasonCode::BACKEND_UNAVAILABLE),
        };
        if let Err(code) = result {
            self.metrics.acked(code, None);
            self.metrics.frame_out(FrameOut::Ack);
            if let Some(ServerEvent::Closed { reason, .. }) = conn.session.ack(send.seq, code) {
                return self.end(id, reason);
            }
        }
        self.mark_dirty(id);
    }

    /// Queues `payload` as a Push on `id`. Returns whether it was queued.
    pub fn push(&mut self, id: u64, payload: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if !conn.session.push_fits(payload.len()) {
            // Larger than the limit the client was told: refused (not delivered), counted.
            self.metrics.push_too_large.increment(1);
            return false;
        }
        match conn.session.push(payload) {
            Ok(_) => {
                self.metrics.frames_out_push.increment(1);
                self.mark_dirty(id);
                true
            }
            Err(Some(ServerEvent::Closed { reason, .. })) => {
                self.end(id, reason);
                false
            }
            Err(_) => false,
        }
    }

    /// Answers the Send behind a backend's UpstreamAck (forwarded at `sent`).
    pub fn ack_forwarded(&mut self, id: u64, seq: u64, code: ReasonCode, reply: Option<&[u8]>, sent: Instant) {
        self.metrics.acked(code, Some(sent.elapsed()));
        self.ack(id, seq, code, reply);
    }

    /// Answers the Send behind a backend's UpstreamAck.
    pub fn ack(&mut self, id: u64, seq: u64, code: ReasonCode, reply: Option<&[u8]>) {
        if let Some(reply) = reply
            && !self.push(id, reply)
        {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        self.metrics.frame_out(FrameOut::Ack);
        if let Some(ServerEvent::Closed { reason, .. }) = conn.session.ack(seq, code) {
            return self.end(id, reason);
        }
        self.mark_dirty(id);
    }

    /// Closes `id` by decision of the gateway or a backend, sending Kick (when `kick`) and Close.
    pub fn close(&mut self, id: u64, reason: ReasonCode, message: &str, kick: bool) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if kick {
            conn.session.kick(reason, message);
            self.metrics.frame_out(FrameOut::Kick);
        } else {
            conn.session.close(reason, message);
        }
        self.metrics.frame_out(FrameOut::Close);
        self.end(id, reason);
    }

    /// The session of `id` has ended: write what the socket takes now, then let go.
    fn end(&mut self, id: u64, reason: ReasonCode) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let _ = conn.flush(&mut Context::from_waker(Waker::noop()));
        }
        self.finish(id, reason);
    }

    fn finish(&mut self, id: u64, reason: ReasonCode) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        self.stats.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.node_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.stats.closed_with(reason);
        self.metrics.active[conn.io.transport() as usize].decrement(1.0);
        self.metrics.closed(reason);
        // For log pipelines (docs/deploy.md, "Logs"); off unless `ringgate::conn=debug`.
        tracing::debug!(
            target: "ringgate::conn",
            conn = id,
            transport = conn.io.transport().name(),
            reason = reason.name().unwrap_or("other"),
            user = conn.identity.as_ref().map(|i| &*i.user_id),
            device = conn.identity.as_ref().map(|i| &*i.device_id),
            "connection closed"
        );
        let authenticated = conn.identity.is_some();
        if !authenticated {
            self.unauthenticated.left(conn.io.transport().is_tls());
        }
        if conn.peer != 0 {
            self.admission.closed(conn.peer, authenticated, Instant::now());
        }
        if let Some(identity) = conn.identity.take() {
            let node = (self.config.node_id.as_str(), self.node_epoch);
            let conn = (id, self.node_epoch + u64::from(identity.since_s) * 1000);
            let who = (&*identity.user_id, &*identity.device_id, identity.platform.as_str());
            register(&self.registry, &self.metrics, node, conn, who, false);
            let key = user_key(&identity.user_id);
            if let Some(ids) = self.users.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.users.remove(&key);
                }
            }
            for room in identity.rooms.iter().flat_map(|r| r.iter()) {
                self.leave_room(id, room);
            }
            if let Some(link) = Self::route_in(&self.ring, &mut self.links, identity.user_id.as_bytes()) {
                link.conn_closed(id, &identity, reason);
            }
        }
        conn.wake();
        if let Some(failure) = conn.io.abandoned() {
            self.count_failure(failure);
        }
        conn.close_transport(reason);
    }

    /// Sends `msg` to worker `peer` now, or after what is already waiting for it when its
    /// inbox is full (in order, so a leave cannot overtake its join). Beyond [`MAX_BACKLOG`]
    /// waiting the message is dropped, counted.
    pub(super) fn send_reliably(&mut self, peer: usize, msg: WorkerMsg) {
        let Some(tx) = self.peers.get(peer) else { return };
        if self.backlog.len() <= peer {
            self.backlog.resize_with(peer + 1, Default::default);
        }
        let Some(waiting) = self.backlog.get_mut(peer) else { return };
        let msg = if waiting.is_empty() {
            match tx.try_send(msg) {
                Ok(()) | Err(flume::TrySendError::Disconnected(_)) => return,
                Err(flume::TrySendError::Full(msg)) => msg,
            }
        } else {
            msg
        };
        if waiting.len() >= MAX_BACKLOG {
            self.metrics.peer_dropped("backlog_full");
        } else {
            self.metrics.peer_delayed.increment(1);
            waiting.push_back(msg);
        }
    }

    /// Sends what waits for full peers, while they take it.
    fn retry_backlog(&mut self) {
        for (peer, waiting) in self.backlog.iter_mut().enumerate() {
            let Some(tx) = self.peers.get(peer) else { continue };
            while let Some(msg) = waiting.pop_front() {
                match tx.try_send(msg) {
                    Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
                    Err(flume::TrySendError::Full(msg)) => {
                        waiting.push_front(msg);
                        break;
                    }
                }
            }
        }
    }

    /// Fires due timers: closes connections whose handshake, auth or idle deadline passed,
    /// re-arms the rest; times out Sends a backend has not answered; pings idle backend links;
    /// sends what waits for full peers.
    pub fn on_tick(&mut self, now: Instant) {
        self.retry_backlog();
        self.backend_timers(now);
        self.expire_tallies(now);
        let mut due = std::mem::take(&mut self.due);
        self.timers.expire(now, &mut due);
        for id in due.drain(..) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            if conn.io.handshaking() {
                // WebSocket counts its own (handshake_timeout) when closed in its handshake.
                if matches!(conn.io, Io::Tls(_)) {
                    self.metrics.tls_handshake_timeouts.increment(1);
                }
                self.end(id, ReasonCode::AUTH_TIMEOUT);
                continue;
            }
            match conn.session.handle_timeout(now) {
                Some(ServerEvent::Closed { reason, .. }) => self.end(id, reason),
                _ => {
                    if let Some(deadline) = conn.session.poll_timeout() {
                        self.timers.arm(id, deadline);
                    }
                }
            }
        }
        self.due = due;
    }

    pub fn next_tally_token(&mut self) -> u64 {
        self.next_tally += 1;
        self.next_tally
    }

    /// The connections of `user_id` on this worker, optionally only those of `device`.
    pub fn conns_of(&self, user_id: &str, device: Option<&[String]>) -> Vec<u64> {
        let Some(ids) = self.users.get(&user_key(user_id)) else { return Vec::new() };
        let mut ids = ids.to_vec();
        ids.retain(|id| {
            self.conns
                .get(id)
                .and_then(|c| c.identity.as_ref())
                .is_some_and(|i| *i.user_id == *user_id && device.is_none_or(|d| d.iter().any(|d| **d == *i.device_id)))
        });
        ids
    }

    pub fn mark_dirty(&mut self, id: u64) {
        self.dirty.push(id);
    }

    /// Writes out every connection that got output since the last flush: one write per
    /// connection however many frames it got.
    pub fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut cx = Context::from_waker(Waker::noop());
        for id in dirty.drain(..) {
            self.flush_conn(id, &mut cx);
        }
        self.dirty = dirty;
    }

    /// Writes out `id`'s pending output. Outside the connection's own task `cx` is a no-op
    /// context; when the transport is then full, `want_write` changes and the task is woken
    /// to wait with its own.
    pub fn flush_conn(&mut self, id: u64, cx: &mut Context<'_>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let was_blocked = conn.want_write;
        let written = conn.flush(cx);
        if let Ok(n) = written {
            self.metrics.bytes_out.increment(n as u64);
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if written.is_err() {
            return self.on_socket_gone(id);
        }
        if conn.want_write != was_blocked {
            conn.wake();
        }
    }
}

/// Hands the registry a Put (login) or Del (close) for connection `(id, since_ms)` of `node`. Never
/// waits: a full queue drops the update and counts it.
fn register(
    registry: &Option<crate::registry::redis::RegistryTx>,
    metrics: &crate::metrics::WorkerMetrics,
    (node_id, node_epoch): (&str, u64),
    (id, since_ms): (u64, u64),
    (user, device, platform): (&str, &str, &str),
    put: bool,
) {
    let Some(registry) = registry else { return };
    let location = crate::registry::Location {
        node_id: node_id.to_owned(),
        node_epoch,
        conn_id: id,
        since_ms,
        platform: platform.to_owned(),
    };
    let (user, device) = (user.to_owned(), device.to_owned());
    let op = if put {
        crate::registry::RegistryOp::Put { user, device, location }
    } else {
        crate::registry::RegistryOp::Del { user, device, location }
    };
    if registry.tx.try_send(op).is_err() {
        metrics.registry_dropped.increment(1);
    }
}

/// What a worker's WebSocket handshakes check, from `config`. The largest binary message is
/// the client frame limit plus room for the largest frame header.
pub(super) fn ws_settings(config: &Config) -> Arc<crate::transport::ws::WsSettings> {
    let max_message = config.session.max_frame_len as u64 + crate::transport::ws::HEADER_ROOM;
    Arc::new(crate::transport::ws::WsSettings {
        rules: config.ws.clone(),
        max_message,
        trusted_proxies: config.proxies.trusted.clone(),
    })
}

/// Messages held for one full peer at most (its own inbox holds as many).
const MAX_BACKLOG: usize = 65_536;

/// A connection's default routing key: its user id.
fn identity_key(conn: &Conn) -> &[u8] {
    conn.identity.as_ref().map_or(&[], |i| i.user_id.as_bytes())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
