//! The default [`CommandHandler`]: a small shell confined to a VM directory.
//!
//! A command line is parsed (see [`parse`](super::parse)), then each simple
//! command runs in turn, honouring `;`, `&&` and `||`. A command name is
//! looked up first among the [`Program`]s registered with
//! [`Shell::with_program`], then among the builtins; anything else exits 127
//! with `command not found` on stderr. A name with a `/` (such as
//! `/usr/local/bin/homestak`) must exist in the VM's directory and be
//! executable, and then runs the program registered under its base name:
//! the simulated VM never executes host binaries by itself.
//!
//! Builtins: `true`, `false`, `exit`, `echo [-n]`, `cat`, `mkdir [-p]`,
//! `chmod`, `test` (`-e -f -d -x -s -r -w -n -z`, `=`, `!=`, `!`), `rm
//! [-f] [-r]`, `mv [-f]`, `ls [-l] [-a] [-1]`, `cd`, `pwd`, `uname`,
//! `hostname [-I]`, `id`, `whoami`, `sleep`, `cloud-init status [--wait]`
//! (always `done`), `sudo` (runs the rest as root), `sh -c LINE` (and
//! `bash -c`) and `scp -t` (the sink side of SCP uploads). A command's
//! stdout can go to a file (`> FILE`, `>> FILE`), which is created like
//! any other file in the root.
//!
//! A shell given [`Mounts`] (a simulated PVE host's storages) shows their
//! volumes as files under the mounted directories; see
//! [`mounts`](super::mounts).
//!
//! # Extending
//!
//! The simulator adds shims (`pveum`, `pvesh`, `systemctl`, `homestak`) as
//! [`Program`]s. A program gets its arguments and a [`Context`] holding the
//! command's stdio, the VM root (to resolve guest paths safely) and the
//! user; it may run as long as it likes (other channels are unaffected) or
//! spawn a background task or child process and return at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::Accounts;
use super::builtins;
use super::handler::{CommandHandler, ExecRequest, Stdio};
use super::mounts::{Entry, Mounts, Sink};
use super::parse::{Join, Redirect, Simple, parse};
use super::vmfs::{PathError, VmPath, VmRoot};
use homestak_ssh::BoxFuture;

/// A command the simulated VM can run, beyond the builtins.
pub trait Program: Send + Sync + 'static {
    /// Runs with `args` (without the program name) and returns the exit
    /// status.
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32>;
}

/// What a running command can see of its VM and session.
pub struct Context {
    /// The command's standard streams.
    pub io: Stdio,
    /// The VM's root filesystem.
    pub root: VmRoot,
    /// The user the command runs as (the logged-in user, or root under
    /// `sudo`).
    pub user: String,
    /// The command name as typed (`homestak`, `/usr/local/bin/homestak`).
    pub program: String,
    /// The guest working directory (starts at the user's home).
    pub cwd: String,
    /// The VM's host name.
    pub hostname: String,
    /// The VM's address, if known (`hostname -I`).
    pub address: Option<IpAddr>,
    /// The kernel release `uname -r` prints.
    pub kernel: String,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Directories that show something other than the root (storages).
    pub mounts: Option<Arc<dyn Mounts>>,
    /// Set while stdout goes to a mounted file: `cat` of a mounted file
    /// copies it there.
    pub sink: Option<Sink>,
}

impl Context {
    /// What `guest` (a resolved guest path) is, when a mount covers it.
    pub fn mounted(&self, guest: &str) -> Option<Entry> {
        self.mounts.as_ref()?.stat(guest)
    }

    /// Resolves a guest path against the working directory.
    pub fn resolve(&self, path: &str) -> Result<VmPath, PathError> {
        self.root.resolve(&self.cwd, path)
    }

    /// Writes to stdout; a client that went away is not an error here.
    pub async fn out(&mut self, data: impl AsRef<[u8]>) {
        let _ = self.io.stdout.write_all(data.as_ref()).await;
    }

    /// Writes to stderr; a client that went away is not an error here.
    pub async fn err(&mut self, data: impl AsRef<[u8]>) {
        let _ = self.io.stderr.write_all(data.as_ref()).await;
    }

    /// The user's home directory as a guest path.
    pub fn home(&self) -> String {
        home_of(&self.user)
    }
}

/// `NAME=value` as a command word.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn home_of(user: &str) -> String {
    if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    }
}

