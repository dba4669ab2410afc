//! The write-ahead log's writer and reader: appends read back, invalid bodies refused,
//! segments roll, durability modes, drop and sync, no allocation in steady state, reading a live
//! log, write errors stop the log. Recovery is in `tlog_recovery.rs`, the lock in `tlog_lock.rs`,
//! the frame codec in `frame.rs`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use mmsb::frame::{self, BodyRef, FrameBody};
use mmsb::tlog::{self, Durability, LogReader, SEGMENT_HEADER_LEN, TLog};
use mmsb::{Body, Error, Location, Lsn, Mask, PageId, Source};

mod tlog_support;
use tlog_support::*;

// ---------------------------------------------------------------------------------------------
// Allocation counting (per thread, so tests running in parallel do not disturb each other)
// ---------------------------------------------------------------------------------------------

struct CountingAlloc;

thread_local! {
    static ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_alloc() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(std::cell::Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments, so `System`'s
// guarantees hold; the only addition is a thread-local counter (const-initialised, no
// destructor, never allocates).
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through here) with
        // `layout`; the caller upholds the rest of the contract.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------------
// The log
// ---------------------------------------------------------------------------------------------

#[test]
fn new_log_appends_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let frames = write_sample(dir.path());
    for (i, ((f, off, len), (commit, body))) in frames.iter().zip(sample_bodies()).enumerate() {
        assert_eq!(f.lsn, Lsn(i as u64 + 1));
        assert_eq!(f.body, body);
        assert_eq!(f.commit, commit || body == FrameBody::Commit);
        assert_eq!(f.page, PageId(1));
        assert_eq!(f.source, Source::Propagation);
        assert_eq!(*len as usize, f.encoded_len());
        if i == 0 {
            assert_eq!(*off, SEGMENT_HEADER_LEN as u64);
        }
    }
    // Timestamps never decrease.
    assert!(
        frames
            .windows(2)
            .all(|w| w[0].0.timestamp_ns <= w[1].0.timestamp_ns)
    );
    // Reopen: continues after the last LSN.
    let (mut log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(frames.len() as u64));
    assert_eq!(rep.frames, frames.len() as u64);
    assert_eq!(rep.segments, 1);
    assert!(rep.truncated.is_none());
    assert_eq!(log.next_lsn(), Lsn(frames.len() as u64 + 1));
    let a = log
        .append(PageId(1), 2, Source::User, true, BodyRef::Commit)
        .unwrap();
    assert_eq!(a.lsn, Lsn(frames.len() as u64 + 1));
    assert_eq!(log.last_lsn(), a.lsn);
    assert_eq!(log.last_committed_lsn(), a.lsn);
    log.close().unwrap();
    assert!(tlog::verify(dir.path()).unwrap().is_ok());
}

