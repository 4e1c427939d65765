//! Security postures.
//!
//! Two generations coexist in a site-config, and the reference reads each for
//! a different purpose, which we keep:
//! - `postures/*.yaml` ([`PostureV1`], flat keys) feed the ansible variables;
//! - `v2/postures/*.yaml` ([`PostureV2`], nested) decide how a VM
//!   authenticates when it fetches its spec ([`AuthMethod`]).
//!
//! So an env with posture `stage` gets default ansible settings when only
//! `v2/postures/stage.yaml` exists.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::serde_util::double_option;

/// The posture used when an env or spec names none.
pub const DEFAULT_POSTURE: &str = "dev";

/// A v1 posture (`postures/<name>.yaml`): ansible security settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct PostureV1 {
    /// sshd port (default 22).
    pub ssh_port: Option<u16>,
    /// sshd `PermitRootLogin`: "yes", "no" or "prohibit-password" (default).
    pub ssh_permit_root_login: Option<String>,
    /// sshd `PasswordAuthentication`: "yes" or "no" (default).
    pub ssh_password_authentication: Option<String>,
    /// Passwordless sudo for the automation user (default false).
    pub sudo_nopasswd: Option<bool>,
    /// Install and enable fail2ban (default false).
    pub fail2ban_enabled: Option<bool>,
    /// Packages added to the site's list. `packages:` with no value is an
    /// error (the reference crashes on it); write `packages: []`.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<Vec<String>>")]
    pub packages: Option<Option<Vec<String>>>,
}

/// How a VM proves who it is when it fetches its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// Trust the network: no token.
    Network,
    /// One token shared by the site (`secrets.auth.site_token`).
    SiteToken,
    /// One token per identity (`secrets.auth.node_tokens.<identity>`).
    NodeToken,
    /// A method homestak does not know. Kept (not rejected at load) so the
    /// posture still loads; token checks refuse it.
    Unknown(String),
}

impl AuthMethod {
    /// The spelling in posture files.
    pub fn as_str(&self) -> &str {
        match self {
            AuthMethod::Network => "network",
            AuthMethod::SiteToken => "site_token",
            AuthMethod::NodeToken => "node_token",
            AuthMethod::Unknown(other) => other,
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for AuthMethod {
    fn from(s: String) -> AuthMethod {
        match s.as_str() {
            "network" => AuthMethod::Network,
            "site_token" => AuthMethod::SiteToken,
            "node_token" => AuthMethod::NodeToken,
            _ => AuthMethod::Unknown(s),
        }
    }
}

impl<'de> Deserialize<'de> for AuthMethod {
    /// A method homestak does not know loads (as the reference did) and
    /// fails closed: every spec request under it is refused (E500).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AuthMethod, D::Error> {
        String::deserialize(d).map(AuthMethod::from)
    }
}

impl Serialize for AuthMethod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl JsonSchema for AuthMethod {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("AuthMethod")
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["network", "site_token", "node_token"],
            "default": "network",
            "description": "How a VM authenticates when it fetches its spec"
        })
    }
}

/// A v2 posture (`v2/postures/<name>.yaml`).
///
/// Serialises back to the shape it was read in (absent keys stay absent),
/// because the resolved spec carries a copy of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PostureV2 {
    /// Spec-fetch authentication; absent means `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PostureAuth>,
    /// sshd settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<PostureSsh>,
    /// sudo settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<PostureSudo>,
    /// fail2ban settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail2ban: Option<PostureFail2ban>,
    /// Packages this posture adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    /// Keys homestak does not interpret, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PostureV2 {
    /// The auth method (absent means [`AuthMethod::Network`]).
    pub fn auth_method(&self) -> AuthMethod {
        self.auth
            .as_ref()
            .and_then(|a| a.method.clone())
            .unwrap_or(AuthMethod::Network)
    }
}

/// `auth` of a v2 posture. Unlike the other sections, it takes no keys
/// but its own: a misspelt `method` would otherwise leave the method unset,
/// which means `network`, and serve the specs to anyone. (A misspelt
/// method value is safe: it loads as unknown and fails closed.)
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureAuth {
    /// The method; absent means `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AuthMethod>,
}

/// `ssh` of a v2 posture.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PostureSsh {
    /// sshd port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `PermitRootLogin`: "yes", "no" or "prohibit-password".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_root_login: Option<String>,
    /// `PasswordAuthentication`: "yes" or "no".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_authentication: Option<String>,
    /// Keys homestak does not interpret, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `sudo` of a v2 posture.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PostureSudo {
    /// Passwordless sudo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nopasswd: Option<bool>,
    /// Keys homestak does not interpret, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `fail2ban` of a v2 posture.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PostureFail2ban {
    /// Install and enable fail2ban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Keys homestak does not interpret, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn v2_posture_round_trips_its_shape() {
        let p: PostureV2 = homestak_base::yaml::from_str(
            "auth:\n  method: site_token\nlabel: x\n",
            Path::new("p.yaml"),
        )
        .unwrap();
        assert_eq!(p.auth_method(), AuthMethod::SiteToken);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"auth": {"method": "site_token"}, "label": "x"})
        );
        let none: PostureV2 =
            homestak_base::yaml::from_str("ssh:\n  port: 2200\n", Path::new("p")).unwrap();
        assert_eq!(none.auth_method(), AuthMethod::Network);
    }

    #[test]
    fn an_unknown_method_loads_and_fails_closed() {
        let p: PostureV2 =
            homestak_base::yaml::from_str("auth:\n  method: kerberos\n", Path::new("p.yaml"))
                .unwrap();
        assert_eq!(p.auth_method(), AuthMethod::Unknown("kerberos".into()));
    }

    #[test]
    fn auth_typos_are_errors_naming_the_place_and_the_choices() {
        // Each loaded before as a posture without a method: network trust.
        let cases = [
            ("auth:\n  methd: site_token\n", "methd", "method"),
            (
                "ssh:\n  port: 22\nauth:\n  method: node_token\n  tokn: x\n",
                "tokn",
                "method",
            ),
        ];
        for (text, bad, allowed) in cases {
            let err =
                homestak_base::yaml::from_str::<PostureV2>(text, Path::new("v2/postures/p.yaml"))
                    .unwrap_err();
            let shown = homestak_base::error_chain(&err);
            assert!(
                shown.starts_with("invalid YAML in v2/postures/p.yaml:"),
                "{shown}"
            );
            assert!(err.position().is_some(), "{shown}");
            assert!(shown.contains(bad) && shown.contains(allowed), "{shown}");
        }
    }

    #[test]
    fn v1_null_packages_are_told_apart() {
        let p: PostureV1 = homestak_base::yaml::from_str("packages:\n", Path::new("p")).unwrap();
        assert_eq!(p.packages, Some(None));
        let p: PostureV1 = homestak_base::yaml::from_str("ssh_port: 22\n", Path::new("p")).unwrap();
        assert_eq!(p.packages, None);
    }
}
