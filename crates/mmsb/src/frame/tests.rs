//! Unit tests of the frame codec's private helpers.

use super::decode::get_varint;
use super::encode::{put_varint, runs_until, varint_len};
use super::*;
fn enc(body: BodyRef<'_>, commit: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let n = encode_into(
        &mut out,
        Lsn(7),
        PageId(3),
        9,
        1234,
        Source::Propagation,
        commit,
        body,
    );
    assert_eq!(n, out.len());
    assert_eq!(n, encoded_len(body));
    out
}

#[test]
fn varint_len_matches_encoder() {
    for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "{v}");
        let mut at = 0;
        assert_eq!(get_varint(&out, &mut at).unwrap(), v);
        assert_eq!(at, out.len());
    }
    assert!(get_varint(&[0x80, 0x00], &mut 0).is_err(), "non-minimal");
    assert!(get_varint(&[0xff; 10], &mut 0).is_err(), "overflow");
}

#[test]
fn run_helpers() {
    let m = Mask::from_ranges(&[(3, 5), (63, 2), (128, 64), (300, 1)]);
    let mut v = Vec::new();
    runs_until(&m, |o, l| {
        v.push((o, l));
        true
    });
    assert_eq!(v, m.runs());
}

#[test]
fn sparse_round_trip_both_encodings() {
    // One run: run-length wins.
    let m = Mask::from_ranges(&[(1000, 16)]);
    let body = Body::Sparse {
        mask: m,
        payload: (0..16).collect(),
    };
    let out = enc(BodyRef::Delta(&body), true);
    assert_eq!(out[42], 2);
    let (f, n) = decode(&out).unwrap();
    assert_eq!(n, out.len());
    assert_eq!(f.body, FrameBody::Delta(body));
    // Alternating bits: bit-packed wins.
    let ranges: Vec<(usize, usize)> = (0..64).map(|i| (i * 2, 1)).collect();
    let m = Mask::from_ranges(&ranges);
    let body = Body::Sparse {
        mask: m,
        payload: vec![5; 64],
    };
    let out = enc(BodyRef::Delta(&body), false);
    assert_eq!(out[42], 1);
    let (f, _) = decode(&out).unwrap();
    assert_eq!(f.body, FrameBody::Delta(body));
    assert!(!f.commit);
}

#[test]
fn decode_detects_flip_and_short_buffers() {
    let body = Body::Dense(vec![1, 2, 3]);
    let mut out = enc(BodyRef::Delta(&body), true);
    out[45] ^= 1;
    assert!(matches!(decode(&out), Err(DecodeError::Corrupt(_))));
    assert_eq!(decode(&out[..10]), Err(DecodeError::Incomplete));
    assert_eq!(decode(&out[..3]), Err(DecodeError::Incomplete));
}
