//! The registry's state machine, driven by hand-made frames and a hand-moved clock.

use super::*;
use crate::schema::{Scalar, SchemaLayout, ZoneLayout};

const HB: HeartbeatConfig = HeartbeatConfig {
    interval_ms: 100,
    pending_after_misses: 3,
    dead_after_misses: 2,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layout(y: Scalar) -> SchemaLayout {
    SchemaLayout::slots(
        ZoneLayout::new(16, 8)
            .field("x", Scalar::F64, 0)
            .field("y", y, 8),
    )
}

fn fp(y: Scalar) -> String {
    layout(y).fingerprint().unwrap().to_string()
}

fn info(uid: &str, channel: &str, y: Scalar) -> Value {
    json!({
        "protocol": {"major": 1, "minor": 0},
        "channel_name": channel,
        "role_uid": uid,
        "block_name": format!("blk-{channel}"),
        "policy": "latest",
        "slot_size": 16,
        "slot_count": 8,
        "flex_zone_size": 0,
        "max_consumers": 4,
        "checksum": "none",
        "keyed": false,
        "format_version": {"major": 1, "minor": 0},
        "layout_hash": "0123456789abcdef",
        "schema": {"id": "lab.Pose", "version": 1, "fingerprint": fp(y)},
        "producer_pid": 4242,
        "producer_start_time": 99,
    })
}

fn frames(uid: &str, t: &str, corr: &str, body: &Value) -> Vec<Vec<u8>> {
    vec![
        uid.as_bytes().to_vec(),
        b"C".to_vec(),
        t.as_bytes().to_vec(),
        corr.as_bytes().to_vec(),
        serde_json::to_vec(body).unwrap(),
    ]
}

fn p(v: Value) -> Value {
    let mut v = v;
    v["protocol"] = json!({"major": 1, "minor": 0});
    v
}

fn new() -> Registry {
    Registry::new(HB, Limits::default(), Duration::ZERO)
}

/// Sends one message and returns the one reply to the sender.
fn ask(r: &mut Registry, now: Duration, uid: &str, t: &str, body: &Value) -> Outgoing {
    let step = r.handle(now, &frames(uid, t, "7", body));
    let mine: Vec<_> = step
        .out
        .into_iter()
        .filter(|o| o.identity == uid.as_bytes() && !o.correlation_id.is_empty())
        .collect();
    assert_eq!(mine.len(), 1, "{t}: {mine:?}");
    let o = mine.into_iter().next().unwrap();
    assert_eq!(o.correlation_id, b"7");
    o
}

fn code(o: &Outgoing) -> &str {
    assert_eq!(o.msg_type, msg::ERROR, "{o:?}");
    assert_eq!(o.body["status"], "error");
    o.body["error_code"].as_str().unwrap()
}

fn heartbeat(r: &mut Registry, now: Duration, uid: &str, channel: &str, role: &str) -> Step {
    r.handle(
        now,
        &frames(
            uid,
            msg::HEARTBEAT_NOTIFY,
            "",
            &p(json!({"channel_name": channel, "role": role})),
        ),
    )
}

fn disc(channel: &str) -> Value {
    p(json!({ "channel_name": channel }))
}

#[test]
fn registration_is_acked_with_the_heartbeat_timing() {
    let mut r = new();
    let o = ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    assert_eq!(o.msg_type, msg::REG_ACK);
    assert_eq!(o.body["status"], "ok");
    assert_eq!(o.body["heartbeat"], json!(HB));
    assert_eq!(o.body["protocol"]["major"], 1);
    assert_eq!(r.channel_state("ch"), Some(Liveness::Pending));
}

#[test]
fn discovery_is_pending_until_the_producers_first_heartbeat() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    let o = ask(&mut r, ms(10), "cons", msg::DISC_REQ, &disc("ch"));
    assert_eq!(o.msg_type, msg::DISC_PENDING);
    assert_eq!(o.body["heartbeat"], json!(HB));
    let step = heartbeat(&mut r, ms(20), "prod", "ch", "producer");
    assert!(
        step.out.is_empty(),
        "a heartbeat has no reply: {:?}",
        step.out
    );
    let o = ask(&mut r, ms(30), "cons", msg::DISC_REQ, &disc("ch"));
    assert_eq!(o.msg_type, msg::DISC_ACK);
    for k in [
        "block_name",
        "slot_size",
        "layout_hash",
        "schema",
        "producer_pid",
        "heartbeat",
    ] {
        assert!(o.body.get(k).is_some(), "DISC_ACK lacks {k}: {}", o.body);
    }
    assert_eq!(o.body["schema"]["fingerprint"], fp(Scalar::F64));
    let none = ask(&mut r, ms(30), "cons", msg::DISC_REQ, &disc("nope"));
    assert_eq!(code(&none), "CHANNEL_NOT_FOUND");
}

