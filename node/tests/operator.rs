//! What an operator relies on: exit codes that say what happened. 0 when
//! everything asked for happened, 1 when the command ran but found
//! something not well, 2 when it could not do its job, 3 when it could
//! not reach the cluster.

mod common;

use common::TestCluster;

/// Critical mode on, with heartbeats fast enough that a dead archiving
/// server is noticed within a few seconds.
const FAST_CRITICAL: &str = r#"
critical_mode = true
heartbeat_interval = "500ms"
heartbeat_ttrq = "2s"
heartbeat_ttbr = "4s"
resend_interval = "500ms"
"#;

/// `load` exits 0 only when every IM was accepted: with a front end down,
/// its IMs get no answer and the command says so with exit 1, naming the
/// address that refused the connection. Before, it printed "accepted 0 …
/// no answer 10" and exited 0. And it says so at once: the refused front
/// end's IMs end when the connection fails, not at the timeout, while the
/// front end that is up still takes its share. Before, the run waited out
/// its whole `--timeout` for the one that was down.
#[test]
fn load_exits_non_zero_unless_every_im_is_accepted() {
    use std::time::{Duration, Instant};
    let mut c = TestCluster::start("plain", "");
    // 20 IMs a second for a second, each waited for up to `timeout`.
    let load = |timeout| {
        [
            "load",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--timeout",
            timeout,
        ]
    };
    let (code, out, err) = c.cli(&load("2s"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rejected 0 (busy 0), no answer 0"), "{out}");

    let fe1 = c.config.node("fe1").unwrap().listen;
    c.kill("fe1");
    let start = Instant::now();
    let (code, out, err) = c.cli(&load("60s"));
    let took = start.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        took < Duration::from_secs(20),
        "waited {took:?} for a front end that refused"
    );
    assert!(err.contains("IMs not accepted"), "{err}");
    // And it says why: before, only "no answer 10".
    let refused = format!("connection refused: {fe1} (fe1)");
    assert!(err.contains(&refused), "{err}");
    assert!(
        err.contains(&format!("cannot reach a front end: {refused}")),
        "said as it happened: {err}"
    );
    // fe2's users' IMs went through.
    let accepted: u64 = out
        .split("accepted ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(accepted > 0, "{out}");
}

/// With `critical_auto_resume = false` a critical-mode shutdown lasts until
/// an operator ends it: `holdfast critical resume` (over TLS, with the
/// operator's credential) does, a user's credential is refused, and the
/// front end accepts IMs again at once. Before, nothing could end it.
#[test]
fn an_operator_ends_a_shutdown_that_does_not_end_by_itself() {
    let settings = format!("{FAST_CRITICAL}critical_auto_resume = false\n");
    let mut c = TestCluster::start("tls", &settings);
    let (code, out, err) = c.send_im("alice@corp.example", "bob@corp.example", "x");
    assert_eq!(code, 0, "healthy: {out}{err}");

    // The archiving server goes: fe1 shuts down.
    c.kill("arch1");
    let shut_down = |c: &TestCluster| {
        let (code, _, err) = c.send_im("alice@corp.example", "bob@corp.example", "x");
        code != 0 && err.contains("critical mode")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !shut_down(&c) {
        assert!(
            std::time::Instant::now() < deadline,
            "fe1 did not shut down"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // It comes back; fe1 stays shut down, as configured.
    c.start_node("arch1");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(shut_down(&c), "fe1 resumed by itself");
    // Every node is up, and `status` says fe1 is not well: exit 1.
    let (code, out, err) = c.cli(&["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("fe1") && l.contains("SHUT DOWN")),
        "{out}"
    );
    assert!(err.contains("nodes not well"), "{err}");

    let resume = ["critical", "resume", "--node", "fe1"];
    let (code, out, err) = c.cli(&[&resume[..], &["--as", "alice@corp.example"]].concat());
    assert_eq!(code, 2, "a user may not resume: {out}{err}");
    // Told before anything is sent (the front end refuses it too: see the
    // unit tests and the simulator's `resume_as_user` attack).
    assert!(err.contains("needs operator"), "{err}");
    assert!(shut_down(&c), "fe1 resumed for a user");

    let (code, out, err) = c.cli(&resume);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("fe1: resumed; it had shut down:"), "{out}");
    let (code, out, err) = c.send_im("alice@corp.example", "bob@corp.example", "x");
    assert_eq!(code, 0, "accepting again: {out}{err}");
    assert!(
        c.log("fe1").contains("critical_resume"),
        "the resume is an operator event"
    );

    let (code, out, _) = c.cli(&resume);
    assert_eq!(code, 0);
    assert!(out.contains("was not shut down"), "{out}");
}

/// Every node serves `/metrics` in a form a real OpenMetrics parser
/// accepts, with counts of things done typed as counters, `/healthz`
/// always, and `/readyz` that turns 503 (with the reason) on a front end
/// whose archiving server is gone, and back to 200 when it returns.
#[test]
fn every_node_serves_parseable_metrics_health_and_readiness() {
    use openmetrics_parser::OpenMetricsType;
    use std::time::{Duration, Instant};
    let settings = format!("{FAST_CRITICAL}critical_resume_after = \"1s\"\n");
    let mut c = TestCluster::start("plain", &settings);
    let (code, out, err) = c.send_im("alice@corp.example", "bob@corp.example", "x");
    assert_eq!(code, 0, "{out}{err}");
    for node in ["fe1", "fe2", "arch1", "db1"] {
        c.http_wait(node, "/readyz", 200, Duration::from_secs(15));
        assert_eq!(c.http_get(node, "/healthz").0, 200);
    }
    // The gauges and counters are sampled once a second.
    std::thread::sleep(Duration::from_millis(1500));
    for node in ["fe1", "fe2", "arch1", "db1"] {
        let (code, content_type, text) = c.http_get(node, "/metrics");
        assert_eq!(code, 200);
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let types = common::metric_types(node, &text);
        let kind = |family: &str| types.get(family).copied();
        // Written once there is one.
        assert!(
            matches!(
                kind("holdfast_operator_events"),
                None | Some(OpenMetricsType::Counter)
            ),
            "{node}"
        );
        match node {
            "fe1" | "fe2" => {
                assert_eq!(
                    kind("holdfast_outgoing_depth"),
                    Some(OpenMetricsType::Gauge)
                );
                assert_eq!(kind("holdfast_resends"), Some(OpenMetricsType::Counter));
                assert_eq!(
                    kind("holdfast_im_answer_seconds"),
                    Some(OpenMetricsType::Histogram)
                );
            }
            "arch1" => {
                assert_eq!(
                    kind("holdfast_duplicates_dropped"),
                    Some(OpenMetricsType::Counter)
                );
                assert_eq!(
                    kind("holdfast_db_batch_seconds"),
                    Some(OpenMetricsType::Histogram)
                );
            }
            _ => assert_eq!(kind("holdfast_archived_rows"), Some(OpenMetricsType::Gauge)),
        }
        if node == "fe1" {
            assert!(
                text.contains("holdfast_im_answers_total{")
                    && text.contains("outcome=\"accepted\""),
                "{text}"
            );
        }
    }

    // `holdfast status` covers every node: the archiving server's queue,
    // the archive's rows.
    let (code, out, err) = c.cli(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    for (node, holds) in [("arch1", "queued 0"), ("db1", "archived rows")] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(node) && l.contains("ready") && l.contains(holds)),
            "{out}"
        );
    }

    // The database goes: the archiving server is not ready, and says why,
    // once it has tried to reach it (an IM makes it try).
    c.kill("db1");
    c.send_im("alice@corp.example", "bob@corp.example", "y");
    let why = c.http_wait("arch1", "/readyz", 503, Duration::from_secs(20));
    assert!(why.contains("cannot reach db1"), "{why}");
    c.start_node("db1");
    c.http_wait("arch1", "/readyz", 200, Duration::from_secs(30));

    c.kill("arch1");
    // The others answer: the cluster is reachable and not well.
    let (code, out, err) = c.cli(&["status"]);
    assert_eq!(code, 1, "a node unreachable: {out}{err}");
    assert!(
        out.contains("arch1") && out.contains("unreachable"),
        "{out}"
    );
    let why = c.http_wait("fe1", "/readyz", 503, Duration::from_secs(20));
    assert!(
        why.contains("cannot reach arch1") || why.contains("link") || why.contains("critical mode"),
        "{why}"
    );
    assert_eq!(
        c.http_get("fe1", "/healthz").0,
        200,
        "alive while not ready"
    );
    // The log is a file: no colour codes; operator events at the level
    // their meaning says (a NACK asks for a look: WARN).
    let nack = |l: &str| l.contains("WARN") && l.contains("event=\"nack_delivery\"");
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = c.log("fe1");
        if log.lines().any(nack) || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    assert!(log.lines().any(nack), "{log}");
    c.start_node("arch1");
    c.http_wait("fe1", "/readyz", 200, Duration::from_secs(30));
}

/// `holdfast dlq list|resend`: records the archiving server did not take
/// within the data TTRQ wait in fe1's dead-letter queue; an operator sees
/// them and moves them back into the stream at once, and they reach the
/// archive once the server is back.
#[test]
fn an_operator_lists_and_resends_the_dead_letter_queue() {
    use std::time::{Duration, Instant};
    const SETTINGS: &str = r#"
data_ttrq = "2s"
dlq_check = "500ms"
heartbeat_interval = "500ms"
resend_interval = "500ms"
"#;
    let mut c = TestCluster::start("plain", SETTINGS);
    c.kill("arch1");
    for i in 0..3 {
        let body = format!("dead letter {i}");
        let (code, out, err) = c.send_im("alice@corp.example", "bob@corp.example", &body);
        assert_eq!(code, 0, "{out}{err}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (code, out, err) = c.cli(&["dlq", "list", "--node", "fe1", "--json"]);
        assert_eq!(code, 0, "{err}");
        if out.lines().count() >= 3 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(listed.lines().count(), 3, "{listed}");

    let (code, out, err) = c.cli(&["dlq", "resend", "--node", "fe1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fe1: 3 resent, 0 still in the dead-letter queue"),
        "{out}"
    );
    assert!(
        c.log("fe1").contains("asked by operator:"),
        "recorded as an operator event"
    );

    c.start_node("arch1");
    let archived = c.wait_archive(Duration::from_secs(30), |a| a.len() >= 3);
    assert_eq!(archived.len(), 3, "{archived:?}");
}

/// Logs are coloured for a person at a terminal only: not through a pipe
/// (a log file), and not at a terminal with `NO_COLOR` set. The log line
/// here is the client's own: `im send` to a front end that is down logs
/// the failed connection at DEBUG.
#[test]
fn logs_are_coloured_only_at_a_terminal_without_no_color() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, holdfast::cluster_up::loopback_config("plain", "")).unwrap();
    let line = format!(
        "{} im send -c {} --from alice@corp.example --to bob@corp.example x 2>&1",
        common::exe().display(),
        config.display()
    );
    let run = |terminal: bool, no_color: bool| -> String {
        let mut c = if terminal {
            let mut c = Command::new("script");
            c.args(["-qec", &line, "/dev/null"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &line]);
            c
        };
        c.env("RUST_LOG", "debug").env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("connect failed"), "no log line: {text:?}");
        text
    };
    let piped = run(false, false);
    assert!(!piped.contains('\u{1b}'), "colour in a pipe: {piped:?}");
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` to run at a terminal: that part is skipped");
        return;
    }
    let coloured = run(true, false);
    assert!(
        coloured.contains("\u{1b}["),
        "no colour at a terminal: {coloured:?}"
    );
    let plain = run(true, true);
    assert!(!plain.contains('\u{1b}'), "colour with NO_COLOR: {plain:?}");
}

/// Warnings about misbehaving connections are limited: a burst of 60
/// connections sending garbage writes at most 20 warning lines in a
/// period, and the first warning of the next period says how many were
/// left out.
#[test]
fn repeated_connection_warnings_are_rate_limited() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let c = TestCluster::start("plain", "");
    let fe1 = c.config.node("fe1").unwrap().listen;
    let garbage = |n: usize| {
        for _ in 0..n {
            let mut s = std::net::TcpStream::connect(fe1).unwrap();
            // A frame header claiming 4 GiB: refused as soon as it is read.
            s.write_all(b"\xff\xff\xff\xffnot a frame").unwrap();
        }
    };
    let start = Instant::now();
    garbage(60);
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("closing connection"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while warned(&c.log("fe1")) < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = c.log("fe1");
    assert_eq!(warned(&log), 20, "{log}");
    assert!(!log.contains("left out"), "{log}");

    // The next period begins with the count.
    std::thread::sleep(
        Duration::from_secs(10).saturating_sub(start.elapsed()) + Duration::from_millis(500),
    );
    garbage(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = c.log("fe1");
        if log.contains("more connection warnings were left out") {
            assert!(log.contains("left_out=40"), "{log}");
            assert_eq!(warned(&log), 21, "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no count of lines left out: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The example config (every role: front ends, archiving server,
/// database, Channel servers, Lookup, chat store, Web service, Compliance
/// service) on free ports.
fn every_role_config() -> String {
    let mut text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/cluster.toml"
    ))
    .unwrap();
    let ports: Vec<String> = text
        .split('"')
        .filter_map(|s| s.strip_prefix("127.0.0.1:"))
        .map(str::to_string)
        .collect();
    // Placeholders first: a free port written in place of one must never
    // contain another still to be replaced.
    for (i, port) in ports.iter().enumerate() {
        text = text.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:<port{i}>\""),
        );
    }
    for i in 0..ports.len() {
        let free = holdfast::cluster_up::free_port().unwrap();
        text = text.replace(&format!("<port{i}>"), &free.to_string());
    }
    text
}

/// Every role, not only the archiving path, serves `/metrics` that a real
/// OpenMetrics parser accepts, with what its role holds as gauges,
/// `/healthz`, and `/readyz` 200 once its peers are up. Before, only a
/// front end, an archiving server and a database were parsed, and a Web
/// service reported no gauge at all (its compliance outbox, which
/// `status` promises) while every node exposed a front end's queue quota.
#[test]
fn every_role_serves_parseable_metrics_health_and_readiness() {
    use openmetrics_parser::OpenMetricsType;
    use std::time::{Duration, Instant};
    let c = TestCluster::start_with("tls", every_role_config);
    let names: Vec<String> = c.config.nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(names.len(), 10, "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &names {
        loop {
            let (code, _, body) = c.http_get(node, "/readyz");
            if code == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{node} not ready: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(c.http_get(node, "/healthz").0, 200, "{node}");
    }
    // The gauges are sampled once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let gauge = |node: &str| match node {
        "fe1" | "fe2" => "holdfast_outgoing_depth",
        "arch1" => "holdfast_destination_depth",
        "db1" => "holdfast_archived_rows",
        "ch1" | "ch2" => "holdfast_chat_sessions",
        "lookup1" => "holdfast_channels_known",
        "chatdb" => "holdfast_chat_posts",
        "web1" => "holdfast_compliance_outbox",
        "comp1" => "holdfast_compliance_staged",
        other => panic!("a node of no known role: {other}"),
    };
    for node in &names {
        let (code, _, text) = c.http_get(node, "/metrics");
        assert_eq!(code, 200, "{node}");
        let types = common::metric_types(node, &text);
        let kind = |family: &str| types.get(family).copied();
        assert_eq!(
            kind(gauge(node)),
            Some(OpenMetricsType::Gauge),
            "{node}: {}\n{text}",
            gauge(node)
        );
        // A front end's queue quota only where there is such a queue.
        assert_eq!(
            kind("holdfast_queue_quota_bytes").is_some(),
            node.starts_with("fe"),
            "{node}"
        );
    }
}

/// Every operator control over TLS refuses a user's credential with exit
/// 2 and says why, and each node refuses the request itself when a client
/// presents a user's credential anyway (a client that skips the command's
/// own check): the refusal is answered as such and recorded as the
/// operator event `identity_refused` in the node's log. `dlq list`,
/// `parked list` and `parked export` send nothing: they read the nodes'
/// logs on this machine, which the file permissions guard.
#[test]
fn every_operator_control_refuses_a_user_over_tls() {
    use holdfast::chat_client::{ChatClient, ChatError};
    use holdfast::operator_client::{ask, AskError, Session};
    use holdfast_actors::core::identity::Role;
    use holdfast_actors::core::ids::{ActorKind, Token};
    use holdfast_actors::core::protocol::chat::ChatReject;
    use holdfast_actors::core::protocol::{
        ArchiveRefusal, ArchivingMsg, ComplianceMsg, Msg, RecordsMsg,
    };
    use std::time::Duration;
    const USER: &str = "alice@corp.example";
    let c = TestCluster::start_with("tls", every_role_config);

    // The commands: each refused, exit 2, nothing done.
    let controls: [&[&str]; 10] = [
        &["critical", "resume", "--node", "fe1"],
        &["dlq", "resend", "--node", "fe1"],
        &["parked", "retry", "--node", "arch1"],
        &["compliance", "run-now"],
        &["compliance", "ack", "1"],
        &["compliance", "status"],
        &["chat", "room", "clear", "--room", "general"],
        &["chat", "room", "disable", "--room", "general"],
        &["chat", "retention", "purge-now"],
        &["archive", "retention", "purge-now"],
    ];
    for control in controls {
        let (code, out, err) = c.cli(&[control, &["--as", USER]].concat());
        assert_eq!(code, 2, "{control:?} as a user: {out}{err}");
        assert!(
            err.contains("needs operator") || err.contains("needs the operator"),
            "{control:?} says why: {err}"
        );
    }

    // The nodes: a user's credential presented anyway is refused there.
    let rt = common::runtime();
    let t = Duration::from_secs(10);
    let forbidden = |got: Result<Msg, AskError>, what: &str| match got {
        Err(AskError::Refused { reason, .. }) => {
            assert!(reason.contains("needs the operator"), "{what}: {reason}")
        }
        Ok(Msg::Records(RecordsMsg::ArchiveRefused {
            refusal: ArchiveRefusal::Forbidden(reason),
            ..
        })) => assert!(reason.contains("needs the operator"), "{what}: {reason}"),
        other => panic!("{what} as a user: {other:?}"),
    };
    let refused = |m: &Msg| matches!(m, Msg::Records(RecordsMsg::ArchiveRefused { .. }));
    let config = &c.config;
    rt.block_on(async {
        let asks: Vec<(&str, ActorKind, Msg)> = vec![
            (
                "fe1",
                ActorKind::FrontEnd,
                Msg::Archiving(ArchivingMsg::OperatorResume),
            ),
            (
                "fe1",
                ActorKind::OutgoingQueue,
                Msg::Archiving(ArchivingMsg::DeadLettersResend),
            ),
            (
                "arch1",
                ActorKind::DestinationQueue,
                Msg::Archiving(ArchivingMsg::ParkedRetry { keys: Vec::new() }),
            ),
            (
                "comp1",
                ActorKind::Compliance,
                Msg::Compliance(ComplianceMsg::ComplianceRunNow),
            ),
            (
                "comp1",
                ActorKind::Compliance,
                Msg::Compliance(ComplianceMsg::ComplianceAck { batch: 1 }),
            ),
            (
                "db1",
                ActorKind::Database,
                Msg::Records(RecordsMsg::PurgeNow { token: Token(1) }),
            ),
            (
                "chatdb",
                ActorKind::ChatStore,
                Msg::Records(RecordsMsg::ChatPurgeNow { token: Token(1) }),
            ),
        ];
        for (node, kind, msg) in asks {
            let what = format!("{} to {node}", msg.name());
            let got = ask(config, USER, &[Role::User], (node, kind), msg, t, refused).await;
            forbidden(got, &what);
        }
        // A session that stays open is refused request after request.
        let mut s = Session::open(config, USER, &[Role::User], "db1").unwrap();
        let got = s
            .ask(
                ActorKind::Database,
                Msg::Records(RecordsMsg::PurgeNow { token: Token(2) }),
                t,
                refused,
            )
            .await;
        forbidden(got, "a second PurgeNow");

        let mut chat = ChatClient::connect_as(config, USER, Role::User, None, t)
            .await
            .unwrap();
        for got in [
            chat.clear_room("general", None).await,
            chat.disable_room("general", true).await,
        ] {
            assert!(
                matches!(
                    got,
                    Err(ChatError::Rejected {
                        reason: ChatReject::Forbidden(_),
                        ..
                    })
                ),
                "{got:?}"
            );
        }
    });

    // Each refusal is on the record where it happened.
    // (The chat requests went to the Channel server Lookup chose.)
    for nodes in [
        &["fe1"][..],
        &["arch1"],
        &["comp1"],
        &["db1"],
        &["chatdb"],
        &["ch1", "ch2"],
    ] {
        let log = || nodes.iter().map(|n| c.log(n)).collect::<String>();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log().contains("identity_refused") {
            assert!(
                std::time::Instant::now() < deadline,
                "{nodes:?} did not record the refusal:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
