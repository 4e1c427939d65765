//! The commands that manage a simulated VM's users ([`super::users`]):
//! `useradd`, `usermod`, `id`, `getent`, `chown`, `install -d`, `stat -c`
//! and `visudo -cf`. Each accepts the options listed, refuses anything
//! else with its real usage status, and fails with shadow's or
//! coreutils' words and exit status (`useradd` of an existing user: 9).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::users::{Db, Group, Owners, User, sudoers_error};
use crate::ssh::{Context, Program, Shell};
use homestak_ssh::BoxFuture;

/// What the commands share: who owns what.
#[derive(Clone)]
pub struct Users(pub Owners);

/// Adds the commands to a guest's shell.
pub(crate) fn install(shell: Shell, owners: Owners) -> Shell {
    let users = Users(owners);
    let mut shell = shell;
    for (name, program) in [
        (
            "useradd",
            Arc::new(Useradd(users.clone())) as Arc<dyn Program>,
        ),
        ("usermod", Arc::new(Usermod)),
        ("id", Arc::new(Id)),
        ("getent", Arc::new(Getent)),
        ("chown", Arc::new(Chown(users.clone()))),
        ("install", Arc::new(Install(users.clone()))),
        ("stat", Arc::new(Stat(users))),
        ("visudo", Arc::new(Visudo)),
    ] {
        shell = shell.with_program(name, program);
    }
    shell
}

/// shadow's rule for user and group names (Debian's default).
fn valid_name(name: &str) -> bool {
    name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Refuses a non-root user as shadow's tools do.
async fn need_root(cx: &mut Context, tool: &str) -> Option<u32> {
    if cx.user == "root" {
        return None;
    }
    cx.err(format!(
        "{tool}: Permission denied.\n{tool}: cannot lock /etc/passwd; try again later.\n"
    ))
    .await;
    Some(1)
}

/// Options with their values, then the operands.
type Parsed<'a> = (Vec<(char, &'a str)>, Vec<&'a str>);

/// Options with a value (`-s SHELL`) and flags (`-m`), in any order
/// before the operands; `None` on an option not in `with_value`/`flags`.
fn options<'a>(args: &'a [String], with_value: &str, flags: &str) -> Result<Parsed<'a>, String> {
    let mut opts = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            rest.extend(args[i + 1..].iter().map(String::as_str));
            break;
        }
        if arg.len() > 1 && arg.starts_with('-') && !arg.starts_with("--") {
            let letters: Vec<char> = arg.chars().skip(1).collect();
            for (n, c) in letters.iter().enumerate() {
                if flags.contains(*c) {
                    opts.push((*c, ""));
                } else if with_value.contains(*c) {
                    // The value is the rest of this word, or the next word.
                    let inline: String = letters[n + 1..].iter().collect();
                    if inline.is_empty() {
                        i += 1;
                        let value = args
                            .get(i)
                            .ok_or_else(|| format!("option requires an argument -- '{c}'"))?;
                        opts.push((*c, value.as_str()));
                    } else {
                        let start = arg.len() - inline.len();
                        opts.push((*c, &arg[start..]));
                    }
                    break;
                } else {
                    return Err(format!("invalid option -- '{c}'"));
                }
            }
        } else if arg.starts_with("--") {
            return Err(format!("unrecognized option '{arg}'"));
        } else {
            rest.push(arg);
        }
        i += 1;
    }
    Ok((opts, rest))
}

fn value<'a>(opts: &[(char, &'a str)], c: char) -> Option<&'a str> {
    opts.iter().rev().find(|(o, _)| *o == c).map(|(_, v)| *v)
}

fn has(opts: &[(char, &str)], c: char) -> bool {
    opts.iter().any(|(o, _)| *o == c)
}

async fn set_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await
}

/// `useradd [-m] [-s SHELL] [-G g1,g2] [-d DIR] NAME`: a user with a group
/// of its name, the next free uid, `/home/NAME` and `/bin/sh` unless
/// told; `-m` creates the home directory (mode 0700, owned by the user).
struct Useradd(Users);

const USERADD_USAGE: &str = "Usage: useradd [options] LOGIN\n";

