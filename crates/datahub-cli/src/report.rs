//! Text renderings of the library's reports (the `--json` forms are their serde output).

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use datahub::{Action, BlockInfo, Diagnosis, Metrics, PeerInfo, Validation};
use serde::Serialize;

/// One row of `datahub list`.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    /// Block name.
    pub name: String,
    /// Producer pid (None: no producer).
    pub producer_pid: Option<u32>,
    /// Producer process alive.
    pub producer_alive: bool,
    /// Segment size, bytes.
    pub size_bytes: Option<u64>,
    /// Slot policy.
    pub policy: Option<datahub::Policy>,
    /// Checksum policy.
    pub checksum: Option<datahub::ChecksumPolicy>,
    /// Slots in the ring.
    pub slots: Option<u32>,
    /// Payload bytes per slot.
    pub slot_size: Option<u32>,
    /// Registered consumers.
    pub consumers: Option<usize>,
    /// Of those, alive.
    pub consumers_alive: Option<usize>,
    /// One past the newest committed message.
    pub commit_index: Option<u64>,
    /// Why the block could not be opened (the other fields are then empty).
    pub error: Option<String>,
    /// An entry that is not a regular file (link, FIFO, directory, ...): never opened.
    pub skipped: Option<String>,
}

impl ListEntry {
    /// The row for a block that opened.
    pub fn of(info: &BlockInfo) -> ListEntry {
        ListEntry {
            name: info.name.clone(),
            producer_pid: (info.producer.pid != 0).then_some(info.producer.pid),
            producer_alive: info.producer.alive,
            size_bytes: Some(info.regions.total_size),
            policy: Some(info.policy),
            checksum: Some(info.checksum),
            slots: Some(info.slot_count),
            slot_size: Some(info.slot_size),
            consumers: Some(info.consumers.len()),
            consumers_alive: Some(info.consumers.iter().filter(|c| c.alive).count()),
            commit_index: Some(info.commit_index),
            error: None,
            skipped: None,
        }
    }

    /// The row for a block that did not open.
    pub fn failed(name: String, error: String) -> ListEntry {
        ListEntry {
            name,
            producer_pid: None,
            producer_alive: false,
            size_bytes: None,
            policy: None,
            checksum: None,
            slots: None,
            slot_size: None,
            consumers: None,
            consumers_alive: None,
            commit_index: None,
            error: Some(error),
            skipped: None,
        }
    }

