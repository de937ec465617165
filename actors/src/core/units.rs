//! Human-readable durations (`"10m"`, `"1h 30m"`, `"250ms"`) and sizes
//! (`"1GiB"`, `"512 KiB"`), as used in settings and scenario files.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration: expected a number with a unit, like \"90s\" or \"2h\"".into());
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("bad duration {s:?} ({e}): expected a number with a unit ms, s, m, h or d, like \"90s\" or \"2h\"")
    })
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("bad size {s:?} ({e}): expected a number with a unit B, KiB, MiB or GiB, like \"1GiB\""))
}

pub fn duration_ms(s: &str) -> Result<u64, String> {
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
}
