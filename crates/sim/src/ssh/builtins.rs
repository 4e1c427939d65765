//! The simulated VM's builtin commands. Each behaves like its coreutils or
//! dash namesake for the options listed in [`shell`](super::shell), prints
//! errors in the same words, and touches nothing outside the VM root.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::mounts::{Entry, MountError, Mounts, NO_CONTENTS};
use super::scp;
use super::shell::Context;
use super::vmfs::{VmPath, VmRoot};

/// Runs builtin `name`; `None` when there is no such builtin.
pub(super) async fn run(name: &str, args: &[String], cx: &mut Context) -> Option<u32> {
    Some(match name {
        "true" => 0,
        "false" => 1,
        "echo" => echo(args, cx).await,
        "cat" => cat(args, cx).await,
        "mkdir" => mkdir(args, cx).await,
        "chmod" => chmod(args, cx).await,
        "test" => test(args, cx).await,
        "rm" => rm(args, cx).await,
        "mv" => mv(args, cx).await,
        "ls" => ls(args, cx).await,
        "cd" => cd(args, cx).await,
        "pwd" => {
            let line = format!("{}\n", cx.cwd);
            cx.out(line).await;
            0
        }
        "uname" => uname(args, cx).await,
        "hostname" => hostname(args, cx).await,
        "id" => id(args, cx).await,
        "whoami" => {
            let line = format!("{}\n", cx.user);
            cx.out(line).await;
            0
        }
        "sleep" => sleep(args, cx).await,
        "cloud-init" => cloud_init(args, cx).await,
        "scp" => scp::sink(args, cx).await,
        "curl" => super::curl::run(args, cx).await,
        // Files keep the modes they are created with here; a valid mask is
        // accepted so `umask 077 && cat > FILE` lines run.
        "umask" => match args {
            [] => {
                cx.out("0022\n").await;
                0
            }
            [mask] if u32::from_str_radix(mask, 8).is_ok_and(|m| m <= 0o777) => 0,
            _ => {
                cx.err("sh: umask: Illegal mode\n").await;
                2
            }
        },
        _ => return None,
    })
}

/// Splits leading `-xyz` flags (until `--` or the first operand); returns
/// the flag letters and the operands.
fn flags(args: &[String]) -> (Vec<char>, Vec<&str>) {
    let mut letters = Vec::new();
    let mut rest = Vec::new();
    let mut options_done = false;
    for arg in args {
        if !options_done && arg == "--" {
            options_done = true;
        } else if !options_done && arg.len() > 1 && arg.starts_with('-') {
            letters.extend(arg.chars().skip(1));
        } else {
            options_done = true;
            rest.push(arg.as_str());
        }
    }
    (letters, rest)
}

/// Resolves a guest path, reporting a refusal on stderr.
async fn resolve(cx: &mut Context, tool: &str, path: &str) -> Option<VmPath> {
    match cx.resolve(path) {
        Ok(resolved) => Some(resolved),
        Err(e) => {
            cx.err(format!("{tool}: {path}: {e}\n")).await;
            None
        }
    }
}

/// The message coreutils prints for an I/O error.
pub(super) fn describe(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "No such file or directory",
        PermissionDenied => "Permission denied",
        AlreadyExists => "File exists",
        IsADirectory => "Is a directory",
        NotADirectory => "Not a directory",
        DirectoryNotEmpty => "Directory not empty",
        _ => "Input/output error",
    }
}

async fn echo(args: &[String], cx: &mut Context) -> u32 {
    let (newline, words) = match args.first() {
        Some(first) if first == "-n" => (false, &args[1..]),
        _ => (true, args),
    };
    let mut line = words.join(" ");
    if newline {
        line.push('\n');
    }
    cx.out(line).await;
    0
}