#[test]
fn a_silent_producer_goes_pending_then_dead_and_its_consumers_are_told() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    heartbeat(&mut r, ms(0), "prod", "ch", "producer");
    ask(
        &mut r,
        ms(0),
        "cons",
        msg::CONSUMER_REG_REQ,
        &p(json!({"channel_name": "ch", "consumer_pid": 7})),
    );
    // The consumer keeps heartbeating; the producer stops.
    for t in (50..=450).step_by(50) {
        heartbeat(&mut r, ms(t), "cons", "ch", "consumer");
        let step = r.tick(ms(t));
        let expect = if t < 300 {
            Liveness::Live
        } else {
            Liveness::Pending
        };
        assert_eq!(r.channel_state("ch"), Some(expect), "at {t} ms");
        assert!(step.out.is_empty(), "at {t} ms: {:?}", step.out);
    }
    assert_eq!(
        ask(&mut r, ms(460), "x", msg::DISC_REQ, &disc("ch")).msg_type,
        msg::DISC_PENDING
    );
    // dead_after = 100 ms × (3 + 2).
    let step = r.tick(ms(500));
    assert_eq!(r.channel_state("ch"), None);
    assert_eq!(step.out.len(), 1, "{:?}", step.out);
    let n = &step.out[0];
    assert_eq!(
        (n.identity.as_slice(), n.msg_type),
        (&b"cons"[..], msg::CHANNEL_CLOSING_NOTIFY)
    );
    assert!(n.correlation_id.is_empty());
    assert_eq!(n.body["reason"], "heartbeat_timeout");
    assert_eq!(n.body["channel_name"], "ch");
    assert!(step.events.contains(&Event::ChannelRemoved {
        channel: "ch".into(),
        reason: "heartbeat_timeout"
    }));
    assert_eq!(r.counters().producers_died, 1);
}

#[test]
fn a_silent_consumer_is_reported_dead_to_its_producer() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    ask(
        &mut r,
        ms(0),
        "cons",
        msg::CONSUMER_REG_REQ,
        &p(json!({"channel_name": "ch", "consumer_pid": 7})),
    );
    for t in (100..=400).step_by(100) {
        heartbeat(&mut r, ms(t), "prod", "ch", "producer");
        assert!(r.tick(ms(t)).out.is_empty());
    }
    assert_eq!(r.consumer_state("ch", "cons"), Some(Liveness::Pending));
    heartbeat(&mut r, ms(499), "prod", "ch", "producer");
    let step = r.tick(ms(500));
    assert_eq!(r.consumer_state("ch", "cons"), None);
    assert_eq!(step.out.len(), 1, "{:?}", step.out);
    let n = &step.out[0];
    assert_eq!(
        (n.identity.as_slice(), n.msg_type),
        (&b"prod"[..], msg::CONSUMER_DIED_NOTIFY)
    );
    assert_eq!(n.body["consumer_uid"], "cons");
    assert_eq!(n.body["consumer_pid"], 7);
    assert_eq!(n.body["reason"], "heartbeat_timeout");
    assert_eq!(n.body["consumers"], 0);
    assert_eq!(r.channel_state("ch"), Some(Liveness::Live));
}