impl Program for Useradd {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (opts, rest) = match options(args, "sGd", "m") {
                Ok(parsed) => parsed,
                Err(e) => {
                    cx.err(format!("useradd: {e}\n{USERADD_USAGE}")).await;
                    return 2;
                }
            };
            let [name] = rest.as_slice() else {
                cx.err(USERADD_USAGE).await;
                return 2;
            };
            if let Some(status) = need_root(cx, "useradd").await {
                return status;
            }
            if !valid_name(name) {
                cx.err(format!(
                    "useradd: invalid user name '{name}': use --badname to ignore\n"
                ))
                .await;
                return 3;
            }
            let shell = value(&opts, 's').unwrap_or("/bin/sh");
            if !shell.starts_with('/') {
                cx.err(format!("useradd: invalid shell '{shell}'\n")).await;
                return 3;
            }
            let home = value(&opts, 'd').map_or_else(|| format!("/home/{name}"), String::from);
            if !home.starts_with('/') {
                cx.err(format!("useradd: invalid home directory '{home}'\n"))
                    .await;
                return 3;
            }
            let mut db = Db::load(&cx.root).await;
            if db.user(name).is_some() {
                cx.err(format!("useradd: user '{name}' already exists\n"))
                    .await;
                return 9;
            }
            if db.group(name).is_some() {
                cx.err(format!(
                    "useradd: group {name} exists - if you want to add this user to that group, use -g.\n"
                ))
                .await;
                return 9;
            }
            let extra: Vec<&str> = value(&opts, 'G')
                .map(|g| g.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            for group in &extra {
                if db.group(group).is_none() {
                    cx.err(format!("useradd: group '{group}' does not exist\n"))
                        .await;
                    return 6;
                }
            }
            let uid = db.next_id();
            db.users.push(User {
                name: name.to_string(),
                uid,
                gid: uid,
                home: home.clone(),
                shell: shell.to_string(),
            });
            db.groups.push(Group {
                name: name.to_string(),
                gid: uid,
                members: Vec::new(),
            });
            for group in &extra {
                if let Some(g) = db.group_mut(group) {
                    g.members.push(name.to_string());
                }
            }
            if has(&opts, 'm') {
                let Ok(path) = cx.root.resolve("/", &home) else {
                    cx.err(format!("useradd: cannot create directory {home}\n"))
                        .await;
                    return 12;
                };
                if path.host.exists() {
                    cx.err(format!(
                        "useradd: warning: the home directory {home} already exists.\nuseradd: Not copying any file from skel directory into it.\n"
                    ))
                    .await;
                } else if tokio::fs::create_dir_all(&path.host).await.is_err()
                    || set_mode(&path.host, 0o700).await.is_err()
                    || self.0.set(&path.guest, name, name).await.is_err()
                {
                    cx.err(format!("useradd: cannot create directory {home}\n"))
                        .await;
                    return 12;
                }
            }
            if db.save(&cx.root).await.is_err() {
                cx.err("useradd: cannot lock /etc/passwd; try again later.\n")
                    .await;
                return 1;
            }
            0
        })
    }
}

/// `usermod -aG GROUPS NAME` (supplementary groups added) and `usermod -s
/// SHELL NAME`.
struct Usermod;

const USERMOD_USAGE: &str = "Usage: usermod [options] LOGIN\n";

