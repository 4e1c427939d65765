//! Host-key trust: fingerprints, policies and the known-hosts file we manage.
//!
//! A server's host key is checked during the key exchange, before we
//! authenticate. Policies:
//!
//! - [`HostKeyPolicy::Strict`]: the key must be in the known-hosts file.
//! - [`HostKeyPolicy::AcceptNew`]: trust on first use; the first key seen
//!   for `host:port` is recorded and any later different key is refused.
//! - [`HostKeyPolicy::Pinned`]: the key must have this SHA-256 fingerprint.
//! - [`HostKeyPolicy::InsecureAcceptAny`]: anything goes; only for an
//!   explicit `--insecure` and logged as a warning on every connection.
//!
//! The known-hosts file uses OpenSSH's format (`[host]:port type base64`,
//! plain `host` for port 22; hashed `|1|…` entries and `@revoked` lines are
//! honoured), so operators can inspect it with `ssh-keygen -F` and point
//! OpenSSH at it with `-o UserKnownHostsFile=`. Wildcard patterns are not
//! interpreted. Stricter than OpenSSH: once any key is recorded for a
//! `host:port`, a key of another algorithm is a mismatch too, so a server
//! cannot downgrade us to a key type we have not seen.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock, Weak};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use russh::keys::{PublicKey, PublicKeyBase64};
use subtle::ConstantTimeEq;

use super::{Destination, Error, TrustedKey};

/// The SHA-256 fingerprint of an SSH public key, shown as OpenSSH prints it:
/// `SHA256:` followed by unpadded base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a public key (over its wire encoding, as OpenSSH).
    pub fn of(key: &PublicKey) -> Self {
        Fingerprint(homestak_base::digest::sha256(&key.public_key_bytes()))
    }

    /// A fingerprint from its raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Equality in constant time.
    fn ct_eq(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A fingerprint string was not `SHA256:` and 32 bytes of base64.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid SSH key fingerprint {text:?}: expected SHA256: and 43 base64 characters, as \
     `ssh-keygen -lf KEY` prints"
)]
pub struct FingerprintParseError {
    text: String,
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Accepts `SHA256:<base64>`, with or without `=` padding.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FingerprintParseError {
            text: s.to_string(),
        };
        let b64 = s.trim().strip_prefix("SHA256:").ok_or_else(err)?;
        let bytes = STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|_| err())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(Fingerprint(bytes))
    }
}

/// Which server host keys to trust.
#[derive(Clone, Debug)]
pub enum HostKeyPolicy {
    /// Only keys already in this known-hosts file.
    Strict(KnownHosts),
    /// Trust on first use: record unknown hosts, refuse changed keys.
    AcceptNew(KnownHosts),
    /// Only the key with this fingerprint.
    Pinned(Fingerprint),
    /// Any key at all. Man-in-the-middle attacks go unnoticed: only for an
    /// explicit opt-in such as `--insecure`.
    InsecureAcceptAny,
}

impl HostKeyPolicy {
    /// Checks the key a server presented; records it under `AcceptNew`.
    pub(crate) async fn verify(
        &self,
        destination: &Destination,
        key: &PublicKey,
    ) -> Result<(), Error> {
        let presented = Fingerprint::of(key);
        match self {
            HostKeyPolicy::Pinned(expected) => {
                if presented.ct_eq(expected) {
                    Ok(())
                } else {
                    Err(Error::HostKeyMismatch {
                        destination: destination.clone(),
                        presented,
                        trusted: Box::new(TrustedKey {
                            fingerprint: *expected,
                            from: "the pinned fingerprint".to_string(),
                        }),
                    })
                }
            }
            HostKeyPolicy::InsecureAcceptAny => {
                tracing::warn!(
                    %destination, host_key = %presented,
                    "host key accepted without verification (insecure mode)"
                );
                Ok(())
            }
            HostKeyPolicy::Strict(known) => match known.lookup(destination, key).await? {
                Lookup::Unknown => Err(Error::HostKeyUnknown {
                    destination: destination.clone(),
                    presented,
                    path: known.path().to_path_buf(),
                }),
                other => known.outcome(destination, presented, other),
            },
            HostKeyPolicy::AcceptNew(known) => {
                // One writer at a time, and re-check under the lock: two
                // connections to a new host must not record two keys.
                let _guard = known.inner.write_lock.lock().await;
                match known.lookup(destination, key).await? {
                    Lookup::Unknown => {
                        known.append(destination, key).await?;
                        tracing::info!(
                            %destination, host_key = %presented, file = %known.path().display(),
                            "recorded new host key"
                        );
                        Ok(())
                    }
                    other => known.outcome(destination, presented, other),
                }
            }
        }
    }
}