async fn cat(args: &[String], cx: &mut Context) -> u32 {
    let (_, files) = flags(args);
    let files = if files.is_empty() { vec!["-"] } else { files };
    let mut status = 0;
    for file in files {
        if file == "-" {
            let _ = tokio::io::copy(&mut cx.io.stdin, &mut cx.io.stdout).await;
            continue;
        }
        let Some(path) = resolve(cx, "cat", file).await else {
            status = 1;
            continue;
        };
        if let Some(entry) = cx.mounted(&path.guest) {
            let problem = match (entry, &cx.sink) {
                (Entry::File { .. }, Some(sink)) => {
                    sink.copy_from(&path.guest);
                    None
                }
                (Entry::File { .. }, None) => Some(NO_CONTENTS.to_string()),
                (Entry::Dir, _) => Some(MountError::IsDir.to_string()),
                (Entry::Missing, _) => Some(MountError::NotFound.to_string()),
            };
            if let Some(problem) = problem {
                cx.err(format!("cat: {file}: {problem}\n")).await;
                status = 1;
            }
            continue;
        }
        let opened = match tokio::fs::metadata(&path.host).await {
            Ok(meta) if meta.is_dir() => Err(std::io::ErrorKind::IsADirectory.into()),
            Ok(_) => tokio::fs::File::open(&path.host).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(mut f) => {
                let _ = tokio::io::copy(&mut f, &mut cx.io.stdout).await;
            }
            Err(e) => {
                cx.err(format!("cat: {file}: {}\n", describe(&e))).await;
                status = 1;
            }
        }
    }
    status
}

async fn mkdir(args: &[String], cx: &mut Context) -> u32 {
    let (letters, dirs) = flags(args);
    let parents = letters.contains(&'p');
    if dirs.is_empty() {
        cx.err("mkdir: missing operand\n").await;
        return 1;
    }
    let mut status = 0;
    for dir in dirs {
        let Some(path) = resolve(cx, "mkdir", dir).await else {
            status = 1;
            continue;
        };
        if let Some(entry) = cx.mounted(&path.guest) {
            let problem = match entry {
                Entry::Dir if parents => None,
                Entry::Dir | Entry::File { .. } => Some("File exists".to_string()),
                Entry::Missing => Some(
                    MountError::NotPermitted("a storage has only its content directories".into())
                        .to_string(),
                ),
            };
            if let Some(problem) = problem {
                cx.err(format!(
                    "mkdir: cannot create directory '{dir}': {problem}\n"
                ))
                .await;
                status = 1;
            }
            continue;
        }
        let made = if parents {
            tokio::fs::create_dir_all(&path.host).await
        } else {
            tokio::fs::create_dir(&path.host).await
        };
        if let Err(e) = made {
            cx.err(format!(
                "mkdir: cannot create directory '{dir}': {}\n",
                describe(&e)
            ))
            .await;
            status = 1;
        }
    }
    status
}

/// Applies an octal (`755`) or symbolic (`u+x,go-w`, `+x`, `a=r`) mode.
fn apply_mode(spec: &str, current: u32) -> Option<u32> {
    if spec.bytes().all(|b| b.is_ascii_digit()) {
        return u32::from_str_radix(spec, 8).ok().filter(|m| *m <= 0o7777);
    }
    let mut mode = current;
    for clause in spec.split(',') {
        let op_at = clause.find(['+', '-', '='])?;
        let (who, rest) = clause.split_at(op_at);
        let mut mask = 0;
        for w in who.chars() {
            mask |= match w {
                'u' => 0o700,
                'g' => 0o070,
                'o' => 0o007,
                'a' => 0o777,
                _ => return None,
            };
        }
        if who.is_empty() {
            mask = 0o777;
        }
        let op = rest.chars().next()?;
        let mut bits = 0;
        for p in rest[1..].chars() {
            bits |= match p {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                _ => return None,
            };
        }
        let bits = bits & mask;
        mode = match op {
            '+' => mode | bits,
            '-' => mode & !bits,
            _ => (mode & !mask) | bits,
        };
    }
    Some(mode)
}

