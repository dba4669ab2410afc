//! The frame codec: round trips of every kind, the COMMIT flag, the choice of mask encoding,
//! corrupt fields behind a valid CRC, and property tests (round trip, random bytes and
//! mutations never panic, a single flipped bit is always caught).

use mmsb::frame::{self, BodyRef, DecodeError, Frame, FrameBody, FrameKind, MaskEncoding};
use mmsb::{Body, Location, Lsn, Mask, PageId, Source};
use proptest::prelude::*;

mod tlog_support;
use tlog_support::*;

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