#[test]
fn invalid_bodies_are_refused_without_using_an_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    let bad_sparse = Body::Sparse {
        mask: Mask::from_ranges(&[(0, 4)]),
        payload: vec![1, 2, 3],
    };
    assert!(matches!(
        log.append(
            PageId(1),
            1,
            Source::User,
            true,
            BodyRef::Delta(&bad_sparse)
        ),
        Err(Error::MaskPayloadMismatch {
            mask_bytes: 4,
            payload_bytes: 3
        })
    ));
    assert!(matches!(
        log.append(
            PageId(1),
            1,
            Source::User,
            true,
            BodyRef::Delta(&Body::Dense(Vec::new()))
        ),
        Err(Error::InvalidPageSize { .. })
    ));
    assert!(matches!(
        log.append(
            PageId(1),
            0,
            Source::User,
            true,
            BodyRef::CreatePage {
                size: 0,
                location: Location::Cpu
            }
        ),
        Err(Error::InvalidPageSize { .. })
    ));
    let long = "x".repeat(70_000);
    assert!(matches!(
        log.append(
            PageId(1),
            0,
            Source::User,
            true,
            BodyRef::Metadata {
                key: &long,
                value: None
            }
        ),
        Err(Error::MetadataKeyTooLong { len: 70_000, .. })
    ));
    assert_eq!(log.next_lsn(), Lsn(1));
    let a = log.append(
        PageId(1),
        0,
        Source::User,
        true,
        BodyRef::CreatePage {
            size: 8,
            location: Location::Cpu,
        },
    );
    assert_eq!(a.unwrap().lsn, Lsn(1));
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), Durability::FsyncEvery(50));
    c.segment_bytes = 4096;
    c.buffer_bytes = 1000;
    let mut expected = Vec::new();
    {
        let (mut log, _) = TLog::open(c.clone()).unwrap();
        for i in 0..300u64 {
            // Batches of three: segments must only be cut after a commit.
            let commit = i % 3 == 2;
            let body = sparse(&[(i as usize % 500, 1 + i as usize % 40)], i as u8);
            let a = log
                .append(
                    PageId(i % 7 + 1),
                    i,
                    Source::User,
                    commit,
                    BodyRef::Delta(&body),
                )
                .unwrap();
            assert_eq!(a.lsn, Lsn(i + 1));
            expected.push(body);
        }
        let s = log.stats();
        assert!(s.segments >= 5, "{s:?}");
        assert_eq!(s.segments as u64, s.segments_created);
        assert_eq!(s.frames, 300);
        log.close().unwrap();
    }
    let segs = tlog::list_segments(dir.path()).unwrap();
    assert_eq!(segs[0].0, Lsn(1));
    let v = tlog::verify(dir.path()).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(v.frames, 300);
    assert_eq!(v.last_lsn, Lsn(300));
    for (s, next) in v.segments.iter().zip(v.segments.iter().skip(1)) {
        assert_eq!(s.last_frame.unwrap().0 + 1, next.first_lsn.0, "consecutive");
        assert_eq!(s.last_frame.unwrap().0 % 3, 0, "segments end at a commit");
        assert!(s.bytes <= 4096 + 200);
    }
    let r = LogReader::open(dir.path()).unwrap();
    for from in [0u64, 1, 2, 100, 151, 299, 300, 301, 1000] {
        let got: Vec<_> = r
            .frames_from(Lsn(from))
            .unwrap()
            .map(|f| f.unwrap())
            .collect();
        let first = from.max(1);
        assert_eq!(
            got.len() as u64,
            301u64.saturating_sub(first),
            "from {from}"
        );
        for (j, f) in got.iter().enumerate() {
            let lsn = first + j as u64;
            assert_eq!(f.frame.lsn, Lsn(lsn));
            assert_eq!(
                f.frame.body,
                FrameBody::Delta(expected[lsn as usize - 1].clone())
            );
        }
        let files: std::collections::BTreeSet<_> = got.iter().map(|f| f.file.clone()).collect();
        if from <= 100 {
            assert!(files.len() >= 3, "from {from} crosses segments");
        }
    }
    // Reading one segment file on its own.
    let one = LogReader::open(&segs[1].1).unwrap();
    let fs1: Vec<_> = one
        .frames()
        .unwrap()
        .map(|f| f.unwrap().frame.lsn)
        .collect();
    assert_eq!(fs1.first(), Some(&segs[1].0));
    assert_eq!(fs1.last().unwrap().0 + 1, segs[2].0.0);

    // Pruning: whole segments below the LSN, never the active one.
    let (mut log, rep) = TLog::open(c).unwrap();
    assert_eq!(rep.last_lsn, Lsn(300));
    assert_eq!(log.prune_before(Lsn(1)).unwrap(), 0);
    let cut = segs[2].0;
    assert_eq!(log.prune_before(cut).unwrap(), 2);
    assert_eq!(log.segments()[0].0, cut);
    let left = log.segments().len();
    assert_eq!(
        log.prune_before(Lsn(u64::MAX)).unwrap(),
        left - 1,
        "all but the active segment"
    );
    assert_eq!(log.segments().len(), 1);
    let a = log
        .append(PageId(1), 0, Source::User, true, BodyRef::Commit)
        .unwrap();
    assert_eq!(a.lsn, Lsn(301));
    log.close().unwrap();
    let (log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(301));
    drop(log);
    let all: Vec<_> = LogReader::open(dir.path())
        .unwrap()
        .frames()
        .unwrap()
        .map(|f| f.unwrap().frame.lsn)
        .collect();
    assert_eq!(all.last(), Some(&Lsn(301)));
    assert_eq!(
        all.first(),
        Some(&tlog::list_segments(dir.path()).unwrap()[0].0)
    );
}

