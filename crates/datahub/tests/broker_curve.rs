//! CURVE on the broker's control plane: a `tcp://` broker with keys serves allowed clients
//! and refuses others (ZAP), key files are read strictly, and the files are pyzmq's format.
#![cfg(feature = "broker")]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use datahub::broker::keys::{self, KeyFiles};
use datahub::broker::{
    Broker, BrokerConfig, BrokerError, ChannelInfo, Client, ClientKeys, ClientOptions,
    HeartbeatConfig, KeyFileError, KeyPair, PublicKey, ServerKeys,
};
use datahub::{Config, Policy, Producer};
use support::{BlockGuard, TempDir};

/// 50 ms heartbeats, dead after 1 s of silence: a live client on a loaded 2-core machine is
/// not declared dead by a scheduling hiccup.
const HB: HeartbeatConfig = HeartbeatConfig {
    interval_ms: 50,
    pending_after_misses: 10,
    dead_after_misses: 10,
};
/// Overall limit on anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);
const RPC: Duration = Duration::from_secs(5);
/// How long a client that must get nowhere is given.
const NOWHERE: Duration = Duration::from_millis(1500);

/// Written by pyzmq 27.3.0 (libzmq 4.3.5): `zmq.auth.create_certificates(".", "pyclient")`,
/// unchanged (the secret file then `chmod 600`ed).
const PYZMQ_PUBLIC: &str = r#"#   ****  Generated on 2026-12-02 01:05:02.076422 by pyzmq  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, in the .curve subdirectory.

metadata
curve
    public-key = "}F]h<iWqB./!GOu9r6a:C-#-h]uY%nji{-i53:?N"
"#;
const PYZMQ_SECRET: &str = r#"#   ****  Generated on 2026-12-02 01:05:02.076422 by pyzmq  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
curve
    public-key = "}F]h<iWqB./!GOu9r6a:C-#-h]uY%nji{-i53:?N"
    secret-key = "Le1f-Jk7-X{PE4W4%1DhlhI4}LA5+pXlTGdsIi@("
"#;
const PYZMQ_PUBLIC_Z85: &str = "}F]h<iWqB./!GOu9r6a:C-#-h]uY%nji{-i53:?N";

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(p: &Path, text: &[u8], mode: u32) -> PathBuf {
    std::fs::write(p, text).unwrap();
    chmod(p, mode);
    p.to_owned()
}

fn private(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o700);
    d
}

/// A broker key directory (`server.key_secret`, `allowed/`) with `allowed` client public
/// key files copied in, and the server's public key file.
struct Keys {
    dir: PathBuf,
    server: KeyFiles,
}

fn key_dir(root: &Path, allowed: &[&Path]) -> Keys {
    let dir = private(root, "broker-keys");
    let server = keys::write_key_pair(&dir, "server", &KeyPair::generate().unwrap()).unwrap();
    let a = private(&dir, "allowed");
    for (i, p) in allowed.iter().enumerate() {
        std::fs::copy(p, a.join(format!("client-{i}.key"))).unwrap();
    }
    Keys { dir, server }
}

/// A client key pair written in `root/NAME.key{,_secret}`.
fn client_pair(root: &Path, name: &str) -> KeyFiles {
    keys::write_key_pair(root, name, &KeyPair::generate().unwrap()).unwrap()
}

fn curve_opts(secret: &Path, server_public: &Path) -> ClientOptions {
    ClientOptions {
        heartbeat: HB.interval(),
        curve: Some(ClientKeys::load(secret, server_public).unwrap()),
        ..ClientOptions::default()
    }
}

fn tcp_broker(keys: &Keys) -> datahub::broker::BrokerHandle {
    let sk = ServerKeys::load_dir(&keys.dir).unwrap();
    Broker::spawn(
        BrokerConfig::at("tcp://127.0.0.1:*")
            .heartbeat(HB)
            .curve(sk),
    )
    .unwrap()
}

fn producer(block: &str) -> Producer {
    Producer::create(block, Config::new(Policy::Latest).slot_size(16)).unwrap()
}

/// Joins the broker, failing (not hanging) if its loop or ZAP thread does not stop.
fn join_within(broker: datahub::broker::BrokerHandle, limit: Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(broker.join().map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.expect("the broker loop ended cleanly"),
        Err(_) => panic!("the broker (ROUTER loop + ZAP thread) did not stop within {limit:?}"),
    }
}

