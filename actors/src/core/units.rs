//! Human-readable durations (`"10m"`, `"1h 30m"`, `"250ms"`) and sizes
//! (`"1GiB"`, `"512 KiB"`), as used in settings and scenario files.

use serde::{Deserialize, Deserializer};
use std::time::Duration;
use thiserror::Error;

/// Why a duration or size written by a person could not be read; the
/// message says what was expected, for the file and line the caller names.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UnitError {
    #[error("empty duration: expected a number with a unit, like \"90s\" or \"2h\"")]
    EmptyDuration,
    #[error("bad duration {text:?} ({why}): expected a number with a unit ms, s, m, h or d, like \"90s\" or \"2h\"")]
    Duration { text: String, why: String },
    #[error("bad size {text:?} ({why}): expected a number with a unit B, KiB, MiB or GiB, like \"1GiB\"")]
    Size { text: String, why: String },
}

pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    humantime::parse_duration(t).map_err(|e| UnitError::Duration {
        text: s.to_string(),
        why: e.to_string(),
    })
}

pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| UnitError::Size {
            text: s.to_string(),
            why: e.to_string(),
        })
}

pub fn duration_ms(s: &str) -> Result<u64, UnitError> {
    parse_duration(s).map(|d| d.as_millis() as u64)
}

/// Formats milliseconds as a short human duration (`"1h 2m 3s"`).
pub fn fmt_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// serde helper: a human duration string into milliseconds.
pub fn de_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    duration_ms(&s).map_err(serde::de::Error::custom)
}

/// serde helper: an optional human duration string into milliseconds.
pub fn de_opt_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| duration_ms(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// serde helper: a human size string into bytes.
pub fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("10m").unwrap(), 600_000);
        assert_eq!(duration_ms("250ms").unwrap(), 250);
        assert_eq!(duration_ms("1d").unwrap(), 86_400_000);
        assert_eq!(duration_ms("1h 30m").unwrap(), 5_400_000);
        assert!(duration_ms("ten minutes").is_err());
        assert!(duration_ms("10").is_err());
        assert!(duration_ms("").is_err());
        assert!(duration_ms("-5m").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("200B").unwrap(), 200);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(duration_ms(" "), Err(UnitError::EmptyDuration));
        let e = duration_ms("10").unwrap_err().to_string();
        assert!(
            e.starts_with("bad duration \"10\" (") && e.contains("like \"90s\""),
            "{e}"
        );
        let e = parse_size("lots").unwrap_err().to_string();
        assert!(
            e.starts_with("bad size \"lots\" (") && e.contains("KiB"),
            "{e}"
        );
    }
}
