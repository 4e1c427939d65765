//! The homestak user on a host (`homestak scenario user-setup`): a login
//! user in group `sudo`, password-less sudo through a drop-in, the site's
//! SSH keys, and a check that it all works.
//!
//! Every step looks first and acts only on a difference, so a second run
//! changes nothing. Commands run as root through [`remote::as_root`] (the
//! SSH user needs password-less sudo unless it is root).
//!
//! - [`ensure_user`]: `getent passwd`; `useradd -m -s /bin/bash -G sudo`
//!   when absent; else a nologin shell, a missing home or a missing `sudo`
//!   group is fixed.
//! - [`setup_sudo`]: `/etc/sudoers.d/<user>` with `<user> ALL=(ALL)
//!   NOPASSWD:ALL`, root:root 0440. The new text is staged under a name
//!   with a dot (sudo ignores those), checked with `visudo -cf`, and only
//!   then moved into place: a bad file never locks anyone out of sudo.
//! - [`setup_ssh_keys`]: each of the site's keys in
//!   `~<user>/.ssh/authorized_keys` (keys already there stay), the file
//!   0600 and `~/.ssh` 0700, both owned by the user.
//! - [`verify_user`]: logs in as the user and runs `sudo -n true`.

use homestak_ssh::{self as ssh, Command, quote};

use super::remote::{self, as_root};
use crate::controllers::pve::inner::File;

/// The group whose members Debian lets use sudo.
pub const SUDO_GROUP: &str = "sudo";
/// The login shell a new user gets.
pub const SHELL: &str = "/bin/bash";
/// The Python tool's default user.
pub const DEFAULT_USER: &str = "homestak";

/// Setting up the user failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{name:?} is not a valid user name: use lowercase letters, digits, `_` and `-`, starting \
         with a letter or `_`, at most 32 characters (--homestak-user NAME)"
    )]
    InvalidName { name: String },
    #[error("{host}: {action}")]
    Ssh {
        host: String,
        action: String,
        #[source]
        source: Box<ssh::Error>,
    },
    #[error("{host}: user {user} does not exist; run phase ensure_user first")]
    NoUser { host: String, user: String },
    #[error("{host}: the sudoers drop-in for {user} fails `visudo -cf`; it was not installed")]
    Sudoers {
        host: String,
        user: String,
        #[source]
        source: Box<ssh::Error>,
    },
    #[error(
        "secrets.yaml has no ssh_keys: add the site's public keys (ssh_keys: NAME: 'ssh-ed25519 AAAA… comment')"
    )]
    NoKeys,
    #[error(
        "secrets.yaml ssh_keys.{name} is not an SSH public key: expected `TYPE BASE64 [comment]` \
         as in a .pub file"
    )]
    BadKey { name: String },
    #[error(
        "the key {key} is not among secrets.yaml ssh_keys, so it cannot log in as {user}: add its \
         public half there and run again, or pass --ssh-key with one that is"
    )]
    KeyNotInSite { key: String, user: String },
    #[error(
        "{host}: cannot log in as {user}; check ~{user}/.ssh/authorized_keys and that sshd allows the user"
    )]
    Login {
        host: String,
        user: String,
        #[source]
        source: Box<ssh::Error>,
    },
    #[error(
        "{host}: {user} has no password-less sudo (`sudo -n true` failed); check /etc/sudoers.d/{user}"
    )]
    NoSudo {
        host: String,
        user: String,
        #[source]
        source: Box<ssh::Error>,
    },
}

fn host(session: &dyn ssh::Session) -> String {
    session.destination().host.to_string()
}

fn ssh_err(
    session: &dyn ssh::Session,
    action: impl Into<String>,
) -> impl FnOnce(ssh::Error) -> Error {
    let host = host(session);
    let action = action.into();
    move |source| Error::Ssh {
        host,
        action,
        source: Box::new(source),
    }
}

/// shadow's rule for user names (Debian's default, without `--badname`).
pub fn check_name(name: &str) -> Result<(), Error> {
    let valid = name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName { name: name.into() })
    }
}

