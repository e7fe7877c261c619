//! The task of one client connection: waits for the transport to become readable (or
//! writable while output is blocked) and hands each event to the worker.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use super::state::Worker;
use crate::transport::{Readiness, remember};

/// The task of connection `id`: waits for readiness and hands each event to the worker.
/// Ends when the worker has removed the connection; dropping the last handle on the socket
/// then cancels any pending readiness op and closes it.
pub(crate) async fn run(worker: Rc<RefCell<Worker>>, id: u64) {
    poll_fn(|cx| {
        loop {
            let mut w = worker.borrow_mut();
            let Some(conn) = w.conns.get_mut(&id) else { return Poll::Ready(()) };
            match conn.io.poll_ready(conn.want_write, cx) {
                Readiness::Failed => w.on_socket_gone(id),
                Readiness::Readable => w.on_readable(id, cx),
                Readiness::Writable => w.flush_conn(id, cx),
                Readiness::Pending => {
                    remember(&mut conn.waker, cx);
                    return Poll::Pending;
                }
                Readiness::Driven => {
                    // Read until the transport has registered this task, then write what
                    // is pending until it takes it all or registers this task too.
                    w.on_readable(id, cx);
                    if w.conns.get(&id).is_some_and(|c| c.want_write) {
                        w.flush_conn(id, cx);
                    }
                    let Some(conn) = w.conns.get_mut(&id) else { return Poll::Ready(()) };
                    remember(&mut conn.waker, cx);
                    return Poll::Pending;
                }
            }
        }
    })
    .await;
}
