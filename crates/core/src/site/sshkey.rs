//! Checks the SSH public keys of `secrets.yaml` `ssh_keys`.
//!
//! The reference accepted any text there, and so do the resolvers (their
//! outputs stay the reference's); PVE refused a bad key only at create
//! time, with "SSH public key validation error" and no word of which key.
//! [`Site::ssh_key_problems`] names every key that is not an OpenSSH public
//! key line, so preflight and the planner can refuse before PVE is touched.
//!
//! A line is `[options] TYPE BASE64 [COMMENT]`: the base64 blob must decode,
//! start with the same TYPE, and hold exactly the fields of that key type
//! (RFC 4253, RFC 5656, RFC 8709, OpenSSH's `sk-` and certificate types).

use base64::Engine as _;

use super::loader::Site;

/// Key types whose blob layout is checked field by field: the type, then
/// what follows it.
const LAYOUTS: &[(&str, &[Field])] = &[
    ("ssh-ed25519", &[Field::Exact(32)]),
    ("ssh-rsa", &[Field::Mpint, Field::Mpint]),
    (
        "ssh-dss",
        &[Field::Mpint, Field::Mpint, Field::Mpint, Field::Mpint],
    ),
    (
        "ecdsa-sha2-nistp256",
        &[Field::Curve("nistp256"), Field::Exact(65)],
    ),
    (
        "ecdsa-sha2-nistp384",
        &[Field::Curve("nistp384"), Field::Exact(97)],
    ),
    (
        "ecdsa-sha2-nistp521",
        &[Field::Curve("nistp521"), Field::Exact(133)],
    ),
    (
        "sk-ssh-ed25519@openssh.com",
        &[Field::Exact(32), Field::Any],
    ),
    (
        "sk-ecdsa-sha2-nistp256@openssh.com",
        &[Field::Curve("nistp256"), Field::Exact(65), Field::Any],
    ),
];

/// Certificates: only the embedded type is checked (their layout is long
/// and PVE passes them to sshd as they are).
const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// One length-prefixed field of a key blob.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A string of exactly this many bytes.
    Exact(usize),
    /// A non-empty multiple-precision integer.
    Mpint,
    /// This curve name.
    Curve(&'static str),
    /// Any string.
    Any,
}

/// Why a line is not an OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("it is empty")]
    Empty,
    #[error("it spans several lines; put one key per entry")]
    MultiLine,
    #[error(
        "it names no known key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, \
         sk-ssh-ed25519@openssh.com, …)"
    )]
    UnknownType,
    #[error("no key data follows the type {algorithm}")]
    MissingData { algorithm: String },
    #[error("the key data after {algorithm} is not base64")]
    NotBase64 { algorithm: String },
    #[error("the line says {algorithm} but its key data holds {embedded}")]
    TypeMismatch { algorithm: String, embedded: String },
    #[error("the {algorithm} key data is truncated or malformed")]
    Malformed { algorithm: String },
}

/// A key of `ssh_keys` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSshKey {
    /// Its name in `ssh_keys`.
    pub name: String,
    /// The start of the line, enough to recognise it (never the whole key).
    pub prefix: String,
    pub problem: KeyProblem,
}

impl std::fmt::Display for BadSshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ssh_keys.{} ({:?}): {}",
            self.name, self.prefix, self.problem
        )
    }
}

/// Characters of a key line shown in messages.
const PREFIX_CHARS: usize = 20;

/// The first [`PREFIX_CHARS`] characters of `line`, with `…` when cut.
pub fn key_prefix(line: &str) -> String {
    let line = line.trim();
    let mut out: String = line.chars().take(PREFIX_CHARS).collect();
    if line.chars().count() > PREFIX_CHARS {
        out.push('…');
    }
    out
}

/// Checks one public key line; `Ok` carries its key type.
pub fn check_public_key(line: &str) -> Result<&str, KeyProblem> {
    let line = line.trim();
    if line.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if line.contains(['\n', '\r']) {
        return Err(KeyProblem::MultiLine);
    }
    let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
    // authorized_keys options may come first: the key starts at the first
    // token that names a key type.
    let Some(at) = tokens.iter().position(|t| known_type(t)) else {
        return Err(KeyProblem::UnknownType);
    };
    let algorithm = tokens[at];
    let Some(data) = tokens.get(at + 1) else {
        return Err(KeyProblem::MissingData {
            algorithm: algorithm.to_string(),
        });
    };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| KeyProblem::NotBase64 {
            algorithm: algorithm.to_string(),
        })?;
    let malformed = || KeyProblem::Malformed {
        algorithm: algorithm.to_string(),
    };
    let mut reader = Reader(&blob);
    let embedded = reader.string().ok_or_else(malformed)?;
    if embedded != algorithm.as_bytes() {
        return Err(KeyProblem::TypeMismatch {
            algorithm: algorithm.to_string(),
            embedded: String::from_utf8_lossy(embedded).chars().take(40).collect(),
        });
    }
    if algorithm.ends_with(CERT_SUFFIX) {
        return Ok(algorithm);
    }
    let layout = LAYOUTS
        .iter()
        .find(|(name, _)| *name == algorithm)
        .map(|(_, fields)| *fields)
        .ok_or_else(malformed)?;
    for field in layout {
        let value = reader.string().ok_or_else(malformed)?;
        let fits = match field {
            Field::Exact(len) => value.len() == *len,
            Field::Mpint => !value.is_empty(),
            Field::Curve(curve) => value == curve.as_bytes(),
            Field::Any => true,
        };
        if !fits {
            return Err(malformed());
        }
    }
    if !reader.0.is_empty() {
        return Err(malformed());
    }
    Ok(algorithm)
}