/// The default handler. Cheap to clone.
#[derive(Clone)]
pub struct Shell {
    root: VmRoot,
    hostname: String,
    address: Option<IpAddr>,
    kernel: String,
    programs: Arc<BTreeMap<String, Arc<dyn Program>>>,
    mounts: Option<Arc<dyn Mounts>>,
    accounts: Option<Arc<dyn Accounts>>,
}

/// Where a redirected command's stdout was, to put it back.
enum Saved {
    File(Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
    Mounted {
        path: String,
        append: bool,
        sink: Sink,
        stdout: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    },
}

impl Shell {
    /// A shell for the VM rooted at `root`, named `hostname`.
    pub fn new(root: VmRoot, hostname: &str) -> Self {
        Shell {
            root,
            hostname: hostname.to_string(),
            address: None,
            // What a Debian 13 cloud image boots.
            kernel: "6.12.41+deb13-amd64".to_string(),
            programs: Arc::new(BTreeMap::new()),
            mounts: None,
            accounts: None,
        }
    }

    /// Takes home directories and who may `sudo` from `accounts`.
    pub fn with_accounts(mut self, accounts: Arc<dyn Accounts>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Shows `mounts` under their directories.
    pub fn with_mounts(mut self, mounts: Arc<dyn Mounts>) -> Self {
        self.mounts = Some(mounts);
        self
    }

    /// Sets the address `hostname -I` reports.
    pub fn with_address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }

    /// Sets the kernel release `uname -r` reports.
    pub fn with_kernel(mut self, release: &str) -> Self {
        self.kernel = release.to_string();
        self
    }

    /// Adds (or overrides) a command.
    pub fn with_program(mut self, name: &str, program: Arc<dyn Program>) -> Self {
        Arc::make_mut(&mut self.programs).insert(name.to_string(), program);
        self
    }

    pub fn root(&self) -> &VmRoot {
        &self.root
    }

    /// Runs one command line with these streams; the exit status of the last
    /// command run.
    pub async fn run_line(&self, line: &str, user: &str, io: Stdio) -> u32 {
        self.run(line, user, None, io).await
    }

    async fn run(&self, line: &str, user: &str, peer: Option<SocketAddr>, io: Stdio) -> u32 {
        let known = match &self.accounts {
            Some(accounts) => accounts.home(user).await,
            None => None,
        };
        let home = known.unwrap_or_else(|| home_of(user));
        let mut cx = Context {
            io,
            root: self.root.clone(),
            user: user.to_string(),
            program: String::new(),
            cwd: home.clone(),
            hostname: self.hostname.clone(),
            address: self.address,
            kernel: self.kernel.clone(),
            peer,
            mounts: self.mounts.clone(),
            sink: None,
        };
        // A freshly provisioned VM has its user's home.
        if let Ok(path) = self.root.resolve("/", &home) {
            let _ = tokio::fs::create_dir_all(&path.host).await;
        }
        let status = self.run_line_in(line, &mut cx).await;
        let _ = cx.io.stdout.flush().await;
        let _ = cx.io.stderr.flush().await;
        status
    }

    /// Runs a command line in `cx` (a login's shell, or `sh -c`).
    async fn run_line_in(&self, line: &str, cx: &mut Context) -> u32 {
        let commands = match parse(line, &home_of(&cx.user)) {
            Ok(commands) => commands,
            Err(e) => {
                cx.err(format!("sh: 1: {e}\n")).await;
                return 2;
            }
        };
        let mut status = 0;
        for command in commands {
            let run = match command.join {
                Join::Always => true,
                Join::And => status == 0,
                Join::Or => status != 0,
            };
            if !run {
                continue;
            }
            let Some((name, args)) = command.words.split_first() else {
                continue;
            };
            if name == "exit" {
                return match args.first().map(|a| a.parse::<u32>()) {
                    None => status,
                    Some(Ok(code)) => code & 0xff,
                    Some(Err(_)) => {
                        cx.err(format!("sh: 1: exit: Illegal number: {}\n", args[0]))
                            .await;
                        2
                    }
                };
            }
            status = self.run_redirected(&command, name, args, cx).await;
        }
        status
    }

    /// Runs one command, with its stdout where its redirection says.
    async fn run_redirected(
        &self,
        command: &Simple,
        name: &str,
        args: &[String],
        cx: &mut Context,
    ) -> u32 {
        let Some(redirect) = &command.redirect else {
            return self.run_simple(name, args, cx).await;
        };
        let saved = match self.open_redirect(redirect, cx).await {
            Ok(saved) => saved,
            Err(status) => return status,
        };
        let status = self.run_simple(name, args, cx).await;
        self.close_redirect(saved, cx, status).await
    }

