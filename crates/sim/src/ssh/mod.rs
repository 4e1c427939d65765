//! The SSH server of a simulated VM (russh server side).
//!
//! Each simulated VM gets one [`Server`] on its own loopback address. It
//! accepts the public keys cloud-init would install (`sshkeys`) for one
//! user (`ciuser`), and, given [`Accounts`], other users' keys from their
//! `authorized_keys`; nothing else: no passwords, no shells,
//! no forwarding, no SFTP subsystem. Exec requests go to a pluggable
//! [`CommandHandler`], never to a host shell; the default handler,
//! [`Shell`], is a small honest command set confined to a per-VM directory
//! (the VM's root filesystem) and accepts `scp -t` uploads, so our client
//! and the real OpenSSH `scp -O` can install files.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(keys: Vec<russh::keys::PublicKey>) -> Result<(), homestak_sim::ssh::Error> {
//! use std::sync::Arc;
//! use homestak_sim::ssh::{Config, Server, Shell, VmRoot};
//!
//! let root = VmRoot::create("/tmp/sim/vm-101".as_ref())?;
//! let shell = Shell::new(root, "vm-101");
//! let server = Server::start(Config::new("127.1.0.101:0".parse().unwrap(), "debian", keys, Arc::new(shell))).await?;
//! println!("ssh on {} with host key {}", server.local_addr(), server.host_key_fingerprint());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Shutdown
//!
//! [`Server::shutdown`] stops accepting, disconnects every session, drops
//! every running command and returns once all connection tasks are gone
//! (bounded: stragglers are aborted after a few seconds). Dropping a
//! `Server` starts the same shutdown without waiting for it.

pub mod accounts;
mod builtins;
mod curl;
mod handler;
#[cfg(test)]
mod memory;
pub mod mounts;
mod parse;
mod scp;
mod scp_source;
mod session;
mod shell;
#[cfg(test)]
mod tests;
mod vmfs;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use accounts::Accounts;
pub use handler::{CommandHandler, ExecRequest, Stdio};
#[cfg(test)]
pub use memory::Captured;
pub use mounts::{Entry, MountError, Mounts};
pub use shell::{Context, Program, Shell};
pub use vmfs::{PathError, VmPath, VmRoot};

use homestak_ssh::Fingerprint;
use session::{Connection, Shared};

