//! The trace model (gap buffer as page writes, derived pages) checked against real editing traces
//! and a naive `Vec<char>` reference, with plain vectors standing in for pages.
//!
//! Real traces come from `$SHARED_DATA_DIR/editing-traces`, else `../shared/data` beside the
//! workspace root. A missing folder skips those tests, unless `REQUIRE_SHARED_DATA=1`.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use mmsb_trace::derived::{
    self, decode_line_index, decode_word_count, line_index_recompute, line_starts, word_count,
    word_count_recompute,
};
use mmsb_trace::doc::{GapDoc, Header, VecPages, logical_text};
use mmsb_trace::parse::{self, Trace, TraceError};
use mmsb_trace::synth::{self, naive_apply};
use mmsb_trace::{Layout, apply_pure};

// ---- allocation counting (per thread, so parallel tests do not disturb each other) ----

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// ---- helpers ----

fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SHARED_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        // The workspace root is two levels up from this crate; the data sits beside the root.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    if dir.join("editing-traces").is_dir() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!(
            "REQUIRE_SHARED_DATA=1 but {} has no editing-traces/",
            dir.display()
        );
    }
    eprintln!(
        "skipped: no shared data at {} (set SHARED_DATA_DIR)",
        dir.display()
    );
    None
}

fn shared_traces() -> Vec<PathBuf> {
    let Some(dir) = data_dir() else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("editing-traces"))
        .expect("read editing-traces")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *.json.gz in editing-traces");
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn text_of(p: &VecPages) -> String {
    logical_text(&p.header, &p.doc).expect("pages decode to UTF-8 text")
}

/// Both derived pages recomputed from `p` equal the direct values of `text`.
fn check_derived(p: &VecPages, text: &str, layout: &Layout, what: &str) {
    let mut li = vec![0xA5; layout.line_index_size];
    line_index_recompute(&[&p.header, &p.doc], &mut li);
    assert_eq!(
        decode_line_index(&li).as_deref(),
        Some(&line_starts(text)[..]),
        "{what}: line index"
    );
    assert_eq!(
        li,
        derived::expected_line_index_page(text, li.len()),
        "{what}: line index page"
    );
    let mut wc = [0xA5; derived::WORD_COUNT_SIZE];
    word_count_recompute(&[&p.header, &p.doc], &mut wc);
    assert_eq!(
        decode_word_count(&wc),
        Some(word_count(text)),
        "{what}: word count"
    );
}

/// Applies `trace` with vector pages, comparing with the naive model after each transaction in
/// `check_at` (sorted indices), and checks the finished pages.
fn run_model(trace: &Trace, check_at: &[usize]) -> VecPages {
    let layout = Layout::for_stats(trace.stats());
    let mut pages = VecPages::new(layout.doc_capacity);
    let mut doc = GapDoc::create(&mut pages, trace.start_content(), layout.doc_capacity).unwrap();
    let mut naive: Option<Vec<char>> =
        (!check_at.is_empty()).then(|| trace.start_content().chars().collect());
    let mut next_check = check_at.iter().peekable();
    for i in 0..trace.txn_count() {
        doc.apply_txn(&mut pages, trace.txn(i))
            .unwrap_or_else(|e| panic!("txn {i}: {e}"));
        if let Some(n) = naive.as_mut() {
            for p in trace.txn(i) {
                assert!(naive_apply(n, p.pos, p.del, p.ins));
            }
            if next_check.peek() == Some(&&i) {
                next_check.next();
                let expect: String = n.iter().collect();
                let got = text_of(&pages);
                assert!(
                    got == expect,
                    "{}: document differs after txn {i}",
                    trace.name()
                );
                let h = Header::decode(&pages.header).unwrap();
                assert_eq!(h.char_len, n.len());
                assert_eq!(h.txns_applied, i as u64 + 1);
                check_derived(
                    &pages,
                    &expect,
                    &layout,
                    &format!("{} txn {i}", trace.name()),
                );
            }
        }
    }
    doc.finish(&mut pages).unwrap();
    check_final(trace, &pages, &layout);
    pages
}

