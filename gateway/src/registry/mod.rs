//! Where each user's connections live, shared by every node through Redis (or held in
//! process on a single node). See docs/registry.md for the key schema backends read.
//!
//! Workers never wait on Redis: they hand [`RegistryOp`]s to the control plane through a
//! bounded queue. The control plane merges them per (user, device) in a [`Batcher`], writes
//! them in pipelines, and keeps a mirror of every record this node owns so it can re-assert
//! all of them after Redis comes back.

pub mod redis;

use std::collections::HashMap;

/// Now, in unix milliseconds (lease expiries and relay deadlines are in these).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One connection's location record: what `user -> device -> record` holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub node_id: String,
    pub node_epoch: u64,
    pub conn_id: u64,
    pub since_ms: u64,
    /// The client platform's name ("ios", "android", ...), for the one-per-platform policy.
    pub platform: String,
}

impl Location {
    /// The stored form: `node|epoch|conn|since|platform`, numbers in decimal.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}|{}|{}", self.node_id, self.node_epoch, self.conn_id, self.since_ms, self.platform)
    }

    /// Parses the stored form; `None` for anything else (a reader skips it).
    pub fn parse(s: &str) -> Option<Location> {
        let mut parts = s.split('|');
        let node_id = parts.next()?.to_owned();
        let node_epoch = parts.next()?.parse().ok()?;
        let conn_id = parts.next()?.parse().ok()?;
        let since_ms = parts.next()?.parse().ok()?;
        let platform = parts.next()?.to_owned();
        if parts.next().is_some() || node_id.is_empty() {
            return None;
        }
        Some(Location { node_id, node_epoch, conn_id, since_ms, platform })
    }
}

/// A change a worker hands to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryOp {
    /// The connection authenticated: record it (replacing the device's previous record).
    Put { user: String, device: String, location: Location },
    /// The connection closed: remove its record, but only if it is still this one.
    Del { user: String, device: String, location: Location },
    /// A worker's first member joined the room (`joined`), or its last left.
    Room { room: String, joined: bool },
}

/// What the control plane still has to write, merged per (user, device), plus the mirror of
/// every record this node owns.
#[derive(Debug, Default)]
pub struct Batcher {
    pending: HashMap<(String, String), RegistryOp>,
    mirror: HashMap<(String, String), Location>,
    /// Records per user in the mirror (users leave the node's user index at 0).
    users: HashMap<String, u32>,
    /// Per room, how many of this node's workers have members.
    rooms: HashMap<String, u32>,
    /// Room set changes not written yet: true = add this node, false = remove it.
    rooms_pending: HashMap<String, bool>,
    bound: usize,
    /// Updates dropped because `pending` was full (they are still in the mirror, so a
    /// re-assert after an outage writes them).
    pub overflow: u64,
}

impl Batcher {
    /// A batcher holding at most `bound` pending writes.
    pub fn new(bound: usize) -> Batcher {
        Batcher { bound: bound.max(1), ..Batcher::default() }
    }

    /// Takes one op: updates the mirror and merges it into the pending writes.
    pub fn push(&mut self, op: RegistryOp) {
        let key = match &op {
            RegistryOp::Room { room, joined } => return self.room(room, *joined),
            RegistryOp::Put { user, device, location } => {
                if self.mirror.insert((user.clone(), device.clone()), location.clone()).is_none() {
                    *self.users.entry(user.clone()).or_default() += 1;
                }
                (user.clone(), device.clone())
            }
            RegistryOp::Del { user, device, location } => {
                let key = (user.clone(), device.clone());
                if self.mirror.get(&key) == Some(location) {
                    self.mirror.remove(&key);
                    if let Some(n) = self.users.get_mut(user) {
                        *n -= 1;
                        if *n == 0 {
                            self.users.remove(user);
                        }
                    }
                }
                key
            }
        };
        match (self.pending.get(&key), &op) {
            // A record written and removed before it was flushed never needs writing.
            (Some(RegistryOp::Put { location: put, .. }), RegistryOp::Del { location: del, .. }) if put == del => {
                self.pending.remove(&key);
            }
            _ => {
                if self.pending.len() >= self.bound && !self.pending.contains_key(&key) {
                    self.overflow += 1;
                    return;
                }
                self.pending.insert(key, op);
            }
        }
    }

    /// The merged writes to send now (emptied).
    pub fn take(&mut self) -> Vec<RegistryOp> {
        self.pending.drain().map(|(_, op)| op).collect()
    }

    /// Puts back writes that failed, unless newer ones for the same key arrived meanwhile.
    pub fn restore(&mut self, ops: Vec<RegistryOp>) {
        for op in ops {
            let key = match &op {
                RegistryOp::Put { user, device, .. } | RegistryOp::Del { user, device, .. } => {
                    (user.clone(), device.clone())
                }
                RegistryOp::Room { .. } => continue,
            };
            self.pending.entry(key).or_insert(op);
        }
    }