#[test]
fn a_heartbeat_brings_a_pending_registration_back_to_live() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    heartbeat(&mut r, ms(0), "prod", "ch", "producer");
    r.tick(ms(350));
    assert_eq!(r.channel_state("ch"), Some(Liveness::Pending));
    let step = heartbeat(&mut r, ms(360), "prod", "ch", "producer");
    assert_eq!(r.channel_state("ch"), Some(Liveness::Live));
    assert!(step.events.contains(&Event::ChannelLiveness {
        channel: "ch".into(),
        to: Liveness::Live
    }));
    r.tick(ms(700));
    assert_eq!(
        r.channel_state("ch"),
        Some(Liveness::Pending),
        "dead only 500 ms after 360"
    );
}

#[test]
fn another_fingerprint_for_a_registered_channel_is_schema_mismatch() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    let o = ask(
        &mut r,
        ms(1),
        "other",
        msg::REG_REQ,
        &info("other", "ch", Scalar::I64),
    );
    assert_eq!(code(&o), "SCHEMA_MISMATCH");
    let o = ask(
        &mut r,
        ms(1),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::I64),
    );
    assert_eq!(
        code(&o),
        "SCHEMA_MISMATCH",
        "the same uid too: deregister first"
    );
}

#[test]
fn a_second_live_producer_is_channel_exists_and_the_same_uid_may_re_register() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    heartbeat(&mut r, ms(0), "prod", "ch", "producer");
    let o = ask(
        &mut r,
        ms(1),
        "other",
        msg::REG_REQ,
        &info("other", "ch", Scalar::F64),
    );
    assert_eq!(code(&o), "CHANNEL_EXISTS");
    let o = ask(
        &mut r,
        ms(2),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    assert_eq!(o.msg_type, msg::REG_ACK);
    assert_eq!(
        r.channel_state("ch"),
        Some(Liveness::Live),
        "same process keeps liveness"
    );
    let mut restarted = info("prod", "ch", Scalar::F64);
    restarted["producer_pid"] = json!(4343);
    assert_eq!(
        ask(&mut r, ms(3), "prod", msg::REG_REQ, &restarted).msg_type,
        msg::REG_ACK
    );
    assert_eq!(
        r.channel_state("ch"),
        Some(Liveness::Pending),
        "a new process awaits its heartbeat"
    );
    // Once the first producer is dead, another may take the channel.
    r.tick(ms(600));
    assert_eq!(r.channel_state("ch"), None);
    let o = ask(
        &mut r,
        ms(601),
        "other",
        msg::REG_REQ,
        &info("other", "ch", Scalar::F64),
    );
    assert_eq!(o.msg_type, msg::REG_ACK);
}

#[test]
fn citing_another_fingerprint_at_discovery_or_consumer_registration_is_schema_mismatch() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    heartbeat(&mut r, ms(0), "prod", "ch", "producer");
    let wrong = p(json!({"channel_name": "ch", "schema_fingerprint": fp(Scalar::I64)}));
    assert_eq!(
        code(&ask(&mut r, ms(1), "c", msg::DISC_REQ, &wrong)),
        "SCHEMA_MISMATCH"
    );
    let right = p(json!({"channel_name": "ch", "schema_fingerprint": fp(Scalar::F64)}));
    assert_eq!(
        ask(&mut r, ms(1), "c", msg::DISC_REQ, &right).msg_type,
        msg::DISC_ACK
    );
    let mut creg = wrong.clone();
    creg["consumer_pid"] = json!(5);
    assert_eq!(
        code(&ask(&mut r, ms(1), "c", msg::CONSUMER_REG_REQ, &creg)),
        "SCHEMA_MISMATCH"
    );
    assert_eq!(r.consumer_state("ch", "c"), None);
    let bad = p(json!({"channel_name": "ch", "schema_fingerprint": "DHS01_zz"}));
    assert_eq!(
        code(&ask(&mut r, ms(1), "c", msg::DISC_REQ, &bad)),
        "INVALID_REQUEST"
    );
}

