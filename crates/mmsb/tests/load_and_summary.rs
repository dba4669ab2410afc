//! `State::load` (one entry point for "a state" given by path) and `LogSummary` (what a log
//! holds, counted in one pass): the library halves of `mmsb diff`/`stats` and `mmsb log inspect`.

use std::collections::BTreeMap;
use std::path::Path;

use mmsb::frame::FrameBody;
use mmsb::tlog::LogReader;
use mmsb::{Body, Config, Error, Lsn, Mmsb, PageId, State, checkpoint};

/// A log with two pages, `writes` writes to the first, a checkpoint after `before` writes, and
/// the rest after it. Returns the checkpoint file.
fn make(dir: &Path, before: u8, writes: u8) -> std::path::PathBuf {
    let mut m = Mmsb::start(Config::new(dir)).unwrap();
    let a = m.create_page(64).unwrap();
    let b = m.create_page(16).unwrap();
    m.write_range(b, 0, b"xyz").unwrap();
    let mut ckpt = None;
    for i in 0..writes {
        if i == before {
            ckpt = Some(m.checkpoint().unwrap().path);
        }
        m.write_range(a, usize::from(i % 60), &[i + 1, i + 1])
            .unwrap();
    }
    m.stop().unwrap();
    ckpt.expect("before < writes")
}

fn same(a: &State, b: &State) -> bool {
    a.last_lsn() == b.last_lsn() && mmsb::diff(a, b).unwrap().is_empty()
}

#[test]
fn state_load_reads_a_log_directory_a_segment_a_checkpoint_file_and_a_directory_of_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    let ckpt = make(&log, 5, 12);
    let restored = State::restore(&log).unwrap();

    // A log directory: restore, from the checkpoint.
    let (s, report) = State::load_reporting(&log).unwrap();
    assert!(same(&s, &restored));
    assert_eq!(report.checkpoint.as_ref().map(|(_, p)| p), Some(&ckpt));

    // A segment file: replayed from empty, to the same end.
    let seg = LogReader::open(&log).unwrap().segments().unwrap()[0]
        .1
        .clone();
    let (s, report) = State::load_reporting(&seg).unwrap();
    assert!(same(&s, &restored));
    assert!(report.checkpoint.is_none());

    // A checkpoint file: its own LSN, not the log's end.
    let at_ckpt = State::load(&ckpt).unwrap();
    assert!(at_ckpt.last_lsn() < restored.last_lsn());
    assert!(same(
        &at_ckpt,
        &State::from_checkpoint(checkpoint::read(&ckpt).unwrap()).unwrap()
    ));

    // A directory with no log, only (detached) checkpoints: the newest.
    let detached = t.path().join("detached");
    std::fs::create_dir(&detached).unwrap();
    checkpoint::write(
        &detached,
        at_ckpt.last_lsn(),
        at_ckpt.next_page_id(),
        at_ckpt.pages(),
    )
    .unwrap();
    let newest = checkpoint::write(
        &detached,
        restored.last_lsn(),
        restored.next_page_id(),
        restored.pages(),
    )
    .unwrap();
    let (s, report) = State::load_reporting(&detached).unwrap();
    assert!(same(&s, &restored));
    assert_eq!(report.checkpoint, Some((restored.last_lsn(), newest.path)));

    // A directory holding neither: refused, as a log reader refuses it.
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"hello").unwrap();
    assert!(matches!(State::load(&other), Err(Error::NotALog { .. })));
}

#[test]
fn log_summary_counts_each_frame_the_reader_yields_once() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    make(&log, 3, 9);
    let reader = LogReader::open(&log).unwrap();
    let frames: Vec<_> = reader.frames().unwrap().map(Result::unwrap).collect();
    let mut visited = Vec::new();
    let s = reader
        .summary_with(|at| visited.push(at.frame.lsn))
        .unwrap();

    assert_eq!(
        visited,
        frames.iter().map(|f| f.frame.lsn).collect::<Vec<_>>()
    );
    assert_eq!(s.frames, frames.len() as u64);
    assert_eq!(s.first_lsn, Some(Lsn(1)));
    assert_eq!(s.last_lsn, frames.last().map(|f| f.frame.lsn));
    assert_eq!(
        s.frame_bytes,
        frames.iter().map(|f| u64::from(f.len)).sum::<u64>()
    );
    assert_eq!(s.kinds.values().sum::<u64>(), s.frames);
    assert_eq!(s.segments, reader.segments().unwrap());
    assert!(s.tail.is_none());

    // Per page: 9 two-byte writes to page 1, one three-byte write to page 2.
    let mut deltas: BTreeMap<PageId, u64> = BTreeMap::new();
    let mut payload = 0u64;
    for f in &frames {
        if let FrameBody::Delta(body) = &f.frame.body {
            *deltas.entry(f.frame.page).or_default() += 1;
            payload += match body {
                Body::Dense(b) => b.len(),
                Body::Sparse { payload, .. } => payload.len(),
            } as u64;
        }
    }
    assert_eq!(s.payload_bytes, payload);
    assert_eq!(s.pages.len(), 2);
    for (page, tally) in &s.pages {
        assert_eq!(tally.deltas, deltas[page], "{page}");
    }
    assert_eq!(
        s.kinds.get("delta").copied(),
        Some(deltas.values().sum::<u64>())
    );
    assert_eq!(s.delta_sources.get("user").copied(), Some(10));
}
