//! The compliance output on real processes over mutual TLS: a file
//! uploaded with `holdfast file upload` is exported with its batch,
//! content-addressed under `files/` and listed in the manifest with its
//! size and SHA-256; `holdfast compliance status` shows the batch waiting
//! for pickup; `holdfast compliance ack` removes the batch's files, and
//! only then.

mod common;

use common::chat::{chat_config, ok, upload, ALICE};
use common::TestCluster;
use holdfast_actors::compliance::export::{sha256_hex, Manifest};
use std::path::Path;
use std::time::{Duration, Instant};

fn config_text() -> String {
    let mut text = chat_config(
        "tls",
        "chat_file_max = \"64KiB\"",
        &[("web1", "web"), ("comp1", "compliance")],
        &[],
    );
    text.push_str("\n[compliance]\noutput = \"compliance-out\"\nformat = \"jsonl\"\n");
    text
}

/// The manifests in `out`, by batch.
fn manifests(out: &Path) -> Vec<Manifest> {
    let mut found: Vec<Manifest> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            name.ends_with(".manifest.json")
                .then(|| serde_json::from_slice(&std::fs::read(&path).ok()?).ok())?
        })
        .collect();
    found.sort_by_key(|m| m.batch);
    found
}

/// The batches `holdfast compliance status` lists as waiting for pickup.
fn for_pickup(status: &str) -> Vec<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("for pickup:"))
        .unwrap_or_else(|| panic!("no pickup line: {status}"));
    line.split(['(', ')', ','])
        .skip(1)
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[test]
fn an_uploaded_file_is_exported_with_its_hash_and_removed_after_the_ack() {
    let mut c = TestCluster::start_with("tls", config_text);
    let content: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = c.dir.path().join("plan.bin");
    std::fs::write(&src, &content).unwrap();
    let uploaded = ok(upload(&c, ALICE, &src, &[]));
    assert!(uploaded.contains("uploaded plan.bin"), "{uploaded}");

    // An export now: the upload's batch carries the file.
    let out = c.dir.path().join("compliance-out");
    let sha = sha256_hex(&content);
    let deadline = Instant::now() + Duration::from_secs(30);
    let manifest = loop {
        ok(c.cli(&["compliance", "run-now"]));
        if let Some(m) = manifests(&out)
            .into_iter()
            .find(|m| m.uploads.iter().any(|u| u.sha256 == sha))
        {
            break m;
        }
        assert!(Instant::now() < deadline, "no batch with the upload");
        std::thread::sleep(Duration::from_millis(300));
    };
    let upload = manifest.uploads.iter().find(|u| u.sha256 == sha).unwrap();
    assert_eq!(upload.name, format!("files/{sha}"));
    assert_eq!(upload.size, content.len() as u64);
    assert_eq!(
        (
            upload.room.as_str(),
            upload.uploader.as_str(),
            upload.missing
        ),
        ("general", "alice@corp.example", false)
    );
    assert_eq!(upload.file_name, "plan.bin");
    let copy = std::fs::read(out.join(&upload.name)).unwrap();
    assert_eq!(sha256_hex(&copy), sha, "the exported file is the upload");
    let events = out.join(&manifest.file);
    assert_eq!(
        sha256_hex(&std::fs::read(&events).unwrap()),
        manifest.event_files[0].sha256
    );
    assert!(manifest.interval.is_some());

    // Waiting for pickup, shown by the status; nothing removed yet.
    let status = ok(c.cli(&["compliance", "status", "--as", "auditor"]));
    let batch = manifest.batch.to_string();
    assert!(for_pickup(&status).contains(&manifest.batch), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(events.exists() && out.join(&upload.name).exists());

    // A batch never written is refused.
    let (code, _, err) = c.cli(&["compliance", "ack", "99999"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has not been exported"), "{err}");

    // The auditor acknowledges: the batch's files go.
    let acked = ok(c.cli(&["compliance", "ack", &batch, "--as", "auditor"]));
    assert!(
        acked.contains(&format!("batch {batch} acknowledged")),
        "{acked}"
    );
    let manifest_path = out.join(format!(
        "holdfast-compliance-{:08}.manifest.json",
        manifest.batch
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.exists() || manifest_path.exists() || out.join(&upload.name).exists() {
        assert!(
            Instant::now() < deadline,
            "the batch's files are still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = ok(c.cli(&["compliance", "status"]));
    assert!(!for_pickup(&status).contains(&manifest.batch), "{status}");
    assert!(c.log("comp1").contains("compliance_batch_picked_up"));
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
}
