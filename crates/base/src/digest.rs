//! SHA-256 digests and hex text, in one place: TLS and SSH host-key
//! fingerprints, API token digests, and the short content ids homestak uses
//! as revisions (`subtree:…`, `worktree:…`) and spec hashes (`sha256:…`).

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A short content id: the first 8 bytes of a SHA-256 digest as 16 hex
/// digits. Enough to tell revisions apart, short enough to read.
pub fn short_hex(digest: &[u8; 32]) -> String {
    hex(&digest[..8])
}

/// Exactly `2 * N` hex digits (either case, surrounding white space
/// ignored) as `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim().as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks `tag` against the HMAC-SHA-256 of `data` under `key`, in
/// constant time. A tag shorter than the full MAC is compared as a prefix
/// (at least 8 bytes; anything shorter never verifies).
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if tag.len() < 8 || tag.len() > 32 {
        return false;
    }
    let mac = hmac_sha256(key, data);
    bool::from(mac[..tag.len()].ct_eq(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_hex_match_known_values() {
        let d = sha256(b"abc");
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_hex(&d), "ba7816bf8f01cfea");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2_and_verifies_in_full_or_prefix() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let data = b"what do ya want for nothing?";
        assert!(hmac_sha256_verify(b"Jefe", data, &mac));
        assert!(hmac_sha256_verify(b"Jefe", data, &mac[..8]));
        assert!(!hmac_sha256_verify(b"Jefe", data, &mac[..7]));
        assert!(!hmac_sha256_verify(b"jefe", data, &mac));
        let mut bad = mac;
        bad[31] ^= 1;
        assert!(!hmac_sha256_verify(b"Jefe", data, &bad));
    }

    #[test]
    fn parse_hex_round_trips_and_refuses_the_rest() {
        let d = sha256(b"abc");
        assert_eq!(parse_hex::<32>(&hex(&d)), Some(d));
        assert_eq!(parse_hex::<32>(&hex(&d).to_uppercase()), Some(d));
        assert_eq!(parse_hex::<2>(" 0aFf\n"), Some([0x0a, 0xff]));
        for bad in ["", "0", "0a0", "0g", "+1", "é0", "0a:ff"] {
            assert_eq!(parse_hex::<1>(bad), None, "{bad:?}");
        }
        assert_eq!(parse_hex::<2>("0a:f"), None);
    }
}
