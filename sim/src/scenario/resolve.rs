//! Drawing, per seed, the values a scenario gives as ranges and the faults
//! its generators produce.

use super::model::{Draw, DrawTarget, Fault, FaultKind, Generator, Scenario};
use holdfast_actors::core::units;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

impl Scenario {
    /// The concrete scenario that `seed` runs, and the values it drew (in
    /// the order drawn). The draws use their own RNG, seeded from the seed:
    /// the same seed always gives the same scenario.
    pub fn resolve(&self, seed: u64) -> (Scenario, Vec<(String, String)>) {
        // ChaCha8: the same numbers on every platform and rand release.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut s = self.clone();
        s.draws.clear();
        s.generators.clear();
        let mut drawn = Vec::new();
        for d in &self.draws {
            let shown = draw(d, &mut rng, &mut s);
            drawn.push((d.label.clone(), shown));
        }
        for w in &mut s.workloads {
            // Validation guarantees stop > start at the extremes; keep it.
            w.stop_ms = w.stop_ms.max(w.start_ms + 1).min(self.duration_ms);
        }
        for g in &self.generators {
            let before = s.faults.len();
            match g {
                Generator::Random { .. } => {
                    random_faults(g, self.duration_ms, &mut rng, &mut s.faults, &mut drawn)
                }
                Generator::Swizzle { .. } => swizzle_faults(g, &mut rng, &mut s.faults, &mut drawn),
            }
            for f in &s.faults[before..] {
                drawn.push(("fault".into(), f.describe()));
            }
        }
        s.faults.sort_by_key(|f| f.start_ms);
        (s, drawn)
    }
}

/// A time drawn as `v` in `lo..=hi`: to the second (milliseconds only add
/// noise) when the range is wide enough, and always inside it.
fn ms_in(v: f64, lo: f64, hi: f64) -> u64 {
    let v = if hi - lo >= 2000.0 {
        (v / 1000.0).round() * 1000.0
    } else {
        v.round()
    };
    (v.clamp(lo, hi)) as u64
}

/// A time in milliseconds drawn from the range `lo..=hi`, rounded as
/// [`ms_in`] rounds.
fn ms_drawn(rng: &mut ChaCha8Rng, (lo, hi): (u64, u64)) -> u64 {
    let (lo, hi) = (lo as f64, hi as f64);
    ms_in(rng.gen_range(lo..=hi), lo, hi)
}

/// Draws one value of `s` from its range; returns it as shown to the user.
fn draw(d: &Draw, rng: &mut ChaCha8Rng, s: &mut Scenario) -> String {
    let ms = |v: f64| ms_in(v, d.lo, d.hi);
    let v = if d.hi > d.lo {
        rng.gen_range(d.lo..=d.hi)
    } else {
        d.lo
    };
    match d.target {
        DrawTarget::WorkloadUsers(i) => {
            s.workloads[i].users = v.round() as u64;
            s.workloads[i].users.to_string()
        }
        DrawTarget::WorkloadRate(i) => {
            s.workloads[i].rate = v;
            format!("{v:.3}/s")
        }
        DrawTarget::WorkloadStart(i) => {
            s.workloads[i].start_ms = ms(v);
            units::fmt_ms(ms(v))
        }
        DrawTarget::WorkloadStop(i) => {
            s.workloads[i].stop_ms = ms(v);
            units::fmt_ms(ms(v))
        }
        DrawTarget::FaultStart(i) => {
            s.faults[i].start_ms = ms(v);
            units::fmt_ms(ms(v))
        }
        DrawTarget::FaultDuration(i) => {
            s.faults[i].duration_ms = Some(ms(v).max(1));
            units::fmt_ms(ms(v).max(1))
        }
        DrawTarget::FaultDelay(i) => {
            if let FaultKind::Slow { delay_ms, .. } = &mut s.faults[i].kind {
                *delay_ms = v.round() as u64;
            }
            units::fmt_ms(v.round() as u64)
        }
    }
}

