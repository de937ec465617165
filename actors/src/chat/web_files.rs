//! The Web service and file store of group chat.
//!
//! Files are posted to rooms. The Web service trusts no one's word: an
//! upload or download needs a token that a Channel server issued — only
//! to a member allowed in the room (one who may post, to upload; one who
//! may read, to download) — signed with the pool's key, for one operation,
//! valid for `chat_token_ttl`. A wrong, forged, expired or misused token
//! is refused, as is a file over `chat_file_max`. A stored file is durable
//! before it is acknowledged.
//!
//! Only the files' descriptions (`f/<id>`) are held in memory; a file's
//! content is its own key (`b/<id>`), written in the same batch and read
//! back with a `Load` when someone downloads it. Production hosts keep
//! those keys one file each on disk, outside the log store.
//!
//! With a Compliance service in the pool, every upload is queued in the
//! compliance outbox in the same write as the file, and every download
//! before the file is sent (see [`crate::compliance`]). The service's
//! export fetches uploaded files from here, a chunk of at most
//! [`FILE_CHUNK`] bytes per request (`ComplianceFileFetch`).

use crate::chat::pool::{verify_grant, ChatPool, FileGrant, FileOp};
use crate::compliance::service::{NewEvent, Outbox};
use crate::core::actor::{
    authorize, identity_refused, ignored, Actor, Ctx, Recovered, StoreError, StoreOp, Timer,
    Written,
};
use crate::core::identity;
use crate::core::ids::{ActorKind, Addr, FileId, Millis, RoomId, UserId};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::chat::ChatMsg;
use crate::core::protocol::compliance::ComplianceMsg;
use crate::core::protocol::compliance::ComplianceTimer;
use crate::core::protocol::compliance::{ComplianceEvent, EventKind, FILE_CHUNK};
use crate::core::protocol::Msg;
use crate::core::settings::Settings;
use crate::core::store_keys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Key prefix of a stored file's description: `f/<file id>`.
pub const FILE: &[u8] = b"f/";
/// Key prefix of a stored file's content: `b/<file id>`.
pub const FILE_BLOB: &[u8] = b"b/";

/// What is known of a stored file without reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub id: FileId,
    pub room: RoomId,
    pub name: String,
    pub uploader: UserId,
    pub size: u64,
}