impl Program for Usermod {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (opts, rest) = match options(args, "Gs", "a") {
                Ok(parsed) => parsed,
                Err(e) => {
                    cx.err(format!("usermod: {e}\n{USERMOD_USAGE}")).await;
                    return 2;
                }
            };
            let [name] = rest.as_slice() else {
                cx.err(USERMOD_USAGE).await;
                return 2;
            };
            if has(&opts, 'a') && !has(&opts, 'G') {
                cx.err(format!(
                    "usermod: -a flag is ONLY allowed with the -G flag\n{USERMOD_USAGE}"
                ))
                .await;
                return 2;
            }
            if !has(&opts, 'G') && !has(&opts, 's') {
                cx.err(USERMOD_USAGE).await;
                return 2;
            }
            if let Some(status) = need_root(cx, "usermod").await {
                return status;
            }
            let mut db = Db::load(&cx.root).await;
            if db.user(name).is_none() {
                cx.err(format!("usermod: user '{name}' does not exist\n"))
                    .await;
                return 6;
            }
            if let Some(groups) = value(&opts, 'G') {
                let wanted: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
                for group in &wanted {
                    if db.group(group).is_none() {
                        cx.err(format!("usermod: group '{group}' does not exist\n"))
                            .await;
                        return 6;
                    }
                }
                let append = has(&opts, 'a');
                for g in &mut db.groups {
                    let wants = wanted.contains(&g.name.as_str());
                    let is = g.members.iter().any(|m| m == name);
                    if wants && !is {
                        g.members.push(name.to_string());
                    } else if !wants && is && !append {
                        g.members.retain(|m| m != name);
                    }
                }
            }
            if let Some(shell) = value(&opts, 's') {
                if !shell.starts_with('/') {
                    cx.err(format!("usermod: invalid field '{shell}'\n")).await;
                    return 3;
                }
                for u in &mut db.users {
                    if u.name == *name {
                        u.shell = shell.to_string();
                    }
                }
            }
            if db.save(&cx.root).await.is_err() {
                cx.err("usermod: cannot lock /etc/passwd; try again later.\n")
                    .await;
                return 1;
            }
            0
        })
    }
}

/// `id [-u|-g|-G] [-n] [NAME]`.
struct Id;

impl Program for Id {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (opts, rest) = match options(args, "", "ugGn") {
                Ok(parsed) => parsed,
                Err(e) => {
                    cx.err(format!("id: {e}\nTry 'id --help' for more information.\n"))
                        .await;
                    return 1;
                }
            };
            if rest.len() > 1 {
                cx.err(format!("id: extra operand '{}'\n", rest[1])).await;
                return 1;
            }
            let db = Db::load(&cx.root).await;
            let name = rest.first().map_or(cx.user.as_str(), |n| n).to_string();
            let Some(user) = db.user(&name).cloned() else {
                cx.err(format!("id: '{name}': no such user\n")).await;
                return 1;
            };
            let groups = db.groups_of(&name);
            let by_name = has(&opts, 'n');
            let line = if has(&opts, 'G') {
                groups
                    .iter()
                    .map(|g| {
                        if by_name {
                            g.name.clone()
                        } else {
                            g.gid.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else if has(&opts, 'u') {
                if by_name {
                    user.name.clone()
                } else {
                    user.uid.to_string()
                }
            } else if has(&opts, 'g') {
                let primary = groups.first().map_or(String::new(), |g| g.name.clone());
                if by_name {
                    primary
                } else {
                    user.gid.to_string()
                }
            } else {
                let list: Vec<String> = groups
                    .iter()
                    .map(|g| format!("{}({})", g.gid, g.name))
                    .collect();
                let primary = groups.first().map_or(String::new(), |g| g.name.clone());
                format!(
                    "uid={}({}) gid={}({primary}) groups={}",
                    user.uid,
                    user.name,
                    user.gid,
                    list.join(",")
                )
            };
            cx.out(format!("{line}\n")).await;
            0
        })
    }
}

/// `getent passwd|group [KEY…]`: 2 when a key is absent.
struct Getent;

impl Program for Getent {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let Some((database, keys)) = args.split_first() else {
                cx.err("getent: wrong number of arguments\n").await;
                return 1;
            };
            let db = Db::load(&cx.root).await;
            let lines: Vec<(String, String, String)> = match database.as_str() {
                "passwd" => db
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.uid.to_string(), u.line()))
                    .collect(),
                "group" => db
                    .groups
                    .iter()
                    .map(|g| (g.name.clone(), g.gid.to_string(), g.line()))
                    .collect(),
                other => {
                    cx.err(format!("Unknown database: {other}\n")).await;
                    return 1;
                }
            };
            if keys.is_empty() {
                let all: String = lines.iter().map(|(_, _, l)| format!("{l}\n")).collect();
                cx.out(all).await;
                return 0;
            }
            let mut status = 0;
            for key in keys {
                match lines.iter().find(|(n, id, _)| n == key || id == key) {
                    Some((_, _, line)) => cx.out(format!("{line}\n")).await,
                    None => status = 2,
                }
            }
            status
        })
    }
}

