//! API token credentials.
//!
//! PVE authenticates API tokens with one header,
//! `Authorization: PVEAPIToken=<user>@<realm>!<tokenid>=<secret>`; the server
//! splits id and secret on the last `=`, so the id must not contain one.
//! The secret never appears in `Debug`, logs or errors: it lives in the
//! crate's redacting [`Secret`].

use std::fmt;
use std::str::FromStr;

pub use homestak_base::secret::Secret;

/// A full API token id, `user@realm!tokenid`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenId {
    full: String,
    /// Byte offset of the `!` separating user and token name.
    bang: usize,
}

impl TokenId {
    /// The user part, `user@realm`.
    pub fn user(&self) -> &str {
        &self.full[..self.bang]
    }

    /// The token name after the `!`.
    pub fn name(&self) -> &str {
        &self.full[self.bang + 1..]
    }

    /// The full id, `user@realm!tokenid`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A token id or token string was malformed. Carries no secret text: only
/// the user part (`user@realm`) of what was given is kept, since a
/// malformed entry may hold the secret anywhere after the `!` (a `-` or a
/// space typed for the `=`, a secret pasted without its id).
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid PVE API token for user {user:?}: {problem}; expected user@realm!tokenid=secret \
     (token name: a letter, then letters, digits, '.', '-' or '_')"
)]
pub struct TokenParseError {
    /// Up to the first `!` (or nothing when there is none, or it would be
    /// too long to be a user name): never the token name or the secret.
    user: String,
    problem: &'static str,
}

impl TokenParseError {
    fn new(text: &str, problem: &'static str) -> Self {
        TokenParseError {
            user: shown_user(text),
            problem,
        }
    }
}

/// What of a malformed token text may be shown: the user part before `!`,
/// when it looks like one (short, no `=`, no whitespace). Anything else
/// might be a secret pasted on its own.
fn shown_user(text: &str) -> String {
    match text.split_once('!') {
        Some((user, _))
            if user.len() <= 64
                && user.contains('@')
                && !user
                    .chars()
                    .any(|c| c == '=' || c.is_whitespace() || c.is_control()) =>
        {
            user.to_string()
        }
        _ => String::from("<not shown>"),
    }
}

impl FromStr for TokenId {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| TokenParseError::new(s, problem);
        let bang = s.find('!').ok_or_else(|| err("missing '!'"))?;
        let (user, name) = (&s[..bang], &s[bang + 1..]);
        let at = user.find('@').ok_or_else(|| err("user has no '@realm'"))?;
        if at == 0 || at + 1 == user.len() {
            return Err(err("empty user or realm"));
        }
        if user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | ':' | '/'))
        {
            return Err(err("user contains a forbidden character"));
        }
        // PVE's token name pattern: [A-Za-z][A-Za-z0-9\.\-_]+
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        let rest: Vec<char> = chars.collect();
        if !first_ok
            || rest.is_empty()
            || !rest
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(err("bad token name"));
        }
        Ok(TokenId {
            full: s.to_string(),
            bang,
        })
    }
}

/// An API token: its id and its secret.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub id: TokenId,
    pub secret: Secret,
}

impl ApiToken {
    /// A token from its id and secret.
    pub fn new(id: TokenId, secret: Secret) -> Self {
        ApiToken { id, secret }
    }

    /// Parses `user@realm!tokenid=secret`, the form PVE's header carries and
    /// that operators paste from `pveum user token add`. Splits on the first
    /// `=`, since the id cannot contain one while a secret might.
    pub fn parse(text: &str) -> Result<Self, TokenParseError> {
        // Without '=' the secret may be anywhere in the text: nothing past
        // the user is shown.
        let (id, secret) = text
            .split_once('=')
            .ok_or_else(|| TokenParseError::new(text, "missing '=secret'"))?;
        if secret.is_empty() {
            return Err(TokenParseError::new(id, "empty secret"));
        }
        Ok(ApiToken {
            id: id.parse()?,
            secret: Secret::new(secret),
        })
    }

    /// The `Authorization` header value. Contains the secret.
    pub(crate) fn header_value(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_id_splits_user_and_name() {
        let id: TokenId = "root@pam!homestak".parse().unwrap();
        assert_eq!(id.user(), "root@pam");
        assert_eq!(id.name(), "homestak");
        assert_eq!(id.to_string(), "root@pam!homestak");
    }

    #[test]
    fn bad_token_ids_are_refused() {
        for bad in [
            "root@pam",
            "root!t1",
            "@pam!t1",
            "root@!t1",
            "root@pam!1abc",
            "root@pam!a",
            "root@pam!a b",
            "ro ot@pam!abc",
            "root@pam!ab=c",
        ] {
            assert!(bad.parse::<TokenId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn full_token_parses_and_header_has_pve_form() {
        let token = ApiToken::parse("root@pam!ci=0a1b-2c3d=x").unwrap();
        assert_eq!(token.id.as_str(), "root@pam!ci");
        assert_eq!(token.secret.expose(), "0a1b-2c3d=x");
        assert_eq!(token.header_value(), "PVEAPIToken=root@pam!ci=0a1b-2c3d=x");
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let token = ApiToken::parse("root@pam!ci=s3cr3t-value").unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let err = ApiToken::parse("root@pam=s3cr3t-value").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }

    /// An entry whose `=` was typed as something else, or a secret pasted
    /// alone: the error (Display and Debug) shows the user at most.
    #[test]
    fn malformed_tokens_never_echo_what_may_be_the_secret() {
        for text in [
            "user@pam!tok-SECRETVALUE",
            "user@pam!tok SECRETVALUE",
            "user@pam!tok:SECRETVALUE",
            "user@pam!SECRETVALUE",
            "SECRETVALUE",
            "SECRETVALUE!x",
            "user@pam!1SECRETVALUE=x",
            "user@pam!tok.SECRETVALUE=",
        ] {
            let err = ApiToken::parse(text).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("SECRETVALUE"), "{text}: {shown}");
            }
        }
        let err = ApiToken::parse("user@pam!tok-SECRETVALUE").unwrap_err();
        assert!(err.to_string().contains("\"user@pam\""), "{err}");
        assert!(err.to_string().contains("missing '=secret'"), "{err}");
        let err = "root@pam!1abc".parse::<TokenId>().unwrap_err();
        assert!(!err.to_string().contains("1abc"), "{err}");
    }

    #[test]
    fn secret_equality_compares_values() {
        assert_eq!(Secret::new("abc"), Secret::new("abc"));
        assert_ne!(Secret::new("abc"), Secret::new("abd"));
        assert_ne!(Secret::new("abc"), Secret::new("abcd"));
    }
}
