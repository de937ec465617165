//! Compliance adapters: a batch of events as export files.
//!
//! Rendering is pure (the same batch always gives the same bytes), so a
//! batch written again after a crash overwrites its earlier files with
//! identical ones. Each batch gives a data file and a manifest
//! `holdfast-compliance-<batch>.manifest.json`, written last by the host:
//! a pickup system takes a batch once its manifest exists, and may delete
//! both files once it has them.
//!
//! - **XML** (default): the shape of the Lync compliance XML: one
//!   `<Conversation>` per room with its participants (first join of each),
//!   messages, files and other events, and the start and end times. Every
//!   event is one element carrying its `eventId`.
//! - **JSON lines**: one event per line.
//! - **CSV**: a header, then one event per row.

use crate::compliance::{ComplianceEvent, EventKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExportFormat {
    #[default]
    Xml,
    JsonLines,
    Csv,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "xml" => Some(ExportFormat::Xml),
            "jsonl" | "json" => Some(ExportFormat::JsonLines),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Xml => "xml",
            ExportFormat::JsonLines => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }
}

/// A file the host writes atomically into the output folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputFile {
    pub name: String,
    pub data: Vec<u8>,
}

/// An event as it appears in JSON lines and CSV.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub id: String,
    pub kind: String,
    pub room: String,
    pub user: String,
    pub at: u64,
    pub item: String,
    pub text: String,
}

impl From<&ComplianceEvent> for ExportedEvent {
    fn from(e: &ComplianceEvent) -> Self {
        ExportedEvent {
            id: e.id(),
            kind: e.kind.as_str().to_string(),
            room: e.room.clone(),
            user: e.user.clone(),
            at: e.at,
            item: e.item.clone(),
            text: e.text.clone(),
        }
    }
}

/// The manifest of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub batch: u64,
    pub file: String,
    pub format: String,
    pub events: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
}

pub fn batch_stem(batch: u64) -> String {
    format!("holdfast-compliance-{batch:08}")
}

