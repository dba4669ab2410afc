//! Frame codec and write-ahead log: round trips, bit flips, torn tails, uncommitted batches,
//! middle corruption, locking, segments, verify, durability modes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mmsb::frame::{self, BodyRef, DecodeError, Frame, FrameBody, FrameKind, MaskEncoding};
use mmsb::tlog::{self, Durability, LogConfig, LogReader, SEGMENT_HEADER_LEN, TLog};
use mmsb::{Body, Error, Location, Lsn, Mask, PageId, Source};
use proptest::prelude::*;

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
// Helpers
// ---------------------------------------------------------------------------------------------

/// Replaces the contents of `path` in place (no truncation to zero first: ext4 flushes a file
/// that was truncated to zero when it is closed, which makes thousands of rewrites slow).
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
}

fn cfg(dir: &Path, d: Durability) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.durability = d;
    c
}

fn sparse(ranges: &[(usize, usize)], seed: u8) -> Body {
    let mask = Mask::from_ranges(ranges);
    let payload = (0..mask.count())
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    Body::Sparse { mask, payload }
}

fn varint_len(v: u64) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// Size of the two mask encodings of `mask`, computed independently of the encoder.
fn mask_sizes(mask: &Mask) -> (usize, usize) {
    let packed = 8 + 8 * mask.words().len();
    let runs = mask.runs();
    let mut rle = varint_len(runs.len() as u64);
    let mut prev = 0;
    for (o, l) in runs {
        rle += varint_len((o - prev) as u64) + varint_len(l as u64);
        prev = o + l;
    }
    (packed, rle)
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode(&mut v);
    v
}

fn frame(lsn: u64, commit: bool, body: FrameBody) -> Frame {
    Frame {
        lsn: Lsn(lsn),
        page: PageId(5),
        epoch: lsn * 3,
        timestamp_ns: 1_700_000_000_000_000_000 + lsn,
        source: Source::User,
        commit,
        body,
    }
}

/// The only segment file of `dir`.
fn only_segment(dir: &Path) -> PathBuf {
    let segs = tlog::list_segments(dir).unwrap();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].1.clone()
}

/// Frames of several kinds, in a log: (frame as read back, offset, len).
fn sample_bodies() -> Vec<(bool, FrameBody)> {
    vec![
        (
            true,
            FrameBody::CreatePage {
                size: 4096,
                location: Location::Cpu,
            },
        ),
        (false, FrameBody::Delta(sparse(&[(100, 16)], 1))),
        (
            false,
            FrameBody::Metadata {
                key: "name".into(),
                value: Some(b"temperature".to_vec()),
            },
        ),
        (true, FrameBody::Commit),
        (
            false,
            FrameBody::Delta(sparse(
                &[(0, 1), (2, 1), (4, 1), (6, 1), (8, 1), (10, 1), (12, 1)],
                2,
            )),
        ),
        (true, FrameBody::Delta(Body::Dense((0..24).collect()))),
        (
            true,
            FrameBody::Metadata {
                key: "name".into(),
                value: None,
            },
        ),
    ]
}

