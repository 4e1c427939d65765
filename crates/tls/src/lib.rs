//! TLS pieces shared by the simulator, the PVE client, the daemon and the
//! daemon's API client.
//!
//! - rustls uses the `ring` provider everywhere (it builds minutes faster
//!   than aws-lc-rs); [`install_crypto_provider`] must run before any TLS
//!   object is built, or reqwest panics.
//! - Self-signed certificates come from rcgen.
//! - A PVE host is trusted by CA or by a pinned SHA-256 fingerprint of its
//!   certificate, written as PVE shows it: `AA:BB:…` (32 bytes).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Installs the ring crypto provider as the process default. Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(homestak_base::digest::sha256(der))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    /// Uppercase colon-separated hex, as `pvenode cert info` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A fingerprint string was not 32 hex bytes.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid SHA-256 fingerprint {text:?}: expected 32 hex bytes such as AA:BB:…, colons optional"
)]
pub struct FingerprintParseError {
    text: String,
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Accepts `AA:BB:…` in either case, with or without colons.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FingerprintParseError {
            text: s.to_string(),
        };
        let hex: String = s.trim().chars().filter(|c| *c != ':').collect();
        homestak_base::digest::parse_hex(&hex)
            .map(Fingerprint)
            .ok_or_else(err)
    }
}

/// Generating a certificate failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a self-signed certificate for {names:?}")]
pub struct CertError {
    names: Vec<String>,
    #[source]
    source: rcgen::Error,
}

/// A freshly generated self-signed certificate and its key.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for SelfSigned {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Generates a self-signed certificate valid for `names` (DNS names or IPs).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, CertError> {
    let certified =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|source| CertError {
            names: names.to_vec(),
            source,
        })?;
    let cert_der = certified.cert.der().to_vec();
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        fingerprint: Fingerprint::of_der(&cert_der),
        cert_der,
    })
}

/// A rustls client config that trusts exactly one certificate, by fingerprint.
///
/// The handshake signature is still verified against the certificate's key,
/// so a peer must hold the private key, not only present the certificate.
pub fn pinned_client_config(fingerprint: Fingerprint) -> rustls::ClientConfig {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedVerifier {
        fingerprint,
        provider,
    });
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of_der(end_entity.as_ref());
        // Fingerprints are public; no constant-time compare is needed here.
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {seen} does not match the pinned {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The fingerprint of the first certificate in a PEM text (a daemon's
/// `tls/daemon.crt`); `None` when it holds none.
pub fn fingerprint_of_pem(pem: &str) -> Option<Fingerprint> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|der| Fingerprint::of_der(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_in_pve_format() {
        let fp = Fingerprint::of_der(b"certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.to_lowercase().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.replace(':', "").parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn bad_fingerprints_are_refused() {
        for bad in [
            "",
            "AA:BB",
            &"ZZ:".repeat(32)[..95],
            "é".repeat(64).as_str(),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn self_signed_fingerprint_matches_der() {
        let cert = self_signed(&["127.0.0.1".to_string()]).unwrap();
        assert_eq!(cert.fingerprint, Fingerprint::of_der(&cert.cert_der));
        assert!(cert.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }
}
