//! eDiscovery export of the IM/CDR archive: the files `holdfast archive
//! export` writes, one row at a time as the pages arrive (nothing holds
//! the whole export in memory), each file hashed while it is written so
//! that the manifest names every file's size and SHA-256.
//!
//! Formats: `eml` (one RFC 5322 message per row, in folders of
//! [`EML_PER_FOLDER`]), `jsonl` (`messages.jsonl`, one object per row, as
//! `archive query --json` prints it) and `csv` (`messages.csv`, a header
//! row, the same fields). Every export also writes the legal holds
//! (`holds.jsonl`) and, last, `manifest.json`: a folder without a manifest
//! is an export that did not finish.
//!
//! Everything is private to the user who runs the export: folders 0700,
//! files 0600, whatever the umask.

use crate::archive_db::ArchivedMessage;
use holdfast_actors::core::protocol::LegalHold;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// EML files per folder: a million rows make a thousand folders of a
/// thousand files, which every file system and file manager lists quickly.
pub const EML_PER_FOLDER: u64 = 1_000;
/// The version of the export's layout, named in its manifest.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} is not empty: choose an empty or new folder, or pass --force to write into it")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Eml,
    Jsonl,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Eml => "eml",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// A file being written: counts and hashes what goes through it.
struct Hashed {
    /// Relative to the export folder, with `/`.
    name: String,
    path: PathBuf,
    out: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
}

impl Write for Hashed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One file of the export as the manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Hashed {
    /// Hands the file to the kernel and names it. Not synced one by one:
    /// an export of a million IMs as EML would spend hours in a million
    /// fsyncs; [`sync_folder`] makes them all durable at once before the
    /// manifest is written.
    fn finish(self) -> Result<FileEntry, ExportError> {
        Ok(self.close()?.0)
    }

    fn close(mut self) -> Result<(FileEntry, File), ExportError> {
        self.out.flush().map_err(io_at(&self.path))?;
        let file = self.out.into_inner().map_err(|e| ExportError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        let entry = FileEntry {
            path: self.name,
            bytes: self.bytes,
            sha256: hex(&self.hash.finalize()),
        };
        Ok((entry, file))
    }
}

/// Makes everything written under `dir` durable, data and folder entries:
/// one `syncfs` of its file system instead of an fsync per file.
fn sync_folder(dir: &Path) -> Result<(), ExportError> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(io_at(dir))?;
    nix::unistd::syncfs(d.as_raw_fd()).map_err(|e| ExportError::Io {
        path: dir.to_path_buf(),
        source: e.into(),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a file, hex, read in pieces (for checks of a manifest).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// A private folder (0700, also when it existed), with its parents.
fn private_dir(path: &Path) -> Result<(), ExportError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_at(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_at(path))
}

/// A private file (0600, also when `--force` writes over one).
fn private_file(dir: &Path, name: &str) -> Result<Hashed, ExportError> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_at(&path))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_at(&path))?;
    Ok(Hashed {
        name: name.to_string(),
        path,
        out: BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    })
}

/// Where the rows go, by format.
enum Sink {
    Eml,
    Jsonl(Hashed),
    Csv(Box<csv::Writer<Hashed>>),
}

/// An export being written, row by row.
pub struct Export {
    dir: PathBuf,
    format: Format,
    sink: Sink,
    rows: u64,
    kinds: BTreeMap<String, u64>,
    files: Vec<FileEntry>,
}

impl Export {
    /// Refuses a `dir` that holds anything, unless `force`.
    pub fn check(dir: &Path, force: bool) -> Result<(), ExportError> {
        if let Ok(mut entries) = fs::read_dir(dir) {
            if entries.next().is_some() && !force {
                return Err(ExportError::NotEmpty(dir.to_path_buf()));
            }
        }
        Ok(())
    }

    /// Prepares `dir`: refused if it holds anything, unless `force`.
    pub fn create(dir: &Path, format: Format, force: bool) -> Result<Export, ExportError> {
        Self::check(dir, force)?;
        private_dir(dir)?;
        let sink = match format {
            Format::Eml => Sink::Eml,
            Format::Jsonl => Sink::Jsonl(private_file(dir, "messages.jsonl")?),
            Format::Csv => Sink::Csv(Box::new(
                csv::WriterBuilder::new()
                    .has_headers(true)
                    .from_writer(private_file(dir, "messages.csv")?),
            )),
        };
        Ok(Export {
            dir: dir.to_path_buf(),
            format,
            sink,
            rows: 0,
            kinds: BTreeMap::new(),
            files: Vec::new(),
        })
    }

