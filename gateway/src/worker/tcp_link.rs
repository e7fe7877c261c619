//! The task behind one TCP backend link: connect, Hello/HelloAck, then read frames into the
//! worker and write the link's queued output, reconnecting with jittered exponential backoff.
//! While the link is down the worker routes its keys to their next choice on the ring, and
//! every Send that was waiting on it has been acked `backend_unavailable`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use ringgate_codec::Decoded;
use ringgate_codec::backoff::Backoff;
use ringgate_codec::link::{Hello, LinkClose, LinkDecoder, LinkFrame};
use ringgate_codec::{DecodeError, ReasonCode};

use super::link::TcpOut;
use super::state::Worker;
use crate::config::BackendConfig;

/// Keeps link `index` of `worker` connected to `addr` for as long as the worker runs.
pub(crate) async fn run(
    worker: Rc<RefCell<Worker>>,
    addr: SocketAddr,
    out: Rc<RefCell<TcpOut>>,
    hello: Hello,
    config: Arc<BackendConfig>,
) {
    let seed = ringgate_router::hash::hash64(u64::from(hello.worker), addr.to_string().as_bytes());
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max, seed);
    loop {
        let mut established = false;
        if let Err(e) = session(&worker, addr, &out, &hello, &config, &mut established).await {
            tracing::debug!(%addr, worker = hello.worker, error = %e, "backend link down");
        }
        worker.borrow_mut().link_down(Some(addr));
        if established {
            tracing::warn!(%addr, worker = hello.worker, "backend link lost; reconnecting");
            backoff.reset();
        }
        compio::time::sleep(backoff.next_delay()).await;
    }
}

async fn session(
    worker: &Rc<RefCell<Worker>>,
    addr: SocketAddr,
    out: &Rc<RefCell<TcpOut>>,
    hello: &Hello,
    config: &BackendConfig,
    established: &mut bool,
) -> io::Result<()> {
    let timed_out = |_| io::Error::from(io::ErrorKind::TimedOut);
    let mut stream =
        compio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await.map_err(timed_out)??;
    stream.set_nodelay(true)?;
    let hello_bytes = LinkFrame::Hello(hello.clone()).to_bytes().map_err(io::Error::other)?;
    stream.write_all(hello_bytes).await.0?;
    let mut reader = FrameReader::new(worker.borrow().config.session.max_frame_len);
    let first =
        compio::time::timeout(config.connect_timeout, reader.next(&mut stream, || {})).await.map_err(timed_out)??;
    let window = match first {
        LinkFrame::HelloAck(ack) => ack.window.min(hello.window),
        other => return Err(io::Error::other(format!("expected HelloAck, got {}", other.name()))),
    };
    *established = true;
    worker.borrow_mut().link_up(Some(addr), window as usize);
    tracing::info!(%addr, worker = hello.worker, window, "backend link up");
    let writer = compio::runtime::spawn(write_loop(stream.clone(), out.clone()));
    // Before waiting on the socket, write out what the frames so far produced: one write
    // per client connection per batch of link frames.
    let flush = || worker.borrow_mut().flush_dirty();
    // The worker pings every ping_interval and backends answer; three intervals of silence
    // mean the backend is gone even if no RST ever arrives.
    let silence = config.ping_interval.saturating_mul(3);
    let result = loop {
        let frame = match compio::time::timeout(silence, reader.next(&mut stream, flush)).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(io::Error::new(io::ErrorKind::TimedOut, "backend link silent")),
        };
        let mut w = worker.borrow_mut();
        match frame {
            LinkFrame::Ping => {
                let mut o = out.borrow_mut();
                let _ = LinkFrame::Pong.encode(&mut o.buf);
                o.wake();
            }
            LinkFrame::Pong => w.link_pong(Some(addr)),
            LinkFrame::Close(close) => {
                break Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("backend closed: {}", close.reason),
                ));
            }
            frame => w.on_backend(super::downstream::Via::Link(Some(addr)), frame),
        }
    };
    // The side that closes says why first (docs/protocol.md §1): a frame the backend got
    // wrong, or its silence. A backend's own Close needs no answer; a socket that failed
    // cannot carry one.
    let reason = match &result {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let decode = e.get_ref().and_then(|inner| inner.downcast_ref::<DecodeError>());
            Some((decode.map_or(ReasonCode::PROTOCOL_ERROR, DecodeError::reason), e.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Some((ReasonCode::IDLE_TIMEOUT, e.to_string())),
        _ => None,
    };
    if let Some((reason, message)) = reason {
        queue_close(out, reason, &message);
        flushed(std::slice::from_ref(out)).await;
    }
    drop(writer);
    result
}

/// Queues a Close behind the link's pending output.
pub(crate) fn queue_close(out: &Rc<RefCell<TcpOut>>, reason: ReasonCode, message: &str) {
    let mut o = out.borrow_mut();
    let close = LinkFrame::Close(LinkClose { reason, message: message.chars().take(200).collect() });
    let _ = close.encode(&mut o.buf);
    o.wake();
}

/// Gives the links' writers up to 500 ms to send what is queued (a backend that does not
/// read does not hold the worker up).
pub(crate) async fn flushed(outs: &[Rc<RefCell<TcpOut>>]) {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while outs.iter().any(|o| !o.borrow().buf.is_empty()) && std::time::Instant::now() < until {
        compio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Decodes link frames from a stream.
struct FrameReader {
    input: BytesMut,
    buf: Vec<u8>,
    decoder: LinkDecoder,
}

impl FrameReader {
    /// A reader for a link whose clients may send frames of `client_max_frame_len`.
    fn new(client_max_frame_len: usize) -> FrameReader {
        let limit = ringgate_codec::limits::link_frame_len(client_max_frame_len);
        FrameReader { input: BytesMut::new(), buf: Vec::new(), decoder: LinkDecoder::new(limit) }
    }

    /// The next frame; calls `before_read` whenever it has to wait for the socket.
    async fn next(&mut self, stream: &mut TcpStream, mut before_read: impl FnMut()) -> io::Result<LinkFrame> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Decoded::Frame(frame)) => return Ok(frame),
                Ok(Decoded::NeedMore(_)) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            before_read();
            let buf = std::mem::take(&mut self.buf);
            let mut buf = if buf.capacity() == 0 { Vec::with_capacity(64 * 1024) } else { buf };
            buf.clear();
            let compio::BufResult(res, buf) = stream.read(buf).await;
            let n = res?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.input.extend_from_slice(&buf[..n]);
            self.buf = buf;
        }
    }
}

async fn write_loop(mut stream: TcpStream, out: Rc<RefCell<TcpOut>>) {
    loop {
        let chunk = poll_fn(|cx| {
            let mut o = out.borrow_mut();
            if o.buf.is_empty() {
                o.waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(o.buf.split())
            }
        })
        .await;
        if stream.write_all(chunk).await.0.is_err() {
            // The reader sees the broken socket too and ends the session.
            let _ = stream.shutdown().await;
            return;
        }
    }
}