/// A known-hosts file in OpenSSH format. Cheap to clone. Every handle on
/// one file in a process shares one lock, however it was made (see
/// [`KnownHosts::new`]): recording and forgetting are read-modify-write
/// under that lock, with the file replaced atomically, so concurrent
/// callers never lose each other's keys.
#[derive(Clone)]
pub struct KnownHosts {
    inner: Arc<KnownHostsInner>,
}

/// The live known-hosts files of this process, by canonical path.
fn registry() -> &'static std::sync::Mutex<HashMap<PathBuf, Weak<KnownHostsInner>>> {
    static FILES: OnceLock<std::sync::Mutex<HashMap<PathBuf, Weak<KnownHostsInner>>>> =
        OnceLock::new();
    FILES.get_or_init(Default::default)
}

/// One name per file: the nearest existing ancestor resolved (symlinks,
/// `..`), the rest, which does not exist yet, normalised as written.
fn canonical(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut base = absolute.as_path();
    loop {
        if let Ok(mut out) = std::fs::canonicalize(base) {
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other),
                }
            }
            return out;
        }
        match (base.parent(), base.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                base = parent;
            }
            _ => return absolute,
        }
    }
}

struct KnownHostsInner {
    path: PathBuf,
    write_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KnownHosts").field(&self.inner.path).finish()
    }
}

/// What the file says about a presented key.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Known,
    Unknown,
    Mismatch { line: usize, recorded: Fingerprint },
    Revoked { line: usize },
}

