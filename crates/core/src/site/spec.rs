//! Specs (`v2/specs/<identity>.yaml`): what a VM becomes, and their
//! resolution for the spec server.
//!
//! Resolution ([`Site::resolve_spec`]), in the reference's order:
//! 1. the identity must be a plain name (the reference joined it into a path
//!    unchecked, so `../../secrets` served `secrets.yaml`; we refuse it);
//! 2. the spec must exist (E200) and be valid (E400);
//! 3. `identity.domain` and `config.timezone` default from `site.yaml`,
//!    `identity.hostname` to the identity;
//! 4. the v2 posture (`access.posture`, default `dev`) must exist (E201); a
//!    copy goes into `access._posture` for the auth check (the HTTP
//!    response strips it: [`ResolvedSpec::served`]);
//! 5. users' `ssh_keys` references (`ssh_keys.<name>` or `<name>`) resolve
//!    to public keys from `secrets.yaml` (E500 when the file is missing,
//!    E202 for an unknown key).

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth::strip_code;
use super::loader::Site;
use super::posture::{DEFAULT_POSTURE, PostureV2};
use super::secrets::SecretsStatus;
use super::serde_util::double_option;
use homestak_base::yaml;

/// Longest identity accepted (a DNS name).
const MAX_IDENTITY_LEN: usize = 253;

/// A spec could not be resolved. Each variant carries the reference's
/// E-code ([`Error::code`]); the daemon maps codes to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `v2/specs/<identity>.yaml`.
    #[error("E200: Spec not found: {identity}")]
    NotFound { identity: String },
    /// The identity is not a plain name, so it cannot name a spec.
    #[error(
        "E200: Spec not found: {identity:?} is not a valid identity (letters, digits, '.', '-' and '_', starting with a letter or digit)"
    )]
    InvalidIdentity { identity: String },
    /// The spec's posture has no `v2/postures/<name>.yaml`.
    #[error("E201: Posture not found: {name}")]
    PostureNotFound { name: String },
    /// A user references an SSH key `secrets.yaml` lacks.
    #[error("E202: SSH key not found: {key}")]
    SshKeyNotFound { key: String },
    /// Keys must be resolved and there is no `secrets.yaml`.
    #[error("E500: Secrets file not found: {}", path.display())]
    SecretsNotFound { path: PathBuf },
    /// Keys must be resolved and only `secrets.yaml.enc` exists.
    #[error(
        "E500: Secrets file not decrypted: {}\n  Run: cd {} && make decrypt",
        path.display(),
        path.parent().unwrap_or(path).display()
    )]
    SecretsNotDecrypted { path: PathBuf },
    /// `secrets.yaml` exists but cannot be used.
    #[error("E500: Secrets file is unreadable: {}", path.display())]
    SecretsUnreadable {
        path: PathBuf,
        #[source]
        source: Arc<yaml::Error>,
    },
    /// The spec or its posture does not parse into the schema.
    #[error("E400: Schema validation failed: {kind} '{name}' cannot be loaded")]
    Invalid {
        kind: &'static str,
        name: String,
        #[source]
        source: Arc<yaml::Error>,
    },
    /// The spec parses but breaks a rule of the schema.
    #[error("E400: Schema validation failed: spec '{identity}': {problem}")]
    Schema { identity: String, problem: String },
}

impl Error {
    /// The reference's E-code.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Error::NotFound { .. } | Error::InvalidIdentity { .. } => "E200",
            Error::PostureNotFound { .. } => "E201",
            Error::SshKeyNotFound { .. } => "E202",
            Error::Invalid { .. } | Error::Schema { .. } => "E400",
            Error::SecretsNotFound { .. }
            | Error::SecretsNotDecrypted { .. }
            | Error::SecretsUnreadable { .. } => "E500",
        })
    }

    /// The message without its `E…: ` prefix (the daemon's `message` field).
    pub fn message(&self) -> String {
        strip_code(&self.to_string())
    }
}