    /// The row for a directory entry that is not a regular file (never opened).
    pub fn skipped(name: String, what: String) -> ListEntry {
        ListEntry {
            error: None,
            skipped: Some(what),
            ..ListEntry::failed(name, String::new())
        }
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `datahub list` as a table.
pub fn list(rows: &[ListEntry]) -> String {
    if rows.is_empty() {
        return format!("no DataHub blocks in {}\n", datahub::shm_dir().display());
    }
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut s = format!(
        "{:w$}  {:>8}  {:5}  {:>10}  {:15}  {:>5}  {:>9}  {:>9}  {:>10}\n",
        "NAME", "PID", "ALIVE", "SIZE", "POLICY", "SLOTS", "SLOT_SIZE", "CONSUMERS", "COMMITTED"
    );
    for r in rows {
        if let Some(e) = &r.error {
            let _ = writeln!(s, "{:w$}  error: {e}", r.name);
            continue;
        }
        if let Some(what) = &r.skipped {
            let _ = writeln!(
                s,
                "{:w$}  skipped: {what}, not a block (not opened)",
                r.name
            );
            continue;
        }
        let consumers = match (r.consumers, r.consumers_alive) {
            (Some(n), Some(a)) if a != n => format!("{n} ({a} alive)"),
            (n, _) => opt(n),
        };
        let _ = writeln!(
            s,
            "{:w$}  {:>8}  {:5}  {:>10}  {:15}  {:>5}  {:>9}  {:>9}  {:>10}",
            r.name,
            opt(r.producer_pid),
            if r.producer_alive { "yes" } else { "no" },
            opt(r.size_bytes),
            opt(r.policy),
            opt(r.slots),
            opt(r.slot_size),
            consumers,
            opt(r.commit_index),
        );
    }
    s
}

fn wall(unix_ns: u64) -> String {
    if unix_ns == 0 {
        return "-".to_owned();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

fn peer_state(p: &PeerInfo) -> &'static str {
    match (p.pid, p.alive, p.stalled) {
        (0, _, _) => "none",
        (_, false, _) => "dead",
        (_, true, true) => "stalled",
        (_, true, false) => "alive",
    }
}

/// `datahub inspect`.
pub fn info(i: &BlockInfo) -> String {
    let mut s = String::new();
    let r = &i.regions;
    let _ = writeln!(s, "block        {}", i.name);
    let _ = writeln!(
        s,
        "version      {} (layout hash {})",
        i.version, i.layout_hash
    );
    let _ = writeln!(s, "schema       {} v{}", i.schema_hash, i.schema_version);
    let _ = writeln!(
        s,
        "policy       {} (max consumers {})",
        i.policy, i.max_consumers
    );
    let _ = writeln!(
        s,
        "checksum     {}{}",
        i.checksum,
        if i.keyed { " (keyed)" } else { "" }
    );
    let _ = writeln!(
        s,
        "slots        {} x {} bytes, {}",
        i.slot_count,
        i.slot_size,
        if i.recent_slots {
            "recent first (slot named by position line)"
        } else {
            "ring order (seq % slots)"
        }
    );
    let _ = writeln!(s, "flex zone    {} bytes", i.flex_zone_size);
    let _ = writeln!(
        s,
        "regions      slot states @{}, checksums @{}, flex zone @{}, ring @{}; total {} bytes",
        r.slot_state_offset, r.checksum_offset, r.flex_offset, r.ring_offset, r.total_size
    );
    let _ = writeln!(s, "pages        {}{}", i.backing, backing_note(i.backing));
    let _ = writeln!(s, "heartbeat    timeout {} ms", i.heartbeat_timeout_ms);
    let _ = writeln!(s, "created      {}", wall(i.created_unix_ns));
    let p = &i.producer;
    let _ = writeln!(
        s,
        "producer     pid {} {} (heartbeat {} ms ago, incarnation {}, {} messages written)",
        p.pid,
        peer_state(p),
        p.heartbeat_age_ms,
        i.producer_incarnation,
        p.messages
    );
    let eos = i
        .end_of_stream
        .map_or_else(|| "open".to_owned(), |e| e.to_string());
    let _ = writeln!(
        s,
        "indices      write {}, commit {}, end of stream {eos}, retained floor {}, first seq {}",
        i.write_index, i.commit_index, i.retained_floor, i.first_seq
    );
    if let Some(succ) = &i.successor {
        let _ = writeln!(
            s,
            "handed over  to {succ:?} at seq {}",
            i.end_of_stream
                .map_or_else(|| "?".to_owned(), |e| e.to_string())
        );
    }
    if i.consumers.is_empty() {
        let _ = writeln!(s, "consumers    none");
    } else {
        let _ = writeln!(s, "consumers    {}", i.consumers.len());
        let _ = writeln!(
            s,
            "  {:>5}  {:>8}  {:7}  {:>9}  {:>8}  {:>12}  {:>8}",
            "ENTRY", "PID", "STATE", "POSITION", "HELD", "HEARTBEAT_MS", "READ"
        );
        for c in &i.consumers {
            let _ = writeln!(
                s,
                "  {:>5}  {:>8}  {:7}  {:>9}  {:>8}  {:>12}  {:>8}",
                opt(c.entry),
                c.pid,
                peer_state(c),
                opt(c.position),
                opt(c.held_seq),
                c.heartbeat_age_ms,
                c.messages
            );
        }
    }
    s
}

/// What a backing means, for `inspect`'s `pages` line.
fn backing_note(b: datahub::Backing) -> &'static str {
    match b {
        datahub::Backing::Small => " (4 KiB pages)",
        datahub::Backing::ThpRequested => {
            " (transparent huge pages advised, not seen mapped at creation)"
        }
        datahub::Backing::Thp => " (transparent huge pages, seen mapped at creation)",
        datahub::Backing::Hugetlb => " (hugetlb pages)",
        _ => " (not recorded: a format 1.0 block)",
    }
}

fn list_of(v: &[usize]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `datahub diagnose`.
pub fn diagnosis(d: &Diagnosis) -> String {
    let i = &d.info;
    let mut s = format!(
        "block {}: {}, {} x {} bytes, producer pid {} {}, {} consumer(s), commit {}\n",
        i.name,
        i.policy,
        i.slot_count,
        i.slot_size,
        i.producer.pid,
        peer_state(&i.producer),
        i.consumers.len(),
        i.commit_index
    );
    for c in &i.consumers {
        let _ = writeln!(
            s,
            "consumer {} pid {} {} position {} held {} heartbeat {} ms ago",
            opt(c.entry),
            c.pid,
            peer_state(c),
            opt(c.position),
            opt(c.held_seq),
            c.heartbeat_age_ms
        );
    }
    let _ = writeln!(
        s,
        "{:>5}  {:9}  {:>10}  {:>9}  {:>8}  {:>12}  {:>10}",
        "SLOT", "STATE", "SEQ", "LEN", "READERS", "DEAD_READERS", "AGE_MS"
    );
    for r in &d.slots {
        let _ = writeln!(
            s,
            "{:>5}  {:9}  {:>10}  {:>9}  {:>8}  {:>12}  {:>10}",
            r.slot,
            r.state,
            opt(r.seq),
            r.len,
            list_of(&r.readers),
            list_of(&r.dead_readers),
            r.age_ms.map_or_else(|| "-".to_owned(), |a| a.to_string())
        );
    }
    if d.problems.is_empty() {
        s.push_str("no problems\n");
    } else {
        let _ = writeln!(s, "{} problem(s):", d.problems.len());
        for p in &d.problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    s
}

/// One recovery step in words.
pub fn action(a: &Action) -> String {
    match a {
        Action::EvictReaders { slot, entries } => {
            format!("evict reader(s) {} from slot {slot}", list_of(entries))
        }
        Action::RetireConsumer { entry, pid } => {
            format!("retire dead consumer {entry} (pid {pid})")
        }
        Action::DiscardSlot { slot, seq } => {
            format!("discard half-written slot {slot} (seq {seq})")
        }
        Action::ReopenSlot { slot } => format!("reopen slot {slot} the dead producer was draining"),
        Action::FinishCommit { seq } => format!("announce committed message {seq}"),
        Action::ResetSlot { slot, seq } => format!("reset slot {slot} (held seq {})", opt(*seq)),
        Action::ResetWriteIndex { from, to } => format!("reset write index {from} -> {to}"),
        Action::FixActiveMask { from, to } => format!("fix active mask {from:#x} -> {to:#x}"),
    }
}

/// `datahub recover` / `reset-slot`.
pub fn actions(block: &str, actions: &[Action], dry_run: bool) -> String {
    if actions.is_empty() {
        return format!("block {block}: nothing to recover\n");
    }
    let verb = if dry_run { "would " } else { "" };
    actions
        .iter()
        .map(|a| format!("{verb}{}\n", action(a)))
        .collect()
}

/// `datahub validate`.
pub fn validation(block: &str, v: &Validation) -> String {
    let mut s = if v.ok() {
        format!("block {block}: valid\n")
    } else {
        let mut s = format!("block {block}: {} problem(s)\n", v.problems.len());
        for p in &v.problems {
            let _ = writeln!(s, "  {p}");
        }
        s
    };
    for a in &v.repairs {
        let _ = writeln!(s, "repaired: {}", action(a));
    }
    s
}

/// `datahub metrics` as a table.
pub fn metrics(block: &str, m: &Metrics) -> String {
    let rows: [(&str, String); 22] = [
        ("slots_written", m.slots_written.to_string()),
        ("bytes_written", m.bytes_written.to_string()),
        ("aborted_writes", m.aborted_writes.to_string()),
        ("slots_read", m.slots_read.to_string()),
        ("bytes_read", m.bytes_read.to_string()),
        (
            "writer_timeouts_ring_full",
            m.writer_timeouts_ring_full.to_string(),
        ),
        (
            "writer_timeouts_readers",
            m.writer_timeouts_readers.to_string(),
        ),
        ("reader_timeouts", m.reader_timeouts.to_string()),
        ("reader_races", m.reader_races.to_string()),
        ("validation_failures", m.validation_failures.to_string()),
        ("checksum_failures", m.checksum_failures.to_string()),
        ("checksums_verified", m.checksums_verified.to_string()),
        ("peak_readers", m.peak_readers.to_string()),
        ("recovery_actions", m.recovery_actions.to_string()),
        ("consumers_reclaimed", m.consumers_reclaimed.to_string()),
        ("overruns", m.overruns.to_string()),
        ("attaches", m.attaches.to_string()),
        ("detaches", m.detaches.to_string()),
        ("last_error_code", m.last_error_code.to_string()),
        ("last_error_time", wall(m.last_error_unix_ns)),
        ("commit_index", m.commit_index.to_string()),
        ("consumers", m.consumers.to_string()),
    ];
    let mut s = format!("block {block}\n");
    for (k, v) in rows {
        let _ = writeln!(s, "  {k:27} {v}");
    }
    s
}
