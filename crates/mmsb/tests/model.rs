//! Property tests against a plain model: pages as `Vec<u8>`.
//!
//! Random operation sequences (create, update, write_range, batches, checkpoints, restarts) run
//! on a real bus in a temp dir and on the model; after every sequence the live state equals the
//! model, replay from the log equals the live state, and a restart (checkpoint + log suffix)
//! equals it too. Delta algebra: merge laws, `diff(a, b)` applied to `a` gives `b`.

use mmsb::tlog::Durability;
use mmsb::{Config, Delta, Mask, Mmsb, PageId, ReplayTarget, State, diff};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Update {
        page: usize,
        seed: u8,
        density: u8,
    },
    Write {
        page: usize,
        offset: usize,
        bytes: Vec<u8>,
    },
    Batch(Vec<(usize, usize, Vec<u8>)>),
    Checkpoint,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1usize..300).prop_map(Op::Create),
        4 => (any::<usize>(), any::<u8>(), any::<u8>()).prop_map(|(page, seed, density)| Op::Update { page, seed, density }),
        6 => (any::<usize>(), any::<usize>(), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(page, offset, bytes)| Op::Write { page, offset, bytes }),
        2 => prop::collection::vec((any::<usize>(), any::<usize>(), prop::collection::vec(any::<u8>(), 1..20)), 1..6).prop_map(Op::Batch),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
    ]
}

/// Deterministic page contents from a seed: a fraction `density/255` of bytes changes.
fn derive(old: &[u8], seed: u8, density: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    old.iter()
        .map(|&b| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (x & 0xff) as u8 <= density {
                (x >> 8) as u8
            } else {
                b
            }
        })
        .collect()
}

fn clamp_write(
    model: &[Vec<u8>],
    page: usize,
    offset: usize,
    bytes: &[u8],
) -> Option<(usize, usize, Vec<u8>)> {
    if model.is_empty() {
        return None;
    }
    let p = page % model.len();
    let size = model[p].len();
    let off = offset % size;
    let n = bytes.len().min(size - off);
    Some((p, off, bytes[..n].to_vec()))
}

