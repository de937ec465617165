//! Wire frames: `u32` big-endian length, then one version byte (the
//! [`PROTOCOL_VERSION`]), then the postcard encoding of an [`Envelope`].
//! The length counts the version byte and the payload.
//!
//! Decoding never panics: a frame that is too large, has an unknown version
//! or does not decode is a [`FrameError`], and the host closes that
//! connection. A connection's first frame is its hello: a peer of another
//! protocol version is refused there, before anything it sent is read as
//! this version's types.

use crate::core::protocol::Envelope;
use thiserror::Error;

/// The protocol version, carried in every frame (a connection's first frame
/// included): a node refuses a peer speaking another one, naming both.
///
/// **Bump it whenever a type that travels in a frame changes shape**: a
/// message, field or variant added, removed, reordered or retyped in
/// `core/protocol.rs`, `core/protocol/archiving.rs`, `core/protocol/chat.rs`,
/// `core/protocol/compliance.rs` or `core/ids.rs`. Postcard writes neither
/// field names nor variant names (a variant is its position), so nodes
/// built from different versions would otherwise misread each other's
/// frames without a word. The test
/// `tests::wire_types_match_the_protocol_version` pins a fingerprint of
/// those types per version and fails until the bump is made.
///
/// 1: the first protocol. 2: chat and compliance messages nested
/// ([`Msg::Chat`](crate::core::protocol::Msg::Chat),
/// [`Msg::Compliance`](crate::core::protocol::Msg::Compliance)).
/// 3: batched transfers and deliveries. 4: archiving and records messages
/// nested ([`Msg::Archiving`](crate::core::protocol::Msg::Archiving),
/// [`Msg::Records`](crate::core::protocol::Msg::Records)).
pub const PROTOCOL_VERSION: u8 = 4;
/// Largest frame accepted, header excluded (32 MiB): room for the largest
/// chat file (20,000 KB by default), far above any record, and small enough
/// that a garbage length cannot make a node allocate gigabytes.
pub const MAX_FRAME: usize = 32 * 1024 * 1024;
/// Bytes of the length header.
pub const HEADER: usize = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame (length 0): no version byte")]
    Empty,
    #[error(
        "the peer speaks protocol version {got}, this node speaks version {PROTOCOL_VERSION}: \
         nodes of different protocol versions cannot exchange frames (run one version across the cluster)"
    )]
    BadVersion { got: u8 },
    #[error("malformed frame payload: {0}")]
    Malformed(String),
    #[error("could not encode envelope: {0}")]
    Encode(String),
}

/// Encodes one envelope as a complete frame (header included).
pub fn encode(env: &Envelope) -> Result<Vec<u8>, FrameError> {
    // Room for a typical envelope up front: growing from a few bytes would
    // reallocate several times per frame.
    let mut out = Vec::with_capacity(512);
    encode_into(env, &mut out)?;
    Ok(out)
}

/// Appends one envelope as a complete frame to `out` (a batch being
/// gathered for one write), without a buffer of its own. On error `out` is
/// left as it was.
pub fn encode_into(env: &Envelope, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(PROTOCOL_VERSION);
    if let Err(e) = postcard::to_extend(env, Append(out)) {
        out.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let len = out.len() - start - HEADER;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    out[start..start + HEADER].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Lets postcard append to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

/// Validates a length header before reading the body.
pub fn check_len(header: [u8; HEADER], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a frame body (version byte + payload, header already removed).
pub fn decode_body(body: &[u8]) -> Result<Envelope, FrameError> {
    let (&version, payload) = body.split_first().ok_or(FrameError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion { got: version });
    }
    let (env, rest) = postcard::take_from_bytes::<Envelope>(payload)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the envelope",
            rest.len()
        )));
    }
    Ok(env)
}

