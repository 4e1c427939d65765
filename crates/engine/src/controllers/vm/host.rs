//! SSH to the PVE host itself, for what its API cannot do: joining an
//! image a release ships in parts.
//!
//! Release assets are limited in size, so big images ship as
//! `<image>.qcow2.partaa`, `.partab`, …. PVE's `download-url` fetches each
//! part, but no API call concatenates files, so homestak logs in to the host
//! (`ssh_host`, `ssh_port`, `ssh_user` and `ssh_key` of `nodes/<host>.yaml`;
//! the host key is trusted on first use and recorded in the state
//! directory's `known_hosts`) and runs:
//!
//! 1. `pvesm path <storage>:import/<image>.qcow2`: where PVE keeps the
//!    storage's import files (`/var/lib/vz/import` for `local`). It is
//!    PVE's own answer, whatever the storage type or its `content-dirs`,
//!    so homestak assumes no layout;
//! 2. `cat <parts…> > <image>.qcow2.tmp && mv -f <image>.qcow2.tmp
//!    <image>.qcow2` in that directory: the image appears under its final
//!    name only once complete (PVE lists import files by extension, so the
//!    `.tmp` never shows up as an image, and a later run overwrites one an
//!    interrupted join left behind);
//! 3. once the caller has seen the joined volume through the API with the
//!    parts' total size: `rm -f <parts…>`.
//!
//! A user other than root runs each line through `sudo -n sh -c`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use homestak_ssh::{self as ssh, ErrorKind};

/// How to reach the PVE host over SSH.
#[derive(Clone)]
pub struct HostSsh {
    pub transport: Arc<dyn ssh::Transport>,
    /// `ssh_user@ssh_host:ssh_port`.
    pub destination: ssh::Destination,
    /// The private key, loaded only when a join needs it: a site without
    /// split images never needs one.
    pub key: PathBuf,
    pub host_key: ssh::HostKeyPolicy,
    /// The site-config's name for the host (`nodes/<host>.yaml`), for hints.
    pub host: String,
}

/// Joining an image's parts on the host failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "image {image} ships in {parts} parts; joining them needs SSH to the PVE host \
         {destination} ({hint})"
    )]
    Connect {
        image: String,
        parts: u32,
        destination: ssh::Destination,
        hint: String,
        #[source]
        source: Box<ssh::Error>,
    },
    #[error("cannot {what} on the PVE host {destination} to join image {image}")]
    Run {
        image: String,
        destination: ssh::Destination,
        what: &'static str,
        #[source]
        source: Box<ssh::Error>,
    },
    #[error(
        "`pvesm path {volid}` on {destination} answered {answer:?}, not an absolute path ending \
         in /{file}; is {volid} on a file-based storage?"
    )]
    Path {
        volid: String,
        destination: ssh::Destination,
        answer: String,
        file: String,
    },
}

impl Error {
    /// Whether trying again later may help (the host rebooting, a dropped
    /// connection); a missing key or a refused login does not fix itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Path { .. } => false,
            Error::Connect { source, .. } => matches!(
                source.kind(),
                ErrorKind::PortClosed
                    | ErrorKind::Unreachable
                    | ErrorKind::Handshake
                    | ErrorKind::Session
            ),
            Error::Run { source, .. } => matches!(
                source.kind(),
                ErrorKind::Session | ErrorKind::Timeout | ErrorKind::Unreachable
            ),
        }
    }
}

impl HostSsh {
    /// What to change when logging in failed this way.
    fn hint(&self, kind: ErrorKind) -> String {
        let host = &self.host;
        let user = &self.destination.user;
        match kind {
            ErrorKind::Key => format!(
                "set ssh_key in nodes/{host}.yaml or pass --ssh-key: a private key {user} on the \
                 host accepts"
            ),
            ErrorKind::AuthRefused => format!(
                "add the public half of {} to {user}'s authorized_keys on the host, or set \
                 ssh_key in nodes/{host}.yaml",
                self.key.display()
            ),
            ErrorKind::PortClosed | ErrorKind::Unreachable | ErrorKind::Handshake => format!(
                "check that the host's SSH server answers; set ssh_port in nodes/{host}.yaml if \
                 it does not listen on 22"
            ),
            ErrorKind::HostKey | ErrorKind::KnownHosts => "check the host's SSH host key".into(),
            _ => "check the host's SSH server".into(),
        }
    }

    /// What to change when logging in failed this way (for messages of
    /// other uses than joining images).
    pub fn advice(&self, kind: ErrorKind) -> String {
        self.hint(kind)
    }