fn check_equal(bus: &Mmsb, model: &[Vec<u8>]) {
    assert_eq!(bus.state().len(), model.len());
    for (i, want) in model.iter().enumerate() {
        let got = bus.query_page(PageId(i as u64 + 1)).unwrap();
        assert_eq!(got.bytes(), &want[..], "page {}", i + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn bus_matches_model_and_replay_matches_bus(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let config = || Config::new(dir.path()).durability(Durability::Buffered);
        let mut bus = Mmsb::start(config()).unwrap();
        let mut model: Vec<Vec<u8>> = Vec::new();
        for op in ops {
            match op {
                Op::Create(size) => {
                    let id = bus.create_page(size).unwrap();
                    model.push(vec![0; size]);
                    prop_assert_eq!(id, PageId(model.len() as u64));
                }
                Op::Update { page, seed, density } => {
                    if model.is_empty() { continue; }
                    let p = page % model.len();
                    let new = derive(&model[p], seed, density);
                    let r = bus.update_page(PageId(p as u64 + 1), &new).unwrap();
                    prop_assert_eq!(r.is_some(), new != model[p], "a delta exactly when bytes change");
                    model[p] = new;
                }
                Op::Write { page, offset, bytes } => {
                    let Some((p, off, bytes)) = clamp_write(&model, page, offset, &bytes) else { continue };
                    bus.write_range(PageId(p as u64 + 1), off, &bytes).unwrap();
                    model[p][off..off + bytes.len()].copy_from_slice(&bytes);
                }
                Op::Batch(writes) => {
                    bus.begin_batch().unwrap();
                    for (page, offset, bytes) in writes {
                        let Some((p, off, bytes)) = clamp_write(&model, page, offset, &bytes) else { continue };
                        bus.write_range(PageId(p as u64 + 1), off, &bytes).unwrap();
                        model[p][off..off + bytes.len()].copy_from_slice(&bytes);
                    }
                    bus.commit().unwrap();
                }
                Op::Checkpoint => {
                    bus.checkpoint().unwrap();
                }
                Op::Restart => {
                    bus.stop().unwrap();
                    bus = Mmsb::start(config()).unwrap();
                }
            }
            check_equal(&bus, &model);
        }
        bus.verify_consistency().unwrap();
        let replayed = bus.replay_to(ReplayTarget::End).unwrap();
        prop_assert_eq!(replayed.hashes(), bus.state().hashes());
        bus.stop().unwrap();
        let restored = State::restore(dir.path()).unwrap();
        for (i, want) in model.iter().enumerate() {
            prop_assert_eq!(restored.page(PageId(i as u64 + 1)).unwrap().bytes(), &want[..]);
        }
    }

    #[test]
    fn merge_equals_sequential_apply(
        base in prop::collection::vec(any::<u8>(), 1..400),
        a in prop::collection::vec((any::<usize>(), prop::collection::vec(any::<u8>(), 0..70)), 0..5),
        b in prop::collection::vec((any::<usize>(), prop::collection::vec(any::<u8>(), 0..70)), 0..5),
        c in prop::collection::vec((any::<usize>(), prop::collection::vec(any::<u8>(), 0..70)), 0..5),
        dense in 0u8..4,
    ) {
        let n = base.len();
        let mk = |ws: &[(usize, Vec<u8>)], salt: u8| -> Delta {
            let mut target = base.clone();
            for (off, bytes) in ws {
                let off = off % n;
                let k = bytes.len().min(n - off);
                for (i, &x) in bytes[..k].iter().enumerate() { target[off + i] = x ^ salt; }
            }
            // Unconditional writes (not a diff), so masks overlap in interesting ways.
            let ranges: Vec<(usize, usize)> = ws.iter().map(|(o, b)| (o % n, b.len().min(n - o % n))).collect();
            let mask = Mask::from_ranges(&ranges);
            let mut payload = Vec::new();
            mask.for_each_run(|o, l| payload.extend_from_slice(&target[o..o + l]));
            Delta::sparse(PageId(1), mask, payload).unwrap()
        };
        let mut da = mk(&a, 0);
        let db = mk(&b, 0x55);
        let dc = mk(&c, 0xAA);
        if dense == 0 { da = da.to_dense(&base).unwrap(); }
        let seq = |ds: &[&Delta]| { let mut x = base.clone(); for d in ds { d.apply(&mut x).unwrap(); } x };
        let ab = da.merge(&db).unwrap();
        prop_assert_eq!(seq(&[&ab]), seq(&[&da, &db]), "apply(merge(a,b)) == apply(b, apply(a))");
        let left = ab.merge(&dc).unwrap();
        let right = da.merge(&db.merge(&dc).unwrap()).unwrap();
        prop_assert_eq!(seq(&[&left]), seq(&[&right]), "merge is associative in effect");
        prop_assert_eq!(seq(&[&left]), seq(&[&da, &db, &dc]));
        if let (Some(ma), Some(mb), Some(mab)) = (da.mask(), db.mask(), ab.mask()) {
            prop_assert_eq!(mab, &ma.union(mb), "masks are OR-ed");
        }
        let idem = db.merge(&db).unwrap();
        prop_assert_eq!(seq(&[&idem]), seq(&[&db]), "merge(b, b) == b");
    }

    #[test]
    fn diff_applied_to_a_gives_b(
        a in prop::collection::vec(any::<u8>(), 1..700),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..60),
        offset in any::<usize>(),
    ) {
        let mut b = a.clone();
        for (i, x) in &flips { let i = i % b.len(); b[i] = *x; }
        match Delta::diff(PageId(3), &a, &b) {
            None => prop_assert_eq!(&a, &b),
            Some(d) => {
                let mut x = a.clone();
                d.apply(&mut x).unwrap();
                prop_assert_eq!(&x, &b);
                if let Some(m) = d.mask() {
                    let changed = a.iter().zip(&b).filter(|(p, q)| p != q).count();
                    prop_assert_eq!(m.count(), changed, "the mask selects exactly the changed bytes");
                }
            }
        }
        // diff_at on a sub-range.
        let off = offset % a.len();
        let new = &b[off..];
        if let Some(d) = Delta::diff_at(PageId(3), &a, off, new) {
            let mut x = a.clone();
            d.apply(&mut x).unwrap();
            prop_assert_eq!(&x[off..], new);
            prop_assert_eq!(&x[..off], &a[..off]);
        } else {
            prop_assert_eq!(&a[off..], new);
        }
    }

    #[test]
    fn state_diff_round_trip(pages in prop::collection::vec((1usize..200, any::<u8>(), any::<u8>()), 1..6)) {
        let mut sa = State::new();
        let mut sb = State::new();
        for (i, (size, seed, density)) in pages.iter().enumerate() {
            let id = PageId(i as u64 + 1);
            sa.create(id, *size, mmsb::Location::Cpu).unwrap();
            sb.create(id, *size, mmsb::Location::Cpu).unwrap();
            let bytes = derive(&vec![0; *size], *seed, *density);
            if let Some(d) = Delta::diff(id, &vec![0; *size], &bytes) { sb.apply(&d).unwrap(); }
        }
        let mut x = sa.clone();
        for d in diff(&sa, &sb).unwrap() { x.apply(&d).unwrap(); }
        for p in sb.pages() {
            prop_assert_eq!(x.page(p.id()).unwrap().bytes(), p.bytes());
        }
    }
}
