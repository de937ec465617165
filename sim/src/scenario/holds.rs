//! `[[hold]]`: legal holds a simulated auditor places and releases.

use super::error::{Ctx, ScenarioError};
use super::model::Hold;
use super::raw::RawHold;
use std::collections::BTreeSet;

pub(super) fn holds(
    cx: &Ctx,
    raw: &[RawHold],
    duration_ms: u64,
) -> Result<Vec<Hold>, ScenarioError> {
    let mut names = BTreeSet::new();
    let mut holds = Vec::new();
    for (i, h) in raw.iter().enumerate() {
        let key = |k: &str| format!("hold[{i}].{k}");
        let name = h.name.get_ref().trim().to_string();
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(cx.err(&h.name.span(), &key("name"), "a name of its own"));
        }
        let users = h.users.get_ref().clone();
        // The database refuses a hold without users; an address without a
        // domain could never match a simulated user.
        if users.is_empty() || users.iter().any(|u| !u.contains('@')) {
            let why = "at least one user, each an address like \"w0u1@corp.example\"";
            return Err(cx.err(&h.users.span(), &key("users"), why));
        }
        let since_ms = cx.opt_dur(&h.since, &key("since"))?;
        let until_ms = cx.opt_dur(&h.until, &key("until"))?;
        if let (Some(s), Some(u), Some(span)) = (since_ms, until_ms, h.until.as_ref()) {
            if u <= s {
                return Err(cx.err(&span.span(), &key("until"), "after `since`"));
            }
        }
        let place_ms = cx.dur(&h.place, &key("place"))?;
        if place_ms >= duration_ms {
            return Err(cx.err(&h.place.span(), &key("place"), "inside the run"));
        }
        let release_ms = cx.opt_dur(&h.release, &key("release"))?;
        if let (Some(r), Some(span)) = (release_ms, h.release.as_ref()) {
            if r <= place_ms || r >= duration_ms {
                let why = "after `place` and inside the run";
                return Err(cx.err(&span.span(), &key("release"), why));
            }
        }
        holds.push(Hold {
            name,
            users,
            since_ms,
            until_ms,
            place_ms,
            release_ms,
        });
    }
    Ok(holds)
}
