//! The device policy on one node: a login closes the sessions it replaces on every worker
//! (sessions on other nodes are the registry's job).

use std::sync::Arc;

use ringgate_codec::ReasonCode;

use super::state::Worker;
use crate::inbox::WorkerMsg;

impl Worker {
    /// Tells every worker (this one included) about a login so each closes the sessions the
    /// device policy says it replaces. Sessions on other nodes are the registry's job.
    pub(super) fn announce_login(&mut self, id: u64) {
        let Some(identity) = self.conns.get(&id).and_then(|c| c.identity.as_ref()) else { return };
        let user: Arc<str> = Arc::from(&*identity.user_id);
        let device: Arc<str> = Arc::from(&*identity.device_id);
        let platform = identity.platform.as_str();
        let me = self.index;
        for i in (0..self.peers.len()).filter(|&i| i != me) {
            let msg = WorkerMsg::Displace { user: user.clone(), device: device.clone(), platform, except: id };
            self.send_reliably(i, msg);
        }
        self.displace(&user, &device, platform, id);
    }

    /// Closes this worker's sessions of `user` that a login of (device, platform) replaces.
    pub fn displace(&mut self, user: &str, device: &str, platform: &str, except: u64) {
        let policy = self.config.device_policy;
        let replaced: Vec<u64> = self
            .conns_of(user, None)
            .into_iter()
            .filter(|&id| id != except)
            .filter(|id| {
                self.conns
                    .get(id)
                    .and_then(|c| c.identity.as_ref())
                    .is_some_and(|i| policy.displaces((device, platform), (&i.device_id, i.platform.as_str())))
            })
            .collect();
        for id in replaced {
            self.close(id, ReasonCode::REPLACED, "logged in elsewhere", true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    /// A displacement for a worker whose inbox is full is not lost: it waits, in order with
    /// what follows it, and goes once the inbox has room.
    #[test]
    fn displacements_wait_for_a_full_peer_in_order() {
        let config = Arc::new(crate::config::Config::parse("[auth]\nmode = \"none\"\n").unwrap());
        let (me, _mine) = flume::bounded(4);
        let (peer, inbox) = flume::bounded(1);
        let mut w = Worker::new(0, config, Vec::new(), vec![me, peer], Arc::default());
        let displace = |n: u64| WorkerMsg::Displace { user: "u".into(), device: "d".into(), platform: "", except: n };
        for n in 1..=3 {
            w.send_reliably(1, displace(n));
        }
        let except = |msg: WorkerMsg| match msg {
            WorkerMsg::Displace { except, .. } => except,
            _ => 0,
        };
        assert_eq!(inbox.len(), 1, "the inbox took one; two wait");
        assert_eq!(except(inbox.try_recv().unwrap()), 1);
        w.on_tick(Instant::now());
        assert_eq!(except(inbox.try_recv().unwrap()), 2);
        // A new message queues behind the one still waiting, not before it.
        w.send_reliably(1, displace(4));
        w.on_tick(Instant::now());
        assert_eq!(except(inbox.try_recv().unwrap()), 3);
        w.on_tick(Instant::now());
        assert_eq!(except(inbox.try_recv().unwrap()), 4);
        assert!(inbox.try_recv().is_err());
    }
}
