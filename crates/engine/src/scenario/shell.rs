//! Where a scenario's commands run: on this machine (`--local`) or on a
//! host over SSH (`--remote IP`, `--host NAME`, `--vm-ip IP`). Both are an
//! [`ssh::Session`], so a phase is written once for either.

use std::path::PathBuf;
use std::sync::Arc;

use homestak_base::BoxFuture;
use homestak_core::site::Site;
use homestak_ssh::{self as ssh, Command, Destination, ExecOutput, ExitStatus, Upload};

use super::{Inputs, PhaseError};

/// A scenario's shell: an SSH session, or this machine's `sh`.
pub type Shell = dyn ssh::Session;

/// Where the scenario acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// This machine (`--local`).
    Local,
    /// A host over SSH.
    Ssh {
        destination: Destination,
        /// The private key to log in with.
        key: PathBuf,
    },
}

/// Why the target's shell could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("cannot load the SSH key {path}; pass --ssh-key PATH")]
    Key {
        path: PathBuf,
        #[source]
        source: ssh::Error,
    },
    #[error("cannot reach {destination} over SSH; check the address, the key and that sshd runs")]
    Connect {
        destination: Destination,
        #[source]
        source: ssh::Error,
    },
}

/// `~/.ssh/id_rsa`, the Python tool's key.
fn default_key() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".ssh/id_rsa")
}

impl Where {
    /// The target the flags name: `--local`, `--remote`, `--host`, then
    /// `--vm-ip`, in that order.
    pub fn of(inputs: &Inputs) -> Result<Where, String> {
        let key = |fallback: PathBuf| inputs.ssh_key.clone().unwrap_or(fallback);
        let user = inputs.ssh_user.as_deref().unwrap_or("root");
        let port = inputs.ssh_port.unwrap_or(22);
        if inputs.local {
            return Ok(Where::Local);
        }
        if let Some(ip) = inputs.remote.as_deref().or(inputs.vm_ip.as_deref())
            && inputs.host.is_none()
        {
            return Ok(Where::Ssh {
                destination: Destination::new(ip, port, user),
                key: key(default_key()),
            });
        }
        let Some(name) = inputs.host.as_deref() else {
            return Err("name one of --local, --remote IP, --host NAME".into());
        };
        let root = inputs
            .site_root
            .as_deref()
            .ok_or_else(|| "--host needs a site-config (--site-config DIR)".to_string())?;
        let site = Site::load(root).map_err(|e| homestak_base::error_chain(&e))?;
        let host = site
            .host_config(name)
            .map_err(|e| homestak_base::error_chain(&e))?;
        // --remote overrides the address the site-config gives.
        let address = match (inputs.remote.as_deref(), host.ssh_host.as_deref()) {
            (Some(ip), _) | (None, Some(ip)) => ip.to_string(),
            (None, None) => {
                return Err(format!(
                    "host {name} has no address: set ip: (or host:) in {}, or pass --remote IP",
                    host.config_file.display()
                ));
            }
        };
        let user = inputs.ssh_user.clone().unwrap_or(host.ssh_user.clone());
        let port = inputs.ssh_port.unwrap_or(host.ssh_port);
        Ok(Where::Ssh {
            destination: Destination::new(&address, port, &user),
            key: key(host.ssh_key.clone()),
        })
    }
}

/// Opens the shell of `place`. SSH host keys are trusted on first use and
/// kept in the state directory's `known_hosts`, as for VMs.
pub async fn open(place: &Where, inputs: &Inputs) -> Result<Arc<Shell>, PhaseError> {
    match place {
        Where::Local => Ok(Arc::new(LocalSession::new())),
        Where::Ssh { destination, key } => {
            let identity = ssh::Identity::load(key).map_err(|source| ShellError::Key {
                path: key.clone(),
                source,
            })?;
            let known = ssh::KnownHosts::new(inputs.state_dir.join("known_hosts"));
            let target = ssh::Target::new(
                destination.clone(),
                identity,
                ssh::HostKeyPolicy::AcceptNew(known),
            );
            let transport = ssh::RusshTransport::new(ssh::ClientOptions::default());
            let options = ssh::WaitOptions {
                timeout: std::time::Duration::from_secs(60),
                ..ssh::WaitOptions::default()
            };
            let session = ssh::Transport::wait_for_ssh(&transport, &target, &options)
                .await
                .map_err(|source| ShellError::Connect {
                    destination: destination.clone(),
                    source,
                })?;
            Ok(Arc::from(session))
        }
    }
}