    /// Writes one row.
    pub fn row(&mut self, m: &ArchivedMessage) -> Result<(), ExportError> {
        let n = self.rows;
        match &mut self.sink {
            Sink::Eml => {
                let folder = format!("messages/{:06}", n / EML_PER_FOLDER);
                if n.is_multiple_of(EML_PER_FOLDER) {
                    private_dir(&self.dir.join(&folder))?;
                }
                let mut f = private_file(&self.dir, &format!("{folder}/{n:09}.eml"))?;
                let path = f.path.clone();
                f.write_all(eml(m).as_bytes()).map_err(io_at(&path))?;
                self.files.push(f.finish()?);
            }
            Sink::Jsonl(f) => {
                let line = serde_json::to_string(m).map_err(|e| ExportError::Io {
                    path: f.path.clone(),
                    source: e.into(),
                })?;
                let path = f.path.clone();
                writeln!(f, "{line}").map_err(io_at(&path))?;
            }
            Sink::Csv(w) => {
                w.serialize(m).map_err(|source| ExportError::Csv {
                    path: self.dir.join("messages.csv"),
                    source,
                })?;
            }
        }
        self.rows += 1;
        *self.kinds.entry(m.kind.clone()).or_default() += 1;
        Ok(())
    }

    /// Writes the holds, closes the data files and writes the manifest
    /// (last, under a temporary name renamed into place: a manifest is
    /// there only when everything it names is). Returns the manifest's
    /// SHA-256 and the files it names.
    pub fn finish(
        mut self,
        holds: &[LegalHold],
        query: serde_json::Value,
    ) -> Result<Finished, ExportError> {
        match std::mem::replace(&mut self.sink, Sink::Eml) {
            Sink::Eml => {}
            Sink::Jsonl(f) => self.files.push(f.finish()?),
            Sink::Csv(w) => {
                let path = self.dir.join("messages.csv");
                let f = w.into_inner().map_err(|e| ExportError::Io {
                    path: path.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
                self.files.push(f.finish()?);
            }
        }
        let mut f = private_file(&self.dir, "holds.jsonl")?;
        let path = f.path.clone();
        for h in holds {
            let line = serde_json::to_string(h).map_err(|e| ExportError::Io {
                path: path.clone(),
                source: e.into(),
            })?;
            writeln!(f, "{line}").map_err(io_at(&path))?;
        }
        self.files.push(f.finish()?);
        // Every file the manifest names is on disk before the manifest is.
        sync_folder(&self.dir)?;
        let manifest = serde_json::json!({
            "format_version": FORMAT_VERSION,
            "holdfast_version": env!("CARGO_PKG_VERSION"),
            "query": query,
            "format": self.format,
            "counts": { "rows": self.rows, "kinds": self.kinds, "holds": holds.len() },
            "files": self.files,
        });
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| ExportError::Io {
            path: self.dir.join("manifest.json"),
            source: e.into(),
        })? + "\n";
        let mut m = private_file(&self.dir, "manifest.json.part")?;
        let part = m.path.clone();
        m.write_all(text.as_bytes()).map_err(io_at(&part))?;
        let (entry, file) = m.close()?;
        file.sync_all().map_err(io_at(&part))?;
        let path = self.dir.join("manifest.json");
        fs::rename(&part, &path).map_err(io_at(&path))?;
        // The rename itself made durable.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.dir))?;
        Ok(Finished {
            manifest_sha256: entry.sha256,
            rows: self.rows,
            kinds: self.kinds,
            files: self.files.len(),
        })
    }
}

pub struct Finished {
    pub manifest_sha256: String,
    pub rows: u64,
    pub kinds: BTreeMap<String, u64>,
    /// Files the manifest names.
    pub files: usize,
}

/// One archived row as an RFC 5322 message. Header values that are not
/// plain printable ASCII are RFC 2047 encoded words (UTF-8, base64); the
/// body is UTF-8 text, sent as it is (7bit) when it is short lines of
/// printable ASCII, else in base64, which carries every byte exactly — the
/// sender's line breaks, control characters and lines of any length — and
/// which every mail tool decodes.
pub fn eml(m: &ArchivedMessage) -> String {
    let mut h = String::new();
    let mut header = |name: &str, value: &str| {
        h.push_str(name);
        h.push_str(": ");
        h.push_str(value);
        h.push_str("\r\n");
    };
    header(
        "Message-ID",
        &format!("<{}@archive.holdfast>", atext(&m.id)),
    );
    header("Date", &rfc5322_date(m.time));
    header("From", &mailbox(&m.from));
    header("To", &mailbox(&m.to));
    let subject = match m.kind.as_str() {
        "cdr" => format!("Call detail record: {} to {}", m.from, m.to),
        _ => format!("IM from {} to {}", m.from, m.to),
    };
    header("Subject", &text_value(&subject));
    header("X-Holdfast-Id", &text_value(&m.id));
    header("X-Holdfast-Kind", &text_value(&m.kind));
    header("X-Holdfast-Client-Id", &text_value(&m.client_id));
    header("X-Holdfast-Front-End", &text_value(&m.front_end));
    header(
        "X-Holdfast-External",
        if m.external { "true" } else { "false" },
    );
    header("X-Holdfast-Time", &m.time.to_string());
    header("X-Holdfast-Archived-At", &m.archived_at.to_string());
    header("X-Holdfast-Rowid", &m.rowid.to_string());
    header("MIME-Version", "1.0");
    header("Content-Type", "text/plain; charset=utf-8");
    let plain = m.body.lines().count() <= 1
        && !m.body.contains(['\r', '\n'])
        && m.body.len() <= 998
        && m.body.bytes().all(|b| (0x20..0x7f).contains(&b));
    if plain {
        header("Content-Transfer-Encoding", "7bit");
        h.push_str("\r\n");
        h.push_str(&m.body);
        h.push_str("\r\n");
    } else {
        header("Content-Transfer-Encoding", "base64");
        h.push_str("\r\n");
        let b64 = base64(m.body.as_bytes());
        for line in b64.as_bytes().chunks(76) {
            h.push_str(std::str::from_utf8(line).unwrap_or_default());
            h.push_str("\r\n");
        }
    }
    h
}

/// `id` as the local part of a Message-ID: bytes outside RFC 5322's
/// `atext`, and `%` and `.`, are written `%XX`, so that every archive id
/// gives a valid Message-ID and two ids never give the same one (the id
/// itself is in `X-Holdfast-Id`). The empty id is `%`, which no other id
/// gives.
fn atext(id: &str) -> String {
    if id.is_empty() {
        return "%".into();
    }
    let mut s = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&'*+-/=?^_`{|}~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// A user id as a mailbox: `<user@domain>` when it is a plain address;
/// else the id as an encoded display name of an address that cannot be
/// delivered to (the id is never changed into another valid address).
fn mailbox(user: &str) -> String {
    let simple = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && !part.ends_with('.')
            && !part.contains("..")
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
    };
    match user.split_once('@') {
        Some((local, domain)) if simple(local) && simple(domain) => format!("<{user}>"),
        _ => format!("{} <unknown@invalid>", encoded_words(user)),
    }
}

/// A header value: itself when it is printable ASCII of a sensible
/// length, else encoded words.
fn text_value(v: &str) -> String {
    if !v.is_empty() && v.len() <= 900 && v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return v.to_string();
    }
    if v.is_empty() {
        return String::new();
    }
    encoded_words(v)
}

