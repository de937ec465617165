//! Bad scenario files exit 2 with a message that names the file, the line
//! and the problem. Runs in both builds: validation happens before any
//! simulation.

mod common;

use common::sim_cli;

const GOOD: &str = r#"name = "ok"
duration = "10m"

[topology]
front_ends = 2

[[workload]]
kind = "im"
users = 10
rate = 1.0

[[fault]]
kind = "crash"
node = "fe1"
start = "1m"
duration = "1m"
"#;

/// GOOD's crash fault, for the tests that put another fault in its place.
const CRASH: &str = "kind = \"crash\"\nnode = \"fe1\"\nstart = \"1m\"\nduration = \"1m\"";

/// `src` written to `scenario.toml` in a fresh folder.
fn scenario_file(src: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    common::scenario_file("scenario.toml", src)
}

/// The simulator's exit code and standard error when run with `args`.
fn sim(args: &[&str]) -> (Option<i32>, String) {
    let out = sim_cli().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check` of `src`: the exit code and standard error.
fn run_with(src: &str) -> (Option<i32>, String) {
    let (_dir, file) = scenario_file(src);
    sim(&["check", file.to_str().unwrap()])
}

/// `check` of `src` exits 2 and says each of `needles` (`what` names the
/// case): its standard error.
fn assert_refused(src: &str, what: &str, needles: &[&str]) -> String {
    let (code, err) = run_with(src);
    assert_eq!(code, Some(2), "{what}stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{what}{n:?} not in: {err}");
    }
    err
}

fn assert_rejected(src: &str, line: usize, needles: &[&str]) {
    let err = assert_refused(src, "", needles);
    assert!(
        err.contains(&format!("scenario.toml:{line}:")),
        "no file:line {line} in: {err}"
    );
}

/// GOOD with a chat workload on one Channel server and one Lookup, and
/// `topology` added to its topology.
fn good_chat(topology: &str) -> String {
    GOOD.replace(
        "front_ends = 2",
        &format!("front_ends = 2\nchannels = 1\nlookups = 1{topology}"),
    )
    .replace("kind = \"im\"", "kind = \"chat\"")
}

/// `check` of `src` exits 0.
fn assert_accepted(src: &str) {
    let (code, err) = run_with(src);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_good_file_is_accepted() {
    assert_accepted(GOOD);
}

#[test]
fn unknown_key() {
    assert_rejected(
        &GOOD.replace("users = 10", "users = 10\nspeed = 3"),
        10,
        &["workload.speed", "unknown field"],
    );
}

#[test]
fn unknown_node() {
    assert_rejected(
        &GOOD.replace("node = \"fe1\"", "node = \"fe9\""),
        14,
        &["fault.node", "fe9", "fe1, fe2, arch1, db1"],
    );
}

#[test]
fn bad_duration() {
    assert_rejected(
        &GOOD.replace("duration = \"1m\"", "duration = \"ten minutes\""),
        16,
        &["fault.duration", "ten minutes"],
    );
}

#[test]
fn negative_rate() {
    assert_rejected(
        &GOOD.replace("rate = 1.0", "rate = -2.0"),
        10,
        &["workload.rate", "positive"],
    );
}

#[test]
fn unknown_fault_kind_and_bad_setting() {
    assert_rejected(
        &GOOD.replace("kind = \"crash\"", "kind = \"meteor\""),
        13,
        &["fault.kind", "meteor"],
    );
    assert_rejected(
        &GOOD.replace(
            "[topology]",
            "[settings]\nresend_interval = \"soon\"\n\n[topology]",
        ),
        5,
        &["settings.resend_interval", "soon"],
    );
}

#[test]
fn run_also_refuses_a_bad_file_with_exit_2() {
    let (_dir, file) = scenario_file("name = 3");
    let (code, err) = sim(&["run", file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("scenario.toml:1"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, err) = sim(&["check", "/nonexistent/scenario.toml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read the file"));
}

#[test]
fn ranges_are_validated_at_their_extremes() {
    let with_range = GOOD.replace("rate = 1.0", "rate = \"2.0..1.0\"");
    assert_rejected(&with_range, 10, &["workload.rate", "low to high"]);
    let late = GOOD.replace("start = \"1m\"", "start = \"1m..20m\"");
    assert_rejected(&late, 15, &["fault.start", "after the run ends"]);
    assert_accepted(&GOOD.replace("rate = 1.0", "rate = \"1.0..3.0\""));
}

#[test]
fn random_faults_are_validated() {
    let cases: [(&str, usize, &[&str]); 6] = [
        (
            "kind = \"random\"\nstart = \"1m\"\nkinds = [\"meteor\"]\nevery = \"5m\"",
            15,
            &["fault.kinds", "meteor"],
        ),
        (
            "kind = \"random\"\nstart = \"1m\"",
            13,
            &["fault.every"],
        ),
        (
            "kind = \"swizzle\"\nstart = \"1m\"\nduration = \"5m\"\ntargets = [\"fe1\", \"zz9\"]",
            16,
            &["fault.targets", "zz9"],
        ),
        (
            "kind = \"random\"\nstart = \"1m\"\nevery = \"5m\"\ntargets = [\"fe1\", \"fe1\"]",
            16,
            &["fault.targets", "twice"],
        ),
        (
            "kind = \"random\"\nstart = \"1m\"\nevery = \"5m\"\nkinds = [\"db_down\"]\ntargets = [\"fe1\"]",
            13,
            &["fault.kinds", "can never hit"],
        ),
        (
            "kind = \"random\"\nstart = \"1m\"\nevery = \"5m\"\nnode = \"fe1\"",
            13,
            &["fault.node", "does not take"],
        ),
    ];
    for (fault, line, needles) in cases {
        assert_rejected(&GOOD.replace(CRASH, fault), line, needles);
    }
}

#[test]
fn a_chat_workload_needs_channel_servers_and_chat_keys_need_a_chat_workload() {
    assert_rejected(
        &GOOD.replace("kind = \"im\"", "kind = \"chat\""),
        8,
        &["workload.kind", "topology.channels"],
    );
    for (key, value) in [
        ("rooms", "3"),
        ("managed", "true"),
        ("churn", "0.5"),
        ("clear_at", "\"1m\""),
        ("disable_at", "\"1m\""),
    ] {
        assert_rejected(
            &GOOD.replace("users = 10", &format!("users = 10\n{key} = {value}")),
            10,
            &[&format!("workload.{key}"), "only a chat workload"],
        );
    }
    assert_rejected(
        &GOOD.replace("front_ends = 2", "front_ends = 2\nchannels = 2"),
        6,
        &["topology.lookups"],
    );
}

/// Records management keys: within the run, a cut before its clear, two
/// rooms when the last is disabled while the first is cleared.
#[test]
fn records_keys_are_checked() {
    let chat = good_chat("");
    for (keys, needles) in [
        (
            "clear_at = \"11m\"",
            &["workload.clear_at", "within the run"][..],
        ),
        (
            "clear_before = \"1m\"",
            &["workload.clear_before", "needs clear_at"][..],
        ),
        (
            "clear_at = \"1m\"\nclear_before = \"2m\"",
            &["workload.clear_before", "not after it"][..],
        ),
        (
            "disable_at = \"2m\"\nreplace_at = \"1m\"",
            &["workload.disable_at", "two rooms"][..],
        ),
    ] {
        let src = chat.replace("users = 10", &format!("users = 10\n{keys}"));
        assert_refused(&src, &format!("{keys}: "), needles);
    }
}

#[test]
fn a_setting_that_would_spin_is_refused_with_its_line() {
    assert_rejected(
        &GOOD.replace(
            "[topology]",
            "[settings]\nresend_interval = \"0s\"\n\n[topology]",
        ),
        5,
        &["settings.resend_interval", "greater than 0"],
    );
}

#[test]
fn compliance_needs_a_chat_pool_and_a_known_format() {
    assert_rejected(
        &GOOD.replace("front_ends = 2", "front_ends = 2\ncompliance = true"),
        6,
        &["topology.compliance", "topology.channels"],
    );
    let chat = good_chat("\ncompliance = true");
    let bad_format = format!("{chat}\n[compliance]\nformat = \"pdf\"\n");
    assert_refused(&bad_format, "", &["compliance.format", "xml, jsonl, csv"]);
    let no_service = GOOD.to_string() + "\n[compliance]\nformat = \"csv\"\n";
    assert_refused(&no_service, "", &["topology.compliance"]);
}

/// Output into a pipe whose reader has gone (`| head`) ends the program
/// quietly with 141, the status a shell shows for a program killed by
/// SIGPIPE, rather than with a panic. (The timeline of GOOD is some
/// 200 KB, more than a pipe holds, so the program is still writing.)
#[cfg(madsim)]
#[test]
fn a_closed_output_pipe_ends_the_program_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (_dir, file) = scenario_file(GOOD);
    let mut child = sim_cli()
        .args(["run", file.to_str().unwrap(), "--timeline"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut first).unwrap();
    } // the reader goes away here
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.contains("start"), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

#[test]
fn corrupt_fault_keys_are_checked() {
    let corrupt = GOOD.replace(
        "kind = \"crash\"\nnode = \"fe1\"",
        "kind = \"corrupt\"\nnode = \"fe1\"\nfile = \"journal\"",
    );
    assert_rejected(
        &corrupt,
        15,
        &["fault.file", "unknown store \"journal\"", "outgoing_queue"],
    );
    let too_many = GOOD.replace(
        "kind = \"crash\"\nnode = \"fe1\"",
        "kind = \"corrupt\"\nnode = \"fe1\"\nbytes = 0",
    );
    assert_rejected(&too_many, 15, &["fault.bytes", "from 1 to 4096"]);
    let not_corrupt = GOOD.replace("node = \"fe1\"", "node = \"fe1\"\nbytes = 16");
    assert_rejected(&not_corrupt, 13, &["fault.bytes", "only a corrupt fault"]);
    let good = GOOD.replace("kind = \"crash\"", "kind = \"corrupt\"");
    assert_accepted(&good);
}

#[test]
fn db_refuses_fault_keys_are_checked() {
    let on = |node: &str, extra: &str| {
        GOOD.replace(
            "kind = \"crash\"\nnode = \"fe1\"",
            &format!("kind = \"db_refuses\"\nnode = \"{node}\"{extra}"),
        )
    };
    assert_rejected(&on("fe1", ""), 14, &["fault.node", "not a database node"]);
    assert_rejected(
        &on("db1", "\none_in = 1"),
        15,
        &["fault.one_in", "from 2 to 1000000"],
    );
    let not_refuses = GOOD.replace("node = \"fe1\"", "node = \"fe1\"\none_in = 5");
    assert_rejected(
        &not_refuses,
        15,
        &["fault.one_in", "only a db_refuses fault"],
    );
    assert_accepted(&on("db1", "\none_in = 2"));
}

#[test]
fn hostile_workload_keys_are_checked() {
    let hostile = |attacks: &str| {
        format!(
            "{GOOD}\n[[workload]]\nkind = \"hostile\"\nattacks = {attacks}\nusers = 10\nrate = 1.0\n"
        )
    };
    assert_accepted(&hostile("[\"oversize\", \"flood\"]"));
    assert_rejected(
        &hostile("[\"teleport\"]"),
        20,
        &["unknown attack \"teleport\"", "reuse_id"],
    );
    assert_accepted(&hostile("[\"forge_from\", \"unauthenticated\"]"));
    assert_rejected(
        &GOOD.replace("rate = 1.0", "rate = 1.0\nattacks = [\"flood\"]"),
        11,
        &["workload.attacks", "only a hostile workload"],
    );
}

#[test]
fn unknown_operator_event() {
    let expect = |key: &str, names: &str| format!("{GOOD}\n[expect]\n{key} = {names}\n");
    assert_accepted(&expect("events_include", "[\"critical_shutdown\"]"));
    assert_rejected(
        &expect(
            "events_include",
            "[\"critical_shutdown\", \"critical_shutdwn\"]",
        ),
        19,
        &[
            "expect.events_include",
            "\"critical_shutdwn\" is not the name of an operator event",
        ],
    );
    assert_rejected(
        &expect("events_order", "[\"critical_shutdown\", \"resume\"]"),
        19,
        &["expect.events_order", "\"resume\""],
    );
}

#[test]
fn a_hold_released_before_it_is_placed() {
    assert_rejected(
        &format!(
            "{GOOD}\n[[hold]]\nname = \"h\"\nusers = [\"w0u1@corp.example\"]\nplace = \"5m\"\nrelease = \"2m\"\n"
        ),
        22,
        &["hold[0].release", "after `place`"],
    );
}

#[test]
fn a_hold_without_users() {
    assert_rejected(
        &format!("{GOOD}\n[[hold]]\nname = \"h\"\nusers = []\nplace = \"5m\"\n"),
        20,
        &["hold[0].users", "at least one user"],
    );
}