    /// Loads the key and logs in, for any use (a cloud-init snippet).
    pub async fn session(&self) -> Result<Box<dyn ssh::Session>, ssh::Error> {
        let identity = ssh::Identity::load(&self.key)?;
        let target = ssh::Target::new(self.destination.clone(), identity, self.host_key.clone());
        self.transport.connect(&target).await
    }

    /// Loads the key and logs in.
    pub async fn connect(&self, image: &str, parts: u32) -> Result<HostSession, Error> {
        let identity = self.check(image, parts)?;
        let target = ssh::Target::new(self.destination.clone(), identity, self.host_key.clone());
        let session = self
            .transport
            .connect(&target)
            .await
            .map_err(|source| self.connect_error(image, parts, source))?;
        Ok(HostSession {
            session,
            destination: self.destination.clone(),
            image: image.to_string(),
            root: &*self.destination.user == "root",
        })
    }

    /// Checks what can be checked without the host (a usable key), so a
    /// join that cannot happen fails before any part is downloaded; the key.
    pub fn check(&self, image: &str, parts: u32) -> Result<ssh::Identity, Error> {
        ssh::Identity::load(&self.key).map_err(|source| self.connect_error(image, parts, source))
    }

    fn connect_error(&self, image: &str, parts: u32, source: ssh::Error) -> Error {
        Error::Connect {
            image: image.to_string(),
            parts,
            destination: self.destination.clone(),
            hint: self.hint(source.kind()),
            source: Box::new(source),
        }
    }
}

/// A logged-in session on the host.
pub struct HostSession {
    session: Box<dyn ssh::Session>,
    destination: ssh::Destination,
    image: String,
    root: bool,
}

impl HostSession {
    /// `line` as the configured user runs it: as is for root, else through
    /// `sudo -n sh -c` (the import directory belongs to root).
    fn command(&self, line: String) -> ssh::Command {
        if self.root {
            ssh::Command::shell(line)
        } else {
            ssh::Command::new("sudo").args(["-n", "sh", "-c"]).arg(line)
        }
    }

    fn run_error(&self, what: &'static str) -> impl FnOnce(ssh::Error) -> Error + '_ {
        move |source| Error::Run {
            image: self.image.clone(),
            destination: self.destination.clone(),
            what,
            source: Box::new(source),
        }
    }

    /// The directory holding volume `volid` (whose file name is `file`),
    /// as `pvesm path` says.
    pub async fn directory_of(&self, volid: &str, file: &str) -> Result<String, Error> {
        let command = self.command(format!("pvesm path {}", ssh::quote(volid)));
        let output = self
            .session
            .exec_ok(&command)
            .await
            .map_err(self.run_error("find the storage's import directory"))?;
        let answer = output.stdout_text().trim().to_string();
        match answer.strip_suffix(&format!("/{file}")) {
            Some(dir) if answer.starts_with('/') && !answer.contains('\n') => Ok(dir.to_string()),
            _ => Err(Error::Path {
                volid: volid.to_string(),
                destination: self.destination.clone(),
                answer,
                file: file.to_string(),
            }),
        }
    }

    /// Concatenates `parts` (file names in `dir`) into `file` there,
    /// through a temporary name.
    pub async fn join(
        &self,
        dir: &str,
        parts: &[String],
        file: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let path = |name: &str| ssh::quote(&format!("{dir}/{name}"));
        let tmp = path(&format!("{file}.tmp"));
        let sources: Vec<String> = parts.iter().map(|p| path(p)).collect();
        let line = format!(
            "cat {} > {tmp} && mv -f {tmp} {}",
            sources.join(" "),
            path(file)
        );
        self.session
            .exec_ok(&self.command(line).timeout(timeout))
            .await
            .map_err(self.run_error("join the parts"))?;
        Ok(())
    }

    /// Removes `files` (names in `dir`); missing ones are fine.
    pub async fn remove(&self, dir: &str, files: &[String]) -> Result<(), Error> {
        let paths: Vec<String> = files
            .iter()
            .map(|f| ssh::quote(&format!("{dir}/{f}")))
            .collect();
        let line = format!("rm -f {}", paths.join(" "));
        self.session
            .exec_ok(&self.command(line))
            .await
            .map_err(self.run_error("remove the parts"))?;
        Ok(())
    }

    /// Logs out (errors do not matter any more).
    pub async fn close(self) {
        let _ = self.session.close().await;
    }
}
