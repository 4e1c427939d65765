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
