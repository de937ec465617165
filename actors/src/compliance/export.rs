//! Compliance adapters: a batch of events as export files.
//!
//! Rendering is pure (the same batch always gives the same bytes), so a
//! batch written again after a crash overwrites its earlier files with
//! identical ones. Each batch gives a data file and a manifest
//! `holdfast-compliance-<batch>.manifest.json`, written last by the host:
//! a pickup system takes a batch once its manifest exists. The files
//! uploaded in the batch's interval are written before it, under
//! `files/<sha256>` ([`upload_path`]), and listed in the manifest with
//! their size, hash, room and uploader ([`UploadEntry`]); one no longer
//! there is listed as `missing`. The Compliance service removes a batch's
//! files once the pickup system acknowledges it.
//!
//! - **XML** (default): the shape of the Lync compliance XML: one
//!   `<Conversation>` per room with its participants (first join of each),
//!   messages, files and other events, and the start and end times. Every
//!   event is one element carrying its `eventId`.
//! - **JSON lines**: one event per line.
//! - **CSV**: a header, then one event per row.
//!
//! Every file says which [`FORMAT_VERSION`] it follows (the XML root's
//! `version`, each JSON line's and CSV row's `format_version`, the
//! manifest's `format_version`); files without one are version 1. Times
//! are milliseconds since the UNIX epoch, with the same instant beside
//! them in ISO 8601 UTC ([`utc_iso8601`]): `time`/`timeUtc`,
//! `start`/`startUtc`, `end`/`endUtc`, `firstJoin`/`firstJoinUtc` in XML,
//! `at`/`time_utc` in JSON lines and CSV.
//!
//! Any text round-trips, and an XML file is always well-formed XML 1.0:
//! values are escaped, and CR, LF and TAB in attribute values (CR in
//! element text) are written as character references (`&#13;`, `&#10;`,
//! `&#9;`), which a parser keeps instead of normalising them. A value
//! holding a character XML 1.0 cannot carry at all (U+0000 to U+001F
//! except TAB, LF and CR; U+FFFE; U+FFFF) is written as the base64 of its
//! UTF-8 bytes, and its element's `base64` attribute lists it by name
//! (`text` for the element's content), e.g.
//! `<Message eventId="chatdb-7" ... base64="text">YmVsbAc=</Message>`.
//! JSON (escapes) and CSV (quoting) carry any text as it is.

use crate::core::output::OutputFile;
use crate::core::protocol::compliance::{ComplianceEvent, EventKind};
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
    /// The event's details (a file's `size` and `sha256`, what a room
    /// change changed) as a JSON object in text; empty when it has none
    /// (and in files written before details were exported).
    #[serde(default)]
    pub details: String,
}

impl From<&ComplianceEvent> for ExportedEvent {
    fn from(e: &ComplianceEvent) -> Self {
        ExportedEvent {
            id: e.id(),
            kind: e.kind.as_str().to_string(),
            room: e.room.to_string(),
            user: e.user.to_string(),
            at: e.at,
            item: e.item.clone(),
            text: e.text.clone(),
            details: details_text(&e.details),
        }
    }
}

/// An event's details as they are exported: a JSON object in text (keys
/// in order), or nothing.
pub fn details_text(details: &BTreeMap<String, String>) -> String {
    if details.is_empty() {
        String::new()
    } else {
        serde_json::to_string(details).expect("strings serialize")
    }
}

/// The version of the export files this build writes (see the module
/// documentation). Version 2 added it, the UTC times and base64 values.
pub const FORMAT_VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

/// An event as a JSON line or CSV row is written: [`ExportedEvent`]'s
/// fields, then the time in UTC and the format version.
#[derive(Serialize)]
struct ExportRow<'a> {
    id: String,
    kind: &'a str,
    room: &'a str,
    user: &'a str,
    at: u64,
    item: &'a str,
    text: &'a str,
    time_utc: String,
    format_version: u32,
    details: String,
}

impl<'a> From<&'a ComplianceEvent> for ExportRow<'a> {
    fn from(e: &'a ComplianceEvent) -> Self {
        ExportRow {
            id: e.id(),
            kind: e.kind.as_str(),
            room: &e.room,
            user: &e.user,
            at: e.at,
            item: &e.item,
            text: &e.text,
            time_utc: utc_iso8601(e.at),
            format_version: FORMAT_VERSION,
            details: details_text(&e.details),
        }
    }
}

