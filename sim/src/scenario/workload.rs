//! `[[workload]]` entries: IM, CDR and QoE traffic, group chat and file
//! sharing, and hostile clients.

use super::error::{Ctx, ScenarioError};
use super::model::ChatRecords;
use super::model::{
    Archive, ChatWorkload, Draw, DrawTarget, HostileWorkload, ImWorkload, Topology, ATTACKS,
};
use super::raw::{ArchiveSpec, RawWorkload};
use holdfast_actors::core::protocol::RecordKind;
use holdfast_actors::core::units;
use toml::Spanned;

/// A `kind = "hostile"` workload.
fn hostile_workload(
    cx: &Ctx,
    w: &RawWorkload,
    duration_ms: u64,
) -> Result<HostileWorkload, ScenarioError> {
    let names = cx.needs(
        w.attacks.as_ref(),
        &w.kind,
        "workload.attacks",
        "a hostile workload needs `attacks`, like [\"oversize\", \"flood\"]",
    )?;
    let mut attacks = Vec::new();
    for name in names.get_ref() {
        match ATTACKS.iter().find(|(n, _)| n == name) {
            Some((_, a)) => attacks.push(*a),
            None => {
                return Err(cx.err(
                    &names.span(),
                    "workload.attacks",
                    format!(
                        "unknown attack {name:?}; expected {}",
                        ATTACKS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    attacks.sort();
    attacks.dedup();
    if attacks.is_empty() {
        return Err(cx.err(
            &names.span(),
            "workload.attacks",
            "needs at least one attack",
        ));
    }
    let (clients, hi) = cx.num_range(&w.users, "workload.users")?;
    if hi > clients || !(1.0..=5000.0).contains(&clients) {
        return Err(cx.err(
            &w.users.span(),
            "workload.users",
            "hostile clients: one number from 1 to 5000",
        ));
    }
    let (rate, rate_hi) = cx.num_range(&w.rate, "workload.rate")?;
    if rate_hi > rate || !(rate > 0.0 && rate <= 1000.0) {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            "one number of requests per second, over 0 and at most 1000",
        ));
    }
    let start_ms = cx.opt_dur(&w.start, "workload.start")?.unwrap_or(0);
    let stop_ms = cx.opt_dur(&w.stop, "workload.stop")?.unwrap_or(duration_ms);
    if stop_ms <= start_ms || stop_ms > duration_ms {
        return Err(cx.err(
            &w.kind.span(),
            "workload.stop",
            "must be after start and within the run",
        ));
    }
    let at_kind = |given: bool| given.then(|| w.kind.span());
    cx.refuse_given(
        "workload",
        [
            ("size", at_kind(w.size.is_some())),
            ("archive", at_kind(w.archive.is_some())),
            ("external", at_kind(w.external.is_some())),
            ("front_ends", at_kind(w.front_ends.is_some())),
            ("rooms", at_kind(w.rooms.is_some())),
            ("walled", at_kind(w.walled.is_some())),
            ("sync", at_kind(w.sync.is_some())),
            ("managed", at_kind(w.managed.is_some())),
            ("churn", at_kind(w.churn.is_some())),
            ("retry_posts", at_kind(w.retry_posts.is_some())),
            ("repair", at_kind(w.repair.is_some())),
            ("disable_at", at_kind(w.disable_at.is_some())),
            ("clear_at", at_kind(w.clear_at.is_some())),
            ("clear_before", at_kind(w.clear_before.is_some())),
            ("replace_at", at_kind(w.replace_at.is_some())),
        ],
        "a hostile workload does not take this key",
    )?;
    Ok(HostileWorkload {
        attacks,
        clients: clients as u64,
        rate,
        start_ms,
        stop_ms,
    })
}

/// A `kind = "chat"` workload.
fn chat_workload(
    cx: &Ctx,
    w: &RawWorkload,
    duration_ms: u64,
    topology: &Topology,
    files: bool,
) -> Result<ChatWorkload, ScenarioError> {
    if files && topology.web.is_empty() {
        return Err(cx.err(
            &w.kind.span(),
            "workload.kind",
            "a file workload needs a Web service: set topology.web",
        ));
    }
    if topology.channels.is_empty() {
        return Err(cx.err(
            &w.kind.span(),
            "workload.kind",
            "a chat workload needs Channel servers: set topology.channels (and topology.lookups)",
        ));
    }
    cx.refuse_given(
        "workload",
        [
            ("archive", w.archive.as_ref().map(|a| a.span())),
            ("external", w.external.as_ref().map(|e| e.span())),
            ("front_ends", w.front_ends.as_ref().map(|e| e.span())),
        ],
        "a chat workload does not take this key",
    )?;
    let (users, users_hi) = cx.num_range(&w.users, "workload.users")?;
    let (rate, rate_hi) = cx.num_range(&w.rate, "workload.rate")?;
    if users_hi > users || rate_hi > rate {
        return Err(cx.err(
            &w.users.span(),
            "workload",
            "ranges are not supported in chat workloads yet",
        ));
    }
    if users < 2.0 || users.fract() != 0.0 || users > 5000.0 {
        return Err(cx.err(
            &w.users.span(),
            "workload.users",
            "must be a whole number from 2 to 5000",
        ));
    }
    if !(rate.is_finite() && rate > 0.0 && rate <= 1000.0) {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            "must be a positive number of posts per simulated second, at most 1000",
        ));
    }
    let rooms = cx.opt_count(&w.rooms, "workload.rooms", 1)?.unwrap_or(1);
    let walled = cx.opt_count(&w.walled, "workload.walled", 0)?.unwrap_or(0);
    if walled + 2 > users as u64 {
        return Err(cx.err(
            &w.walled.as_ref().expect("walled given").span(),
            "workload.walled",
            "at least two users must remain outside the wall",
        ));
    }
    let size = cx.opt_count(&w.size, "workload.size", 1)?.unwrap_or(100) as usize;
    let start_ms = cx.opt_dur(&w.start, "workload.start")?.unwrap_or(0);
    let stop_ms = cx.opt_dur(&w.stop, "workload.stop")?.unwrap_or(duration_ms);
    if stop_ms <= start_ms || stop_ms > duration_ms {
        return Err(cx.err(
            &w.stop.as_ref().map(|s| s.span()).unwrap_or(w.kind.span()),
            "workload.stop",
            "must be after start and within the run's duration",
        ));
    }
    let sync_ms = cx.opt_dur(&w.sync, "workload.sync")?.unwrap_or(10_000);
    if sync_ms == 0 {
        return Err(cx.err(
            &w.sync.as_ref().expect("sync given").span(),
            "workload.sync",
            "must be longer than 0s",
        ));
    }
    let churn = match &w.churn {
        Some(c) if !(0.0..=1.0).contains(c.get_ref()) => {
            return Err(cx.err(
                &c.span(),
                "workload.churn",
                "must be a probability from 0 to 1",
            ))
        }
        Some(c) => *c.get_ref(),
        None => 0.0,
    };
    let records = chat_records(cx, w, duration_ms, rooms)?;
    Ok(ChatWorkload {
        users: users as u64,
        rooms,
        walled,
        rate,
        size,
        start_ms,
        stop_ms,
        sync_ms,
        repair: w.repair.unwrap_or(true),
        files,
        managed: w.managed.as_ref().is_some_and(|m| *m.get_ref()),
        churn,
        retry_posts: w.retry_posts.as_ref().is_some_and(|r| *r.get_ref()),
        records,
    })
}

/// A chat workload's records management keys: each a time within the
/// run; `clear_before` needs `clear_at` and is not after it; disabling the
/// last room while clearing or replacing in the first needs two rooms.
fn chat_records(
    cx: &Ctx,
    w: &RawWorkload,
    duration_ms: u64,
    rooms: u64,
) -> Result<ChatRecords, ScenarioError> {
    let within = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<u64>, ScenarioError> {
        let Some(at) = cx.opt_dur(v, key)? else {
            return Ok(None);
        };
        if at >= duration_ms {
            return Err(cx.err(
                &v.as_ref().expect("given").span(),
                key,
                "must be within the run's duration",
            ));
        }
        Ok(Some(at))
    };
    let records = ChatRecords {
        disable_ms: within(&w.disable_at, "workload.disable_at")?,
        clear_ms: within(&w.clear_at, "workload.clear_at")?,
        clear_before_ms: within(&w.clear_before, "workload.clear_before")?,
        replace_ms: within(&w.replace_at, "workload.replace_at")?,
    };
    if let Some(before) = records.clear_before_ms {
        if records.clear_ms.is_none_or(|c| before > c) {
            return Err(cx.err(
                &w.clear_before.as_ref().expect("given").span(),
                "workload.clear_before",
                "needs clear_at, and is not after it",
            ));
        }
    }
    let in_first = records.clear_ms.is_some() || records.replace_ms.is_some();
    if records.disable_ms.is_some() && in_first && rooms < 2 {
        return Err(cx.err(
            &w.disable_at.as_ref().expect("given").span(),
            "workload.disable_at",
            "disables the last room while the first is cleared or edited: give the workload two rooms or more",
        ));
    }
    Ok(records)
}

/// The workloads of a scenario, by kind.
pub(super) struct Workloads {
    pub(super) im: Vec<ImWorkload>,
    pub(super) chat: Vec<ChatWorkload>,
    pub(super) hostile: Vec<HostileWorkload>,
}

/// Every `[[workload]]` entry; the values drawn per seed go to `draws`.
pub(super) fn workloads(
    cx: &Ctx,
    raw: &[RawWorkload],
    duration_ms: u64,
    topology: &Topology,
    draws: &mut Vec<Draw>,
) -> Result<Workloads, ScenarioError> {
    let mut workloads = Vec::new();
    let mut chat = Vec::new();
    let mut hostile = Vec::new();
    for w in raw {
        let kind = w.kind.get_ref().as_str();
        if kind == "hostile" {
            hostile.push(hostile_workload(cx, w, duration_ms)?);
            continue;
        }
        if let Some(a) = &w.attacks {
            return Err(cx.err(
                &a.span(),
                "workload.attacks",
                "only a hostile workload takes this key",
            ));
        }
        if kind == "chat" || kind == "file" {
            chat.push(chat_workload(cx, w, duration_ms, topology, kind == "file")?);
            continue;
        }
        let wi = workloads.len();
        workloads.push(im_workload(cx, w, wi, duration_ms, topology, draws)?);
    }
    Ok(Workloads {
        im: workloads,
        chat,
        hostile,
    })
}

/// A `kind = "im"`, `"cdr"` or `"qoe"` workload, the `wi`th of them.
fn im_workload(
    cx: &Ctx,
    w: &RawWorkload,
    wi: usize,
    duration_ms: u64,
    topology: &Topology,
    draws: &mut Vec<Draw>,
) -> Result<ImWorkload, ScenarioError> {
    let kind = w.kind.get_ref().as_str();
    cx.refuse_given(
        "workload",
        [
            ("rooms", w.rooms.as_ref().map(|r| r.span())),
            ("walled", w.walled.as_ref().map(|r| r.span())),
            ("sync", w.sync.as_ref().map(|r| r.span())),
            ("managed", w.managed.as_ref().map(|r| r.span())),
            ("churn", w.churn.as_ref().map(|r| r.span())),
            ("retry_posts", w.retry_posts.as_ref().map(|r| r.span())),
            ("disable_at", w.disable_at.as_ref().map(|r| r.span())),
            ("clear_at", w.clear_at.as_ref().map(|r| r.span())),
            ("clear_before", w.clear_before.as_ref().map(|r| r.span())),
            ("replace_at", w.replace_at.as_ref().map(|r| r.span())),
        ],
        "only a chat workload takes this key",
    )?;
    let record_kind = match kind {
        "im" => RecordKind::Im,
        "cdr" => RecordKind::Cdr,
        "qoe" => RecordKind::Qoe,
        other => {
            return Err(cx.err(
                &w.kind.span(),
                "workload.kind",
                format!("unknown workload kind {other:?}; expected \"im\", \"cdr\", \"qoe\", \"chat\", \"file\" or \"hostile\""),
            ))
        }
    };
    if let (false, Some(a)) = (record_kind == RecordKind::Im, &w.archive) {
        return Err(cx.err(
            &a.span(),
            "workload.archive",
            "only an im workload has an archiving policy; every call is recorded",
        ));
    }
    let (users_lo, users_hi) = cx.num_range(&w.users, "workload.users")?;
    if users_lo < 2.0 || users_lo.fract() != 0.0 || users_hi.fract() != 0.0 {
        return Err(cx.err(
            &w.users.span(),
            "workload.users",
            format!("must be whole numbers of at least 2, got {users_lo}..{users_hi}"),
        ));
    }
    let users = users_lo as u64;
    let label = format!("workload[{wi}].users");
    Draw::add_range(
        draws,
        DrawTarget::WorkloadUsers(wi),
        users_lo,
        users_hi,
        label,
    );
    let (rate, rate_hi) = cx.num_range(&w.rate, "workload.rate")?;
    let label = format!("workload[{wi}].rate");
    Draw::add_range(draws, DrawTarget::WorkloadRate(wi), rate, rate_hi, label);
    if rate_hi > 10_000.0 {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            "at most 10000 messages per second",
        ));
    }
    if !(rate.is_finite() && rate > 0.0) {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            format!("must be a positive number of messages per simulated second, got {rate}"),
        ));
    }
    if rate > 10_000.0 {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            "at most 10000 messages per second",
        ));
    }
    let size = cx.opt_count(&w.size, "workload.size", 1)?.unwrap_or(200) as usize;
    if size > 1 << 20 {
        return Err(cx.err(
            &w.size.as_ref().expect("some").span(),
            "workload.size",
            "at most 1 MiB per message body",
        ));
    }
    let (start_ms, start_hi) = cx
        .opt_dur_range(&w.start, "workload.start")?
        .unwrap_or((0, 0));
    let (stop_ms, stop_hi) = cx
        .opt_dur_range(&w.stop, "workload.stop")?
        .unwrap_or((duration_ms, duration_ms));
    let (lo, hi) = (start_ms as f64, start_hi as f64);
    let label = format!("workload[{wi}].start");
    Draw::add_range(draws, DrawTarget::WorkloadStart(wi), lo, hi, label);
    let (lo, hi) = (stop_ms as f64, stop_hi as f64);
    let label = format!("workload[{wi}].stop");
    Draw::add_range(draws, DrawTarget::WorkloadStop(wi), lo, hi, label);
    if stop_ms <= start_hi || stop_hi > duration_ms {
        let span = w.stop.as_ref().map(|s| s.span()).unwrap_or(w.kind.span());
        return Err(cx.err(
            &span,
            "workload.stop",
            format!(
                "must be after start ({}) and within the run's duration ({})",
                units::fmt_ms(start_ms),
                units::fmt_ms(duration_ms)
            ),
        ));
    }
    let archive = match &w.archive {
        None => Archive::All,
        Some(a) => match a.get_ref() {
            ArchiveSpec::Word(s) => match s.as_str() {
                "all" => Archive::All,
                "none" => Archive::None,
                "internal" => Archive::Internal,
                "external" => Archive::External,
                other => return Err(cx.err(&a.span(), "workload.archive", format!(
                    "unknown value {other:?}; expected \"all\", \"none\", \"internal\", \"external\" or a fraction like 0.5"))),
            },
            ArchiveSpec::Fraction(f) if (0.0..=1.0).contains(f) => Archive::Fraction(*f),
            ArchiveSpec::Fraction(f) => return Err(cx.err(&a.span(), "workload.archive", format!("a fraction must be between 0 and 1, got {f}"))),
        },
    };
    let external = match &w.external {
        Some(e) if (0.0..=1.0).contains(e.get_ref()) => *e.get_ref(),
        Some(e) => {
            return Err(cx.err(
                &e.span(),
                "workload.external",
                format!("must be a fraction between 0 and 1, got {}", e.get_ref()),
            ))
        }
        None => 0.0,
    };
    let mut homes = Vec::new();
    if let Some(list) = &w.front_ends {
        if list.get_ref().is_empty() {
            return Err(cx.err(
                &list.span(),
                "workload.front_ends",
                "name at least one front end (or leave the key out: every front end)",
            ));
        }
        for fe in list.get_ref() {
            if !topology.front_ends.contains(fe) {
                return Err(cx.err(
                    &list.span(),
                    "workload.front_ends",
                    format!(
                        "{fe:?} is not a front end; this topology has {}",
                        topology.front_ends.join(", ")
                    ),
                ));
            }
        }
        homes = list.get_ref().clone();
    }
    Ok(ImWorkload {
        kind: record_kind,
        users,
        rate,
        size,
        start_ms,
        stop_ms,
        archive,
        external,
        front_ends: homes,
    })
}