#[test]
fn another_protocol_major_is_refused_and_another_minor_accepted() {
    let mut r = new();
    let mut body = info("prod", "ch", Scalar::F64);
    body["protocol"] = json!({"major": 2, "minor": 0});
    assert_eq!(
        code(&ask(&mut r, ms(0), "prod", msg::REG_REQ, &body)),
        "PROTOCOL_VERSION"
    );
    assert_eq!(r.channel_state("ch"), None);
    body["protocol"] = json!({"major": 1, "minor": 7});
    assert_eq!(
        ask(&mut r, ms(0), "prod", msg::REG_REQ, &body).msg_type,
        msg::REG_ACK
    );
    let mut old = json!({});
    old["protocol"] = json!({"major": 0, "minor": 9});
    assert_eq!(
        code(&ask(&mut r, ms(0), "x", msg::METRICS_REQ, &old)),
        "PROTOCOL_VERSION"
    );
    assert_eq!(
        code(&ask(&mut r, ms(0), "x", msg::METRICS_REQ, &json!({}))),
        "INVALID_REQUEST"
    );
}

#[test]
fn a_heartbeat_of_an_unknown_registration_is_not_registered_naming_it() {
    let mut r = new();
    let step = heartbeat(&mut r, ms(0), "prod", "ch", "producer");
    assert_eq!(step.out.len(), 1);
    let o = &step.out[0];
    assert_eq!(code(o), "NOT_REGISTERED");
    assert_eq!(o.body["channel_name"], "ch");
    assert_eq!(o.body["role"], "producer");
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    // Someone else's heartbeat for the channel is not the producer's.
    let step = heartbeat(&mut r, ms(1), "mallory", "ch", "producer");
    assert_eq!(code(&step.out[0]), "NOT_REGISTERED");
    assert_eq!(r.channel_state("ch"), Some(Liveness::Pending));
    let step = heartbeat(&mut r, ms(1), "prod", "ch", "consumer");
    assert_eq!(step.out[0].body["role"], "consumer");
}

#[test]
fn malformed_messages_get_invalid_request_or_are_dropped() {
    let mut r = new();
    let id = b"c".to_vec();
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (
            vec![id.clone(), b"C".to_vec(), b"METRICS_REQ".to_vec()],
            "INVALID_REQUEST",
        ),
        (
            vec![
                id.clone(),
                b"X".to_vec(),
                b"METRICS_REQ".to_vec(),
                b"1".to_vec(),
                b"{}".to_vec(),
            ],
            "INVALID_REQUEST",
        ),
        (
            frames("c", msg::METRICS_REQ, "1", &json!(null))[..4]
                .iter()
                .cloned()
                .chain([b"not json".to_vec()])
                .collect(),
            "INVALID_REQUEST",
        ),
        (
            frames("c", msg::METRICS_REQ, "1", &json!([1, 2])),
            "INVALID_REQUEST",
        ),
        (
            frames("c", msg::DISC_REQ, "1", &p(json!({}))),
            "INVALID_REQUEST",
        ),
        (
            frames("c", msg::DISC_REQ, "1", &p(json!({"channel_name": 5}))),
            "INVALID_REQUEST",
        ),
        (
            frames("c", msg::DISC_REQ, "1", &p(json!({"channel_name": "a b"}))),
            "INVALID_REQUEST",
        ),
        (
            frames(
                "c",
                msg::DISC_REQ,
                "1",
                &p(json!({"channel_name": "x".repeat(201)})),
            ),
            "INVALID_REQUEST",
        ),
        (
            frames("c", "BOGUS_REQ", "1", &p(json!({}))),
            "UNKNOWN_MSG_TYPE",
        ),
        (
            frames(
                "c",
                msg::REG_REQ,
                "1",
                &info("someone-else", "ch", Scalar::F64),
            ),
            "INVALID_REQUEST",
        ),
    ];
    for (f, want) in cases {
        let step = r.handle(ms(0), &f);
        assert_eq!(step.out.len(), 1, "{f:?}");
        assert_eq!(step.out[0].identity, id);
        assert_eq!(code(&step.out[0]), want, "{f:?}");
        assert!(step.out[0].body["message"].as_str().unwrap().len() <= MAX_ERROR_MESSAGE);
    }
    // A too long correlation id is not echoed.
    let long = frames("c", "BOGUS_REQ", &"k".repeat(65), &p(json!({})));
    let step = r.handle(ms(0), &long);
    assert!(step.out[0].correlation_id.is_empty());
    // No identity: nobody to answer.
    assert!(r.handle(ms(0), &[]).out.is_empty());
    assert!(r.handle(ms(0), &[Vec::new(), b"C".to_vec()]).out.is_empty());
    assert_eq!(r.channel_count(), 0);
    assert_eq!(r.counters().invalid_requests, 10);
}

