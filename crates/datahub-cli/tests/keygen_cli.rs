//! `datahub keygen` and CURVE through the CLI: keygen writes a 0644 public and a 0600 secret
//! file and never overwrites them; `broker --listen tcp://... --keys DIR` serves `channels`
//! given an allowed `--key` and the broker's `--server-key`, refuses another key, and
//! plaintext tcp:// is one error line, exit 2; `pub --channel`/`sub --broker` with allowed keys
//! move a file over a CURVE tcp:// broker, and `sub` with a stranger's key is refused;
//! `exporter --broker tcp://... --key ... --server-key ...` shows the broker's handshake
//! counters by outcome.

mod common;
mod exporter_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Block, DEADLINE, Proc, run, signal, wait_until};
use datahub::broker::keys;
use datahub::broker::{ChannelInfo, Client, ClientKeys, ClientOptions};
use datahub::{Config, Policy, Producer};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A TCP port free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn keygen_writes_a_public_and_an_owner_only_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let kd = dir.path().join("keys");
    let done = run(&["keygen", path(&kd), "--json"]).expect(0, "keygen --json");
    let v = done.json();
    let public = kd.join("client.key");
    let secret = kd.join("client.key_secret");
    assert_eq!(v["public_file"], path(&public));
    assert_eq!(v["secret_file"], path(&secret));
    assert_eq!(mode(&kd), 0o700);
    assert_eq!(mode(&public), 0o644);
    assert_eq!(mode(&secret), 0o600);
    let pair = keys::load_key_pair(&secret).unwrap();
    assert_eq!(v["public_key"], pair.public().z85().as_str());
    assert_eq!(keys::load_public_key(&public).unwrap(), pair.public());

    let text = run(&["keygen", path(&kd), "--name", "server"])
        .expect(0, "keygen --name server")
        .text();
    let server = keys::load_public_key(&kd.join("server.key")).unwrap();
    assert!(
        text.starts_with(&format!("public key: {server}\n")),
        "{text}"
    );
    assert!(text.contains(path(&kd.join("server.key_secret"))), "{text}");
}

#[test]
fn keygen_refuses_to_overwrite_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    run(&["keygen", path(dir.path())]).expect(0, "first keygen");
    let secret = dir.path().join("client.key_secret");
    let before = std::fs::read(&secret).unwrap();
    let done = run(&["keygen", path(dir.path())]).expect(2, "second keygen");
    let line = done.one_line_error();
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read(&secret).unwrap(), before, "not overwritten");
    let done = run(&["keygen", path(dir.path()), "--name", "../up"]).expect(2, "a bad --name");
    done.one_line_error();
}

