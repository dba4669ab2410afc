//! The handshake's frames and MACs (`docs/datahub-format.md`, "Secure attach").
//!
//! ```text
//! offset  size  field
//!      0     4  magic      b"DHSA"
//!      4     1  version    1
//!      5     1  kind       HELLO 1 | CHALLENGE 2 | PROOF 3 | ACCEPT 4 | REFUSE 5
//!      6     2  length     payload bytes, little-endian; fixed per kind (32, or 1 for REFUSE)
//!      8     …  payload
//! ```

use std::io::{self, Read};
use std::os::fd::AsFd;

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};

/// `b"DHSA"`.
pub(crate) const MAGIC: [u8; 4] = *b"DHSA";
/// Frame format version.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 8;
/// Nonce and MAC length.
pub(crate) const NONCE_LEN: usize = 32;
/// The largest payload of any frame.
pub(crate) const MAX_PAYLOAD: usize = 32;
/// The largest frame.
pub(crate) const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;

/// Label of the consumer's MAC.
pub(crate) const LABEL_CONSUMER: &[u8; 16] = b"dhsa consumer v1";
/// Label of the producer's MAC.
pub(crate) const LABEL_PRODUCER: &[u8; 16] = b"dhsa producer v1";

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Consumer → producer: the consumer's nonce.
    Hello = 1,
    /// Producer → consumer: the producer's nonce.
    Challenge = 2,
    /// Consumer → producer: the consumer's MAC.
    Proof = 3,
    /// Producer → consumer: the producer's MAC, with the block's memfd (`SCM_RIGHTS`).
    Accept = 4,
    /// Producer → consumer: one reason byte ([`Refusal`]), then the producer closes.
    Refuse = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Proof,
            4 => Kind::Accept,
            5 => Kind::Refuse,
            _ => return None,
        })
    }

    /// The payload length of this kind.
    pub(crate) fn payload_len(self) -> usize {
        match self {
            Kind::Refuse => 1,
            _ => NONCE_LEN,
        }
    }
}

/// The reason byte of a REFUSE frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The peer's credentials are not allowed.
    Peer = 1,
    /// The peer's MAC is wrong (it does not hold the key).
    Key = 2,
    /// The producer is busy with `max_handshakes` handshakes.
    Busy = 3,
}

impl Refusal {
    pub(crate) fn text(b: u8) -> &'static str {
        match b {
            1 => "the producer does not allow this user (peer credentials)",
            2 => "the producer refused the key (wrong key)",
            3 => "the producer is busy with other handshakes",
            _ => "the producer refused (unknown reason)",
        }
    }
}

/// Encodes a frame of `kind` with `payload` (of the kind's length).
pub(crate) fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    debug_assert_eq!(payload.len(), kind.payload_len());
    let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
    f.extend_from_slice(&MAGIC);
    f.push(VERSION);
    f.push(kind as u8);
    f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Checks a frame header: `Ok((kind, payload_len))` or what is wrong.
pub(crate) fn check_header(h: &[u8; HEADER_LEN]) -> Result<(Kind, usize), String> {
    if h[..4] != MAGIC {
        return Err(format!("bad frame magic {:02x?}", &h[..4]));
    }
    if h[4] != VERSION {
        return Err(format!("frame version {}, expected {VERSION}", h[4]));
    }
    let kind = Kind::from_u8(h[5]).ok_or_else(|| format!("unknown frame kind {}", h[5]))?;
    let len = u16::from_le_bytes([h[6], h[7]]) as usize;
    if len != kind.payload_len() {
        return Err(format!(
            "frame kind {} with {len} payload bytes, expected {}",
            h[5],
            kind.payload_len()
        ));
    }
    Ok((kind, len))
}

/// Reads one whole frame: `Ok((kind, payload))`. `Err(Ok(why))`: a malformed frame;
/// `Err(Err(e))`: an I/O error (a timeout is `WouldBlock`/`TimedOut`; the end of the stream is
/// `UnexpectedEof`).
pub(crate) fn read_frame(
    r: &mut impl Read,
) -> Result<(Kind, [u8; MAX_PAYLOAD]), Result<String, io::Error>> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).map_err(Err)?;
    let (kind, len) = check_header(&h).map_err(Ok)?;
    let mut p = [0u8; MAX_PAYLOAD];
    r.read_exact(&mut p[..len]).map_err(Err)?;
    Ok((kind, p))
}

