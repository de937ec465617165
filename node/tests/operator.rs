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