async fn chmod(args: &[String], cx: &mut Context) -> u32 {
    // Modes such as `-x` look like flags: take operands verbatim.
    let (spec, files) = match args {
        [spec, files @ ..] if !files.is_empty() => (spec.as_str(), files),
        _ => {
            cx.err("chmod: missing operand\n").await;
            return 1;
        }
    };
    let mut status = 0;
    for file in files {
        let Some(path) = resolve(cx, "chmod", file).await else {
            status = 1;
            continue;
        };
        let current = match tokio::fs::metadata(&path.host).await {
            Ok(meta) => meta.permissions().mode() & 0o7777,
            Err(e) => {
                cx.err(format!("chmod: cannot access '{file}': {}\n", describe(&e)))
                    .await;
                status = 1;
                continue;
            }
        };
        let Some(mode) = apply_mode(spec, current) else {
            cx.err(format!("chmod: invalid mode: '{spec}'\n")).await;
            return 1;
        };
        let perms = std::fs::Permissions::from_mode(mode);
        if let Err(e) = tokio::fs::set_permissions(&path.host, perms).await {
            cx.err(format!(
                "chmod: changing permissions of '{file}': {}\n",
                describe(&e)
            ))
            .await;
            status = 1;
        }
    }
    status
}

async fn test(args: &[String], cx: &mut Context) -> u32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match evaluate(&args, &cx.root, &cx.cwd, cx.mounts.as_deref()).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(message) => {
            cx.err(format!("sh: 1: test: {message}\n")).await;
            2
        }
    }
}

async fn evaluate(
    args: &[&str],
    root: &VmRoot,
    cwd: &str,
    mounts: Option<&dyn Mounts>,
) -> Result<bool, String> {
    Ok(match args {
        [] => false,
        ["!", rest @ ..] => !Box::pin(evaluate(rest, root, cwd, mounts)).await?,
        [word] => !word.is_empty(),
        ["-n", s] => !s.is_empty(),
        ["-z", s] => s.is_empty(),
        [a, "=", b] => a == b,
        [a, "!=", b] => a != b,
        [op @ ("-e" | "-f" | "-d" | "-x" | "-s" | "-r" | "-w"), path] => {
            let Ok(resolved) = root.resolve(cwd, path) else {
                return Ok(false);
            };
            if let Some(entry) = mounts.and_then(|m| m.stat(&resolved.guest)) {
                return Ok(match (*op, entry) {
                    (_, Entry::Missing) => false,
                    ("-f", e) => matches!(e, Entry::File { .. }),
                    ("-d", e) => e == Entry::Dir,
                    ("-s", Entry::File { size }) => size > 0,
                    ("-x", e) => e == Entry::Dir,
                    _ => true,
                });
            }
            match tokio::fs::metadata(&resolved.host).await {
                Err(_) => false,
                Ok(meta) => match *op {
                    "-f" => meta.is_file(),
                    "-d" => meta.is_dir(),
                    "-x" => meta.permissions().mode() & 0o111 != 0,
                    "-s" => meta.len() > 0,
                    // The simulated user may read and write what exists.
                    _ => true,
                },
            }
        }
        other => return Err(format!("unsupported expression: {}", other.join(" "))),
    })
}