/// The manifest of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The [`FORMAT_VERSION`] of the batch's files (1 if absent).
    #[serde(default = "version_1")]
    pub format_version: u32,
    pub batch: u64,
    pub file: String,
    pub format: String,
    pub events: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
    /// When the batch's first and last events happened (absent in
    /// manifests written before batches carried files, and when the batch
    /// is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Every events file of the batch (today one: `file`).
    #[serde(default)]
    pub event_files: Vec<ManifestFile>,
    /// Every file uploaded in the batch's interval, one entry per upload
    /// event, in event order.
    #[serde(default)]
    pub uploads: Vec<UploadEntry>,
}

/// The span of a batch's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub first: u64,
    pub last: u64,
    pub first_utc: String,
    pub last_utc: String,
}

/// A file of the batch in the output folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path in the output folder.
    pub name: String,
    pub size: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// An uploaded file of the batch. Its content is `files/<sha256>` in the
/// output folder (content-addressed: a file uploaded twice is stored
/// once), unless `missing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEntry {
    /// Its path in the output folder: `files/<sha256>`.
    pub name: String,
    /// The upload's event id (as in the events file).
    pub event_id: String,
    /// The Web service's file id.
    pub file_id: String,
    /// The name the uploader gave it.
    pub file_name: String,
    pub room: String,
    pub uploader: String,
    /// When it was uploaded (ms since the epoch).
    pub at: u64,
    /// Size and SHA-256 as the upload event recorded them.
    pub size: u64,
    pub sha256: String,
    /// The content could not be exported (the Web service no longer has
    /// it): the file `name` is not in the folder.
    #[serde(default)]
    pub missing: bool,
    /// Why it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Path in the output folder of an uploaded file with SHA-256 `sha256`.
pub fn upload_path(sha256: &str) -> String {
    format!("{UPLOADS_DIR}{sha256}")
}

/// The output folder's subfolder of uploaded files.
pub const UPLOADS_DIR: &str = "files/";

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The upload entry of upload event `e` (before its content is known to
/// be there): `None` for another kind of event, or one without a 64-digit
/// hex `sha256`.
pub fn upload_entry(e: &ComplianceEvent) -> Option<UploadEntry> {
    if e.kind != EventKind::Upload {
        return None;
    }
    let sha256 = e.details.get("sha256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(UploadEntry {
        name: upload_path(&sha256),
        event_id: e.id(),
        file_id: e.item.clone(),
        file_name: e.text.clone(),
        room: e.room.to_string(),
        uploader: e.user.to_string(),
        at: e.at,
        size: e
            .details
            .get("size")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        sha256,
        missing: false,
        reason: None,
    })
}

pub fn batch_stem(batch: u64) -> String {
    format!("holdfast-compliance-{batch:08}")
}

/// The name of batch `batch`'s manifest.
pub fn manifest_name(batch: u64) -> String {
    format!("{}.manifest.json", batch_stem(batch))
}

/// The files of batch `batch`: the data file, then the manifest.
pub fn render(format: ExportFormat, batch: u64, events: &[&ComplianceEvent]) -> Vec<OutputFile> {
    render_batch(format, batch, events, Vec::new())
}

/// The files of batch `batch` whose uploaded files are `uploads` (written
/// before, under their own names): the data file, then the manifest.
pub fn render_batch(
    format: ExportFormat,
    batch: u64,
    events: &[&ComplianceEvent],
    uploads: Vec<UploadEntry>,
) -> Vec<OutputFile> {
    let data = match format {
        ExportFormat::Xml => xml(batch, events),
        ExportFormat::JsonLines => {
            let mut out = Vec::new();
            for e in events {
                let line = serde_json::to_string(&ExportRow::from(*e))
                    .expect("plain strings and numbers serialize");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            out
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for e in events {
                w.serialize(ExportRow::from(*e))
                    .expect("writing to memory cannot fail");
            }
            w.into_inner().expect("writing to memory cannot fail")
        }
    };
    let name = format!("{}.{}", batch_stem(batch), format.extension());
    let sha256 = sha256_hex(&data);
    let first = events.iter().map(|e| e.at).min();
    let last = events.iter().map(|e| e.at).max();
    let interval = first.zip(last).map(|(first, last)| Interval {
        first,
        last,
        first_utc: utc_iso8601(first),
        last_utc: utc_iso8601(last),
    });
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        batch,
        file: name.clone(),
        format: format.extension().to_string(),
        events: events.len() as u64,
        sha256: sha256.clone(),
        interval,
        event_files: vec![ManifestFile {
            name: name.clone(),
            size: data.len() as u64,
            sha256,
        }],
        uploads,
    };
    vec![
        OutputFile { name, data },
        OutputFile {
            name: manifest_name(batch),
            data: serde_json::to_vec_pretty(&manifest).expect("a manifest serializes"),
        },
    ]
}

