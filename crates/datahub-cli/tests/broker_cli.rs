//! `datahub broker` and `datahub channels` as real processes: a channel registered with a
//! running broker is listed by `channels --json` and in the table, the broker logs each
//! registration change, SIGTERM stops it cleanly (exit 0, socket file removed), and a broker
//! that is not there is one error line and exit 2.

mod common;

use std::time::Duration;

use common::{Block, DEADLINE, Proc, run, signal, wait_until};
use datahub::broker::{ChannelInfo, Client, ClientOptions};
use datahub::{Config, Policy, Producer, Schema};

#[test]
fn channels_json_lists_a_channel_registered_with_a_running_broker() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("b.sock");
    let ep = format!("ipc://{}", sock.display());
    // Dead after 20 silent intervals of 50 ms (1 s): short for the removal checked below,
    // long enough that a live client's delayed heartbeats on a busy machine are not missed.
    let broker = Proc::spawn(&["broker", "--listen", &ep, "--heartbeat", "50ms"]);
    wait_until("the broker's socket", || sock.exists());

    let block = Block::new("brk");
    let schema = Schema::named("cli test", 3);
    let p = Producer::create(
        block.name(),
        Config::new(Policy::Sequential).slot_size(64).schema(schema),
    )
    .unwrap();
    let c = Client::connect(Some(&ep), "cli-test-producer", ClientOptions::default()).unwrap();
    c.register(
        &ChannelInfo::from_producer("cli.chan", &p, "cli.Test", None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    wait_until("the channel to be live", || {
        c.channels(Duration::from_secs(5))
            .is_ok_and(|l| l.first().is_some_and(|ch| ch.state == "live"))
    });

    let done = run(&["channels", "--broker", &ep, "--json"]).expect(0, "channels --json");
    let v = done.json();
    assert_eq!(v["broker"], ep.as_str());
    let chans = v["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 1, "{v}");
    let ch = &chans[0];
    assert_eq!(ch["channel_name"], "cli.chan");
    assert_eq!(ch["role_uid"], "cli-test-producer");
    assert_eq!(ch["block_name"], block.name());
    assert_eq!(ch["policy"], "sequential");
    assert_eq!(ch["state"], "live");
    assert_eq!(ch["consumers"], 0);
    assert_eq!(ch["producer_pid"], std::process::id());
    assert_eq!(ch["schema"]["id"], "cli.Test");
    assert_eq!(ch["schema"]["version"], 3);
    assert_eq!(
        ch["schema"]["fingerprint"],
        schema.fingerprint().to_string().as_str()
    );
    let table = run(&["channels", "--broker", &ep])
        .expect(0, "channels")
        .text();
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("cli.chan "), "{table}");
    // The policy as on the wire and in --json, not Rust's Debug name.
    assert!(row.contains(" sequential "), "{table}");

    drop(c);
    drop(p);
    // The producer's heartbeats stopped: after 20 silent intervals it is removed.
    wait_until("the broker to log the removal", || {
        broker
            .stderr_so_far()
            .contains("removed (heartbeat_timeout)")
    });
    signal(broker.pid(), libc::SIGTERM);
    let done = broker.finish(DEADLINE).expect(0, "broker after SIGTERM");
    let log = done.stderr;
    assert!(log.contains("listening on ipc://"), "{log}");
    assert!(
        log.contains("channel \"cli.chan\": producer \"cli-test-producer\""),
        "{log}"
    );
    assert!(log.contains("registered"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!sock.exists(), "the socket file was left behind");
}

#[test]
fn channels_without_a_broker_is_one_error_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("ipc://{}/nobody.sock", dir.path().display());
    let done = run(&["channels", "--broker", &ep, "--timeout", "200ms"]).expect(2, "no broker");
    let line = done.one_line_error();
    assert!(line.contains("no answer"), "{line}");
    let done = run(&["channels", "--broker", "tcp://127.0.0.1:1"]).expect(2, "tcp");
    assert!(done.one_line_error().contains("CURVE"), "{}", done.stderr);
}