fn known_type(token: &str) -> bool {
    LAYOUTS.iter().any(|(name, _)| *name == token)
        || token
            .strip_suffix(CERT_SUFFIX)
            .is_some_and(|base| LAYOUTS.iter().any(|(name, _)| *name == base))
}

/// Reads SSH wire-format strings (u32 big-endian length, then bytes).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some(value)
    }
}

impl Site {
    /// Every key of `secrets.yaml` `ssh_keys` that is not an OpenSSH public
    /// key, in file order; empty when all parse (or there are none).
    pub fn ssh_key_problems(&self) -> Vec<BadSshKey> {
        self.secrets()
            .lenient()
            .ssh_keys
            .iter()
            .filter_map(|(name, line)| {
                check_public_key(line).err().map(|problem| BadSshKey {
                    name: name.to_string(),
                    prefix: key_prefix(line),
                    problem,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(fields: &[&[u8]]) -> String {
        let mut blob = Vec::new();
        for f in fields {
            blob.extend_from_slice(&u32::try_from(f.len()).unwrap().to_be_bytes());
            blob.extend_from_slice(f);
        }
        base64::engine::general_purpose::STANDARD.encode(blob)
    }

    fn ed25519() -> String {
        format!("ssh-ed25519 {} me@host", wire(&[b"ssh-ed25519", &[7; 32]]))
    }

    #[test]
    fn well_formed_keys_pass() {
        let rsa = format!("ssh-rsa {}", wire(&[b"ssh-rsa", &[1, 0, 1], &[0x55; 257]]));
        let ecdsa = format!(
            "ecdsa-sha2-nistp256 {} x",
            wire(&[b"ecdsa-sha2-nistp256", b"nistp256", &[4; 65]])
        );
        let sk = format!(
            "sk-ssh-ed25519@openssh.com {}",
            wire(&[b"sk-ssh-ed25519@openssh.com", &[1; 32], b"ssh:"])
        );
        let with_options = format!("no-pty,from=\"127.0.0.1\" {}", ed25519());
        for line in [ed25519(), rsa, ecdsa, sk, with_options] {
            assert!(check_public_key(&line).is_ok(), "{line}");
        }
        // A real key (the simulator's fixed test key shape): type and data.
        assert_eq!(
            check_public_key(&format!("  {}\n", ed25519())),
            Ok("ssh-ed25519")
        );
    }

    #[test]
    fn each_defect_is_named() {
        let cases: Vec<(String, KeyProblem)> = vec![
            (String::new(), KeyProblem::Empty),
            (
                "ssh-ed25519 AAAA\nssh-rsa BBBB".into(),
                KeyProblem::MultiLine,
            ),
            ("fake-key-for-tests".into(), KeyProblem::UnknownType),
            (
                "ssh-ed25519".into(),
                KeyProblem::MissingData {
                    algorithm: "ssh-ed25519".into(),
                },
            ),
            (
                "ssh-ed25519 not*base64 me".into(),
                KeyProblem::NotBase64 {
                    algorithm: "ssh-ed25519".into(),
                },
            ),
            (
                format!("ssh-rsa {}", wire(&[b"ssh-ed25519", &[7; 32]])),
                KeyProblem::TypeMismatch {
                    algorithm: "ssh-rsa".into(),
                    embedded: "ssh-ed25519".into(),
                },
            ),
            (
                // One byte short.
                format!("ssh-ed25519 {}", wire(&[b"ssh-ed25519", &[7; 31]])),
                KeyProblem::Malformed {
                    algorithm: "ssh-ed25519".into(),
                },
            ),
            (
                // Trailing bytes.
                format!("ssh-ed25519 {}", wire(&[b"ssh-ed25519", &[7; 32], b"x"])),
                KeyProblem::Malformed {
                    algorithm: "ssh-ed25519".into(),
                },
            ),
            (
                format!(
                    "ecdsa-sha2-nistp256 {}",
                    wire(&[b"ecdsa-sha2-nistp256", b"nistp384", &[4; 65]])
                ),
                KeyProblem::Malformed {
                    algorithm: "ecdsa-sha2-nistp256".into(),
                },
            ),
            // Base64 of "hello": too short to hold a type.
            (
                "ssh-ed25519 aGVsbG8=".into(),
                KeyProblem::Malformed {
                    algorithm: "ssh-ed25519".into(),
                },
            ),
        ];
        for (line, problem) in cases {
            assert_eq!(check_public_key(&line), Err(problem), "{line:?}");
        }
    }

    #[test]
    fn site_names_the_bad_keys_by_name_with_a_short_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let good = ed25519();
        std::fs::write(
            dir.path().join("secrets.yaml"),
            format!(
                "ssh_keys:\n  good: \"{good}\"\n  typo: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIXXXX me\"\n  fake: \"not a key at all\"\n"
            ),
        )
        .unwrap();
        let site = Site::load(dir.path()).unwrap();
        let bad = site.ssh_key_problems();
        let names: Vec<&str> = bad.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["typo", "fake"]);
        assert_eq!(bad[0].prefix, "ssh-ed25519 AAAAC3Nz…");
        let shown = bad[0].to_string();
        assert!(
            shown.starts_with("ssh_keys.typo (\"ssh-ed25519 AAAAC3Nz…\"): "),
            "{shown}"
        );
        assert!(!shown.contains("XXXX"), "{shown}");
    }
}