/// RFC 2047 `=?UTF-8?B?...?=` words of at most 75 characters, split
/// between characters (never inside one), folded onto lines of their own.
fn encoded_words(v: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in v.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// `Mon, 07 Dec 2026 14:41:04 +0000` for ms since the UNIX epoch (UTC;
/// the milliseconds are in `X-Holdfast-Time`).
pub fn rfc5322_date(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2026-12-07T14:41:04.123Z
        assert_eq!(
            rfc5322_date(1_796_654_464_123),
            "Mon, 07 Dec 2026 14:41:04 +0000"
        );
        assert_eq!(
            rfc5322_date(951_782_400_000),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    fn msg(body: &str) -> ArchivedMessage {
        ArchivedMessage {
            rowid: 7,
            id: "fe1-42".into(),
            kind: "im".into(),
            from: "alice@corp.example".into(),
            to: "bob@corp.example".into(),
            time: 1_796_654_464_123,
            body: body.into(),
            external: false,
            front_end: "fe1".into(),
            archived_at: 1_796_654_464_200,
            client_id: "c-1".into(),
        }
    }

    #[test]
    fn an_eml_is_short_crlf_lines_and_picks_its_body_encoding() {
        for (body, encoding) in [
            ("plain hello", "7bit"),
            ("Grüße", "base64"),
            ("two\nlines", "base64"),
            (&"x".repeat(999)[..], "base64"),
        ] {
            let e = eml(&msg(body));
            assert!(
                e.contains(&format!("Content-Transfer-Encoding: {encoding}\r\n")),
                "{e}"
            );
            assert!(!e.replace("\r\n", "").contains('\n'), "only CRLF: {e}");
            assert!(
                e.split("\r\n").all(|l| l.len() <= 998 && l.is_ascii()),
                "{e}"
            );
        }
        let e = eml(&msg("hi"));
        assert!(e.starts_with("Message-ID: <fe1-42@archive.holdfast>\r\nDate: Mon, 07 Dec 2026 14:41:04 +0000\r\n"), "{e}");
        assert!(e.ends_with("\r\n\r\nhi\r\n"), "{e}");
    }

    #[test]
    fn odd_ids_and_users_stay_valid_headers() {
        assert_eq!(atext("fe1-42"), "fe1-42");
        assert_eq!(atext("a b@c"), "a%20b%40c");
        assert_eq!(atext(".x."), "%2Ex%2E");
        assert_eq!(atext("a%20"), "a%2520");
        assert_eq!(atext(""), "%");
        assert_eq!(mailbox("alice@corp.example"), "<alice@corp.example>");
        assert!(mailbox("zoë@corp.example").ends_with(" <unknown@invalid>"));
        let long = "é".repeat(100);
        let words = encoded_words(&long);
        assert!(words.split("\r\n ").all(|w| w.len() <= 75), "{words}");
    }
}
