//! Property tests: random and mutated block headers give typed errors, never a panic or UB.
//!
//! The expected outcome of every single-field mutation comes from an independent model of the
//! header rules in `docs/datahub-format.md` (field ranges, region offsets, the layout hash
//! recomputed with BLAKE2b-64 from the documented inputs), checked against real blocks first.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use datahub::{
    Admin, ChecksumPolicy, Config, Consumer, Error, Expectations, Policy, Producer, Schema,
};
use proptest::prelude::*;
use support::BlockGuard;

const MAGIC: u64 = u64::from_le_bytes(*b"DATAHUB1");
const HEADER: u64 = 8192;
const IDENTITY: usize = 192;

// ---------------------------------------------------------------------------------------------
// A model of the identity block, from the format document.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Truncated {
        expected: u64,
        found: u64,
    },
    BadMagic {
        found: u64,
    },
    UnsupportedVersion {
        major: u16,
        minor: u16,
    },
    InvalidHeader {
        field: &'static str,
        value: u64,
    },
    LayoutMismatch {
        expected: u64,
        found: u64,
    },
    /// Only from attach: the block is keyed and the key check does not match.
    KeyMismatch,
}

fn outcome(r: Result<(), Error>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(Error::Truncated { expected, found }) => Outcome::Truncated { expected, found },
        Err(Error::BadMagic { expected, found }) => {
            assert_eq!(expected, MAGIC);
            Outcome::BadMagic { found }
        }
        Err(Error::UnsupportedVersion {
            expected,
            found_major,
            found_minor,
        }) => {
            assert_eq!(expected, 1);
            Outcome::UnsupportedVersion {
                major: found_major,
                minor: found_minor,
            }
        }
        Err(Error::InvalidHeader { field, value }) => Outcome::InvalidHeader { field, value },
        Err(Error::LayoutMismatch { expected, found }) => {
            Outcome::LayoutMismatch { expected, found }
        }
        Err(Error::KeyMismatch { .. }) => Outcome::KeyMismatch,
        Err(e) => panic!("unexpected error kind from a header check: {e:?}"),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// (slot_state_offset, checksum_offset, flex_offset, ring_offset, total_size)
fn regions(slot_size: u32, slot_count: u32, flex: u64) -> [u64; 5] {
    let n = u64::from(slot_count);
    let sso = HEADER;
    let cso = sso + 64 * n;
    let fo = cso + 64 * n;
    let ring = round_up(fo + round_up(flex, 64), 4096);
    let total = round_up(ring + n * u64::from(slot_size), 4096);
    [sso, cso, fo, ring, total]
}

/// BLAKE2b-64 over the documented inputs.
#[allow(clippy::too_many_arguments)]
fn layout_hash(
    policy: u32,
    checksum: u32,
    flags: u32,
    slot_size: u32,
    slot_count: u32,
    flex: u64,
    max: u32,
) -> u64 {
    let r = regions(slot_size, slot_count, flex);
    let mut h = Blake2b::<U8>::new();
    h.update(b"datahub-layout");
    let fixed = [1u64, HEADER, 64, 64, 64, 64, 8];
    let params = [
        policy.into(),
        checksum.into(),
        flags.into(),
        slot_size.into(),
        slot_count.into(),
        flex,
        max.into(),
    ];
    for v in fixed.into_iter().chain(params).chain(r) {
        h.update(v.to_le_bytes());
    }
    u64::from_le_bytes(h.finalize().into())
}

/// What an opener must say about `b` (the first bytes of a segment of `len` bytes).
fn model(b: &[u8], len: u64) -> Outcome {
    if b.len() < IDENTITY || len < HEADER {
        return Outcome::Truncated {
            expected: HEADER,
            found: len,
        };
    }
    let magic = u64_at(b, 0);
    if magic != MAGIC {
        return Outcome::BadMagic { found: magic };
    }
    let (major, minor) = (u16_at(b, 8), u16_at(b, 10));
    if major != 1 {
        return Outcome::UnsupportedVersion { major, minor };
    }
    let bad = |field, value: u64| Outcome::InvalidHeader { field, value };
    if u64::from(u32_at(b, 12)) != HEADER {
        return bad("header_size", u32_at(b, 12).into());
    }
    let policy = u32_at(b, 32);
    if !(1..=3).contains(&policy) {
        return bad("policy", policy.into());
    }
    let checksum = u32_at(b, 36);
    if checksum > 2 {
        return bad("checksum_policy", checksum.into());
    }
    let (slot_size, slot_count, flex) = (u32_at(b, 40), u32_at(b, 44), u64_at(b, 48));
    let (max, flags) = (u32_at(b, 56), u32_at(b, 60));
    if slot_size == 0 || slot_size % 64 != 0 || slot_size > 1 << 30 {
        return bad("slot_size", slot_size.into());
    }
    if slot_count == 0 || slot_count > 1 << 24 {
        return bad("slot_count", slot_count.into());
    }
    if flex > 1 << 30 {
        return bad("flex_zone_size", flex);
    }
    if max == 0 || max > 64 || (policy == 2 && max != 1) {
        return bad("max_consumers", max.into());
    }
    // Bit 0 keyed, bit 1 recent slots (1.2), which needs a lossless policy.
    if flags & !3 != 0 || (flags & 2 != 0 && policy == 1) {
        return bad("flags", flags.into());
    }
    let r = regions(slot_size, slot_count, flex);
    if u64_at(b, 16) != r[4] {
        return bad("total_size", u64_at(b, 16));
    }
    let names = [
        "slot_state_offset",
        "checksum_offset",
        "flex_offset",
        "ring_offset",
    ];
    for (k, field) in names.into_iter().enumerate() {
        if u64_at(b, 128 + 8 * k) != r[k] {
            return bad(field, u64_at(b, 128 + 8 * k));
        }
    }
    let expected = layout_hash(policy, checksum, flags, slot_size, slot_count, flex, max);
    let found = u64_at(b, 24);
    if expected != found {
        return Outcome::LayoutMismatch { expected, found };
    }
    if len < r[4] {
        return Outcome::Truncated {
            expected: r[4],
            found: len,
        };
    }
    Outcome::Ok
}

// ---------------------------------------------------------------------------------------------
// Real blocks to start from.

#[derive(Debug)]
struct Sample {
    /// The whole segment, as its producer left it.
    file: Vec<u8>,
}

impl Sample {
    fn id(&self) -> &[u8] {
        &self.file[..IDENTITY]
    }
    fn len(&self) -> u64 {
        self.file.len() as u64
    }
}

fn configs() -> Vec<Config> {
    vec![
        Config::new(Policy::Sequential).slot_size(64).slot_count(8),
        Config::new(Policy::SequentialSync)
            .slot_size(4096)
            .slot_count(16)
            .checksum(ChecksumPolicy::Enforced)
            .flex_zone_size(100)
            .max_consumers(5),
        Config::new(Policy::Latest)
            .slot_size(128)
            .slot_count(1)
            .checksum(ChecksumPolicy::Manual)
            .checksum_key(KEY)
            .schema(Schema::named("fuzz", 7)),
        Config::new(Policy::Latest)
            .slot_size(192)
            .slot_count(3)
            .flex_zone_size(5000),
    ]
}

fn samples() -> &'static [Sample] {
    static S: OnceLock<Vec<Sample>> = OnceLock::new();
    S.get_or_init(|| {
        configs()
            .into_iter()
            .map(|cfg| {
                let g = BlockGuard::new("fuzz-src");
                let mut p = Producer::create(&g.name, cfg.unlink_on_drop(false)).unwrap();
                p.send(b"x", Duration::from_secs(1)).unwrap();
                drop(p);
                let file = std::fs::read(format!("/dev/shm/{}", g.name)).unwrap();
                Sample { file }
            })
            .collect()
    })
}