/// The broker's `METRICS_ACK.auth` once `pred` holds (asked until [`PATIENCE`] runs out).
fn eventually_auth(
    c: &Client,
    pred: impl Fn(&datahub::broker::AuthCounters) -> bool,
) -> datahub::broker::AuthCounters {
    let end = Instant::now() + PATIENCE;
    loop {
        let auth = c
            .metrics(RPC)
            .unwrap()
            .auth
            .expect("a broker with keys reports auth");
        if pred(&auth) {
            return auth;
        }
        assert!(
            Instant::now() < end,
            "auth counters never got there: {auth:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tcp_broker_with_keys_serves_allowed_clients_and_refuses_others() {
    let root = TempDir::new("curve-serve");
    let ours = client_pair(&root.path, "ours");
    let py_pub = write(
        &root.path.join("pyclient.key"),
        PYZMQ_PUBLIC.as_bytes(),
        0o644,
    );
    let py_sec = write(
        &root.path.join("pyclient.key_secret"),
        PYZMQ_SECRET.as_bytes(),
        0o600,
    );
    let stranger = client_pair(&root.path, "stranger");
    let keys = key_dir(&root.path, &[&ours.public, &py_pub]);
    let broker = tcp_broker(&keys);
    let ep = broker.endpoint().to_owned();
    assert!(ep.starts_with("tcp://127.0.0.1:"), "{ep}");
    assert!(!ep.ends_with(":*"), "the bound port is reported: {ep}");

    // Our key registers a channel; the pyzmq-written key discovers it.
    let g = BlockGuard::new("curve-serve");
    let p = producer(&g.name);
    let pc = Client::connect(
        Some(&ep),
        "curve-prod",
        curve_opts(&ours.secret, &keys.server.public),
    )
    .unwrap();
    let info = ChannelInfo::from_producer("secure", &p, "raw", None).unwrap();
    assert_eq!(pc.register(&info, RPC).unwrap(), HB);
    let cc = Client::connect(
        Some(&ep),
        "curve-cons",
        curve_opts(&py_sec, &keys.server.public),
    )
    .unwrap();
    assert_eq!(
        cc.discover("secure", None, PATIENCE).unwrap().block_name,
        g.name
    );

    // A key not in allowed/ is refused by ZAP: a typed error, not a timeout.
    let sc = Client::connect(
        Some(&ep),
        "curve-stranger",
        curve_opts(&stranger.secret, &keys.server.public),
    )
    .unwrap();
    let t = Instant::now();
    let e = sc.channels(PATIENCE).unwrap_err();
    assert!(
        matches!(e, BrokerError::AuthRefused { status: 400, .. }),
        "expected AuthRefused 400, got {e}"
    );
    assert!(t.elapsed() < PATIENCE, "refused before the deadline");
    // Later requests fail at once with the same error.
    assert!(matches!(
        sc.discover("secure", None, PATIENCE),
        Err(BrokerError::AuthRefused { .. })
    ));

    // The broker keeps serving the allowed clients, and counted the refusals.
    let list = cc.channels(RPC).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].channel_name, "secure");
    let auth = pc
        .metrics(RPC)
        .unwrap()
        .auth
        .expect("a broker with keys reports auth");
    assert!(auth.refused >= 1, "{auth:?}");
    assert!(auth.allowed >= 2, "{auth:?}");
    assert_eq!(auth.unauthenticated, 0, "{auth:?}");
    drop((sc, cc, pc));
    join_within(broker, PATIENCE);
}

#[test]
fn a_client_holding_the_wrong_server_key_gets_no_answer() {
    let root = TempDir::new("curve-wrongsrv");
    let ours = client_pair(&root.path, "ours");
    let keys = key_dir(&root.path, &[&ours.public]);
    let impostor = client_pair(&root.path, "impostor-server");
    let broker = tcp_broker(&keys);
    let ep = broker.endpoint().to_owned();
    let bad = Client::connect(
        Some(&ep),
        "curve-wrong",
        curve_opts(&ours.secret, &impostor.public),
    )
    .unwrap();
    let e = bad.channels(NOWHERE).unwrap_err();
    assert!(matches!(e, BrokerError::Timeout { .. }), "{e}");
    // The same client key with the right server key is served.
    let good = Client::connect(
        Some(&ep),
        "curve-right",
        curve_opts(&ours.secret, &keys.server.public),
    )
    .unwrap();
    assert!(good.channels(RPC).unwrap().is_empty());
    // The broker counted the failed handshakes (they never reached ZAP).
    let auth = eventually_auth(&good, |a| a.handshake_failed >= 1);
    assert_eq!(auth.refused, 0, "{auth:?}");
    drop((bad, good));
    join_within(broker, PATIENCE);
}

