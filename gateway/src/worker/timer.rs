//! A coarse hashed timer wheel: one slot per tick, a connection id per armed timer.
//!
//! Arming costs a push onto a Vec; nothing happens per frame. A connection's deadline moves
//! with every inbound frame, but its wheel entry does not: when the slot fires, the worker
//! asks the session for its current deadline and re-arms if it lies ahead. Deadlines further
//! than the wheel spans are parked in the last slot and re-armed when it fires. Stale entries
//! (connections already gone) are skipped by the caller.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TimerWheel {
    tick: Duration,
    origin: Instant,
    /// Ticks up to and including this one have fired.
    cursor: u64,
    slots: Vec<Vec<u64>>,
}

impl TimerWheel {
    /// A wheel of `slots` slots of `tick` each, starting at `now`.
    pub fn new(tick: Duration, slots: usize, now: Instant) -> Self {
        TimerWheel {
            tick: tick.max(Duration::from_millis(1)),
            origin: now,
            cursor: 0,
            slots: vec![Vec::new(); slots.max(2)],
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.origin);
        (elapsed.as_nanos() / self.tick.as_nanos()) as u64
    }

    /// Arms a timer for `id` firing at the first tick at or after `deadline`.
    pub fn arm(&mut self, id: u64, deadline: Instant) {
        let horizon = self.cursor + self.slots.len() as u64 - 1;
        // Round up, so a timer never fires before its deadline.
        let at = self.tick_of(deadline) + 1;
        let slot = at.clamp(self.cursor + 1, horizon);
        let len = self.slots.len() as u64;
        if let Some(list) = self.slots.get_mut((slot % len) as usize) {
            list.push(id);
        }
    }

    /// Moves every id whose slot is due at `now` into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<u64>) {
        let target = self.tick_of(now);
        let len = self.slots.len() as u64;
        while self.cursor < target {
            self.cursor += 1;
            if let Some(list) = self.slots.get_mut((self.cursor % len) as usize) {
                due.append(list);
                // Give the slot's buffer back: kept, every slot would grow to the most
                // timers it ever held and keep that while the wheel turns (thousands of
                // slots, a slow climb in RSS over the first turn, measured in the soak).
                // The next timer in this slot allocates anew, once per slot per turn.
                *list = Vec::new();
            }
        }
    }

    /// Armed entries, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    /// Entries the slots have room for.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.slots.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_or_after_the_deadline_never_before() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(100);
        let mut wheel = TimerWheel::new(tick, 16, t0);
        wheel.arm(1, t0 + Duration::from_millis(250));
        wheel.arm(2, t0 + Duration::from_millis(50));
        let mut due = Vec::new();
        wheel.expire(t0 + Duration::from_millis(99), &mut due);
        assert!(due.is_empty());
        wheel.expire(t0 + Duration::from_millis(200), &mut due);
        assert_eq!(due, [2]);
        due.clear();
        wheel.expire(t0 + Duration::from_millis(299), &mut due);
        assert!(due.is_empty(), "tick 2 covers 200..300 ms; the 250 ms deadline fires at 300");
        wheel.expire(t0 + Duration::from_millis(300), &mut due);
        assert_eq!(due, [1]);
    }

    #[test]
    fn far_deadlines_park_in_the_last_slot() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(10);
        let mut wheel = TimerWheel::new(tick, 8, t0);
        wheel.arm(9, t0 + Duration::from_secs(60));
        let mut due = Vec::new();
        wheel.expire(t0 + Duration::from_millis(80), &mut due);
        assert_eq!(due, [9], "fires early at the horizon, for the caller to re-arm");
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn fired_slots_keep_no_memory() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(10);
        let mut wheel = TimerWheel::new(tick, 64, t0);
        for slot in 1..63u64 {
            for id in 0..10 {
                wheel.arm(slot * 100 + id, t0 + tick * slot as u32 - Duration::from_millis(1));
            }
        }
        let mut due = Vec::new();
        wheel.expire(t0 + tick * 64, &mut due);
        assert_eq!(due.len(), 620);
        assert_eq!(wheel.capacity(), 0, "a turned wheel holds what is armed, not the most it ever held");
    }
}