    async fn open_redirect(&self, r: &Redirect, cx: &mut Context) -> Result<Saved, u32> {
        let path = match cx.resolve(&r.target) {
            Ok(path) => path,
            Err(e) => {
                cx.err(format!("sh: 1: cannot create {}: {e}\n", r.target))
                    .await;
                return Err(2);
            }
        };
        if let (Some(mounts), Some(entry)) = (&self.mounts, cx.mounted(&path.guest)) {
            let refused = if cx.user != "root" {
                Some("Permission denied".to_string())
            } else if entry == Entry::Dir {
                Some("Is a directory".to_string())
            } else {
                mounts
                    .check_writable(&path.guest)
                    .err()
                    .map(|e| e.to_string())
            };
            if let Some(why) = refused {
                cx.err(format!("sh: 1: cannot create {}: {why}\n", r.target))
                    .await;
                return Err(2);
            }
            let sink = Sink::default();
            let stdout = std::mem::replace(&mut cx.io.stdout, Box::new(sink.writer()));
            cx.sink = Some(sink.clone());
            return Ok(Saved::Mounted {
                path: path.guest,
                append: r.append,
                sink,
                stdout,
            });
        }
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true);
        if r.append {
            options.append(true);
        } else {
            options.truncate(true);
        }
        match options.open(&path.host).await {
            Ok(file) => Ok(Saved::File(std::mem::replace(
                &mut cx.io.stdout,
                Box::new(file),
            ))),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "Directory nonexistent",
                    _ => builtins::describe(&e),
                };
                cx.err(format!("sh: 1: cannot create {}: {why}\n", r.target))
                    .await;
                Err(2)
            }
        }
    }

    async fn close_redirect(&self, saved: Saved, cx: &mut Context, status: u32) -> u32 {
        let _ = cx.io.stdout.flush().await;
        match saved {
            Saved::File(stdout) => {
                cx.io.stdout = stdout;
                status
            }
            Saved::Mounted {
                path,
                append,
                sink,
                stdout,
            } => {
                cx.io.stdout = stdout;
                cx.sink = None;
                let Some(mounts) = &self.mounts else {
                    return status;
                };
                let written = match sink.data() {
                    Some(data) => mounts.write_data(&path, &data, append),
                    None => {
                        mounts.write(&path, &sink.sources(), sink.bytes(), &sink.head(), append)
                    }
                };
                match written {
                    Ok(()) => status,
                    Err(e) => {
                        cx.err(format!("sh: 1: {path}: {e}\n")).await;
                        status.max(1)
                    }
                }
            }
        }
    }

    /// `sh -c LINE` (or `bash -c`): runs LINE in this shell; `sh FILE`
    /// runs a script's lines (see [`Self::script`]).
    async fn sub_shell(&self, args: &[String], cx: &mut Context) -> u32 {
        match args {
            [flag, line, ..] if flag == "-c" => Box::pin(self.run_line_in(line, cx)).await,
            [file] if !file.starts_with('-') => Box::pin(self.script(file, cx)).await,
            _ => {
                cx.err(format!(
                    "{}: the simulated host runs only `sh -c COMMAND` and `sh FILE`\n",
                    cx.program
                ))
                .await;
                2
            }
        }
    }

    /// `sh FILE`: each line in order, as this shell runs a command line;
    /// blank lines and comments (the `#!` line too) are skipped, and `set
    /// -e` (also `-eu`) stops at the first failing line, as sh does. No
    /// line continuations, functions or control flow.
    async fn script(&self, file: &str, cx: &mut Context) -> u32 {
        let program = cx.program.clone();
        let text = match cx.resolve(file) {
            Ok(path) => match tokio::fs::read_to_string(&path.host).await {
                Ok(text) => text,
                Err(e) => {
                    cx.err(format!(
                        "{program}: 0: cannot open {file}: {}\n",
                        builtins::describe(&e)
                    ))
                    .await;
                    return 2;
                }
            },
            Err(e) => {
                cx.err(format!("{program}: 0: cannot open {file}: {e}\n"))
                    .await;
                return 2;
            }
        };
        let (mut errexit, mut status) = (false, 0);
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(flags) = line.strip_prefix("set ") {
                let flags = flags.trim();
                if !flags.starts_with('-')
                    || !flags[1..].chars().all(|c| matches!(c, 'e' | 'u' | 'x'))
                {
                    cx.err(format!(
                        "{program}: {}: set: unsupported here: {flags}\n",
                        number + 1
                    ))
                    .await;
                    return 2;
                }
                errexit |= flags.contains('e');
                continue;
            }
            status = Box::pin(self.run_line_in(line, cx)).await;
            if errexit && status != 0 {
                return status;
            }
        }
        status
    }

    async fn run_simple(&self, name: &str, args: &[String], cx: &mut Context) -> u32 {
        // `NAME=value command …`: the assignments are accepted and not
        // kept (no program here reads its environment).
        if is_assignment(name) {
            return match args.split_first() {
                Some((name, args)) => Box::pin(self.run_simple(name, args, cx)).await,
                None => 0,
            };
        }
        if name == "sudo" {
            return self.sudo(args, cx).await;
        }
        cx.program = name.to_string();
        if matches!(name, "sh" | "bash" | "/bin/sh" | "/bin/bash") {
            return self.sub_shell(args, cx).await;
        }
        let base = if name.contains('/') {
            match self.check_executable(name, cx).await {
                Ok(base) => base,
                Err(status) => return status,
            }
        } else {
            name.to_string()
        };
        if let Some(program) = self.programs.get(&base) {
            return program.run(args, cx).await;
        }
        if let Some(status) = builtins::run(&base, args, cx).await {
            return status;
        }
        if name.contains('/') {
            cx.err(format!(
                "sh: 1: {name}: cannot execute: the simulated VM has no program for {base}\n"
            ))
            .await;
            return 126;
        }
        cx.err(format!("sh: 1: {name}: command not found\n")).await;
        127
    }

    /// `sudo [-n] [-E] [-H] [-u root] [--] COMMAND…`: runs the command as
    /// root. With [`Accounts`], only a user they allow (root, the
    /// cloud-init user, a NOPASSWD drop-in in `/etc/sudoers.d`); no
    /// terminal ever answers a password prompt, so anyone else is refused
    /// as `sudo -n` refuses. Other target users are refused.
    async fn sudo(&self, args: &[String], cx: &mut Context) -> u32 {
        if let Some(accounts) = &self.accounts
            && cx.user != "root"
            && !accounts.may_sudo(&cx.user).await
        {
            cx.err("sudo: a password is required\n").await;
            return 1;
        }
        let mut rest = args;
        while let Some((first, tail)) = rest.split_first() {
            match first.as_str() {
                "-n" | "-E" | "-H" | "-S" => rest = tail,
                "--" => {
                    rest = tail;
                    break;
                }
                "-u" => match tail.split_first() {
                    Some((who, tail)) if who == "root" => rest = tail,
                    _ => {
                        cx.err("sudo: the simulated VM only runs commands as root\n")
                            .await;
                        return 1;
                    }
                },
                _ => break,
            }
        }
        let Some((name, args)) = rest.split_first() else {
            cx.err("usage: sudo [-n] [-E] [-H] [-u root] command [arg ...]\n")
                .await;
            return 1;
        };
        let user = std::mem::replace(&mut cx.user, "root".to_string());
        let status = Box::pin(self.run_simple(name, args, cx)).await;
        cx.user = user;
        status
    }

    /// A path command must be an executable file in the VM; returns its base
    /// name, or the shell's exit status.
    async fn check_executable(&self, name: &str, cx: &mut Context) -> Result<String, u32> {
        use std::os::unix::fs::PermissionsExt;
        let path = match cx.resolve(name) {
            Ok(path) => path,
            Err(e) => {
                cx.err(format!("sh: 1: {name}: {e}\n")).await;
                return Err(126);
            }
        };
        match tokio::fs::metadata(&path.host).await {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(path
                .guest
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()),
            Ok(_) => {
                cx.err(format!("sh: 1: {name}: Permission denied\n")).await;
                Err(126)
            }
            Err(_) => {
                cx.err(format!("sh: 1: {name}: not found\n")).await;
                Err(127)
            }
        }
    }
}

impl CommandHandler for Shell {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'static, u32> {
        let shell = self.clone();
        Box::pin(async move {
            shell
                .run(&request.command, &request.user, request.peer, request.io)
                .await
        })
    }
}
