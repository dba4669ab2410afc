//! Checkpoint files: round trip, every corruption detected, fallback to an older checkpoint,
//! temporary files.

use std::fs;
use std::path::Path;

use mmsb::checkpoint::{self, Checkpoint};
use mmsb::frame::{Frame, FrameBody};
use mmsb::{Delta, Error, Location, Lsn, Page, PageId, Source, State};

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

/// A state with pages of several sizes, epochs and metadata.
fn sample_state() -> State {
    let mut s = State::new();
    for (id, size) in [(1u64, 1usize), (2, 64), (3, 1000), (7, 4096)] {
        s.create(PageId(id), size, Location::Cpu).unwrap();
        for k in 0..id {
            let off = (k as usize * 13) % size;
            let len = (size - off).min(5);
            s.apply(&Delta::write(
                PageId(id),
                off,
                &vec![(id * 10 + k) as u8; len],
            ))
            .unwrap();
        }
    }
    let meta = |lsn, page, key: &str, value: Option<&[u8]>| Frame {
        lsn: Lsn(lsn),
        page: PageId(page),
        epoch: 0,
        timestamp_ns: 0,
        source: Source::User,
        commit: true,
        body: FrameBody::Metadata {
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
        },
    };
    s.apply_frame(&meta(1, 2, "unit", Some(b"kelvin"))).unwrap();
    s.apply_frame(&meta(2, 2, "", Some(b""))).unwrap();
    s.apply_frame(&meta(3, 3, "caf\u{e9}", Some(&[0, 255, 7])))
        .unwrap();
    s
}

fn pages(s: &State) -> Vec<Page> {
    s.pages().cloned().collect()
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_state();
    let info = checkpoint::write(dir.path(), Lsn(42), 8, s.pages()).unwrap();
    assert_eq!(
        info.path,
        dir.path().join("checkpoint-00000000000000000042.ckpt")
    );
    assert_eq!(info.lsn, Lsn(42));
    assert_eq!(info.pages, 4);
    assert_eq!(info.bytes, fs::metadata(&info.path).unwrap().len());
    let c = checkpoint::read(&info.path).unwrap();
    assert_eq!(
        c,
        Checkpoint {
            lsn: Lsn(42),
            next_page_id: 8,
            pages: pages(&s),
            log_id: Some(mmsb::logdir::LogId::DETACHED),
        }
    );
    assert_eq!(
        c.pages[1].metadata().get("unit").map(Vec::as_slice),
        Some(&b"kelvin"[..])
    );
    assert!(c.pages.iter().all(|p| !p.is_stale()));
    // An empty state.
    let info = checkpoint::write(dir.path(), Lsn(0), 1, std::iter::empty()).unwrap();
    let c = checkpoint::read(&info.path).unwrap();
    assert_eq!((c.lsn, c.next_page_id, c.pages.len()), (Lsn(0), 1, 0));
    assert_eq!(
        checkpoint::list(dir.path())
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![Lsn(0), Lsn(42)]
    );
}

#[test]
fn every_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let info = checkpoint::write(dir.path(), Lsn(9), 8, sample_state().pages()).unwrap();
    let good = fs::read(&info.path).unwrap();
    let bad = dir.path().join("flipped.ckpt");
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= flip;
            overwrite(&bad, &b);
            match checkpoint::read(&bad) {
                Err(Error::BadMagic { .. }) => assert!(i < 8, "byte {i}"),
                Err(Error::UnsupportedVersion { .. }) => assert!((8..10).contains(&i), "byte {i}"),
                Err(Error::CorruptCheckpoint { file, .. }) => assert_eq!(file, bad),
                other => panic!("byte {i} ^ {flip:#x}: {other:?}"),
            }
        }
    }
}

