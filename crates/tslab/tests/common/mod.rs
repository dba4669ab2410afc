//! Helpers shared by the tslab integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use temporal_slab::SlabAllocator;
use tslab::Snapshot;

/// A label with every character class the JSON and exposition escapers must handle.
pub const NASTY_LABEL: &str = "q\"b\\s\nn\tt\u{1}é";

/// A fresh directory under the system temp dir, unique to this process and `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tslab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A real allocator after a small workload: a closed labeled epoch with live objects, an
/// open epoch with refcount 2 and the label [`NASTY_LABEL`], and a third with a few objects.
pub fn workload() -> SlabAllocator {
    let alloc = SlabAllocator::new().expect("reserve");
    let a = alloc.epoch_current();
    alloc.set_label(a, "requests").expect("label");
    let handles: Vec<_> = (0..20_000)
        .map(|i| alloc.alloc(64 + (i % 8) * 90, a).expect("alloc"))
        .collect();
    for h in handles.iter().step_by(2) {
        alloc.free(*h).expect("free");
    }
    let b = alloc.epoch_advance().expect("advance");
    alloc.set_label(b, NASTY_LABEL).expect("label");
    alloc.inc_refcount(b).expect("ref");
    alloc.inc_refcount(b).expect("ref");
    for _ in 0..100 {
        alloc.alloc(200, b).expect("alloc");
    }
    alloc.epoch_close(a).expect("close");
    let c = alloc.epoch_advance().expect("advance");
    for _ in 0..10 {
        alloc.alloc(64, c).expect("alloc");
    }
    alloc
}

/// [`workload`]'s snapshot.
pub fn snapshot() -> Snapshot {
    Snapshot::of(&workload())
}

/// The path of the `tslab` binary Cargo built for these tests.
pub fn tslab() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tslab"))
}
