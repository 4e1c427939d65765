//! Token checks: `Authorization: Bearer` parsing (as the seed did), the repo
//! token, and the reconciler API's scoped tokens.
//!
//! Every comparison is constant-time (`subtle`), through
//! [`Secret::ct_eq`] for the spec and repo tokens and through SHA-256
//! digests compared with `ConstantTimeEq` for API tokens. Tokens never
//! appear in logs, errors or `Debug` output.
//!
//! Header parsing keeps the seed's rules: the scheme is exactly `Bearer `
//! (case-sensitive, one space), the rest is the token verbatim, and an empty
//! token is no token. So `bearer t` and `Basic t` ask for authorization
//! (401) and `Bearer  t` (two spaces) presents the wrong token ` t` (403).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::reply::ApiError;
use homestak_base::digest::{hex, parse_hex, sha256};
use homestak_core::site::Secret;

/// The token of an `Authorization: Bearer <token>` header, if usable.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
}

/// How repo requests (`/{repo}.git/...`) are authorised.
#[derive(Clone)]
pub enum RepoAuth {
    /// No token needed: only by explicit opt-in (`--no-repo-auth`), or the
    /// reference's empty token in the goldens.
    Disabled,
    /// This bearer token is required.
    Token(Secret),
}

impl std::fmt::Debug for RepoAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoAuth::Disabled => f.write_str("RepoAuth::Disabled"),
            RepoAuth::Token(_) => f.write_str("RepoAuth::Token(<redacted>)"),
        }
    }
}

impl RepoAuth {
    /// The reference's model: an empty expected token disables the check.
    pub fn from_expected(expected: &str) -> RepoAuth {
        if expected.is_empty() {
            RepoAuth::Disabled
        } else {
            RepoAuth::Token(Secret::new(expected))
        }
    }

    /// `Ok` when the request may proceed; otherwise E300 (no token) or E301
    /// (wrong token).
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        match self {
            RepoAuth::Disabled => Ok(()),
            RepoAuth::Token(expected) => match bearer(authorization) {
                None => Err(ApiError::auth_required()),
                Some(presented) if expected.ct_eq(presented) => Ok(()),
                Some(_) => Err(ApiError::invalid_token()),
            },
        }
    }
}

pub use homestak_api::v1::Scope;

/// One API token: a name (for logs and events), its scope and the SHA-256
/// of its value. Only the digest is kept in memory.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub scope: Scope,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// A token from its clear value.
    pub fn new(name: impl Into<String>, scope: Scope, value: &Secret) -> ApiToken {
        ApiToken {
            name: name.into(),
            scope,
            digest: sha256(value.expose().as_bytes()),
        }
    }
}

/// The API token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read API token file {}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: homestak_base::yaml::Error,
    },
    #[error("API token '{name}' in {} needs exactly one of `token` and `sha256` (64 hex digits)", path.display())]
    Entry { path: PathBuf, name: String },
    #[error("API token file {} defines no token; add one or delete the file to have one generated", path.display())]
    Empty { path: PathBuf },
}

/// `api-tokens.yaml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    scope: Scope,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    sha256: Option<String>,
}

/// The reconciler API's tokens.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<ApiToken>,
}

/// Who a valid API token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

impl ApiTokens {
    pub fn new(tokens: Vec<ApiToken>) -> ApiTokens {
        ApiTokens { tokens }
    }

    /// Reads a token file:
    ///
    /// ```yaml
    /// tokens:
    ///   - name: ci
    ///     scope: read        # read | write
    ///     sha256: 9f86d0…    # SHA-256 of the token, hex (preferred)
    ///   - name: parent
    ///     scope: write
    ///     token: s3cret      # or the token itself
    /// ```
    pub fn from_file(path: &Path) -> Result<ApiTokens, TokenFileError> {
        // The file may hold tokens in clear: errors keep only a position.
        let file: TokenFile =
            homestak_base::yaml::read_file(path).map_err(|source| TokenFileError::Yaml {
                path: path.to_path_buf(),
                source: source.redacted(),
            })?;
        let mut tokens = Vec::new();
        for entry in file.tokens {
            let bad = || TokenFileError::Entry {
                path: path.to_path_buf(),
                name: entry.name.clone(),
            };
            let digest = match (&entry.token, &entry.sha256) {
                (Some(t), None) if !t.is_empty() => sha256(t.expose().as_bytes()),
                (None, Some(hex)) => parse_hex(hex).ok_or_else(bad)?,
                _ => return Err(bad()),
            };
            tokens.push(ApiToken {
                name: entry.name,
                scope: entry.scope,
                digest,
            });
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(ApiTokens { tokens })
    }

    /// The text of a token file holding one token, by digest.
    pub fn file_text(name: &str, scope: Scope, value: &Secret) -> String {
        let digest = sha256(value.expose().as_bytes());
        let hex = hex(&digest);
        format!(
            "# API tokens of `homestak serve` (scopes: read, write).\n\
             # Each entry: name, scope and either sha256 (of the token, hex) or token.\n\
             tokens:\n  - name: {name}\n    scope: {}\n    sha256: {hex}\n",
            scope.as_str()
        )
    }

    /// Checks a request's header against every token and the scope `needed`.
    /// Every token's digest is compared (no early exit), each in constant
    /// time.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<Caller, ApiError> {
        let Some(presented) = bearer(authorization) else {
            return Err(ApiError::auth_required());
        };
        let digest = sha256(presented.as_bytes());
        let mut found: Option<&ApiToken> = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        match found {
            None => Err(ApiError::invalid_token()),
            Some(t) if t.scope < needed => Err(ApiError::insufficient_scope(needed.as_str())),
            Some(t) => Ok(Caller {
                name: t.name.clone(),
                scope: t.scope,
            }),
        }
    }
}