async fn rm(args: &[String], cx: &mut Context) -> u32 {
    let (letters, files) = flags(args);
    let force = letters.contains(&'f');
    let recursive = letters.iter().any(|c| matches!(c, 'r' | 'R'));
    if files.is_empty() && !force {
        cx.err("rm: missing operand\n").await;
        return 1;
    }
    let mut status = 0;
    for file in files {
        let Some(path) = resolve(cx, "rm", file).await else {
            status = 1;
            continue;
        };
        if path.guest == "/" {
            cx.err("rm: it is dangerous to operate recursively on '/'\n")
                .await;
            status = 1;
            continue;
        }
        if let (Some(entry), Some(mounts)) = (cx.mounted(&path.guest), cx.mounts.clone()) {
            let removed = match entry {
                Entry::Missing if force => Ok(()),
                Entry::Missing => Err(MountError::NotFound),
                Entry::Dir if recursive => Err(MountError::NotPermitted(
                    "a storage's directories stay".into(),
                )),
                Entry::Dir => Err(MountError::IsDir),
                Entry::File { .. } if cx.user != "root" => Err(MountError::PermissionDenied),
                Entry::File { .. } => mounts.remove(&path.guest),
            };
            if let Err(e) = removed {
                cx.err(format!("rm: cannot remove '{file}': {e}\n")).await;
                status = 1;
            }
            continue;
        }
        let removed = match tokio::fs::symlink_metadata(&path.host).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && force => Ok(()),
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() && !recursive => Err(std::io::ErrorKind::IsADirectory.into()),
            // remove_dir_all does not follow symlinks inside the tree.
            Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(&path.host).await,
            Ok(_) => tokio::fs::remove_file(&path.host).await,
        };
        if let Err(e) = removed {
            cx.err(format!("rm: cannot remove '{file}': {}\n", describe(&e)))
                .await;
            status = 1;
        }
    }
    status
}

async fn mv(args: &[String], cx: &mut Context) -> u32 {
    let (_, operands) = flags(args);
    let [source, target] = operands[..] else {
        cx.err("mv: expected exactly a source and a destination\n")
            .await;
        return 1;
    };
    let (Some(from), Some(mut to)) = (
        resolve(cx, "mv", source).await,
        resolve(cx, "mv", target).await,
    ) else {
        return 1;
    };
    if let Some(mounts) = cx.mounts.clone() {
        let (from_entry, to_entry) = (mounts.stat(&from.guest), mounts.stat(&to.guest));
        if from_entry.is_some() || to_entry.is_some() {
            return mv_mounted(
                mounts.as_ref(),
                (source, &from),
                (target, &to),
                to_entry,
                cx,
            )
            .await;
        }
    }
    if let Err(e) = tokio::fs::symlink_metadata(&from.host).await {
        cx.err(format!("mv: cannot stat '{source}': {}\n", describe(&e)))
            .await;
        return 1;
    }
    if tokio::fs::metadata(&to.host)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        let name = from.guest.rsplit('/').next().unwrap_or_default();
        match cx.root.resolve(&to.guest, name) {
            Ok(inside) => to = inside,
            Err(e) => {
                cx.err(format!("mv: {target}: {e}\n")).await;
                return 1;
            }
        }
    }
    match tokio::fs::rename(&from.host, &to.host).await {
        Ok(()) => 0,
        Err(e) => {
            cx.err(format!(
                "mv: cannot move '{source}' to '{target}': {}\n",
                describe(&e)
            ))
            .await;
            1
        }
    }
}

/// `mv` where a storage is involved: volumes move between storage
/// directories only.
async fn mv_mounted(
    mounts: &dyn Mounts,
    (source, from): (&str, &VmPath),
    (target, to): (&str, &VmPath),
    to_entry: Option<Entry>,
    cx: &mut Context,
) -> u32 {
    let mut to_path = to.guest.clone();
    let moved = match (mounts.stat(&from.guest), to_entry) {
        (Some(Entry::Missing), _) => Err(MountError::NotFound),
        (None, _) | (_, None) => Err(MountError::NotPermitted(
            "files move between a storage and the rest of the host only by copying".into(),
        )),
        _ if cx.user != "root" => Err(MountError::PermissionDenied),
        (Some(_), Some(Entry::Dir)) => {
            let name = from.guest.rsplit('/').next().unwrap_or_default();
            to_path = format!("{}/{name}", to.guest.trim_end_matches('/'));
            mounts.rename(&from.guest, &to_path)
        }
        (Some(_), Some(_)) => mounts.rename(&from.guest, &to_path),
    };
    match moved {
        Ok(()) => 0,
        Err(e) => {
            cx.err(format!("mv: cannot move '{source}' to '{target}': {e}\n"))
                .await;
            1
        }
    }
}

