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
//! Limits a public server needs: total rooms, rooms opened from one address
//! (one abuser must not use up the rooms of everyone else), and joins per
//! client per minute (room names are unguessable, but nobody should be able
//! to spin through millions of them). A refused join is answered `full`: the
//! client did not join, which is all the protocol can say.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rooms: usize,
    /// Rooms opened from one address that exist at once.
    pub max_rooms_per_address: usize,
    pub joins_per_minute: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_rooms_per_address: 20,
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
struct Room<C> {
    members: Vec<C>,
    /// Where the client that opened it connected from.
    opened_by: IpAddr,
}

#[derive(Debug)]
pub struct RoomTable<C> {
    limits: Limits,
    rooms: HashMap<String, Room<C>>,
    clients: HashMap<C, Client>,
    /// Rooms in existence per opening address.
    opened: HashMap<IpAddr, usize>,
}

impl<C: Clone + Eq + Hash> RoomTable<C> {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rooms: HashMap::new(),
            clients: HashMap::new(),
            opened: HashMap::new(),
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn members(&self, room: &str) -> &[C] {
        self.rooms.get(room).map_or(&[], |r| r.members.as_slice())
    }

    pub fn room_of(&self, client: &C) -> Option<&str> {
        self.clients.get(client).and_then(|c| c.room.as_deref())
    }

