//! The compliance checker: reads the export files back, as a pickup system
//! would, and compares them with what happened.
//!
//! - every post in the chat store is exported exactly once, with its room,
//!   author and text;
//! - every file stored by the Web service has its upload exported;
//! - every room created or changed at run time has a `room_saved` event;
//! - every leave and download a client saw confirmed is exported (at least
//!   as often as confirmed: one whose answer was lost may be exported too);
//! - no event id appears twice across all files, and every file parses;
//! - every file event carries the file's size and SHA-256, every room
//!   change what it changed;
//! - every file the Web service stored whose upload is exported is listed
//!   in a batch's manifest with its size and SHA-256, and its content is
//!   there (`files/<sha256>`, in the folder or copied by the pickup
//!   system) with that hash; a manifest never names a file that is not
//!   there unless it lists it as missing;
//! - the files of a batch the service confirmed acknowledged are gone
//!   from the folder at the end (an uploaded file only if no batch still
//!   waiting names it); those of a batch never acknowledged are all there.
//!
//! The files the pickup system copied out of the folder before it
//! acknowledged them count as exported, as they would for a real one.
//! - every clear an operator made has its `room_cleared` event (who, the
//!   range) and its `room_purged` event (how many deleted), every replace
//!   a `post_replaced` event with the new text and the original, every
//!   disable a `room_saved` event saying so; a replaced post's `post`
//!   event keeps the original text.
//!
//! Events still staged or in an outbox at the end are `pending`, and count
//! as missing: a scenario must leave time for the last export.

use crate::oracle::chat_log::ChatLog;
use holdfast_actors::compliance::export::{
    manifest_name, parse, sha256_hex, ExportFormat, ExportedEvent, Manifest, UploadEntry,
};
use holdfast_actors::core::protocol::chat::Post;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ComplianceCounts {
    /// Distinct events found in the export files.
    pub exported: u64,
    /// Batches (data files with their manifest).
    pub batches: u64,
    /// Event ids found more than once.
    pub duplicates: u64,
    /// Events that should have been exported and were not.
    pub missing: u64,
    /// Events exported with other content than what happened, files that do
    /// not parse, data files without a manifest or not matching it.
    pub wrong: u64,
    /// Still staged or in an outbox at the end.
    pub pending: u64,
    /// Uploaded files found in a manifest with their content.
    pub files_exported: u64,
    /// Uploaded files in no manifest (their upload exported), or named by
    /// a manifest without being there.
    pub files_missing: u64,
    /// Uploaded files listed with another size or hash, or as missing
    /// while the Web service has them.
    pub files_wrong: u64,
    /// Batches acknowledged (confirmed by the service).
    pub acked: u64,
    /// Files of an acknowledged batch still in the folder, or of a batch
    /// never acknowledged gone from it.
    pub pickup_wrong: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub examples: BTreeMap<&'static str, Vec<String>>,
}

impl ComplianceCounts {
    fn example(&mut self, what: &'static str, s: String) {
        super::keep_example(&mut self.examples, what, s);
    }
}

/// What the run produced, for the checker.
pub struct ComplianceInput<'a> {
    pub format: ExportFormat,
    /// Every file in the output folder at the end: `(name, content)`.
    pub outputs: &'a [(String, Vec<u8>)],
    /// Every file the pickup system copied out of it.
    pub picked: &'a [(String, Vec<u8>)],
    /// Batches whose acknowledgement the service confirmed.
    pub acked: &'a BTreeSet<u64>,
    /// Batches the pickup system acknowledged (confirmed or not).
    pub ack_sent: &'a BTreeSet<u64>,
    /// Files the Web service holds: id → (size, SHA-256).
    pub uploads: &'a BTreeMap<String, (u64, String)>,
    pub posts: &'a [(u64, Post)],
    /// Files the Web service holds: id → (room, uploader).
    pub files: &'a BTreeMap<String, (String, String)>,
    /// Rooms created or changed at run time.
    pub rooms_saved: &'a [String],
    pub log: &'a ChatLog,
    pub pending: u64,
}

/// A records event the export must hold: what it is, and how to know it.
type Expected<'a> = (String, Box<dyn Fn(&ExportedEvent) -> bool + 'a>);

