//! Calls of the server API (or of another node, through Redis) for this worker's own
//! connections: the control plane sends each worker one [`NodeOp`] and sums the answers.

use crate::inbox::{LocalSession, NodeAnswer, NodeOp, owner_of};

use super::state::Worker;

impl Worker {
    /// Carries out `op` on this worker's connections.
    pub fn on_node_op(&mut self, op: &NodeOp) -> NodeAnswer {
        self.stats.node_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = |n: usize| NodeAnswer::Count(u32::try_from(n).unwrap_or(u32::MAX));
        match op {
            NodeOp::PushUser { user, devices, platforms, payload } => {
                let targets = self.user_conns(user, devices, platforms);
                count(targets.into_iter().filter(|&id| self.push(id, payload)).count())
            }
            NodeOp::PushConn { conn, payload } => {
                let mine = owner_of(*conn) == Some(self.index);
                let authed = self.conns.get(conn).is_some_and(|c| c.identity.is_some());
                count(usize::from(mine && authed && self.push(*conn, payload)))
            }
            NodeOp::PushRoom { room, exclude, payload } => {
                let members: Vec<u64> =
                    self.rooms.get(room.as_str()).map(|m| m.iter().copied().collect()).unwrap_or_default();
                let targets = members.into_iter().filter(|&id| Some(id) != *exclude);
                count(targets.filter(|&id| self.push(id, payload)).count())
            }
            NodeOp::Broadcast { payload } => {
                let everyone: Vec<u64> =
                    self.conns.iter().filter(|(_, c)| c.identity.is_some()).map(|(id, _)| *id).collect();
                count(everyone.into_iter().filter(|&id| self.push(id, payload)).count())
            }
            NodeOp::Kick { user, device, reason, message } => {
                let devices: Vec<String> = device.iter().cloned().collect();
                let targets = self.user_conns(user, &devices, &[]);
                let kicked = targets.len();
                for id in targets {
                    self.close(id, *reason, message, true);
                }
                count(kicked)
            }
            NodeOp::Join { user, room } => {
                let targets = self.user_conns(user, &[], &[]);
                for &id in &targets {
                    self.join_room(id, room);
                }
                count(targets.len())
            }
            NodeOp::Leave { user, room } => {
                let targets = self.user_conns(user, &[], &[]);
                for &id in &targets {
                    self.leave_room(id, room);
                }
                count(targets.len())
            }
            NodeOp::RoomSize { room } => count(self.rooms.get(room.as_str()).map_or(0, |m| m.len())),
            NodeOp::Presence { user } => {
                let sessions = self
                    .user_conns(user, &[], &[])
                    .into_iter()
                    .filter_map(|id| {
                        let identity = self.conns.get(&id)?.identity.as_ref()?;
                        Some(LocalSession {
                            device: identity.device_id.to_string(),
                            platform: identity.platform.as_str().to_owned(),
                            conn: id,
                            since_ms: self.node_epoch + u64::from(identity.since_s) * 1000,
                        })
                    })
                    .collect();
                NodeAnswer::Sessions(sessions)
            }
        }
    }

    /// The user's connections here, narrowed to `devices` and `platforms` when not empty.
    fn user_conns(&self, user: &str, devices: &[String], platforms: &[String]) -> Vec<u64> {
        let devices = (!devices.is_empty()).then_some(devices);
        let mut ids = self.conns_of(user, devices);
        if !platforms.is_empty() {
            ids.retain(|id| {
                let platform = self.conns.get(id).and_then(|c| c.identity.as_ref()).map(|i| i.platform.as_str());
                platform.is_some_and(|p| platforms.iter().any(|want| want == p))
            });
        }
        ids
    }
}