/// What `getent passwd` says of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub home: String,
    pub shell: String,
}

/// The user's passwd entry; `None` when absent (getent's exit 2).
pub async fn lookup(session: &dyn ssh::Session, name: &str) -> Result<Option<Entry>, Error> {
    let command = Command::new("getent").arg("passwd").arg(name);
    let out = session
        .exec(&command, &mut |_, _| {})
        .await
        .map_err(ssh_err(session, format!("looking up user {name}")))?;
    if out.status.code() == Some(2) {
        return Ok(None);
    }
    let out = out
        .check(session.destination(), &command)
        .map_err(ssh_err(session, format!("looking up user {name}")))?;
    let text = out.stdout_text();
    let fields: Vec<&str> = text.trim().split(':').collect();
    match fields.as_slice() {
        [_, _, _, _, _, home, shell] => Ok(Some(Entry {
            home: (*home).to_string(),
            shell: (*shell).to_string(),
        })),
        _ => Ok(None),
    }
}

/// Runs `line` as root; its stdout.
async fn root(
    session: &dyn ssh::Session,
    user: &str,
    line: &str,
    action: &str,
) -> Result<String, Error> {
    remote::root(session, user, line)
        .await
        .map_err(ssh_err(session, action))
}

/// The user exists with a home directory, a login shell, in group `sudo`.
/// Returns what was done (empty: nothing to do).
pub async fn ensure_user(
    session: &dyn ssh::Session,
    ssh_user: &str,
    name: &str,
) -> Result<Vec<String>, Error> {
    check_name(name)?;
    let Some(entry) = lookup(session, name).await? else {
        let line = format!("useradd -m -s {SHELL} -G {SUDO_GROUP} {}", quote(name));
        root(session, ssh_user, &line, &format!("creating user {name}")).await?;
        return Ok(vec![format!(
            "created user {name} (shell {SHELL}, group {SUDO_GROUP})"
        )]);
    };
    let mut done = Vec::new();
    if entry.shell.ends_with("/nologin")
        || entry.shell.ends_with("/false")
        || entry.shell.is_empty()
    {
        let line = format!("usermod -s {SHELL} {}", quote(name));
        root(session, ssh_user, &line, &format!("setting {name}'s shell")).await?;
        done.push(format!("login shell {SHELL}"));
    }
    let home = quote(&entry.home);
    let line = format!("test -d {home} && echo yes || echo no");
    if root(session, ssh_user, &line, &format!("checking {name}'s home"))
        .await?
        .trim()
        != "yes"
    {
        let group = primary_group(session, name).await?;
        let line = format!(
            "install -d -m 700 -o {} -g {} {home}",
            quote(name),
            quote(&group)
        );
        root(session, ssh_user, &line, &format!("creating {name}'s home")).await?;
        done.push(format!("home {}", entry.home));
    }
    let groups = session
        .exec_ok(&Command::new("id").arg("-nG").arg(name))
        .await
        .map_err(ssh_err(session, format!("reading {name}'s groups")))?
        .stdout_text();
    if !groups.split_whitespace().any(|g| g == SUDO_GROUP) {
        let line = format!("usermod -aG {SUDO_GROUP} {}", quote(name));
        root(
            session,
            ssh_user,
            &line,
            &format!("adding {name} to {SUDO_GROUP}"),
        )
        .await?;
        done.push(format!("added to group {SUDO_GROUP}"));
    }
    Ok(done)
}

async fn primary_group(session: &dyn ssh::Session, name: &str) -> Result<String, Error> {
    Ok(session
        .exec_ok(&Command::new("id").arg("-gn").arg(name))
        .await
        .map_err(ssh_err(session, format!("reading {name}'s group")))?
        .stdout_text()
        .trim()
        .to_string())
}

/// The drop-in's path.
pub fn sudoers_path(name: &str) -> String {
    format!("/etc/sudoers.d/{name}")
}