#[test]
fn fields_must_hash_to_the_fingerprint_and_schema_req_returns_them() {
    let mut r = new();
    let mut body = info("prod", "ch", Scalar::F64);
    body["schema"]["fields"] = json!(wire::SchemaFields::of(&layout(Scalar::I64)));
    assert_eq!(
        code(&ask(&mut r, ms(0), "prod", msg::REG_REQ, &body)),
        "INVALID_REQUEST"
    );
    body["schema"]["fields"] = json!(wire::SchemaFields::of(&layout(Scalar::F64)));
    assert_eq!(
        ask(&mut r, ms(0), "prod", msg::REG_REQ, &body).msg_type,
        msg::REG_ACK
    );
    let o = ask(&mut r, ms(0), "tool", msg::SCHEMA_REQ, &disc("ch"));
    assert_eq!(o.msg_type, msg::SCHEMA_ACK);
    let got: wire::SchemaFields =
        serde_json::from_value(o.body["schema"]["fields"].clone()).unwrap();
    assert_eq!(got.layout().unwrap(), layout(Scalar::F64));
    let list = ask(&mut r, ms(0), "tool", msg::CHANNEL_LIST_REQ, &p(json!({})));
    assert_eq!(list.body["channels"][0]["channel_name"], "ch");
    assert_eq!(list.body["channels"][0]["state"], "pending");
    assert!(list.body["channels"][0]["schema"].get("fields").is_none());
}

#[test]
fn deregistration_tells_consumers_and_forgets_the_channel() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    ask(
        &mut r,
        ms(0),
        "cons",
        msg::CONSUMER_REG_REQ,
        &p(json!({"channel_name": "ch", "consumer_pid": 7})),
    );
    assert_eq!(
        code(&ask(&mut r, ms(1), "cons", msg::DEREG_REQ, &disc("ch"))),
        "NOT_REGISTERED"
    );
    let step = r.handle(ms(1), &frames("prod", msg::DEREG_REQ, "9", &disc("ch")));
    assert_eq!(step.out.len(), 2, "{:?}", step.out);
    assert_eq!(step.out[0].msg_type, msg::CHANNEL_CLOSING_NOTIFY);
    assert_eq!(step.out[0].body["reason"], "producer_deregistered");
    assert_eq!(step.out[1].msg_type, msg::DEREG_ACK);
    assert_eq!(r.channel_state("ch"), None);
    let m = ask(&mut r, ms(1), "x", msg::METRICS_REQ, &p(json!({})));
    assert_eq!(m.body["channels"], 0);
    assert_eq!(m.body["counters"]["deregistrations"], 1);
}

#[test]
fn the_registry_is_capped() {
    let mut r = Registry::new(
        HB,
        Limits {
            max_channels: 2,
            max_consumers_per_channel: 1,
            ..Limits::default()
        },
        Duration::ZERO,
    );
    for ch in ["a", "b"] {
        ask(
            &mut r,
            ms(0),
            "prod",
            msg::REG_REQ,
            &info("prod", ch, Scalar::F64),
        );
    }
    assert_eq!(
        code(&ask(
            &mut r,
            ms(0),
            "prod",
            msg::REG_REQ,
            &info("prod", "c", Scalar::F64)
        )),
        "REGISTRY_FULL"
    );
    let creg = p(json!({"channel_name": "a", "consumer_pid": 7}));
    assert_eq!(
        ask(&mut r, ms(0), "c1", msg::CONSUMER_REG_REQ, &creg).msg_type,
        msg::CONSUMER_REG_ACK
    );
    assert_eq!(
        ask(&mut r, ms(0), "c1", msg::CONSUMER_REG_REQ, &creg).msg_type,
        msg::CONSUMER_REG_ACK
    );
    assert_eq!(
        code(&ask(&mut r, ms(0), "c2", msg::CONSUMER_REG_REQ, &creg)),
        "REGISTRY_FULL"
    );
}