/// Writes `frame` whole without raising `SIGPIPE` when the peer is gone.
pub(crate) fn send_all(fd: impl AsFd, mut frame: &[u8]) -> io::Result<()> {
    while !frame.is_empty() {
        match rustix::net::send(&fd, frame, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => frame = &frame[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The MAC of one side: BLAKE2b-256 keyed with the block's key over
/// `magic ‖ version ‖ label ‖ nonce_c ‖ nonce_p ‖ consumer_pid ‖ producer_pid` (pids as u32
/// little-endian, each side's as `SO_PEERCRED` reports it to the other).
pub(crate) fn mac(
    key: &[u8; 32],
    label: &[u8; 16],
    nonce_c: &[u8; NONCE_LEN],
    nonce_p: &[u8; NONCE_LEN],
    consumer_pid: u32,
    producer_pid: u32,
) -> Blake2bMac<U32> {
    let mut m = <Blake2bMac<U32> as KeyInit>::new_from_slice(key).expect("32-byte key");
    Mac::update(&mut m, &MAGIC);
    Mac::update(&mut m, &[VERSION]);
    Mac::update(&mut m, label);
    Mac::update(&mut m, nonce_c);
    Mac::update(&mut m, nonce_p);
    Mac::update(&mut m, &consumer_pid.to_le_bytes());
    Mac::update(&mut m, &producer_pid.to_le_bytes());
    m
}

/// The MAC's 32 bytes.
pub(crate) fn mac_bytes(m: Blake2bMac<U32>) -> [u8; 32] {
    m.finalize().into_bytes().into()
}

/// Whether `tag` is the MAC `m` (constant time).
pub(crate) fn mac_ok(m: Blake2bMac<U32>, tag: &[u8]) -> bool {
    m.verify_slice(tag).is_ok()
}

/// A fresh nonce from the kernel's random source.
pub(crate) fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    let mut filled = 0;
    while filled < NONCE_LEN {
        match rustix::rand::getrandom(&mut n[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_headers_are_refused() {
        let f = encode(Kind::Hello, &[7; 32]);
        let (k, p) = read_frame(&mut &f[..]).unwrap();
        assert_eq!((k, p), (Kind::Hello, [7; 32]));
        let mut bad = f.clone();
        bad[0] = b'X';
        assert!(matches!(read_frame(&mut &bad[..]), Err(Ok(_))));
        let mut bad = f.clone();
        bad[4] = 2;
        assert!(matches!(read_frame(&mut &bad[..]), Err(Ok(_))));
        let mut bad = f.clone();
        bad[6] = 200; // oversized
        assert!(matches!(read_frame(&mut &bad[..]), Err(Ok(_))));
        let mut bad = f;
        bad[5] = 9;
        assert!(matches!(read_frame(&mut &bad[..]), Err(Ok(_))));
        assert!(matches!(read_frame(&mut &b"DHSA"[..]), Err(Err(_))));
    }

    #[test]
    fn macs_differ_by_label_key_nonce_and_pid() {
        let k = [1; 32];
        let (a, b) = ([2; 32], [3; 32]);
        let base = mac_bytes(mac(&k, LABEL_CONSUMER, &a, &b, 10, 20));
        assert!(mac_ok(mac(&k, LABEL_CONSUMER, &a, &b, 10, 20), &base));
        for other in [
            mac(&k, LABEL_PRODUCER, &a, &b, 10, 20),
            mac(&[9; 32], LABEL_CONSUMER, &a, &b, 10, 20),
            mac(&k, LABEL_CONSUMER, &b, &a, 10, 20),
            mac(&k, LABEL_CONSUMER, &a, &b, 11, 20),
            mac(&k, LABEL_CONSUMER, &a, &b, 10, 21),
        ] {
            assert!(!mac_ok(other, &base));
        }
    }
}