/// The drop-in's text.
pub fn sudoers_text(name: &str) -> String {
    format!("# homestak: password-less sudo for {name}\n{name} ALL=(ALL) NOPASSWD:ALL\n")
}

/// `/etc/sudoers.d/<name>`: the NOPASSWD line, root:root 0440. Returns
/// whether it changed.
pub async fn setup_sudo(
    session: &dyn ssh::Session,
    ssh_user: &str,
    name: &str,
) -> Result<bool, Error> {
    check_name(name)?;
    let path = sudoers_path(name);
    let text = sudoers_text(name);
    let current = remote::marker(session, ssh_user, &path)
        .await
        .map_err(ssh_err(session, format!("reading {path}")))?;
    if current.as_deref() == Some(text.trim())
        && stat(session, ssh_user, &path).await?.as_deref() == Some("root:root 440")
    {
        return Ok(false);
    }
    // Staged beside it under a name sudo skips (it has a dot).
    let staged = format!("/etc/sudoers.d/.{name}.homestak-new");
    remote::install(
        session,
        ssh_user,
        &[File {
            path: staged.clone(),
            bytes: text.into_bytes(),
            mode: 0o440,
        }],
    )
    .await
    .map_err(ssh_err(session, format!("staging {staged}")))?;
    let staged_q = quote(&staged);
    if let Err(source) = session
        .exec_ok(&as_root(ssh_user, &format!("visudo -cf {staged_q}")))
        .await
    {
        let _ = session
            .exec(
                &as_root(ssh_user, &format!("rm -f {staged_q}")),
                &mut |_, _| {},
            )
            .await;
        return Err(Error::Sudoers {
            host: host(session),
            user: name.into(),
            source: Box::new(source),
        });
    }
    let line = format!(
        "chown root:root {staged_q} && chmod 440 {staged_q} && mv -f {staged_q} {}",
        quote(&path)
    );
    root(session, ssh_user, &line, &format!("installing {path}")).await?;
    Ok(true)
}

/// `stat -c '%U:%G %a' PATH` as root; `None` when the path is absent.
async fn stat(
    session: &dyn ssh::Session,
    ssh_user: &str,
    path: &str,
) -> Result<Option<String>, Error> {
    let p = quote(path);
    let line = format!("test -e {p} && stat -c '%U:%G %a' {p} || true");
    let out = root(session, ssh_user, &line, &format!("checking {path}")).await?;
    let out = out.trim();
    Ok((!out.is_empty()).then(|| out.to_string()))
}

/// A public key's identity: its type and blob, without the comment.
fn key_id(line: &str) -> Option<(String, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| {
        w.starts_with("ssh-") || w.starts_with("ecdsa-sha2-") || w.starts_with("sk-")
    })?;
    let blob = words.get(at + 1)?;
    let base64 = blob.len() >= 16
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    base64.then(|| (words[at].to_string(), (*blob).to_string()))
}

/// The site's keys by name, each checked to look like a public key.
pub fn site_keys(keys: &[(String, String)]) -> Result<Vec<String>, Error> {
    if keys.is_empty() {
        return Err(Error::NoKeys);
    }
    keys.iter()
        .map(|(name, key)| {
            key_id(key)
                .map(|_| key.trim().to_string())
                .ok_or_else(|| Error::BadKey { name: name.clone() })
        })
        .collect()
}

/// Whether the public key `line` is among `keys`.
pub fn has_key(keys: &[String], line: &str) -> bool {
    let Some(id) = key_id(line) else {
        return false;
    };
    keys.iter().any(|k| key_id(k).as_ref() == Some(&id))
}

