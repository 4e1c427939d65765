//! Users beyond the one cloud-init made: who else may log in and who may
//! use `sudo`. The SSH server and the [`Shell`](super::Shell) ask an
//! [`Accounts`] when one is set; without one, only the configured user
//! logs in and every user may `sudo` (the plain shell of tests and of a
//! node's own SSH, where the only user is root).

use russh::keys::PublicKey;

use homestak_ssh::BoxFuture;

/// The VM's user database, as sshd and sudo see it.
pub trait Accounts: Send + Sync + 'static {
    /// The keys that may log in as `user`, besides the configured user's
    /// (an existing user's `~/.ssh/authorized_keys`). Empty when none.
    fn authorized_keys<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Vec<PublicKey>>;

    /// Whether `user` may run commands as root without a password.
    fn may_sudo<'a>(&'a self, user: &'a str) -> BoxFuture<'a, bool>;

    /// `user`'s home directory, when the database knows the user.
    fn home<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Option<String>>;
}
