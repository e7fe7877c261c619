//! A worker's room index: which of its connections joined which room.

use std::rc::Rc;

use super::state::Worker;

impl Worker {
    pub fn join_room(&mut self, id: u64, room: &str) {
        // Only authenticated connections are known to backends, so only they join rooms.
        let Some(identity) = self.conns.get_mut(&id).and_then(|c| c.identity.as_mut()) else { return };
        let room: Rc<str> = self.rooms.get_key_value(room).map_or_else(|| Rc::from(room), |(k, _)| k.clone());
        if self.rooms.entry(room.clone()).or_default().insert(id) {
            identity.rooms.get_or_insert_with(Box::default).push(room);
        }
    }

    pub fn leave_room(&mut self, id: u64, room: &str) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        if let Some(rooms) = self.conns.get_mut(&id).and_then(|c| c.identity.as_mut()).and_then(|i| i.rooms.as_mut()) {
            rooms.retain(|r| &**r != room);
        }
    }
}
