//! Helpers shared by the frame and log tests (`frame.rs`, `tlog.rs`, `tlog_recovery.rs`,
//! `tlog_lock.rs`); each uses a part of them.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use mmsb::frame::{Frame, FrameBody};
use mmsb::tlog::{self, Durability, LogConfig, LogReader, TLog};
use mmsb::{Body, Location, Lsn, Mask, PageId, Source};

/// Replaces the contents of `path` in place (no truncation to zero first: ext4 flushes a file
/// that was truncated to zero when it is closed, which makes thousands of rewrites slow).
pub fn overwrite(path: &Path, bytes: &[u8]) {
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

pub fn cfg(dir: &Path, d: Durability) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.durability = d;
    c
}

pub fn sparse(ranges: &[(usize, usize)], seed: u8) -> Body {
    let mask = Mask::from_ranges(ranges);
    let payload = (0..mask.count())
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    Body::Sparse { mask, payload }
}

pub fn varint_len(v: u64) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// Size of the two mask encodings of `mask`, computed independently of the encoder.
pub fn mask_sizes(mask: &Mask) -> (usize, usize) {
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

pub fn encode(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode(&mut v);
    v
}

pub fn frame(lsn: u64, commit: bool, body: FrameBody) -> Frame {
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
pub fn only_segment(dir: &Path) -> PathBuf {
    let segs = tlog::list_segments(dir).unwrap();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].1.clone()
}

/// Frames of several kinds, in a log: (frame as read back, offset, len).
pub fn sample_bodies() -> Vec<(bool, FrameBody)> {
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

pub fn write_sample(dir: &Path) -> Vec<(Frame, u64, u32)> {
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

pub fn read_all(dir: &Path) -> Vec<Frame> {
    let r = LogReader::open(dir).unwrap();
    r.frames().unwrap().map(|f| f.unwrap().frame).collect()
}
