//! Scenario errors, and the context that points them at the file's lines.

use super::raw::NumOrRange;
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::units;
use std::fmt;
use std::ops::Range;
use toml::Spanned;

/// A scenario file that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// What a range whose ends are out of order is told.
const LOW_TO_HIGH: &str = "a range must go from low to high";

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) src: &'a str,
}

impl Ctx<'_> {
    pub(super) fn line(&self, span: &Range<usize>) -> Option<usize> {
        if span.start == 0 && span.end == 0 {
            return None;
        }
        Some(
            self.src[..span.start.min(self.src.len())]
                .matches('\n')
                .count()
                + 1,
        )
    }
    pub(super) fn err(
        &self,
        span: &Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError {
            file: self.file.to_string(),
            line: self.line(span),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
    /// Operator events named by their stable names.
    pub(super) fn events(
        &self,
        names: &[Spanned<String>],
        key: &str,
    ) -> Result<Vec<OperatorEvent>, ScenarioError> {
        let event = |n: &Spanned<String>| {
            OperatorEvent::from_name(n.get_ref()).ok_or_else(|| {
                let msg = format!("{:?} is not the name of an operator event", n.get_ref());
                self.err(&n.span(), key, msg)
            })
        };
        names.iter().map(event).collect()
    }

    pub(super) fn dur(&self, v: &Spanned<String>, key: &str) -> Result<u64, ScenarioError> {
        if v.get_ref().contains("..") {
            return Err(self.err(&v.span(), key, "a range is not allowed here"));
        }
        units::duration_ms(v.get_ref()).map_err(|m| self.err(&v.span(), key, m.to_string()))
    }
    /// Refuses the first of `keys` that was given where it does not belong,
    /// as `{table}.{key}` at where it was given; `keys` pairs each key with
    /// that place, when it was given.
    pub(super) fn refuse_given<'k>(
        &self,
        table: &str,
        keys: impl IntoIterator<Item = (&'k str, Option<Range<usize>>)>,
        why: &str,
    ) -> Result<(), ScenarioError> {
        for (key, given) in keys {
            if let Some(span) = given {
                return Err(self.err(&span, &format!("{table}.{key}"), why));
            }
        }
        Ok(())
    }

    /// [`Ctx::dur`] of a key that may be left out.
    pub(super) fn opt_dur(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<u64>, ScenarioError> {
        v.as_ref().map(|v| self.dur(v, key)).transpose()
    }

    /// The value `v` of a key an entry of kind `kind` needs: refused, at
    /// the kind, with `message` when the key is left out.
    pub(super) fn needs<T>(
        &self,
        v: Option<T>,
        kind: &Spanned<String>,
        key: &str,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        v.ok_or_else(|| self.err(&kind.span(), key, message))
    }

    /// [`Ctx::count`] of a key that may be left out.
    pub(super) fn opt_count(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
    ) -> Result<Option<u64>, ScenarioError> {
        v.as_ref().map(|v| self.count(v, key, min)).transpose()
    }

    /// [`Ctx::dur_range`] of a key that may be left out.
    pub(super) fn opt_dur_range(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<(u64, u64)>, ScenarioError> {
        v.as_ref().map(|v| self.dur_range(v, key)).transpose()
    }

    /// A duration or a range of durations `"lo..hi"`.
    pub(super) fn dur_range(
        &self,
        v: &Spanned<String>,
        key: &str,
    ) -> Result<(u64, u64), ScenarioError> {
        let parse =
            |s: &str| units::duration_ms(s).map_err(|m| self.err(&v.span(), key, m.to_string()));
        match v.get_ref().split_once("..") {
            None => parse(v.get_ref()).map(|d| (d, d)),
            Some((lo, hi)) => self.low_to_high(&v.span(), key, (parse(lo)?, parse(hi)?)),
        }
    }
    /// A number or a range of numbers `"lo..hi"`.
    pub(super) fn num_range(
        &self,
        v: &Spanned<NumOrRange>,
        key: &str,
    ) -> Result<(f64, f64), ScenarioError> {
        let parse = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| self.err(&v.span(), key, format!("{s:?} is not a number")))
        };
        let (lo, hi) = match v.get_ref() {
            NumOrRange::Int(i) => (*i as f64, *i as f64),
            NumOrRange::Float(f) => (*f, *f),
            NumOrRange::Text(t) => match t.split_once("..") {
                Some((lo, hi)) => (parse(lo)?, parse(hi)?),
                None => {
                    return Err(self.err(
                        &v.span(),
                        key,
                        format!("expected a number or a range like \"5..20\", got {t:?}"),
                    ))
                }
            },
        };
        if !lo.is_finite() || !hi.is_finite() {
            return Err(self.err(&v.span(), key, LOW_TO_HIGH));
        }
        self.low_to_high(&v.span(), key, (lo, hi))
    }

    /// The range `(lo, hi)` of the value at `span`, refused unless it
    /// goes from low to high.
    fn low_to_high<T: PartialOrd>(
        &self,
        span: &Range<usize>,
        key: &str,
        (lo, hi): (T, T),
    ) -> Result<(T, T), ScenarioError> {
        if lo > hi {
            return Err(self.err(span, key, LOW_TO_HIGH));
        }
        Ok((lo, hi))
    }
    pub(super) fn count(
        &self,
        v: &Spanned<i64>,
        key: &str,
        min: i64,
    ) -> Result<u64, ScenarioError> {
        if *v.get_ref() < min {
            return Err(self.err(
                &v.span(),
                key,
                format!("must be at least {min}, got {}", v.get_ref()),
            ));
        }
        Ok(*v.get_ref() as u64)
    }
}

/// The dotted key (`settings.resend_interval`) of the line holding byte
/// `pos`: the table header above it, then the key left of `=`.
pub(super) fn key_at(src: &str, pos: usize) -> Option<String> {
    let pos = pos.min(src.len());
    let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = src[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))?;
    let table = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}