/// `ls [-l] [-a] [-1] [PATH…]`: names one per line; `-l` adds type,
/// mode, owner and size (no dates).
async fn ls(args: &[String], cx: &mut Context) -> u32 {
    let (letters, paths) = flags(args);
    let long = letters.contains(&'l');
    let all = letters.contains(&'a');
    let paths: Vec<String> = if paths.is_empty() {
        vec![cx.cwd.clone()]
    } else {
        paths.iter().map(|p| p.to_string()).collect()
    };
    let line = |name: &str, entry: Entry| -> String {
        match (long, entry) {
            (false, _) => format!("{name}\n"),
            (true, Entry::Dir) => format!("drwxr-xr-x 2 root root 4096 {name}\n"),
            (true, Entry::File { size }) => format!("-rw-r--r-- 1 root root {size} {name}\n"),
            (true, Entry::Missing) => String::new(),
        }
    };
    let mut status = 0;
    let several = paths.len() > 1;
    for (i, shown) in paths.iter().enumerate() {
        let Some(path) = resolve(cx, "ls", shown).await else {
            status = 2;
            continue;
        };
        let listed: Result<Vec<(String, Entry)>, String> = match cx.mounted(&path.guest) {
            Some(Entry::Missing) => Err(MountError::NotFound.to_string()),
            Some(Entry::File { size }) => Ok(vec![(shown.clone(), Entry::File { size })]),
            Some(Entry::Dir) => match &cx.mounts {
                Some(m) => m.list(&path.guest).map_err(|e| e.to_string()),
                None => Ok(Vec::new()),
            },
            None => list_dir(&path, shown, all).await,
        };
        match listed {
            Ok(entries) => {
                let mut out = String::new();
                if several {
                    out.push_str(&format!("{}{shown}:\n", if i > 0 { "\n" } else { "" }));
                }
                for (name, entry) in entries {
                    out.push_str(&line(&name, entry));
                }
                cx.out(out).await;
            }
            Err(problem) => {
                cx.err(format!("ls: cannot access '{shown}': {problem}\n"))
                    .await;
                status = 2;
            }
        }
    }
    status
}