/// Errors starting a simulated SSH server or preparing its inputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The simulator only ever listens on loopback addresses.
    #[error(
        "refusing to listen for simulated SSH on {addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
    )]
    NotLoopback { addr: SocketAddr },

    /// The listen address could not be bound.
    #[error("cannot listen for SSH on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// Generating the host key failed.
    #[error("cannot generate an SSH host key")]
    HostKey {
        #[source]
        source: Box<russh::keys::ssh_key::Error>,
    },

    /// A line of an authorized-keys text (cloud-init `sshkeys`) is not a key.
    #[error(
        "authorized key on line {line} is not a public key: expected `TYPE BASE64 [comment]` as in \
         a .pub file"
    )]
    AuthorizedKey {
        line: usize,
        #[source]
        source: Box<russh::keys::Error>,
    },

    /// The VM root directory could not be created or resolved.
    #[error("cannot prepare VM root directory {path}")]
    VmRoot {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a simulated SSH server serves.
pub struct Config {
    /// Where to listen (a loopback address; port 0 picks a free port).
    pub listen: SocketAddr,
    /// The only user that may log in (cloud-init `ciuser`).
    pub user: String,
    /// The keys that may log in as `user` (cloud-init `sshkeys`).
    pub authorized_keys: Vec<PublicKey>,
    /// The host key; `None` generates a fresh ed25519 key.
    pub host_key: Option<PrivateKey>,
    /// Runs exec requests.
    pub handler: Arc<dyn CommandHandler>,
    /// Other users who may log in with their `authorized_keys`.
    pub accounts: Option<Arc<dyn Accounts>>,
}

impl Config {
    /// A config with a generated host key.
    pub fn new(
        listen: SocketAddr,
        user: &str,
        authorized_keys: Vec<PublicKey>,
        handler: Arc<dyn CommandHandler>,
    ) -> Self {
        Config {
            listen,
            user: user.to_string(),
            authorized_keys,
            host_key: None,
            handler,
            accounts: None,
        }
    }
}

/// A running simulated SSH server.
pub struct Server {
    local_addr: SocketAddr,
    host_key: PublicKey,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("host_key", &self.host_key_fingerprint())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds and starts serving in the background.
    pub async fn start(config: Config) -> Result<Server, Error> {
        if !config.listen.ip().is_loopback() {
            return Err(Error::NotLoopback {
                addr: config.listen,
            });
        }
        let host_key = match config.host_key {
            Some(key) => key,
            None => PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                .map_err(|source| Error::HostKey {
                    source: Box::new(source),
                })?,
        };
        let public = host_key.public_key().clone();
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let russh_config = Arc::new(russh::server::Config {
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            // Loopback only: a short constant rejection delay keeps tests
            // and wait loops quick while still not leaking timing per key.
            auth_rejection_time: Duration::from_millis(100),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            // Long quiet commands are normal; dead clients are found by
            // keepalives instead of an inactivity timeout.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..russh::server::Config::default()
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            authorized: RwLock::new((config.user, config.authorized_keys)),
            handler: config.handler,
            accounts: config.accounts,
            shutdown: shutdown_rx,
        });
        let task = tokio::spawn(accept_loop(listener, russh_config, Arc::clone(&shared)));
        tracing::debug!(%local_addr, host_key = %Fingerprint::of(&public), "simulated SSH server up");
        Ok(Server {
            local_addr,
            host_key: public,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's public host key.
    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// The host key's fingerprint (`SHA256:…`), e.g. to pin it in a client.
    pub fn host_key_fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.host_key)
    }

    /// Replaces who may log in, as re-running cloud-init would. New
    /// authentications see the change; open sessions stay.
    pub fn authorize(&self, user: &str, keys: Vec<PublicKey>) {
        if let Ok(mut guard) = self.shared.authorized.write() {
            *guard = (user.to_string(), keys);
        }
    }

    /// Stops the server and waits for its connections to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Parses an `authorized_keys`-style text (cloud-init `sshkeys`): one key per
/// line, `#` comments and blank lines ignored, leading options skipped.
pub fn parse_authorized_keys(text: &str) -> Result<Vec<PublicKey>, Error> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        // `[options] TYPE BASE64 [comment]`: the key follows its type name.
        let blob = words
            .iter()
            .position(|w| is_key_type(w))
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or(line);
        let key =
            russh::keys::parse_public_key_base64(blob).map_err(|source| Error::AuthorizedKey {
                line: index + 1,
                source: Box::new(source),
            })?;
        keys.push(key);
    }
    Ok(keys)
}

/// Resolves once the server is shutting down (or gone).
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard must not live across an await in the caller.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    connections.spawn(serve_connection(
                        socket,
                        peer,
                        Arc::clone(&config),
                        Arc::clone(&shared),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(%error, "simulated SSH server cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    let handler = Connection {
        shared,
        peer: Some(peer),
        user: None,
    };
    let session = tokio::select! {
        session = russh::server::run_stream(config, socket, handler) => match session {
            Ok(session) => session,
            Err(error) => {
                tracing::debug!(%peer, %error, "SSH connection failed before key exchange");
                return;
            }
        },
        () = stopped(&mut shutdown) => return,
    };
    let handle = session.handle();
    tokio::pin!(session);
    tokio::select! {
        result = &mut session => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "SSH connection ended with an error");
            }
        }
        () = stopped(&mut shutdown) => {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "simulated host shutting down".to_string(),
                    "en".to_string(),
                )
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), session).await;
        }
    }
}
