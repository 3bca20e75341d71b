//! Encryption at rest through the real binary: with a key file, message
//! bodies never appear in the data directory, and messages written under an
//! old key stay readable after a new key is added.

mod support;

use std::path::Path;
use std::time::Duration;

use support::chat::Device;
use support::{Options, Server};

const KEY_1: &str = "1:1111111111111111111111111111111111111111111111111111111111111111";
const KEY_2: &str = "2:2222222222222222222222222222222222222222222222222222222222222222";

fn start(data: &Path, keys: Option<&Path>) -> Server {
    let mut o = Options::new().data_dir(data);
    if let Some(k) = keys {
        o = o.arg("--encryption-keys-file").arg(k);
    }
    o.start()
}

/// Whether any file under `dir` contains `needle`.
fn found_in(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

fn stop(mut server: Server) {
    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
}

#[test]
fn bodies_are_sealed_on_disk_and_survive_key_rotation() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY_1}\n")).expect("writable");

    let server = start(&data, Some(&keys));
    let mut alice = Device::online(&server, 1, 1);
    let conv = alice.direct_open(2).conv;
    for i in 0..20 {
        alice.send_text(conv, &format!("needle-old-{i:03}"));
    }
    drop(alice);
    stop(server);
    for i in [0, 7, 19] {
        let needle = format!("needle-old-{i:03}");
        assert!(
            !found_in(&data, needle.as_bytes()),
            "{needle} is on disk in the clear"
        );
    }

    // Rotate: key 2 is current, key 1 still reads.
    std::fs::write(&keys, format!("{KEY_1}\n{KEY_2}\n")).expect("writable");
    let server = start(&data, Some(&keys));
    let mut alice = Device::online(&server, 1, 1);
    for i in 0..5 {
        alice.send_text(conv, &format!("needle-new-{i:03}"));
    }
    let mut bob = Device::connect(&server, 2, 1);
    let synced = bob.sync();
    let bodies: Vec<String> = synced
        .in_conv(conv)
        .iter()
        .filter_map(|m| match &m.content {
            protocol::Content::Text(t) => Some(t.clone()),
            protocol::Content::Event(_) => None,
        })
        .collect();
    assert_eq!(bodies.len(), 25, "{bodies:?}");
    assert_eq!(bodies[0], "needle-old-000");
    assert_eq!(bodies[24], "needle-new-004");
    drop((alice, bob));
    stop(server);
    assert!(
        !found_in(&data, b"needle-new-"),
        "a new body is on disk in the clear"
    );

    // The scan is real: without encryption, bodies are found.
    let plain = dir.path().join("plain");
    let server = start(&plain, None);
    let mut alice = Device::online(&server, 1, 1);
    let conv = alice.direct_open(2).conv;
    alice.send_text(conv, "needle-plain-000");
    drop(alice);
    stop(server);
    assert!(found_in(&plain, b"needle-plain-000"));
}

#[test]
fn a_bad_key_file_stops_the_start_with_a_message_and_no_key_bytes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "1:abcdef0123456789\n").expect("writable");
    let exited = Options::new()
        .arg("--encryption-keys-file")
        .arg(&keys)
        .start_and_expect_exit();
    assert!(!exited.status.success());
    assert!(exited.log.contains("encryption keys"), "{}", exited.log);
    assert!(
        !exited.log.contains("abcdef0123456789"),
        "key bytes in the log: {}",
        exited.log
    );
}
