//! The endpoint's driver: the one task per worker that does all of the endpoint's I/O
//! (see the parent module), and the half of [`QuicEndpoint`] it uses: receiving datagrams,
//! taking new connections through the handshake line, running timers, and sending.

use super::*;

impl QuicEndpoint {
    /// Reads datagrams, a batch per system call, until the socket is empty or the budget
    /// is spent; true if spent.
    fn receive(&mut self, rx: &mut super::super::udp::RxBatch, now: Instant, full: bool) -> bool {
        for _ in 0..RECV_BUDGET / super::super::udp::SLOTS {
            let n = match rx.recv(self.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors surface here (ECONNREFUSED from an earlier send); keep going.
                Err(_) => continue,
            };
            for i in 0..n {
                let Some((datagram, from, local)) = rx.get(i) else { continue };
                self.datagram(BytesMut::from(datagram), from, local, now, full);
            }
            if n < super::super::udp::SLOTS {
                return false;
            }
        }
        true
    }

    fn datagram(&mut self, data: BytesMut, from: SocketAddr, local: Option<IpAddr>, now: Instant, full: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.inner.handle(now, from, local, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(slot) = self.slot(ch.0) {
                    slot.conn.handle_event(event);
                    self.touch(ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(incoming, now, full, &mut buf),
            Some(DatagramEvent::Response(transmit)) => self.send(&transmit, &buf[..transmit.size]),
            None => {}
        }
        self.buf = buf;
    }

    /// A new connection. At most `max_handshakes` handshakes run at once; more wait in line
    /// (up to [`WAITING_PER_SLOT`] times as many, for at most the auth timeout) instead of
    /// all running at once: in a reconnect storm thousands of concurrent handshakes would
    /// each hold ~30 KB of handshake state for seconds, fragment the heap (RSS stays at the
    /// peak) and time out together, where a line lets each finish quickly. A full or
    /// draining node refuses at once, so the client tries another node.
    fn incoming(&mut self, incoming: quinn_proto::Incoming, now: Instant, full: bool, buf: &mut Vec<u8>) {
        if full || !self.accepting {
            self.refuse(incoming, buf);
            return;
        }
        let busy = self.retry_above > 0
            && !incoming.remote_address_validated()
            && self.handshaking + self.waiting.len() >= self.retry_above;
        if busy {
            // Busy: the client proves its address with a Retry round trip before it gets a
            // slot or a place in line, so Initials that are never followed up (spoofed, or
            // from a host that does no crypto) cost one stateless packet each.
            buf.clear();
            match self.inner.retry(incoming, buf) {
                Ok(transmit) => {
                    self.metrics.retried.increment(1);
                    self.send(&transmit, &buf[..transmit.size]);
                }
                Err(e) => self.refuse(e.into_incoming(), buf),
            }
            return;
        }
        // The per-address limits TCP has: connections, those not yet logged in (a
        // handshake counts), new ones per second, the flapping ban. An address not yet
        // validated is only checked (a spoofer must not use up someone else's limits);
        // such a connection counts from when the worker takes it.
        let Ok(peer) = self.admit_address(&incoming, now) else {
            self.send_refusal(incoming, buf);
            return;
        };
        if self.handshaking < self.max_handshakes && self.waiting.is_empty() {
            self.accept(incoming, peer, now, buf);
        } else if self.waiting.len() < self.max_handshakes.saturating_mul(WAITING_PER_SLOT) {
            self.waiting.push_back((incoming, now, peer));
        } else {
            self.release(peer, now);
            self.refuse(incoming, buf);
        }
    }

    pub(super) fn refuse(&mut self, incoming: quinn_proto::Incoming, buf: &mut Vec<u8>) {
        self.metrics.refused.increment(1);
        self.send_refusal(incoming, buf);
    }

    /// Tells the client it is refused (CONNECTION_REFUSED), without counting it here.
    fn send_refusal(&mut self, incoming: quinn_proto::Incoming, buf: &mut Vec<u8>) {
        buf.clear();
        let transmit = self.inner.refuse(incoming, buf);
        self.send(&transmit, &buf[..transmit.size]);
    }

    /// Starts waiting handshakes while slots are free; refuses those that waited past the
    /// auth timeout.
    fn start_waiting(&mut self, now: Instant, full: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        while self.handshaking < self.max_handshakes
            && let Some((incoming, since, peer)) = self.waiting.pop_front()
        {
            if full || !self.accepting || now.duration_since(since) >= self.auth_timeout {
                self.release(peer, now);
                self.refuse(incoming, &mut buf);
            } else {
                self.accept(incoming, peer, now, &mut buf);
            }
        }
        self.buf = buf;
    }

    fn accept(&mut self, incoming: quinn_proto::Incoming, peer: AddrKey, now: Instant, buf: &mut Vec<u8>) {
        buf.clear();
        match self.inner.accept(incoming, now, buf, Some(self.server.clone())) {
            Ok((ch, conn)) => {
                let h = ch.0;
                if self.slots.len() <= h {
                    self.slots.resize_with(h + 1, || None);
                }
                self.generation = self.generation.wrapping_add(1);
                let slot = Slot {
                    conn,
                    generation: self.generation,
                    stream: None,
                    delivered: false,
                    phase: Phase::Handshaking { deadline: now + self.handshake_timeout },
                    timer: None,
                    waker: None,
                    queued: false,
                    peer,
                };
                if let Some(old) = self.slots.get_mut(h) {
                    *old = Some(Box::new(slot));
                }
                self.live += 1;
                self.handshaking += 1;
                self.touch(h);
            }
            Err(e) => {
                tracing::debug!(error = %e.cause, "quic accept failed");
                self.metrics.failed.increment(1);
                self.release(peer, now);
                if let Some(transmit) = e.response {
                    self.send(&transmit, &buf[..transmit.size]);
                }
            }
        }
    }

    /// Runs the timers that are due.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, h)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(slot) = self.slot(h) else { continue };
            slot.timer = None;
            slot.conn.handle_timeout(now);
            match slot.phase {
                Phase::Handshaking { deadline } if deadline <= now => {
                    // No handshake or no stream within the handshake timeout.
                    slot.conn.close(now, VarInt::from_u32(ReasonCode::AUTH_TIMEOUT.0), Bytes::new());
                    slot.phase = Phase::Closed;
                    let peer = slot.peer;
                    self.handshaking = self.handshaking.saturating_sub(1);
                    self.metrics.failed.increment(1);
                    self.release(peer, now);
                }
                Phase::Closing { deadline, code } if deadline <= now => {
                    slot.conn.close(now, code, Bytes::new());
                    slot.phase = Phase::Closed;
                }
                _ => {}
            }
            self.touch(h);
        }
    }