/// The notifications `step` sends to `uid` (empty correlation id).
fn notes_to<'a>(step: &'a Step, uid: &str) -> Vec<&'a Outgoing> {
    step.out
        .iter()
        .filter(|o| o.identity == uid.as_bytes() && o.correlation_id.is_empty())
        .collect()
}

#[test]
fn a_producer_hears_of_consumers_joining_and_leaving_but_not_of_repeats() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    let reg = |pid: u32| p(json!({"channel_name": "ch", "consumer_pid": pid}));
    let step = r.handle(ms(1), &frames("c1", msg::CONSUMER_REG_REQ, "1", &reg(7)));
    let notes = notes_to(&step, "prod");
    assert_eq!(notes.len(), 1, "{:?}", step.out);
    assert_eq!(notes[0].msg_type, msg::CONSUMER_JOINED_NOTIFY);
    assert_eq!(notes[0].body["channel_name"], "ch");
    assert_eq!(notes[0].body["consumer_uid"], "c1");
    assert_eq!(notes[0].body["consumer_pid"], 7);
    assert_eq!(notes[0].body["consumers"], 1);
    assert_eq!(notes[0].body["protocol"]["minor"], 2);

    // The same uid and pid again (a repeated request, a re-registration after a broker
    // restart): nothing new to tell.
    let step = r.handle(ms(2), &frames("c1", msg::CONSUMER_REG_REQ, "2", &reg(7)));
    assert!(notes_to(&step, "prod").is_empty(), "{:?}", step.out);
    // The uid now held by another process: told again.
    let step = r.handle(ms(3), &frames("c1", msg::CONSUMER_REG_REQ, "3", &reg(8)));
    assert_eq!(
        notes_to(&step, "prod")[0].msg_type,
        msg::CONSUMER_JOINED_NOTIFY
    );
    let step = r.handle(ms(4), &frames("c2", msg::CONSUMER_REG_REQ, "4", &reg(9)));
    assert_eq!(notes_to(&step, "prod")[0].body["consumers"], 2);

    let step = r.handle(
        ms(5),
        &frames(
            "c1",
            msg::CONSUMER_DEREG_REQ,
            "5",
            &p(json!({"channel_name": "ch"})),
        ),
    );
    let notes = notes_to(&step, "prod");
    assert_eq!(notes.len(), 1, "{:?}", step.out);
    assert_eq!(notes[0].msg_type, msg::CONSUMER_LEFT_NOTIFY);
    assert_eq!(notes[0].body["consumer_uid"], "c1");
    assert_eq!(notes[0].body["consumer_pid"], 8);
    assert_eq!(notes[0].body["reason"], "consumer_deregistered");
    assert_eq!(notes[0].body["consumers"], 1);
    // A refused deregistration tells the producer nothing.
    let step = r.handle(
        ms(6),
        &frames(
            "c1",
            msg::CONSUMER_DEREG_REQ,
            "6",
            &p(json!({"channel_name": "ch"})),
        ),
    );
    assert!(notes_to(&step, "prod").is_empty(), "{:?}", step.out);
}

