//! Running things on a host over SSH as root, shared by host onboarding
//! and the `pve` node controller: commands through `sudo -n sh -c` unless
//! the SSH user is root; files uploaded to a private staging directory,
//! then moved into place in one root command, so a file is either old or
//! complete.

use crate::controllers::pve::inner::File;
use homestak_ssh::{self as ssh, Command, Upload, quote};

/// Relative: in the SSH user's home directory.
const STAGE: &str = ".homestak-stage";

/// `line` as root for `user`.
pub fn as_root(user: &str, line: &str) -> Command {
    Command::as_root(user, line)
}

/// Runs `line` as root; its stdout.
pub async fn root(
    session: &dyn ssh::Session,
    user: &str,
    line: &str,
) -> Result<String, ssh::Error> {
    Ok(session.exec_ok(&as_root(user, line)).await?.stdout_text())
}

/// Installs `files`: staged in a private directory of the SSH user's home
/// (never a shared `/tmp`: tokens and keys pass through it), then moved
/// into place in one root command.
pub async fn install(
    session: &dyn ssh::Session,
    user: &str,
    files: &[File],
) -> Result<(), ssh::Error> {
    session
        .exec_ok(&Command::shell(format!(
            "mkdir -p {STAGE} && chmod 700 {STAGE}"
        )))
        .await?;
    let mut dirs: Vec<String> = Vec::new();
    let mut moves = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let staged = format!("{STAGE}/{i}");
        session
            .upload(&Upload::bytes(
                file.bytes.clone(),
                staged.clone(),
                file.mode,
            ))
            .await?;
        if let Some((dir, _)) = file.path.rsplit_once('/')
            && !dir.is_empty()
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_string());
        }
        moves.push(format!("mv -f {staged} {}", quote(&file.path)));
    }
    let mut line = format!(
        "mkdir -p {}",
        dirs.iter().map(|d| quote(d)).collect::<Vec<_>>().join(" ")
    );
    for m in moves {
        line.push_str(" && ");
        line.push_str(&m);
    }
    session.exec_ok(&as_root(user, &line)).await?;
    Ok(())
}

/// Reads a marker file, trimmed; `None` when it is absent (or empty:
/// the one command does not tell the two apart, and no marker is empty).
pub async fn marker(
    session: &dyn ssh::Session,
    user: &str,
    path: &str,
) -> Result<Option<String>, ssh::Error> {
    let line = format!("test -f {path} && cat {path} || true");
    let text = root(session, user, &line).await?.trim().to_string();
    Ok((!text.is_empty()).then_some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_commands_go_through_sudo_for_other_users() {
        assert_eq!(as_root("root", "hostname").line(), "hostname");
        assert_eq!(
            as_root("ops", "mkdir -p /etc/x").line(),
            "sudo -n sh -c 'mkdir -p /etc/x'"
        );
    }
}
