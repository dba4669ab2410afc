//! The log directory as a whole: recognising it, tying checkpoints to their log, and one
//! checkpoint-choice rule for readers and the writer (`logdir.rs`, `restore.rs`).

use std::fs;
use std::path::Path;

use mmsb::{Config, Error, Lsn, Mmsb, State, checkpoint, logdir};

fn make(dir: &Path, writes: u8) -> Lsn {
    let mut m = Mmsb::start(Config::new(dir)).unwrap();
    let a = m.create_page(64).unwrap();
    for i in 0..writes {
        m.write_range(a, usize::from(i % 60), &[i]).unwrap();
    }
    let lsn = m.state().last_lsn();
    m.stop().unwrap();
    lsn
}

fn checkpoint_now(dir: &Path) -> checkpoint::CheckpointInfo {
    let mut m = Mmsb::start(Config::new(dir)).unwrap();
    let info = m.checkpoint().unwrap();
    m.stop().unwrap();
    info
}

#[test]
fn restore_and_start_agree_when_a_foreign_checkpoint_is_planted() {
    let root = tempfile::tempdir().unwrap();
    let (live, other) = (root.path().join("live"), root.path().join("other"));
    let end = make(&live, 5);
    make(&other, 30);
    let foreign = checkpoint_now(&other);
    fs::copy(&foreign.path, live.join(foreign.path.file_name().unwrap())).unwrap();
    let (s, rep) = State::restore_reporting(&live).unwrap();
    assert_eq!(s.last_lsn(), end);
    assert!(
        matches!(rep.skipped[0].1, Error::ForeignCheckpoint { .. }),
        "{rep:?}"
    );
    let (m, start) = Mmsb::start_reporting(Config::new(&live)).unwrap();
    assert_eq!(m.state().last_lsn(), end, "the writer and readers disagree");
    assert_eq!(start.checkpoint_lsn, None);
    assert!(matches!(
        start.skipped_checkpoints[0].1,
        Error::ForeignCheckpoint { .. }
    ));
}

#[test]
fn a_checkpoint_past_the_end_of_its_log_is_unrecoverable_for_readers_and_the_writer() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    make(&dir, 10);
    let info = checkpoint_now(&dir);
    // The log loses its last frames (the checkpoint covers them).
    let seg = mmsb::tlog::list_segments(&dir).unwrap().pop().unwrap().1;
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(mmsb::tlog::SEGMENT_HEADER_LEN as u64).unwrap();
    drop(f);
    assert!(info.lsn > Lsn(0));
    assert!(matches!(
        State::restore(&dir),
        Err(Error::StateUnrecoverable { .. })
    ));
    assert!(matches!(
        Mmsb::start(Config::new(&dir)),
        Err(Error::StateUnrecoverable { .. })
    ));
    let v = mmsb::verify_dir(&dir).unwrap();
    assert!(!v.is_ok());
}

#[test]
fn open_refuses_a_directory_that_holds_something_else_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("notes");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("todo.txt"), b"buy milk").unwrap();
    assert!(matches!(
        Mmsb::start(Config::new(&dir)),
        Err(Error::NotALog { .. })
    ));
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "something was created"
    );
    let empty = root.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let mut c = Config::new(&empty);
    c.create = false;
    assert!(matches!(Mmsb::start(c), Err(Error::NotALog { .. })));
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    assert!(matches!(State::restore(&empty), Err(Error::NotALog { .. })));
}

/// A version-1 checkpoint (40-byte header, no log id) made from a version-2 one.
fn downgrade(path: &Path) {
    let b = fs::read(path).unwrap();
    let mut v1 = Vec::with_capacity(b.len() - 16);
    v1.extend_from_slice(&b[..40]);
    v1[8..10].copy_from_slice(&1u16.to_le_bytes());
    v1.extend_from_slice(&b[56..b.len() - 4]);
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    fs::write(path, v1).unwrap();
}

#[test]
fn a_log_from_before_log_ids_is_adopted_with_its_version_1_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("old");
    let end = make(&dir, 8);
    let info = checkpoint_now(&dir);
    downgrade(&info.path);
    fs::remove_file(dir.join(logdir::LOG_ID_FILE)).unwrap();
    assert_eq!(logdir::probe(&dir).unwrap(), logdir::DirKind::Legacy);
    let (s, rep) = State::restore_reporting(&dir).unwrap();
    assert_eq!(
        (s.last_lsn(), rep.checkpoint.map(|c| c.0)),
        (end, Some(end))
    );
    let (m, start) = Mmsb::start_reporting(Config::new(&dir)).unwrap();
    assert_eq!(start.checkpoint_lsn, Some(end));
    drop(m);
    match logdir::probe(&dir).unwrap() {
        logdir::DirKind::Log(ident) => assert!(ident.adopted),
        other => panic!("{other:?}"),
    }
    // A version-1 checkpoint in a log created with ids is someone else's.
    let fresh = root.path().join("fresh");
    make(&fresh, 8);
    fs::copy(&info.path, fresh.join(info.path.file_name().unwrap())).unwrap();
    let (_, rep) = State::restore_reporting(&fresh).unwrap();
    assert!(
        matches!(rep.skipped[0].1, Error::ForeignCheckpoint { .. }),
        "{rep:?}"
    );
}