#[test]
fn durability_modes_produce_readable_logs() {
    let modes = [
        Durability::Buffered,
        Durability::Flush,
        Durability::FsyncEvery(1),
        Durability::FsyncEvery(4),
        Durability::GroupCommit(Duration::from_millis(2)),
    ];
    for mode in modes {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = TLog::open(cfg(dir.path(), mode)).unwrap();
        assert_eq!(log.durability(), mode);
        let base = log.stats();
        for i in 0..40u64 {
            log.append(
                PageId(1),
                i,
                Source::User,
                i % 2 == 1,
                BodyRef::Delta(&sparse(&[(i as usize, 8)], 3)),
            )
            .unwrap();
        }
        // 20 commits.
        let s = log.stats();
        match mode {
            Durability::Buffered => {
                assert_eq!(s.writes, 0, "nothing written before the buffer fills");
                assert_eq!(
                    LogReader::open(dir.path())
                        .unwrap()
                        .frames()
                        .unwrap()
                        .count(),
                    0
                );
            }
            Durability::Flush => {
                assert_eq!(s.writes, 20);
                assert_eq!(s.fsyncs, base.fsyncs);
            }
            Durability::FsyncEvery(n) => {
                assert_eq!(s.fsyncs - base.fsyncs, 20 / u64::from(n), "{mode:?}");
            }
            Durability::GroupCommit(_) => {
                let t = Instant::now();
                while log.durable_lsn() < Lsn(40) {
                    assert!(
                        t.elapsed() < Duration::from_secs(10),
                        "group commit never synced"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                let s = log.stats();
                assert!(
                    s.fsyncs > base.fsyncs && s.fsyncs - base.fsyncs <= 20,
                    "{s:?}"
                );
            }
        }
        if mode != Durability::Buffered {
            // Committed frames are in the file already.
            assert_eq!(
                LogReader::open(dir.path())
                    .unwrap()
                    .frames()
                    .unwrap()
                    .count(),
                40,
                "{mode:?}"
            );
        }
        log.close().unwrap();
        let got = read_all(dir.path());
        assert_eq!(got.len(), 40, "{mode:?}");
        assert!(tlog::verify(dir.path()).unwrap().is_ok());
    }
}

#[test]
fn drop_flushes_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = TLog::open(cfg(dir.path(), Durability::Buffered)).unwrap();
        for _ in 0..10 {
            log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
                .unwrap();
        }
    }
    assert_eq!(read_all(dir.path()).len(), 10);
    let (log, rep) = TLog::open(cfg(dir.path(), Durability::Buffered)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(10));
    assert!(rep.truncated.is_none());
    drop(log);
}

#[test]
fn sync_makes_everything_durable_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = TLog::open(cfg(dir.path(), Durability::Buffered)).unwrap();
    let before = log.stats().fsyncs;
    log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
        .unwrap();
    assert_eq!(log.durable_lsn(), Lsn::ZERO);
    log.sync().unwrap();
    assert_eq!(log.durable_lsn(), Lsn(1));
    assert_eq!(log.stats().fsyncs, before + 1);
    assert_eq!(log.stats().bytes, frame::FRAME_HEADER_LEN as u64);
}