/// A `datahub broker --listen tcp://127.0.0.1:* --keys` whose allowlist holds the `client`
/// key of `cd` (and not `stranger`'s), with the default liveness window.
struct CurveBroker {
    proc: Proc,
    ep: String,
    /// The broker's key directory (`server.key` is its public key).
    kd: std::path::PathBuf,
    /// `client.key_secret` (allowed) and `stranger.key_secret` (not).
    cd: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl CurveBroker {
    fn start() -> CurveBroker {
        let dir = tempfile::tempdir().unwrap();
        let kd = dir.path().join("broker-keys");
        let cd = dir.path().join("client-keys");
        run(&["keygen", path(&kd), "--name", "server"]).expect(0, "server keygen");
        run(&["keygen", path(&cd)]).expect(0, "client keygen");
        run(&["keygen", path(&cd), "--name", "stranger"]).expect(0, "stranger keygen");
        let allowed = kd.join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::copy(cd.join("client.key"), allowed.join("client.key")).unwrap();

        // Port `*`: the broker binds a free one and names it (no race for a port picked here).
        let proc = Proc::spawn(&[
            "broker",
            "--listen",
            "tcp://127.0.0.1:*",
            "--keys",
            path(&kd),
        ]);
        wait_until("the broker to listen", || {
            // The whole line (it ends with the key count).
            proc.stderr_so_far().contains("allowed client key(s))")
        });
        let log = proc.stderr_so_far();
        let ep = log
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_owned();
        assert!(
            ep.starts_with("tcp://127.0.0.1:") && !ep.ends_with('*'),
            "{log}"
        );
        CurveBroker {
            proc,
            ep,
            kd,
            cd,
            _dir: dir,
        }
    }

    /// `--key` (this client's secret) and `--server-key` for `name`'s key pair.
    fn auth(&self, name: &str) -> [String; 4] {
        [
            "--key".to_owned(),
            path(&self.cd.join(format!("{name}.key_secret"))).to_owned(),
            "--server-key".to_owned(),
            path(&self.kd.join("server.key")).to_owned(),
        ]
    }

    fn stop(self) {
        signal(self.proc.pid(), libc::SIGTERM);
        self.proc.finish(DEADLINE).expect(0, "broker after SIGTERM");
    }
}

#[test]
fn a_tcp_broker_with_keys_lists_channels_for_an_allowed_client_only() {
    let b = CurveBroker::start();
    let (broker, ep, kd, cd) = (&b.proc, b.ep.clone(), b.kd.clone(), b.cd.clone());
    assert!(
        broker
            .stderr_so_far()
            .contains("CURVE, 1 allowed client key(s)"),
        "{}",
        broker.stderr_so_far()
    );
    let block = Block::new("curve-cli");
    let p = Producer::create(block.name(), Config::new(Policy::Latest).slot_size(64)).unwrap();
    let opts = ClientOptions {
        curve: Some(
            ClientKeys::load(&cd.join("client.key_secret"), &kd.join("server.key")).unwrap(),
        ),
        ..ClientOptions::default()
    };
    let c = Client::connect(Some(&ep), "curve-cli-producer", opts).unwrap();
    c.register(
        &ChannelInfo::from_producer("tcp.chan", &p, "raw", None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();

    let server_key = kd.join("server.key");
    let done = run(&[
        "channels",
        "--broker",
        &ep,
        "--key",
        path(&cd.join("client.key_secret")),
        "--server-key",
        path(&server_key),
        "--json",
    ])
    .expect(0, "channels over tcp with an allowed key");
    let v = done.json();
    assert_eq!(v["channels"][0]["channel_name"], "tcp.chan", "{v}");
    assert_eq!(v["channels"][0]["block_name"], block.name(), "{v}");

    // A key not in allowed/: refused, one line, exit 2 (not a wait for the timeout).
    let done = run(&[
        "channels",
        "--broker",
        &ep,
        "--key",
        path(&cd.join("stranger.key_secret")),
        "--server-key",
        path(&server_key),
        "--timeout",
        "30s",
    ])
    .expect(2, "channels with a key the broker does not allow");
    let line = done.one_line_error();
    assert!(line.contains("refused this client's CURVE key"), "{line}");
    // Without keys, a tcp:// broker is not even tried.
    let done = run(&["channels", "--broker", &ep]).expect(2, "channels over tcp without keys");
    assert!(done.one_line_error().contains("CURVE"));

    drop(c);
    drop(p);
    b.stop();
}

#[test]
fn pub_and_sub_with_allowed_keys_move_a_file_over_a_curve_tcp_broker() {
    let b = CurveBroker::start();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("a.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let block = Block::new("curve-pubsub");
    let auth = b.auth("client");
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let mut args = vec!["pub", "--broker", &b.ep, "--channel", block.name()];
    args.extend_from_slice(&auth);
    args.push(path(&file));
    let publisher = Proc::spawn(&args);

    // A stranger's key: refused at discovery, one line, exit 2.
    let stranger = b.auth("stranger");
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "sub",
        "--broker",
        &b.ep,
        block.name(),
        "--out",
        path(out.path()),
    ];
    args.extend(stranger.iter().map(String::as_str));
    let done = run(&args).expect(2, "sub with a key the broker does not allow");
    assert!(
        done.one_line_error()
            .contains("refused this client's CURVE key"),
        "{}",
        done.stderr
    );

    let mut args = vec![
        "sub",
        "--broker",
        &b.ep,
        block.name(),
        "--out",
        path(out.path()),
    ];
    args.extend_from_slice(&auth);
    run(&args).expect(0, "sub with an allowed key");
    let copy = std::fs::read(out.path().join("a.bin")).unwrap();
    assert!(
        copy == data,
        "the file received over the CURVE broker differs"
    );
    publisher.finish(DEADLINE).expect(0, "pub");
    b.stop();
}

#[test]
fn plaintext_tcp_is_one_error_line_and_exit_2() {
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    let done = run(&["broker", "--listen", &ep]).expect(2, "broker on tcp without --keys");
    let line = done.one_line_error();
    assert!(line.contains("needs CURVE keys"), "{line}");
    // A key directory that is not one is refused before listening.
    let dir = tempfile::tempdir().unwrap();
    let done = run(&["broker", "--listen", &ep, "--keys", path(dir.path())])
        .expect(2, "broker with an empty key directory");
    let line = done.one_line_error();
    assert!(line.contains("server.key_secret"), "{line}");
    // Only one of the client's two key flags.
    run(&["channels", "--broker", &ep, "--key", "/nonexistent"]).expect(2, "--key alone");
}

#[test]
fn the_exporter_shows_a_curve_broker_s_handshakes_by_outcome() {
    let b = CurveBroker::start();
    // One refused handshake (a stranger's key), before the exporter's own allowed one.
    let stranger = b.auth("stranger");
    let mut args = vec!["channels", "--broker", &b.ep];
    args.extend(stranger.iter().map(String::as_str));
    run(&args).expect(2, "channels with a key the broker does not allow");

    let auth = b.auth("client");
    let mut args = vec!["exporter", "--broker", &b.ep, "--prefix", "no-such-block-"];
    args.extend(auth.iter().map(String::as_str));
    let exp = exporter_support::Exporter::start(&args);
    let (mut up, mut allowed, mut refused) = (None, None, None);
    wait_until("the broker's counters in a scrape", || {
        let text = exp.scrape();
        let outcome = |o: &str| {
            exporter_support::value(
                &text,
                "datahub_broker_auth_handshakes_total",
                &[("outcome", o)],
            )
        };
        up = exporter_support::value(&text, "datahub_broker_up", &[]);
        (allowed, refused) = (outcome("allowed"), outcome("refused"));
        up == Some(1.0)
    });
    assert!(allowed.is_some_and(|n| n >= 1.0), "allowed: {allowed:?}");
    assert!(refused.is_some_and(|n| n >= 1.0), "refused: {refused:?}");
    drop(exp);
    b.stop();
}