/// The files of batch `batch`: the data file, then the manifest.
pub fn render(format: ExportFormat, batch: u64, events: &[&ComplianceEvent]) -> Vec<OutputFile> {
    let data = match format {
        ExportFormat::Xml => xml(batch, events),
        ExportFormat::JsonLines => {
            let mut out = Vec::new();
            for e in events {
                let line = serde_json::to_string(&ExportedEvent::from(*e))
                    .expect("plain strings and numbers serialize");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            out
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for e in events {
                w.serialize(ExportedEvent::from(*e))
                    .expect("writing to memory cannot fail");
            }
            w.into_inner().expect("writing to memory cannot fail")
        }
    };
    let name = format!("{}.{}", batch_stem(batch), format.extension());
    let sha256 = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&data);
        digest.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let manifest = Manifest {
        batch,
        file: name.clone(),
        format: format.extension().to_string(),
        events: events.len() as u64,
        sha256,
    };
    vec![
        OutputFile { name, data },
        OutputFile {
            name: format!("{}.manifest.json", batch_stem(batch)),
            data: serde_json::to_vec_pretty(&manifest).expect("a manifest serializes"),
        },
    ]
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn xml(batch: u64, events: &[&ComplianceEvent]) -> Vec<u8> {
    let mut by_room: BTreeMap<&str, Vec<&ComplianceEvent>> = BTreeMap::new();
    for e in events {
        by_room.entry(e.room.as_str()).or_default().push(e);
    }
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = writeln!(x, r#"<Conversations batch="{batch}">"#);
    for (room, evs) in by_room {
        let start = evs.iter().map(|e| e.at).min().unwrap_or(0);
        let end = evs.iter().map(|e| e.at).max().unwrap_or(0);
        let _ = writeln!(
            x,
            r#"  <Conversation room="{}" start="{start}" end="{end}">"#,
            esc(room)
        );
        // Participants: everyone who appears, with their first join.
        let mut people: BTreeMap<&str, Option<u64>> = BTreeMap::new();
        for e in &evs {
            let first = people.entry(e.user.as_str()).or_default();
            if e.kind == EventKind::Join {
                *first = Some(first.map_or(e.at, |t| t.min(e.at)));
            }
        }
        let _ = writeln!(x, "    <Participants>");
        for (user, first) in people {
            match first {
                Some(t) => {
                    let _ = writeln!(
                        x,
                        r#"      <Participant uri="{}" firstJoin="{t}"/>"#,
                        esc(user)
                    );
                }
                None => {
                    let _ = writeln!(x, r#"      <Participant uri="{}"/>"#, esc(user));
                }
            }
        }
        let _ = writeln!(x, "    </Participants>");
        let section = |x: &mut String, tag: &str, keep: &dyn Fn(EventKind) -> bool| {
            let _ = writeln!(x, "    <{tag}s>");
            for e in evs.iter().filter(|e| keep(e.kind)) {
                let _ = writeln!(
                    x,
                    r#"      <{tag} eventId="{}" kind="{}" user="{}" time="{}" item="{}">{}</{tag}>"#,
                    esc(&e.id()),
                    e.kind.as_str(),
                    esc(&e.user),
                    e.at,
                    esc(&e.item),
                    esc(&e.text)
                );
            }
            let _ = writeln!(x, "    </{tag}s>");
        };
        section(&mut x, "Message", &|k| k == EventKind::Post);
        section(&mut x, "File", &|k| {
            matches!(k, EventKind::Upload | EventKind::Download)
        });
        section(&mut x, "Event", &|k| {
            !matches!(k, EventKind::Post | EventKind::Upload | EventKind::Download)
        });
        let _ = writeln!(x, "  </Conversation>");
    }
    let _ = writeln!(x, "</Conversations>");
    x.into_bytes()
}

/// Reads an export file back into events: what a pickup system sees. Used
/// by the simulator's checker and the tests; errors name what is wrong.
pub fn parse(format: ExportFormat, data: &[u8]) -> Result<Vec<ExportedEvent>, String> {
    match format {
        ExportFormat::JsonLines => data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
            .collect(),
        ExportFormat::Csv => csv::Reader::from_reader(data)
            .deserialize()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect(),
        ExportFormat::Xml => parse_xml(data),
    }
}

fn parse_xml(data: &[u8]) -> Result<Vec<ExportedEvent>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(data);
    let mut out = Vec::new();
    let mut room = String::new();
    let mut open: Option<ExportedEvent> = None;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("XML at {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(t) | Event::Empty(t) if t.name().as_ref() == b"Conversation" => {
                room = attr(&t, b"room")?.unwrap_or_default();
            }
            Event::Start(t) if matches!(t.name().as_ref(), b"Message" | b"File" | b"Event") => {
                let need = |k: &[u8]| -> Result<String, String> {
                    attr(&t, k)?.ok_or_else(|| {
                        format!("an event element without {}", String::from_utf8_lossy(k))
                    })
                };
                open = Some(ExportedEvent {
                    id: need(b"eventId")?,
                    kind: need(b"kind")?,
                    room: room.clone(),
                    user: need(b"user")?,
                    at: need(b"time")?.parse().map_err(|e| format!("time: {e}"))?,
                    item: need(b"item")?,
                    text: String::new(),
                });
            }
            Event::Text(t) => {
                if let Some(e) = &mut open {
                    let text = t.unescape().map_err(|e| e.to_string())?;
                    e.text.push_str(&text);
                }
            }
            Event::End(t) if matches!(t.name().as_ref(), b"Message" | b"File" | b"Event") => {
                out.extend(open.take());
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn attr(t: &quick_xml::events::BytesStart, key: &[u8]) -> Result<Option<String>, String> {
    for a in t.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        if a.key.as_ref() == key {
            return Ok(Some(
                a.unescape_value().map_err(|e| e.to_string())?.into_owned(),
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: EventKind, room: &str, text: &str) -> ComplianceEvent {
        ComplianceEvent {
            source: "chatdb".into(),
            seq,
            kind,
            room: room.into(),
            user: format!("u{seq}@corp.example"),
            at: 1_000 + seq,
            item: format!("item-{seq}"),
            text: text.into(),
        }
    }

    #[test]
    fn every_format_reads_back_to_the_events_it_was_given() {
        let events = [
            ev(1, EventKind::Join, "general", ""),
            ev(2, EventKind::Post, "general", "a <b> & \"c\", d\nnew line"),
            ev(3, EventKind::Upload, "deals", "plan.pdf"),
            ev(4, EventKind::RoomSaved, "deals", "the deals room"),
            ev(5, EventKind::Post, "deals", "ünïcödé, \u{1F600}"),
        ];
        let refs: Vec<&ComplianceEvent> = events.iter().collect();
        for format in [
            ExportFormat::Xml,
            ExportFormat::JsonLines,
            ExportFormat::Csv,
        ] {
            let files = render(format, 7, &refs);
            assert_eq!(
                files[0].name,
                format!("holdfast-compliance-00000007.{}", format.extension())
            );
            let mut got = parse(format, &files[0].data).unwrap();
            got.sort_by(|a, b| a.id.cmp(&b.id));
            let want: Vec<ExportedEvent> = events.iter().map(ExportedEvent::from).collect();
            assert_eq!(got, want, "{format:?}");
            let manifest: Manifest = serde_json::from_slice(&files[1].data).unwrap();
            assert_eq!((manifest.batch, manifest.events), (7, 5));
            // Pure: the same batch gives the same bytes.
            assert_eq!(render(format, 7, &refs), files);
        }
        let xml = String::from_utf8(render(ExportFormat::Xml, 7, &refs)[0].data.clone()).unwrap();
        assert!(
            xml.contains(r#"<Participant uri="u1@corp.example" firstJoin="1001"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<Conversation room="deals" start="1003" end="1005">"#),
            "{xml}"
        );
    }

    #[test]
    fn a_torn_or_foreign_file_is_an_error_not_an_empty_batch() {
        assert!(parse(ExportFormat::JsonLines, b"{\"id\":\"x\"").is_err());
        assert!(parse(ExportFormat::Csv, b"id,kind\nx").is_err());
        let no_id = b"<Conversations><Conversation room=\"r\"><Message kind=\"post\">";
        assert!(parse(ExportFormat::Xml, no_id)
            .unwrap_err()
            .contains("eventId"));
    }
}