fn check_final(trace: &Trace, pages: &VecPages, layout: &Layout) {
    let end = trace.end_content();
    assert!(
        text_of(pages) == end,
        "{}: final document differs from endContent",
        trace.name()
    );
    assert_eq!(&pages.doc[..end.len()], end.as_bytes());
    assert!(
        pages.doc[end.len()..].iter().all(|&b| b == 0),
        "{}: tail not zero",
        trace.name()
    );
    let h = Header::decode(&pages.header).unwrap();
    assert_eq!(h.byte_len, end.len());
    assert_eq!(h.char_len, end.chars().count());
    assert_eq!((h.gap_start, h.gap_end), (end.len(), layout.doc_capacity));
    assert_eq!(h.txns_applied, trace.txn_count() as u64);
    check_derived(pages, end, layout, trace.name());
}

fn check_points(rng: &mut Rng, txns: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|_| rng.below(txns)).collect();
    v.push(txns - 1);
    v.sort_unstable();
    v.dedup();
    v
}

// ---- tests ----

#[test]
fn shared_traces_reach_end_content() {
    for path in shared_traces() {
        let trace = parse::load(&path).unwrap();
        let st = trace.stats();
        assert!(
            st.all_ascii,
            "{}: the shared traces are the ASCII-only variants",
            path.display()
        );
        // ASCII: the byte bound is exact, so the page is as small as it can be (rounded to 64).
        assert!(st.max_bytes_bound <= st.start_bytes + st.inserted_bytes as usize);
        let mut rng = Rng(0xC0FF_EE00 ^ trace.txn_count() as u64);
        // The naive reference is quadratic-ish: intermediate checks on the small traces only.
        let checks = if trace.patch_count() < 100_000 {
            check_points(&mut rng, trace.txn_count(), 50)
        } else {
            vec![]
        };
        let before = allocs();
        let t = std::time::Instant::now();
        run_model(&trace, &checks);
        eprintln!(
            "{}: {} txns, {} patches, final {} bytes, {} intermediate checks, {:?}",
            path.display(),
            trace.txn_count(),
            trace.patch_count(),
            trace.end_content().len(),
            checks.len(),
            t.elapsed()
        );
        if checks.is_empty() {
            // Steady state allocates nothing: only the pages, the doc's scratch growth (doubling)
            // and the final checks' strings and vectors.
            let n = allocs() - before;
            assert!(
                n < 64,
                "{}: {n} allocations for {} txns",
                path.display(),
                trace.txn_count()
            );
        }
    }
}

#[test]
fn shared_traces_through_apply_pure_with_waves() {
    for path in shared_traces() {
        let trace = parse::load(&path).unwrap();
        let run = apply_pure(&trace, Some(5000)).unwrap();
        check_final(&trace, &run.pages, &run.layout);
        assert_eq!(run.waves, trace.txn_count() as u64 / 5000 + 1);
        let end = trace.end_content();
        assert_eq!(
            run.line_index,
            derived::expected_line_index_page(end, run.layout.line_index_size)
        );
        assert_eq!(run.word_count, derived::expected_word_count_page(end));
    }
}

#[test]
fn embedded_default_trace_matches_naive_everywhere() {
    let trace = synth::default_trace();
    assert!(!trace.stats().all_ascii);
    let all: Vec<usize> = (0..trace.txn_count())
        .step_by(3)
        .chain([trace.txn_count() - 1])
        .collect();
    run_model(&trace, &all);
    let run = apply_pure(&trace, Some(100)).unwrap();
    check_final(&trace, &run.pages, &run.layout);
}

#[test]
fn other_synthetic_seeds() {
    for seed in [1u64, 2, 3, 0xDEAD_BEEF] {
        let trace = synth::synthetic_trace("seeded", seed, 1500).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let checks = check_points(&mut rng, trace.txn_count(), 50);
        run_model(&trace, &checks);
    }
}