    /// `client`, connected from `from`, asks to join `room`.
    pub fn join(&mut self, client: C, from: IpAddr, room: &str, now: Instant) -> JoinOutcome<C> {
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
        let members = self.members(room).len();
        if members >= 2 {
            return JoinOutcome::Full;
        }
        if members == 0 {
            if self.rooms.len() >= self.limits.max_rooms {
                return JoinOutcome::Refused("the server holds its maximum number of rooms");
            }
            // A client re-opening from the room it leaves does not count twice.
            let own = self
                .room_of(&client)
                .and_then(|r| self.rooms.get(r))
                .is_some_and(|r| r.opened_by == from && r.members.len() == 1);
            let opened = self.opened.get(&from).copied().unwrap_or(0);
            if opened >= self.limits.max_rooms_per_address && !own {
                return JoinOutcome::Refused("too many rooms opened from this address");
            }
        }
        // One room per client: joining another leaves the previous one.
        self.leave_current(&client);
        let entry = self.rooms.entry(room.to_string()).or_insert_with(|| Room {
            members: Vec::new(),
            opened_by: from,
        });
        entry.members.push(client.clone());
        let outcome = match entry.members.first() {
            Some(first) if entry.members.len() == 2 => JoinOutcome::Joined {
                other: first.clone(),
            },
            _ => JoinOutcome::Created,
        };
        if outcome == JoinOutcome::Created {
            *self.opened.entry(from).or_insert(0) += 1;
        }
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
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.retain(|m| m != client);
            if r.members.is_empty() {
                let from = r.opened_by;
                self.rooms.remove(&room);
                if let Some(n) = self.opened.get_mut(&from) {
                    *n -= 1;
                    if *n == 0 {
                        self.opened.remove(&from);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn table() -> RoomTable<u32> {
        RoomTable::new(Limits::default())
    }

    #[test]
    fn created_joined_full() {
        let (mut t, now) = (table(), Instant::now());
        assert_eq!(t.join(1, HOME, "r", now), JoinOutcome::Created);
        assert_eq!(t.join(2, HOME, "r", now), JoinOutcome::Joined { other: 1 });
        assert_eq!(t.join(3, HOME, "r", now), JoinOutcome::Full);
        assert_eq!(t.members("r"), &[1, 2]);
        assert_eq!(t.room_of(&3), None, "a refused client is in no room");
    }

    #[test]
    fn relays_go_to_the_other_member_only() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", now);
        assert!(t.others(&1).is_empty());
        t.join(2, HOME, "r", now);
        assert_eq!(t.others(&1), [2]);
        assert_eq!(t.others(&2), [1]);
        assert!(t.others(&9).is_empty(), "not in a room: relayed to nobody");
    }

    #[test]
    fn bye_leaves_and_names_who_remains_and_empty_rooms_vanish() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", now);
        t.join(2, HOME, "r", now);
        assert_eq!(t.bye(&2), Some(("r".to_string(), vec![1])));
        assert_eq!(t.bye(&1), Some(("r".to_string(), vec![])));
        assert_eq!(t.room_count(), 0);
        assert_eq!(t.bye(&1), None);
        // The room name is free again: a new ring with the same name starts fresh.
        assert_eq!(t.join(3, HOME, "r", now), JoinOutcome::Created);
    }

    #[test]
    fn a_disconnected_client_leaves_no_ghost() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", now);
        t.join(2, HOME, "r", now);
        t.disconnect(&2);
        assert_eq!(t.members("r"), &[1]);
        // The viewer reloads the page: it gets back in, the doorbell hears new_peer.
        assert_eq!(t.join(4, HOME, "r", now), JoinOutcome::Joined { other: 1 });
    }

    #[test]
    fn one_room_per_client() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "a", now);
        assert_eq!(t.join(1, HOME, "b", now), JoinOutcome::Created);
        assert_eq!(t.room_count(), 1);
        assert_eq!(t.room_of(&1), Some("b"));
        assert_eq!(
            t.join(1, HOME, "b", now),
            JoinOutcome::AlreadyIn { alone: true }
        );
    }

    #[test]
    fn limits_refuse_with_a_reason() {
        let now = Instant::now();
        let mut t = RoomTable::new(Limits {
            max_rooms: 2,
            joins_per_minute: 3,
            ..Limits::default()
        });
        t.join(1, HOME, "a", now);
        t.join(2, HOME, "b", now);
        assert!(
            matches!(t.join(3, HOME, "c", now), JoinOutcome::Refused(r) if r.contains("maximum number of rooms"))
        );
        assert_eq!(
            t.join(3, HOME, "a", now),
            JoinOutcome::Joined { other: 1 },
            "existing rooms still fill"
        );
        let mut t = RoomTable::new(Limits {
            max_rooms: 100,
            joins_per_minute: 3,
            ..Limits::default()
        });
        for room in ["x", "y", "z"] {
            assert_eq!(t.join(4, HOME, room, now), JoinOutcome::Created);
        }
        assert!(
            matches!(t.join(4, HOME, "w", now), JoinOutcome::Refused(r) if r.contains("too many joins"))
        );
        assert_eq!(
            t.join(4, HOME, "w", now + Duration::from_secs(61)),
            JoinOutcome::Created,
            "the window slides"
        );
    }

    /// One address cannot take the rooms of everyone else; its rooms count
    /// again once they are gone.
    #[test]
    fn rooms_per_address_are_limited_and_freed() {
        let now = Instant::now();
        let abuser = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        let mut t = RoomTable::new(Limits {
            max_rooms_per_address: 2,
            ..Limits::default()
        });
        assert_eq!(t.join(1, abuser, "a", now), JoinOutcome::Created);
        assert_eq!(t.join(2, abuser, "b", now), JoinOutcome::Created);
        assert!(
            matches!(t.join(3, abuser, "c", now), JoinOutcome::Refused(r) if r.contains("from this address"))
        );
        assert_eq!(
            t.join(9, HOME, "door", now),
            JoinOutcome::Created,
            "others still open rooms"
        );
        assert_eq!(
            t.join(3, abuser, "a", now),
            JoinOutcome::Joined { other: 1 },
            "joining an existing room opens none"
        );
        // Moving one's own room does not count twice.
        assert_eq!(t.join(2, abuser, "b2", now), JoinOutcome::Created);
        t.disconnect(&1);
        t.disconnect(&3);
        assert_eq!(
            t.join(4, abuser, "d", now),
            JoinOutcome::Created,
            "room a is gone: a slot is free"
        );
    }
}
