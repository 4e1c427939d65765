//! Loading a site-config directory into a [`Site`].
//!
//! Everything is read once, up front, so that every resolver call afterwards
//! is a pure function of the loaded [`Site`] (cheap to share behind an `Arc`
//! and to replace wholesale on reload, e.g. on SIGHUP).
//!
//! A broken file does not make the whole site unusable: each document keeps
//! its own parse result, and the error surfaces when a resolution needs that
//! document (the reference fails at the same point, because it reads lazily).
//! [`Site::problems`] lists every broken document for a validation report.
//! Only an unreadable directory or a broken `site.yaml` fail the load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::host::{HostFile, NodeConfig};
use super::posture::{PostureV1, PostureV2};
use super::secrets::{SecretsFile, SecretsStatus};
use super::serde_util::double_option;
use super::spec::Spec;
use super::vm::{Env, Preset, Template};
use homestak_base::yaml;

/// The site-config directory could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is not a directory.
    #[error("site-config {} is not a directory; pass --site-config DIR", path.display())]
    NotADirectory { path: PathBuf },
    /// A directory of documents could not be listed.
    #[error("cannot list {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `site.yaml` is unreadable or invalid; every resolution depends on it.
    #[error("site defaults cannot be loaded; fix site.yaml")]
    SiteFile {
        #[source]
        source: yaml::Error,
    },
}

/// `site.yaml`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct SiteFile {
    /// Site-wide defaults.
    #[serde(default)]
    pub defaults: Option<SiteDefaults>,
}

/// `site.yaml` `defaults`: values every resolution falls back to.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct SiteDefaults {
    /// Timezone for VMs and specs.
    pub timezone: Option<String>,
    /// DNS domain for spec identities.
    pub domain: Option<String>,
    /// User created in VMs by cloud-init (default "homestak").
    pub automation_user: Option<String>,
    /// User for SSH to PVE hosts (default "root").
    pub ssh_user: Option<String>,
    /// Default VM bridge (default "vmbr0").
    pub bridge: Option<String>,
    /// Default VM gateway, added to every VM unless it sets one.
    pub gateway: Option<String>,
    /// Default datastore for host configs (node files must set their own
    /// for VM resolution).
    pub datastore: Option<String>,
    /// URL VMs fetch their spec from; empty or absent disables it.
    pub spec_server: Option<String>,
    /// Packer image release tag (default "latest").
    pub packer_release: Option<String>,
    /// Packer release repository (default "homestak-dev/packer").
    pub packer_release_repo: Option<String>,
    /// Packer image file name (default "debian-12-custom.qcow2").
    pub packer_image: Option<String>,
    /// Packages installed on every VM. `packages:` with no value is an error
    /// when ansible variables are resolved.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<Vec<String>>")]
    pub packages: Option<Option<Vec<String>>>,
    /// Where VM images are downloaded from when a PVE storage lacks them:
    /// a URL prefix to which `<image>.qcow2` is appended (default: the
    /// packer release, `https://github.com/<packer_release_repo>/releases/download/<packer_release>/`).
    /// An image not there whole is looked for in parts,
    /// `<image>.qcow2.partaa`, `.partab`, … (coreutils `split`'s names).
    pub image_source: Option<String>,
    /// Images a release ships in parts, so the source need not be asked:
    /// image name → number of parts (`<image>.qcow2.partaa`, `.partab`, …),
    /// joined on the PVE host after download.
    pub image_parts: Option<BTreeMap<String, u32>>,
    /// SHA-256 digests of images, by image name (64 hex digits): PVE
    /// checks a downloaded image against it and removes a file that
    /// differs. For an image not listed, homestak asks the source for
    /// `<image>.qcow2.sha256` (`sha256sum`'s format, as the packer release
    /// makes it); with neither, the download is recorded as unverified.
    pub image_sha256: Option<BTreeMap<String, ImageDigest>>,
    /// Remove the PVE subscription nag (default true).
    pub pve_remove_subscription_nag: Option<bool>,
    /// Keys homestak does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A SHA-256 digest as 64 hex digits (kept lowercase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ImageDigest(String);