impl KnownHosts {
    /// Uses the file at `path`; it need not exist yet. A handle on a file
    /// this process already has one for shares its lock: two handles made
    /// in different places (a tier's SSH check, its host SSH, a destroy)
    /// never race each other.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let key = canonical(&path);
        let mut files = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = files.get(&key).and_then(Weak::upgrade) {
            return KnownHosts { inner };
        }
        files.retain(|_, file| file.strong_count() > 0);
        let inner = Arc::new(KnownHostsInner {
            path,
            write_lock: tokio::sync::Mutex::new(()),
        });
        files.insert(key, Arc::downgrade(&inner));
        KnownHosts { inner }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Drops the trusted keys recorded for `host:port` (revocations stay):
    /// a VM homestak destroyed and recreated at the same address has a new
    /// host key, which must not count as an attack. Returns how many lines
    /// were removed.
    pub async fn forget(&self, host: &str, port: u16) -> Result<usize, Error> {
        let _guard = self.inner.write_lock.lock().await;
        let path = self.path();
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(Error::KnownHostsRead {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let wanted = host_pattern(host, port);
        let mut kept = String::with_capacity(text.len());
        let mut removed = 0;
        for raw in text.lines() {
            let first = raw.split_whitespace().next().unwrap_or("");
            let matches = !first.starts_with('#')
                && !first.starts_with('@')
                && first.split(',').any(|p| pattern_matches(p, &wanted));
            if matches {
                removed += 1;
            } else {
                kept.push_str(raw);
                kept.push('\n');
            }
        }
        if removed > 0 {
            self.replace(kept)
                .await
                .map_err(|source| Error::KnownHostsWrite {
                    path: path.to_path_buf(),
                    host_port: format!("{host}:{port}"),
                    source,
                })?;
        }
        Ok(removed)
    }

    /// Replaces the file with `text` atomically, keeping its mode (0644
    /// for a new file, as OpenSSH's). The caller holds the write lock.
    async fn replace(&self, text: String) -> std::io::Result<()> {
        let path = self.path();
        let mode = tokio::fs::metadata(path)
            .await
            .map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let target = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            homestak_base::fsutil::write_atomic(&target, text.as_bytes(), mode)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// The fingerprints recorded for `host:port`, in file order.
    pub async fn recorded(&self, host: &str, port: u16) -> Result<Vec<Fingerprint>, Error> {
        let entries = self.entries(host, port).await?;
        Ok(entries
            .iter()
            .filter(|e| !e.revoked)
            .map(|e| Fingerprint::of(&e.key))
            .collect())
    }

    fn outcome(
        &self,
        destination: &Destination,
        presented: Fingerprint,
        lookup: Lookup,
    ) -> Result<(), Error> {
        match lookup {
            Lookup::Known => Ok(()),
            Lookup::Mismatch { line, recorded } => Err(Error::HostKeyMismatch {
                destination: destination.clone(),
                presented,
                trusted: Box::new(TrustedKey {
                    fingerprint: recorded,
                    from: format!("known-hosts file {} line {line}", self.path().display()),
                }),
            }),
            Lookup::Revoked { line } => Err(Error::HostKeyRevoked {
                destination: destination.clone(),
                presented,
                path: self.path().to_path_buf(),
                line,
            }),
            // Callers handle Unknown themselves (refuse or record).
            Lookup::Unknown => Ok(()),
        }
    }

    async fn lookup(&self, destination: &Destination, key: &PublicKey) -> Result<Lookup, Error> {
        let entries = self.entries(&destination.host, destination.port).await?;
        let same = |e: &&Entry| e.key.key_data() == key.key_data();
        if let Some(entry) = entries.iter().filter(|e| e.revoked).find(same) {
            return Ok(Lookup::Revoked { line: entry.line });
        }
        let trusted: Vec<&Entry> = entries.iter().filter(|e| !e.revoked).collect();
        if trusted.iter().any(same) {
            return Ok(Lookup::Known);
        }
        Ok(match trusted.first() {
            Some(entry) => Lookup::Mismatch {
                line: entry.line,
                recorded: Fingerprint::of(&entry.key),
            },
            None => Lookup::Unknown,
        })
    }

    /// The entries for `host:port`. Lines for other hosts are not parsed, so
    /// a key type we do not know elsewhere in a shared file does no harm.
    async fn entries(&self, host: &str, port: u16) -> Result<Vec<Entry>, Error> {
        let text = match tokio::fs::read_to_string(self.path()).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::KnownHostsRead {
                    path: self.path().to_path_buf(),
                    source,
                });
            }
        };
        let wanted = host_pattern(host, port);
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let mut fields = raw.split_whitespace();
            let Some(mut first) = fields.next() else {
                continue;
            };
            if first.starts_with('#') {
                continue;
            }
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => revoked = true,
                    // CA lines vouch for certificates, which we do not use.
                    _ => continue,
                }
                let Some(next) = fields.next() else { continue };
                first = next;
            }
            if !first.split(',').any(|p| pattern_matches(p, &wanted)) {
                continue;
            }
            let (Some(_algorithm), Some(b64)) = (fields.next(), fields.next()) else {
                continue;
            };
            let key = russh::keys::parse_public_key_base64(b64).map_err(|source| {
                Error::KnownHostsParse {
                    path: self.path().to_path_buf(),
                    line,
                    source: Box::new(source),
                }
            })?;
            entries.push(Entry { line, revoked, key });
        }
        Ok(entries)
    }

    /// Adds a line for `destination`: read, append, replace atomically.
    /// The caller holds the write lock, so nothing is lost in between.
    async fn append(&self, destination: &Destination, key: &PublicKey) -> Result<(), Error> {
        let path = self.path();
        let write_err = |source| Error::KnownHostsWrite {
            path: path.to_path_buf(),
            host_port: destination.host_port(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(write_err)?;
        }
        let mut text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::KnownHostsRead {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "{} {} {}\n",
            host_pattern(&destination.host, destination.port),
            key.algorithm().as_str(),
            key.public_key_base64()
        ));
        self.replace(text).await.map_err(write_err)
    }
}

