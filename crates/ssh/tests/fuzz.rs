//! Property-based fuzzing of known_hosts parsing and fingerprints: no file
//! content panics a lookup, lines written in OpenSSH's format are found
//! again, and a printed fingerprint parses back. Budget: `PROPTEST_CASES`
//! (256 by default; `make fuzz` 100 000).

use base64::Engine as _;
use homestak_ssh::{Fingerprint, KnownHosts};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An ed25519 public key in OpenSSH's base64 wire form, from 32 bytes.
fn ed25519_b64(key: &[u8; 32]) -> String {
    let mut wire = Vec::new();
    for part in [b"ssh-ed25519".as_slice(), key.as_slice()] {
        wire.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(part);
    }
    base64::engine::general_purpose::STANDARD.encode(wire)
}

/// Lines biased to what known_hosts parsing splits on.
fn line() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(vec![
                "[127.0.0.7]:2222", "127.0.0.7", " ", "\t", ",", "#", "@revoked", "@cert-authority",
                "|1|", "|1|AAAA|BBBB", "ssh-ed25519", "ssh-rsa", "AAAAC3NzaC1lZDI1NTE5",
                "AAAA", "=", "*", "?", "!", "[", "]", ":",
            ])
            .prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_known_hosts_lines(lines in proptest::collection::vec(line(), 0..8)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let known = KnownHosts::new(&path);
        block_on(async {
            for (host, port) in [("127.0.0.7", 2222), ("127.0.0.7", 22), ("other", 22)] {
                let _ = known.recorded(host, port).await;
            }
            let _ = known.forget("127.0.0.7", 2222).await;
        });
    }

    #[test]
    fn fuzz_known_hosts_finds_what_was_written(
        keys in proptest::collection::vec((any::<[u8; 32]>(), 1u16..u16::MAX), 1..6),
        noise in proptest::collection::vec(line(), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let mut text = String::new();
        for line in &noise {
            // Noise for other hosts only: it must not hide our entries.
            text.push_str(&format!("# {line}\n"));
        }
        for (key, port) in &keys {
            let pattern = if *port == 22 {
                "127.0.0.9".to_string()
            } else {
                format!("[127.0.0.9]:{port}")
            };
            text.push_str(&format!("{pattern} ssh-ed25519 {}\n", ed25519_b64(key)));
        }
        std::fs::write(&path, text).unwrap();
        let known = KnownHosts::new(&path);
        for (key, port) in &keys {
            let recorded = block_on(known.recorded("127.0.0.9", *port)).unwrap();
            let wanted = russh::keys::parse_public_key_base64(&ed25519_b64(key)).unwrap();
            prop_assert!(recorded.contains(&Fingerprint::of(&wanted)));
        }
    }

    #[test]
    fn fuzz_fingerprints(bytes in any::<[u8; 32]>(), text in ".{0,60}") {
        let fingerprint = Fingerprint::from_bytes(bytes);
        let again: Fingerprint = fingerprint.to_string().parse().unwrap();
        prop_assert_eq!(again, fingerprint);
        let _ = text.parse::<Fingerprint>();
    }
}