#[test]
fn appending_does_not_allocate_in_steady_state() {
    let small = sparse(&[(1000, 16)], 1);
    let packed = sparse(&(0..64).map(|i| (i * 2, 1)).collect::<Vec<_>>(), 2);
    let dense = Body::Dense(vec![0x5a; 1024]);
    let before = allocs();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert_eq!(allocs() - before, 1, "the counter counts");
    // The encoder, into a vector with capacity.
    let mut buf = Vec::with_capacity(1 << 16);
    let before = allocs();
    for body in [&small, &packed, &dense] {
        frame::encode_into(
            &mut buf,
            Lsn(1),
            PageId(1),
            1,
            1,
            Source::User,
            true,
            BodyRef::Delta(body),
        );
    }
    frame::encode_into(
        &mut buf,
        Lsn(1),
        PageId(1),
        1,
        1,
        Source::User,
        true,
        BodyRef::Metadata {
            key: "k",
            value: Some(b"v"),
        },
    );
    assert_eq!(allocs() - before, 0, "encode_into allocated");
    // The log, with buffer write-outs (1 KiB frames fill the 64 KiB buffer often).
    for mode in [
        Durability::Buffered,
        Durability::Flush,
        Durability::GroupCommit(Duration::from_millis(1)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), mode);
        c.buffer_bytes = 64 << 10;
        let (mut log, _) = TLog::open(c).unwrap();
        for i in 0..10 {
            log.append(PageId(1), i, Source::User, true, BodyRef::Delta(&small))
                .unwrap();
        }
        let before = allocs();
        for i in 0..3000u64 {
            let body = [&small, &packed, &dense][i as usize % 3];
            log.append(PageId(1), i, Source::User, i % 2 == 0, BodyRef::Delta(body))
                .unwrap();
        }
        assert_eq!(allocs() - before, 0, "{mode:?}: append allocated");
        assert!(log.stats().writes > 10);
        log.close().unwrap();
    }
}

#[test]
fn a_live_log_can_be_read_while_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), Durability::Flush);
    c.segment_bytes = 16 << 10;
    let (mut log, _) = TLog::open(c).unwrap();
    let path = dir.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut passes = 0u64;
        let mut last = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) || passes == 0 {
            let r = LogReader::open(&path).unwrap();
            let mut n = 0u64;
            for item in r.frames().unwrap() {
                let f = item.unwrap_or_else(|e| panic!("pass {passes}: {e}"));
                n += 1;
                assert_eq!(f.frame.lsn, Lsn(n));
                assert!(f.frame.commit || f.frame.lsn.0 % 4 != 0);
            }
            // Only whole batches are seen (batches of 4 frames).
            assert_eq!(n % 4, 0, "pass {passes}: saw half a batch");
            assert!(n >= last, "the log shrank");
            last = n;
            passes += 1;
        }
        (passes, last)
    });
    for i in 1..=20_000u64 {
        let body = sparse(&[(i as usize % 300, 1 + i as usize % 20)], i as u8);
        log.append(
            PageId(1),
            i,
            Source::User,
            i % 4 == 0,
            BodyRef::Delta(&body),
        )
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (passes, _) = reader.join().unwrap();
    assert!(passes > 0);
    log.close().unwrap();
    assert_eq!(read_all(dir.path()).len(), 20_000);
}

