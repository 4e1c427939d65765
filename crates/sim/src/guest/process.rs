//! Real processes in a simulated VM: the `homestak` binary a parent tier
//! uploaded, run in the foreground over SSH or as a service.
//!
//! This is the one place where a simulated VM runs host code. It is not a
//! container: the process runs as the simulator's user, with the same
//! kernel and network (loopback only by our rules). What keeps it inside
//! its VM is a convention:
//!
//! - only executables named in [`REAL_PROGRAMS`] (the homestak binary) run,
//!   and only from a file inside the VM's root that is executable;
//! - its working directory is the guest directory's place in the VM root,
//!   `HOME` and `TMPDIR` point into the root, the environment is otherwise
//!   empty except `PATH`, `LANG`, `USER` and `LOGNAME`;
//! - arguments and environment values that are absolute guest paths
//!   (`/var/lib/homestak`, or `--flag=/path`) are mapped into the root, so
//!   `--state-dir /var/lib/homestak` lands in the VM. Paths inside files it
//!   reads are not rewritten;
//! - it runs in its own process group, which gets SIGTERM and then SIGKILL
//!   when its service stops, its SSH command ends, or the VM stops.
//!
//! Binding the VM's address is up to its arguments (the parent tier knows
//! the address it reached the VM on).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::ssh::VmRoot;

/// Programs that run as real processes when their file is in the VM.
pub const REAL_PROGRAMS: &[&str] = &["homestak"];

/// Where a bare command name is looked up, as Debian's root `PATH`.
pub const GUEST_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// A process ready to spawn.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The executable on the host.
    pub exe: PathBuf,
    /// Its guest path (for messages).
    pub guest_exe: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The home directory of a guest user.
pub fn home_of(user: &str) -> String {
    if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    }
}

/// Finds the executable for `name` (a path, or a name looked up in
/// [`GUEST_PATH`]) and checks it may run.
pub fn find_executable(root: &VmRoot, cwd: &str, name: &str) -> Result<(String, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<String> = if name.contains('/') {
        vec![name.to_string()]
    } else {
        GUEST_PATH.iter().map(|d| format!("{d}/{name}")).collect()
    };
    for candidate in &candidates {
        let Ok(path) = root.resolve(cwd, candidate) else {
            continue;
        };
        match std::fs::metadata(&path.host) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                let base = path.guest.rsplit('/').next().unwrap_or_default();
                if !REAL_PROGRAMS.contains(&base) {
                    return Err(format!(
                        "{}: the simulated VM runs only the homestak binary as a real process",
                        path.guest
                    ));
                }
                return Ok((path.guest, path.host));
            }
            Ok(_) if name.contains('/') => return Err(format!("{name}: Permission denied")),
            _ => {}
        }
    }
    Err(if name.contains('/') {
        format!("{name}: No such file or directory")
    } else {
        format!("{name}: command not found (install it in the VM, e.g. /usr/local/bin/{name})")
    })
}

/// Maps an absolute guest path (or the value of `--flag=/path`) into the
/// VM root; other words stay as they are.
pub fn map_word(root: &VmRoot, word: &str) -> Result<String, String> {
    let host = |guest: &str| {
        root.resolve("/", guest)
            .map(|p| p.host.to_string_lossy().into_owned())
            .map_err(|e| format!("{guest}: {e}"))
    };
    if word.starts_with('/') {
        return host(word);
    }
    if word.starts_with("--")
        && let Some((flag, value)) = word.split_once('=')
        && value.starts_with('/')
    {
        return Ok(format!("{flag}={}", host(value)?));
    }
    Ok(word.to_string())
}

/// Builds the launch of `exe_guest` with `args` for `user`, in the guest
/// directory `cwd`, with extra environment `env` (guest values).
pub fn launch(
    root: &VmRoot,
    user: &str,
    cwd: &str,
    exe: (String, PathBuf),
    args: &[String],
    env: &[(String, String)],
) -> Result<Launch, String> {
    let cwd_host = root
        .resolve("/", cwd)
        .map_err(|e| format!("{cwd}: {e}"))?
        .host;
    if !cwd_host.is_dir() {
        return Err(format!(
            "changing to the working directory {cwd}: No such file or directory"
        ));
    }
    let args = args
        .iter()
        .map(|a| map_word(root, a))
        .collect::<Result<Vec<_>, _>>()?;
    let home = home_of(user);
    let tmp = root.resolve("/", "/tmp").map_err(|e| e.to_string())?.host;
    let _ = std::fs::create_dir_all(&tmp);
    let mut vars = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        ),
        ("HOME".to_string(), map_word(root, &home)?),
        ("TMPDIR".to_string(), tmp.to_string_lossy().into_owned()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("USER".to_string(), user.to_string()),
        ("LOGNAME".to_string(), user.to_string()),
    ];
    for (k, v) in env {
        let v = map_word(root, v)?;
        vars.retain(|(name, _)| name != k);
        vars.push((k.clone(), v));
    }
    Ok(Launch {
        exe: exe.1,
        guest_exe: exe.0,
        args,
        cwd: cwd_host,
        env: vars,
    })
}

