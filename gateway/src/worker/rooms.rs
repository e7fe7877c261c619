//! A worker's room index: which of its connections joined which room.

use std::rc::Rc;

use super::state::Worker;

impl Worker {
    pub fn join_room(&mut self, id: u64, room: &str) {
        // Only authenticated connections are known to backends, so only they join rooms.
        let Some(identity) = self.conns.get_mut(&id).and_then(|c| c.identity.as_mut()) else { return };
        let room: Rc<str> = self.rooms.get_key_value(room).map_or_else(|| Rc::from(room), |(k, _)| k.clone());
        let members = self.rooms.entry(room.clone()).or_default();
        let first = members.is_empty();
        if members.insert(id) {
            identity.rooms.get_or_insert_with(Box::default).push(room.clone());
        }
        if first {
            self.room_changed(&room, true);
        }
    }

    pub fn leave_room(&mut self, id: u64, room: &str) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                self.rooms.remove(room);
                self.room_changed(room, false);
            }
        }
        if let Some(rooms) = self.conns.get_mut(&id).and_then(|c| c.identity.as_mut()).and_then(|i| i.rooms.as_mut()) {
            rooms.retain(|r| &**r != room);
        }
    }
}

impl Worker {
    /// This worker's first member joined `room`, or its last left: the registry keeps, per
    /// room, the nodes with members, so room pushes from other nodes reach only those.
    fn room_changed(&self, room: &str, joined: bool) {
        let Some(registry) = &self.registry else { return };
        let op = crate::registry::RegistryOp::Room { room: room.to_owned(), joined };
        if registry.tx.try_send(op).is_err() {
            self.metrics.registry_dropped.increment(1);
        }
    }
}