/// In a child process (this test binary run again) whose file size limit is 20 000 bytes:
/// appends until `write(2)` fails with EFBIG. The error must be returned, later calls must
/// refuse, and reopening must recover to the last acknowledged commit.
#[test]
fn write_errors_are_returned_and_stop_the_log() {
    const CHILD: &str = "MMSB_TLOG_EFBIG_CHILD";
    if let Some(dir) = std::env::var_os(CHILD) {
        efbig_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "write_errors_are_returned_and_stop_the_log",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let acked: u64 = fs::read_to_string(dir.path().join("acked"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(acked > 100, "{acked}");
    let (mut log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(acked));
    let t = rep.truncated.expect("the partial write is a torn tail");
    assert!(t.bytes_dropped > 0 && t.bytes_dropped < 144, "{t:?}");
    assert_eq!(
        log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
            .unwrap()
            .lsn,
        Lsn(acked + 1)
    );
    log.close().unwrap();
    assert!(tlog::verify(dir.path()).unwrap().is_ok());
}

fn efbig_child(dir: &Path) {
    // SAFETY: plain libc calls with valid arguments: ignoring SIGXFSZ (so that exceeding the
    // limit makes write(2) fail with EFBIG instead of killing the process) and lowering this
    // process's soft file size limit (the hard limit is kept).
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = 20_000;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let (mut log, _) = TLog::open(cfg(dir, Durability::Flush)).unwrap();
    let body = Body::Dense(vec![7; 100]);
    let mut acked = 0;
    let err = loop {
        match log.append(PageId(1), 0, Source::User, true, BodyRef::Delta(&body)) {
            Ok(a) => acked = a.lsn.0,
            Err(e) => break e,
        }
        assert!(acked < 1000, "the file size limit did not apply");
    };
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(matches!(
        log.append(PageId(1), 0, Source::User, true, BodyRef::Commit),
        Err(Error::LogFailed { .. })
    ));
    assert!(matches!(log.sync(), Err(Error::LogFailed { .. })));
    assert!(matches!(log.close(), Err(Error::LogFailed { .. })));
    // Report the last acknowledged LSN through a small file (well below the limit).
    fs::write(dir.join("acked"), acked.to_string()).unwrap();
}

/// Run with `cargo test --release -p mmsb --test tlog -- --ignored --nocapture append_throughput`.
#[test]
#[ignore = "timing; run in release"]
fn append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let small = sparse(&[(1000, 16)], 1);
    let dense = Body::Dense(vec![0x5a; 1024]);
    // Encoder alone.
    let mut buf = Vec::with_capacity(1 << 20);
    for (name, body, n) in [
        ("16-byte sparse", &small, 2_000_000u64),
        ("1 KiB dense", &dense, 500_000),
    ] {
        let t = Instant::now();
        for i in 0..n {
            if buf.len() > (1 << 20) - 2048 {
                buf.clear();
            }
            frame::encode_into(
                &mut buf,
                Lsn(i),
                PageId(1),
                i,
                i,
                Source::User,
                true,
                BodyRef::Delta(body),
            );
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("encode_into {name}: {ns:.1} ns/frame");
    }
    // The log, Buffered.
    for (name, body, n) in [
        ("16-byte sparse", &small, 1_000_000u64),
        ("1 KiB dense", &dense, 200_000),
    ] {
        let d = dir.path().join(name.replace(' ', "_"));
        let (mut log, _) = TLog::open(cfg(&d, Durability::Buffered)).unwrap();
        let t = Instant::now();
        for i in 0..n {
            log.append(PageId(1), i, Source::User, true, BodyRef::Delta(body))
                .unwrap();
        }
        log.flush().unwrap();
        let el = t.elapsed();
        let s = log.stats();
        log.close().unwrap();
        println!(
            "TLog::append Buffered {name}: {:.1} ns/append, {:.2} M frames/s, {:.0} MB/s ({} segments, {} writes)",
            el.as_nanos() as f64 / n as f64,
            n as f64 / el.as_secs_f64() / 1e6,
            s.bytes as f64 / el.as_secs_f64() / 1e6,
            s.segments,
            s.writes
        );
        let t = Instant::now();
        let mut count = 0;
        for f in LogReader::open(&d).unwrap().frames().unwrap() {
            f.unwrap();
            count += 1;
        }
        assert_eq!(count as u64, n);
        println!(
            "LogReader {name}: {:.1} ns/frame",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
}