impl ImageDigest {
    /// Checks `text`: 64 hex digits, either case.
    pub fn new(text: &str) -> Option<ImageDigest> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| ImageDigest(text.to_ascii_lowercase()))
    }

    /// The digest in lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ImageDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ImageDigest, D::Error> {
        let text = String::deserialize(d)?;
        ImageDigest::new(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a SHA-256 digest: give the 64 hex digits `sha256sum` prints"
            ))
        })
    }
}

impl JsonSchema for ImageDigest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ImageDigest".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-fA-F]{64}$",
            "description": "SHA-256 digest (64 hex digits)"
        })
    }
}

/// One document of a [`Catalog`].
#[derive(Debug)]
pub struct Entry<T> {
    /// Where it was read from.
    pub path: PathBuf,
    /// The parsed document; `Ok(None)` for an empty file.
    pub doc: Result<Option<T>, Arc<yaml::Error>>,
}

/// The documents of one directory (`envs/`, `vms/presets/`, …), keyed by file
/// stem, sorted by name.
#[derive(Debug)]
pub struct Catalog<T> {
    dir: &'static str,
    entries: BTreeMap<String, Entry<T>>,
}

impl<T: DeserializeOwned> Catalog<T> {
    fn load(root: &Path, dir: &'static str) -> Result<Catalog<T>, Error> {
        let path = root.join(dir);
        let mut entries = BTreeMap::new();
        let listing = match std::fs::read_dir(&path) {
            Ok(listing) => listing,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Catalog { dir, entries });
            }
            Err(source) => return Err(Error::ReadDir { path, source }),
        };
        for item in listing {
            let file = item
                .map_err(|source| Error::ReadDir {
                    path: path.clone(),
                    source,
                })?
                .path();
            if file.extension().is_none_or(|e| e != "yaml") || !file.is_file() {
                continue;
            }
            let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                tracing::warn!(path = %file.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            let doc = yaml::read_file::<Option<T>>(&file).map_err(Arc::new);
            entries.insert(stem.to_string(), Entry { path: file, doc });
        }
        Ok(Catalog { dir, entries })
    }
}

impl<T> Catalog<T> {
    /// The directory, relative to the site root (e.g. `vms/presets`).
    pub fn dir(&self) -> &'static str {
        self.dir
    }

    /// Names (file stems), sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The entry named `name`, if its file exists.
    pub fn get(&self, name: &str) -> Option<&Entry<T>> {
        self.entries.get(name)
    }

    /// True when `name` has a file.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn problems(&self) -> impl Iterator<Item = &yaml::Error> {
        self.entries
            .values()
            .filter_map(|e| e.doc.as_ref().err())
            .map(|e| &**e)
    }
}

/// A loaded site-config.
#[derive(Debug)]
pub struct Site {
    pub(super) root: PathBuf,
    pub(super) defaults: SiteDefaults,
    pub(super) secrets: SecretsFile,
    pub(super) nodes: Catalog<NodeConfig>,
    pub(super) hosts: Catalog<HostFile>,
    pub(super) envs: Catalog<Env>,
    pub(super) templates: Catalog<Template>,
    pub(super) presets: Catalog<Preset>,
    pub(super) postures: Catalog<PostureV1>,
    pub(super) postures_v2: Catalog<PostureV2>,
    pub(super) presets_v2: Catalog<Preset>,
    pub(super) specs: Catalog<Spec>,
    /// `~/.ssh/id_rsa` of the loading user, read once so resolution stays
    /// independent of the process environment.
    pub(super) default_ssh_key: PathBuf,
}