#[test]
fn registrations_are_bounded_in_bytes_one_by_one_and_in_all() {
    let one = serde_json::to_vec(&info("prod", "a", Scalar::F64))
        .unwrap()
        .len();
    let mut r = Registry::new(
        HB,
        Limits {
            max_registration_bytes: one + 100,
            max_registry_bytes: 2 * one + 50,
            ..Limits::default()
        },
        Duration::ZERO,
    );
    // A body over the per-registration bound: INVALID_REQUEST, nothing kept.
    let mut big = info("prod", "a", Scalar::F64);
    big["padding"] = json!("x".repeat(200));
    let o = ask(&mut r, ms(0), "prod", msg::REG_REQ, &big);
    assert_eq!(code(&o), "INVALID_REQUEST");
    assert!(
        o.body["message"].as_str().unwrap().contains("bytes"),
        "{o:?}"
    );
    assert_eq!(r.channel_state("a"), None);
    for ch in ["a", "b"] {
        let o = ask(
            &mut r,
            ms(0),
            "prod",
            msg::REG_REQ,
            &info("prod", ch, Scalar::F64),
        );
        assert_eq!(o.msg_type, msg::REG_ACK, "{o:?}");
    }
    // A third would take the registry over its total.
    let o = ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "c", Scalar::F64),
    );
    assert_eq!(code(&o), "REGISTRY_FULL");
    // Re-registering a held channel replaces its bytes rather than adding to them.
    let o = ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "a", Scalar::F64),
    );
    assert_eq!(o.msg_type, msg::REG_ACK, "{o:?}");
}

#[test]
fn a_handover_moves_the_channel_to_the_new_block_and_tells_its_consumers() {
    let mut r = new();
    ask(
        &mut r,
        ms(0),
        "prod",
        msg::REG_REQ,
        &info("prod", "ch", Scalar::F64),
    );
    let reg = p(json!({"channel_name": "ch", "consumer_pid": 7}));
    ask(&mut r, ms(1), "c1", msg::CONSUMER_REG_REQ, &reg);
    let req = |old: &str, new: &str| {
        p(json!({"channel_name": "ch", "old_block": old, "new_block": new, "cutover_seq": 42}))
    };
    // Only the channel's producer, and only from the block the broker has.
    let o = ask(
        &mut r,
        ms(2),
        "intruder",
        msg::HANDOVER_REQ,
        &req("blk-ch", "evil"),
    );
    assert_eq!(code(&o), "NOT_REGISTERED");
    let o = ask(
        &mut r,
        ms(2),
        "prod",
        msg::HANDOVER_REQ,
        &req("other", "blk-2"),
    );
    assert_eq!(code(&o), "INVALID_REQUEST");
    for bad in ["../x", "a/b", "..", ""] {
        let o = ask(
            &mut r,
            ms(2),
            "prod",
            msg::HANDOVER_REQ,
            &req("blk-ch", bad),
        );
        assert_eq!(code(&o), "INVALID_REQUEST", "{bad:?}");
    }
    // With the successor's registration, which must name the new block.
    let mut succ = info("prod", "ch", Scalar::F32);
    succ["block_name"] = json!("blk-3");
    let mut body = req("blk-ch", "blk-2");
    body["channel"] = succ.clone();
    let o = ask(&mut r, ms(3), "prod", msg::HANDOVER_REQ, &body);
    assert_eq!(code(&o), "INVALID_REQUEST");
    succ["block_name"] = json!("blk-2");
    body["channel"] = succ;
    let step = r.handle(ms(4), &frames("prod", msg::HANDOVER_REQ, "8", &body));
    let ack: Vec<_> = step.out.iter().filter(|o| o.identity == b"prod").collect();
    assert_eq!(ack.len(), 1, "{:?}", step.out);
    assert_eq!(ack[0].msg_type, msg::HANDOVER_ACK);
    assert_eq!(ack[0].body["block_name"], "blk-2");
    let notes = notes_to(&step, "c1");
    assert_eq!(notes.len(), 1, "{:?}", step.out);
    assert_eq!(notes[0].msg_type, msg::HANDOVER_NOTIFY);
    assert_eq!(notes[0].body["old_block"], "blk-ch");
    assert_eq!(notes[0].body["new_block"], "blk-2");
    assert_eq!(notes[0].body["cutover_seq"], 42);
    // Discovery names the new block, with the successor's schema.
    heartbeat(&mut r, ms(5), "prod", "ch", "producer");
    let o = ask(
        &mut r,
        ms(6),
        "c2",
        msg::DISC_REQ,
        &p(json!({"channel_name": "ch"})),
    );
    assert_eq!(o.msg_type, msg::DISC_ACK, "{o:?}");
    assert_eq!(o.body["block_name"], "blk-2");
    assert_eq!(o.body["schema"]["fingerprint"], fp(Scalar::F32));
}
