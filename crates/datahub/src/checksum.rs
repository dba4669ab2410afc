//! BLAKE2b-256 slot checksums (RFC 7693), plain or keyed (BLAKE2b's own MAC mode, 32-byte key).

use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2b, Blake2bMac, Digest};

/// A 32-byte BLAKE2b-256 digest.
pub type Digest32 = [u8; 32];

/// BLAKE2b-256 of `data`, or its BLAKE2b MAC under `key`.
pub fn digest(key: Option<&[u8; 32]>, data: &[u8]) -> Digest32 {
    match key {
        None => Blake2b::<U32>::digest(data).into(),
        Some(k) => {
            let mut m = <Blake2bMac<U32> as KeyInit>::new_from_slice(k).expect("32-byte key");
            Mac::update(&mut m, data);
            m.finalize().into_bytes().into()
        }
    }
}

/// The key check stored in a keyed block's header: the MAC of a fixed string, so a consumer
/// with the wrong key is refused at attach instead of failing every read.
pub(crate) fn key_check(key: &[u8; 32]) -> Digest32 {
    digest(Some(key), b"datahub key check v1")
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2b_256_test_vector() {
        // BLAKE2b-256("abc"), from the reference implementation's test vectors.
        assert_eq!(
            hex(&digest(None, b"abc")),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
    }

    #[test]
    fn keyed_differs_by_key() {
        let a = digest(Some(&[1; 32]), b"x");
        let b = digest(Some(&[2; 32]), b"x");
        assert_ne!(a, b);
        assert_ne!(a, digest(None, b"x"));
        assert_ne!(key_check(&[1; 32]), key_check(&[2; 32]));
    }
}