#[test]
fn model_agrees_with_real_blocks() {
    for s in samples() {
        assert_eq!(model(s.id(), s.len()), Outcome::Ok, "{:?}", &s.id()[..64]);
        assert_eq!(outcome(datahub::check_header(s.id(), s.len())), Outcome::Ok);
        assert_eq!(
            outcome(datahub::check_header(&s.file, s.len())),
            Outcome::Ok,
            "whole segment"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Single-field mutations.

/// (name, offset, width) of each identity field; the opaque ones (schema, timing, key check)
/// are split into words.
const FIELDS: &[(&str, usize, usize)] = &[
    ("magic", 0, 8),
    ("version_major", 8, 2),
    ("version_minor", 10, 2),
    ("header_size", 12, 4),
    ("total_size", 16, 8),
    ("layout_hash", 24, 8),
    ("policy", 32, 4),
    ("checksum_policy", 36, 4),
    ("slot_size", 40, 4),
    ("slot_count", 44, 4),
    ("flex_zone_size", 48, 8),
    ("max_consumers", 56, 4),
    ("flags", 60, 4),
    ("schema_hash", 64, 8),
    ("schema_hash", 88, 8),
    ("schema_version", 96, 4),
    ("pad", 100, 4),
    ("heartbeat_timeout_ns", 104, 8),
    ("created_unix_ns", 112, 8),
    ("reserved", 120, 8),
    ("slot_state_offset", 128, 8),
    ("checksum_offset", 136, 8),
    ("flex_offset", 144, 8),
    ("ring_offset", 152, 8),
    ("key_check", 160, 8),
    ("key_check", 184, 8),
];

/// `cases` cases; failures are printed (with the minimal input), not written to a
/// regressions file.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn get(b: &[u8], at: usize, width: usize) -> u64 {
    let mut x = [0u8; 8];
    x[..width].copy_from_slice(&b[at..at + width]);
    u64::from_le_bytes(x)
}

fn put(b: &mut [u8], at: usize, width: usize, v: u64) {
    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A new value for a field: random, small, near the old value, or a power of two (so valid
/// but different sizes and codes come up as often as garbage).
fn new_value(old: u64, kind: u8, raw: u64, width: usize) -> u64 {
    let v = match kind {
        0 => raw,
        1 => raw % 6,
        2 => old.wrapping_add(raw % 129).wrapping_sub(64),
        _ => 1u64 << (raw % 64),
    };
    if width == 8 {
        v
    } else {
        v & ((1u64 << (width * 8)) - 1)
    }
}

/// What breaking this one field must give (`new` differs from the original).
fn expected_for(field: &str, s: &Sample, mutated: &[u8], new: u64) -> Outcome {
    let m = model(mutated, s.len());
    // The model decides; the plain rules are also spelt out here, so that a slip in the model
    // cannot make it agree with a wrong implementation on them.
    match field {
        "magic" => assert_eq!(m, Outcome::BadMagic { found: new }),
        "version_major" => assert!(
            matches!(m, Outcome::UnsupportedVersion { major, .. } if u64::from(major) == new)
        ),
        "version_minor"
        | "schema_hash"
        | "schema_version"
        | "pad"
        | "heartbeat_timeout_ns"
        | "created_unix_ns"
        | "reserved"
        | "key_check" => assert_eq!(m, Outcome::Ok),
        "header_size" => assert_eq!(
            m,
            Outcome::InvalidHeader {
                field: "header_size",
                value: new
            }
        ),
        "total_size" => assert_eq!(
            m,
            Outcome::InvalidHeader {
                field: "total_size",
                value: new
            }
        ),
        "layout_hash" => {
            assert!(matches!(m, Outcome::LayoutMismatch { found, .. } if found == new))
        }
        "slot_state_offset" | "checksum_offset" | "flex_offset" | "ring_offset" => {
            assert!(
                matches!(m, Outcome::InvalidHeader { field: f, value } if f == field && value == new)
            )
        }
        "slot_count" if new == 0 => assert_eq!(
            m,
            Outcome::InvalidHeader {
                field: "slot_count",
                value: 0
            }
        ),
        "slot_size" if new == 0 || new % 64 != 0 => {
            assert_eq!(
                m,
                Outcome::InvalidHeader {
                    field: "slot_size",
                    value: new
                }
            )
        }
        "flags" if new > 3 || (new & 2 != 0 && get(mutated, 32, 4) == 1) => assert_eq!(
            m,
            Outcome::InvalidHeader {
                field: "flags",
                value: new
            }
        ),
        "checksum_policy" if new > 2 => {
            assert_eq!(
                m,
                Outcome::InvalidHeader {
                    field: "checksum_policy",
                    value: new
                }
            )
        }
        "policy" if !(1..=3).contains(&new) => assert_eq!(
            m,
            Outcome::InvalidHeader {
                field: "policy",
                value: new
            }
        ),
        // Recent slots (flag bit 1) need a lossless policy.
        "policy" if new == 1 && get(mutated, 60, 4) & 2 != 0 => assert_eq!(
            m,
            Outcome::InvalidHeader {
                field: "flags",
                value: get(mutated, 60, 4)
            }
        ),
        // Sequential allows exactly one consumer.
        "policy" if new == 2 && get(mutated, 56, 4) != 1 => {
            assert_eq!(
                m,
                Outcome::InvalidHeader {
                    field: "max_consumers",
                    value: get(mutated, 56, 4)
                }
            )
        }
        // A valid but different policy, checksum policy or flag: only the layout hash knows.
        "policy" | "checksum_policy" | "flags" => assert!(
            matches!(m, Outcome::LayoutMismatch { .. }),
            "{field}={new}: {m:?}"
        ),
        _ => assert_ne!(m, Outcome::Ok, "{field}={new} should not be accepted"),
    }
    m
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn one_field_mutated_gives_the_matching_typed_error(
        which in 0..4usize,
        field in 0..FIELDS.len(),
        kind in 0..4u8,
        raw in any::<u64>(),
    ) {
        let s = &samples()[which];
        let (name, at, width) = FIELDS[field];
        let old = get(s.id(), at, width);
        let new = new_value(old, kind, raw, width);
        prop_assume!(new != old);
        let mut b = s.id().to_vec();
        put(&mut b, at, width, new);
        let want = expected_for(name, s, &b, new);
        let got = outcome(datahub::check_header(&b, s.len()));
        prop_assert_eq!(got, want, "{} {:#x} -> {:#x}", name, old, new);
    }

    #[test]
    fn truncated_bytes_or_segment_give_truncated(
        which in 0..4usize,
        keep in 0..IDENTITY + 64,
        len_kind in 0..3u8,
        raw in any::<u64>(),
    ) {
        let s = &samples()[which];
        let total = s.len();
        let len = match len_kind {
            0 => raw % HEADER,                   // shorter than a header
            1 => HEADER + raw % (total - HEADER), // a header, not the whole block
            _ => total + raw % (1 << 20),         // whole (or longer)
        };
        let b = &s.file[..keep];
        let got = outcome(datahub::check_header(b, len));
        let want = if keep < IDENTITY || len < HEADER {
            Outcome::Truncated { expected: HEADER, found: len }
        } else if len < total {
            Outcome::Truncated { expected: total, found: len }
        } else {
            Outcome::Ok
        };
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(got, model(b, len));
    }

    #[test]
    fn random_bytes_give_ok_or_a_typed_error(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        len in any::<u64>(),
    ) {
        let got = outcome(datahub::check_header(&bytes, len));
        prop_assert_eq!(got, model(&bytes, len));
    }

    /// Random bytes behind a valid magic, version and header size, so the checks further in
    /// are reached; fields are drawn from small ranges half the time.
    #[test]
    fn random_identity_behind_valid_magic(
        mut bytes in prop::collection::vec(any::<u8>(), IDENTITY..IDENTITY + 8),
        small in prop::collection::vec((0..13usize, 0..70u64), 0..8),
        len in prop_oneof![any::<u64>(), 0..(1u64 << 24)],
    ) {
        put(&mut bytes, 0, 8, MAGIC);
        put(&mut bytes, 8, 2, 1);
        put(&mut bytes, 12, 4, HEADER);
        for (f, v) in small {
            let (_, at, width) = FIELDS[f];
            if at >= 16 {
                put(&mut bytes, at, width, v * if f == 8 { 64 } else { 1 });
            }
        }
        let got = outcome(datahub::check_header(&bytes, len));
        prop_assert_eq!(got, model(&bytes, len));
    }
}

// ---------------------------------------------------------------------------------------------
// The same through real segment files: attach and Admin::open give check_header's error.

fn write_segment(name: &str, bytes: &[u8]) {
    std::fs::write(format!("/dev/shm/{name}"), bytes).unwrap();
}

/// The key sample 2 was made with.
const KEY: [u8; 32] = [3; 32];

/// `Admin::open` of `name` gives `want`, and so does `Consumer::attach` (with the sample's key
/// if it is keyed; `want_attach` overrides: a damaged key check only shows at attach).
fn open_both(name: &str, keyed: bool, want: &Outcome, want_attach: Option<&Outcome>) {
    let exp = if keyed {
        Expectations::new().checksum_key(KEY)
    } else {
        Expectations::new()
    };
    let t = Instant::now();
    let c = Consumer::attach(name, exp).map(drop);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "attach took {:?}",
        t.elapsed()
    );
    assert_eq!(&outcome(c), want_attach.unwrap_or(want), "Consumer::attach");
    let a = Admin::open(name).map(drop);
    assert_eq!(&outcome(a), want, "Admin::open");
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn damaged_segment_files_fail_to_open_with_the_same_error(
        which in 0..4usize,
        field in 0..FIELDS.len(),
        kind in 0..4u8,
        raw in any::<u64>(),
    ) {
        let s = &samples()[which];
        let (name, at, width) = FIELDS[field];
        let old = get(s.id(), at, width);
        let new = new_value(old, kind, raw, width);
        prop_assume!(new != old && !(at == 0 && new == 0)); // magic 0: "not ready", below
        let mut file = s.file.clone();
        put(&mut file, at, width, new);
        let want = outcome(datahub::check_header(&file[..IDENTITY], s.len()));
        prop_assert_eq!(&want, &model(&file, s.len()));
        let g = BlockGuard::new("fuzz-file");
        write_segment(&g.name, &file);
        let keyed = which == 2;
        let key_damaged = (keyed && name == "key_check").then_some(&Outcome::KeyMismatch);
        open_both(&g.name, keyed, &want, key_damaged);
    }

    #[test]
    fn shortened_segment_files_fail_with_truncated(which in 0..4usize, raw in any::<u64>()) {
        let s = &samples()[which];
        let len = 1 + raw % (s.len() - 1);
        let g = BlockGuard::new("fuzz-short");
        write_segment(&g.name, &s.file[..len as usize]);
        let keyed = which == 2;
        let want = if len < HEADER {
            Outcome::Truncated { expected: HEADER, found: len }
        } else {
            Outcome::Truncated { expected: s.len(), found: len }
        };
        open_both(&g.name, keyed, &want, None);
    }
}

#[test]
fn named_header_errors_through_files() {
    let s = &samples()[0];
    let g = BlockGuard::new("fuzz-named");
    let with = |at: usize, width: usize, v: u64| {
        let mut f = s.file.clone();
        put(&mut f, at, width, v);
        f
    };
    let hash = u64_at(s.id(), 24);
    let cases: Vec<(Vec<u8>, Outcome)> = vec![
        (
            with(0, 8, 0x4141_4141),
            Outcome::BadMagic { found: 0x4141_4141 },
        ),
        (
            with(8, 2, 2),
            Outcome::UnsupportedVersion {
                major: 2,
                minor: datahub::layout::VERSION_MINOR,
            },
        ),
        (
            with(44, 4, 0),
            Outcome::InvalidHeader {
                field: "slot_count",
                value: 0,
            },
        ),
        (
            with(24, 8, hash ^ 1),
            Outcome::LayoutMismatch {
                expected: hash,
                found: hash ^ 1,
            },
        ),
        (
            with(16, 8, s.len() * 2),
            Outcome::InvalidHeader {
                field: "total_size",
                value: s.len() * 2,
            },
        ),
        (
            s.file[..s.file.len() - 4096].to_vec(),
            Outcome::Truncated {
                expected: s.len(),
                found: s.len() - 4096,
            },
        ),
        (
            s.file[..100].to_vec(),
            Outcome::Truncated {
                expected: HEADER,
                found: 100,
            },
        ),
        (
            vec![0xAB; 9000],
            Outcome::BadMagic {
                found: 0xABAB_ABAB_ABAB_ABAB,
            },
        ),
        (with(10, 2, 9), Outcome::Ok), // a newer minor version opens
    ];
    for (bytes, want) in cases {
        write_segment(&g.name, &bytes);
        open_both(&g.name, false, &want, None);
    }
}

#[test]
fn unpublished_or_empty_segment_is_not_ready_within_about_a_second() {
    let s = &samples()[0];
    let g = BlockGuard::new("fuzz-unready");
    let mut zero_magic = s.file.clone();
    put(&mut zero_magic, 0, 8, 0);
    for bytes in [zero_magic, Vec::new()] {
        write_segment(&g.name, &bytes);
        let t = Instant::now();
        let r = Consumer::attach(&g.name, Expectations::new());
        let took = t.elapsed();
        assert!(
            matches!(r, Err(Error::NotReady { .. })),
            "{:?}",
            r.map(drop)
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "attach gave up after {took:?}"
        );
        let t = Instant::now();
        assert!(matches!(Admin::open(&g.name), Err(Error::NotReady { .. })));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage behind a valid identity: the runtime part of the header (producer, commit and release
// lines, metrics, spinlocks, consumer table) and the slot-state and checksum arrays. Opening,
// inspecting, recovering, attaching, reading and taking over must give results or typed
// errors, not panics.

/// A word for a runtime field: random, small, near `u64::MAX`, or a state-like code in each
/// half. `bounded`: below 2^40, so counters and indices cannot overflow when added to.
fn garbage(kind: u8, raw: u64, bounded: bool) -> u64 {
    let raw = if bounded { raw % (1 << 40) } else { raw };
    match kind {
        0 => raw,
        2 if !bounded => u64::MAX - raw % 4,
        1 | 2 => raw % 4,
        _ => (raw % 4) | ((raw >> 2) % 4) << 32,
    }
}

fn exercise(name: &str, cfg: Config, keyed: bool) {
    let t = Duration::from_millis(2);
    if let Ok(a) = Admin::open(name) {
        let _ = a.info();
        let _ = a.diagnose();
        let _ = a.metrics();
        let _ = a.validate(false);
        let _ = a.auto_recover(true);
        let _ = a.validate(true);
        let _ = a.auto_recover(false);
    }
    let exp = if keyed {
        Expectations::new().checksum_key(KEY)
    } else {
        Expectations::new()
    };
    if let Ok(mut c) = Consumer::attach(name, exp) {
        for _ in 0..3 {
            if let Ok(Some(g)) = c.try_read() {
                let _ = g.iter().map(|&b| u64::from(b)).sum::<u64>();
                let _ = g.release();
            }
        }
        let _ = c.read(t).map(drop);
        let _ = c.seek_to(0);
        c.seek_latest();
        let _ = c.metrics();
    }
    if let Ok((mut p, _)) = Producer::create_or_take_over(name, cfg.unlink_on_drop(false)) {
        for _ in 0..3 {
            let _ = p.send(b"after garbage", t);
        }
        let _ = p.metrics();
    }
}

/// Writes `words` of garbage over sample `which`'s runtime state and runs every operation on it.
fn garbage_case(
    which: usize,
    words: Vec<(u64, u8, u64)>,
    bounded: bool,
) -> Result<(), TestCaseError> {
    let s = &samples()[which];
    let ring = u64_at(s.id(), 152) as usize;
    let mut file = s.file.clone();
    for (pos, kind, raw) in words {
        let at = IDENTITY + (pos as usize % ((ring - IDENTITY) / 8)) * 8;
        put(&mut file, at, 8, garbage(kind, raw, bounded));
    }
    prop_assert_eq!(
        outcome(datahub::check_header(&file[..IDENTITY], s.len())),
        Outcome::Ok
    );
    let g = BlockGuard::new("fuzz-state");
    write_segment(&g.name, &file);
    let started = Instant::now();
    exercise(&g.name, configs().swap_remove(which), which == 2);
    prop_assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn garbage_runtime_state_gives_no_panic(
        which in 0..4usize,
        words in prop::collection::vec((any::<u64>(), 0..4u8, any::<u64>()), 1..48),
    ) {
        garbage_case(which, words, true)?;
    }

    /// As above with values up to `u64::MAX`: sums of counters and indices read from the block
    /// overflow, which panics in debug builds.
    #[test]
    fn garbage_runtime_state_near_u64_max_gives_no_panic(
        which in 0..4usize,
        words in prop::collection::vec((any::<u64>(), 0..4u8, any::<u64>()), 1..48),
    ) {
        garbage_case(which, words, false)?;
    }
}
