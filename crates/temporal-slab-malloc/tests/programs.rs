//! Real programs under `LD_PRELOAD=libtslab_malloc.so`: their output must be byte-identical to
//! a run without it, and the stats file the library writes at exit must show that the slab
//! served them (so a preload that silently passed everything to glibc fails).
//!
//! - `python3` round-trips every file of `$SHARED_DATA_DIR/json` through its `json` module,
//!   once with its own small-object allocator and once with `PYTHONMALLOC=malloc` (every
//!   object through `malloc`);
//! - `sort` sorts 200,000 random lines (two threads);
//! - `gzip -dc` decompresses each editing trace of `$SHARED_DATA_DIR/editing-traces`.
//!
//! Shared data missing skips the python and gzip tests, unless `REQUIRE_SHARED_DATA=1`.

mod support;

use std::io::Write;
use std::process::Command;

use support::{files, python3, same_with_and_without, shared_data};

/// Loads each file, dumps it with sorted keys, prints name, length and a SHA-256 of the dump.
const ROUND_TRIP: &str = r#"
import hashlib, json, os, sys
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        data = json.load(f)
    text = json.dumps(data, sort_keys=True)
    again = json.loads(text)
    assert again == data, path
    print(os.path.basename(path), len(text), hashlib.sha256(text.encode()).hexdigest())
"#;

fn python_round_trip(pymalloc: bool, what: &str) {
    let Some(json_dir) = shared_data("json") else {
        return;
    };
    let Some(python) = python3() else {
        return;
    };
    let inputs = files(&json_dir, ".json");
    let dir = tempfile::tempdir().unwrap();
    let stats = same_with_and_without(
        || {
            let mut cmd = Command::new(&python);
            cmd.arg("-c").arg(ROUND_TRIP).args(&inputs);
            if !pymalloc {
                cmd.env("PYTHONMALLOC", "malloc");
            }
            cmd
        },
        dir.path(),
        what,
    );
    stats.assert_served(what);
}

#[test]
fn python_json_round_trip_is_identical_under_the_preload() {
    python_round_trip(true, "python-json");
}

#[test]
fn python_json_round_trip_with_every_object_through_malloc_is_identical_under_the_preload() {
    python_round_trip(false, "python-json-malloc");
}

#[test]
fn sort_of_200k_random_lines_is_identical_under_the_preload() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lines.txt");
    let mut lines = Vec::with_capacity(200_000);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Lengths from 1 to 120 bytes: most lines are slab objects, some are not.
        let len = 1 + (x % 120) as usize;
        let line: String = (0..len)
            .map(|k| char::from(b'!' + ((x >> (k % 58)) as u8 ^ k as u8) % 90))
            .collect();
        lines.push(format!("{line}{i}"));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
    let stats = same_with_and_without(
        || {
            let mut cmd = Command::new("sort");
            cmd.env("LC_ALL", "C").arg("--parallel=2").arg(&input);
            cmd
        },
        dir.path(),
        "sort",
    );
    stats.assert_served("sort");
    // And the plain run is right: the comparison above is against a correct output.
    lines.sort();
    let mut expected = lines.join("\n").into_bytes();
    expected.push(b'\n');
    let plain = std::fs::read(dir.path().join("sort.plain.stdout")).unwrap();
    assert!(plain == expected, "sort itself disagrees with Rust's sort");
}

#[test]
fn gzip_decompression_of_the_editing_traces_is_identical_under_the_preload() {
    let Some(traces) = shared_data("editing-traces") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, trace) in files(&traces, ".json.gz").iter().enumerate() {
        let what = format!("gzip-{i}");
        let stats = same_with_and_without(
            || {
                let mut cmd = Command::new("gzip");
                cmd.arg("-dc").arg(trace);
                cmd
            },
            dir.path(),
            &what,
        );
        // gzip's buffers are static, but its start-up (locale, stdio) allocates a few
        // hundred small blocks.
        stats.assert_served(&what);
    }
}