/// Each of `keys` in `~<name>/.ssh/authorized_keys` (other keys stay), the
/// file 0600 and the directory 0700, owned by the user. Returns what was
/// done (empty: nothing to do).
pub async fn setup_ssh_keys(
    session: &dyn ssh::Session,
    ssh_user: &str,
    name: &str,
    keys: &[String],
) -> Result<Vec<String>, Error> {
    check_name(name)?;
    let Some(entry) = lookup(session, name).await? else {
        return Err(Error::NoUser {
            host: host(session),
            user: name.into(),
        });
    };
    let group = primary_group(session, name).await?;
    let owner = format!("{name}:{group}");
    let dir = format!("{}/.ssh", entry.home.trim_end_matches('/'));
    let file = format!("{dir}/authorized_keys");
    let mut done = Vec::new();

    if stat(session, ssh_user, &dir).await?.as_deref() != Some(&format!("{owner} 700")) {
        let line = format!(
            "install -d -m 700 -o {} -g {} {}",
            quote(name),
            quote(&group),
            quote(&dir)
        );
        root(session, ssh_user, &line, &format!("creating {dir}")).await?;
        done.push(format!("{dir} 0700"));
    }

    let current = remote::marker(session, ssh_user, &file)
        .await
        .map_err(ssh_err(session, format!("reading {file}")))?
        .unwrap_or_default();
    let present: Vec<String> = current.lines().map(String::from).collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !has_key(&present, k)).collect();
    if !missing.is_empty() {
        let mut text = String::new();
        for line in current.lines() {
            text.push_str(line);
            text.push('\n');
        }
        for key in &missing {
            text.push_str(key);
            text.push('\n');
        }
        remote::install(
            session,
            ssh_user,
            &[File {
                path: file.clone(),
                bytes: text.into_bytes(),
                mode: 0o600,
            }],
        )
        .await
        .map_err(ssh_err(session, format!("writing {file}")))?;
        done.push(format!("{} keys added to {file}", missing.len()));
    }
    if stat(session, ssh_user, &file).await?.as_deref() != Some(&format!("{owner} 600")) {
        let f = quote(&file);
        let line = format!("chown {} {f} && chmod 600 {f}", quote(&owner));
        root(
            session,
            ssh_user,
            &line,
            &format!("setting the owner of {file}"),
        )
        .await?;
        if missing.is_empty() {
            done.push(format!("{file} {owner} 0600"));
        }
    }
    Ok(done)
}

/// Logs in as `target`'s user and runs `sudo -n true`.
pub async fn verify_user(
    transport: &dyn ssh::Transport,
    target: &ssh::Target,
) -> Result<(), Error> {
    let host = target.destination.host.to_string();
    let user = target.destination.user.to_string();
    let session = transport
        .connect(target)
        .await
        .map_err(|source| Error::Login {
            host: host.clone(),
            user: user.clone(),
            source: Box::new(source),
        })?;
    let result = session
        .exec_ok(&Command::shell("sudo -n true"))
        .await
        .map(|_| ())
        .map_err(|source| Error::NoSudo {
            host,
            user,
            source: Box::new(source),
        });
    let _ = session.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q ops@lab";

    #[test]
    fn names_follow_shadow() {
        assert!(check_name("homestak").is_ok());
        assert!(check_name("_svc-1").is_ok());
        for bad in ["", "Homestak", "1ops", "a b", "x;rm", &"a".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_compare_without_comments_and_bad_ones_are_named() {
        let other_comment = KEY.replace("ops@lab", "someone");
        assert!(has_key(&[other_comment], KEY));
        assert!(!has_key(
            &["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAOTHER0000".into()],
            KEY
        ));
        let keys = vec![
            ("ops".to_string(), KEY.to_string()),
            ("typo".to_string(), "ssh-ed25519 not!base64".to_string()),
        ];
        let err = site_keys(&keys).unwrap_err();
        assert!(err.to_string().contains("ssh_keys.typo"), "{err}");
        assert!(matches!(site_keys(&[]), Err(Error::NoKeys)));
        assert_eq!(site_keys(&keys[..1]).unwrap(), vec![KEY.to_string()]);
    }

    #[test]
    fn the_drop_in_is_one_nopasswd_line() {
        assert_eq!(
            sudoers_text("homestak").lines().last(),
            Some("homestak ALL=(ALL) NOPASSWD:ALL")
        );
        assert_eq!(sudoers_path("homestak"), "/etc/sudoers.d/homestak");
    }
}
