//! Recovery and verification of a damaged log: bit flips, torn tails, uncommitted batches,
//! middle corruption, LSN gaps, bad magic and versions, torn segment headers.

use std::fs;

use mmsb::frame::{BodyRef, FrameBody};
use mmsb::tlog::{self, Durability, LogReader, SEGMENT_HEADER_LEN, TLog};
use mmsb::{Body, Error, Location, Lsn, PageId, Source};

mod tlog_support;
use tlog_support::*;

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