/// The faults of a `random` generator: Poisson-distributed, of random
/// kinds, on random targets, none past the run's `run_ms`.
fn random_faults(
    g: &Generator,
    run_ms: u64,
    rng: &mut ChaCha8Rng,
    faults: &mut Vec<Fault>,
    drawn: &mut Vec<(String, String)>,
) {
    let Generator::Random {
        entry,
        kinds,
        targets,
        minority,
        start,
        stop_ms,
        every_ms,
        duration,
        delay,
        databases,
    } = g
    else {
        return;
    };
    let first = ms_drawn(rng, *start);
    if start.1 > start.0 {
        drawn.push((format!("fault[{entry}].start"), units::fmt_ms(first)));
    }
    let mut t = first as f64;
    loop {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        t += -u.ln() * *every_ms as f64;
        let at = ms_in(t, 0.0, f64::MAX);
        if at >= *stop_ms {
            break;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())].as_str();
        let dur = ms_drawn(rng, *duration).max(1);
        let dur = Some(dur.min(run_ms.saturating_sub(at)).max(1));
        let pool: Vec<&String> = if kind == "db_down" {
            targets.iter().filter(|n| databases.contains(n)).collect()
        } else {
            targets.iter().collect()
        };
        if pool.is_empty() || (kind == "partition" && pool.len() < 2) {
            continue;
        }
        let n = if *minority {
            ((pool.len() - 1) / 2).max(1)
        } else {
            1
        };
        let mut picked: Vec<&String> = Vec::new();
        while picked.len() < n {
            let c = pool[rng.gen_range(0..pool.len())];
            if !picked.contains(&c) {
                picked.push(c);
            }
        }
        let mut add = |kind: FaultKind| {
            faults.push(Fault {
                kind,
                start_ms: at,
                duration_ms: dur,
            })
        };
        match kind {
            "partition" if *minority => {
                for m in &picked {
                    for o in pool.iter().filter(|o| !picked.contains(o)) {
                        add(FaultKind::Partition {
                            a: (*m).clone(),
                            b: (*o).clone(),
                            one_way: false,
                        });
                    }
                }
            }
            "partition" => {
                let other = loop {
                    let c = pool[rng.gen_range(0..pool.len())];
                    if c != picked[0] {
                        break c;
                    }
                };
                add(FaultKind::Partition {
                    a: picked[0].clone(),
                    b: other.clone(),
                    one_way: false,
                });
            }
            _ => {
                for node in picked {
                    let node = node.clone();
                    add(match kind {
                        "crash" => FaultKind::Crash { node },
                        "slow" => FaultKind::Slow {
                            node,
                            delay_ms: rng.gen_range(delay.0..=delay.1),
                        },
                        "disk_full" => FaultKind::DiskFull { node },
                        "io_error" => FaultKind::IoError { node },
                        _ => FaultKind::DbDown { node },
                    });
                }
            }
        }
    }
}

/// The faults of a `swizzle` generator: links clogged one by one, then
/// unclogged in random order.
fn swizzle_faults(
    g: &Generator,
    rng: &mut ChaCha8Rng,
    faults: &mut Vec<Fault>,
    drawn: &mut Vec<(String, String)>,
) {
    let Generator::Swizzle {
        entry,
        targets,
        start,
        duration,
        run_ms,
        links,
    } = g
    else {
        return;
    };
    let start_ms = ms_drawn(rng, *start);
    let total = ms_drawn(rng, *duration);
    if start.1 > start.0 {
        drawn.push((format!("fault[{entry}].start"), units::fmt_ms(start_ms)));
    }
    if duration.1 > duration.0 {
        drawn.push((format!("fault[{entry}].duration"), units::fmt_ms(total)));
    }
    let start_ms = &start_ms;
    let duration_ms = &total.min(run_ms.saturating_sub(*start_ms)).max(2);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            pairs.push((a.clone(), b.clone()));
        }
    }
    // Fisher-Yates with the scenario RNG.
    for i in (1..pairs.len()).rev() {
        pairs.swap(i, rng.gen_range(0..=i));
    }
    pairs.truncate(*links);
    let half = duration_ms / 2;
    let step = half / (*links as u64).max(1);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    for (i, (a, b)) in pairs.iter().enumerate() {
        let clog = start_ms + i as u64 * step;
        let j = order.iter().position(|&k| k == i).unwrap_or(0) as u64;
        let unclog = start_ms + half + j * step;
        faults.push(Fault {
            kind: FaultKind::Partition {
                a: a.clone(),
                b: b.clone(),
                one_way: false,
            },
            start_ms: clog,
            duration_ms: Some((unclog - clog).max(1000)),
        });
    }
}