    /// Processes the connections on the work queue: their events, what they send, their
    /// next timer.
    fn process(&mut self, now: Instant) {
        while let Some(h) = self.queue.pop_front() {
            let mut buf = std::mem::take(&mut self.buf);
            self.drive(h, now, &mut buf);
            self.buf = buf;
        }
    }

    fn drive(&mut self, h: usize, now: Instant, buf: &mut Vec<u8>) {
        let Some(mut slot) = self.slots.get_mut(h).and_then(Option::take) else { return };
        slot.queued = false;
        let ch = ConnectionHandle(h);
        let mut drained = false;
        loop {
            let mut again = false;
            while let Some(event) = slot.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(reply) = self.inner.handle_event(ch, event) {
                    slot.conn.handle_event(reply);
                    again = true;
                }
            }
            while let Some(event) = slot.conn.poll() {
                again = true;
                self.on_event(h, &mut slot, event);
            }
            if let Phase::Closing { code, .. } = slot.phase
                && slot.delivered
            {
                slot.conn.close(now, code, Bytes::new());
                slot.phase = Phase::Closed;
                again = true;
            }
            loop {
                buf.clear();
                let Some(transmit) = slot.conn.poll_transmit(now, 1, buf) else { break };
                self.send(&transmit, &buf[..transmit.size]);
            }
            if !again {
                break;
            }
        }
        if let Some(at) = slot.timer.take() {
            self.timers.remove(&(at, h));
        }
        if drained {
            if matches!(slot.phase, Phase::Handshaking { .. }) {
                self.handshaking = self.handshaking.saturating_sub(1);
                self.release(slot.peer, now);
            }
            slot.wake();
            self.live = self.live.saturating_sub(1);
            return;
        }
        if let Some(at) = slot.deadline() {
            slot.timer = Some(at);
            self.timers.insert((at, h));
        }
        if let Some(place) = self.slots.get_mut(h) {
            *place = Some(slot);
        }
    }

    fn on_event(&mut self, h: usize, slot: &mut Slot, event: Event) {
        match event {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                if slot.stream.is_none()
                    && let Some(id) = slot.conn.streams().accept(Dir::Bi)
                {
                    slot.stream = Some(id);
                    if let Phase::Handshaking { .. } = slot.phase {
                        // The client's stream is open: hand the connection to the worker.
                        slot.phase = Phase::Open;
                        self.handshaking = self.handshaking.saturating_sub(1);
                        self.ready.push(QuicKey { handle: h, generation: slot.generation });
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                if let Phase::Handshaking { .. } = slot.phase {
                    tracing::debug!(error = %reason, "quic handshake failed");
                    self.handshaking = self.handshaking.saturating_sub(1);
                    self.metrics.failed.increment(1);
                    self.release(slot.peer, Instant::now());
                }
                slot.phase = Phase::Closed;
                slot.wake();
            }
            Event::Stream(StreamEvent::Finished { .. } | StreamEvent::Stopped { .. }) => {
                slot.delivered = true;
                slot.wake();
            }
            Event::Stream(_) => slot.wake(),
            Event::HandshakeDataReady | Event::Connected | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }

    /// Queues one datagram; a full batch goes out at once, the rest at the end of the turn.
    fn send(&mut self, transmit: &quinn_proto::Transmit, data: &[u8]) {
        self.tx.push(transmit.destination, transmit.src_ip, data);
        if self.tx.is_full() {
            self.tx.flush(self.socket.as_raw_fd());
        }
    }

    /// Sends what is queued while the socket takes it; true when nothing is left.
    fn flush_tx(&mut self) -> bool {
        self.tx.flush(self.socket.as_raw_fd())
    }
}

/// The driver's wake-up for the earliest connection timer.
type Timer = Pin<Box<dyn Future<Output = ()>>>;

/// The driver task of a worker's endpoint; see the module docs. Runs until
/// [`QuicEndpoint::stop`].
/// What the driver asks of the worker it runs on.
pub(crate) trait Acceptor {
    /// Whether the worker takes no more connections.
    fn is_full(&self) -> bool;
    /// A connection whose stream is open, from `remote`: the worker takes it, with its
    /// address's count in the admission table (`peer`; 0: not counted yet, which the worker
    /// then does), or gives it back with the reason it is refused.
    fn admit(
        &self,
        io: super::super::QuicIo,
        peer: AddrKey,
        remote: Option<IpAddr>,
    ) -> Result<(), (super::super::QuicIo, ReasonCode)>;
}

pub(crate) async fn run(ep: Shared, worker: impl Acceptor) {
    let mut rx = super::super::udp::RxBatch::new();
    let mut sleep: Option<(Instant, Timer)> = None;
    poll_fn(|cx| {
        loop {
            let full = worker.is_full();
            let (ready, spent) = {
                let mut e = ep.borrow_mut();
                if e.stopped {
                    return Poll::Ready(());
                }
                let now = Instant::now();
                let spent = e.receive(&mut rx, now, full);
                e.expire(now);
                e.process(now);
                // Processing frees handshake slots; fill them now (and process the new
                // handshakes) rather than on the next wake-up, which may be a while off.
                e.start_waiting(now, full);
                e.process(now);
                e.flush_tx();
                (std::mem::take(&mut e.ready), spent)
            };
            if !ready.is_empty() {
                admit(&ep, &worker, ready);
                continue;
            }
            let mut e = ep.borrow_mut();
            remember(&mut e.driver, cx);
            if spent || !e.queue.is_empty() {
                // More to do: yield to the worker's other tasks first.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match e.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(err)) => {
                    tracing::error!(error = %err, "quic socket failed");
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            if !e.tx.is_empty() && e.socket.poll_write_ready(cx).is_ready() {
                continue;
            }
            match e.timers.first().map(|&(at, _)| at) {
                Some(at) => {
                    if sleep.as_ref().is_none_or(|(due, _)| *due != at) {
                        sleep = Some((at, Box::pin(compio::time::sleep_until(at))));
                    }
                    if let Some((_, timer)) = sleep.as_mut()
                        && timer.as_mut().poll(cx).is_ready()
                    {
                        sleep = None;
                        continue;
                    }
                }
                None => sleep = None,
            }
            return Poll::Pending;
        }
    })
    .await;
}

/// Hands connections whose stream is open to the worker.
fn admit(ep: &Shared, worker: &impl Acceptor, ready: Vec<QuicKey>) {
    for key in ready {
        let (peer, remote) = {
            let mut e = ep.borrow_mut();
            (e.peer_of(key), e.remote_of(key))
        };
        if let Err((refused, reason)) = worker.admit(super::super::QuicIo { ep: ep.clone(), key }, peer, remote) {
            let mut e = ep.borrow_mut();
            e.refused_by_worker(refused.key);
            e.close(refused.key, reason, &[]);
        }
    }
}