pub fn blob_key(id: &str) -> Vec<u8> {
    let mut k = FILE_BLOB.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

enum Write {
    Upload {
        client: Addr,
        file: FileMeta,
    },
    /// A download whose compliance event must be durable before the file
    /// is sent.
    Download {
        client: Addr,
        reply: Msg,
    },
    /// Deleting outbox events the Compliance service has staged.
    Trim,
}

pub struct WebFiles {
    name: String,
    pool: Arc<ChatPool>,
    settings: Settings,
    files: BTreeMap<FileId, FileMeta>,
    writing: BTreeMap<u64, (Write, Vec<ComplianceEvent>)>,
    /// Downloads waiting for their content: load token → (client, user,
    /// file).
    reading: BTreeMap<u64, (Addr, UserId, FileMeta)>,
    /// Chunks the Compliance service asked for: load token → (service,
    /// file, offset).
    exporting: BTreeMap<u64, (Addr, FileMeta, u64)>,
    outbox: Outbox,
    next_token: u64,
    refused: u64,
}

impl WebFiles {
    pub fn new(name: impl Into<String>, pool: Arc<ChatPool>, settings: Settings) -> Self {
        WebFiles {
            name: name.into(),
            pool,
            settings,
            files: BTreeMap::new(),
            writing: BTreeMap::new(),
            reading: BTreeMap::new(),
            exporting: BTreeMap::new(),
            outbox: Outbox::default(),
            next_token: 0,
            refused: 0,
        }
    }

    /// Queues compliance events for `compliance` (the pool's Compliance
    /// service node), if any.
    pub fn with_compliance(mut self, compliance: Option<String>) -> Self {
        self.outbox = Outbox::new(self.name.clone(), compliance);
        self
    }

    fn write(&mut self, write: Write, events: Vec<NewEvent>, mut ops: Vec<StoreOp>, ctx: &mut Ctx) {
        let (queued, event_ops) = self.outbox.record(events);
        ops.extend(event_ops);
        self.next_token += 1;
        self.writing.insert(self.next_token, (write, queued));
        ctx.persist(self.next_token, ops);
    }

    fn refuse(&mut self, ctx: &mut Ctx, client: Addr, reason: impl Into<String>) {
        let reason = reason.into();
        self.refused += 1;
        ctx.event(
            OperatorEvent::FileRefused,
            format!("{}: {reason}", self.name),
        );
        ctx.send(client, Msg::Chat(ChatMsg::FileRefused { reason }));
    }

    /// A file described but its content missing or cut short (`found`):
    /// said loudly.
    fn content_missing(&self, file: &FileMeta, found: Option<Vec<u8>>, ctx: &mut Ctx) {
        ctx.event(
            OperatorEvent::StoreCorrupt,
            format!(
                "{}: file {} should hold {} bytes, found {:?}",
                self.name,
                file.id,
                file.size,
                found.map(|d| d.len())
            ),
        );
    }

    /// What `token` grants, if it is valid, unexpired at `now` and held by
    /// `from`; if not, `from` is refused and there is nothing to grant.
    fn spendable(
        &mut self,
        token: &[u8],
        from: &Addr,
        now: Millis,
        ctx: &mut Ctx,
    ) -> Option<FileGrant> {
        let Some(grant) = verify_grant(&self.pool.token_key, token) else {
            self.refuse(ctx, from.clone(), "invalid token");
            return None;
        };
        if grant.expires < now {
            self.refuse(ctx, from.clone(), "expired token");
            return None;
        }
        // A token is its holder's: another user cannot spend it.
        if let Err(refusal) = identity::require_user(from, &grant.user) {
            identity_refused(&self.name, from, "a file token", &refusal, ctx);
            self.refuse(ctx, from.clone(), refusal.to_string());
            return None;
        }
        Some(grant)
    }

    fn key(id: &str) -> Vec<u8> {
        let mut k = FILE.to_vec();
        k.extend_from_slice(id.as_bytes());
        k
    }
}

impl Actor for WebFiles {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.files.clear();
        self.writing.clear();
        self.reading.clear();
        self.exporting.clear();
        for e in self.outbox.recover(&recovered) {
            ctx.event(OperatorEvent::StoreCorrupt, format!("{}: {e}", self.name));
        }
        self.outbox.pump(ctx);
        for (k, v) in store_keys::under(&recovered, FILE) {
            match store_keys::decode::<FileMeta>(v) {
                Ok(f) => {
                    self.files.insert(f.id.clone(), f);
                }
                Err(e) => ctx.event(
                    OperatorEvent::StoreCorrupt,
                    format!("{}: key {k:?}: {e}", self.name),
                ),
            }
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        // The Compliance service confirms what it staged and fetches
        // uploaded files for its export; nothing else but clients.
        let ok = from.actor == ActorKind::Client
            || (from.actor == ActorKind::Compliance
                && matches!(
                    msg,
                    Msg::Compliance(ComplianceMsg::ComplianceStaged { .. })
                        | Msg::Compliance(ComplianceMsg::ComplianceFileFetch { .. })
                )
                && self.outbox.target() == Some(from.node.as_str()));
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        let now = ctx.now();
        match msg {
            Msg::Compliance(ComplianceMsg::ComplianceStaged { upto }) => {
                let ops = self.outbox.staged(&from, upto, ctx);
                if !ops.is_empty() {
                    self.write(Write::Trim, Vec::new(), ops, ctx);
                }
            }
            Msg::Compliance(ComplianceMsg::ComplianceFileFetch { file, offset }) => {
                match self.files.get(&file) {
                    Some(f) => {
                        self.next_token += 1;
                        self.exporting
                            .insert(self.next_token, (from, f.clone(), offset));
                        ctx.load(self.next_token, blob_key(&file));
                    }
                    None => ctx.send(
                        from,
                        Msg::Compliance(ComplianceMsg::ComplianceFileMissing {
                            file,
                            reason: "the Web service has no such file".into(),
                        }),
                    ),
                }
            }
            Msg::Chat(ChatMsg::FileUpload { token, name, data }) => {
                let Some(grant) = self.spendable(&token, &from, now, ctx) else {
                    return;
                };
                if grant.op != FileOp::Upload {
                    return self.refuse(ctx, from, "the token does not allow an upload");
                }
                if data.len() as u64 > self.settings.chat_file_max {
                    return self.refuse(
                        ctx,
                        from,
                        format!(
                            "{} bytes is over the {} byte limit",
                            data.len(),
                            self.settings.chat_file_max
                        ),
                    );
                }
                if name.is_empty() || name.len() > 255 {
                    return self.refuse(ctx, from, "a file name of 1 to 255 bytes is needed");
                }
                self.next_token += 1;
                // Unique per Web node and restart-proof: the clock and a counter.
                let id = FileId::from(format!("{}-{now:x}-{}", self.name, self.next_token));
                let file = FileMeta {
                    id: id.clone(),
                    room: grant.room,
                    name,
                    uploader: grant.user,
                    size: data.len() as u64,
                };
                let value = store_keys::encode(&file);
                let event = NewEvent {
                    kind: EventKind::Upload,
                    room: file.room.clone(),
                    user: file.uploader.clone(),
                    at: now,
                    item: id.to_string(),
                    text: file.name.clone(),
                    details: file_details(&data),
                };
                let ops = vec![
                    StoreOp::Put {
                        key: blob_key(&id),
                        value: data,
                    },
                    StoreOp::Put {
                        key: Self::key(&id),
                        value,
                    },
                ];
                self.write(Write::Upload { client: from, file }, vec![event], ops, ctx);
            }
            Msg::Chat(ChatMsg::FileDownload { token }) => {
                let Some(grant) = self.spendable(&token, &from, now, ctx) else {
                    return;
                };
                let FileOp::Download { file } = grant.op else {
                    return self.refuse(ctx, from, "the token does not allow a download");
                };
                match self.files.get(&file) {
                    Some(f) if f.room == grant.room => {
                        self.next_token += 1;
                        self.reading
                            .insert(self.next_token, (from, grant.user, f.clone()));
                        ctx.load(self.next_token, blob_key(&file));
                    }
                    _ => self.refuse(ctx, from, "no such file in this room"),
                }
            }
            other => ignored("web", &self.name, other.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::Compliance(ComplianceTimer::ComplianceResend) {
            self.outbox.resend(ctx);
        }
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        let Some((write, queued)) = self.writing.remove(&token) else {
            return;
        };
        if let Err(e) = result {
            self.outbox.rolled_back(&queued);
            let client = match write {
                Write::Upload { client, .. } | Write::Download { client, .. } => client,
                Write::Trim => return,
            };
            ctx.event(
                OperatorEvent::FileStoreFailed,
                format!("{}: {e}", self.name),
            );
            ctx.send(
                client,
                Msg::Chat(ChatMsg::FileRefused {
                    reason: format!("the request could not be recorded: {e}"),
                }),
            );
            return;
        }
        self.outbox.committed(queued, ctx);
        match write {
            Write::Upload { client, file } => {
                let reply = Msg::Chat(ChatMsg::FileStored {
                    file: file.id.clone(),
                    name: file.name.clone(),
                    size: file.size,
                });
                self.files.insert(file.id.clone(), file);
                ctx.send(client, reply);
            }
            Write::Download { client, reply } => ctx.send(client, reply),
            Write::Trim => {}
        }
    }

    fn on_loaded(
        &mut self,
        token: u64,
        result: Result<Option<Vec<u8>>, StoreError>,
        ctx: &mut Ctx,
    ) {
        if let Some((service, file, offset)) = self.exporting.remove(&token) {
            return match result {
                Ok(Some(data)) if data.len() as u64 == file.size => {
                    let start = (offset as usize).min(data.len());
                    let end = (start + FILE_CHUNK as usize).min(data.len());
                    ctx.send(
                        service,
                        Msg::Compliance(ComplianceMsg::ComplianceFileChunk {
                            file: file.id,
                            offset: start as u64,
                            total: file.size,
                            data: data[start..end].to_vec(),
                        }),
                    );
                }
                Ok(found) => {
                    self.content_missing(&file, found, ctx);
                    ctx.send(
                        service,
                        Msg::Compliance(ComplianceMsg::ComplianceFileMissing {
                            file: file.id,
                            reason: "the file's content is missing".into(),
                        }),
                    );
                }
                // Not answered: the service asks again.
                Err(_) => {}
            };
        }
        let Some((client, user, file)) = self.reading.remove(&token) else {
            return;
        };
        match result {
            Ok(Some(data)) if data.len() as u64 == file.size => {
                let event = NewEvent {
                    kind: EventKind::Download,
                    room: file.room.clone(),
                    user,
                    at: ctx.now(),
                    item: file.id.to_string(),
                    text: file.name.clone(),
                    details: file_details(&data),
                };
                let reply = Msg::Chat(ChatMsg::FileData {
                    file: file.id,
                    name: file.name,
                    data,
                });
                if self.outbox.enabled() {
                    self.write(
                        Write::Download { client, reply },
                        vec![event],
                        Vec::new(),
                        ctx,
                    );
                } else {
                    ctx.send(client, reply);
                }
            }
            Ok(found) => {
                self.content_missing(&file, found, ctx);
                self.refuse(ctx, client, "the file's content is missing");
            }
            Err(e) => self.refuse(ctx, client, format!("the file could not be read: {e}")),
        }
    }

    /// The compliance outbox: upload and download events not yet staged
    /// by the Compliance service (what `holdfast status` shows for a Web
    /// service, as for the chat store).
    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![(Gauge::ComplianceOutbox, self.outbox.len() as u64)]
    }
}

/// A file's size and SHA-256 (hex), for its compliance events: what a
/// reviewer needs to match an exported event with the file itself.
pub fn file_details(data: &[u8]) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    [
        ("size".to_string(), data.len().to_string()),
        ("sha256".to_string(), hex),
    ]
    .into()
}

#[cfg(test)]
mod detail_tests {
    /// The SHA-256 of "abc" (FIPS 180-2's example) and its size.
    #[test]
    fn file_details_are_size_and_sha256() {
        let d = super::file_details(b"abc");
        assert_eq!(d["size"], "3");
        assert_eq!(
            d["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::pool::{sign_grant, FileGrant};
    use crate::testkit::Harness;

    const KEY: &[u8] = b"pool key for tests";

    fn web(max: u64) -> Harness<WebFiles> {
        let pool = Arc::new(ChatPool {
            token_key: KEY.to_vec(),
            ..Default::default()
        });
        let mut h = Harness::new(
            Addr::new("web1", ActorKind::Web),
            WebFiles::new(
                "web1",
                pool,
                Settings {
                    chat_file_max: max,
                    ..Settings::default()
                },
            ),
        );
        h.start(Recovered::new());
        h
    }

    fn token(key: &[u8], op: FileOp, expires: u64) -> Vec<u8> {
        sign_grant(
            key,
            &FileGrant {
                user: "a@corp.example".into(),
                room: "general".into(),
                op,
                expires,
            },
        )
    }

    fn client() -> Addr {
        crate::testkit::client_of("a@corp.example")
    }

    fn upload(h: &mut Harness<WebFiles>, token: Vec<u8>, data: &[u8]) -> Msg {
        h.msg(
            client(),
            Msg::Chat(ChatMsg::FileUpload {
                token,
                name: "plan.txt".into(),
                data: data.to_vec(),
            }),
        )
        .remove(0)
        .1
    }

    #[test]
    fn an_upload_with_a_valid_token_is_stored_and_survives_a_restart() {
        let mut h = web(1024);
        let Msg::Chat(ChatMsg::FileStored { file, size, .. }) =
            upload(&mut h, token(KEY, FileOp::Upload, 60_000), b"hello")
        else {
            panic!()
        };
        assert_eq!(size, 5);
        // Another incarnation on the same store: descriptions come back at
        // start, the content by a load.
        let mut h2 = web(1024);
        h2.store = h.store.clone();
        h2.start(h.store.clone());
        let sent = h2.msg(
            client(),
            Msg::Chat(ChatMsg::FileDownload {
                token: token(KEY, FileOp::Download { file: file.clone() }, 60_000),
            }),
        );
        assert!(
            matches!(&sent[0].1, Msg::Chat(ChatMsg::FileData { data, .. }) if data == b"hello")
        );
        // Content lost under its description is reported, not served.
        h2.store.remove(&blob_key(&file));
        let sent = h2.msg(
            client(),
            Msg::Chat(ChatMsg::FileDownload {
                token: token(KEY, FileOp::Download { file }, 60_000),
            }),
        );
        assert!(
            matches!(&sent[0].1, Msg::Chat(ChatMsg::FileRefused { reason }) if reason.contains("missing"))
        );
        assert!(h2.events().contains(&"store_corrupt"));
    }

    /// The Compliance service (only the pool's) fetches an uploaded file a
    /// chunk at a time; a file the service does not hold is missing.
    #[test]
    fn the_compliance_service_fetches_uploaded_files_in_chunks() {
        let pool = Arc::new(ChatPool {
            token_key: KEY.to_vec(),
            ..Default::default()
        });
        let settings = Settings {
            chat_file_max: 4 << 20,
            ..Settings::default()
        };
        let mut h = Harness::new(
            Addr::new("web1", ActorKind::Web),
            WebFiles::new("web1", pool, settings).with_compliance(Some("comp1".into())),
        );
        h.start(Recovered::new());
        let data: Vec<u8> = (0..(FILE_CHUNK + 5)).map(|i| i as u8).collect();
        let sent = h.msg(
            client(),
            Msg::Chat(ChatMsg::FileUpload {
                token: token(KEY, FileOp::Upload, 60_000),
                name: "big.bin".into(),
                data: data.clone(),
            }),
        );
        let Some(file) = sent.iter().find_map(|(_, m)| match m {
            Msg::Chat(ChatMsg::FileStored { file, .. }) => Some(file.clone()),
            _ => None,
        }) else {
            panic!("{sent:?}")
        };
        let comp = Addr::new("comp1", ActorKind::Compliance);
        let fetch = |h: &mut Harness<WebFiles>, from: &Addr, file: &str, offset: u64| {
            h.msg(
                from.clone(),
                Msg::Compliance(ComplianceMsg::ComplianceFileFetch {
                    file: file.into(),
                    offset,
                }),
            )
        };
        let sent = fetch(&mut h, &comp, &file, 0);
        let Msg::Compliance(ComplianceMsg::ComplianceFileChunk { total, data: d, .. }) = &sent[0].1
        else {
            panic!("{sent:?}")
        };
        assert_eq!((*total, d.len() as u64), (data.len() as u64, FILE_CHUNK));
        let sent = fetch(&mut h, &comp, &file, FILE_CHUNK);
        assert!(
            matches!(&sent[0].1, Msg::Compliance(ComplianceMsg::ComplianceFileChunk { data: d, offset, .. })
            if d[..] == data[FILE_CHUNK as usize..] && *offset == FILE_CHUNK)
        );
        let sent = fetch(&mut h, &comp, "nope", 0);
        assert!(matches!(
            &sent[0].1,
            Msg::Compliance(ComplianceMsg::ComplianceFileMissing { .. })
        ));
        // Another compliance node gets nothing.
        let other = Addr::new("comp2", ActorKind::Compliance);
        assert!(fetch(&mut h, &other, &file, 0).is_empty());
    }

    #[test]
    fn wrong_forged_expired_misused_and_oversized_are_refused() {
        let mut h = web(4);
        let refused = |m: Msg| matches!(m, Msg::Chat(ChatMsg::FileRefused { .. }));
        assert!(refused(upload(
            &mut h,
            token(b"another key", FileOp::Upload, 60_000),
            b"x"
        )));
        let mut forged = token(KEY, FileOp::Upload, 60_000);
        forged[3] ^= 1;
        assert!(refused(upload(&mut h, forged, b"x")));
        assert!(refused(upload(&mut h, b"short".to_vec(), b"x")));
        h.now = 100_000;
        assert!(refused(upload(
            &mut h,
            token(KEY, FileOp::Upload, 60_000),
            b"x"
        )));
        let download = token(KEY, FileOp::Download { file: "f".into() }, 200_000);
        assert!(refused(upload(&mut h, download, b"x")));
        assert!(refused(upload(
            &mut h,
            token(KEY, FileOp::Upload, 200_000),
            b"12345"
        )));
        assert!(h.store.is_empty(), "nothing refused was stored");
        // A valid token is its holder's: another user cannot spend it.
        h.clear_events();
        let sent = h.msg(
            crate::testkit::client_of("mallory@corp.example"),
            Msg::Chat(ChatMsg::FileUpload {
                token: token(KEY, FileOp::Upload, 200_000),
                name: "n".into(),
                data: b"x".to_vec(),
            }),
        );
        assert!(refused(sent[0].1.clone()), "{sent:?}");
        assert!(h.events().contains(&OperatorEvent::IdentityRefused.name()));
        assert!(h.store.is_empty(), "nothing refused was stored");
        // A download token for another room's file finds nothing.
        let Msg::Chat(ChatMsg::FileStored { file, .. }) =
            upload(&mut h, token(KEY, FileOp::Upload, 200_000), b"ok")
        else {
            panic!()
        };
        let other = sign_grant(
            KEY,
            &FileGrant {
                user: "a@corp.example".into(),
                room: "elsewhere".into(),
                op: FileOp::Download { file },
                expires: 200_000,
            },
        );
        let sent = h.msg(client(), Msg::Chat(ChatMsg::FileDownload { token: other }));
        assert!(refused(sent[0].1.clone()));
    }
}