/// Random patches at random positions over multi-byte text: long gap moves across emoji, CJK and
/// combining marks in both directions, deletions that straddle the gap and split grapheme
/// clusters (positions count chars, not graphemes).
#[test]
fn random_multibyte_patches() {
    let pieces = [
        "a",
        "é",
        "日本",
        "😀",
        "e\u{301}",
        "👨\u{200D}👩\u{200D}👧",
        " ",
        "\n",
        "\u{3000}",
        "xyz",
        "🇫🇷",
    ];
    for seed in 1..=6u64 {
        let mut rng = Rng(seed * 0x2545_F491_4F6C_DD1D);
        let mut naive: Vec<char> = "start 日本語 😀\n".chars().collect();
        let start: String = naive.iter().collect();
        let mut txns = Vec::new();
        for _ in 0..400 {
            let mut txn = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let pos = rng.below(naive.len() + 1);
                let del = if rng.below(3) == 0 {
                    0
                } else {
                    rng.below(naive.len() - pos + 1).min(7)
                };
                let mut ins = String::new();
                for _ in 0..rng.below(4) {
                    ins.push_str(pieces[rng.below(pieces.len())]);
                }
                assert!(naive_apply(&mut naive, pos, del, &ins));
                txn.push((pos, del, ins));
            }
            txns.push(txn);
        }
        let end: String = naive.iter().collect();
        let trace = Trace::from_txns("random", &start, &end, &txns).unwrap();
        let all: Vec<usize> = (0..trace.txn_count()).collect();
        run_model(&trace, &all);
    }
}

#[test]
fn non_ascii_start_and_empty_edges() {
    // Delete everything, then rebuild; an empty trace; a trace that ends empty.
    let t = Trace::from_txns(
        "edges",
        "日本語😀",
        "ab",
        &[vec![(0, 4, "")], vec![(0, 0, "b")], vec![(0, 0, "a")]],
    )
    .unwrap();
    run_model(&t, &[0, 1, 2]);
    let empty = Trace::from_txns::<&str>("empty", "", "", &[]).unwrap();
    run_model(&empty, &[]);
    let gone = Trace::from_txns("gone", "é\n", "", &[vec![(1, 1, ""), (0, 1, "")]]).unwrap();
    run_model(&gone, &[0]);
}