    /// A worker's room change: the node's set membership changes on its first worker's join
    /// and its last worker's leave.
    fn room(&mut self, room: &str, joined: bool) {
        let workers = self.rooms.entry(room.to_owned()).or_default();
        let before = *workers;
        *workers = if joined { before + 1 } else { before.saturating_sub(1) };
        let after = *workers;
        if after == 0 {
            self.rooms.remove(room);
        }
        if (before == 0) != (after == 0) {
            self.rooms_pending.insert(room.to_owned(), after > 0);
        }
    }

    /// Room set changes to write now (emptied): (room, whether this node has members).
    pub fn take_rooms(&mut self) -> Vec<(String, bool)> {
        self.rooms_pending.drain().collect()
    }

    /// Puts back room changes that failed, unless newer ones arrived meanwhile.
    pub fn restore_rooms(&mut self, rooms: Vec<(String, bool)>) {
        for (room, present) in rooms {
            self.rooms_pending.entry(room).or_insert(present);
        }
    }

    /// Every room this node has members in (for a full re-assert).
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// Every record this node owns, as Puts (for a full re-assert).
    pub fn mirror_ops(&self) -> Vec<RegistryOp> {
        self.mirror
            .iter()
            .map(|((user, device), location)| RegistryOp::Put {
                user: user.clone(),
                device: device.clone(),
                location: location.clone(),
            })
            .collect()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.rooms_pending.len()
    }

    pub fn records(&self) -> usize {
        self.mirror.len()
    }

    /// This node holds a record of `user`.
    pub fn holds_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Every user this node holds a record of.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(conn: u64) -> Location {
        Location { node_id: "n1".into(), node_epoch: 7, conn_id: conn, since_ms: 1, platform: "ios".into() }
    }

    fn put(device: &str, conn: u64) -> RegistryOp {
        RegistryOp::Put { user: "alice".into(), device: device.into(), location: loc(conn) }
    }

    fn del(device: &str, conn: u64) -> RegistryOp {
        RegistryOp::Del { user: "alice".into(), device: device.into(), location: loc(conn) }
    }

    #[test]
    fn location_round_trip() {
        assert_eq!(Location::parse(&loc(42).encode()), Some(loc(42)));
        for bad in ["", "n1|7|42|1", "n1|x|42|1|ios", "|7|42|1|ios", "n1|7|42|1|ios|extra"] {
            assert_eq!(Location::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn merges_per_device_and_cancels_put_then_del() {
        let mut b = Batcher::new(100);
        b.push(put("phone", 1));
        b.push(del("phone", 1));
        assert!(b.take().is_empty(), "written and removed before flush: nothing to send");
        b.push(put("phone", 2));
        b.push(put("phone", 3));
        b.push(put("pc", 4));
        let mut ops = b.take();
        ops.sort_by_key(|op| format!("{op:?}"));
        assert_eq!(ops, vec![put("pc", 4), put("phone", 3)]);
        assert_eq!(b.records(), 2);
        // A late close of an older connection does not touch the mirror's newer record.
        b.push(del("phone", 2));
        assert_eq!(b.records(), 2);
        assert_eq!(b.take(), vec![del("phone", 2)]);
    }

    #[test]
    fn room_sets_change_on_the_nodes_first_join_and_last_leave() {
        let mut b = Batcher::new(100);
        let room = |joined| RegistryOp::Room { room: "lobby".into(), joined };
        b.push(room(true));
        b.push(room(true)); // a second worker: no change for the node
        assert_eq!(b.take_rooms(), vec![("lobby".to_owned(), true)]);
        b.push(room(false));
        assert!(b.take_rooms().is_empty(), "one worker still has members");
        b.push(room(false));
        assert_eq!(b.take_rooms(), vec![("lobby".to_owned(), false)]);
        assert_eq!(b.rooms().count(), 0);
        // Joined and left between flushes: the last state is what gets written.
        b.push(room(true));
        b.push(room(false));
        assert_eq!(b.take_rooms(), vec![("lobby".to_owned(), false)]);
    }

    #[test]
    fn bounded_pending_counts_overflow_but_mirror_keeps_everything() {
        let mut b = Batcher::new(2);
        for (i, d) in ["a", "b", "c"].into_iter().enumerate() {
            b.push(put(d, i as u64));
        }
        assert_eq!(b.pending_len(), 2);
        assert_eq!(b.overflow, 1);
        assert_eq!(b.mirror_ops().len(), 3, "a re-assert still writes all three");
        let failed = b.take();
        b.push(put("a", 9));
        b.restore(failed);
        let ops = b.take();
        assert!(ops.contains(&put("a", 9)), "newer op wins over a restored one");
        assert_eq!(ops.len(), 2);
    }
}
