//! The room rules of the signaling server, as plain data (no sockets).
//!
//! The rules of the original design's server: a client is in at most one room;
//! a room holds at most two clients; the first to join gets `created`, the
//! second `joined` (and the first `new_peer`), a third `full`; relayed messages
//! go to the other member of the sender's room, never back to the sender;
//! `bye` is relayed to whoever remains. Unlike the original, `bye` ends the
//! room for everyone (the original removes only the sender): a ring link
//! works only while its ring is live, and a viewer whose connection is dead
//! (it will never read the relayed `bye`) must not keep a finished call's
//! room open for the next one to walk into.
//!
//! Seats, our addition: a viewer may join with a seat token (a random value
//! its page keeps for the tab). When its connection drops without `bye` (the
//! page reloads, the phone moves from Wi-Fi to mobile data), its place is
//! kept for the rejoin grace, and a join with the same token takes it back,
//! even while the old connection still looks alive (a phone's old TCP
//! connection is not closed, it just goes silent). Anyone else is still told
//! `full`. A member without a seat (the doorbell, the original page) is
//! removed at once when it disconnects, as before.
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
    /// How long the seat of a viewer whose connection dropped is kept.
    pub rejoin_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_rooms_per_address: 20,
            joins_per_minute: 30,
            rejoin_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome<C> {
    /// The sender is the first member: reply `created`.
    Created,
    /// The sender is the second member: reply `joined`, tell `other` `new_peer`.
    Joined { other: C },
    /// The sender took back its seat: reply `joined`, tell `other` (if
    /// present) `new_peer`, and drop `replaced`, the seat's old connection.
    Rejoined {
        other: Option<C>,
        replaced: Option<C>,
    },
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
struct Member<C> {
    /// `None` while away (connection dropped, seat kept).
    client: Option<C>,
    seat: Option<String>,
    /// When an away member's seat is given up.
    away_until: Option<Instant>,
}

#[derive(Debug)]
struct Room<C> {
    members: Vec<Member<C>>,
    /// Where the client that opened it connected from.
    opened_by: IpAddr,
}

impl<C: PartialEq + Clone> Room<C> {
    fn present(&self) -> impl Iterator<Item = &C> {
        self.members.iter().filter_map(|m| m.client.as_ref())
    }
}

/// A seat given up after its grace: who is told `bye`, in which room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<C> {
    pub room: String,
    pub remaining: Vec<C>,
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

    /// The members connected now (not those away).
    pub fn members(&self, room: &str) -> Vec<C> {
        self.rooms
            .get(room)
            .map(|r| r.present().cloned().collect())
            .unwrap_or_default()
    }

    /// Members, away ones included.
    fn seats(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    pub fn room_of(&self, client: &C) -> Option<&str> {
        self.clients.get(client).and_then(|c| c.room.as_deref())
    }

    /// `client`, connected from `from`, asks to join `room`, holding `seat`
    /// if its page gave one.
    pub fn join(
        &mut self,
        client: C,
        from: IpAddr,
        room: &str,
        seat: Option<&str>,
        now: Instant,
    ) -> JoinOutcome<C> {
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
        if let Some(seat) = seat {
            if let Some(outcome) = self.take_seat(&client, room, seat) {
                return outcome;
            }
        }
        let members = self.seats(room);
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
        entry.members.push(Member {
            client: Some(client.clone()),
            seat: seat.map(str::to_string),
            away_until: None,
        });
        let outcome = match entry.members.first().and_then(|m| m.client.clone()) {
            Some(first) if entry.members.len() == 2 => JoinOutcome::Joined { other: first },
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

    /// `client` presents `seat` for `room`: if a member holds it, the client
    /// takes its place (the old connection, if still there, loses it).
    fn take_seat(&mut self, client: &C, room: &str, seat: &str) -> Option<JoinOutcome<C>> {
        let r = self.rooms.get(room)?;
        let i = r
            .members
            .iter()
            .position(|m| m.seat.as_deref() == Some(seat))?;
        self.leave_current(client);
        let r = self.rooms.get_mut(room)?;
        let member = &mut r.members[i];
        let replaced = member.client.replace(client.clone());
        member.away_until = None;
        let other = r
            .members
            .iter()
            .enumerate()
            .find(|(j, _)| *j != i)
            .and_then(|(_, m)| m.client.clone());
        if let Some(old) = &replaced {
            if let Some(c) = self.clients.get_mut(old) {
                c.room = None;
            }
        }
        if let Some(c) = self.clients.get_mut(client) {
            c.room = Some(room.to_string());
        }
        Some(JoinOutcome::Rejoined { other, replaced })
    }

    /// The other member of the sender's room, for relaying.
    pub fn others(&self, client: &C) -> Vec<C> {
        match self.room_of(client) {
            Some(room) => self
                .members(room)
                .into_iter()
                .filter(|m| m != client)
                .collect(),
            None => Vec::new(),
        }
    }

    /// `bye`: the call is over, the room goes, seats and all. Returns the
    /// room and who else was connected in it (to be told `bye`).
    pub fn bye(&mut self, client: &C) -> Option<(String, Vec<C>)> {
        let room = self.room_of(client)?.to_string();
        let others = self.others(client);
        self.leave_current(client);
        for other in &others {
            self.leave_current(other);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            // Only seats of members who are away are left.
            r.members.clear();
        }
        self.drop_if_nobody_left(&room);
        Some((room, others))
    }

    /// The client is gone. A member with a seat is kept away until the
    /// grace is over (returns when, to check then); others are removed.
    pub fn disconnect(&mut self, client: &C, now: Instant) -> Option<Instant> {
        let room = self.room_of(client).map(str::to_string);
        self.clients.remove(client);
        let room = room?;
        let grace = self.limits.rejoin_grace;
        let r = self.rooms.get_mut(&room)?;
        let i = r
            .members
            .iter()
            .position(|m| m.client.as_ref() == Some(client))?;
        if r.members[i].seat.is_some() && !grace.is_zero() {
            r.members[i].client = None;
            let until = now + grace;
            r.members[i].away_until = Some(until);
            self.drop_if_nobody_left(&room);
            Some(until)
        } else {
            r.members.remove(i);
            self.drop_if_nobody_left(&room);
            None
        }
    }

    /// Gives up the seats whose grace is over; who remains is told `bye`.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired<C>> {
        let mut expired = Vec::new();
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            let before = r.members.len();
            r.members
                .retain(|m| m.away_until.is_none_or(|until| until > now));
            if r.members.len() < before {
                let remaining = r.present().cloned().collect();
                expired.push(Expired {
                    room: room.clone(),
                    remaining,
                });
                self.drop_if_nobody_left(&room);
            }
        }
        expired
    }

    fn leave_current(&mut self, client: &C) {
        let Some(room) = self.clients.get_mut(client).and_then(|c| c.room.take()) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.retain(|m| m.client.as_ref() != Some(client));
        }
        self.drop_if_nobody_left(&room);
    }

    /// A room with nobody connected goes (a seat kept for someone away
    /// does not keep a room whose doorbell has left).
    fn drop_if_nobody_left(&mut self, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        if r.present().next().is_some() {
            return;
        }
        let from = r.opened_by;
        self.rooms.remove(room);
        if let Some(n) = self.opened.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.opened.remove(&from);
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
        assert_eq!(t.join(1, HOME, "r", None, now), JoinOutcome::Created);
        assert_eq!(
            t.join(2, HOME, "r", None, now),
            JoinOutcome::Joined { other: 1 }
        );
        assert_eq!(t.join(3, HOME, "r", None, now), JoinOutcome::Full);
        assert_eq!(t.members("r"), [1, 2]);
        assert_eq!(t.room_of(&3), None, "a refused client is in no room");
    }

    #[test]
    fn relays_go_to_the_other_member_only() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        assert!(t.others(&1).is_empty());
        t.join(2, HOME, "r", None, now);
        assert_eq!(t.others(&1), [2]);
        assert_eq!(t.others(&2), [1]);
        assert!(t.others(&9).is_empty(), "not in a room: relayed to nobody");
    }

    #[test]
    fn bye_leaves_and_names_who_remains_and_empty_rooms_vanish() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", None, now);
        assert_eq!(t.bye(&2), Some(("r".to_string(), vec![1])));
        assert_eq!(t.room_count(), 0, "bye ends the room for everyone");
        assert_eq!(t.room_of(&1), None);
        assert_eq!(t.bye(&1), None);
        // The room name is free again: a new ring with the same name starts fresh.
        assert_eq!(t.join(3, HOME, "r", None, now), JoinOutcome::Created);
    }

    #[test]
    fn a_disconnected_client_leaves_no_ghost() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", None, now);
        t.disconnect(&2, now);
        assert_eq!(t.members("r"), [1]);
        // The viewer reloads the page: it gets back in, the doorbell hears new_peer.
        assert_eq!(
            t.join(4, HOME, "r", None, now),
            JoinOutcome::Joined { other: 1 }
        );
    }

    #[test]
    fn one_room_per_client() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "a", None, now);
        assert_eq!(t.join(1, HOME, "b", None, now), JoinOutcome::Created);
        assert_eq!(t.room_count(), 1);
        assert_eq!(t.room_of(&1), Some("b"));
        assert_eq!(
            t.join(1, HOME, "b", None, now),
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
        t.join(1, HOME, "a", None, now);
        t.join(2, HOME, "b", None, now);
        assert!(
            matches!(t.join(3, HOME, "c", None, now), JoinOutcome::Refused(r) if r.contains("maximum number of rooms"))
        );
        assert_eq!(
            t.join(3, HOME, "a", None, now),
            JoinOutcome::Joined { other: 1 },
            "existing rooms still fill"
        );
        let mut t = RoomTable::new(Limits {
            max_rooms: 100,
            joins_per_minute: 3,
            ..Limits::default()
        });
        for room in ["x", "y", "z"] {
            assert_eq!(t.join(4, HOME, room, None, now), JoinOutcome::Created);
        }
        assert!(
            matches!(t.join(4, HOME, "w", None, now), JoinOutcome::Refused(r) if r.contains("too many joins"))
        );
        assert_eq!(
            t.join(4, HOME, "w", None, now + Duration::from_secs(61)),
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
        assert_eq!(t.join(1, abuser, "a", None, now), JoinOutcome::Created);
        assert_eq!(t.join(2, abuser, "b", None, now), JoinOutcome::Created);
        assert!(
            matches!(t.join(3, abuser, "c", None, now), JoinOutcome::Refused(r) if r.contains("from this address"))
        );
        assert_eq!(
            t.join(9, HOME, "door", None, now),
            JoinOutcome::Created,
            "others still open rooms"
        );
        assert_eq!(
            t.join(3, abuser, "a", None, now),
            JoinOutcome::Joined { other: 1 },
            "joining an existing room opens none"
        );
        // Moving one's own room does not count twice.
        assert_eq!(t.join(2, abuser, "b2", None, now), JoinOutcome::Created);
        t.disconnect(&1, now);
        t.disconnect(&3, now);
        assert_eq!(
            t.join(4, abuser, "d", None, now),
            JoinOutcome::Created,
            "room a is gone: a slot is free"
        );
    }

    const SEAT: Option<&str> = Some("seat-of-the-owner");

    #[test]
    fn a_viewer_whose_connection_dropped_gets_its_seat_back_and_nobody_else_does() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        assert_eq!(
            t.join(2, HOME, "r", SEAT, now),
            JoinOutcome::Joined { other: 1 }
        );
        // The page reloads: the old connection closes, the seat is kept.
        let until = t.disconnect(&2, now).expect("a seat is kept");
        assert_eq!(until, now + Limits::default().rejoin_grace);
        assert_eq!(t.members("r"), [1], "away members are not relayed to");
        assert_eq!(t.join(3, HOME, "r", None, now), JoinOutcome::Full);
        assert_eq!(
            t.join(4, HOME, "r", Some("another-tab"), now),
            JoinOutcome::Full
        );
        assert_eq!(
            t.join(5, HOME, "r", SEAT, now),
            JoinOutcome::Rejoined {
                other: Some(1),
                replaced: None
            }
        );
        assert_eq!(t.members("r"), [1, 5]);
        assert_eq!(t.others(&1), [5]);
    }

    #[test]
    fn a_seat_is_taken_back_from_a_connection_that_still_looks_alive() {
        // A phone moved to mobile data: its old connection is silent, not closed.
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", SEAT, now);
        let other_network = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(
            t.join(3, other_network, "r", SEAT, now),
            JoinOutcome::Rejoined {
                other: Some(1),
                replaced: Some(2)
            }
        );
        assert_eq!(t.room_of(&2), None, "the old connection lost its place");
        assert!(t.others(&2).is_empty());
        assert_eq!(t.members("r"), [1, 3]);
        assert_eq!(
            t.disconnect(&2, now),
            None,
            "the old one closing changes nothing"
        );
        assert_eq!(t.members("r"), [1, 3]);
    }

    #[test]
    fn a_seat_is_given_up_after_the_grace_and_the_doorbell_is_told() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", SEAT, now);
        let until = t.disconnect(&2, now).unwrap();
        assert!(t.expire(until - Duration::from_millis(1)).is_empty());
        assert_eq!(
            t.expire(until),
            [Expired {
                room: "r".into(),
                remaining: vec![1]
            }]
        );
        assert_eq!(
            t.join(3, HOME, "r", SEAT, now),
            JoinOutcome::Joined { other: 1 },
            "the seat is gone: an ordinary join"
        );
    }

    #[test]
    fn bye_ends_the_room_seats_and_all() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", SEAT, now);
        assert_eq!(t.bye(&2), Some(("r".to_string(), vec![1])));
        assert_eq!(t.room_count(), 0);
        assert_eq!(
            t.join(3, HOME, "r", SEAT, now),
            JoinOutcome::Created,
            "the link of a ring that is over opens nothing live"
        );
        // The doorbell leaves while the viewer is away: its seat goes too.
        t.join(11, HOME, "q", None, now);
        t.join(12, HOME, "q", SEAT, now);
        t.disconnect(&12, now);
        assert_eq!(t.bye(&11), Some(("q".to_string(), vec![])));
        assert_eq!(t.join(13, HOME, "q", SEAT, now), JoinOutcome::Created);
        // ... or while the viewer's dead connection still looks alive (it will
        // never read the relayed bye): nobody walks into the finished call.
        t.join(21, HOME, "p", None, now);
        t.join(22, HOME, "p", SEAT, now);
        assert_eq!(t.bye(&21), Some(("p".to_string(), vec![22])));
        assert_eq!(t.room_of(&22), None);
        assert_eq!(t.join(23, HOME, "p", None, now), JoinOutcome::Created);
    }

    #[test]
    fn without_a_seat_or_a_grace_a_dropped_member_goes_at_once() {
        let (mut t, now) = (table(), Instant::now());
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", None, now);
        assert_eq!(t.disconnect(&2, now), None);
        assert_eq!(t.members("r"), [1]);
        let mut t = RoomTable::new(Limits {
            rejoin_grace: Duration::ZERO,
            ..Limits::default()
        });
        t.join(1, HOME, "r", None, now);
        t.join(2, HOME, "r", SEAT, now);
        assert_eq!(t.disconnect(&2, now), None);
        assert_eq!(
            t.join(3, HOME, "r", None, now),
            JoinOutcome::Joined { other: 1 }
        );
    }
}