struct Entry {
    line: usize,
    revoked: bool,
    key: PublicKey,
}

/// How OpenSSH names a host in known_hosts: `host` on port 22, else
/// `[host]:port`.
fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Matches one comma-separated pattern: literal, or hashed `|1|salt|hash`
/// (HMAC-SHA1 of the host name with the salt, as OpenSSH's HashKnownHosts).
fn pattern_matches(pattern: &str, wanted: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        return ring::hmac::verify(&key, wanted.as_bytes(), &hash).is_ok();
    }
    pattern == wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};

    fn key() -> PublicKey {
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone()
    }

    fn dest(port: u16) -> Destination {
        Destination::new("127.0.0.7", port, "root")
    }

    #[test]
    fn fingerprint_round_trips_and_rejects_garbage() {
        let fp = Fingerprint::of(&key());
        let text = fp.to_string();
        assert!(
            text.starts_with("SHA256:") && text.len() == 7 + 43,
            "{text}"
        );
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!("{text}=").parse::<Fingerprint>().unwrap(), fp);
        for bad in ["", "SHA256:", "MD5:aa", "SHA256:!!!", "SHA256:AAAA"] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprint_matches_openssh_for_a_known_key() {
        // A key made for this test with ssh-keygen; `ssh-keygen -lf` printed this fingerprint.
        let key = russh::keys::parse_public_key_base64(
            "AAAAC3NzaC1lZDI1NTE5AAAAIARxl3eOe2eI+c6oHBapUqj5X9EesKCJ/W8JkUhHP5/W",
        )
        .unwrap();
        assert_eq!(
            Fingerprint::of(&key).to_string(),
            "SHA256:OXT0zu7qI7MwTVHZMm+pvhdz14rm/bVRWmlzdunV4sQ"
        );
    }

    #[tokio::test]
    async fn accept_new_records_then_refuses_a_changed_key() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::new(dir.path().join("sub/known_hosts"));
        let policy = HostKeyPolicy::AcceptNew(known.clone());
        let (first, second) = (key(), key());
        policy.verify(&dest(2222), &first).await.unwrap();
        policy.verify(&dest(2222), &first).await.unwrap();
        let err = policy.verify(&dest(2222), &second).await.unwrap_err();
        assert!(matches!(err, Error::HostKeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
        // Another port of the same host is another server.
        policy.verify(&dest(2223), &second).await.unwrap();
        let text = std::fs::read_to_string(known.path()).unwrap();
        assert!(text.starts_with("[127.0.0.7]:2222 ssh-ed25519 "), "{text}");
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            known.recorded("127.0.0.7", 2222).await.unwrap(),
            [Fingerprint::of(&first)]
        );
    }

    #[tokio::test]
    async fn strict_refuses_unknown_hosts_and_accepts_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let k = key();
        let strict = HostKeyPolicy::Strict(KnownHosts::new(&path));
        let err = strict.verify(&dest(22), &k).await.unwrap_err();
        assert!(matches!(err, Error::HostKeyUnknown { .. }), "{err}");
        std::fs::write(
            &path,
            format!(
                "# comment\n\nother.example ssh-ed25519 garbage\n127.0.0.7 {} {}",
                k.algorithm().as_str(),
                k.public_key_base64()
            ),
        )
        .unwrap();
        strict.verify(&dest(22), &k).await.unwrap();
        // Not recorded for port 2222.
        assert!(strict.verify(&dest(2222), &k).await.is_err());
    }

    #[tokio::test]
    async fn hashed_entries_and_revocations_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let (good, bad) = (key(), key());
        let salt = [7u8; 20];
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt),
            b"[127.0.0.7]:2200",
        );
        let hashed = format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac));
        std::fs::write(
            &path,
            format!(
                "{hashed} ssh-ed25519 {}\n@revoked [127.0.0.7]:2200 ssh-ed25519 {}\n",
                good.public_key_base64(),
                bad.public_key_base64()
            ),
        )
        .unwrap();
        let strict = HostKeyPolicy::Strict(KnownHosts::new(&path));
        strict.verify(&dest(2200), &good).await.unwrap();
        let err = strict.verify(&dest(2200), &bad).await.unwrap_err();
        assert!(
            matches!(err, Error::HostKeyRevoked { line: 2, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn malformed_key_for_our_host_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "\n[127.0.0.7]:2222 ssh-ed25519 not-base64!\n").unwrap();
        let err = HostKeyPolicy::Strict(KnownHosts::new(&path))
            .verify(&dest(2222), &key())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::KnownHostsParse { line: 2, .. }),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_from_separate_handles_are_all_kept() {
        // Handles made independently (as the engine's setup does for each
        // use) on one file, recording new hosts while others forget old
        // ones: before handles shared one lock, a forget's rewrite from a
        // stale read dropped keys recorded meanwhile.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let stale: Vec<(u16, PublicKey)> = (3000..3040).map(|p| (p, key())).collect();
        let setup = HostKeyPolicy::AcceptNew(KnownHosts::new(&path));
        for (port, k) in &stale {
            setup.verify(&dest(*port), k).await.unwrap();
        }
        let fresh: Vec<(u16, PublicKey)> = (4000..4080).map(|p| (p, key())).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (port, k) in fresh.clone() {
            let path = path.clone();
            tasks.spawn(async move {
                let policy = HostKeyPolicy::AcceptNew(KnownHosts::new(&path));
                policy.verify(&dest(port), &k).await
            });
        }
        for (port, _) in stale {
            // Another spelling of the same file is the same file.
            let path = dir.path().join(".").join("known_hosts");
            tasks.spawn(async move {
                KnownHosts::new(&path)
                    .forget("127.0.0.7", port)
                    .await
                    .map(drop)
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let known = KnownHosts::new(&path);
        for (port, k) in &fresh {
            assert_eq!(
                known.recorded("127.0.0.7", *port).await.unwrap(),
                [Fingerprint::of(k)],
                "port {port}"
            );
        }
        for port in 3000..3040 {
            assert!(known.recorded("127.0.0.7", port).await.unwrap().is_empty());
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), fresh.len(), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_handles_never_record_two_keys_for_one_new_host() {
        // Trust on first use means one first use: of many different keys
        // offered at once for one new host through separate handles,
        // exactly one is recorded and every other is a mismatch.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let path = path.clone();
            tasks.spawn(async move {
                HostKeyPolicy::AcceptNew(KnownHosts::new(&path))
                    .verify(&dest(2222), &key())
                    .await
            });
        }
        let mut accepted = 0;
        while let Some(done) = tasks.join_next().await {
            match done.unwrap() {
                Ok(()) => accepted += 1,
                Err(Error::HostKeyMismatch { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(accepted, 1);
        let known = KnownHosts::new(&path);
        assert_eq!(known.recorded("127.0.0.7", 2222).await.unwrap().len(), 1);
    }

    #[test]
    fn one_file_is_one_handle_however_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = KnownHosts::new(dir.path().join("sub/known_hosts"));
        let b = KnownHosts::new(dir.path().join("sub/../sub/known_hosts"));
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        let other = KnownHosts::new(dir.path().join("other"));
        assert!(!Arc::ptr_eq(&a.inner, &other.inner));
    }

    #[tokio::test]
    async fn pinned_policy_compares_fingerprints() {
        let k = key();
        let pinned = HostKeyPolicy::Pinned(Fingerprint::of(&k));
        pinned.verify(&dest(22), &k).await.unwrap();
        let err = pinned.verify(&dest(22), &key()).await.unwrap_err();
        assert!(err.to_string().contains("the pinned fingerprint"), "{err}");
    }
}
