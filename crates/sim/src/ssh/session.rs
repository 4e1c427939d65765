//! One SSH connection to a simulated host: authentication and channels.
//!
//! Only public-key authentication exists, for the user and keys cloud-init
//! gave, and other users' `authorized_keys` when the server has
//! [`Accounts`](super::Accounts); passwords, keyboard-interactive and "none" are
//! refused. A session channel may carry one `exec` request; shells,
//! subsystems (SFTP), forwarding and agent requests are refused, as on a
//! locked-down sshd.
//!
//! Each accepted channel gets a task that waits for the exec request, then
//! runs the [`CommandHandler`] while pumping the client's data into the
//! command's stdin. The pump always drains the channel, so a command that
//! never reads stdin cannot stall the connection's other channels beyond
//! what its stdin buffer holds.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::handler::{ChannelOutput, CommandHandler, ExecRequest, Stdio};

/// How much client data may wait in a command's stdin.
const STDIN_BUFFER: usize = 256 * 1024;

/// What every connection of one server shares.
pub(super) struct Shared {
    /// The user and the keys that may log in as it.
    pub(super) authorized: RwLock<(String, Vec<PublicKey>)>,
    pub(super) handler: Arc<dyn CommandHandler>,
    /// Other users and their keys.
    pub(super) accounts: Option<Arc<dyn super::Accounts>>,
    /// Becomes true when the server shuts down.
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Shared {
    async fn allows(&self, user: &str, key: &PublicKey) -> bool {
        let configured = match self.authorized.read() {
            Ok(guard) => {
                let (allowed_user, keys) = &*guard;
                allowed_user == user && keys.iter().any(|k| k.key_data() == key.key_data())
            }
            Err(_) => false,
        };
        if configured {
            return true;
        }
        match &self.accounts {
            Some(accounts) => accounts
                .authorized_keys(user)
                .await
                .iter()
                .any(|k| k.key_data() == key.key_data()),
            None => false,
        }
    }
}

/// The russh handler of one connection.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: Option<SocketAddr>,
    /// Set once authentication succeeds.
    pub(super) user: Option<String>,
}

fn publickey_only() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
        partial_success: false,
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(publickey_only())
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(publickey_only())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(publickey_only())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Saves the client a signature for a key that would be refused.
        if self.shared.allows(user, offer.public_key).await {
            Ok(Auth::Accept)
        } else {
            Ok(publickey_only())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.allows(user, key.public_key).await {
            self.user = Some(user.to_string());
            Ok(Auth::Accept)
        } else {
            tracing::debug!(peer = ?self.peer, user, "refused public key");
            Ok(publickey_only())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(user) = self.user.clone() else {
            // Dropping the reply refuses the channel.
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(serve_channel(
            channel,
            Arc::clone(&self.shared),
            user,
            self.peer,
        ));
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The channel task received the command itself.
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No terminals here; `ssh -t host cmd` still runs cmd, without a pty.
        session.channel_failure(channel)
    }
}

/// Serves one session channel: one exec request, then exit status and close.
async fn serve_channel(
    channel: Channel<Msg>,
    shared: Arc<Shared>,
    user: String,
    peer: Option<SocketAddr>,
) {
    let (mut rx, tx) = channel.split();
    let command = loop {
        match rx.wait().await {
            Some(ChannelMsg::Exec { command, .. }) => break command,
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let mut stderr = ChannelOutput(tx.make_writer_ext(Some(1)));
    let Ok(command) = String::from_utf8(command) else {
        let _ = stderr.write_all(b"sh: command is not valid UTF-8\n").await;
        let _ = tx.exit_status(126).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
        return;
    };
    let (mut stdin_tx, stdin_rx) = tokio::io::duplex(STDIN_BUFFER);
    let request = ExecRequest {
        command,
        user,
        peer,
        io: Stdio {
            stdin: Box::new(stdin_rx),
            stdout: Box::new(ChannelOutput(tx.make_writer())),
            stderr: Box::new(stderr),
        },
    };
    let run = shared.handler.exec(request);
    let pump = async {
        let mut open = true;
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) if open => {
                    // A command that has stopped reading: discard the rest.
                    if stdin_tx.write_all(&data).await.is_err() {
                        open = false;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = stdin_tx.shutdown().await;
                    open = false;
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    };
    let mut shutdown = shared.shutdown.clone();
    let status = tokio::select! {
        status = run => Some(status),
        () = pump => None,
        () = super::stopped(&mut shutdown) => None,
    };
    // When the client went away or the server stops, the command was
    // dropped above; there is nobody to tell.
    if let Some(status) = status {
        let _ = tx.exit_status(status).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    }
}
