//! How to reach a running daemon from its own machine: what `homestak
//! serve` writes to `--ready-file` and, while it runs, to
//! `<state>/daemon.json`. It holds no secret values, only where they are.

use std::path::{Path, PathBuf};

use homestak_base::secret::Secret;
use homestak_tls::Fingerprint;
use serde::{Deserialize, Serialize};

use crate::Client;

/// The file in the state directory.
pub const FILE: &str = "daemon.json";

/// A running daemon, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// `https://<addr>`; a loopback address when it listens on all.
    pub url: String,
    /// Its certificate's SHA-256 fingerprint.
    pub fingerprint: Fingerprint,
    /// The certificate (PEM), a CA file for clients such as git.
    pub cert: PathBuf,
    pub pid: u32,
    pub state_dir: PathBuf,
    /// Served repositories, without `.git`.
    pub repos: Vec<String>,
    pub repo_token_file: Option<PathBuf>,
    /// Where the API token it generated is, when it generated one.
    pub api_token_file: Option<PathBuf>,
}

/// Asking a local daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a daemon's description", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the daemon at {url} was given its API tokens (--api-token-file), so there is no token \
         here to ask it with; GET /v1/status with one of them shows what it applied"
    )]
    NoToken { url: String },
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

impl ReadyInfo {
    /// The description of the daemon running on `state_dir`, if one runs.
    pub fn read(state_dir: &Path) -> Result<Option<ReadyInfo>, Error> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// A client of this daemon with the token it generated.
    pub fn client(&self) -> Result<Client, Error> {
        let path = self.api_token_file.clone().ok_or_else(|| Error::NoToken {
            url: self.url.clone(),
        })?;
        let token =
            std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
        Ok(Client::new(
            &self.url,
            self.fingerprint,
            &Secret::new(token.trim()),
        )?)
    }
}