/// Decodes one complete frame from a buffer; returns the envelope and the
/// bytes consumed, or `Ok(None)` if the buffer does not hold a whole frame yet.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Envelope, usize)>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = check_len(buf[..HEADER].try_into().expect("4 bytes"), max)?;
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let env = decode_body(&buf[HEADER..HEADER + len])?;
    Ok(Some((env, HEADER + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{ActorKind, Addr};
    use crate::core::protocol::{ArchivingMsg, Im, Msg};

    fn env() -> Envelope {
        Envelope {
            from: Addr::new("client1", ActorKind::Client),
            to: Addr::new("fe1", ActorKind::FrontEnd),
            id: 7,
            msg: Msg::Archiving(ArchivingMsg::SubmitIm {
                im: Im {
                    id: "m1".into(),
                    from: "a@corp.example".into(),
                    to: "b@corp.example".into(),
                    body: "hello".into(),
                },
            }),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&env()).unwrap();
        let (back, used) = decode(&bytes, MAX_FRAME).unwrap().unwrap();
        assert_eq!(back, env());
        assert_eq!(used, bytes.len());
    }

    /// Frames appended to one batch buffer read back one by one; a frame
    /// that cannot be sent leaves the batch as it was.
    #[test]
    fn frames_appended_to_a_batch_read_back_in_order() {
        let mut batch = Vec::new();
        encode_into(&env(), &mut batch).unwrap();
        let first = batch.len();
        assert_eq!(batch, encode(&env()).unwrap());
        let mut big = env();
        if let Msg::Archiving(ArchivingMsg::SubmitIm { im }) = &mut big.msg {
            im.body = "x".repeat(MAX_FRAME);
        }
        assert!(matches!(
            encode_into(&big, &mut batch),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(batch.len(), first);
        encode_into(&env(), &mut batch).unwrap();
        let (a, used) = decode(&batch, MAX_FRAME).unwrap().unwrap();
        let (b, rest) = decode(&batch[used..], MAX_FRAME).unwrap().unwrap();
        assert_eq!((a, b), (env(), env()));
        assert_eq!(used + rest, batch.len());
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let bytes = encode(&env()).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], MAX_FRAME).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut bytes = encode(&env()).unwrap();
        bytes[..4].copy_from_slice(&(u32::MAX).to_be_bytes());
        assert!(matches!(
            decode(&bytes, MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_version_is_an_error() {
        let mut bytes = encode(&env()).unwrap();
        bytes[4] = 99;
        assert_eq!(
            decode(&bytes, MAX_FRAME),
            Err(FrameError::BadVersion { got: 99 })
        );
    }

    /// The shape of every type that travels in a frame: each item deriving
    /// `Serialize` in the wire modules, comments and layout left out.
    fn wire_shape() -> String {
        let mut shape = String::new();
        for src in [
            include_str!("protocol.rs"),
            include_str!("protocol/archiving.rs"),
            include_str!("protocol/chat.rs"),
            include_str!("protocol/compliance.rs"),
            include_str!("ids.rs"),
        ] {
            let code: String = src
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let mut rest = code.as_str();
            while let Some(at) = rest.find("#[derive(") {
                rest = &rest[at..];
                let derive = &rest[..rest.find(")]").unwrap_or(rest.len())];
                let Some(kw) = ["struct ", "enum "]
                    .iter()
                    .filter_map(|k| rest.find(k))
                    .min()
                else {
                    break;
                };
                // The item ends at its closing brace, or at the `;` of a
                // tuple or unit struct.
                let mut depth = 0;
                let mut end = rest.len();
                for (i, c) in rest[kw..].char_indices() {
                    match c {
                        '{' | '(' => depth += 1,
                        '}' | ')' => {
                            depth -= 1;
                            if depth == 0 && c == '}' {
                                end = kw + i + 1;
                                break;
                            }
                        }
                        ';' if depth == 0 => {
                            end = kw + i + 1;
                            break;
                        }
                        _ => {}
                    }
                }
                if derive.contains("Serialize") {
                    let item: String = rest[..end].split_whitespace().collect();
                    shape.push_str(&item.replace(",}", "}").replace(",)", ")"));
                    shape.push('\n');
                }
                rest = &rest[end..];
            }
        }
        shape
    }

    /// FNV-1a, 64 bits: the same on every build and machine.
    fn fingerprint(s: &str) -> u64 {
        s.bytes().fold(0xcbf29ce484222325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    }

    /// Each protocol version with the fingerprint of its wire types, oldest
    /// first. A change to a wire type changes the fingerprint: bump
    /// [`PROTOCOL_VERSION`] and add a line here (never edit an old one).
    /// Version 1's is its shape when the version began to be kept.
    /// Version 4's was pinned again once, when the names (users, messages,
    /// rooms, posts, files) became newtypes: they are `serde(transparent)`, so
    /// every frame's bytes stayed the same (`ids` tests), and a peer of
    /// the first pin speaks this version exactly.
    const VERSIONS: &[(u8, u64)] = &[
        (1, 0x1082064dd4508b78),
        (2, 0x5695ae94749b2a63),
        (3, 0x6508b8146d06deae),
        (4, 0xe474b7245241d677),
    ];

    #[test]
    fn wire_types_match_the_protocol_version() {
        let now = fingerprint(&wire_shape());
        let (version, pinned) = *VERSIONS.last().expect("a version");
        assert!(
            pinned != now || version == PROTOCOL_VERSION,
            "PROTOCOL_VERSION is {PROTOCOL_VERSION}, the wire types are those of version {version}: \
             add ({PROTOCOL_VERSION}, {now:#x}) to VERSIONS if they changed, or put the version back"
        );
        assert!(
            version == PROTOCOL_VERSION && pinned == now,
            "the wire types' fingerprint is {now:#x}, pinned for version {version} as {pinned:#x}, \
             and PROTOCOL_VERSION is {PROTOCOL_VERSION}: a type that travels in a frame changed. \
             Bump PROTOCOL_VERSION and add ({}, {now:#x}) to VERSIONS",
            version + 1
        );
        for pair in VERSIONS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "versions only go up: {VERSIONS:?}");
            assert_ne!(
                pair[0].1, pair[1].1,
                "two versions of one shape: {VERSIONS:?}"
            );
        }
    }

    /// The fingerprint sees what postcard sees: a variant moved or a field
    /// retyped changes it; a comment or a line break does not.
    #[test]
    fn the_fingerprint_sees_shape_not_layout() {
        let base = fingerprint(&wire_shape());
        let src = "#[derive(Serialize)]\npub enum E {\n    A { x: u8 },\n    B,\n}\n";
        let shape = |s: &str| {
            let item: String = s
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
                .split_whitespace()
                .collect();
            fingerprint(&item.replace(",}", "}"))
        };
        let a = shape(src);
        assert_eq!(
            a,
            shape("#[derive(Serialize)]\npub enum E { // why\n    A { x: u8 }, B }\n")
        );
        assert_ne!(
            a,
            shape("#[derive(Serialize)]\npub enum E {\n    B,\n    A { x: u8 },\n}\n")
        );
        assert_ne!(
            a,
            shape("#[derive(Serialize)]\npub enum E {\n    A { x: u16 },\n    B,\n}\n")
        );
        assert_ne!(base, 0);
        assert!(wire_shape().contains("pubenumMsg{"));
        assert!(wire_shape().contains("pubenumArchivingMsg{"));
        assert!(wire_shape().contains("pubenumRecordsMsg{"));
        assert!(wire_shape().contains("pubenumChatMsg{"));
        assert!(wire_shape().contains("pubenumComplianceMsg{"));
        assert!(wire_shape().contains("pubstructAddr{"));
        assert!(
            !wire_shape().contains("enumChatTimer") && !wire_shape().contains("enumArchivingTimer"),
            "timers never travel"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix length and a spread of byte patterns: decode must
        // return a value or an error, never panic.
        let mut seed = 0x9e3779b97f4a7c15u64;
        for n in 0..2000usize {
            let len = n % 64;
            let mut body = vec![PROTOCOL_VERSION];
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.push(seed as u8);
            }
            let mut frame = ((body.len()) as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            let _ = decode(&frame, MAX_FRAME);
        }
        assert_eq!(decode(&[0, 0, 0, 0], MAX_FRAME), Err(FrameError::Empty));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode(&env()).unwrap();
        bytes.push(0);
        let len = (bytes.len() - HEADER) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode(&bytes, MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }
}
