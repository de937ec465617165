//! The cluster a scenario describes, as the actor cores are configured:
//! who is homed where, which archiving server and database serve each
//! front end, the archiving policy, and the group chat pool.

use crate::oracle::chat_log::{chat_rooms, chat_users};
use crate::scenario::{Archive, Scenario};
use crate::workload::chat::managed_category;
use crate::workload::im;
use holdfast_actors::chat::pool::{Category, ChatPool};
use holdfast_actors::core::cluster::{ArchiverInfo, Cluster, FrontEndInfo};
use holdfast_actors::core::ids::{RoomId, UserId};
use holdfast_actors::core::policy::{ArchiveSwitch, Policy};
use holdfast_actors::core::protocol::chat::Room;
use std::collections::{BTreeMap, BTreeSet};

pub const DOMAIN: &str = "corp.example";

/// Users of the whole scenario, their homes, and the archiving policy their
/// workloads ask for.
pub fn build_cluster(scn: &Scenario) -> (Cluster, Vec<Vec<String>>) {
    let t = &scn.topology;
    let mut front_ends = BTreeMap::new();
    for (i, fe) in t.front_ends.iter().enumerate() {
        front_ends.insert(
            fe.clone(),
            FrontEndInfo {
                site: "site1".into(),
                archiver: t.archivers[i % t.archivers.len()].clone(),
            },
        );
    }
    let archivers = t
        .archivers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                a.clone(),
                ArchiverInfo {
                    database: t.databases[i % t.databases.len()].clone(),
                },
            )
        })
        .collect();
    let mut users = BTreeMap::new();
    let mut policy = Policy {
        global: ArchiveSwitch::NONE,
        ..Default::default()
    };
    let mut per_workload = Vec::new();
    for (w, wl) in scn.workloads.iter().enumerate() {
        let names = im::workload_users(w, wl.users, DOMAIN);
        let archiving = (wl.users as f64
            * match wl.archive {
                Archive::Fraction(f) => f,
                _ => 1.0,
            })
        .ceil() as usize;
        let homes = if wl.front_ends.is_empty() {
            &t.front_ends
        } else {
            &wl.front_ends
        };
        for (i, u) in names.iter().enumerate() {
            users.insert(UserId::from(u), homes[i % homes.len()].clone());
            let switch = match wl.archive {
                Archive::All => ArchiveSwitch::ALL,
                Archive::None => ArchiveSwitch::NONE,
                Archive::Internal => ArchiveSwitch {
                    internal: true,
                    external: false,
                },
                Archive::External => ArchiveSwitch {
                    internal: false,
                    external: true,
                },
                Archive::Fraction(_) if i < archiving => ArchiveSwitch::ALL,
                Archive::Fraction(_) => ArchiveSwitch::NONE,
            };
            policy.users.insert(UserId::from(u), switch);
        }
        per_workload.push(names);
    }
    let cluster = Cluster {
        domain: DOMAIN.into(),
        front_ends,
        archivers,
        databases: t.databases.clone(),
        users,
        policy,
    };
    (cluster, per_workload)
}

/// The group chat pool: Channel servers, Lookup instances, the store, and
/// the rooms of every chat workload (all its users members; the last
/// `walled` of them walled off).
pub fn build_pool(scn: &Scenario) -> ChatPool {
    let t = &scn.topology;
    let mut rooms = std::collections::BTreeMap::new();
    let mut categories = std::collections::BTreeMap::new();
    for (w, wl) in scn.chat.iter().enumerate() {
        let users = chat_users(w, wl.users, DOMAIN);
        let denied: BTreeSet<UserId> = users[(wl.users - wl.walled) as usize..]
            .iter()
            .map(UserId::from)
            .collect();
        if wl.managed {
            // Rooms come at run time, from the first user; the wall is the
            // category's.
            categories.insert(
                managed_category(w),
                Category {
                    allowed: users.iter().map(UserId::from).collect(),
                    denied: denied.clone(),
                    creators: BTreeSet::from([UserId::from(&users[0])]),
                },
            );
            continue;
        }
        for room in chat_rooms(w, wl.rooms) {
            rooms.insert(
                RoomId::from(room),
                Room {
                    members: users.iter().map(UserId::from).collect(),
                    denied: denied.clone(),
                    presenters: None,
                    ..Default::default()
                },
            );
        }
    }
    ChatPool {
        channels: t.channels.clone(),
        lookups: t.lookups.clone(),
        store: t.chat_store.clone().unwrap_or_default(),
        rooms,
        categories,
        compliance: t.compliance.clone(),
        export: scn.export.clone(),
        web: t.web.clone(),
        // Any key will do in a closed world; production reads its own.
        token_key: b"simulated pool key".to_vec(),
    }
}