/// A spec document (`v2/specs/<identity>.yaml`), schema v1.
///
/// Every object keeps keys homestak does not interpret (`extra`) and passes
/// them on to the VM.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Spec {
    /// Must be 1.
    pub schema_version: u32,
    /// Host name and domain; default from the identity and `site.yaml`.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Static network; omit for DHCP.
    #[serde(default)]
    pub network: Option<SpecNetwork>,
    /// Posture and users. `access:` with no value is an error.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<Access>")]
    pub access: Option<Option<Access>>,
    /// Packages and services.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Type-specific configuration.
    #[serde(default)]
    pub config: Option<SpecConfig>,
    /// Run-phase convergence settings.
    #[serde(default)]
    pub run: Option<Run>,
    /// Keys homestak does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `identity` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// VM host name (default: the spec identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Domain (default: `site.yaml` `domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `network` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SpecNetwork {
    /// Static IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `access` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Access {
    /// v2 posture name (default `dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<String>,
    /// Users to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A user of a spec.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct User {
    /// User name.
    pub name: String,
    /// Grant sudo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<bool>,
    /// In a spec file: references to `secrets.yaml` `ssh_keys`
    /// (`ssh_keys.<name>` or `<name>`). In a resolved spec: the public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `platform` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Platform {
    /// Packages to install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    /// Services to enable and disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Services>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `platform.services` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Services {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SpecConfig {
    /// Timezone (default: `site.yaml` `timezone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// PVE host settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pve: Option<PveConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.pve` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PveConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_subscription_nag: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `run` of a spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    /// schedule | webhook | git | manual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A resolved spec. Serialises to the reference's resolved object,
/// `access._posture` included; [`ResolvedSpec::served`] is the HTTP body.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedSpec {
    pub schema_version: u32,
    /// With `hostname` always set.
    pub identity: Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<SpecNetwork>,
    pub access: ResolvedAccess,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub config: SpecConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `access` of a resolved spec.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedAccess {
    /// The posture name as written (absent when defaulted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posture: Option<String>,
    /// Users, with public keys in `ssh_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User>>,
    /// The effective v2 posture, for the auth check; not served.
    #[serde(rename = "_posture")]
    pub posture_doc: PostureV2,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResolvedSpec {
    /// The effective posture name (`dev` when the spec names none).
    pub fn posture_name(&self) -> &str {
        self.access.posture.as_deref().unwrap_or(DEFAULT_POSTURE)
    }

    /// The effective v2 posture.
    pub fn posture(&self) -> &PostureV2 {
        &self.access.posture_doc
    }

    /// The body served at `GET /spec/{identity}`: the resolved spec without
    /// the internal `access._posture`.
    pub fn served(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(access) = value.get_mut("access").and_then(Value::as_object_mut) {
            access.remove("_posture");
        }
        value
    }
}

/// Checks that `identity` is a plain name that can name a spec file: ASCII
/// letters, digits, `.`, `-`, `_`, starting with a letter or digit, at most
/// 253 characters. Rejects path traversal (`../x`), separators and hidden
/// files before any path is built.
pub fn validate_identity(identity: &str) -> Result<(), Error> {
    let ok = identity.len() <= MAX_IDENTITY_LEN
        && identity
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && identity
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidIdentity {
            identity: identity.to_string(),
        })
    }
}