impl Site {
    /// Loads the site-config at `root` (see [`super::discover::find`]).
    pub fn load(root: &Path) -> Result<Site, Error> {
        if !root.is_dir() {
            return Err(Error::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let site_path = root.join("site.yaml");
        let defaults = if site_path.exists() {
            yaml::read_file::<Option<SiteFile>>(&site_path)
                .map_err(|source| Error::SiteFile { source })?
                .and_then(|f| f.defaults)
                .unwrap_or_default()
        } else {
            SiteDefaults::default()
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Ok(Site {
            root: root.to_path_buf(),
            defaults,
            secrets: SecretsFile::load(root),
            nodes: Catalog::load(root, "nodes")?,
            hosts: Catalog::load(root, "hosts")?,
            envs: Catalog::load(root, "envs")?,
            templates: Catalog::load(root, "vms")?,
            presets: Catalog::load(root, "vms/presets")?,
            postures: Catalog::load(root, "postures")?,
            postures_v2: Catalog::load(root, "v2/postures")?,
            presets_v2: Catalog::load(root, "v2/presets")?,
            specs: Catalog::load(root, "v2/specs")?,
            default_ssh_key: home
                .unwrap_or_else(|| PathBuf::from("~"))
                .join(".ssh/id_rsa"),
        })
    }

    /// Loads the same directory again (for SIGHUP or a changed commit). The
    /// caller swaps the new `Site` in; the old one stays valid meanwhile.
    pub fn reload(&self) -> Result<Site, Error> {
        Site::load(&self.root)
    }

    /// The site-config directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `site.yaml` defaults.
    pub fn defaults(&self) -> &SiteDefaults {
        &self.defaults
    }

    /// `secrets.yaml`.
    pub fn secrets(&self) -> &SecretsFile {
        &self.secrets
    }

    /// `nodes/*.yaml`: PVE nodes with API access.
    pub fn nodes(&self) -> &Catalog<NodeConfig> {
        &self.nodes
    }

    /// `hosts/*.yaml`: machines reachable over SSH only (before PVE).
    pub fn hosts(&self) -> &Catalog<HostFile> {
        &self.hosts
    }

    /// `envs/*.yaml`.
    pub fn envs(&self) -> &Catalog<Env> {
        &self.envs
    }

    /// `vms/*.yaml`: VM templates.
    pub fn templates(&self) -> &Catalog<Template> {
        &self.templates
    }

    /// `vms/presets/*.yaml`: VM size presets.
    pub fn presets(&self) -> &Catalog<Preset> {
        &self.presets
    }

    /// `postures/*.yaml` (v1, ansible).
    pub fn postures(&self) -> &Catalog<PostureV1> {
        &self.postures
    }

    /// `v2/postures/*.yaml` (auth method).
    pub fn postures_v2(&self) -> &Catalog<PostureV2> {
        &self.postures_v2
    }

    /// `v2/presets/*.yaml` (presets named by v2 manifests, e.g. `vm-small`).
    pub fn presets_v2(&self) -> &Catalog<Preset> {
        &self.presets_v2
    }

    /// `v2/specs/*.yaml`.
    pub fn specs(&self) -> &Catalog<Spec> {
        &self.specs
    }

    /// Every document that failed to parse, `secrets.yaml` included: what a
    /// `validate` command reports. Resolution only fails on the ones it needs.
    pub fn problems(&self) -> Vec<&yaml::Error> {
        let mut out: Vec<&yaml::Error> = Vec::new();
        if let SecretsStatus::Unreadable(err) = self.secrets.status() {
            out.push(err);
        }
        out.extend(self.nodes.problems());
        out.extend(self.hosts.problems());
        out.extend(self.envs.problems());
        out.extend(self.templates.problems());
        out.extend(self.presets.problems());
        out.extend(self.postures.problems());
        out.extend(self.postures_v2.problems());
        out.extend(self.presets_v2.problems());
        out.extend(self.specs.problems());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_digests_are_64_hex_digits() {
        let hex = "AB".repeat(32);
        let text = format!("defaults:\n  image_sha256:\n    debian-13: {hex}\n");
        let file: SiteFile = yaml::from_str(&text, Path::new("site.yaml")).unwrap();
        let digests = file.defaults.unwrap().image_sha256.unwrap();
        assert_eq!(digests["debian-13"].as_str(), "ab".repeat(32));
        for bad in ["abc", "g".repeat(64).as_str(), "sha256:00"] {
            let text = format!("defaults:\n  image_sha256:\n    debian-13: \"{bad}\"\n");
            let err = yaml::from_str::<SiteFile>(&text, Path::new("site.yaml")).unwrap_err();
            let shown = homestak_base::error_chain(&err);
            assert!(shown.starts_with("invalid YAML in site.yaml:3:"), "{shown}");
            assert!(shown.contains("64 hex digits"), "{shown}");
        }
    }
}