/// `USER[:GROUP]` (or `USER:` for the user's group) checked against the
/// databases.
fn owner_spec(db: &Db, spec: &str) -> Option<(String, String)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let found = db.user(user)?;
    let group = match group {
        Some("") => db.groups.iter().find(|g| g.gid == found.gid)?.name.clone(),
        Some(g) => db.group(g)?.name.clone(),
        None => db
            .groups
            .iter()
            .find(|g| g.gid == found.gid)
            .map_or_else(|| user.to_string(), |g| g.name.clone()),
    };
    Some((user.to_string(), group))
}

/// `chown [-R] USER[:GROUP] PATH…` (root only).
struct Chown(Users);

impl Program for Chown {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (opts, rest) = match options(args, "", "R") {
                Ok(parsed) => parsed,
                Err(e) => {
                    cx.err(format!(
                        "chown: {e}\nTry 'chown --help' for more information.\n"
                    ))
                    .await;
                    return 1;
                }
            };
            let Some((spec, paths)) = rest.split_first().filter(|(_, p)| !p.is_empty()) else {
                cx.err("chown: missing operand\n").await;
                return 1;
            };
            let db = Db::load(&cx.root).await;
            let Some((user, group)) = owner_spec(&db, spec) else {
                cx.err(format!("chown: invalid user: '{spec}'\n")).await;
                return 1;
            };
            let mut status = 0;
            for file in paths {
                let path = match cx.resolve(file) {
                    Ok(path) if path.host.exists() => path,
                    _ => {
                        cx.err(format!(
                            "chown: cannot access '{file}': No such file or directory\n"
                        ))
                        .await;
                        status = 1;
                        continue;
                    }
                };
                if cx.user != "root" {
                    cx.err(format!(
                        "chown: changing ownership of '{file}': Operation not permitted\n"
                    ))
                    .await;
                    status = 1;
                    continue;
                }
                let mut targets = vec![path.guest.clone()];
                if has(&opts, 'R') {
                    targets.extend(below(&path.host, &path.guest).await);
                }
                for guest in targets {
                    if self.0.set(&guest, &user, &group).await.is_err() {
                        status = 1;
                    }
                }
            }
            status
        })
    }
}

/// Every guest path below a directory.
async fn below(host: &std::path::Path, guest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![(host.to_path_buf(), guest.to_string())];
    while let Some((dir, g)) = todo.pop() {
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            continue;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let child = format!(
                "{}/{}",
                g.trim_end_matches('/'),
                entry.file_name().to_string_lossy()
            );
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                todo.push((entry.path(), child.clone()));
            }
            out.push(child);
        }
    }
    out
}

/// `install -d [-m MODE] [-o USER] [-g GROUP] DIR…`: directories only.
struct Install(Users);

impl Program for Install {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (opts, dirs) = match options(args, "mog", "d") {
                Ok(parsed) => parsed,
                Err(e) => {
                    cx.err(format!(
                        "install: {e}\nTry 'install --help' for more information.\n"
                    ))
                    .await;
                    return 1;
                }
            };
            if !has(&opts, 'd') {
                cx.err("install: only `install -d DIR` is simulated; copy files with cat or scp\n")
                    .await;
                return 1;
            }
            if dirs.is_empty() {
                cx.err("install: missing file operand\n").await;
                return 1;
            }
            let mode = match value(&opts, 'm') {
                None => 0o755,
                Some(m) => match u32::from_str_radix(m, 8) {
                    Ok(mode) if mode <= 0o7777 => mode,
                    _ => {
                        cx.err(format!("install: invalid mode '{m}'\n")).await;
                        return 1;
                    }
                },
            };
            let db = Db::load(&cx.root).await;
            let owner = value(&opts, 'o');
            let group = value(&opts, 'g');
            if let Some(o) = owner
                && db.user(o).is_none()
            {
                cx.err(format!("install: invalid user '{o}'\n")).await;
                return 1;
            }
            if let Some(g) = group
                && db.group(g).is_none()
            {
                cx.err(format!("install: invalid group '{g}'\n")).await;
                return 1;
            }
            if (owner.is_some() || group.is_some()) && cx.user != "root" {
                cx.err("install: cannot change ownership: Operation not permitted\n")
                    .await;
                return 1;
            }
            let mut status = 0;
            for dir in dirs {
                let Ok(path) = cx.resolve(dir) else {
                    cx.err(format!(
                        "install: cannot create directory '{dir}': Permission denied\n"
                    ))
                    .await;
                    status = 1;
                    continue;
                };
                let outside_home = !(path.guest == cx.home()
                    || path.guest.starts_with(&format!("{}/", cx.home())));
                if cx.user != "root" && outside_home {
                    cx.err(format!(
                        "install: cannot create directory '{dir}': Permission denied\n"
                    ))
                    .await;
                    status = 1;
                    continue;
                }
                if tokio::fs::create_dir_all(&path.host).await.is_err()
                    || set_mode(&path.host, mode).await.is_err()
                {
                    cx.err(format!(
                        "install: cannot create directory '{dir}': Not a directory\n"
                    ))
                    .await;
                    status = 1;
                    continue;
                }
                if owner.is_some() || group.is_some() {
                    let (old_user, old_group) = self.0.of(&path.guest).await;
                    let user = owner.map_or(old_user, String::from);
                    let group = group.map_or(old_group, String::from);
                    if self.0.set(&path.guest, &user, &group).await.is_err() {
                        status = 1;
                    }
                }
            }
            status
        })
    }
}