/// A fresh random token: 32 bytes from the OS, URL-safe base64.
pub fn generate_token() -> Secret {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_follows_the_seed() {
        assert_eq!(bearer(Some("Bearer t")), Some("t"));
        assert_eq!(bearer(Some("Bearer  t")), Some(" t"));
        assert_eq!(bearer(Some("bearer t")), None);
        assert_eq!(bearer(Some("Basic t")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn repo_auth_codes() {
        let auth = RepoAuth::from_expected("t");
        assert_eq!(auth.check(None).unwrap_err().code, "E300");
        assert_eq!(auth.check(Some("Bearer u")).unwrap_err().code, "E301");
        assert!(auth.check(Some("Bearer t")).is_ok());
        assert!(RepoAuth::from_expected("").check(Some("Bearer x")).is_ok());
        assert_eq!(format!("{auth:?}"), "RepoAuth::Token(<redacted>)");
    }

    #[test]
    fn api_tokens_check_scope_and_value() {
        let tokens = ApiTokens::new(vec![
            ApiToken::new("r", Scope::Read, &Secret::new("read-tok")),
            ApiToken::new("w", Scope::Write, &Secret::new("write-tok")),
        ]);
        assert_eq!(
            tokens.authorize(None, Scope::Read).unwrap_err().code,
            "E300"
        );
        assert_eq!(
            tokens
                .authorize(Some("Bearer nope"), Scope::Read)
                .unwrap_err()
                .code,
            "E301"
        );
        assert_eq!(
            tokens
                .authorize(Some("Bearer read-tok"), Scope::Write)
                .unwrap_err()
                .code,
            "E302"
        );
        let caller = tokens
            .authorize(Some("Bearer write-tok"), Scope::Read)
            .unwrap();
        assert_eq!(caller.name, "w");
        assert!(!format!("{tokens:?}").contains("read-tok"));
    }

    /// Tokens are only ever compared through `subtle`: `Secret::ct_eq` for
    /// the repo token, `Requirement::accepts` (which calls it) for specs,
    /// `ConstantTimeEq` on SHA-256 digests for API tokens. A timing test
    /// would be flaky, so this guards the code path instead: the modules
    /// that check tokens must use those calls and must not compare a
    /// token with `==`.
    #[test]
    fn token_comparisons_are_constant_time() {
        let auth = include_str!("auth.rs");
        let seed = include_str!("seed.rs");
        let code = |text: &'static str| text.split("#[cfg(test)]").next().unwrap_or(text);
        assert!(code(auth).contains("expected.ct_eq(presented)"));
        assert!(code(auth).contains("token.digest.ct_eq(&digest)"));
        assert!(code(seed).contains("requirement.accepts(Some(token))"));
        for (name, text) in [("auth.rs", code(auth)), ("seed.rs", code(seed))] {
            for banned in [".expose() ==", "== presented", "== token", "digest =="] {
                assert!(!text.contains(banned), "{name} compares a token with `==`");
            }
        }
        // And the comparisons behave: equal only when equal, whatever the
        // length or shared prefix.
        let auth = RepoAuth::from_expected("abcdef");
        for (presented, ok) in [
            ("abcdef", true),
            ("abcdeg", false),
            ("abc", false),
            ("abcdefg", false),
        ] {
            assert_eq!(
                auth.check(Some(&format!("Bearer {presented}"))).is_ok(),
                ok,
                "{presented}"
            );
        }
    }

    #[test]
    fn token_file_round_trips_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-tokens.yaml");
        let secret = generate_token();
        std::fs::write(&path, ApiTokens::file_text("admin", Scope::Write, &secret)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(secret.expose()),
            "the file keeps only a digest"
        );
        let tokens = ApiTokens::from_file(&path).unwrap();
        let header = format!("Bearer {}", secret.expose());
        assert_eq!(
            tokens.authorize(Some(&header), Scope::Write).unwrap().name,
            "admin"
        );

        std::fs::write(
            &path,
            "tokens:\n  - name: p\n    scope: read\n    token: plain\n",
        )
        .unwrap();
        let tokens = ApiTokens::from_file(&path).unwrap();
        assert!(tokens.authorize(Some("Bearer plain"), Scope::Read).is_ok());

        for bad in [
            "tokens: []\n",
            "tokens:\n  - name: p\n    scope: read\n",
            "tokens:\n  - name: p\n    scope: read\n    sha256: abc\n",
            "tokens:\n  - name: p\n    scope: admin\n    token: x\n",
            "tokens:\n  - name: p\n    scope: read\n    token: x\n    sha256: x\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(ApiTokens::from_file(&path).is_err(), "{bad}");
        }
        // A token where the list belongs: the error never quotes it.
        std::fs::write(&path, "tokens: \"s3cret-TOKENVALUE\"\n").unwrap();
        let err = ApiTokens::from_file(&path).unwrap_err();
        let shown = format!("{} {err:?}", homestak_base::error_chain(&err));
        assert!(!shown.contains("TOKENVALUE"), "{shown}");
    }
}
