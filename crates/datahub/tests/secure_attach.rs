//! Secure attach: sealed memfd blocks handed out over a Unix socket to consumers that prove
//! they hold the block's key, and refused to everyone else.

mod support;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use datahub::secure::{AttachPolicy, read_key_file, receive_block_fd};
use datahub::{ChecksumPolicy, Config, Consumer, Error, Expectations, Policy, Producer};
use support::{TempDir, child, param, tell};

const KEY: [u8; 32] = [0x5a; 32];
const T: Duration = Duration::from_secs(5);
const NOBODY: u32 = 65534;

fn config() -> Config {
    Config::new(Policy::Sequential)
        .slot_size(256)
        .slot_count(8)
        .checksum(ChecksumPolicy::Enforced)
        .checksum_key(KEY)
}

/// A scratch directory with `mode`, and the socket path inside it.
fn socket_dir(tag: &str, mode: u32) -> (TempDir, PathBuf) {
    let d = TempDir::new(tag);
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(mode)).unwrap();
    let sock = d.path.join("s");
    (d, sock)
}

fn hex(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    for i in 0..32 {
        k[i] = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    k
}

#[test]
fn same_uid_with_the_right_key_attaches_and_reads_messages() {
    let (_d, sock) = socket_dir("sa-ok", 0o700);
    let mut p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    assert!(p.name().starts_with("memfd:"));
    assert_eq!(p.attach_socket(), Some(sock.as_path()));
    let mut c = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap();
    for i in 0..20u32 {
        p.send(&i.to_le_bytes(), T).unwrap();
        let r = c.read(T).unwrap();
        assert_eq!((&r[..], r.seq()), (&i.to_le_bytes()[..], u64::from(i)));
    }
    let s = p.attach_stats().unwrap();
    assert_eq!((s.accepted, s.refused_key, s.refused_peer), (1, 0, 0));
    // Nothing of it is in /dev/shm.
    assert!(!datahub::list().unwrap().iter().any(|n| n.contains("sa-ok")));
}

#[test]
fn dropping_the_producer_unlinks_its_socket() {
    let (_d, sock) = socket_dir("sa-drop", 0o700);
    let p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    assert!(sock.exists());
    drop(p);
    assert!(!sock.exists());
    assert!(matches!(
        Consumer::attach_secure(&sock, &KEY, Expectations::new()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_secure_producer_refuses_a_handover_and_keeps_writing() {
    let (_d, sock) = socket_dir("sa-handover", 0o700);
    let mut p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    let mut c = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap();
    let name = format!("dh-sa-handover-{}", std::process::id());
    let e = p.handover(&name, config()).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    assert!(
        !std::path::Path::new("/dev/shm").join(&name).exists(),
        "no named successor may be created for a secure block"
    );
    p.send(b"still here", T).unwrap();
    assert_eq!(&*c.read(T).unwrap(), b"still here");
}

#[test]
fn a_wrong_key_is_refused_counted_and_the_producer_keeps_serving() {
    let (_d, sock) = socket_dir("sa-key", 0o700);
    let mut p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    let e = Consumer::attach_secure(&sock, &[1; 32], Expectations::new()).unwrap_err();
    assert!(matches!(e, Error::AttachRefused { .. }), "{e}");
    assert_eq!(e.code(), 38);
    let s = p.attach_stats().unwrap();
    assert_eq!((s.refused_key, s.accepted), (1, 0));
    let mut c = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap();
    p.send(b"after", T).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"after");
    assert_eq!(p.attach_stats().unwrap().accepted, 1);
}

#[test]
fn a_config_without_a_key_is_refused() {
    let (_d, sock) = socket_dir("sa-nokey", 0o700);
    let e = Producer::create_secure(
        &sock,
        Config::new(Policy::Sequential),
        AttachPolicy::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
}

/// Runs this binary's test `test_fn` as `nobody` (uid and gid 65534) with `params`, and
/// returns its `@@` lines.
fn run_as_nobody(test_fn: &str, role: &str, params: &[(&str, String)]) -> Vec<String> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test_fn,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(support::ROLE, role)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .uid(NOBODY)
    .gid(NOBODY);
    for (k, v) in params {
        cmd.env(format!("DATAHUB_TEST_{k}"), v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{role} child: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(support::MARK).map(|(_, rest)| rest.to_owned()))
        .collect()
}

/// Child: attaches as nobody and reports the outcome (and, on success, the first message).
#[test]
#[ignore]
fn child_attach_as_nobody() {
    let Some(()) = child("nobody") else { return };
    let sock: String = param("SOCK");
    let key = unhex(&param::<String>("KEY"));
    assert_eq!(rustix::process::getuid().as_raw(), NOBODY);
    match Consumer::attach_secure(&sock, &key, Expectations::new()) {
        Ok(mut c) => {
            let r = c.read(T).unwrap();
            tell("attached", &String::from_utf8_lossy(&r));
        }
        Err(e) => tell("error", &format!("{} {e}", e.code())),
    }
}

#[test]
fn a_process_running_as_nobody_is_refused_by_the_peer_credential_check() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to run a child as nobody");
        return;
    }
    // A policy that lets another uid (not nobody) in, so the directory is 0711 and the socket
    // 0666: nobody can connect, and only the credential check stands in its way.
    let (_d, sock) = socket_dir("sa-nobody", 0o711);
    let p =
        Producer::create_secure(&sock, config(), AttachPolicy::default().allow_uid(4242)).unwrap();
    let lines = run_as_nobody(
        "child_attach_as_nobody",
        "nobody",
        &[("SOCK", sock.display().to_string()), ("KEY", hex(&KEY))],
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("error 38 "), "{lines:?}");
    let s = p.attach_stats().unwrap();
    assert_eq!((s.refused_peer, s.accepted, s.refused_key), (1, 0, 0));
}

#[test]
fn an_allowlisted_uid_is_accepted() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to run a child as nobody");
        return;
    }
    let (_d, sock) = socket_dir("sa-allow", 0o711);
    let mut p = Producer::create_secure(&sock, config(), AttachPolicy::default().allow_uid(NOBODY))
        .unwrap();
    p.send(b"for nobody", T).unwrap();
    let lines = run_as_nobody(
        "child_attach_as_nobody",
        "nobody",
        &[("SOCK", sock.display().to_string()), ("KEY", hex(&KEY))],
    );
    assert_eq!(lines, vec!["attached for nobody".to_owned()]);
    assert_eq!(p.attach_stats().unwrap().accepted, 1);
}

#[test]
fn ftruncate_on_the_received_descriptor_fails_with_eperm_and_the_producer_keeps_writing() {
    let (_d, sock) = socket_dir("sa-trunc", 0o700);
    let mut p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    let mut c = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap();
    let f = receive_block_fd(&sock, &KEY, T).unwrap();
    let len = f.metadata().unwrap().len();
    for new_len in [0, len / 2, len + 4096, len * 2] {
        let e = f.set_len(new_len).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EPERM),
            "set_len({new_len}): {e}"
        );
    }
    // Nor can the seals be taken off or a write seal added (F_SEAL_SEAL).
    assert_eq!(
        rustix::fs::fcntl_add_seals(&f, rustix::fs::SealFlags::WRITE),
        Err(rustix::io::Errno::PERM)
    );
    assert_eq!(f.metadata().unwrap().len(), len);
    for i in 0..20u32 {
        p.send(&i.to_le_bytes(), T).unwrap();
        assert_eq!(&c.read(T).unwrap()[..], &i.to_le_bytes());
    }
    p.check_intact().unwrap();
}