fn write_sample(dir: &Path) -> Vec<(Frame, u64, u32)> {
    let (mut log, rep) = TLog::open(cfg(dir, Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn::ZERO);
    for (commit, body) in sample_bodies() {
        log.append(PageId(1), 1, Source::Propagation, commit, body.as_ref())
            .unwrap();
    }
    log.close().unwrap();
    let r = LogReader::open(dir).unwrap();
    let out: Vec<_> = r
        .frames()
        .unwrap()
        .map(|f| f.unwrap())
        .map(|f| (f.frame, f.offset, f.len))
        .collect();
    assert_eq!(out.len(), sample_bodies().len());
    assert!(r.tail().is_none());
    out
}

fn read_all(dir: &Path) -> Vec<Frame> {
    let r = LogReader::open(dir).unwrap();
    r.frames().unwrap().map(|f| f.unwrap().frame).collect()
}

// ---------------------------------------------------------------------------------------------
// Frame codec
// ---------------------------------------------------------------------------------------------

#[test]
fn every_kind_round_trips() {
    let bodies = vec![
        FrameBody::Delta(Body::Dense(vec![7; 1000])),
        FrameBody::Delta(sparse(&[(10, 5)], 3)),
        FrameBody::Delta(sparse(&[], 0)),
        FrameBody::CreatePage {
            size: 1 << 30,
            location: Location::Cpu,
        },
        FrameBody::Metadata {
            key: "k\u{e9}y".into(),
            value: Some(vec![1, 2, 3]),
        },
        FrameBody::Metadata {
            key: String::new(),
            value: Some(Vec::new()),
        },
        FrameBody::Metadata {
            key: "gone".into(),
            value: None,
        },
        FrameBody::Commit,
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let commit = i % 2 == 0 || body == FrameBody::Commit;
        let f = frame(i as u64 + 1, commit, body);
        let bytes = encode(&f);
        assert_eq!(bytes.len(), f.encoded_len());
        assert_eq!(
            u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len(),
            "len covers the frame"
        );
        let (back, n) = frame::decode(&bytes).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(back, f);
        assert_eq!(back.kind(), f.kind());
        // Followed by more bytes: still one frame.
        let mut more = bytes.clone();
        more.extend_from_slice(&[0xAB; 17]);
        assert_eq!(frame::decode(&more).unwrap(), (f.clone(), bytes.len()));
        // Any proper prefix is incomplete.
        for cut in 0..bytes.len() {
            assert_eq!(
                frame::decode(&bytes[..cut]).err(),
                Some(DecodeError::Incomplete),
                "cut {cut}"
            );
        }
    }
}

#[test]
fn commit_frame_always_has_the_flag() {
    let mut out = Vec::new();
    frame::encode_into(
        &mut out,
        Lsn(1),
        PageId(0),
        0,
        0,
        Source::User,
        false,
        BodyRef::Commit,
    );
    let (f, _) = frame::decode(&out).unwrap();
    assert!(f.commit);
    assert_eq!(f.kind(), FrameKind::Commit);
}

#[test]
fn into_delta_carries_header_fields() {
    let f = frame(9, true, FrameBody::Delta(sparse(&[(3, 2)], 1)));
    let d = f.clone().into_delta().unwrap();
    assert_eq!(
        (d.page, d.lsn, d.epoch, d.timestamp_ns, d.source),
        (f.page, f.lsn, f.epoch, f.timestamp_ns, f.source)
    );
    assert!(frame(1, true, FrameBody::Commit).into_delta().is_none());
}

#[test]
fn smaller_mask_encoding_is_chosen() {
    let cases: Vec<Vec<(usize, usize)>> = vec![
        vec![(5000, 16)],                      // one run: run-length
        (0..64).map(|i| (i * 2, 1)).collect(), // alternating: bit-packed
        vec![(0, 64 * 10)],                    // full words: run-length
        (0..40).map(|i| (i * 3, 2)).collect(), // dense pattern: bit-packed
        vec![(1, 1), (1_000_000, 1)],          // far apart: run-length
    ];
    for ranges in cases {
        let body = sparse(&ranges, 9);
        let Body::Sparse { mask, payload } = &body else {
            unreachable!()
        };
        let (packed, rle) = mask_sizes(mask);
        let f = frame(1, true, FrameBody::Delta(body.clone()));
        let bytes = encode(&f);
        let (view, _) = frame::decode_view(&bytes).unwrap();
        let expect = if rle < packed {
            MaskEncoding::RunLength
        } else {
            MaskEncoding::BitPacked
        };
        assert_eq!(
            view.mask_encoding, expect,
            "{ranges:?}: packed {packed}, rle {rle}"
        );
        assert_eq!(
            bytes.len(),
            frame::FRAME_HEADER_LEN + packed.min(rle) + payload.len()
        );
        assert_eq!(frame::decode(&bytes).unwrap().0, f);
    }
}

#[test]
fn corrupt_fields_with_valid_crc_are_rejected() {
    // Re-seal a frame after editing it, to reach the field checks behind the CRC.
    fn reseal(mut b: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }
    let base = encode(&frame(1, true, FrameBody::Delta(sparse(&[(64, 8)], 1))));
    let cases: Vec<(usize, u8, &str)> = vec![
        (40, 9, "unknown frame kind"),
        (41, 200, "unknown source"),
        (42, 7, "unknown mask encoding"),
        (43, 0x81, "unknown flag bits"),
    ];
    for (at, val, what) in cases {
        let mut b = base.clone();
        b[at] = val;
        match frame::decode(&reseal(b)) {
            Err(DecodeError::Corrupt(r)) => assert!(r.contains(what), "{r}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // Payload one byte short (len adjusted): mask/payload mismatch.
    let mut b = base.clone();
    b.pop();
    let n = b.len() as u32;
    b[0..4].copy_from_slice(&n.to_le_bytes());
    assert!(
        matches!(frame::decode(&reseal(b)), Err(DecodeError::Corrupt(r)) if r.contains("payload"))
    );
    // Length below the header and absurdly large lengths.
    let mut b = base.clone();
    b[0..4].copy_from_slice(&10u32.to_le_bytes());
    assert!(matches!(frame::decode(&b), Err(DecodeError::Corrupt(_))));
    b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(frame::decode(&b), Err(DecodeError::Corrupt(_))));
    // Invalid UTF-8 key.
    let mut b = encode(&frame(
        1,
        true,
        FrameBody::Metadata {
            key: "ab".into(),
            value: None,
        },
    ));
    b[46] = 0xff;
    assert!(
        matches!(frame::decode(&reseal(b)), Err(DecodeError::Corrupt(r)) if r.contains("UTF-8"))
    );
}

fn arb_mask() -> impl Strategy<Value = Mask> {
    prop::collection::vec((0usize..5000, 1usize..200), 0..12).prop_map(|r| Mask::from_ranges(&r))
}

fn arb_body() -> impl Strategy<Value = FrameBody> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..300).prop_map(|b| FrameBody::Delta(Body::Dense(b))),
        (arb_mask(), any::<u8>()).prop_map(|(mask, s)| {
            let payload = (0..mask.count()).map(|i| (i as u8) ^ s).collect();
            FrameBody::Delta(Body::Sparse { mask, payload })
        }),
        (1u32..=(1 << 30)).prop_map(|size| FrameBody::CreatePage {
            size,
            location: Location::Cpu
        }),
        (
            "[a-z\u{e9}]{0,20}",
            prop::option::of(prop::collection::vec(any::<u8>(), 0..50))
        )
            .prop_map(|(key, value)| FrameBody::Metadata { key, value }),
        Just(FrameBody::Commit),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        0u8..3,
        any::<bool>(),
        arb_body(),
    )
        .prop_map(|(lsn, page, epoch, ts, src, commit, body)| {
            let commit = commit || body == FrameBody::Commit;
            Frame {
                lsn: Lsn(lsn),
                page: PageId(page),
                epoch,
                timestamp_ns: ts,
                source: Source::from_code(src).unwrap(),
                commit,
                body,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(f in arb_frame()) {
        let bytes = encode(&f);
        prop_assert_eq!(bytes.len(), f.encoded_len());
        let (back, n) = frame::decode(&bytes).unwrap();
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(&back, &f);
        if let FrameBody::Delta(Body::Sparse { mask, payload }) = &f.body {
            let (packed, rle) = mask_sizes(mask);
            prop_assert_eq!(bytes.len(), frame::FRAME_HEADER_LEN + packed.min(rle) + payload.len());
        }
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = frame::decode(&bytes);
        // Also with a plausible length prefix, to get past the length check.
        let mut b = bytes;
        if b.len() >= 4 {
            let n = b.len() as u32;
            b[0..4].copy_from_slice(&n.to_le_bytes());
            let _ = frame::decode(&b);
        }
    }

    #[test]
    fn prop_mutations_never_panic_and_single_flips_fail(
        f in arb_frame(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        cut in any::<prop::sample::Index>(),
        reseal in any::<bool>(),
    ) {
        let good = encode(&f);
        let mut b = good.clone();
        for (i, bit) in &flips {
            let i = i.index(b.len());
            b[i] ^= 1 << bit;
        }
        if flips.len() == 1 {
            prop_assert!(frame::decode(&b).is_err(), "a single flipped bit must be caught");
        }
        if reseal && b.len() >= 8 {
            // Valid CRC over mutated fields: exercises the field checks.
            let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..]);
            b[4..8].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = frame::decode(&b);
        let _ = frame::decode(&b[..cut.index(b.len() + 1)]);
    }
}

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
fn crc_catches_every_flipped_bit_in_a_segment() {
    let src = tempfile::tempdir().unwrap();
    let frames = write_sample(src.path());
    let seg = only_segment(src.path());
    let original = fs::read(&seg).unwrap();
    let name = seg.file_name().unwrap().to_owned();
    let n = frames.len();
    // End of the last committed frame before frame k (what recovery truncates to).
    let commit_end_before = |k: usize| {
        frames[..k]
            .iter()
            .rev()
            .find(|(f, _, _)| f.commit)
            .map_or(SEGMENT_HEADER_LEN as u64, |(_, o, l)| o + u64::from(*l))
    };
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join(&name);
    let mut checked = 0;
    for (k, (orig, off, len)) in frames.iter().enumerate() {
        let is_last = k + 1 == n;
        for byte in *off as usize..(*off + u64::from(*len)) as usize {
            for bit in 0..8 {
                let mut bytes = original.clone();
                bytes[byte] ^= 1 << bit;
                overwrite(&path, &bytes);
                let ctx = format!("frame {k} byte {byte} bit {bit}");

                // The reader never yields the flipped frame (or anything after it).
                let r = LogReader::open(work.path()).unwrap();
                let mut yielded = Vec::new();
                let mut err = None;
                for item in r.frames().unwrap() {
                    match item {
                        Ok(f) => yielded.push(f.frame),
                        Err(e) => err = Some(e),
                    }
                }
                assert!(
                    yielded.len() <= k,
                    "{ctx}: yielded {} frames",
                    yielded.len()
                );
                for (y, (o, _, _)) in yielded.iter().zip(&frames) {
                    assert_eq!(y, o, "{ctx}");
                }
                assert!(
                    !yielded.contains(orig) || frames[..k].iter().any(|(f, _, _)| f == orig),
                    "{ctx}"
                );
                // A flipped bit in the last frame is damage, not a torn write: the frame is
                // complete (or its length field is what changed), so the reader refuses it
                // like a corrupt frame in the middle, naming the offset.
                if is_last {
                    match err {
                        Some(Error::DamagedTail { offset, .. }) => {
                            assert_eq!(offset, *off, "{ctx}")
                        }
                        other => panic!("{ctx}: expected DamagedTail, got {other:?}"),
                    }
                    let _ = commit_end_before;
                } else {
                    match err {
                        Some(Error::CorruptFrame { offset, .. }) => {
                            assert_eq!(offset, *off, "{ctx}")
                        }
                        other => panic!("{ctx}: expected CorruptFrame, got {other:?}"),
                    }
                }

                // verify names the offset.
                let v = tlog::verify(work.path()).unwrap();
                assert!(!v.is_ok(), "{ctx}");
                assert_eq!(v.problems[0].offset, *off, "{ctx}: {:?}", v.problems);
                assert!(!v.problems[0].tail, "{ctx}: damage reported as a torn tail");

                // Recovery: a torn tail when last, refused (and untouched) otherwise.
                match TLog::open(cfg(work.path(), Durability::Buffered)) {
                    Ok(_) => panic!("{ctx}: opened a damaged log"),
                    Err(Error::DamagedTail { file, offset, .. }) => {
                        assert!(is_last, "{ctx}: DamagedTail for a frame in the middle");
                        assert_eq!((file, offset), (path.clone(), *off), "{ctx}");
                        assert_eq!(fs::read(&path).unwrap(), bytes, "{ctx}: file modified");
                    }
                    Err(Error::CorruptFrame { file, offset, .. }) => {
                        assert!(!is_last, "{ctx}: the last frame should be a torn tail");
                        assert_eq!((file, offset), (path.clone(), *off), "{ctx}");
                        assert_eq!(fs::read(&path).unwrap(), bytes, "{ctx}: file modified");
                    }
                    Err(e) => panic!("{ctx}: {e}"),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, (original.len() - SEGMENT_HEADER_LEN) * 8);
}

#[test]
fn torn_tail_at_every_offset_of_the_last_frame() {
    let src = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = TLog::open(cfg(src.path(), Durability::Flush)).unwrap();
        log.append(
            PageId(1),
            0,
            Source::User,
            true,
            BodyRef::CreatePage {
                size: 100,
                location: Location::Cpu,
            },
        )
        .unwrap();
        log.append(
            PageId(1),
            1,
            Source::User,
            true,
            BodyRef::Delta(&sparse(&[(3, 7)], 4)),
        )
        .unwrap();
        log.append(
            PageId(1),
            2,
            Source::User,
            true,
            BodyRef::Delta(&Body::Dense(vec![0xEE; 100])),
        )
        .unwrap();
        log.close().unwrap();
    }
    let seg = only_segment(src.path());
    let original = fs::read(&seg).unwrap();
    let frames = read_all(src.path());
    let last_len = frames[2].encoded_len();
    let last_off = original.len() - last_len;
    let new_body = sparse(&[(50, 3)], 8);
    for cut in last_off..original.len() {
        let work = tempfile::tempdir().unwrap();
        let path = work.path().join(seg.file_name().unwrap());
        fs::write(&path, &original[..cut]).unwrap();
        let (mut log, rep) = TLog::open(cfg(work.path(), Durability::Flush)).unwrap();
        assert_eq!(rep.last_lsn, Lsn(2), "cut {cut}");
        assert_eq!(rep.frames, 2);
        if cut == last_off {
            assert!(rep.truncated.is_none(), "cut {cut}: nothing torn");
        } else {
            let t = rep
                .truncated
                .unwrap_or_else(|| panic!("cut {cut}: not reported"));
            assert_eq!(t.file, path);
            assert_eq!(t.offset, last_off as u64);
            assert_eq!(t.bytes_dropped, (cut - last_off) as u64);
            assert_eq!(t.frames_dropped, 0);
            assert!(t.reason.contains("torn"), "{}", t.reason);
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), last_off as u64);
        let a = log
            .append(PageId(1), 2, Source::User, true, BodyRef::Delta(&new_body))
            .unwrap();
        assert_eq!(a.lsn, Lsn(3));
        log.close().unwrap();
        let back = read_all(work.path());
        assert_eq!(back.len(), 3);
        assert_eq!(&back[..2], &frames[..2]);
        assert_eq!(back[2].body, FrameBody::Delta(new_body.clone()));
        assert!(tlog::verify(work.path()).unwrap().is_ok());
    }
}

#[test]
fn uncommitted_batch_at_the_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
        log.append(
            PageId(1),
            0,
            Source::User,
            true,
            BodyRef::CreatePage {
                size: 64,
                location: Location::Cpu,
            },
        )
        .unwrap();
        for e in 1..=3 {
            log.append(
                PageId(1),
                e,
                Source::User,
                false,
                BodyRef::Delta(&sparse(&[(e as usize, 2)], 1)),
            )
            .unwrap();
        }
        assert_eq!(log.last_lsn(), Lsn(4));
        assert_eq!(log.last_committed_lsn(), Lsn(1));
        log.flush().unwrap();
        // A reader stops at the last commit by default, and reports the rest.
        let r = LogReader::open(dir.path()).unwrap();
        assert_eq!(r.frames().unwrap().count(), 1);
        let t = r.tail().unwrap();
        assert_eq!(t.frames_dropped, 3);
        let all = LogReader::open(dir.path()).unwrap().with_uncommitted(true);
        assert_eq!(all.frames().unwrap().count(), 4);
        // verify: not a problem, but counted.
        let v = tlog::verify(dir.path()).unwrap();
        assert!(v.is_ok(), "{:?}", v.problems);
        assert_eq!(v.segments[0].uncommitted, 3);
        // Dropped without a commit (a crash mid-batch).
    }
    let (mut log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(1));
    let t = rep.truncated.unwrap();
    assert_eq!(t.frames_dropped, 3);
    assert!(t.reason.contains("uncommitted"), "{}", t.reason);
    assert_eq!(log.next_lsn(), Lsn(2));
    log.append(PageId(1), 1, Source::User, true, BodyRef::Commit)
        .unwrap();
    log.close().unwrap();
    assert_eq!(read_all(dir.path()).len(), 2);
}

#[test]
fn middle_corruption_is_refused_and_the_file_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let frames = write_sample(dir.path());
    let seg = only_segment(dir.path());
    let (_, off, _) = frames[2];
    let mut bytes = fs::read(&seg).unwrap();
    bytes[off as usize + 20] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match TLog::open(cfg(dir.path(), Durability::Flush)) {
        Err(Error::CorruptFrame {
            file,
            offset,
            reason,
        }) => {
            assert_eq!((file, offset), (seg.clone(), off));
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), bytes);
    // The reader yields the frames before it, then the error.
    let r = LogReader::open(dir.path()).unwrap();
    let items: Vec<_> = r.frames().unwrap().collect();
    assert!(matches!(
        items.last(),
        Some(Err(Error::CorruptFrame { .. }))
    ));
    // Frames 0 and 1: frame 0 is committed, frame 1 belongs to the batch the corrupt frame is in.
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
}

#[test]
fn lsn_gap_between_segments_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), Durability::Flush);
    c.segment_bytes = 200;
    {
        let (mut log, _) = TLog::open(c.clone()).unwrap();
        for _ in 0..12 {
            log.append(
                PageId(1),
                0,
                Source::User,
                true,
                BodyRef::Delta(&sparse(&[(0, 30)], 1)),
            )
            .unwrap();
        }
        log.close().unwrap();
    }
    let segs = tlog::list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1].1).unwrap();
    assert!(matches!(
        TLog::open(c),
        Err(Error::CorruptFrame { offset: 0, .. })
    ));
    let r = LogReader::open(dir.path()).unwrap();
    assert!(r.frames().unwrap().any(|i| i.is_err()));
    assert!(!tlog::verify(dir.path()).unwrap().is_ok());
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    let mut now = cfg(dir.path(), Durability::Flush);
    now.lock_timeout = Duration::ZERO;
    match TLog::open(now) {
        Err(Error::Locked { dir: d, waited }) => {
            assert_eq!(d, dir.path());
            // One attempt, no waiting (generous bound: far below the 1 s default).
            assert!(waited < tlog::DEFAULT_LOCK_TIMEOUT / 2, "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
    // Readers need no lock.
    assert_eq!(
        LogReader::open(dir.path())
            .unwrap()
            .frames()
            .unwrap()
            .count(),
        0
    );
    log.close().unwrap();
    let (log, _) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    drop(log);
    TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
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
fn verify_finds_a_flipped_byte_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let frames = write_sample(dir.path());
    let seg = only_segment(dir.path());
    let ok = tlog::verify(dir.path()).unwrap();
    assert!(ok.is_ok());
    assert_eq!(ok.frames, frames.len() as u64);
    assert_eq!(ok.segments[0].first_frame, Some(Lsn(1)));
    let mut bytes = fs::read(&seg).unwrap();
    let (_, off1, _) = frames[1];
    let (_, off4, _) = frames[4];
    bytes[off1 as usize + 50] ^= 0xff;
    bytes[off4 as usize + 45] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    for path in [dir.path().to_path_buf(), seg.clone()] {
        let v = tlog::verify(&path).unwrap();
        let offs: Vec<_> = v.problems.iter().map(|p| (p.offset, p.tail)).collect();
        assert_eq!(offs, vec![(off1, false), (off4, false)], "{:?}", v.problems);
        assert_eq!(
            v.frames,
            frames.len() as u64 - 2,
            "resumes after each bad frame"
        );
        assert!(
            v.problems
                .iter()
                .all(|p| p.file == seg && p.reason.contains("CRC"))
        );
    }
}

#[test]
fn bad_magic_and_unknown_version_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path());
    let seg = only_segment(dir.path());
    let good = fs::read(&seg).unwrap();

    let mut b = good.clone();
    b[0..8].copy_from_slice(b"NOTALOG!");
    fs::write(&seg, &b).unwrap();
    assert!(matches!(
        TLog::open(cfg(dir.path(), Durability::Flush)),
        Err(Error::BadMagic { .. })
    ));
    assert!(matches!(
        LogReader::open(dir.path())
            .unwrap()
            .frames()
            .unwrap()
            .next(),
        Some(Err(Error::BadMagic { .. }))
    ));
    assert_eq!(fs::read(&seg).unwrap(), b, "not modified");

    let mut b = good.clone();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    fs::write(&seg, &b).unwrap();
    assert!(matches!(
        TLog::open(cfg(dir.path(), Durability::Flush)),
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
    let v = tlog::verify(dir.path()).unwrap();
    assert!(v.problems[0].reason.contains("version"), "{:?}", v.problems);

    // A header whose CRC fails, with valid frames after it: corruption, not a torn header.
    let mut b = good.clone();
    b[24] ^= 1; // creation time
    fs::write(&seg, &b).unwrap();
    assert!(matches!(
        TLog::open(cfg(dir.path(), Durability::Flush)),
        Err(Error::CorruptFrame { offset: 0, .. })
    ));
}

#[test]
fn torn_segment_header_at_the_end_is_removed() {
    for torn_len in [0usize, 5, 20, 39] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Durability::Flush);
        c.segment_bytes = 300;
        {
            let (mut log, _) = TLog::open(c.clone()).unwrap();
            for _ in 0..8 {
                log.append(
                    PageId(1),
                    0,
                    Source::User,
                    true,
                    BodyRef::Delta(&sparse(&[(0, 50)], 2)),
                )
                .unwrap();
            }
            log.close().unwrap();
        }
        let segs = tlog::list_segments(dir.path()).unwrap();
        let last = tlog::verify(dir.path()).unwrap().last_lsn;
        // A crash right after creating the next segment.
        let next = dir.path().join(tlog::segment_file_name(last.next()));
        let header = fs::read(&segs[0].1).unwrap()[..torn_len].to_vec();
        fs::write(&next, &header).unwrap();
        let v = tlog::verify(dir.path()).unwrap();
        assert_eq!(v.problems.len(), 1);
        assert!(v.problems[0].tail);
        assert!(
            LogReader::open(dir.path())
                .unwrap()
                .frames()
                .unwrap()
                .all(|f| f.is_ok())
        );
        let (mut log, rep) = TLog::open(c.clone()).unwrap();
        let t = rep.truncated.unwrap();
        assert_eq!(
            (t.file.clone(), t.offset, t.bytes_dropped),
            (next.clone(), 0, torn_len as u64)
        );
        assert!(!next.exists());
        assert_eq!(rep.last_lsn, last);
        assert_eq!(
            log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
                .unwrap()
                .lsn,
            last.next()
        );
        log.close().unwrap();
        assert!(tlog::verify(dir.path()).unwrap().is_ok());
    }
    // The only segment torn (a crash right after creating a new log: the LOGID file is written
    // before the first segment).
    let dir = tempfile::tempdir().unwrap();
    drop(TLog::open(cfg(dir.path(), Durability::Flush)).unwrap());
    fs::write(dir.path().join(tlog::segment_file_name(Lsn(1))), b"MMSB").unwrap();
    let (mut log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert!(rep.truncated.is_some());
    assert_eq!(
        log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
            .unwrap()
            .lsn,
        Lsn(1)
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

// ---------------------------------------------------------------------------------------------
// Waiting for the lock
// ---------------------------------------------------------------------------------------------

/// Environment variable that makes a run of this test binary a lock holder: the log directory.
const LOCK_HOLDER_DIR: &str = "MMSB_TLOG_LOCK_HOLDER_DIR";
/// Milliseconds the lock holder keeps the lock after its stdin reaches end of file.
const LOCK_HOLDER_LINGER_MS: &str = "MMSB_TLOG_LOCK_HOLDER_LINGER_MS";

/// The child side: opens the log in `$LOCK_HOLDER_DIR` as its writer, commits one frame,
/// creates `ready` in the directory, blocks until stdin is closed (by the parent, or by its
/// exit), keeps the lock `$LOCK_HOLDER_LINGER_MS` more, then closes the log. Returns false when
/// this process is not a lock holder (the test then runs its parent side).
fn lock_holder_child() -> bool {
    let Some(dir) = std::env::var_os(LOCK_HOLDER_DIR) else {
        return false;
    };
    let dir = PathBuf::from(dir);
    let linger: u64 = std::env::var(LOCK_HOLDER_LINGER_MS)
        .unwrap()
        .parse()
        .unwrap();
    let (mut log, _) = TLog::open(cfg(&dir, Durability::Flush)).unwrap();
    log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
        .unwrap();
    fs::write(dir.join("ready"), b"").unwrap();
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
    std::thread::sleep(Duration::from_millis(linger));
    log.close().unwrap();
    true
}

/// Starts this test binary again as a lock holder of `dir` (running only `test`), and waits
/// until it holds the lock. The lock holder lets go `linger_ms` after the returned child's
/// stdin is closed.
fn spawn_lock_holder(test: &str, dir: &Path, linger_ms: u64) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(LOCK_HOLDER_DIR, dir)
        .env(LOCK_HOLDER_LINGER_MS, linger_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "lock holder exited early ({status}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "lock holder not ready"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

/// Closes the lock holder's stdin (it then lets go of the lock) and checks that it succeeded.
fn finish_lock_holder(mut child: std::process::Child) {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lock holder failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another process holds the lock and lets go 50 ms after being told to: `open` with the
/// default timeout waits for it instead of failing.
#[test]
fn open_waits_for_a_lock_that_another_process_releases_within_the_timeout() {
    if lock_holder_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_lock_holder(
        "open_waits_for_a_lock_that_another_process_releases_within_the_timeout",
        dir.path(),
        50,
    );
    // The child really holds it: without waiting, open fails.
    let mut now = cfg(dir.path(), Durability::Flush);
    now.lock_timeout = Duration::ZERO;
    assert!(
        matches!(TLog::open(now), Err(Error::Locked { .. })),
        "the lock holder does not hold the lock"
    );
    // Tell it to let go (50 ms from now) and open at once with the default timeout (1 s).
    drop(child.stdin.take());
    let t = Instant::now();
    let opened = TLog::open(cfg(dir.path(), Durability::Flush));
    let waited = t.elapsed();
    let (log, rep) = opened.unwrap_or_else(|e| panic!("after {waited:?}: {e}"));
    // It opened after the child closed its log: the child's commit is there.
    assert_eq!(rep.last_lsn, Lsn(1), "after {waited:?}");
    log.close().unwrap();
    finish_lock_holder(child);
}

/// A live second writer in another process, holding the lock well past the timeout: `open`
/// fails with `Locked`, and not before the timeout has passed.
#[test]
fn open_fails_with_locked_after_the_timeout_when_another_process_keeps_the_lock() {
    if lock_holder_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_lock_holder(
        "open_fails_with_locked_after_the_timeout_when_another_process_keeps_the_lock",
        dir.path(),
        0,
    );
    let timeout = Duration::from_millis(100);
    let mut c = cfg(dir.path(), Durability::Flush);
    c.lock_timeout = timeout;
    let t = Instant::now();
    let r = TLog::open(c);
    let elapsed = t.elapsed();
    match r {
        Err(Error::Locked { dir: d, waited }) => {
            assert_eq!(d, dir.path());
            assert!(waited >= timeout, "gave up early: waited {waited:?}");
            assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
            // A generous upper bound: it only rules out hanging on the lock.
            assert!(
                elapsed < Duration::from_secs(3),
                "waited too long: {elapsed:?}"
            );
        }
        Ok(_) => panic!("opened a log that another process holds"),
        Err(e) => panic!("{e}"),
    }
    // Once the other writer is gone, the lock is free.
    finish_lock_holder(child);
    let (log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(1));
    log.close().unwrap();
}

/// Every descriptor the writer keeps (the lock file, the active segment) is close-on-exec, so
/// a child process drops it (and the lock) when it `exec`s.
#[cfg(target_os = "linux")]
#[test]
fn every_descriptor_the_writer_keeps_is_close_on_exec() {
    const O_CLOEXEC: u32 = 0o2_000_000;
    let dir = tempfile::tempdir().unwrap();
    let real = fs::canonicalize(dir.path()).unwrap();
    let (mut log, _) = TLog::open(cfg(dir.path(), Durability::FsyncEvery(1))).unwrap();
    log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
        .unwrap();
    let mut checked = Vec::new();
    for entry in fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = fs::read_link(entry.path()) else {
            continue; // closed meanwhile (another test's descriptor)
        };
        if !target.starts_with(&real) {
            continue;
        }
        let fd = entry.file_name();
        let info = fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap_or_else(|| panic!("no flags for fd {fd:?}: {info:?}"));
        assert_ne!(
            flags & O_CLOEXEC,
            0,
            "fd {fd:?} -> {} is not close-on-exec",
            target.display()
        );
        checked.push(target);
    }
    assert!(
        checked.iter().any(|p| p.ends_with(tlog::LOCK_FILE)),
        "{checked:?}"
    );
    assert!(
        checked
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "tlog")),
        "{checked:?}"
    );
    log.close().unwrap();
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