/// `ms` since the UNIX epoch in ISO 8601 UTC with milliseconds, e.g.
/// `2026-12-07T03:13:14.123Z` (proleptic Gregorian calendar; a year after
/// 9999 gets a `+`, as ISO 8601 expands it). Pure: no clock, no time zone.
pub fn utc_iso8601(ms: u64) -> String {
    let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm,
    // counted from 0000-03-01 so that leap days end the year).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let year = if year > 9999 {
        format!("+{year}")
    } else {
        format!("{year:04}")
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000
    )
}

/// Whether XML 1.0 allows `c` in a document (its `Char` production).
pub fn xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` escaped as XML text, or as an attribute value: CR always, and LF
/// and TAB in attributes, as character references (a parser normalises
/// the literal characters away). `None` if `s` holds a character XML
/// cannot carry.
fn xml_escape(s: &str, attribute: bool) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = b(0) << 16 | b(1) << 8 | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let chunks = s.len() / 4;
    let mut out = Vec::with_capacity(chunks * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && ci + 1 < chunks) {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                _ if i >= 4 - pad => 0,
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            n = n << 6 | u32::from(v);
        }
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - pad]);
    }
    Some(out)
}

/// The start tag of an element being written: its attributes, and which
/// values had to be written in base64.
struct Tag {
    x: String,
    base64: Vec<&'static str>,
}

impl Tag {
    fn new(name: &str) -> Tag {
        Tag {
            x: format!("<{name}"),
            base64: Vec::new(),
        }
    }

    /// An attribute whose value is any text.
    fn text(mut self, name: &'static str, value: &str) -> Tag {
        let v = xml_escape(value, true).unwrap_or_else(|| {
            self.base64.push(name);
            base64_encode(value.as_bytes())
        });
        let _ = write!(self.x, r#" {name}="{v}""#);
        self
    }

    /// An attribute holding a time: ms since the epoch, and `<name>Utc`.
    fn time(mut self, name: &str, ms: u64) -> Tag {
        let _ = write!(self.x, r#" {name}="{ms}" {name}Utc="{}""#, utc_iso8601(ms));
        self
    }

    /// An attribute written as it is (a number, a kind, a version).
    fn plain(mut self, name: &str, value: &str) -> Tag {
        let _ = write!(self.x, r#" {name}="{value}""#);
        self
    }

    /// The tag, closed with `end` (`>` or `/>`).
    fn end(mut self, end: &str) -> String {
        if !self.base64.is_empty() {
            let _ = write!(self.x, r#" base64="{}""#, self.base64.join(" "));
        }
        self.x.push_str(end);
        self.x
    }
}

fn xml(batch: u64, events: &[&ComplianceEvent]) -> Vec<u8> {
    let mut by_room: BTreeMap<&str, Vec<&ComplianceEvent>> = BTreeMap::new();
    for e in events {
        by_room.entry(e.room.as_str()).or_default().push(e);
    }
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = writeln!(
        x,
        r#"<Conversations version="{FORMAT_VERSION}" batch="{batch}">"#
    );
    for (room, evs) in by_room {
        let start = evs.iter().map(|e| e.at).min().unwrap_or(0);
        let end = evs.iter().map(|e| e.at).max().unwrap_or(0);
        let tag = Tag::new("Conversation")
            .text("room", room)
            .time("start", start)
            .time("end", end);
        let _ = writeln!(x, "  {}", tag.end(">"));
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
            let mut tag = Tag::new("Participant").text("uri", user);
            if let Some(t) = first {
                tag = tag.time("firstJoin", t);
            }
            let _ = writeln!(x, "      {}", tag.end("/>"));
        }
        let _ = writeln!(x, "    </Participants>");
        let section = |x: &mut String, name: &str, keep: &dyn Fn(EventKind) -> bool| {
            let _ = writeln!(x, "    <{name}s>");
            for e in evs.iter().filter(|e| keep(e.kind)) {
                let mut tag = Tag::new(name)
                    .text("eventId", &e.id())
                    .plain("kind", e.kind.as_str())
                    .text("user", &e.user)
                    .time("time", e.at)
                    .text("item", &e.item);
                if !e.details.is_empty() {
                    tag = tag.text("details", &details_text(&e.details));
                }
                let text = xml_escape(&e.text, false).unwrap_or_else(|| {
                    tag.base64.push("text");
                    base64_encode(e.text.as_bytes())
                });
                let _ = writeln!(x, "      {}{text}</{name}>", tag.end(">"));
            }
            let _ = writeln!(x, "    </{name}s>");
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

/// Why an export file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Csv(#[from] csv::Error),
    /// The XML is not well-formed.
    #[error("XML at {position}: {source}")]
    Xml {
        position: u64,
        source: quick_xml::Error,
    },
    /// An attribute, or an element's text, cannot be read.
    #[error(transparent)]
    XmlValue(#[from] quick_xml::Error),
    #[error(transparent)]
    XmlAttribute(#[from] quick_xml::events::attributes::AttrError),
    #[error("version {value:?}: {source}")]
    Version {
        value: String,
        source: std::num::ParseIntError,
    },
    /// Written by a later build, in a format this one does not know.
    #[error("format version {0}: this build reads up to {FORMAT_VERSION}")]
    TooNew(u32),
    #[error("an event element without {0}")]
    Missing(String),
    #[error("time: {0}")]
    Time(std::num::ParseIntError),
    #[error("{element}: {name} is not base64 of UTF-8 text")]
    NotBase64 { element: String, name: String },
}

/// Reads an export file back into events: what a pickup system sees. Used
/// by the simulator's checker and the tests; errors name what is wrong.
pub fn parse(format: ExportFormat, data: &[u8]) -> Result<Vec<ExportedEvent>, ParseError> {
    match format {
        ExportFormat::JsonLines => data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).map_err(ParseError::from))
            .collect(),
        ExportFormat::Csv => csv::Reader::from_reader(data)
            .deserialize()
            .map(|r| r.map_err(ParseError::from))
            .collect(),
        ExportFormat::Xml => parse_xml(data),
    }
}

fn parse_xml(data: &[u8]) -> Result<Vec<ExportedEvent>, ParseError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(data);
    let mut out = Vec::new();
    let mut room = String::new();
    // The event being read, and whether its text is in base64.
    let mut open: Option<(ExportedEvent, bool)> = None;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|source| ParseError::Xml {
                position: reader.buffer_position(),
                source,
            })?;
        let empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(t) if t.name().as_ref() == b"Conversations" => {
                if let Some(v) = attr(&t, b"version")? {
                    let v: u32 = v.parse().map_err(|source| ParseError::Version {
                        value: v.clone(),
                        source,
                    })?;
                    if v > FORMAT_VERSION {
                        return Err(ParseError::TooNew(v));
                    }
                }
            }
            Event::Start(t) | Event::Empty(t) if t.name().as_ref() == b"Conversation" => {
                room = field(&t, b"room")?.unwrap_or_default();
            }
            Event::Start(t) | Event::Empty(t)
                if matches!(t.name().as_ref(), b"Message" | b"File" | b"Event") =>
            {
                let need = |k: &[u8]| -> Result<String, ParseError> {
                    field(&t, k)?
                        .ok_or_else(|| ParseError::Missing(String::from_utf8_lossy(k).into_owned()))
                };
                let event = ExportedEvent {
                    id: need(b"eventId")?,
                    kind: need(b"kind")?,
                    room: room.clone(),
                    user: need(b"user")?,
                    at: need(b"time")?.parse().map_err(ParseError::Time)?,
                    item: need(b"item")?,
                    text: String::new(),
                    details: field(&t, b"details")?.unwrap_or_default(),
                };
                if empty {
                    out.push(event);
                } else {
                    open = Some((event, in_base64(&t, b"text")?));
                }
            }
            Event::Text(t) => {
                if let Some((e, _)) = &mut open {
                    let text = t.unescape()?;
                    e.text.push_str(&text);
                }
            }
            Event::End(t) if matches!(t.name().as_ref(), b"Message" | b"File" | b"Event") => {
                if let Some((mut e, base64)) = open.take() {
                    if base64 {
                        e.text = from_base64(&e.id, "text", &e.text)?;
                    }
                    out.push(e);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn attr(t: &quick_xml::events::BytesStart, key: &[u8]) -> Result<Option<String>, ParseError> {
    for a in t.attributes() {
        let a = a?;
        if a.key.as_ref() == key {
            return Ok(Some(a.unescape_value()?.into_owned()));
        }
    }
    Ok(None)
}

/// Whether the element's `base64` attribute lists `name`.
fn in_base64(t: &quick_xml::events::BytesStart, name: &[u8]) -> Result<bool, ParseError> {
    Ok(attr(t, b"base64")?
        .is_some_and(|list| list.split_ascii_whitespace().any(|n| n.as_bytes() == name)))
}

fn from_base64(element: &str, name: &str, value: &str) -> Result<String, ParseError> {
    base64_decode(value.trim())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ParseError::NotBase64 {
            element: element.to_string(),
            name: name.to_string(),
        })
}

/// A text attribute, decoded from base64 if the element says it is.
fn field(t: &quick_xml::events::BytesStart, key: &[u8]) -> Result<Option<String>, ParseError> {
    match attr(t, key)? {
        Some(v) if in_base64(t, key)? => {
            let name = String::from_utf8_lossy(key);
            let element = String::from_utf8_lossy(t.name().as_ref()).into_owned();
            from_base64(&element, &name, &v).map(Some)
        }
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::Seq;

    fn ev(seq: u64, kind: EventKind, room: &str, text: &str) -> ComplianceEvent {
        ComplianceEvent {
            source: "chatdb".into(),
            seq: Seq(seq),
            kind,
            room: room.into(),
            user: format!("u{seq}@corp.example").into(),
            at: 1_000 + seq,
            item: format!("item-{seq}"),
            text: text.into(),
            details: if kind == EventKind::Upload {
                [
                    ("size".into(), "12".into()),
                    ("sha256".into(), "ab".repeat(32)),
                ]
                .into()
            } else {
                BTreeMap::new()
            },
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
            xml.contains(r#"<Participant uri="u1@corp.example" firstJoin="1001" firstJoinUtc="1970-01-01T00:00:01.001Z"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<Conversation room="deals" start="1003" startUtc="1970-01-01T00:00:01.003Z" end="1005" endUtc="1970-01-01T00:00:01.005Z">"#),
            "{xml}"
        );
    }

    #[test]
    fn every_file_says_its_format_version_and_utc_times() {
        let mut post = ev(2, EventKind::Post, "general", "hi");
        post.at = 1_796_613_194_123;
        let refs = [&post];
        let utc = "2026-12-07T03:13:14.123Z";
        for format in [
            ExportFormat::Xml,
            ExportFormat::JsonLines,
            ExportFormat::Csv,
        ] {
            let files = render(format, 3, &refs);
            let data = String::from_utf8(files[0].data.clone()).unwrap();
            let manifest: Manifest = serde_json::from_slice(&files[1].data).unwrap();
            assert_eq!(manifest.format_version, FORMAT_VERSION);
            match format {
                ExportFormat::Xml => {
                    assert!(
                        data.contains(r#"<Conversations version="2" batch="3">"#),
                        "{data}"
                    );
                    assert!(
                        data.contains(&format!(r#"time="1796613194123" timeUtc="{utc}""#)),
                        "{data}"
                    );
                }
                ExportFormat::JsonLines => {
                    let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                    assert_eq!(v["format_version"], 2, "{data}");
                    assert_eq!(v["time_utc"], utc, "{data}");
                    assert_eq!(v["at"], 1_796_613_194_123u64, "{data}");
                }
                ExportFormat::Csv => {
                    let mut lines = data.lines();
                    assert_eq!(
                        lines.next(),
                        Some("id,kind,room,user,at,item,text,time_utc,format_version,details")
                    );
                    assert!(
                        lines.next().unwrap().ends_with(&format!(",{utc},2,")),
                        "{data}"
                    );
                }
            }
        }
    }

    /// A file event carries its size and SHA-256 into every format, and a
    /// room change what it changed; they read back as the same JSON text.
    #[test]
    fn details_are_exported_in_every_format() {
        let mut up = ev(1, EventKind::Upload, "r", "plan.txt");
        up.details = [
            ("size".to_string(), "18".to_string()),
            ("sha256".to_string(), "0f".repeat(32)),
        ]
        .into();
        let mut room = ev(2, EventKind::RoomSaved, "r", "new description");
        room.details = [("members_added".to_string(), "a@x,b@y".to_string())].into();
        let post = ev(3, EventKind::Post, "r", "hi");
        for format in [
            ExportFormat::Xml,
            ExportFormat::JsonLines,
            ExportFormat::Csv,
        ] {
            let files = render(format, 1, &[&up, &room, &post]);
            let mut back = parse(format, &files[0].data).unwrap();
            // XML groups messages, files and other events apart.
            back.sort_by(|a, b| a.id.cmp(&b.id));
            let details: Vec<&str> = back.iter().map(|e| e.details.as_str()).collect();
            assert_eq!(
                details,
                [
                    format!(r#"{{"sha256":"{}","size":"18"}}"#, "0f".repeat(32)).as_str(),
                    r#"{"members_added":"a@x,b@y"}"#,
                    ""
                ],
                "{format:?}"
            );
        }
    }

    #[test]
    fn version_1_files_still_read() {
        let want = ExportedEvent {
            id: "chatdb-2".into(),
            kind: "post".into(),
            room: "general".into(),
            user: "u2@corp.example".into(),
            at: 1002,
            item: "item-2".into(),
            text: "a <b>".into(),
            details: String::new(),
        };
        let xml = br#"<?xml version="1.0" encoding="utf-8"?>
<Conversations batch="7">
  <Conversation room="general" start="1002" end="1002">
    <Participants>
      <Participant uri="u2@corp.example"/>
    </Participants>
    <Messages>
      <Message eventId="chatdb-2" kind="post" user="u2@corp.example" time="1002" item="item-2">a &lt;b&gt;</Message>
    </Messages>
    <Files>
    </Files>
    <Events>
    </Events>
  </Conversation>
</Conversations>
"#;
        assert_eq!(parse(ExportFormat::Xml, xml).unwrap(), vec![want.clone()]);
        let jsonl = br#"{"id":"chatdb-2","kind":"post","room":"general","user":"u2@corp.example","at":1002,"item":"item-2","text":"a <b>"}
"#;
        assert_eq!(
            parse(ExportFormat::JsonLines, jsonl).unwrap(),
            vec![want.clone()]
        );
        let csv = b"id,kind,room,user,at,item,text\nchatdb-2,post,general,u2@corp.example,1002,item-2,a <b>\n";
        assert_eq!(parse(ExportFormat::Csv, csv).unwrap(), vec![want]);
        let manifest = br#"{"batch":7,"file":"f.xml","format":"xml","events":1,"sha256":"00"}"#;
        let m: Manifest = serde_json::from_slice(manifest).unwrap();
        assert_eq!((m.format_version, m.batch), (1, 7));
        // A newer version is refused rather than misread.
        let newer = String::from_utf8(xml.to_vec())
            .unwrap()
            .replace(r#"batch="7""#, r#"version="3" batch="7""#);
        let err = parse(ExportFormat::Xml, newer.as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::TooNew(3)), "{err}");
        assert!(err.to_string().contains("format version 3"), "{err}");
    }

    #[test]
    fn utc_times_are_iso_8601() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (94_694_399_000, "1972-12-31T23:59:59.000Z"),
            (946_684_799_999, "1999-12-31T23:59:59.999Z"),
            // 2000 is a leap year (divisible by 400), 2100 is not, 2024 is.
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
            (1_796_613_194_123, "2026-12-07T03:13:14.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
            (13_574_563_200_000, "2400-02-29T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (253_402_300_800_000, "+10000-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(utc_iso8601(ms), want, "{ms}");
        }
        // Any u64 is a time (the field comes from a peer).
        assert!(utc_iso8601(u64::MAX).ends_with(".615Z"));
        // The same as humantime (an RFC 3339 formatter) up to year 9999,
        // every 997 hours and a few ms.
        let mut ms = 0u64;
        while ms < 253_402_300_800_000 {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            assert_eq!(
                utc_iso8601(ms),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
            ms += 997 * 3_600_000 + 7;
        }
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "=Zg="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    /// Checks what `quick_xml` does not (it reads without checking
    /// characters): the document is UTF-8 whose every character, and every
    /// character reference, is an XML 1.0 `Char`; no CR and no raw TAB or
    /// LF in an attribute value (a parser would normalise them); elements
    /// nest and close, under one root. Returns `parse`'s events.
    fn well_formed(doc: &[u8]) -> Vec<ExportedEvent> {
        use quick_xml::events::Event;
        let text = std::str::from_utf8(doc).expect("UTF-8");
        if let Some(bad) = text.chars().find(|c| !xml_char(*c) || *c == '\r') {
            panic!("character U+{:04X} in the document", bad as u32);
        }
        for (i, _) in text.match_indices("&#") {
            let rest = &text[i + 2..];
            let end = rest.find(';').expect("a closed character reference");
            let code = match rest[..end].strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => rest[..end].parse(),
            }
            .expect("a number");
            assert!(
                char::from_u32(code).is_some_and(xml_char),
                "&#{};",
                &rest[..end]
            );
        }
        let mut reader = quick_xml::Reader::from_reader(doc);
        reader.config_mut().check_end_names = true;
        let (mut depth, mut roots) = (0usize, 0usize);
        let mut buf = Vec::new();
        let attrs = |t: &quick_xml::events::BytesStart| {
            for a in t.attributes() {
                let a = a.expect("a well-formed attribute");
                assert!(
                    !a.value.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r')),
                    "raw whitespace in {}",
                    String::from_utf8_lossy(&a.value)
                );
                a.unescape_value().expect("an attribute value");
            }
        };
        loop {
            match reader.read_event_into(&mut buf).expect("well-formed XML") {
                Event::Start(t) => {
                    roots += usize::from(depth == 0);
                    depth += 1;
                    attrs(&t);
                }
                Event::Empty(t) => {
                    roots += usize::from(depth == 0);
                    attrs(&t);
                }
                Event::End(_) => depth -= 1,
                Event::Text(t) => {
                    t.unescape().expect("text");
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        assert_eq!((depth, roots), (0, 1), "one root, closed");
        parse(ExportFormat::Xml, doc).expect("parse reads it back")
    }

    /// Renders `events` in `format` and reads them back, sorted by id.
    fn round_trip(format: ExportFormat, events: &[ComplianceEvent]) -> Vec<ExportedEvent> {
        let refs: Vec<&ComplianceEvent> = events.iter().collect();
        let data = &render(format, 1, &refs)[0].data;
        let mut got = match format {
            ExportFormat::Xml => well_formed(data),
            _ => parse(format, data).unwrap(),
        };
        got.sort_by(|a, b| a.id.cmp(&b.id));
        got
    }

    fn expected(events: &[ComplianceEvent]) -> Vec<ExportedEvent> {
        let mut want: Vec<ExportedEvent> = events.iter().map(ExportedEvent::from).collect();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        want
    }

    const KINDS: [EventKind; 7] = [
        EventKind::Join,
        EventKind::Post,
        EventKind::Upload,
        EventKind::Download,
        EventKind::Leave,
        EventKind::Read,
        EventKind::RoomSaved,
    ];

    /// An event whose every text field holds `s` (its room too if `room`
    /// is `None`).
    fn event_with(seq: u64, s: &str, room: Option<&str>) -> ComplianceEvent {
        ComplianceEvent {
            source: format!("src{s}"),
            seq: Seq(seq),
            kind: KINDS[seq as usize % KINDS.len()],
            room: room.map_or_else(|| format!("r{s}"), str::to_string).into(),
            user: format!("{s}@corp.example").into(),
            at: seq * 1_234_567,
            item: s.to_string(),
            text: format!("a{s}b"),
            details: [("note".to_string(), format!("c{s}d"))].into(),
        }
    }

    #[test]
    fn xml_export_is_well_formed_for_any_text_every_code_point() {
        // Every char in every text field: the room (a conversation), the
        // event id, the user (an attribute, and a participant's uri), the
        // item, the text (an element's content). Below U+3000, and every
        // char XML forbids, alone; above, 16 chars XML allows in a row per
        // string (a string of them takes the same path, escaping, as one).
        let chars: Vec<char> = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
        assert_eq!(chars.len(), 0x110000 - 0x800);
        let (single, grouped): (Vec<char>, Vec<char>) = chars
            .iter()
            .partition(|c| (**c as u32) < 0x3000 || !xml_char(**c));
        assert_eq!(single.iter().filter(|c| !xml_char(**c)).count(), 29 + 2);
        let strings: Vec<String> = single
            .iter()
            .map(|c| c.to_string())
            .chain(grouped.chunks(16).map(|g| g.iter().collect()))
            .collect();
        let mut seq = 0;
        for chunk in strings.chunks(4096) {
            let events: Vec<ComplianceEvent> = chunk
                .iter()
                .map(|s| {
                    seq += 1;
                    event_with(seq, s, None)
                })
                .collect();
            assert_eq!(
                round_trip(ExportFormat::Xml, &events),
                expected(&events),
                "{:?}..{:?}",
                chunk[0],
                chunk.last().unwrap()
            );
        }
    }

    /// Strings that mix what XML, JSON and CSV treat specially.
    fn nasty_strings(n: usize) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed_c0de);
        let special: Vec<char> = "<>&\"'\r\n\t,;\\]]>=/ \u{0}\u{7}\u{1b}\u{b}\u{c}\u{7f}\u{85}\u{2028}\u{feff}\u{fffd}\u{fffe}\u{ffff}\u{e000}\u{d7ff}\u{10000}\u{1f600}\u{10ffff}"
            .chars()
            .collect();
        let pieces = [
            "]]>",
            "\r\n",
            "&amp;",
            "&#13;",
            "<![CDATA[",
            "\"\"",
            "--",
            "=?",
        ];
        (0..n)
            .map(|_| {
                let len = rng.gen_range(0..24);
                let mut s = String::new();
                for _ in 0..len {
                    match rng.gen_range(0..10) {
                        0..=2 => s.push(special[rng.gen_range(0..special.len())]),
                        3 => s.push(char::from_u32(rng.gen_range(0..0x20)).unwrap()),
                        4 => s.push_str(pieces[rng.gen_range(0..pieces.len())]),
                        5 => s.push(rng.gen::<char>()),
                        _ => s.push(rng.gen_range('a'..='z')),
                    }
                }
                s
            })
            .collect()
    }

    /// An event for each of `texts`, numbered from `first`.
    fn events_of(texts: &[String], first: u64) -> Vec<ComplianceEvent> {
        texts
            .iter()
            .enumerate()
            .map(|(j, s)| event_with(first + j as u64, s, None))
            .collect()
    }

    #[test]
    fn xml_export_is_well_formed_for_any_text_random_strings() {
        let strings = nasty_strings(5000);
        for (i, chunk) in strings.chunks(250).enumerate() {
            let events = events_of(chunk, (i * 250) as u64);
            assert_eq!(round_trip(ExportFormat::Xml, &events), expected(&events));
        }
    }

    #[test]
    fn json_lines_and_csv_round_trip_any_text() {
        let strings = nasty_strings(5000);
        let chars: Vec<char> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| (*c as u32) < 0x3000 || (*c as u32).is_multiple_of(251))
            .collect();
        let mut all: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        all.extend(strings);
        for format in [ExportFormat::JsonLines, ExportFormat::Csv] {
            for (i, chunk) in all.chunks(1000).enumerate() {
                let events = events_of(chunk, (i * 1000) as u64);
                assert_eq!(round_trip(format, &events), expected(&events), "{format:?}");
            }
        }
    }

    #[test]
    fn a_torn_or_foreign_file_is_an_error_not_an_empty_batch() {
        assert!(parse(ExportFormat::JsonLines, b"{\"id\":\"x\"").is_err());
        assert!(parse(ExportFormat::Csv, b"id,kind\nx").is_err());
        let no_id = b"<Conversations><Conversation room=\"r\"><Message kind=\"post\">";
        let err = parse(ExportFormat::Xml, no_id).unwrap_err();
        assert!(
            matches!(&err, ParseError::Missing(k) if k == "eventId"),
            "{err}"
        );
        assert_eq!(err.to_string(), "an event element without eventId");
    }
}
