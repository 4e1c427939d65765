//! A simulated VM's users, as `/etc/passwd`, `/etc/group`,
//! `/etc/sudoers.d` and `~/.ssh/authorized_keys` describe them (text files
//! in the VM root, so they survive restarts), and who owns which file.
//!
//! - First boot writes `root` and the cloud-init user (uid 1000, in group
//!   `sudo`); a later boot adds the cloud-init user when missing, as
//!   cloud-init does.
//! - [`GuestAccounts`] answers the SSH server and `sudo`: a user of
//!   `/etc/passwd` may log in with a key of their
//!   `~/.ssh/authorized_keys` when, as under sshd's `StrictModes`, the home
//!   directory, `~/.ssh` and the file are neither group- nor
//!   world-writable and owned by the user or root. `sudo` works for root,
//!   the cloud-init user (the cloud image's drop-in) and any user a
//!   `/etc/sudoers.d` file grants `NOPASSWD:ALL`; sudo skips files whose
//!   name has a `.` or ends in `~`, and files group- or world-writable.
//! - Ownership: the simulated root is plain files of the simulator's own
//!   user, so owners are kept in `owners` next to the VM root (`GUEST_PATH
//!   USER GROUP` lines). A path without an entry belongs to root, except
//!   the cloud-init user's home and what lies below it. `rm` and `mv` do
//!   not update the table.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use russh::keys::PublicKey;

use crate::ssh::{self as simssh, VmRoot};
use homestak_ssh::BoxFuture;

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
pub const SUDOERS_D: &str = "/etc/sudoers.d";

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