#[test]
fn page_hash_is_checked_behind_the_crc() {
    let dir = tempfile::tempdir().unwrap();
    let info = checkpoint::write(dir.path(), Lsn(9), 8, sample_state().pages().take(1)).unwrap();
    let mut b = fs::read(&info.path).unwrap();
    // Page 1 is one byte, after the 56-byte header and the 32-byte page header.
    b[88] ^= 0x55;
    let n = b.len() - 4;
    let crc = crc32c::crc32c(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    overwrite(&info.path, &b);
    match checkpoint::read(&info.path) {
        Err(Error::CorruptCheckpoint { reason, .. }) => {
            assert!(reason.contains("hash"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_truncation_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let info = checkpoint::write(dir.path(), Lsn(9), 8, sample_state().pages()).unwrap();
    let good = fs::read(&info.path).unwrap();
    let bad = dir.path().join("short.ckpt");
    for len in 0..good.len() {
        overwrite(&bad, &good[..len]);
        assert!(
            matches!(
                checkpoint::read(&bad),
                Err(Error::CorruptCheckpoint { .. } | Error::BadMagic { .. })
            ),
            "length {len}"
        );
    }
    // Extra bytes are corruption too.
    let mut long = good.clone();
    long.extend_from_slice(&[0; 3]);
    fs::write(&bad, &long).unwrap();
    assert!(matches!(
        checkpoint::read(&bad),
        Err(Error::CorruptCheckpoint { .. })
    ));
}

#[test]
fn huge_lengths_do_not_allocate() {
    // A corrupt page count or page size must be refused from the file size, before allocating.
    let dir = tempfile::tempdir().unwrap();
    let info = checkpoint::write(dir.path(), Lsn(1), 2, sample_state().pages().take(1)).unwrap();
    let good = fs::read(&info.path).unwrap();
    let bad = dir.path().join("huge.ckpt");
    for (at, val) in [(32usize, u64::MAX), (32, 1 << 40)] {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&val.to_le_bytes());
        overwrite(&bad, &b);
        assert!(matches!(
            checkpoint::read(&bad),
            Err(Error::CorruptCheckpoint { .. })
        ));
    }
    // Page size field of the first page (header 56 + id 8 + epoch 8).
    let mut b = good.clone();
    b[72..76].copy_from_slice(&(1u32 << 30).to_le_bytes());
    overwrite(&bad, &b);
    match checkpoint::read(&bad) {
        Err(Error::CorruptCheckpoint { reason, .. }) => {
            assert!(reason.contains("past the end"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn newest_valid_falls_back_to_an_older_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sample_state();
    checkpoint::write(dir.path(), Lsn(10), 8, s.pages()).unwrap();
    s.apply(&Delta::write(PageId(3), 0, b"newer")).unwrap();
    let newer = checkpoint::write(dir.path(), Lsn(20), 8, s.pages()).unwrap();
    let (c, skipped) = checkpoint::newest_valid(dir.path()).unwrap();
    assert_eq!(c.unwrap().lsn, Lsn(20));
    assert!(skipped.is_empty());

    let mut b = fs::read(&newer.path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    fs::write(&newer.path, &b).unwrap();
    let (c, skipped) = checkpoint::newest_valid(dir.path()).unwrap();
    let c = c.unwrap();
    assert_eq!(c.lsn, Lsn(10));
    assert_ne!(&c.pages[2].bytes()[..5], b"newer");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, newer.path);
    assert!(matches!(skipped[0].1, Error::CorruptCheckpoint { .. }));

    // None valid at all.
    let older = dir.path().join(checkpoint::file_name(Lsn(10)));
    fs::write(&older, b"garbage").unwrap();
    let (c, skipped) = checkpoint::newest_valid(dir.path()).unwrap();
    assert!(c.is_none());
    assert_eq!(skipped.len(), 2);
    assert!(matches!(skipped[1].1, Error::BadMagic { .. }));
    // A missing directory has no checkpoints.
    assert!(
        checkpoint::newest_valid(dir.path().join("nope"))
            .unwrap()
            .0
            .is_none()
    );
}

#[test]
fn temporary_files_are_ignored_and_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("checkpoint-00000000000000000099.ckpt.tmp");
    fs::write(&tmp, b"half written").unwrap();
    fs::write(
        dir.path().join("00000000000000000001.tlog"),
        b"not a checkpoint",
    )
    .unwrap();
    assert!(checkpoint::list(dir.path()).unwrap().is_empty());
    assert!(checkpoint::newest_valid(dir.path()).unwrap().0.is_none());
    checkpoint::write(dir.path(), Lsn(5), 8, sample_state().pages()).unwrap();
    assert!(!tmp.exists(), "leftover temporary removed");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn overwriting_the_same_lsn_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sample_state();
    checkpoint::write(dir.path(), Lsn(5), 8, s.pages()).unwrap();
    s.apply(&Delta::write(PageId(1), 0, &[99])).unwrap();
    let info = checkpoint::write(dir.path(), Lsn(5), 8, s.pages()).unwrap();
    assert_eq!(checkpoint::read(&info.path).unwrap().pages, pages(&s));
    assert_eq!(checkpoint::list(dir.path()).unwrap().len(), 1);
}

#[test]
fn duplicate_page_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_state();
    let p = s.page(PageId(2)).unwrap();
    assert!(matches!(
        checkpoint::write(dir.path(), Lsn(1), 8, [p, p]),
        Err(Error::PageExists(PageId(2)))
    ));
    assert!(checkpoint::list(dir.path()).unwrap().is_empty());
}

#[test]
fn not_a_checkpoint_and_other_versions() {
    let dir = tempfile::tempdir().unwrap();
    let info = checkpoint::write(dir.path(), Lsn(3), 8, sample_state().pages()).unwrap();
    let mut b = fs::read(&info.path).unwrap();
    b[8..10].copy_from_slice(&7u16.to_le_bytes());
    fs::write(&info.path, &b).unwrap();
    assert!(matches!(
        checkpoint::read(&info.path),
        Err(Error::UnsupportedVersion {
            found: 7,
            supported: 2,
            ..
        })
    ));
    fs::write(
        &info.path,
        b"MMSBTLOG and more bytes than a header needs to have here",
    )
    .unwrap();
    assert!(matches!(
        checkpoint::read(&info.path),
        Err(Error::BadMagic {
            what: "checkpoint",
            ..
        })
    ));
    assert!(matches!(
        checkpoint::read(Path::new("/nonexistent/x.ckpt")),
        Err(Error::Io { .. })
    ));
}