#[test]
fn a_plaintext_peer_gets_nothing_from_a_curve_broker() {
    let root = TempDir::new("curve-plain");
    let ours = client_pair(&root.path, "ours");
    let keys = key_dir(&root.path, &[&ours.public]);
    let broker = tcp_broker(&keys);
    // Our client refuses tcp:// without keys ...
    let e =
        Client::connect(Some(broker.endpoint()), "plain", ClientOptions::default()).unwrap_err();
    assert!(e.to_string().contains("CURVE"), "{e}");
    // ... and a raw plaintext DEALER is never answered.
    let ctx = zmq::Context::new();
    let d = ctx.socket(zmq::DEALER).unwrap();
    d.set_linger(0).unwrap();
    d.set_identity(b"plain-raw").unwrap();
    d.connect(broker.endpoint()).unwrap();
    let b = br#"{"protocol":{"major":1,"minor":0}}"#.to_vec();
    let _ = d.send_multipart([&b"C"[..], b"CHANNEL_LIST_REQ", b"1", &b], zmq::DONTWAIT);
    let mut items = [d.as_poll_item(zmq::POLLIN)];
    let n = zmq::poll(&mut items, NOWHERE.as_millis() as i64).unwrap();
    assert_eq!(n, 0, "a plaintext peer got an answer");
    let c = Client::connect(
        Some(broker.endpoint()),
        "plain-check",
        curve_opts(&ours.secret, &keys.server.public),
    )
    .unwrap();
    eventually_auth(&c, |a| a.handshake_failed >= 1);
    drop((d, c));
    join_within(broker, PATIENCE);
}

#[test]
fn tcp_without_keys_is_refused_and_ipc_works_with_keys() {
    let e = Broker::bind(BrokerConfig::at("tcp://127.0.0.1:5555")).unwrap_err();
    assert!(e.to_string().contains("CURVE"), "{e}");
    let root = TempDir::new("curve-ipc");
    let ours = client_pair(&root.path, "ours");
    let keys = key_dir(&root.path, &[&ours.public]);
    // With keys: a tcp endpoint without a port is refused before libzmq sees it.
    let sk = ServerKeys::load_dir(&keys.dir).unwrap();
    let e = Broker::bind(BrokerConfig::at("tcp://127.0.0.1").curve(sk.clone())).unwrap_err();
    assert!(e.to_string().contains("HOST:PORT"), "{e}");
    // CURVE over ipc:// works too.
    let ep = format!("ipc://{}/b.sock", root.path.display());
    let broker = Broker::spawn(BrokerConfig::at(&ep).heartbeat(HB).curve(sk)).unwrap();
    let c = Client::connect(
        Some(&ep),
        "ipc-curve",
        curve_opts(&ours.secret, &keys.server.public),
    )
    .unwrap();
    assert!(c.channels(RPC).unwrap().is_empty());
    drop(c);
    join_within(broker, PATIENCE);
}

/// The error of loading `path` as a key pair, checked to be one line naming the file.
fn pair_error(path: &Path) -> KeyFileError {
    let e = keys::load_key_pair(path).unwrap_err();
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    assert!(
        s.contains(&path.display().to_string()),
        "names the file: {s}"
    );
    e
}

