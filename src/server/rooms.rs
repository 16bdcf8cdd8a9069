//! The room rules of the signaling server, as plain data (no sockets).
//!
//! The rules of the original design's server: a client is in at most one room;
//! a room holds at most two clients; the first to join gets `created`, the
//! second `joined` (and the first `new_peer`), a third `full`; relayed messages
//! go to the other member of the sender's room, never back to the sender;
//! `bye` removes the sender and is relayed to whoever remains. A client that
//! disconnects is removed silently (the original does not tell the other
//! member either; unlike it, we do not leave a ghost member behind).
//!
//! Limits a public server needs: total rooms, and joins per client per minute
//! (room names are unguessable, but nobody should be able to spin through
//! millions of them). A refused join is answered `full`: the client did not
//! join, which is all the protocol can say.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rooms: usize,
    pub joins_per_minute: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            joins_per_minute: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome<C> {
    /// The sender is the first member: reply `created`.
    Created,
    /// The sender is the second member: reply `joined`, tell `other` `new_peer`.
    Joined { other: C },
    /// Re-joining the room one is already in: reply as the room stands, tell nobody.
    AlreadyIn { alone: bool },
    /// Two members already: reply `full`.
    Full,
    /// Over a limit: reply `full`, and log why.
    Refused(&'static str),
}

#[derive(Debug)]
struct Client {
    room: Option<String>,
    joins: VecDeque<Instant>,
}

#[derive(Debug)]
pub struct RoomTable<C> {
    limits: Limits,
    rooms: HashMap<String, Vec<C>>,
    clients: HashMap<C, Client>,
}

impl<C: Clone + Eq + Hash> RoomTable<C> {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rooms: HashMap::new(),
            clients: HashMap::new(),
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn members(&self, room: &str) -> &[C] {
        self.rooms.get(room).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn room_of(&self, client: &C) -> Option<&str> {
        self.clients.get(client).and_then(|c| c.room.as_deref())
    }

    pub fn join(&mut self, client: C, room: &str, now: Instant) -> JoinOutcome<C> {
        let entry = self.clients.entry(client.clone()).or_insert(Client {
            room: None,
            joins: VecDeque::new(),
        });
        while entry
            .joins
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            entry.joins.pop_front();
        }
        if entry.joins.len() >= self.limits.joins_per_minute {
            return JoinOutcome::Refused("too many joins from this client in the last minute");
        }
        entry.joins.push_back(now);
        if entry.room.as_deref() == Some(room) {
            return JoinOutcome::AlreadyIn {
                alone: self.members(room).len() == 1,
            };
        }
        let members = self.rooms.get(room).map_or(0, Vec::len);
        if members >= 2 {
            return JoinOutcome::Full;
        }
        if members == 0 && self.rooms.len() >= self.limits.max_rooms {
            return JoinOutcome::Refused("the server holds its maximum number of rooms");
        }
        // One room per client: joining another leaves the previous one.
        self.leave_current(&client);
        let list = self.rooms.entry(room.to_string()).or_default();
        list.push(client.clone());
        let outcome = match list.first() {
            Some(first) if list.len() == 2 => JoinOutcome::Joined {
                other: first.clone(),
            },
            _ => JoinOutcome::Created,
        };
        if let Some(c) = self.clients.get_mut(&client) {
            c.room = Some(room.to_string());
        }
        outcome
    }

    /// The other member of the sender's room, for relaying.
    pub fn others(&self, client: &C) -> Vec<C> {
        match self.room_of(client) {
            Some(room) => self
                .members(room)
                .iter()
                .filter(|m| *m != client)
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    /// `bye`: leaves the sender's room. Returns the room and who remains.
    pub fn bye(&mut self, client: &C) -> Option<(String, Vec<C>)> {
        let room = self.room_of(client)?.to_string();
        self.leave_current(client);
        Some((room.clone(), self.members(&room).to_vec()))
    }

    /// The client is gone: forget it.
    pub fn disconnect(&mut self, client: &C) {
        self.leave_current(client);
        self.clients.remove(client);
    }

    fn leave_current(&mut self, client: &C) {
        let Some(room) = self.clients.get_mut(client).and_then(|c| c.room.take()) else {
            return;
        };
        if let Some(list) = self.rooms.get_mut(&room) {
            list.retain(|m| m != client);
            if list.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RoomTable<u32> {
        RoomTable::new(Limits::default())
    }

    #[test]
    fn created_joined_full() {
        let (mut t, now) = (table(), Instant::now());
        assert_eq!(t.join(1, "r", now), JoinOutcome::Created);
        assert_eq!(t.join(2, "r", now), JoinOutcome::Joined { other: 1 });
        assert_eq!(t.join(3, "r", now), JoinOutcome::Full);
        assert_eq!(t.members("r"), &[1, 2]);
        assert_eq!(t.room_of(&3), None, "a refused client is in no room");
    }

    #[test]
    fn relays_go_to_the_other_member_only() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, "r", now);
        assert!(t.others(&1).is_empty());
        t.join(2, "r", now);
        assert_eq!(t.others(&1), [2]);
        assert_eq!(t.others(&2), [1]);
        assert!(t.others(&9).is_empty(), "not in a room: relayed to nobody");
    }

    #[test]
    fn bye_leaves_and_names_who_remains_and_empty_rooms_vanish() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, "r", now);
        t.join(2, "r", now);
        assert_eq!(t.bye(&2), Some(("r".to_string(), vec![1])));
        assert_eq!(t.bye(&1), Some(("r".to_string(), vec![])));
        assert_eq!(t.room_count(), 0);
        assert_eq!(t.bye(&1), None);
        // The room name is free again: a new ring with the same name starts fresh.
        assert_eq!(t.join(3, "r", now), JoinOutcome::Created);
    }

    #[test]
    fn a_disconnected_client_leaves_no_ghost() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, "r", now);
        t.join(2, "r", now);
        t.disconnect(&2);
        assert_eq!(t.members("r"), &[1]);
        // The viewer reloads the page: it gets back in, the doorbell hears new_peer.
        assert_eq!(t.join(4, "r", now), JoinOutcome::Joined { other: 1 });
    }

    #[test]
    fn one_room_per_client() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, "a", now);
        assert_eq!(t.join(1, "b", now), JoinOutcome::Created);
        assert_eq!(t.room_count(), 1);
        assert_eq!(t.room_of(&1), Some("b"));
        assert_eq!(t.join(1, "b", now), JoinOutcome::AlreadyIn { alone: true });
    }

    #[test]
    fn limits_refuse_with_a_reason() {
        let now = Instant::now();
        let mut t = RoomTable::new(Limits {
            max_rooms: 2,
            joins_per_minute: 3,
        });
        t.join(1, "a", now);
        t.join(2, "b", now);
        assert!(
            matches!(t.join(3, "c", now), JoinOutcome::Refused(r) if r.contains("maximum number of rooms"))
        );
        assert_eq!(
            t.join(3, "a", now),
            JoinOutcome::Joined { other: 1 },
            "existing rooms still fill"
        );
        let mut t = RoomTable::new(Limits {
            max_rooms: 100,
            joins_per_minute: 3,
        });
        for room in ["x", "y", "z"] {
            assert_eq!(t.join(4, room, now), JoinOutcome::Created);
        }
        assert!(
            matches!(t.join(4, "w", now), JoinOutcome::Refused(r) if r.contains("too many joins"))
        );
        assert_eq!(
            t.join(4, "w", now + Duration::from_secs(61)),
            JoinOutcome::Created,
            "the window slides"
        );
    }
}