impl Site {
    /// Resolves the spec of `identity` (see the module docs for the steps).
    pub fn resolve_spec(&self, identity: &str) -> Result<ResolvedSpec, Error> {
        validate_identity(identity)?;
        let entry = self.specs.get(identity).ok_or_else(|| Error::NotFound {
            identity: identity.to_string(),
        })?;
        let spec = match &entry.doc {
            Ok(Some(spec)) => spec.clone(),
            Ok(None) => return Err(schema(identity, "the file is empty")),
            Err(source) => {
                return Err(Error::Invalid {
                    kind: "spec",
                    name: identity.to_string(),
                    source: Arc::clone(source),
                });
            }
        };
        if spec.schema_version != 1 {
            return Err(schema(
                identity,
                &format!("schema_version must be 1, got {}", spec.schema_version),
            ));
        }
        let access = match spec.access {
            None => Access::default(),
            Some(Some(access)) => access,
            Some(None) => {
                return Err(schema(
                    identity,
                    "`access:` has no value; remove it or give posture/users",
                ));
            }
        };

        let mut id = spec.identity.unwrap_or_default();
        if id.domain.is_none() {
            id.domain.clone_from(&self.defaults.domain);
        }
        if id.hostname.is_none() {
            id.hostname = Some(identity.to_string());
        }
        let mut config = spec.config.unwrap_or_default();
        if config.timezone.is_none() {
            config.timezone.clone_from(&self.defaults.timezone);
        }

        let posture_name = access.posture.as_deref().unwrap_or(DEFAULT_POSTURE);
        let posture_doc = match self.postures_v2.get(posture_name) {
            None => {
                return Err(Error::PostureNotFound {
                    name: posture_name.to_string(),
                });
            }
            Some(entry) => match &entry.doc {
                Ok(doc) => doc.clone().unwrap_or_default(),
                Err(source) => {
                    return Err(Error::Invalid {
                        kind: "posture",
                        name: posture_name.to_string(),
                        source: Arc::clone(source),
                    });
                }
            },
        };

        let users = match access.users {
            None => None,
            Some(users) => Some(
                users
                    .into_iter()
                    .map(|user| self.resolve_user_keys(user))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };

        Ok(ResolvedSpec {
            schema_version: spec.schema_version,
            identity: id,
            network: spec.network,
            access: ResolvedAccess {
                posture: access.posture,
                users,
                posture_doc,
                extra: access.extra,
            },
            platform: spec.platform,
            config,
            run: spec.run,
            extra: spec.extra,
        })
    }

    /// Spec identities (`v2/specs/*.yaml`), sorted.
    pub fn list_specs(&self) -> Vec<String> {
        self.specs.names()
    }

    fn resolve_user_keys(&self, mut user: User) -> Result<User, Error> {
        let Some(refs) = user.ssh_keys.take() else {
            return Ok(user);
        };
        let path = self.secrets.path().to_path_buf();
        let secrets = match self.secrets.status() {
            SecretsStatus::Loaded => self.secrets.lenient(),
            SecretsStatus::Missing { encrypted: false } => {
                return Err(Error::SecretsNotFound { path });
            }
            SecretsStatus::Missing { encrypted: true } => {
                return Err(Error::SecretsNotDecrypted { path });
            }
            SecretsStatus::Unreadable(source) => {
                return Err(Error::SecretsUnreadable {
                    path,
                    source: Arc::clone(source),
                });
            }
        };
        let keys = refs
            .iter()
            .map(|r| {
                let key = r.strip_prefix("ssh_keys.").unwrap_or(r);
                secrets
                    .ssh_keys
                    .get(key)
                    .cloned()
                    .ok_or_else(|| Error::SshKeyNotFound {
                        key: key.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        user.ssh_keys = Some(keys);
        Ok(user)
    }
}

fn schema(identity: &str, problem: &str) -> Error {
    Error::Schema {
        identity: identity.to_string(),
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_that_could_escape_are_refused() {
        for bad in [
            "../../secrets",
            "",
            ".hidden",
            "a/b",
            "-x",
            "a\\b",
            "a b",
            "é",
        ] {
            let err = validate_identity(bad).unwrap_err();
            assert_eq!(err.code(), Some("E200"), "{bad}");
        }
        for good in ["pve", "deb12-test", "n1.example", "a_b", "0x"] {
            assert!(validate_identity(good).is_ok(), "{good}");
        }
        assert!(validate_identity(&"a".repeat(254)).is_err());
    }

    #[test]
    fn message_drops_the_code() {
        let err = Error::SshKeyNotFound {
            key: "nobody".into(),
        };
        assert_eq!(err.to_string(), "E202: SSH key not found: nobody");
        assert_eq!(err.message(), "SSH key not found: nobody");
    }
}