/// A fake producer: answers one connection with a correct handshake and `fd`.
fn fake_server(listener: UnixListener, key: [u8; 32], fd: std::fs::File) {
    let (mut s, _) = listener.accept().unwrap();
    let me = std::process::id();
    let read_frame = |s: &mut UnixStream| {
        let mut f = [0u8; 40];
        s.read_exact(&mut f).unwrap();
        assert_eq!(&f[..4], b"DHSA");
        let mut p = [0u8; 32];
        p.copy_from_slice(&f[8..]);
        p
    };
    let frame = |kind: u8, p: &[u8; 32]| {
        let mut f = b"DHSA\x01".to_vec();
        f.push(kind);
        f.extend_from_slice(&32u16.to_le_bytes());
        f.extend_from_slice(p);
        f
    };
    let mac = |label: &[u8], nc: &[u8; 32], np: &[u8; 32]| {
        let mut m = <Blake2bMac<U32> as KeyInit>::new_from_slice(&key).unwrap();
        Mac::update(&mut m, b"DHSA\x01");
        Mac::update(&mut m, label);
        Mac::update(&mut m, nc);
        Mac::update(&mut m, np);
        Mac::update(&mut m, &me.to_le_bytes()); // consumer: this process
        Mac::update(&mut m, &me.to_le_bytes()); // producer: this process too
        let out: [u8; 32] = m.finalize().into_bytes().into();
        out
    };
    let nc = read_frame(&mut s);
    let np = [7u8; 32];
    s.write_all(&frame(2, &np)).unwrap();
    let _proof = read_frame(&mut s);
    let accept = frame(4, &mac(b"dhsa producer v1", &nc, &np));
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
    let n = rustix::net::sendmsg(
        &s,
        &[std::io::IoSlice::new(&accept)],
        &mut control,
        rustix::net::SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, accept.len());
}

