//! Room management end to end through one Channel server and a real chat
//! store core: who may create, find, enter and change rooms, follows and
//! new-content notices, and who is online across the pool.

use super::*;
use crate::chat::chat_store::ChatStore;
use crate::chat::pool::Category;
use crate::core::protocol::chat::ChatMsg;
use crate::core::protocol::chat::ChatTimer;
use crate::core::protocol::chat::{Privacy, RoomQuery};
use crate::testkit::Harness;

struct Pool {
    ch: Harness<Channel>,
    db: Harness<ChatStore>,
}

fn users(list: &[&str]) -> BTreeSet<UserId> {
    list.iter().map(|u| (*u).into()).collect()
}

fn pool() -> Arc<ChatPool> {
    let mut categories = BTreeMap::new();
    categories.insert(
        "corp".to_string(),
        Category {
            allowed: users(&["*"]),
            denied: users(&["eve"]),
            creators: users(&["ann"]),
        },
    );
    let mut rooms: BTreeMap<RoomId, Room> = BTreeMap::new();
    rooms.insert(
        "general".into(),
        Room {
            members: users(&["ann", "bob"]),
            category: "corp".into(),
            ..Default::default()
        },
    );
    Arc::new(ChatPool {
        channels: vec!["ch1".into(), "ch2".into()],
        lookups: vec![],
        store: "chatdb".into(),
        rooms,
        categories,
        token_key: b"k".to_vec(),
        ..Default::default()
    })
}

fn store() -> Addr {
    Addr::new("chatdb", ActorKind::ChatStore)
}

fn ch1() -> Addr {
    Addr::new("ch1", ActorKind::Channel)
}

impl Pool {
    fn new() -> Pool {
        let pool = pool();
        let mut db = Harness::new(store(), ChatStore::new("chatdb", pool.rooms.clone()));
        db.start(Recovered::new());
        let ch = Harness::new(ch1(), Channel::new("ch1", pool, Settings::default()));
        let mut p = Pool { ch, db };
        let sent = p.ch.start(Recovered::new());
        p.settle(sent);
        p
    }

    /// Carries store requests to the store and its answers back, until
    /// only messages to others remain.
    fn settle(&mut self, mut sent: Vec<(Addr, Msg)>) -> Vec<(Addr, Msg)> {
        let mut out = Vec::new();
        while !sent.is_empty() {
            let mut next = Vec::new();
            for (to, msg) in sent {
                if to == store() {
                    for (back, answer) in self.db.msg(ch1(), msg) {
                        assert_eq!(back, ch1());
                        next.extend(self.ch.msg(store(), answer));
                    }
                } else {
                    out.push((to, msg));
                }
            }
            sent = next;
        }
        out
    }

    /// Everything sent, to anyone, once client `c`'s `msg` has settled.
    fn send(&mut self, c: &str, msg: Msg) -> Vec<(Addr, Msg)> {
        let sent = self.ch.msg(Addr::new(c, ActorKind::Client), msg);
        self.settle(sent)
    }

    /// What client `c` gets for `msg` (messages to other servers dropped).
    fn ask(&mut self, c: &str, msg: Msg) -> Vec<Msg> {
        let sent = self.send(c, msg);
        self.to(c, sent)
    }

    fn to(&self, c: &str, sent: Vec<(Addr, Msg)>) -> Vec<Msg> {
        sent.into_iter()
            .filter(|(a, _)| a.node == c)
            .map(|(_, m)| m)
            .collect()
    }

    fn hello(&mut self, c: &str, user: &str) -> Vec<Msg> {
        self.ask(c, Msg::Chat(ChatMsg::ChatHello { user: user.into() }))
    }

    fn create(&mut self, c: &str, room: &str, info: Room) -> Vec<Msg> {
        self.ask(c, save(room, info, true))
    }

    fn join(&mut self, c: &str, user: &str, room: &str) -> Vec<Msg> {
        self.ask(
            c,
            Msg::Chat(ChatMsg::ChatJoin {
                user: user.into(),
                room: room.into(),
                after: 0,
            }),
        )
    }