/// Spawns `launch` in its own process group. Retries briefly on "text file
/// busy": a binary just uploaded can still be open in a forking thread.
pub async fn spawn(
    launch: &Launch,
    stdin: impl Fn() -> Stdio,
    stdout: impl Fn() -> Stdio,
    stderr: impl Fn() -> Stdio,
) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        let spawned = Command::new(&launch.exe)
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(stdin())
            .stdout(stdout())
            .stderr(stderr())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(26) && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// Kills a process group when dropped (SIGKILL), so nothing a real process
/// started outlives its VM or command.
#[derive(Debug)]
pub struct GroupGuard(pub Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to the process group led by `pid` (errors such as "no
/// such process" are expected after it ended).
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// SIGTERM to the group, then SIGKILL after `grace`; waits for the child.
/// Returns its exit status.
pub async fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let Some(pid) = child.id() else {
        return child.wait().await.ok();
    };
    signal_group(pid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    // Whatever else the group started goes too.
    signal_group(pid, Signal::SIGKILL);
    status
}

/// The shell's exit status for a process status: its code, or 128 + the
/// signal that ended it.
pub fn exit_code(status: std::process::ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32 & 0xff,
        (None, Some(signal)) => 128 + signal as u32,
        _ => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_in_words_map_into_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(dir.path()).unwrap();
        let base = root.host_dir().to_string_lossy().into_owned();
        assert_eq!(
            map_word(&root, "/var/lib/homestak").unwrap(),
            format!("{base}/var/lib/homestak")
        );
        assert_eq!(
            map_word(&root, "--state-dir=/var/lib/x").unwrap(),
            format!("--state-dir={base}/var/lib/x")
        );
        assert_eq!(map_word(&root, "--listen").unwrap(), "--listen");
        assert_eq!(map_word(&root, "127.1.2.3:8443").unwrap(), "127.1.2.3:8443");
        assert_eq!(map_word(&root, "a=/b").unwrap(), "a=/b");
        assert!(map_word(&root, "/../../etc/passwd").is_err());
    }

    #[test]
    fn only_the_homestak_binary_runs_and_only_from_the_vm() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(dir.path()).unwrap();
        let bin = root.host_dir().join("usr/local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["homestak", "other"] {
            std::fs::write(bin.join(name), "x").unwrap();
        }
        let err = find_executable(&root, "/", "homestak").unwrap_err();
        assert!(err.contains("command not found"), "{err}");
        let err = find_executable(&root, "/", "/usr/local/bin/homestak").unwrap_err();
        assert!(err.contains("Permission denied"), "{err}");
        for name in ["homestak", "other"] {
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let (guest, host) = find_executable(&root, "/", "homestak").unwrap();
        assert_eq!(guest, "/usr/local/bin/homestak");
        assert_eq!(host, bin.join("homestak"));
        let err = find_executable(&root, "/", "/usr/local/bin/other").unwrap_err();
        assert!(err.contains("only the homestak binary"), "{err}");
    }

    #[test]
    fn launches_get_a_confined_environment() {
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(dir.path()).unwrap();
        std::fs::create_dir_all(root.host_dir().join("root")).unwrap();
        let exe = ("/usr/local/bin/homestak".to_string(), PathBuf::from("/x"));
        let l = launch(
            &root,
            "root",
            "/root",
            exe.clone(),
            &["serve".into(), "--state-dir".into(), "/var/lib/h".into()],
            &[("HOMESTAK_STATE_DIR".into(), "/var/lib/h".into())],
        )
        .unwrap();
        let base = root.host_dir().to_string_lossy().into_owned();
        assert_eq!(l.cwd, root.host_dir().join("root"));
        assert_eq!(l.args[2], format!("{base}/var/lib/h"));
        let env: std::collections::BTreeMap<_, _> = l.env.iter().cloned().collect();
        assert_eq!(env["HOME"], format!("{base}/root"));
        assert_eq!(env["HOMESTAK_STATE_DIR"], format!("{base}/var/lib/h"));
        assert_eq!(env["USER"], "root");
        let err = launch(&root, "root", "/nowhere", exe, &[], &[]).unwrap_err();
        assert!(err.contains("No such file"), "{err}");
    }
}