/// The entries of a directory in the root (or the file itself), sorted.
async fn list_dir(path: &VmPath, shown: &str, all: bool) -> Result<Vec<(String, Entry)>, String> {
    let meta = tokio::fs::metadata(&path.host)
        .await
        .map_err(|e| describe(&e).to_string())?;
    if !meta.is_dir() {
        return Ok(vec![(shown.to_string(), Entry::File { size: meta.len() })]);
    }
    let mut dir = tokio::fs::read_dir(&path.host)
        .await
        .map_err(|e| describe(&e).to_string())?;
    let mut entries = Vec::new();
    while let Ok(Some(item)) = dir.next_entry().await {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !all {
            continue;
        }
        let entry = match item.metadata().await {
            Ok(m) if m.is_dir() => Entry::Dir,
            Ok(m) => Entry::File { size: m.len() },
            Err(_) => continue,
        };
        entries.push((name, entry));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

async fn cd(args: &[String], cx: &mut Context) -> u32 {
    let target = args.first().cloned().unwrap_or_else(|| cx.home());
    let Some(path) = resolve(cx, "cd", &target).await else {
        return 2;
    };
    if cx.mounted(&path.guest) == Some(Entry::Dir) {
        cx.cwd = path.guest;
        return 0;
    }
    if tokio::fs::metadata(&path.host)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        cx.cwd = path.guest;
        0
    } else {
        cx.err(format!("sh: 1: cd: can't cd to {target}\n")).await;
        2
    }
}

async fn uname(args: &[String], cx: &mut Context) -> u32 {
    let (mut letters, _) = flags(args);
    if letters.contains(&'a') {
        letters = vec!['s', 'n', 'r', 'v', 'm', 'o'];
    }
    if letters.is_empty() {
        letters.push('s');
    }
    let mut fields = Vec::new();
    for (flag, value) in [
        ('s', "Linux".to_string()),
        ('n', cx.hostname.clone()),
        ('r', cx.kernel.clone()),
        (
            'v',
            "#1 SMP PREEMPT_DYNAMIC (homestak simulated VM)".to_string(),
        ),
        ('m', "x86_64".to_string()),
        ('o', "GNU/Linux".to_string()),
    ] {
        if letters.contains(&flag) {
            fields.push(value);
        }
    }
    if let Some(bad) = letters.iter().find(|c| !"snrvmoa".contains(**c)) {
        cx.err(format!("uname: invalid option -- '{bad}'\n")).await;
        return 1;
    }
    let line = format!("{}\n", fields.join(" "));
    cx.out(line).await;
    0
}

async fn hostname(args: &[String], cx: &mut Context) -> u32 {
    let line = match args.first().map(String::as_str) {
        None => format!("{}\n", cx.hostname),
        Some("-I") => match cx.address {
            Some(address) => format!("{address} \n"),
            None => "\n".to_string(),
        },
        Some(other) => {
            cx.err(format!("hostname: option {other} is not simulated\n"))
                .await;
            return 1;
        }
    };
    cx.out(line).await;
    0
}

async fn id(args: &[String], cx: &mut Context) -> u32 {
    let uid = if cx.user == "root" { 0 } else { 1000 };
    let (letters, _) = flags(args);
    let by_name = letters.contains(&'n');
    let line = if letters.contains(&'u') || letters.contains(&'g') {
        if by_name {
            cx.user.clone()
        } else {
            uid.to_string()
        }
    } else {
        format!(
            "uid={uid}({u}) gid={uid}({u}) groups={uid}({u})",
            u = cx.user
        )
    };
    cx.out(format!("{line}\n")).await;
    0
}

async fn sleep(args: &[String], cx: &mut Context) -> u32 {
    let seconds = args.first().and_then(|a| {
        let (number, scale) = match a.strip_suffix('m') {
            Some(n) => (n, 60.0),
            None => (a.strip_suffix('s').unwrap_or(a), 1.0),
        };
        number
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s * scale)
    });
    let Some(seconds) = seconds else {
        cx.err("sleep: invalid time interval\n").await;
        return 1;
    };
    tokio::time::sleep(Duration::from_secs_f64(seconds.min(86_400.0))).await;
    0
}

async fn cloud_init(args: &[String], cx: &mut Context) -> u32 {
    match args.first().map(String::as_str) {
        // The simulated VM is provisioned by the time SSH answers.
        Some("status") => {
            cx.out("status: done\n").await;
            0
        }
        _ => {
            cx.err("cloud-init: only `cloud-init status` is simulated\n")
                .await;
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_octal_and_symbolic() {
        assert_eq!(apply_mode("755", 0), Some(0o755));
        assert_eq!(apply_mode("0644", 0o777), Some(0o644));
        assert_eq!(apply_mode("+x", 0o644), Some(0o755));
        assert_eq!(apply_mode("u+x,go-r", 0o644), Some(0o700));
        assert_eq!(apply_mode("a=r", 0o755), Some(0o444));
        assert_eq!(apply_mode("u+q", 0o644), None);
        assert_eq!(apply_mode("99", 0o644), None);
        assert_eq!(apply_mode("17777", 0), None);
    }

    #[test]
    fn flags_stop_at_double_dash_and_first_operand() {
        let args: Vec<String> = ["-rf", "--", "-x", "y"].map(String::from).into();
        let (letters, rest) = flags(&args);
        assert_eq!(letters, ['r', 'f']);
        assert_eq!(rest, ["-x", "y"]);
    }
}
