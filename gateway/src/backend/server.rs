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
use ringgate_codec::link::LinkDecoder;

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
}

/// Serves links on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, backend_id: String, window: u32) {
    let shared = Rc::new(RefCell::new(Shared {
        backend: Some(ReferenceBackend::new(backend_id, window)),
        ..Default::default()
    }));
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
    let decoder = LinkDecoder::default();
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
                    let mut s = shared.borrow_mut();
                    if let Some(backend) = s.backend.as_mut() {
                        backend.handle(link, frame, &mut out);
                    }
                    for (target, frame) in out.drain(..) {
                        if let Some(outbox) = s.links.get(&target) {
                            let mut o = outbox.borrow_mut();
                            let _ = frame.encode(&mut o.buf);
                            if let Some(w) = o.waker.take() {
                                w.wake();
                            }
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
