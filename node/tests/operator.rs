//! What an operator relies on: exit codes that say what happened. 0 when
//! everything asked for happened, 1 when the command ran but found
//! something not well, 2 when it could not do its job.

mod common;

use common::TestCluster;

/// `load` exits 0 only when every IM was accepted: with a front end down,
/// its IMs get no answer and the command says so with exit 1. Before, it
/// printed "accepted 0 … no answer 10" and exited 0.
#[test]
fn load_exits_non_zero_unless_every_im_is_accepted() {
    let mut c = TestCluster::start("plain", "");
    let args = [
        "load",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--timeout",
        "2s",
    ];
    let (code, out, err) = c.cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rejected 0, no answer 0"), "{out}");

    c.kill("fe1");
    let (code, out, err) = c.cli(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("IMs not accepted"), "{err}");
}

/// With `critical_auto_resume = false` a critical-mode shutdown lasts until
/// an operator ends it: `holdfast critical resume` (over TLS, with the
/// operator's credential) does, a user's credential is refused, and the
/// front end accepts IMs again at once. Before, nothing could end it.
#[test]
fn an_operator_ends_a_shutdown_that_does_not_end_by_itself() {
    const SETTINGS: &str = r#"
critical_mode = true
critical_auto_resume = false
heartbeat_interval = "500ms"
heartbeat_ttrq = "2s"
heartbeat_ttbr = "4s"
resend_interval = "500ms"
"#;
    let mut c = TestCluster::start("tls", SETTINGS);
    let im = [
        "im",
        "send",
        "--from",
        "alice@corp.example",
        "--to",
        "bob@corp.example",
        "x",
    ];
    let (code, out, err) = c.cli(&im);
    assert_eq!(code, 0, "healthy: {out}{err}");

    // The archiving server goes: fe1 shuts down.
    c.kill("arch1");
    let shut_down = |c: &TestCluster| {
        let (code, _, err) = c.cli(&im);
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
    let (code, out, err) = c.cli(&im);
    assert_eq!(code, 0, "accepting again: {out}{err}");
    assert!(
        c.log("fe1").contains("critical_resume"),
        "the resume is an operator event"
    );

    let (code, out, _) = c.cli(&resume);
    assert_eq!(code, 0);
    assert!(out.contains("was not shut down"), "{out}");
}