pub fn check(input: &ComplianceInput) -> ComplianceCounts {
    let mut c = ComplianceCounts {
        pending: input.pending,
        ..Default::default()
    };
    let ext = format!(".{}", input.format.extension());
    let mut events: BTreeMap<String, ExportedEvent> = BTreeMap::new();
    // What a pickup system has: what it copied, and what the folder
    // still holds (the same bytes under the same name).
    let mut names: BTreeMap<&str, &[u8]> = input
        .picked
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    for (n, d) in input.outputs {
        match names.get(n.as_str()) {
            Some(p) if *p != d.as_slice() => {
                c.wrong += 1;
                c.example("wrong", format!("{n}: differs from the copy picked up"));
            }
            _ => {
                names.insert(n.as_str(), d.as_slice());
            }
        }
    }
    for (name, data) in &names {
        let Some(stem) = name.strip_suffix(ext.as_str()) else {
            continue;
        };
        c.batches += 1;
        // A pickup system takes a batch once its manifest is there, and
        // checks it.
        match names
            .get(format!("{stem}.manifest.json").as_str())
            .map(|m| serde_json::from_slice::<Manifest>(m))
        {
            Some(Ok(m)) => {
                use sha2::Digest;
                let sha = sha2::Sha256::digest(data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>();
                if m.sha256 != sha || m.file != *name {
                    c.wrong += 1;
                    c.example("wrong", format!("{name}: does not match its manifest"));
                }
            }
            _ => {
                c.wrong += 1;
                c.example("wrong", format!("{name}: no readable manifest"));
            }
        }
        match parse(input.format, data) {
            Ok(found) => {
                for e in found {
                    if events.contains_key(&e.id) {
                        c.duplicates += 1;
                        c.example("duplicates", format!("{} (again in {name})", e.id));
                    } else {
                        *c.by_kind.entry(e.kind.clone()).or_default() += 1;
                        events.insert(e.id.clone(), e);
                    }
                }
            }
            Err(e) => {
                c.wrong += 1;
                c.example("wrong", format!("{name}: {e}"));
            }
        }
    }
    c.exported = events.len() as u64;
    // Index the exported events by what they are about.
    let mut posts: BTreeMap<&str, Vec<&ExportedEvent>> = BTreeMap::new();
    let mut uploads: BTreeMap<&str, u64> = BTreeMap::new();
    let mut saves: BTreeMap<&str, u64> = BTreeMap::new();
    let mut leaves: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut downloads: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut records: Vec<&ExportedEvent> = Vec::new();
    for e in events.values() {
        if !details_well_formed(e) {
            c.wrong += 1;
            c.example(
                "wrong",
                format!("{} ({}) without its details: {:?}", e.id, e.kind, e.details),
            );
        }
        match e.kind.as_str() {
            "post" => posts.entry(&e.item).or_default().push(e),
            "upload" => *uploads.entry(&e.item).or_default() += 1,
            "room_saved" => *saves.entry(&e.room).or_default() += 1,
            "leave" => *leaves.entry((&e.user, &e.room)).or_default() += 1,
            "download" => *downloads.entry((&e.user, &e.item)).or_default() += 1,
            "room_cleared" | "room_purged" | "post_replaced" => records.push(e),
            _ => {}
        }
        if e.kind == "room_saved" && e.details.contains("\"disabled\"") {
            records.push(e);
        }
    }
    let details = |e: &ExportedEvent| {
        serde_json::from_str::<BTreeMap<String, String>>(&e.details).unwrap_or_default()
    };
    let mut expected: Vec<Expected> = Vec::new();
    for cl in &input.log.clears {
        let through = cl.through.to_string();
        let (room, t) = (cl.room.clone(), through.clone());
        expected.push((
            format!("room_cleared of {} through #{through}", cl.room),
            Box::new(move |e| {
                e.kind == "room_cleared" && e.room == room && e.item == t && !e.user.is_empty()
            }),
        ));
        let room = cl.room.clone();
        expected.push((
            format!("room_purged of {} through #{through}", cl.room),
            Box::new(move |e| {
                e.kind == "room_purged"
                    && e.room == room
                    && e.item == through
                    && details(e).contains_key("deleted")
            }),
        ));
    }
    for r in &input.log.replaces {
        let original = input.log.posts.get(&r.post).map(|p| p.text.clone());
        expected.push((
            format!("post_replaced of {}", r.post),
            Box::new(move |e| {
                e.kind == "post_replaced"
                    && e.item == r.post
                    && e.text == r.text
                    && details(e).get("original") == original.as_ref()
            }),
        ));
    }
    for d in &input.log.disables {
        expected.push((
            format!("room_saved disabling {}", d.room),
            Box::new(move |e| {
                e.kind == "room_saved"
                    && e.room == d.room
                    && details(e).get("disabled").map(String::as_str) == Some("true")
            }),
        ));
    }
    for (what, found) in &expected {
        if !records.iter().any(|e| found(e)) {
            c.missing += 1;
            c.example("missing", what.clone());
        }
    }
    for (_, post) in input.posts {
        match posts.get(post.id.as_str()).map(|v| v.as_slice()) {
            None | Some([]) => {
                c.missing += 1;
                c.example("missing", format!("post {} in {}", post.id, post.room));
            }
            Some([e]) => {
                // A replaced post was exported with its original text.
                let original = input
                    .log
                    .replaces
                    .iter()
                    .any(|r| post.id == r.post && r.text == post.text)
                    .then(|| {
                        input
                            .log
                            .posts
                            .get(post.id.as_str())
                            .map(|p| p.text.as_str())
                    })
                    .flatten();
                let text_ok = e.text == post.text || original == Some(e.text.as_str());
                if post.room != e.room || post.author != e.user || !text_ok {
                    c.wrong += 1;
                    c.example("wrong", format!("post {} exported as {e:?}", post.id));
                }
            }
            Some(more) => {
                c.duplicates += more.len() as u64 - 1;
                c.example(
                    "duplicates",
                    format!("post {} exported {} times", post.id, more.len()),
                );
            }
        }
    }
    check_files(input, &names, &uploads, &mut c);
    for id in input.files.keys() {
        if !uploads.contains_key(id.as_str()) {
            c.missing += 1;
            c.example("missing", format!("upload of {id}"));
        }
    }
    for room in input.rooms_saved {
        if !saves.contains_key(room.as_str()) {
            c.missing += 1;
            c.example("missing", format!("creation of room {room}"));
        }
    }
    // Confirmed to a client: exported at least as often.
    for (what, seen, exported) in [
        ("leaves", &input.log.leaves_confirmed, &leaves),
        ("downloads", &input.log.downloads_by, &downloads),
    ] {
        for ((user, of), n) in seen {
            let got = exported
                .get(&(user.as_str(), of.as_str()))
                .copied()
                .unwrap_or(0);
            if got < *n {
                c.missing += n - got;
                c.example("missing", format!("{} {what} of {user} ({of})", n - got));
            }
        }
    }
    c
}

/// The uploaded files in the manifests, and what the pickup
/// acknowledgements left in the folder.
fn check_files(
    input: &ComplianceInput,
    names: &BTreeMap<&str, &[u8]>,
    exported_uploads: &BTreeMap<&str, u64>,
    c: &mut ComplianceCounts,
) {
    let manifests: Vec<Manifest> = names
        .iter()
        .filter(|(n, _)| n.ends_with(".manifest.json"))
        .filter_map(|(_, d)| serde_json::from_slice(d).ok())
        .collect();
    let mut by_id: BTreeMap<&str, &UploadEntry> = BTreeMap::new();
    for m in &manifests {
        for u in &m.uploads {
            by_id.insert(u.file_id.as_str(), u);
            if u.missing {
                continue;
            }
            let there = names
                .get(u.name.as_str())
                .is_some_and(|d| d.len() as u64 == u.size && sha256_hex(d) == u.sha256);
            if !there {
                c.files_missing += 1;
                c.example(
                    "files_missing",
                    format!(
                        "batch {} names {} ({}), not there",
                        m.batch, u.name, u.file_id
                    ),
                );
            }
        }
    }
    for (id, (size, sha)) in input.uploads {
        if !exported_uploads.contains_key(id.as_str()) {
            continue; // its event is missing, counted apart
        }
        match by_id.get(id.as_str()) {
            None => {
                c.files_missing += 1;
                c.example("files_missing", format!("file {id} in no manifest"));
            }
            Some(u) if u.missing || u.size != *size || u.sha256 != *sha => {
                c.files_wrong += 1;
                c.example("files_wrong", format!("file {id} listed as {u:?}"));
            }
            Some(_) => c.files_exported += 1,
        }
    }
    // Acknowledged: gone; never acknowledged: all there.
    let folder: BTreeSet<&str> = input.outputs.iter().map(|(n, _)| n.as_str()).collect();
    let waiting: BTreeSet<&str> = manifests
        .iter()
        .filter(|m| !input.acked.contains(&m.batch))
        .flat_map(|m| m.uploads.iter().filter(|u| !u.missing))
        .map(|u| u.name.as_str())
        .collect();
    c.acked = input.acked.len() as u64;
    for m in &manifests {
        let manifest = manifest_name(m.batch);
        let own = [m.file.as_str(), manifest.as_str()];
        let uploaded = m
            .uploads
            .iter()
            .filter(|u| !u.missing)
            .map(|u| u.name.as_str());
        let wrong: Vec<&str> = if input.acked.contains(&m.batch) {
            own.into_iter()
                .filter(|n| folder.contains(n))
                .chain(uploaded.filter(|n| folder.contains(n) && !waiting.contains(n)))
                .collect()
        } else if input.ack_sent.contains(&m.batch) {
            Vec::new() // acknowledged, unconfirmed: either may be right
        } else {
            own.into_iter()
                .chain(uploaded)
                .filter(|n| !folder.contains(n))
                .collect()
        };
        if !wrong.is_empty() {
            c.pickup_wrong += wrong.len() as u64;
            let state = if input.acked.contains(&m.batch) {
                "acknowledged, still there"
            } else {
                "never acknowledged, gone"
            };
            c.example(
                "pickup_wrong",
                format!("batch {} {state}: {wrong:?}", m.batch),
            );
        }
    }
}

/// Whether an event carries the details its kind must: a file's `size`
/// and 64-hex-digit `sha256`; for a room change, what changed.
fn details_well_formed(e: &ExportedEvent) -> bool {
    let details = || serde_json::from_str::<BTreeMap<String, String>>(&e.details).ok();
    match e.kind.as_str() {
        "upload" | "download" => details().is_some_and(|d| {
            d.get("size").is_some_and(|s| s.parse::<u64>().is_ok())
                && d.get("sha256")
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        }),
        "room_saved" => details().is_some_and(|d| !d.is_empty()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::compliance::export::render;
    use holdfast_actors::core::ids::Seq;
    use holdfast_actors::core::protocol::compliance::{ComplianceEvent, EventKind};

    fn post(id: &str) -> (u64, Post) {
        (
            1,
            Post {
                id: id.into(),
                room: "r".into(),
                author: "a".into(),
                text: format!("text of {id}"),
                at: 1,
            },
        )
    }

    fn event(seq: u64, p: &Post) -> ComplianceEvent {
        ComplianceEvent {
            source: "chatdb".into(),
            seq: Seq(seq),
            kind: EventKind::Post,
            room: p.room.clone(),
            user: p.author.clone(),
            at: p.at,
            item: p.id.to_string(),
            text: p.text.clone(),
            details: BTreeMap::new(),
        }
    }

    /// An upload exported without the file's size and SHA-256, or a room
    /// change without what it changed, is wrong.
    #[test]
    fn file_and_room_events_must_carry_their_details() {
        let base = |kind: &str, details: &str| ExportedEvent {
            id: "x-1".into(),
            kind: kind.into(),
            room: "r".into(),
            user: "u".into(),
            at: 1,
            item: "f".into(),
            text: "t".into(),
            details: details.into(),
        };
        let hash = "ab".repeat(32);
        assert!(details_well_formed(&base(
            "upload",
            &format!(r#"{{"size":"3","sha256":"{hash}"}}"#)
        )));
        assert!(!details_well_formed(&base("upload", "")));
        assert!(!details_well_formed(&base("download", r#"{"size":"3"}"#)));
        assert!(!details_well_formed(&base(
            "upload",
            r#"{"size":"3","sha256":"not hex"}"#
        )));
        assert!(details_well_formed(&base(
            "room_saved",
            r#"{"created":"true"}"#
        )));
        assert!(!details_well_formed(&base("room_saved", "")));
        assert!(details_well_formed(&base("post", "")));
    }

    fn outputs(batches: &[(u64, Vec<ComplianceEvent>)]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (n, evs) in batches {
            let refs: Vec<&ComplianceEvent> = evs.iter().collect();
            for f in render(ExportFormat::Xml, *n, &refs) {
                out.push((f.name, f.data));
            }
        }
        out
    }

    fn run(outputs: &[(String, Vec<u8>)], posts: &[(u64, Post)]) -> ComplianceCounts {
        let log = ChatLog::default();
        check(&ComplianceInput {
            format: ExportFormat::Xml,
            outputs,
            picked: &[],
            acked: &BTreeSet::new(),
            ack_sent: &BTreeSet::new(),
            uploads: &BTreeMap::new(),
            posts,
            files: &BTreeMap::new(),
            rooms_saved: &[],
            log: &log,
            pending: 0,
        })
    }

    /// A batch with one uploaded file: its files and the upload's id, size
    /// and hash.
    /// Files by name, and uploads by file id with their size and hash.
    type Files = Vec<(String, Vec<u8>)>;
    type Uploads = BTreeMap<String, (u64, String)>;

    fn batch_with_upload() -> (Files, Uploads) {
        use holdfast_actors::compliance::export::{render_batch, upload_entry};
        let content = b"the plan".to_vec();
        let sha = sha256_hex(&content);
        let e = ComplianceEvent {
            source: "web1".into(),
            seq: Seq(1),
            kind: EventKind::Upload,
            room: "r".into(),
            user: "a".into(),
            at: 1,
            item: "f1".into(),
            text: "plan.txt".into(),
            details: [
                ("size".to_string(), content.len().to_string()),
                ("sha256".to_string(), sha.clone()),
            ]
            .into(),
        };
        let entry = upload_entry(&e).unwrap();
        let mut out: Vec<(String, Vec<u8>)> =
            render_batch(ExportFormat::Xml, 1, &[&e], vec![entry.clone()])
                .into_iter()
                .map(|f| (f.name, f.data))
                .collect();
        out.push((entry.name, content.clone()));
        let uploads = [("f1".to_string(), (content.len() as u64, sha))].into();
        (out, uploads)
    }

    fn run_pickup(
        folder: &[(String, Vec<u8>)],
        picked: &[(String, Vec<u8>)],
        acked: &[u64],
        uploads: &BTreeMap<String, (u64, String)>,
    ) -> ComplianceCounts {
        let log = ChatLog::default();
        let acked: BTreeSet<u64> = acked.iter().copied().collect();
        check(&ComplianceInput {
            format: ExportFormat::Xml,
            outputs: folder,
            picked,
            acked: &acked,
            ack_sent: &acked,
            uploads,
            posts: &[],
            files: &BTreeMap::new(),
            rooms_saved: &[],
            log: &log,
            pending: 0,
        })
    }

    /// Uploaded files must be in the manifests with their content; an
    /// acknowledged batch's files must be gone, an unacknowledged one's
    /// there.
    #[test]
    fn it_sees_missing_uploaded_files_and_removals_out_of_order() {
        let (files, uploads) = batch_with_upload();
        // Picked up and acknowledged, the folder empty: right.
        let c = run_pickup(&[], &files, &[1], &uploads);
        assert_eq!(
            (c.files_exported, c.files_missing, c.pickup_wrong),
            (1, 0, 0),
            "{c:?}"
        );
        // Still waiting, all there: right.
        let c = run_pickup(&files, &[], &[], &uploads);
        assert_eq!((c.files_exported, c.pickup_wrong), (1, 0), "{c:?}");
        // Acknowledged and still there.
        let c = run_pickup(&files, &files, &[1], &uploads);
        assert_eq!(c.pickup_wrong, 3, "{c:?}");
        // Never acknowledged and gone (seen only in the pickup's copy).
        let c = run_pickup(&[], &files, &[], &uploads);
        assert_eq!(c.pickup_wrong, 3, "{c:?}");
        // The manifest names a file that is not there.
        let c = run_pickup(&files[..2], &[], &[], &uploads);
        assert_eq!(c.files_missing, 1, "{c:?}");
    }

    #[test]
    fn it_sees_missing_duplicated_altered_and_torn_exports() {
        let posts = vec![post("p1"), post("p2"), post("p3")];
        let e: Vec<ComplianceEvent> = posts
            .iter()
            .enumerate()
            .map(|(i, (_, p))| event(i as u64 + 1, p))
            .collect();
        // All there once: clean.
        let good = run(&outputs(&[(1, e.clone())]), &posts);
        assert_eq!(
            (good.exported, good.missing, good.duplicates, good.wrong),
            (3, 0, 0, 0)
        );
        // p3 never exported.
        let c = run(&outputs(&[(1, e[..2].to_vec())]), &posts);
        assert_eq!(c.missing, 1);
        // p2 exported again in a later batch (a batch written twice under
        // different names: what the intent prevents).
        let c = run(&outputs(&[(1, e.clone()), (2, vec![e[1].clone()])]), &posts);
        assert_eq!(c.duplicates, 1);
        // Altered text.
        let mut altered = e.clone();
        altered[0].text = "something else".into();
        let c = run(&outputs(&[(1, altered)]), &posts);
        assert_eq!(c.wrong, 1);
        // A torn data file: it no longer matches its manifest.
        let mut torn = outputs(&[(1, e.clone())]);
        let cut = torn[0].1.len() / 2;
        torn[0].1.truncate(cut);
        let c = run(&torn, &posts);
        assert!(c.wrong >= 1 && c.missing >= 1, "{c:?}");
        // A data file without its manifest.
        let c = run(&outputs(&[(1, e)])[..1], &posts);
        assert_eq!(c.wrong, 1);
    }
}
