//! The embedded backend: the reference backend on a thread of its own inside the gateway,
//! reached over in-process channels instead of TCP links. Used when the config has no
//! `[backend]` section, so a single `ringgate run` is a working system.

use std::thread::JoinHandle;

use ringgate_codec::link::{Hello, LINK_VERSION, LinkFrame};

use super::reference::{LinkId, ReferenceBackend};
use crate::inbox::WorkerMsg;

/// A frame from worker `link` to the embedded backend.
pub type ToBackend = (LinkId, LinkFrame);

/// Starts the embedded backend. Each worker's link id is its index; answers go to the
/// worker's inbox. The thread ends when every worker has dropped its sender.
pub fn spawn(
    node_id: &str,
    node_epoch: u64,
    inboxes: Vec<flume::Sender<WorkerMsg>>,
    queue: usize,
) -> std::io::Result<(flume::Sender<ToBackend>, JoinHandle<()>)> {
    let (tx, rx) = flume::bounded::<ToBackend>(queue);
    let node_id = node_id.to_owned();
    let handle = std::thread::Builder::new().name("ringgate-backend".into()).spawn(move || {
        let mut backend = ReferenceBackend::new("embedded", u32::MAX);
        let mut out = Vec::new();
        // The in-process links are up from the start; introduce them as a TCP link would.
        for worker in 0..inboxes.len() {
            let hello = Hello {
                node_id: node_id.clone(),
                node_epoch,
                worker: worker as u32,
                link_version: LINK_VERSION,
                window: u32::MAX,
                max_frame_len: u32::MAX,
            };
            backend.handle(worker as LinkId, LinkFrame::Hello(hello), &mut out);
        }
        out.clear();
        while let Ok((link, frame)) = rx.recv() {
            backend.handle(link, frame, &mut out);
            for (target, frame) in out.drain(..) {
                if let Some(inbox) = usize::try_from(target).ok().and_then(|t| inboxes.get(t)) {
                    // A worker that has stopped no longer needs answers.
                    let _ = inbox.send(WorkerMsg::FromBackend { link: None, frame: Box::new(frame) });
                }
            }
        }
    })?;
    Ok((tx, handle))
}