#[test]
fn a_secret_key_file_others_can_read_is_refused() {
    let root = TempDir::new("curve-perm");
    let f = client_pair(&root.path, "c");
    for mode in [0o640, 0o604, 0o644, 0o660] {
        chmod(&f.secret, mode);
        let e = pair_error(&f.secret);
        assert!(
            matches!(e, KeyFileError::Permissions { .. }),
            "{mode:o}: {e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // Its public half is not read from it either.
        assert!(keys::load_public_key(&f.secret).is_err());
    }
    chmod(&f.secret, 0o400);
    keys::load_key_pair(&f.secret).unwrap();
    // A public key file may be world-readable.
    chmod(&f.public, 0o644);
    keys::load_public_key(&f.public).unwrap();
}

#[test]
fn a_symbolic_link_or_a_non_file_is_refused() {
    let root = TempDir::new("curve-link");
    let f = client_pair(&root.path, "c");
    let link = root.path.join("link.key_secret");
    std::os::unix::fs::symlink(&f.secret, &link).unwrap();
    let e = pair_error(&link);
    assert!(matches!(e, KeyFileError::NotRegular { .. }), "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let plink = root.path.join("link.key");
    std::os::unix::fs::symlink(&f.public, &plink).unwrap();
    assert!(matches!(
        keys::load_public_key(&plink),
        Err(KeyFileError::NotRegular { .. })
    ));
    // A directory, and a FIFO (opened without blocking).
    let e = pair_error(&root.path);
    assert!(matches!(e, KeyFileError::NotRegular { .. }), "{e}");
    let fifo = root.path.join("fifo.key");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = pair_error(&fifo);
    assert!(matches!(e, KeyFileError::NotRegular { .. }), "{e}");
}

#[test]
fn truncated_oversized_and_garbage_files_are_one_typed_error() {
    let root = TempDir::new("curve-bad");
    let f = client_pair(&root.path, "c");
    let good = std::fs::read(&f.secret).unwrap();
    // Truncated at every length: never a panic, never a pair unless whole.
    for cut in 0..good.len() {
        let p = write(&root.path.join("cut.key_secret"), &good[..cut], 0o600);
        match keys::load_key_pair(&p) {
            Ok(pair) => {
                // Only a cut after the secret key's closing quote still holds both keys.
                assert!(
                    cut >= good.len() - 1,
                    "a pair from {cut} of {} bytes",
                    good.len()
                );
                assert_eq!(pair, keys::load_key_pair(&f.secret).unwrap());
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        KeyFileError::Format { .. } | KeyFileError::Missing { .. }
                    ),
                    "cut {cut}: {e}"
                );
                assert!(!e.to_string().contains('\n'));
            }
        }
    }
    // Oversized: refused without reading it all.
    let mut big = good.clone();
    big.extend(std::iter::repeat_n(b'#', keys::MAX_KEY_FILE as usize));
    let p = write(&root.path.join("big.key_secret"), &big, 0o600);
    assert!(matches!(pair_error(&p), KeyFileError::TooLarge { .. }));
    // Garbage: binary, not UTF-8, and text of another shape.
    let mut rng = support::Rng::new(15);
    for i in 0..200 {
        let len = rng.below(600) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        let p = write(&root.path.join(format!("g{i}.key_secret")), &bytes, 0o600);
        let e = pair_error(&p);
        assert!(
            matches!(
                e,
                KeyFileError::Format { .. } | KeyFileError::Missing { .. }
            ),
            "{e}"
        );
    }
    for text in [
        "[curve]\npublic-key = x\n",
        "curve\n    public-key = \"\"\n",
        "{\"public-key\": \"x\"}\n",
        "\u{feff}curve\n",
    ] {
        let p = write(&root.path.join("text.key_secret"), text.as_bytes(), 0o600);
        assert!(
            matches!(pair_error(&p), KeyFileError::Format { .. }),
            "{text:?}"
        );
    }
    // A public file is not a pair.
    let e = pair_error(&f.public);
    assert!(
        matches!(
            e,
            KeyFileError::Missing {
                what: "secret-key",
                ..
            }
        ),
        "{e}"
    );
}

/// pyzmq's `zmq.auth.load_certificate` (zmq/auth/certs.py), line for line.
fn pyzmq_load_certificate(text: &str) -> (Option<String>, Option<String>) {
    let (mut public, mut secret) = (None, None);
    let strip = |v: &str| v.trim_matches([' ', '\t', '\'', '"']).to_owned();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with("public-key") {
            public = line.split_once('=').map(|(_, v)| strip(v));
        } else if line.starts_with("secret-key") {
            secret = line.split_once('=').map(|(_, v)| strip(v));
        }
        if public.is_some() && secret.is_some() {
            break;
        }
    }
    (public, secret)
}