impl User {
    pub fn line(&self) -> String {
        format!(
            "{}:x:{}:{}::{}:{}",
            self.name, self.uid, self.gid, self.home, self.shell
        )
    }
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

impl Group {
    pub fn line(&self) -> String {
        format!("{}:x:{}:{}", self.name, self.gid, self.members.join(","))
    }
}

/// The user and group databases of one VM.
#[derive(Debug, Clone, Default)]
pub struct Db {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let [name, _, uid, gid, _, home, shell] = f.as_slice() else {
                return None;
            };
            Some(User {
                name: (*name).to_string(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                home: (*home).to_string(),
                shell: (*shell).to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let [name, _, gid, members] = f.as_slice() else {
                return None;
            };
            Some(Group {
                name: (*name).to_string(),
                gid: gid.parse().ok()?,
                members: members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

async fn read(root: &VmRoot, path: &str) -> Option<String> {
    let path = root.resolve("/", path).ok()?;
    tokio::fs::read_to_string(&path.host).await.ok()
}

async fn write(root: &VmRoot, path: &str, text: &str) -> std::io::Result<()> {
    let path = root
        .resolve("/", path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    if let Some(dir) = path.host.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    homestak_base::fsutil::write_atomic(&path.host, text.as_bytes(), 0o644)
}

impl Db {
    pub async fn load(root: &VmRoot) -> Db {
        Db {
            users: parse_passwd(&read(root, PASSWD).await.unwrap_or_default()),
            groups: parse_group(&read(root, GROUP).await.unwrap_or_default()),
        }
    }

    pub async fn save(&self, root: &VmRoot) -> std::io::Result<()> {
        let lines = |v: Vec<String>| v.into_iter().map(|l| l + "\n").collect::<String>();
        write(
            root,
            PASSWD,
            &lines(self.users.iter().map(User::line).collect()),
        )
        .await?;
        write(
            root,
            GROUP,
            &lines(self.groups.iter().map(Group::line).collect()),
        )
        .await
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn group_mut(&mut self, name: &str) -> Option<&mut Group> {
        self.groups.iter_mut().find(|g| g.name == name)
    }

    /// The next free id of a regular user or group (1000 and up).
    pub fn next_id(&self) -> u32 {
        self.users
            .iter()
            .map(|u| u.uid)
            .chain(self.groups.iter().map(|g| g.gid))
            .filter(|id| (1000..60000).contains(id))
            .max()
            .map_or(1000, |id| id + 1)
    }

    /// `name`'s primary group, then its supplementary groups.
    pub fn groups_of(&self, name: &str) -> Vec<&Group> {
        let Some(user) = self.user(name) else {
            return Vec::new();
        };
        let primary = self.groups.iter().find(|g| g.gid == user.gid);
        primary
            .into_iter()
            .chain(
                self.groups
                    .iter()
                    .filter(|g| g.gid != user.gid && g.members.iter().any(|m| m == name)),
            )
            .collect()
    }

    /// Adds `user` (with a group of its name) unless present.
    fn ensure(&mut self, name: &str, uid: u32, home: &str, groups: &[(&str, u32)]) {
        if self.user(name).is_none() {
            self.users.push(User {
                name: name.into(),
                uid,
                gid: uid,
                home: home.into(),
                shell: "/bin/bash".into(),
            });
        }
        if self.groups.iter().all(|g| g.gid != uid) {
            self.groups.push(Group {
                name: name.into(),
                gid: uid,
                members: Vec::new(),
            });
        }
        for (group, gid) in groups {
            if self.group(group).is_none() {
                self.groups.push(Group {
                    name: (*group).into(),
                    gid: *gid,
                    members: Vec::new(),
                });
            }
            if let Some(g) = self.group_mut(group)
                && !g.members.iter().any(|m| m == name)
            {
                g.members.push(name.into());
            }
        }
    }
}

/// At boot: root and the cloud-init user `ciuser` in the databases.
pub async fn prepare(root: &VmRoot, ciuser: &str) {
    let mut db = Db::load(root).await;
    let before = (db.users.len(), db.groups.len());
    db.ensure("root", 0, "/root", &[]);
    if db.group("sudo").is_none() {
        db.groups.push(Group {
            name: "sudo".into(),
            gid: 27,
            members: Vec::new(),
        });
    }
    if ciuser != "root" && db.user(ciuser).is_none() {
        let uid = db.next_id();
        db.ensure(ciuser, uid, &format!("/home/{ciuser}"), &[("sudo", 27)]);
    }
    if (db.users.len(), db.groups.len()) != before
        && let Err(e) = db.save(root).await
    {
        tracing::warn!(error = %e, "cannot write the VM's user database");
    }
}

/// Who owns what in one VM (see the module docs).
#[derive(Debug, Clone)]
pub struct Owners {
    file: PathBuf,
    ciuser: String,
}

impl Owners {
    pub fn new(workdir: &std::path::Path, ciuser: &str) -> Owners {
        Owners {
            file: workdir.join("owners"),
            ciuser: ciuser.to_string(),
        }
    }

    async fn table(&self) -> BTreeMap<String, (String, String)> {
        let text = tokio::fs::read_to_string(&self.file)
            .await
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.rsplitn(3, ' ');
                let group = f.next()?;
                let user = f.next()?;
                let path = f.next()?;
                Some((path.to_string(), (user.to_string(), group.to_string())))
            })
            .collect()
    }

    /// The owner and group of the guest path `guest`.
    pub async fn of(&self, guest: &str) -> (String, String) {
        if let Some(found) = self.table().await.remove(guest) {
            return found;
        }
        let home = format!("/home/{}", self.ciuser);
        if guest == home || guest.starts_with(&format!("{home}/")) {
            return (self.ciuser.clone(), self.ciuser.clone());
        }
        ("root".into(), "root".into())
    }

    /// Records `guest`'s owner.
    pub async fn set(&self, guest: &str, user: &str, group: &str) -> std::io::Result<()> {
        let mut table = self.table().await;
        table.insert(guest.to_string(), (user.to_string(), group.to_string()));
        let text: String = table
            .iter()
            .map(|(p, (u, g))| format!("{p} {u} {g}\n"))
            .collect();
        homestak_base::fsutil::write_atomic(&self.file, text.as_bytes(), 0o600)
    }
}

/// A sudoers line that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError;

/// A sudoers line this simulator understands, and what it grants: `USER
/// ALL=(ALL) NOPASSWD:ALL` (or `(ALL:ALL)`). Comments and blank lines are
/// `Ok(None)`; anything else is a syntax error.
pub fn parse_sudoers_line(line: &str) -> Result<Option<String>, SyntaxError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if line.starts_with('#') {
        // `#include` and `#includedir` are directives, not comments.
        return if line.starts_with("#include") {
            Err(SyntaxError)
        } else {
            Ok(None)
        };
    }
    let compact: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let (user, rest) = compact.split_once(' ').ok_or(SyntaxError)?;
    let valid_user = user
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    let rest = rest.replace(' ', "");
    if valid_user
        && matches!(
            rest.as_str(),
            "ALL=(ALL)NOPASSWD:ALL" | "ALL=(ALL:ALL)NOPASSWD:ALL"
        )
    {
        Ok(Some(user.to_string()))
    } else {
        Err(SyntaxError)
    }
}

/// The first line of `text` that does not parse (1-based).
pub fn sudoers_error(text: &str) -> Option<usize> {
    text.lines()
        .position(|l| parse_sudoers_line(l).is_err())
        .map(|i| i + 1)
}

/// The SSH server's and `sudo`'s view of one VM's users.
pub struct GuestAccounts {
    pub root: VmRoot,
    pub ciuser: String,
    pub owners: Owners,
}

impl GuestAccounts {
    /// sshd's `StrictModes` for one path: not group- or world-writable,
    /// owned by `user` or root.
    async fn strict(&self, guest: &str, user: &str) -> bool {
        let Ok(path) = self.root.resolve("/", guest) else {
            return false;
        };
        let Ok(meta) = tokio::fs::metadata(&path.host).await else {
            return false;
        };
        let (owner, _) = self.owners.of(guest).await;
        meta.permissions().mode() & 0o022 == 0 && (owner == user || owner == "root")
    }

    async fn keys(&self, user: &str) -> Vec<PublicKey> {
        let db = Db::load(&self.root).await;
        let Some(found) = db.user(user) else {
            return Vec::new();
        };
        let home = found.home.trim_end_matches('/').to_string();
        let ssh = format!("{home}/.ssh");
        let file = format!("{ssh}/authorized_keys");
        for path in [&home, &ssh, &file] {
            if !self.strict(path, user).await {
                tracing::debug!(user, path, "authorized_keys refused (StrictModes)");
                return Vec::new();
            }
        }
        let text = read(&self.root, &file).await.unwrap_or_default();
        // sshd skips a line it cannot read and goes on.
        text.lines()
            .filter_map(|l| simssh::parse_authorized_keys(l).ok())
            .flatten()
            .collect()
    }

    async fn grants(&self, user: &str) -> bool {
        if user == "root" || user == self.ciuser {
            return true;
        }
        let Ok(dir) = self.root.resolve("/", SUDOERS_D) else {
            return false;
        };
        let Ok(mut entries) = tokio::fs::read_dir(&dir.host).await else {
            return false;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains('.') || name.ends_with('~') {
                continue;
            }
            let guest = format!("{SUDOERS_D}/{name}");
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if meta.permissions().mode() & 0o022 != 0 || self.owners.of(&guest).await.0 != "root" {
                continue;
            }
            let text = tokio::fs::read_to_string(entry.path())
                .await
                .unwrap_or_default();
            // sudo refuses a file with a syntax error as a whole.
            if sudoers_error(&text).is_some() {
                continue;
            }
            if text
                .lines()
                .any(|l| parse_sudoers_line(l).ok().flatten().as_deref() == Some(user))
            {
                return true;
            }
        }
        false
    }
}

impl simssh::Accounts for GuestAccounts {
    fn authorized_keys<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Vec<PublicKey>> {
        Box::pin(self.keys(user))
    }

    fn may_sudo<'a>(&'a self, user: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(self.grants(user))
    }

    fn home<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            Db::load(&self.root)
                .await
                .user(user)
                .map(|u| u.home.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudoers_lines_parse_strictly() {
        assert_eq!(
            parse_sudoers_line("homestak ALL=(ALL) NOPASSWD:ALL"),
            Ok(Some("homestak".into()))
        );
        assert_eq!(
            parse_sudoers_line("ops  ALL=(ALL:ALL) NOPASSWD: ALL"),
            Ok(Some("ops".into()))
        );
        assert_eq!(parse_sudoers_line("# a comment"), Ok(None));
        assert_eq!(parse_sudoers_line(""), Ok(None));
        assert!(parse_sudoers_line("homestak ALL=(ALL) ALL NOPASSWD").is_err());
        assert!(parse_sudoers_line("homestak ALL=(ALL) NOPASSWD:ALL extra").is_err());
        assert!(parse_sudoers_line("#includedir /etc/x").is_err());
        assert!(parse_sudoers_line("Homestak ALL=(ALL) NOPASSWD:ALL").is_err());
        assert_eq!(
            sudoers_error("# x\nops ALL=(ALL) NOPASSWD:ALL\nbad\n"),
            Some(3)
        );
    }

    #[test]
    fn databases_round_trip_and_ids_follow_the_highest() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n",
        );
        let groups = parse_group("root:x:0:\nsudo:x:27:debian\ndebian:x:1000:\n");
        let db = Db { users, groups };
        assert_eq!(db.next_id(), 1001);
        assert_eq!(
            db.groups_of("debian")
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            ["debian", "sudo"]
        );
        assert_eq!(parse_passwd(&db.users[1].line()), vec![db.users[1].clone()]);
    }
}
