//! `openssl x509`: enough to read a certificate's fingerprint over SSH, as
//! a bootstrap does to pin a PVE host's API certificate:
//!
//! ```text
//! $ openssl x509 -noout -fingerprint -sha256 -in /etc/pve/local/pve-ssl.pem
//! sha256 Fingerprint=AA:BB:…
//! ```
//!
//! Options: `-in FILE` (default stdin), `-inform PEM`, `-noout`,
//! `-fingerprint`, and the digests `-sha1`, `-sha256`, `-sha384`,
//! `-sha512` (default sha1). Output and error lines are OpenSSL 3's
//! (Debian 12 and 13); without `-noout` the certificate follows in PEM.

use base64::Engine;
use tokio::io::AsyncReadExt;

use crate::ssh::Context;
use homestak_ssh::BoxFuture;

pub(crate) struct Openssl;

/// The first PEM certificate in `text`, as DER.
pub fn first_certificate(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = text.find(begin)? + begin.len();
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `AA:BB:…` of `digest(der)`.
pub fn fingerprint(algorithm: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    ring::digest::digest(algorithm, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl crate::ssh::Program for Openssl {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let Some((command, options)) = args.split_first() else {
                cx.err("openssl: the simulated VM only has `openssl x509`\n")
                    .await;
                return 1;
            };
            if command != "x509" {
                cx.err(format!(
                    "Invalid command '{command}'; type \"help\" for a list.\n"
                ))
                .await;
                return 1;
            }
            let mut input = None;
            let (mut noout, mut print_fingerprint) = (false, false);
            let mut digest = ("sha1", &ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
            let mut iter = options.iter();
            while let Some(opt) = iter.next() {
                match opt.as_str() {
                    "-in" => input = iter.next().cloned(),
                    "-inform" => {
                        if !iter.next().is_some_and(|f| f.eq_ignore_ascii_case("PEM")) {
                            cx.err("x509: only -inform PEM is simulated\n").await;
                            return 1;
                        }
                    }
                    "-noout" => noout = true,
                    "-fingerprint" => print_fingerprint = true,
                    "-sha1" => digest = ("sha1", &ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
                    "-sha256" => digest = ("sha256", &ring::digest::SHA256),
                    "-sha384" => digest = ("sha384", &ring::digest::SHA384),
                    "-sha512" => digest = ("sha512", &ring::digest::SHA512),
                    other => {
                        cx.err(format!(
                            "x509: Unknown option: {other}\nx509: Use -help for summary.\n"
                        ))
                        .await;
                        return 1;
                    }
                }
            }
            let (bytes, name) = match &input {
                Some(path) => {
                    let read = match cx.resolve(path) {
                        Ok(p) => tokio::fs::read(&p.host).await.ok(),
                        Err(_) => None,
                    };
                    match read {
                        Some(b) => (b, path.clone()),
                        None => {
                            cx.err(format!(
                                "Could not open file or uri for loading certificate from {path}\nUnable to load certificate\n"
                            ))
                            .await;
                            return 1;
                        }
                    }
                }
                None => {
                    let mut b = Vec::new();
                    let _ = cx.io.stdin.read_to_end(&mut b).await;
                    (b, "<stdin>".to_string())
                }
            };
            let Some(der) = first_certificate(&bytes) else {
                cx.err(format!(
                    "Could not read certificate from {name}\nUnable to load certificate\n"
                ))
                .await;
                return 1;
            };
            let mut out = String::new();
            if print_fingerprint {
                out.push_str(&format!(
                    "{} Fingerprint={}\n",
                    digest.0,
                    fingerprint(digest.1, &der)
                ));
            }
            if !noout {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
                out.push_str("-----BEGIN CERTIFICATE-----\n");
                for chunk in b64.as_bytes().chunks(64) {
                    out.push_str(&String::from_utf8_lossy(chunk));
                    out.push('\n');
                }
                out.push_str("-----END CERTIFICATE-----\n");
            }
            cx.out(out).await;
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_the_tls_module() {
        let cert = homestak_tls::self_signed(&["127.0.0.1".into()]).unwrap();
        let der = first_certificate(cert.cert_pem.as_bytes()).unwrap();
        assert_eq!(der, cert.cert_der);
        assert_eq!(
            fingerprint(&ring::digest::SHA256, &der),
            cert.fingerprint.to_string()
        );
        assert!(first_certificate(b"garbage").is_none());
    }
}
