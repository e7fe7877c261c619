//! The reference backend as a TCP server speaking the link protocol: what
//! `ringgate reference-backend` and `ringgate-bench backend` run, and the model a backend
//! author reads. One thread, one task per link, all links sharing one [`ReferenceBackend`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::BytesMut;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use ringgate_codec::Decoded;
use ringgate_codec::link::{LinkDecoder, LinkFrame};

use super::reference::{LinkId, ReferenceBackend};

/// Output waiting for one link, and the task to wake when some arrives.
#[derive(Default)]
struct Outbox {
    buf: BytesMut,
    waker: Option<Waker>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    backend: Option<ReferenceBackend>,
    links: HashMap<LinkId, Rc<RefCell<Outbox>>>,
    lookups: Option<LookupTx>,
}

impl Shared {
    /// Queues frames on their links' outboxes.
    fn send(&self, out: &mut Vec<(LinkId, ringgate_codec::link::LinkFrame)>) {
        for (target, frame) in out.drain(..) {
            if let Some(outbox) = self.links.get(&target) {
                let mut o = outbox.borrow_mut();
                let _ = frame.encode(&mut o.buf);
                if let Some(w) = o.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

/// Asks the lookup thread where a user is: (user, reply with the user's node ids).
pub type LookupTx = flume::Sender<(String, flume::Sender<Vec<String>>)>;

/// Starts a thread answering "which nodes hold user U" from the Redis registry (live records
/// only, as docs/registry.md describes).
pub fn spawn_registry_lookups(url: String, prefix: String) -> std::io::Result<LookupTx> {
    let (tx, rx) = flume::unbounded::<(String, flume::Sender<Vec<String>>)>();
    std::thread::Builder::new().name("ringgate-lookups".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let mut conn = None;
            while let Ok((user, reply)) = rx.recv_async().await {
                if conn.is_none()
                    && let Ok(client) = redis::Client::open(url.as_str())
                {
                    conn = client.get_multiplexed_async_connection().await.ok();
                }
                let mut nodes = Vec::new();
                if let Some(c) = conn.as_mut() {
                    match crate::registry::redis::lookup(c, &prefix, &user).await {
                        Ok(found) => nodes = found.into_iter().map(|(_, loc)| loc.node_id).collect(),
                        Err(_) => conn = None,
                    }
                }
                nodes.sort_unstable();
                nodes.dedup();
                let _ = reply.send(nodes);
            }
        });
    })?;
    Ok(tx)
}

/// Serves links on `listener` until the task is dropped. With `lookups`, pushes to a user go
/// only to the nodes the registry says hold the user.
pub async fn serve(listener: TcpListener, backend_id: String, window: u32, lookups: Option<LookupTx>) {
    let mut backend = ReferenceBackend::new(backend_id, window);
    if lookups.is_some() {
        backend = backend.with_registry();
    }
    let shared = Rc::new(RefCell::new(Shared { backend: Some(backend), lookups, ..Default::default() }));
    let mut next: LinkId = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        next += 1;
        let outbox = Rc::new(RefCell::new(Outbox::default()));
        shared.borrow_mut().links.insert(next, outbox.clone());
        compio::runtime::spawn(write_loop(stream.clone(), outbox)).detach();
        compio::runtime::spawn(read_loop(stream, next, shared.clone())).detach();
    }
}

async fn read_loop(mut stream: TcpStream, link: LinkId, shared: Rc<RefCell<Shared>>) {
    // Until the gateway's Hello says what its clients may send.
    let mut decoder = LinkDecoder::default();
    let mut input = BytesMut::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut out = Vec::new();
    'read: loop {
        let compio::BufResult(res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => input.extend_from_slice(&buf[..n]),
            _ => break,
        }
        loop {
            match decoder.decode(&mut input) {
                Ok(Decoded::Frame(frame)) => {
                    if let LinkFrame::Hello(hello) = &frame {
                        let limit = ringgate_codec::limits::link_frame_len(hello.max_frame_len as usize);
                        decoder = LinkDecoder::new(limit);
                    }
                    let mut s = shared.borrow_mut();
                    let mut lookups = Vec::new();
                    if let Some(backend) = s.backend.as_mut() {
                        backend.handle(link, frame, &mut out);
                        lookups = backend.take_lookups();
                    }
                    s.send(&mut out);
                    let tx = s.lookups.clone();
                    drop(s);
                    for lookup in lookups {
                        if let Some(tx) = tx.clone() {
                            compio::runtime::spawn(deliver_after_lookup(shared.clone(), tx, lookup)).detach();
                        }
                    }
                }
                Ok(Decoded::NeedMore(_)) => break,
                Err(_) => break 'read,
            }
        }
    }
    let mut s = shared.borrow_mut();
    if let Some(backend) = s.backend.as_mut() {
        backend.link_closed(link);
    }
    if let Some(outbox) = s.links.remove(&link) {
        let mut o = outbox.borrow_mut();
        o.closed = true;
        if let Some(w) = o.waker.take() {
            w.wake();
        }
    }
}

/// Runs one registry lookup, then sends the push to the user's nodes.
async fn deliver_after_lookup(shared: Rc<RefCell<Shared>>, tx: LookupTx, lookup: super::reference::UserLookup) {
    let (reply_tx, reply) = flume::bounded(1);
    if tx.send((lookup.user_id.clone(), reply_tx)).is_err() {
        return;
    }
    let Ok(nodes) = reply.recv_async().await else { return };
    let s = shared.borrow();
    let mut out = Vec::new();
    if let Some(backend) = s.backend.as_ref() {
        backend.deliver_user(lookup, &nodes, &mut out);
    }
    s.send(&mut out);
}

async fn write_loop(mut stream: TcpStream, outbox: Rc<RefCell<Outbox>>) {
    loop {
        let chunk = poll_fn(|cx| {
            let mut o = outbox.borrow_mut();
            if !o.buf.is_empty() {
                return Poll::Ready(Some(o.buf.split()));
            }
            if o.closed {
                return Poll::Ready(None);
            }
            o.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(chunk) = chunk else { return };
        if stream.write_all(chunk).await.0.is_err() {
            return;
        }
    }
}