#[test]
fn an_unsealed_descriptor_is_refused_with_not_sealed() {
    let (_d, sock) = socket_dir("sa-unsealed", 0o700);
    let listener = UnixListener::bind(&sock).unwrap();
    let memfd = rustix::fs::memfd_create(
        "fake",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    rustix::fs::ftruncate(&memfd, 1 << 20).unwrap();
    let server = std::thread::spawn(move || fake_server(listener, KEY, memfd.into()));
    let e = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap_err();
    server.join().unwrap();
    assert!(matches!(e, Error::NotSealed { seals: 0 }), "{e}");
    assert_eq!(e.code(), 39);
}

#[test]
fn a_regular_file_sent_as_the_block_is_refused_with_not_sealed() {
    let (d, sock) = socket_dir("sa-regular", 0o700);
    let listener = UnixListener::bind(&sock).unwrap();
    let file = std::fs::File::create(d.path.join("plain")).unwrap();
    file.set_len(1 << 20).unwrap();
    let server = std::thread::spawn(move || fake_server(listener, KEY, file));
    let e = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap_err();
    server.join().unwrap();
    assert!(matches!(e, Error::NotSealed { .. }), "{e}");
}

fn assert_unsafe(r: Result<Producer, Error>) {
    match r {
        Err(e @ Error::SocketDirUnsafe { .. }) => assert_eq!(e.code(), 37),
        Err(e) => panic!("expected SocketDirUnsafe, got {e}"),
        Ok(_) => panic!("expected SocketDirUnsafe, got a producer"),
    }
}

#[test]
fn a_socket_dir_with_mode_0777_is_refused_with_socket_dir_unsafe() {
    let (_d, sock) = socket_dir("sa-0777", 0o777);
    assert_unsafe(Producer::create_secure(
        &sock,
        config(),
        AttachPolicy::default(),
    ));
    // A group-readable one too, and a world-writable one even with an allowlist.
    let (_d, sock) = socket_dir("sa-0750", 0o750);
    assert_unsafe(Producer::create_secure(
        &sock,
        config(),
        AttachPolicy::default(),
    ));
    let (_d, sock) = socket_dir("sa-0733", 0o733);
    assert_unsafe(Producer::create_secure(
        &sock,
        config(),
        AttachPolicy::default().allow_uid(NOBODY),
    ));
    assert!(!sock.exists());
}

#[test]
fn a_symlinked_socket_dir_is_refused_with_socket_dir_unsafe() {
    let (d, _) = socket_dir("sa-link", 0o700);
    let real = d.path.join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = d.path.join("link");
    symlink(&real, &link).unwrap();
    assert_unsafe(Producer::create_secure(
        link.join("s"),
        config(),
        AttachPolicy::default(),
    ));
    // The consumer refuses a socket path that is a link, or in a linked directory.
    let sock = real.join("s");
    let _p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    let e = Consumer::attach_secure(link.join("s"), &KEY, Expectations::new()).unwrap_err();
    assert!(matches!(e, Error::SocketDirUnsafe { .. }), "{e}");
    let alias = real.join("alias");
    symlink(&sock, &alias).unwrap();
    let e = Consumer::attach_secure(&alias, &KEY, Expectations::new()).unwrap_err();
    assert!(matches!(e, Error::SocketDirUnsafe { .. }), "{e}");
    // A consumer refuses a socket in a world-writable directory.
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap_err();
    assert!(matches!(e, Error::SocketDirUnsafe { .. }), "{e}");
}

#[test]
fn peers_that_send_garbage_or_nothing_do_not_block_other_attaches() {
    let (_d, sock) = socket_dir("sa-garbage", 0o700);
    let policy = AttachPolicy::default()
        .handshake_timeout(Duration::from_millis(500))
        .max_handshakes(6);
    let mut p = Producer::create_secure(&sock, config(), policy).unwrap();
    let silent: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage.write_all(&[0xff; 40]).unwrap();
    let mut oversized = UnixStream::connect(&sock).unwrap();
    oversized.write_all(b"DHSA\x01\x01\xff\xff").unwrap();
    let started = Instant::now();
    let mut c = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "attach waited {:?} for the silent peers",
        started.elapsed()
    );
    p.send(b"x", T).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"x");
    let deadline = Instant::now() + T;
    loop {
        let s = p.attach_stats().unwrap();
        if s.timeouts == 2 && s.failed == 2 {
            assert_eq!(s.accepted, 1);
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(silent);
    // And later attaches still work.
    drop(c);
    Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap();
}

#[test]
fn connections_beyond_max_handshakes_are_refused_busy_not_queued_forever() {
    let (_d, sock) = socket_dir("sa-busy", 0o700);
    let policy = AttachPolicy::default()
        .handshake_timeout(Duration::from_secs(3))
        .max_handshakes(1);
    let p = Producer::create_secure(&sock, config(), policy).unwrap();
    let _silent = UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let e = Consumer::attach_secure(&sock, &KEY, Expectations::new()).unwrap_err();
    assert!(matches!(e, Error::AttachRefused { .. }), "{e}");
    assert_eq!(p.attach_stats().unwrap().busy, 1);
}

#[test]
fn attach_secure_wait_waits_for_the_socket_to_appear() {
    let (_d, sock) = socket_dir("sa-wait", 0o700);
    let s2 = sock.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut p = Producer::create_secure(&s2, config(), AttachPolicy::default()).unwrap();
        p.send(b"late", T).unwrap();
        p.wait_drained(T).unwrap();
    });
    let mut c = Consumer::attach_secure_wait(&sock, &KEY, Expectations::new(), T).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"late");
    t.join().unwrap();
}

