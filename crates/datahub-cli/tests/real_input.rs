//! Real input from the shared data folder (`$SHARED_DATA_DIR`, else `../shared/data` beside the
//! workspace; skipped when absent unless `REQUIRE_SHARED_DATA=1`):
//!
//! - every file of the folder crosses one block through `datahub pub` / `datahub sub` with
//!   64 KiB slots (the files are larger, so they span many slots) and arrives intact;
//! - the automerge-paper editing trace goes from a producer process to a consumer process (this
//!   test binary re-executed in the consumer role) as one message per transaction through a
//!   Sequential block, and the consumer's replay ends at the trace's `endContent`.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::{Block, DEADLINE, Proc, blake2b};
use datahub::{ChecksumPolicy, Config, Consumer, Error, Expectations, Policy, Producer};
use serde::Deserialize;

#[test]
fn every_shared_file_crosses_one_block_intact() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let files = common::files_under(&data);
    let has = |suffix: &str| files.iter().any(|f| f.to_str().unwrap().ends_with(suffix));
    assert!(
        has(".json") && has(".json.gz"),
        "json/*.json and editing-traces/*.json.gz in {}",
        data.display()
    );
    let block = Block::new("shared");
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "pub".to_owned(),
        block.0.clone(),
        "--slot-size".into(),
        "65536".into(),
        "--json".into(),
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = Proc::spawn(&args);
    let sub = Proc::spawn(&[
        "sub",
        block.name(),
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    let sj = sub.finish(DEADLINE).expect(0, "sub").json();
    let pj = publisher.finish(DEADLINE).expect(0, "pub").json();
    let received = sj["files"].as_array().unwrap();
    assert_eq!(received.len(), files.len());
    for (i, f) in files.iter().enumerate() {
        let original = std::fs::read(f).unwrap();
        let base = f.file_name().unwrap().to_str().unwrap();
        let copy = std::fs::read(out.path().join(base)).unwrap_or_else(|e| panic!("{base}: {e}"));
        let digest = blake2b(&original);
        assert_eq!(blake2b(&copy), digest, "{base}: received copy differs");
        assert_eq!(
            received[i]["blake2b"],
            digest.as_str(),
            "{base}: sub's digest"
        );
        assert_eq!(
            pj["files"][i]["blake2b"],
            digest.as_str(),
            "{base}: pub's digest"
        );
        if base.ends_with(".json") || base.ends_with(".json.gz") {
            assert!(original.len() > 65536, "{base} spans many 64 KiB slots");
        }
    }
}

#[derive(Deserialize)]
struct Trace {
    #[serde(rename = "startContent")]
    start: String,
    #[serde(rename = "endContent")]
    end: String,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    patches: Vec<(usize, usize, String)>,
}

/// Message kinds of the trace stream.
const START: u8 = b'S';
const TXN: u8 = b'T';

/// A transaction as one message: `T`, patch count (u32), then per patch position, delete count
/// and insert length (u32 each, little-endian) and the inserted bytes.
fn encode(t: &Txn, out: &mut Vec<u8>) {
    out.clear();
    out.push(TXN);
    out.extend_from_slice(&(t.patches.len() as u32).to_le_bytes());
    for (pos, del, ins) in &t.patches {
        for v in [*pos, *del, ins.len()] {
            out.extend_from_slice(&u32::try_from(v).unwrap().to_le_bytes());
        }
        out.extend_from_slice(ins.as_bytes());
    }
}

/// Applies one transaction message to `text` (ASCII: positions are bytes).
fn apply(msg: &[u8], text: &mut Vec<u8>) {
    let u32_at = |at: usize| u32::from_le_bytes(msg[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(msg[0], TXN);
    let n = u32_at(1);
    let mut at = 5;
    for _ in 0..n {
        let (pos, del, len) = (u32_at(at), u32_at(at + 4), u32_at(at + 8));
        at += 12;
        let ins = &msg[at..at + len];
        at += len;
        assert!(ins.is_ascii(), "the ASCII-only trace has ASCII inserts");
        assert!(
            pos + del <= text.len(),
            "patch ({pos}, {del}) beyond the text ({} bytes)",
            text.len()
        );
        // delete `del` at `pos`, then insert at `pos`, moving the tail once.
        let old = text.len();
        let new = old - del + len;
        if len > del {
            text.resize(new, 0);
            text.copy_within(pos + del..old, pos + len);
        } else {
            text.copy_within(pos + del..old, pos + len);
            text.truncate(new);
        }
        text[pos..pos + len].copy_from_slice(ins);
    }
    assert_eq!(at, msg.len(), "message fully consumed");
}

const ROLE: &str = "DATAHUB_TRACE_ROLE";
const TEST: &str = "automerge_paper_one_message_per_transaction";

/// The consumer process: replays every transaction, writes `{txns, text}` to `$DATAHUB_TRACE_OUT`.
fn consumer_role() {
    let block = std::env::var("DATAHUB_TRACE_BLOCK").unwrap();
    let out = std::env::var("DATAHUB_TRACE_OUT").unwrap();
    let t = Duration::from_secs(30);
    let mut c =
        Consumer::attach_wait(&block, Expectations::new().policy(Policy::Sequential), t).unwrap();
    let mut text = Vec::new();
    let mut txns = 0u64;
    let mut next = 0u64;
    loop {
        let r = match c.read(t) {
            Ok(r) => r,
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("read: {e}"),
        };
        assert_eq!(r.seq(), next, "messages arrive in order, none lost");
        next += 1;
        match r[0] {
            START => text.extend_from_slice(&r[1..]),
            TXN => {
                apply(&r, &mut text);
                txns += 1;
            }
            k => panic!("unknown message kind {k}"),
        }
        r.release().unwrap();
    }
    let report = serde_json::json!({ "txns": txns, "messages": next, "text": String::from_utf8(text).unwrap() });
    std::fs::write(out, serde_json::to_vec(&report).unwrap()).unwrap();
}

#[test]
fn automerge_paper_one_message_per_transaction() {
    if std::env::var(ROLE).is_ok_and(|r| r == "consumer") {
        consumer_role();
        return;
    }
    let Some(data) = common::shared_data() else {
        return;
    };
    let path = data.join("editing-traces/automerge-paper.json.gz");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    let trace: Trace = serde_json::from_slice(&json).unwrap();
    drop(json);
    assert_eq!(trace.txns.len(), 259_778);
    assert_eq!(trace.end.len(), 104_852);

    let mut buf = Vec::new();
    let biggest = trace
        .txns
        .iter()
        .map(|t| {
            encode(t, &mut buf);
            buf.len()
        })
        .max()
        .unwrap();
    let slot = u32::try_from(biggest.max(4096)).unwrap();
    let block = Block::new("trace");
    // No slot checksums: the replayed text is compared whole, and BLAKE2b of 260,000 tiny
    // messages costs seconds in a debug build (the file test runs with them enforced).
    let config = Config::new(Policy::Sequential)
        .slot_size(slot)
        .slot_count(256)
        .checksum(ChecksumPolicy::None);
    let mut p = Producer::create(block.name(), config).unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", TEST, "--nocapture"])
        .env(ROLE, "consumer")
        .env("DATAHUB_TRACE_BLOCK", block.name())
        .env("DATAHUB_TRACE_OUT", &report);
    let consumer = Proc::spawn_cmd(&mut cmd, None);
    let t = Duration::from_secs(30);
    p.wait_for_consumers(1, t).unwrap();
    let room = p.slot_size() - 1;
    for chunk in trace.start.as_bytes().chunks(room) {
        let mut w = p.write(t).unwrap();
        w[0] = START;
        w[1..1 + chunk.len()].copy_from_slice(chunk);
        w.commit(1 + chunk.len()).unwrap();
    }
    for txn in &trace.txns {
        encode(txn, &mut buf);
        p.send(&buf, t).unwrap();
    }
    p.close();
    p.wait_drained(t).unwrap();
    let done = consumer.finish(DEADLINE);
    assert!(
        done.status.success(),
        "consumer process failed: {}",
        done.stderr
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["txns"], 259_778, "one message per transaction");
    assert_eq!(r["messages"], p.metrics().slots_written);
    let text = r["text"].as_str().unwrap();
    assert_eq!(text.len(), trace.end.len());
    assert!(text == trace.end, "the replayed text equals endContent");
}
