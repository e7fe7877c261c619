//! Draining, reload and shutdown of a worker's connections.

use std::sync::Arc;

use ringgate_codec::ReasonCode;

use super::state::Worker;
use crate::config::Config;
use crate::metrics::FrameOut;

impl Worker {
    /// Draining: sends GoAway to up to `quota` more connections. A client answers by finishing
    /// its in-flight Sends and closing; connections not yet authenticated are closed at once.
    pub fn go_away(&mut self, quota: usize, frame: &ringgate_codec::client::GoAway) {
        let mut queue = self.drain_queue.take().unwrap_or_else(|| self.conns.keys().copied().collect());
        let take = quota.min(queue.len());
        for id in queue.drain(..take) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            if conn.identity.is_some() {
                conn.session.go_away(frame);
                self.metrics.frame_out(FrameOut::GoAway);
                self.mark_dirty(id);
            } else {
                self.close(id, ReasonCode::SERVER_DRAINING, "", false);
            }
        }
        self.drain_queue = Some(queue);
        self.flush_dirty();
    }

    /// Takes a reloaded config; existing sessions keep the limits they started with.
    pub fn reload(&mut self, config: Arc<Config>) {
        self.ws_settings = super::state::ws_settings(&config);
        self.config = config;
    }

    /// Closes every connection with `reason` (shutdown).
    pub fn close_all(&mut self, reason: ReasonCode) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, reason, "", false);
        }
    }
}