#[test]
fn malformed_input_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let gz = |s: &str| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(s.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let named = |e: &TraceError, p: &Path| {
        assert!(
            e.to_string().contains(&p.display().to_string()),
            "error does not name the file: {e}"
        );
    };

    let missing = dir.path().join("missing.json.gz");
    let e = parse::load(&missing).unwrap_err();
    assert!(matches!(e, TraceError::Io { .. }), "{e}");
    named(&e, &missing);

    let p = write("notgz.json.gz", b"{\"plain\": true}");
    let e = parse::load(&p).unwrap_err();
    assert!(matches!(e, TraceError::Gzip { .. }), "{e}");
    named(&e, &p);

    let mut truncated = gz(r#"{"endContent":"","txns":[]}"#);
    truncated.truncate(truncated.len() / 2);
    let p = write("truncated.json.gz", &truncated);
    assert!(matches!(parse::load(&p), Err(TraceError::Gzip { .. })));

    for (i, bad) in [
        "{",
        "[]",
        r#"{"txns":[]}"#,
        r#"{"endContent":"","txns":[{"patches":[[0,0]]}]}"#,
        r#"{"endContent":"","txns":[{"patches":[["0",0,""]]}]}"#,
        r#"{"endContent":"","txns":[{"patches":[[0.5,0,""]]}]}"#,
        r#"{"endContent":"","txns":[{"time":1}]}"#,
    ]
    .iter()
    .enumerate()
    {
        let p = write(&format!("bad{i}.json.gz"), &gz(bad));
        let e = parse::load(&p).unwrap_err();
        assert!(matches!(e, TraceError::Json { .. }), "{bad}: {e}");
        named(&e, &p);
    }

    // Invalid UTF-8 inside the JSON string.
    let mut raw = br#"{"endContent":"","txns":[{"patches":[[0,0,"X"]]}]}"#.to_vec();
    let x = raw.iter().position(|&b| b == b'X').unwrap();
    raw[x] = 0xFF;
    let p = write("utf8.json.gz", &gz_bytes(&raw));
    assert!(matches!(parse::load(&p), Err(TraceError::Json { .. })));

    // Out of range: position beyond the end (in chars, not bytes: "é" is one char).
    let p = write(
        "oob.json.gz",
        &gz(
            r#"{"startContent":"é","endContent":"é","txns":[{"patches":[[0,0,""]]},{"patches":[[0,0,"a"],[3,0,"b"]]}]}"#,
        ),
    );
    let e = parse::load(&p).unwrap_err();
    assert!(
        matches!(
            e,
            TraceError::PatchOutOfRange {
                txn: 1,
                patch: 1,
                pos: 3,
                del: 0,
                len: 2,
                ..
            }
        ),
        "{e}"
    );
    named(&e, &p);

    let p = write(
        "mismatch.json.gz",
        &gz(r#"{"startContent":"ab","endContent":"abc","txns":[]}"#),
    );
    assert!(matches!(
        parse::load(&p),
        Err(TraceError::EndLengthMismatch {
            got: 2,
            expected: 3,
            ..
        })
    ));

    // A plain (uncompressed) JSON file not named .gz is accepted.
    let p = write(
        "plain.json",
        r#"{"endContent":"hé","txns":[{"patches":[[0,0,"hé"]]}]}"#.as_bytes(),
    );
    let t = parse::load(&p).unwrap();
    assert_eq!(t.end_content(), "hé");
    run_model(&t, &[0]);
}

fn gz_bytes(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn content_mismatch_is_detected_by_the_model_not_the_parser() {
    // Same lengths, different text: the parser cannot know; the final check catches it.
    let t = Trace::from_txns("liar", "", "xy", &[vec![(0, 0, "ab")]]).unwrap();
    let run = apply_pure(&t, None).unwrap();
    assert_ne!(text_of(&run.pages), t.end_content());
}

// ---- through a live MMSB bus ----

use mmsb_trace::{RunError, RunOptions, run, run_trace, verify};

#[test]
fn mmsb_run_and_verify_embedded_trace() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let opts = RunOptions {
        log_dir: Some(log.clone()),
        wave_every: 37,
        checkpoint_every: Some(1000),
        ..RunOptions::default()
    };
    let report = run(&opts).unwrap();
    let trace = synth::default_trace();
    assert_eq!(report.txns, trace.txn_count());
    assert_eq!(report.doc_bytes, trace.end_content().len());
    assert_eq!(report.word_count, word_count(trace.end_content()));
    let mid = report
        .mid_checkpoint
        .as_ref()
        .expect("mid-trace checkpoint");
    assert_eq!(mid.txns_applied, trace.txn_count() / 2);
    assert!(report.checkpoints.len() >= 4, "{:?}", report.checkpoints);
    assert!(report.stats.propagation_deltas > 0);
    let v = verify(&trace, &report).unwrap();
    assert!(v.checks.len() >= 4, "{:?}", v.checks);
    // The directory is not empty any more: a second run refuses it.
    assert!(matches!(run(&opts), Err(RunError::LogDirNotEmpty(_))));
    // A tampered log is caught: flip the last document byte through a fresh bus and verify.
    let mut bus = mmsb::Mmsb::start(mmsb::Config::new(&log)).unwrap();
    let end = trace.end_content().len();
    bus.write_range(report.pages.document, end - 1, b"#")
        .unwrap();
    bus.stop().unwrap();
    let e = verify(&trace, &report).unwrap_err();
    assert!(matches!(e, RunError::Verify(_)), "{e}");
}

#[test]
fn mmsb_run_and_verify_shared_trace() {
    let Some(dir) = data_dir() else { return };
    let trace = parse::load(&dir.join("editing-traces/friendsforever_flat.json.gz")).unwrap();
    let report = run_trace(&trace, &RunOptions::default()).unwrap();
    verify(&trace, &report).unwrap();
    assert_eq!(report.line_starts, line_starts(trace.end_content()).len());
    assert!(report.log_file_bytes > 0);
}