#[test]
fn key_files_round_trip_with_pyzmq_s_format() {
    let root = TempDir::new("curve-pyzmq");
    // Theirs, read by us.
    let py_pub = write(&root.path.join("py.key"), PYZMQ_PUBLIC.as_bytes(), 0o644);
    let py_sec = write(
        &root.path.join("py.key_secret"),
        PYZMQ_SECRET.as_bytes(),
        0o600,
    );
    let pair = keys::load_key_pair(&py_sec).unwrap();
    assert_eq!(pair.public().z85(), PYZMQ_PUBLIC_Z85);
    assert_eq!(keys::load_public_key(&py_pub).unwrap(), pair.public());
    assert_eq!(
        PublicKey::from_z85(PYZMQ_PUBLIC_Z85).unwrap(),
        pair.public()
    );
    // Ours, read by pyzmq's loader: the same keys, in the same file names.
    let mine = KeyPair::generate().unwrap();
    let files = keys::write_key_pair(&root.path, "mine", &mine).unwrap();
    assert_eq!(files.public, root.path.join("mine.key"));
    assert_eq!(files.secret, root.path.join("mine.key_secret"));
    let (p, s) = pyzmq_load_certificate(&std::fs::read_to_string(&files.secret).unwrap());
    assert_eq!(p.as_deref(), Some(mine.public().z85().as_str()));
    let s = s.expect("a secret key pyzmq finds");
    assert_eq!(s.len(), 40);
    let (p, s) = pyzmq_load_certificate(&std::fs::read_to_string(&files.public).unwrap());
    assert_eq!(p.as_deref(), Some(mine.public().z85().as_str()));
    assert_eq!(s, None);
    // And ours through our own reader.
    assert_eq!(keys::load_key_pair(&files.secret).unwrap(), mine);
}

#[test]
fn key_pairs_are_written_once_with_owner_only_secrets() {
    let root = TempDir::new("curve-write");
    let f = client_pair(&root.path, "w");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.public), 0o644);
    assert_eq!(mode(&f.secret), 0o600);
    let before = std::fs::read(&f.secret).unwrap();
    let e = keys::write_key_pair(&root.path, "w", &KeyPair::generate().unwrap()).unwrap_err();
    assert!(matches!(e, KeyFileError::Exists { .. }), "{e}");
    assert_eq!(std::fs::read(&f.secret).unwrap(), before, "not overwritten");
    // Only the public file exists: still refused, and no secret is left behind.
    std::fs::remove_file(&f.secret).unwrap();
    let e = keys::write_key_pair(&root.path, "w", &KeyPair::generate().unwrap()).unwrap_err();
    assert!(matches!(e, KeyFileError::Exists { .. }), "{e}");
    assert!(!f.secret.exists());
    for bad in ["", ".hidden", "a/b", "../up", &"x".repeat(65)] {
        assert!(
            keys::write_key_pair(&root.path, bad, &KeyPair::generate().unwrap()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn key_directories_others_can_write_or_without_clients_are_refused() {
    let root = TempDir::new("curve-dirs");
    let ours = client_pair(&root.path, "ours");
    let keys = key_dir(&root.path, &[&ours.public]);
    let sk = ServerKeys::load_dir(&keys.dir).unwrap();
    assert_eq!(
        sk.allowed,
        vec![keys::load_public_key(&ours.public).unwrap()]
    );
    let allowed = keys.dir.join("allowed");
    chmod(&allowed, 0o777);
    let e = ServerKeys::load_dir(&keys.dir).unwrap_err();
    assert!(matches!(e, KeyFileError::Directory { .. }), "{e}");
    chmod(&allowed, 0o755);
    ServerKeys::load_dir(&keys.dir).unwrap();
    chmod(&keys.dir, 0o775);
    assert!(ServerKeys::load_dir(&keys.dir).is_err());
    chmod(&keys.dir, 0o700);
    // Owned by another user (as root, CI: uid 65534): its owner could add keys.
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&allowed, Some(65534), None).unwrap();
        let e = ServerKeys::load_dir(&keys.dir).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        std::os::unix::fs::chown(&allowed, Some(0), None).unwrap();
        ServerKeys::load_dir(&keys.dir).unwrap();
    } else {
        eprintln!("note: not root: a key directory owned by another user is not tested");
    }
    // A symbolic link among the allowed keys is refused, not followed.
    let link = allowed.join("link.key");
    std::os::unix::fs::symlink(&ours.public, &link).unwrap();
    let e = ServerKeys::load_dir(&keys.dir).unwrap_err();
    assert!(matches!(e, KeyFileError::NotRegular { .. }), "{e}");
    std::fs::remove_file(&link).unwrap();
    // Other names are ignored; an empty allowlist is an error.
    for entry in std::fs::read_dir(&allowed).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    write(&allowed.join("README"), b"not a key", 0o644);
    let e = ServerKeys::load_dir(&keys.dir).unwrap_err();
    assert!(e.to_string().contains("no *.key"), "{e}");
}
