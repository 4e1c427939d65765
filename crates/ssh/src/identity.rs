//! The private key homestak authenticates with.
//!
//! Keys come from OpenSSH private key files: the OpenSSH format that
//! `ssh-keygen` writes today, and the older PEM formats (PKCS#1
//! `BEGIN RSA PRIVATE KEY`, PKCS#8). Ed25519, RSA (signing with
//! rsa-sha2-512/256 when the server offers them) and ECDSA work.
//! Passphrase-protected keys are refused with a clear error: homestak runs
//! unattended and has nowhere to ask for a passphrase.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use russh::keys::{PrivateKey, PublicKey};

use super::{Error, Fingerprint};

/// A loaded private key. Cheap to clone. `Debug` shows where it came from,
/// its algorithm and public fingerprint, never the secret.
#[derive(Clone)]
pub struct Identity {
    key: Arc<PrivateKey>,
    origin: String,
    fingerprint: Fingerprint,
}

impl Identity {
    /// Loads a private key file such as `~/.ssh/id_ed25519` or `id_rsa`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::KeyRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_openssh(&text, &path.display().to_string())
    }

    /// Parses a private key from text; `origin` names it in errors and Debug.
    pub fn from_openssh(text: &str, origin: &str) -> Result<Self, Error> {
        // The PEM formats announce encryption in their headers; the OpenSSH
        // format is reported by the decoder.
        if text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(Error::KeyEncrypted {
                origin: origin.to_string(),
            });
        }
        let key = russh::keys::decode_secret_key(text, None).map_err(|source| match source {
            russh::keys::Error::KeyIsEncrypted => Error::KeyEncrypted {
                origin: origin.to_string(),
            },
            source => Error::KeyParse {
                origin: origin.to_string(),
                source: Box::new(source),
            },
        })?;
        Ok(Self::from_private_key(key, origin))
    }

    /// Generates a fresh Ed25519 key and writes it to `path` in OpenSSH
    /// format (mode 0600, parent directory 0700), as `ssh-keygen` would.
    pub fn generate_to(path: &Path) -> Result<Self, Error> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let write_err = |source| Error::KeyWrite {
            path: path.to_path_buf(),
            source,
        };
        let key = PrivateKey::random(
            &mut russh::keys::key::safe_rng(),
            russh::keys::Algorithm::Ed25519,
        )
        .map_err(|source| Error::KeyParse {
            origin: path.display().to_string(),
            source: Box::new(source.into()),
        })?;
        let text = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|source| Error::KeyParse {
                origin: path.display().to_string(),
                source: Box::new(source.into()),
            })?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write_err)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        file.write_all(text.as_bytes()).map_err(write_err)?;
        Ok(Self::from_private_key(key, &path.display().to_string()))
    }

    /// Wraps a key already in memory (e.g. generated for a test).
    pub fn from_private_key(key: PrivateKey, origin: &str) -> Self {
        let fingerprint = Fingerprint::of(key.public_key());
        Identity {
            key: Arc::new(key),
            origin: origin.to_string(),
            fingerprint,
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The public key as an `authorized_keys` line (`ssh-ed25519 AAAA… comment`),
    /// e.g. for cloud-init `sshkeys`.
    pub fn public_key_openssh(&self) -> String {
        // Encoding an in-memory public key cannot fail for the key types we
        // load; fall back to the bare algorithm rather than panic.
        self.public_key()
            .to_openssh()
            .unwrap_or_else(|_| self.public_key().algorithm().as_str().to_string())
    }

    /// The public key's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Where the key came from (a path, or what the caller named it).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub(crate) fn private_key(&self) -> Arc<PrivateKey> {
        Arc::clone(&self.key)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("origin", &self.origin)
            .field("algorithm", &self.key.algorithm().as_str())
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::Algorithm;
    use russh::keys::ssh_key::LineEnding;

    fn generated() -> PrivateKey {
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap()
    }

    #[test]
    fn loads_an_openssh_key_file_and_never_shows_the_secret() {
        let key = generated();
        let pem = key.to_openssh(LineEnding::LF).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        std::fs::write(&path, pem.as_bytes()).unwrap();

        let identity = Identity::load(&path).unwrap();
        assert_eq!(identity.public_key(), key.public_key());
        let debug = format!("{identity:?}");
        assert!(
            debug.contains("ssh-ed25519") && debug.contains("SHA256:"),
            "{debug}"
        );
        // No line of the private key file leaks into Debug.
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line), "{debug}");
        }
        assert!(
            identity
                .public_key_openssh()
                .starts_with("ssh-ed25519 AAAA")
        );
    }

    #[test]
    fn encrypted_keys_get_a_clear_error() {
        let key = generated()
            .encrypt(&mut russh::keys::key::safe_rng(), "passphrase")
            .unwrap();
        let pem = key.to_openssh(LineEnding::LF).unwrap();
        let err = Identity::from_openssh(&pem, "/home/op/.ssh/id_ed25519").unwrap_err();
        assert!(matches!(err, Error::KeyEncrypted { .. }), "{err}");
        assert!(
            err.to_string().contains("/home/op/.ssh/id_ed25519"),
            "{err}"
        );

        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            Identity::from_openssh(pkcs8, "k").unwrap_err(),
            Error::KeyEncrypted { .. }
        ));
    }

    #[test]
    fn garbage_and_missing_files_are_distinct_errors() {
        let err = Identity::from_openssh("not a key", "k").unwrap_err();
        assert!(matches!(err, Error::KeyParse { .. }), "{err}");
        let err = Identity::load(Path::new("/nonexistent/id_rsa")).unwrap_err();
        assert!(matches!(err, Error::KeyRead { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/id_rsa"));
    }
}