fn write_key(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn key_files_are_read_as_hex_or_raw_and_unsafe_ones_are_refused() {
    let d = TempDir::new("sa-keyfile");
    let hexkey = format!("{}\n", hex(&KEY));
    assert_eq!(
        read_key_file(write_key(&d.path, "hex", hexkey.as_bytes(), 0o600)).unwrap(),
        KEY
    );
    assert_eq!(
        read_key_file(write_key(&d.path, "raw", &KEY, 0o400)).unwrap(),
        KEY
    );
    let open = write_key(&d.path, "open", hexkey.as_bytes(), 0o644);
    assert!(matches!(
        read_key_file(&open),
        Err(Error::InvalidConfig { .. })
    ));
    let short = write_key(&d.path, "short", b"abcd", 0o600);
    assert!(matches!(
        read_key_file(&short),
        Err(Error::InvalidConfig { .. })
    ));
    let link = d.path.join("link");
    symlink(d.path.join("hex"), &link).unwrap();
    assert!(matches!(
        read_key_file(&link),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        read_key_file(&d.path),
        Err(Error::InvalidConfig { .. })
    ));
}

#[cfg(feature = "broker")]
#[test]
fn a_broker_disc_ack_carries_attach_socket_and_a_client_attaches_through_it() {
    use datahub::broker::{Broker, BrokerConfig, Client, ClientOptions, wire};
    let (d, sock) = socket_dir("sa-broker", 0o700);
    let ep = format!("ipc://{}/b.sock", d.path.display());
    let broker = Broker::spawn(BrokerConfig::at(&ep)).unwrap();
    let mut p = Producer::create_secure(&sock, config(), AttachPolicy::default()).unwrap();
    let pc = Client::connect(
        Some(broker.endpoint()),
        "sec-prod",
        ClientOptions::default(),
    )
    .unwrap();
    let info = p.register(&pc, "secure-ch", "lab.Secure", None, T).unwrap();
    assert_eq!(info.attach_socket.as_deref(), Some(sock.to_str().unwrap()));
    assert_eq!(info.block_name, "");
    assert_eq!(wire::PROTOCOL_MINOR, 2);
    let cc = Client::connect(
        Some(broker.endpoint()),
        "sec-cons",
        ClientOptions::default(),
    )
    .unwrap();
    let found = cc.discover("secure-ch", None, T).unwrap();
    assert_eq!(found.attach_socket.as_deref(), Some(sock.to_str().unwrap()));
    // The listing says so too.
    let listed = cc.channels(T).unwrap();
    assert_eq!(listed[0].attach_socket, found.attach_socket);
    // Without the key the announcement is not enough; with it the client attaches.
    assert!(found.attach(Expectations::new()).is_err());
    let (mut c, _) = Consumer::discover(
        &cc,
        "secure-ch",
        None,
        Expectations::new().checksum_key(KEY),
        T,
    )
    .unwrap();
    p.send(b"via broker", T).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"via broker");
    assert_eq!(p.attach_stats().unwrap().accepted, 1);
    drop(c);
    drop(cc);
    drop(pc);
    broker.join().unwrap();
}
