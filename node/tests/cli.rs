use std::process::Command;

fn holdfast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .output()
        .unwrap()
}

/// docs/settings.md embeds the generated table; it must match the code.
#[test]
fn settings_doc_is_current() {
    let out = holdfast(&["settings", "--markdown"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/settings.md"))
        .unwrap();
    assert!(
        doc.contains(&table),
        "docs/settings.md is out of date: regenerate the table with `cargo run -p holdfast -- settings --markdown`"
    );
}

#[test]
fn inspect_store_reads_a_log_and_reports_a_torn_tail() {
    use holdfast_actors::core::actor::StoreOp;
    let payload = postcard::to_allocvec(&vec![StoreOp::Put {
        key: b"x".to_vec(),
        value: b"y".to_vec(),
    }])
    .unwrap();
    let mut log = (payload.len() as u32).to_be_bytes().to_vec();
    log.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    log.extend_from_slice(&payload);
    log.extend_from_slice(&[0, 0, 0, 9, 1]); // a torn frame
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outgoing_queue.log");
    std::fs::write(&file, &log).unwrap();
    let out = holdfast(&["inspect-store", file.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 keys"), "{text}");
    assert!(text.contains("torn tail of 5 bytes"), "{text}");

    // A damaged frame with an intact one after it is damage, not a torn
    // tail: both keys around it are read.
    let frame = |k: &[u8]| {
        let payload = postcard::to_allocvec(&vec![StoreOp::Put {
            key: k.to_vec(),
            value: b"v".to_vec(),
        }])
        .unwrap();
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        f.extend_from_slice(&payload);
        f
    };
    let (a, mut b, c) = (frame(b"a"), frame(b"b"), frame(b"c"));
    let last = b.len() - 1;
    b[last] ^= 0xff;
    let damaged = [a.clone(), b.clone(), c].concat();
    std::fs::write(&file, &damaged).unwrap();
    let out = holdfast(&["inspect-store", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "damage is not well");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2 keys"), "{text}");
    assert!(
        text.contains(&format!("DAMAGED: {} bytes at offset {}", b.len(), a.len())),
        "{text}"
    );
    assert!(!text.contains("torn tail"), "{text}");

    let out = holdfast(&["inspect-store", "/nonexistent.log"]);
    assert_eq!(out.status.code(), Some(2));
    // A file that is no store log at all is an error, not an empty store.
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let out = holdfast(&["inspect-store", readme]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a store log"));
}

/// `bench` is a measurement, but a run in which nothing was accepted (or
/// accepted IMs never reached the archive) measured nothing: exit 1 with
/// the reason. Before, it printed "accepted 0" and exited 0. Here every IM
/// is over the size limit.
#[test]
fn bench_fails_when_no_im_is_accepted() {
    let out = holdfast(&[
        "bench",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--links",
        "plain",
        "--set",
        "im_max_bytes=\"64\"",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("none of 20 IMs was accepted"), "{err}");
}