/// `stat -c FORMAT PATH…` with `%U %G %a %n` (and `%%`).
struct Stat(Users);

impl Program for Stat {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (format, paths) = match args {
                [flag, format, paths @ ..] if flag == "-c" && !paths.is_empty() => {
                    (format.clone(), paths)
                }
                _ => {
                    cx.err("stat: only `stat -c FORMAT FILE…` is simulated\n")
                        .await;
                    return 1;
                }
            };
            let mut status = 0;
            for file in paths {
                let meta = match cx.resolve(file) {
                    Ok(path) => tokio::fs::metadata(&path.host)
                        .await
                        .ok()
                        .map(|m| (path, m)),
                    Err(_) => None,
                };
                let Some((path, meta)) = meta else {
                    cx.err(format!(
                        "stat: cannot statx '{file}': No such file or directory\n"
                    ))
                    .await;
                    status = 1;
                    continue;
                };
                let (user, group) = self.0.of(&path.guest).await;
                let mut line = String::new();
                let mut chars = format.chars();
                while let Some(c) = chars.next() {
                    if c != '%' {
                        line.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('U') => line.push_str(&user),
                        Some('G') => line.push_str(&group),
                        Some('a') => {
                            line.push_str(&format!("{:o}", meta.permissions().mode() & 0o7777))
                        }
                        Some('n') => line.push_str(file),
                        Some('%') => line.push('%'),
                        other => {
                            cx.err(format!(
                                "stat: the format %{} is not simulated\n",
                                other.map(String::from).unwrap_or_default()
                            ))
                            .await;
                            return 1;
                        }
                    }
                }
                cx.out(format!("{line}\n")).await;
            }
            status
        })
    }
}

/// `visudo -cf FILE` (or `-c -f FILE`): checks a sudoers file's syntax
/// (see [`super::users::parse_sudoers_line`]).
struct Visudo;

impl Program for Visudo {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let parsed = options(args, "f", "cq");
            let file = match &parsed {
                Ok((opts, rest)) if has(opts, 'c') && rest.is_empty() => value(opts, 'f'),
                _ => None,
            };
            let Some(file) = file else {
                cx.err("usage: visudo -c [-q] -f sudoers (only the check is simulated)\n")
                    .await;
                return 1;
            };
            let text = match cx.resolve(file) {
                Ok(path) => tokio::fs::read_to_string(&path.host).await.ok(),
                Err(_) => None,
            };
            let Some(text) = text else {
                cx.err(format!(
                    "visudo: unable to open {file}: No such file or directory\n"
                ))
                .await;
                return 1;
            };
            match sudoers_error(&text) {
                None => {
                    cx.out(format!("{file}: parsed OK\n")).await;
                    0
                }
                Some(line) => {
                    cx.err(format!(
                        "{file}:{line}:1: syntax error\nparse error in {file} near line {line}\n"
                    ))
                    .await;
                    1
                }
            }
        })
    }
}

impl Users {
    async fn of(&self, guest: &str) -> (String, String) {
        self.0.of(guest).await
    }

    async fn set(&self, guest: &str, user: &str, group: &str) -> std::io::Result<()> {
        self.0.set(guest, user, group).await
    }
}