/// This machine's `sh`, as the current user.
pub struct LocalSession {
    destination: Destination,
    /// No host key: a local shell has none to check.
    host_key: ssh::Fingerprint,
}

impl LocalSession {
    pub fn new() -> LocalSession {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        LocalSession {
            destination: Destination::new("localhost", 0, &user),
            host_key: ssh::Fingerprint::from_bytes([0; 32]),
        }
    }
}

impl Default for LocalSession {
    fn default() -> Self {
        LocalSession::new()
    }
}

impl ssh::Session for LocalSession {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn host_key(&self) -> &ssh::Fingerprint {
        &self.host_key
    }

    fn exec<'a>(
        &'a self,
        command: &'a Command,
        sink: &'a mut ssh::OutputSink<'_>,
    ) -> BoxFuture<'a, Result<ExecOutput, ssh::Error>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let local = |source: std::io::Error| ssh::Error::Local {
                destination: self.destination.clone(),
                command: command.to_string(),
                source,
            };
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command.line())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(local)?;
            if let Some(mut stdin) = child.stdin.take() {
                if let Some(data) = command.stdin_data() {
                    stdin.write_all(data).await.map_err(local)?;
                }
                drop(stdin);
            }
            let wait = child.wait_with_output();
            let output = match command.timeout_after() {
                Some(after) => match tokio::time::timeout(after, wait).await {
                    Ok(output) => output.map_err(local)?,
                    Err(_) => {
                        return Err(ssh::Error::ExecTimeout {
                            destination: self.destination.clone(),
                            command: command.to_string(),
                            after,
                        });
                    }
                },
                None => wait.await.map_err(local)?,
            };
            sink(ssh::Stream::Stdout, &output.stdout);
            sink(ssh::Stream::Stderr, &output.stderr);
            let status = match output.status.code() {
                Some(code) => ExitStatus::Code(u32::try_from(code).unwrap_or(255)),
                None => ExitStatus::Signal("KILL".into()),
            };
            let mut out = ExecOutput::new(status);
            out.stdout = output.stdout;
            out.stderr = output.stderr;
            Ok(out)
        })
    }

    fn upload<'a>(&'a self, upload: &'a Upload) -> BoxFuture<'a, Result<(), ssh::Error>> {
        Box::pin(async move {
            let local = |source: std::io::Error| ssh::Error::Local {
                destination: self.destination.clone(),
                command: format!("write {}", upload.remote_path),
                source,
            };
            let data = match &upload.source {
                ssh::UploadSource::Bytes(data) => data.clone(),
                ssh::UploadSource::File(path) => tokio::fs::read(path).await.map_err(local)?,
            };
            let path = PathBuf::from(&upload.remote_path);
            homestak_base::fsutil::write_atomic(&path, &data, upload.mode).map_err(local)
        })
    }

    fn download<'a>(
        &'a self,
        download: &'a ssh::Download,
    ) -> BoxFuture<'a, Result<u64, ssh::Error>> {
        Box::pin(async move {
            let local = |source: std::io::Error| ssh::Error::DownloadWrite {
                destination: self.destination.clone(),
                remote_path: download.remote_path.clone(),
                path: download.local_path.clone(),
                source,
            };
            let data = tokio::fs::read(&download.remote_path).await.map_err(|e| {
                ssh::Error::DownloadRefused {
                    destination: self.destination.clone(),
                    remote_path: download.remote_path.clone(),
                    message: e.to_string(),
                }
            })?;
            homestak_base::fsutil::write_atomic(&download.local_path, &data, 0o644)
                .map_err(local)?;
            Ok(data.len() as u64)
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), ssh::Error>> {
        Box::pin(async { Ok(()) })
    }
}
