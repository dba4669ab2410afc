//! `datahub pub --secure-socket PATH --key-file KEY` and `datahub sub --socket PATH --key-file
//! KEY` end to end: files cross a sealed memfd block with their digests intact, nothing is
//! created in /dev/shm, and a wrong key, an unsafe socket directory or a bad key file is exit 2
//! with one line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{DEADLINE, Proc, blake2b, noise, run, write_file};

const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key_file(dir: &Path, name: &str, hex: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A 0700 directory for the socket, and the socket path in it.
fn socket_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let s = d.path().join("pub.sock");
    (d, s)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pub_and_sub_move_files_through_a_secure_socket_with_their_digests_intact() {
    let (_sd, sock) = socket_dir();
    let src = tempfile::tempdir().unwrap();
    let key = key_file(src.path(), "block.key", HEX);
    let files = [
        write_file(src.path(), "a.bin", &noise(300_000, 1)),
        write_file(src.path(), "b.txt", b"hello secure world\n"),
    ];
    let shm_before = datahub::list().unwrap();
    let publisher = Proc::spawn(&[
        "pub",
        "--secure-socket",
        s(&sock),
        "--key-file",
        s(&key),
        "--json",
        "--slot-size",
        "4096",
        s(&files[0]),
        s(&files[1]),
    ]);
    let out = tempfile::tempdir().unwrap();
    let sub = run(&[
        "sub",
        "--socket",
        s(&sock),
        "--key-file",
        s(&key),
        "--out",
        s(out.path()),
        "--json",
        "--wait",
        "20",
    ])
    .expect(0, "sub");
    let summary = sub.json();
    for (i, f) in files.iter().enumerate() {
        let base = f.file_name().unwrap().to_str().unwrap();
        let digest = blake2b(&std::fs::read(f).unwrap());
        assert_eq!(
            blake2b(&std::fs::read(out.path().join(base)).unwrap()),
            digest
        );
        assert_eq!(summary["files"][i]["blake2b"], digest.as_str());
    }
    let p = publisher.finish(DEADLINE).expect(0, "pub");
    assert_eq!(p.json()["files"].as_array().unwrap().len(), 2);
    // No block name was made, and the socket is gone with its producer.
    assert_eq!(datahub::list().unwrap(), shm_before);
    assert!(!sock.exists());
}

#[test]
fn sub_with_a_wrong_key_is_refused_with_exit_2_and_one_line() {
    let (_sd, sock) = socket_dir();
    let src = tempfile::tempdir().unwrap();
    let key = key_file(src.path(), "right.key", HEX);
    let wrong = key_file(src.path(), "wrong.key", &HEX.replace('0', "f"));
    let file = write_file(src.path(), "a.bin", b"data");
    let mut publisher = Proc::spawn(&[
        "pub",
        "--secure-socket",
        s(&sock),
        "--key-file",
        s(&key),
        "--wait",
        "20",
        s(&file),
    ]);
    common::wait_until("the socket to appear", || sock.exists());
    let d = run(&[
        "sub",
        "--socket",
        s(&sock),
        "--key-file",
        s(&wrong),
        "--wait",
        "5",
    ])
    .expect(2, "sub with the wrong key");
    let line = d.one_line_error();
    assert!(line.contains("refused"), "{line}");
    let _ = publisher.child.kill();
    let _ = publisher.child.wait();
}

#[test]
fn pub_refuses_an_unsafe_socket_dir_and_bad_key_files_with_exit_2() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let key = key_file(d.path(), "k", HEX);
    let sock = d.path().join("s");
    let file = write_file(d.path(), "f", b"x");
    let done = run(&[
        "pub",
        "--secure-socket",
        s(&sock),
        "--key-file",
        s(&key),
        s(&file),
    ])
    .expect(2, "pub in a 0777 dir");
    assert!(
        done.one_line_error().contains("unsafe socket path"),
        "{}",
        done.stderr
    );
    // A key file others can read.
    let (_sd, sock) = socket_dir();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let done = run(&[
        "pub",
        "--secure-socket",
        s(&sock),
        "--key-file",
        s(&key),
        s(&file),
    ])
    .expect(2, "pub with a 0644 key");
    assert!(
        done.one_line_error().contains("chmod 600"),
        "{}",
        done.stderr
    );
    // A key file of the wrong length.
    let short = key_file(d.path(), "short", "abcd");
    let done = run(&[
        "pub",
        "--secure-socket",
        s(&sock),
        "--key-file",
        s(&short),
        s(&file),
    ])
    .expect(2, "pub with a short key");
    done.one_line_error();
    // --secure-socket without --key-file is a usage error.
    let done = run(&["pub", "--secure-socket", s(&sock), s(&file)]).expect(2, "no key file");
    assert!(done.stderr.contains("--key-file"), "{}", done.stderr);
    // sub: nothing serving is exit 2 at the deadline, one line.
    let done = run(&[
        "sub",
        "--socket",
        s(&sock),
        "--key-file",
        s(&short),
        "--wait",
        "1",
    ]);
    done.expect(2, "sub with a bad key").one_line_error();
    let key2 = key_file(_sd.path(), "k2", HEX);
    let done = run(&[
        "sub",
        "--socket",
        s(&sock),
        "--key-file",
        s(&key2),
        "--wait",
        "0.3",
    ])
    .expect(2, "sub with nobody serving");
    assert!(
        done.one_line_error().contains("nothing served"),
        "{}",
        done.stderr
    );
    let _ = Duration::ZERO;
}