    fn find(&mut self, c: &str, query: RoomQuery) -> Vec<String> {
        match &self.ask(c, Msg::Chat(ChatMsg::RoomFind { query }))[..] {
            [Msg::Chat(ChatMsg::RoomFound { rooms, .. })] => {
                rooms.iter().map(|r| r.name.to_string()).collect()
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A client's request to save the room `room` as `info`, or to create it.
fn save(room: &str, info: impl Into<Box<Room>>, create: bool) -> Msg {
    Msg::Chat(ChatMsg::RoomSave {
        room: room.into(),
        info: info.into(),
        create,
    })
}

fn rejected(msgs: &[Msg]) -> Option<ChatReject> {
    msgs.iter().find_map(|m| match m {
        Msg::Chat(ChatMsg::ChatRejected { reason, .. }) => Some(reason.clone()),
        _ => None,
    })
}

fn joined(msgs: &[Msg]) -> bool {
    msgs.iter()
        .any(|m| matches!(m, Msg::Chat(ChatMsg::ChatJoined { .. })))
}

fn room(privacy: Privacy, members: &[&str]) -> Room {
    Room {
        members: users(members),
        privacy,
        category: "corp".into(),
        ..Default::default()
    }
}

#[test]
fn only_creators_of_the_category_create_rooms_and_the_creator_manages_them() {
    let mut p = Pool::new();
    p.hello("user:bob/c", "bob");
    let r = p.create("user:bob/c", "bobs", room(Privacy::Open, &[]));
    assert_eq!(rejected(&r), Some(ChatReject::NotAllowed));
    p.hello("user:ann/c", "ann");
    // No category: rooms without one come from the configuration only.
    let r = p.create("user:ann/c", "loose", Room::default());
    assert_eq!(rejected(&r), Some(ChatReject::NotAllowed));
    let info = room(Privacy::Closed, &["bob"]);
    let sent = p.send("user:ann/c", save("deals", info, true));
    assert!(sent.iter().any(|(a, m)| a.node == "user:ann/c"
        && matches!(m, Msg::Chat(ChatMsg::RoomSaved { version: 1, .. }))));
    // The other server hears of it at once.
    assert!(sent
        .iter()
        .any(|(a, m)| a.node == "ch2" && matches!(m, Msg::Chat(ChatMsg::RoomChanged { .. }))));
    let r = p.create("user:ann/c", "deals", room(Privacy::Closed, &[]));
    assert_eq!(rejected(&r), Some(ChatReject::RoomExists));
    let r = p.create("user:ann/c", "general", room(Privacy::Closed, &[]));
    assert_eq!(rejected(&r), Some(ChatReject::RoomExists));
    // Stored: the store gives it back after a restart.
    match &p.ask(
        "user:ann/c",
        Msg::Chat(ChatMsg::RoomGet {
            room: "deals".into(),
        }),
    )[..]
    {
        [Msg::Chat(ChatMsg::RoomInfo { info, .. })] => {
            assert_eq!(info.managers, users(&["ann"]));
            assert_eq!(info.version, 1);
        }
        other => panic!("{other:?}"),
    }
    let recovered = p.db.store.clone();
    let mut db = Harness::new(store(), ChatStore::new("chatdb", pool().rooms.clone()));
    db.start(recovered);
    let list = db.msg(
        ch1(),
        Msg::Chat(ChatMsg::StoreRooms {
            token: Token(9),
            since: 0,
        }),
    );
    assert!(
        matches!(&list[0].1, Msg::Chat(ChatMsg::StoreRoomList { rooms, version: 1, .. })
        if rooms.len() == 1 && rooms[0].0 == "deals")
    );
    // Nobody creates a room under a name keys could not hold.
    let r = p.create("user:ann/c", "bad\0name", room(Privacy::Open, &[]));
    assert_eq!(rejected(&r), Some(ChatReject::NoSuchRoom));
}

#[test]
fn privacy_decides_who_finds_and_who_enters() {
    let mut p = Pool::new();
    p.hello("user:ann/c", "ann");
    for (name, privacy) in [
        ("open-room", Privacy::Open),
        ("closed-room", Privacy::Closed),
        ("secret-room", Privacy::Secret),
    ] {
        let r = p.create("user:ann/c", name, room(privacy, &["bob"]));
        assert!(
            matches!(r[..], [Msg::Chat(ChatMsg::RoomSaved { .. })]),
            "{r:?}"
        );
    }
    p.hello("user:carl/c", "carl");
    // Carl is in no room: he finds the open and closed ones, not the secret.
    assert_eq!(
        p.find("user:carl/c", RoomQuery::Search("ROOM".into())),
        vec!["closed-room", "open-room"]
    );
    assert!(joined(&p.join("user:carl/c", "carl", "open-room")));
    assert_eq!(
        rejected(&p.join("user:carl/c", "carl", "closed-room")),
        Some(ChatReject::NotAllowed)
    );
    assert_eq!(
        rejected(&p.join("user:carl/c", "carl", "secret-room")),
        Some(ChatReject::NotAllowed)
    );
    // A secret room does not exist for those who may not know of it.
    assert_eq!(
        rejected(&p.ask(
            "user:carl/c",
            Msg::Chat(ChatMsg::RoomGet {
                room: "secret-room".into()
            })
        )),
        Some(ChatReject::NoSuchRoom)
    );
    // Bob, a member, finds all three and belongs to them and to general.
    p.hello("user:bob/c", "bob");
    assert_eq!(
        p.find("user:bob/c", RoomQuery::Search("room".into())),
        vec!["closed-room", "open-room", "secret-room"]
    );
    assert_eq!(
        p.find("user:bob/c", RoomQuery::Associations),
        vec!["closed-room", "general", "open-room", "secret-room"]
    );
    assert!(joined(&p.join("user:bob/c", "bob", "secret-room")));
    // Eve is walled off the category: not even an open room lets her in.
    p.hello("user:eve/c", "eve");
    assert!(p
        .find("user:eve/c", RoomQuery::Search("room".into()))
        .is_empty());
    assert_eq!(
        rejected(&p.join("user:eve/c", "eve", "open-room")),
        Some(ChatReject::NotAllowed)
    );
}

#[test]
fn a_change_needs_a_manager_and_the_current_version_and_ends_revoked_subscriptions() {
    let mut p = Pool::new();
    p.hello("user:ann/c", "ann");
    p.create(
        "user:ann/c",
        "deals",
        room(Privacy::Closed, &["bob", "carl"]),
    );
    assert!(joined(&p.join("user:bob/c", "bob", "deals")));
    let Msg::Chat(ChatMsg::RoomInfo { mut info, .. }) = p
        .ask(
            "user:ann/c",
            Msg::Chat(ChatMsg::RoomGet {
                room: "deals".into(),
            }),
        )
        .remove(0)
    else {
        panic!()
    };
    // Bob is a member, not a manager.
    let r = p.ask("user:bob/c", save("deals", info.clone(), false));
    assert_eq!(rejected(&r), Some(ChatReject::NotAllowed));
    // Ann walls Bob off the room: his subscription ends at once.
    info.denied.insert("bob".into());
    let sent = p.send("user:ann/c", save("deals", info.clone(), false));
    assert!(sent.iter().any(|(a, m)| a.node == "user:ann/c"
        && matches!(m, Msg::Chat(ChatMsg::RoomSaved { version: 2, .. }))));
    assert_eq!(
        rejected(&p.to("user:bob/c", sent)),
        Some(ChatReject::NotAllowed)
    );
    let r = p.ask(
        "user:bob/c",
        Msg::Chat(ChatMsg::ChatPost {
            post: "p1".into(),
            room: "deals".into(),
            text: "still here?".into(),
        }),
    );
    assert_eq!(rejected(&r), Some(ChatReject::NotJoined));
    // An update based on the old version is refused: re-read and retry.
    let r = p.ask("user:ann/c", save("deals", info, false));
    assert_eq!(rejected(&r), Some(ChatReject::Conflict));
}

#[test]
fn a_change_made_elsewhere_arrives_by_relay_or_from_the_store() {
    let mut p = Pool::new();
    let mut info = room(Privacy::Open, &[]);
    info.version = 4;
    // Relayed by ch2.
    p.ch.msg(
        Addr::new("ch2", ActorKind::Channel),
        Msg::Chat(ChatMsg::RoomChanged {
            room: "relayed".into(),
            info: Box::new(info),
        }),
    );
    assert!(joined(&p.join("user:carl/c", "carl", "relayed")));
    // Saved through ch2, relay lost: the next tick asks the store.
    let mut db_info = room(Privacy::Open, &[]);
    db_info.managers.insert("ann".into());
    p.db.msg(
        Addr::new("ch2", ActorKind::Channel),
        Msg::Chat(ChatMsg::StoreRoomSave {
            token: Token(1),
            room: "stored".into(),
            info: Box::new(db_info),
            create: true,
            by: "ann".into(),
        }),
    );
    assert_eq!(
        rejected(&p.join("user:dan/c", "dan", "stored")),
        Some(ChatReject::NoSuchRoom)
    );
    let sent = p.ch.fire(Timer::Chat(ChatTimer::LoadReport));
    p.settle(sent);
    assert!(joined(&p.join("user:dan/c", "dan", "stored")));
}

#[test]
fn followers_are_told_of_new_content_once_and_invitations_wait_for_a_follow() {
    let mut p = Pool::new();
    p.hello("user:ann/c", "ann");
    let mut info = room(Privacy::Closed, &["bob"]);
    info.invite = true;
    p.create("user:ann/c", "deals", info);
    p.hello("user:bob/c", "bob");
    assert_eq!(p.find("user:bob/c", RoomQuery::Invitations), vec!["deals"]);
    let r = p.ask(
        "user:bob/c",
        Msg::Chat(ChatMsg::ChatFollow {
            room: "deals".into(),
            follow: true,
        }),
    );
    assert!(
        matches!(
            r[..],
            [Msg::Chat(ChatMsg::ChatFollowed { follow: true, .. })]
        ),
        "{r:?}"
    );
    assert!(p.find("user:bob/c", RoomQuery::Invitations).is_empty());
    // Carl may not follow a closed room he is not in.
    p.hello("user:carl/c", "carl");
    let r = p.ask(
        "user:carl/c",
        Msg::Chat(ChatMsg::ChatFollow {
            room: "deals".into(),
            follow: true,
        }),
    );
    assert_eq!(rejected(&r), Some(ChatReject::NotAllowed));
    // Ann posts twice: Bob, following without having joined, is told once.
    assert!(joined(&p.join("user:ann/c", "ann", "deals")));
    let mut notices = Vec::new();
    for id in ["p1", "p2"] {
        let post = Msg::Chat(ChatMsg::ChatPost {
            post: id.into(),
            room: "deals".into(),
            text: "news".into(),
        });
        let sent = p.send("user:ann/c", post);
        notices.extend(p.to("user:bob/c", sent));
    }
    assert_eq!(
        notices,
        vec![Msg::Chat(ChatMsg::ChatNotify {
            room: "deals".into(),
            seq: 1
        })]
    );
    // A new session learns the follow and the room's latest number.
    assert_eq!(
        p.hello("user:bob/2", "bob"),
        vec![Msg::Chat(ChatMsg::ChatWelcome {
            follows: vec![("deals".into(), 2)]
        })]
    );
}

#[test]
fn participants_are_listed_across_the_pool() {
    let mut p = Pool::new();
    let sent = p.ch.msg(
        Addr::new("user:ann/c", ActorKind::Client),
        Msg::Chat(ChatMsg::ChatJoin {
            user: "ann".into(),
            room: "general".into(),
            after: 0,
        }),
    );
    // The join is shared with the other server.
    assert!(sent.iter().any(|(a, m)| a.node == "ch2"
        && *m
            == Msg::Chat(ChatMsg::Presence {
                rooms: vec![("general".into(), vec!["ann".into()])],
                full: false
            })));
    p.settle(sent);
    p.ch.msg(
        Addr::new("ch2", ActorKind::Channel),
        Msg::Chat(ChatMsg::Presence {
            rooms: vec![("general".into(), vec!["bob".into()])],
            full: true,
        }),
    );
    let who = Msg::Chat(ChatMsg::ChatWho {
        room: "general".into(),
    });
    assert_eq!(
        p.ask("user:ann/c", who.clone()),
        vec![Msg::Chat(ChatMsg::ChatParticipants {
            room: "general".into(),
            users: vec!["ann".into(), "bob".into()]
        })]
    );
    // A server silent for three report periods is no longer counted.
    p.ch.now += 3 * Settings::default().chat_load_report + 1;
    assert_eq!(
        p.ask("user:ann/c", who),
        vec![Msg::Chat(ChatMsg::ChatParticipants {
            room: "general".into(),
            users: vec!["ann".into()]
        })]
    );
    // Carl, not a member, may not look.
    p.hello("user:carl/c", "carl");
    assert_eq!(
        rejected(&p.ask(
            "user:carl/c",
            Msg::Chat(ChatMsg::ChatWho {
                room: "general".into()
            })
        )),
        Some(ChatReject::NotAllowed)
    );
}
