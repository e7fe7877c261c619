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
        for (i, peer) in self.peers.iter().enumerate() {
            if i != self.index {
                let msg = WorkerMsg::Displace { user: user.clone(), device: device.clone(), platform, except: id };
                let _ = peer.try_send(msg);
            }
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
