//! Spec-fetch authentication: which token a VM must present.
//!
//! A v2 posture's `auth.method` decides it: `network` (none), `site_token`
//! (`secrets.auth.site_token`) or `node_token`
//! (`secrets.auth.node_tokens.<identity>`).
//!
//! Two views, as in the reference:
//! - the token *getters* ([`Site::auth_token`], [`Site::site_token`],
//!   [`Site::node_token`]) answer "what would this VM be given": a missing
//!   posture or token is an empty answer, and only an unreadable
//!   `secrets.yaml` is an error;
//! - the *check* ([`Site::required_token`], for `GET /spec/{identity}`)
//!   answers "what must the request carry", and a token the posture needs
//!   but the site lacks is a server-side error (E500), never an open door.

use std::sync::Arc;

use super::loader::Site;
use super::posture::{AuthMethod, PostureV2};
use super::secrets::Secrets;
use homestak_base::secret::Secret;
use homestak_base::yaml;

/// A token lookup or check failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `secrets.yaml` exists but cannot be used.
    #[error("E500: secrets file is unreadable; fix secrets.yaml")]
    SecretsUnreadable {
        #[source]
        source: Arc<yaml::Error>,
    },
    /// The posture document is invalid.
    #[error("E500: posture '{name}' cannot be loaded; fix the file")]
    Posture {
        name: String,
        #[source]
        source: Arc<yaml::Error>,
    },
    /// The posture names a method homestak does not know.
    #[error("E500: Unknown auth method: {method}")]
    UnknownMethod { method: String },
    /// The posture needs the site token and none is configured.
    #[error("E500: site_token not configured in secrets")]
    SiteTokenNotConfigured,
    /// The posture needs a node token for this identity and none is set.
    #[error("E500: node_token not configured for {identity}")]
    NodeTokenNotConfigured { identity: String },
}

impl Error {
    /// The reference's E-code.
    pub fn code(&self) -> Option<&'static str> {
        Some("E500")
    }

    /// The message without its `E…: ` prefix.
    pub fn message(&self) -> String {
        strip_code(&self.to_string())
    }
}

/// What a request for a spec must carry.
#[derive(Debug, Clone, Copy)]
pub enum Requirement<'a> {
    /// Network trust: no token.
    None,
    /// This token, compared in constant time.
    Token(&'a Secret),
}

impl Requirement<'_> {
    /// True when `presented` satisfies the requirement.
    pub fn accepts(&self, presented: Option<&str>) -> bool {
        match self {
            Requirement::None => true,
            Requirement::Token(expected) => presented.is_some_and(|p| expected.ct_eq(p)),
        }
    }
}

/// The token `method` gives `identity`; empty when none applies or none is
/// configured.
pub(super) fn token_for(method: &AuthMethod, identity: &str, secrets: &Secrets) -> Secret {
    match method {
        AuthMethod::Network | AuthMethod::Unknown(_) => Secret::empty(),
        AuthMethod::SiteToken => secrets.site_token().cloned().unwrap_or_default(),
        AuthMethod::NodeToken => secrets.node_token(identity).cloned().unwrap_or_default(),
    }
}

/// Strips a leading `E123: ` code from a message.
pub(super) fn strip_code(text: &str) -> String {
    match text.split_once(": ") {
        Some((code, rest))
            if code.len() == 4
                && code.starts_with('E')
                && code[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest.to_string()
        }
        _ => text.to_string(),
    }
}

impl Site {
    /// The token a VM named `identity` under v2 posture `posture` is given.
    /// Empty for network trust, an unknown method, a missing posture or a
    /// missing token.
    pub fn auth_token(&self, posture: &str, identity: &str) -> Result<Secret, Error> {
        let Some(posture) = self.posture_v2_strict(posture)? else {
            return Ok(Secret::empty());
        };
        // The reference reads secrets before looking at the method, so an
        // unreadable file fails even a network-trust lookup.
        let secrets = self.strict_secrets()?;
        let empty = Secrets::default();
        Ok(token_for(
            &posture.auth_method(),
            identity,
            secrets.unwrap_or(&empty),
        ))
    }

    /// `secrets.auth.site_token`; `None` when not configured or no secrets.
    pub fn site_token(&self) -> Result<Option<&Secret>, Error> {
        Ok(self.strict_secrets()?.and_then(Secrets::site_token))
    }

    /// `secrets.auth.node_tokens[identity]`; `None` when not configured.
    pub fn node_token(&self, identity: &str) -> Result<Option<&Secret>, Error> {
        Ok(self.strict_secrets()?.and_then(|s| s.node_token(identity)))
    }

    /// What a spec request from `identity` under `posture` must carry.
    /// Network trust needs no secrets at all; a token the posture needs but
    /// the site lacks is an error, so a misconfiguration never opens access.
    pub fn required_token(
        &self,
        posture: &PostureV2,
        identity: &str,
    ) -> Result<Requirement<'_>, Error> {
        let method = posture.auth_method();
        let secrets = match method {
            AuthMethod::Network => return Ok(Requirement::None),
            AuthMethod::Unknown(method) => return Err(Error::UnknownMethod { method }),
            AuthMethod::SiteToken | AuthMethod::NodeToken => self.strict_secrets()?,
        };
        let token = match method {
            AuthMethod::SiteToken => secrets.and_then(Secrets::site_token),
            _ => secrets.and_then(|s| s.node_token(identity)),
        };
        match token {
            Some(t) if !t.is_empty() => Ok(Requirement::Token(t)),
            _ if method == AuthMethod::SiteToken => Err(Error::SiteTokenNotConfigured),
            _ => Err(Error::NodeTokenNotConfigured {
                identity: identity.to_string(),
            }),
        }
    }

    fn strict_secrets(&self) -> Result<Option<&Secrets>, Error> {
        self.secrets
            .strict()
            .map_err(|source| Error::SecretsUnreadable { source })
    }

    fn posture_v2_strict(&self, name: &str) -> Result<Option<&PostureV2>, Error> {
        match self.postures_v2.get(name) {
            None => Ok(None),
            Some(entry) => match &entry.doc {
                Ok(Some(p)) => Ok(Some(p)),
                // An empty posture file is a posture with no settings.
                Ok(None) => Ok(Some(empty_posture())),
                Err(source) => Err(Error::Posture {
                    name: name.to_string(),
                    source: Arc::clone(source),
                }),
            },
        }
    }
}

fn empty_posture() -> &'static PostureV2 {
    static EMPTY: std::sync::OnceLock<PostureV2> = std::sync::OnceLock::new();
    EMPTY.get_or_init(PostureV2::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_code_only_strips_codes() {
        assert_eq!(strip_code("E500: x: y"), "x: y");
        assert_eq!(strip_code("Node: x"), "Node: x");
        assert_eq!(strip_code("E12: x"), "E12: x");
    }

    #[test]
    fn requirement_compares_tokens() {
        let t = Secret::new("tok");
        assert!(Requirement::Token(&t).accepts(Some("tok")));
        assert!(!Requirement::Token(&t).accepts(Some("tok2")));
        assert!(!Requirement::Token(&t).accepts(None));
        assert!(Requirement::None.accepts(None));
    }
}
