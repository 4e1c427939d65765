//! The default shell without SSH: builtins, path commands, programs and
//! the SCP sink, driven through in-memory stdio.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::{Captured, Context, Program, Shell, Stdio, VmRoot};
use homestak_ssh::BoxFuture;

struct Vm {
    shell: Shell,
    _dir: tempfile::TempDir,
}

fn vm() -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let root = VmRoot::create(&dir.path().join("root")).unwrap();
    Vm {
        shell: Shell::new(root, "node1"),
        _dir: dir,
    }
}

impl Vm {
    async fn run_as(&self, user: &str, line: &str, stdin: &[u8]) -> (u32, Captured) {
        let (io, captured) = Stdio::in_memory(stdin.to_vec());
        let status = self.shell.run_line(line, user, io).await;
        (status, captured)
    }

    async fn run(&self, line: &str) -> (u32, String, String) {
        let (status, out) = self.run_as("root", line, b"").await;
        (status, out.stdout(), out.stderr())
    }

    fn host(&self, guest: &str) -> std::path::PathBuf {
        self.shell.root().resolve("/", guest).unwrap().host
    }
}

#[tokio::test]
async fn file_builtins_work_inside_the_vm() {
    let vm = vm();
    let (status, out, err) = vm
        .run("mkdir -p /opt/a/b && cd /opt/a && pwd && cd b && pwd; test -d /opt/a && echo dir")
        .await;
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (0, "/opt/a\n/opt/a/b\ndir\n", "")
    );
    assert!(vm.host("/opt/a/b").is_dir());

    let (status, _, err) = vm.run("mkdir /opt/a").await;
    assert_eq!(status, 1);
    assert_eq!(
        err,
        "mkdir: cannot create directory '/opt/a': File exists\n"
    );

    let (status, _, err) = vm.run("cat < /x").await;
    assert_eq!(status, 2);
    assert!(err.contains("input redirections"), "{err}");

    std::fs::write(vm.host("/opt/a/f"), "data").unwrap();
    let (status, out, _) = vm
        .run("chmod 750 /opt/a/f && test -x /opt/a/f && test -s /opt/a/f && echo ok")
        .await;
    assert_eq!((status, out.as_str()), (0, "ok\n"));
    let mode = std::fs::metadata(vm.host("/opt/a/f"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);

    let (status, _, _) = vm.run("mv /opt/a/f /opt/a/b && test -f /opt/a/b/f").await;
    assert_eq!(status, 0);
    let (status, _, err) = vm.run("rm /opt/a").await;
    assert_eq!(
        (status, err.as_str()),
        (1, "rm: cannot remove '/opt/a': Is a directory\n")
    );
    let (status, _, _) = vm
        .run("rm -f /nothing && rm -r /opt/a && test ! -e /opt/a")
        .await;
    assert_eq!(status, 0);
    let (status, _, err) = vm.run("rm -rf /").await;
    assert_eq!(status, 1);
    assert!(err.contains("dangerous"), "{err}");
}

#[tokio::test]
async fn identity_builtins_describe_the_simulated_host() {
    let vm = vm();
    let (status, out) = vm
        .run_as("debian", "whoami; id -u; id -un; id; hostname; pwd", b"")
        .await;
    assert_eq!(status, 0);
    assert_eq!(
        out.stdout(),
        "debian\n1000\ndebian\nuid=1000(debian) gid=1000(debian) groups=1000(debian)\nnode1\n/home/debian\n"
    );
    let (_, out, _) = vm.run("uname -a").await;
    assert!(
        out.starts_with("Linux node1 6.12.41+deb13-amd64 #1 "),
        "{out}"
    );
    assert!(out.ends_with(" x86_64 GNU/Linux\n"), "{out}");
    let (status, out, _) = vm.run("uname -sr; uname").await;
    assert_eq!(
        (status, out.as_str()),
        (0, "Linux 6.12.41+deb13-amd64\nLinux\n")
    );
    let (status, _, err) = vm.run("cloud-init init").await;
    assert_eq!(status, 2);
    assert!(err.contains("only `cloud-init status`"), "{err}");
}

#[tokio::test]
async fn cat_reads_stdin_and_exit_stops_the_line() {
    let vm = vm();
    let (status, out) = vm.run_as("root", "cat; cat -", b"piped").await;
    assert_eq!((status, out.stdout().as_str()), (0, "piped"));
    let (status, out, _) = vm.run("echo a; exit 4; echo b").await;
    assert_eq!((status, out.as_str()), (4, "a\n"));
    let (status, out, _) = vm.run("false; exit").await;
    assert_eq!((status, out.as_str()), (1, ""));
}

struct Tool;

impl Program for Tool {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let line = format!("tool {} as {} in {}\n", args.join(","), cx.user, cx.cwd);
            cx.out(line).await;
            5
        })
    }
}

#[tokio::test]
async fn path_commands_must_exist_be_executable_and_have_a_program() {
    let vm = vm();
    vm.run("mkdir -p /usr/local/bin").await;
    let (status, _, err) = vm.run("/usr/local/bin/tool").await;
    assert_eq!(
        (status, err.as_str()),
        (127, "sh: 1: /usr/local/bin/tool: not found\n")
    );

    std::fs::write(vm.host("/usr/local/bin/tool"), "#!binary").unwrap();
    let (status, _, err) = vm.run("/usr/local/bin/tool").await;
    assert_eq!(
        (status, err.as_str()),
        (126, "sh: 1: /usr/local/bin/tool: Permission denied\n")
    );

    vm.run("chmod +x /usr/local/bin/tool").await;
    let (status, _, err) = vm.run("/usr/local/bin/tool").await;
    assert_eq!(status, 126);
    assert!(err.contains("has no program for tool"), "{err}");

    let with_tool = Vm {
        shell: vm.shell.clone().with_program("tool", Arc::new(Tool)),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (status, out, _) = with_tool.run("/usr/local/bin/tool a b && echo no").await;
    assert_eq!((status, out.as_str()), (5, "tool a,b as root in /root\n"));
    // Programs also override builtins by bare name.
    let (status, out, _) = with_tool.run("tool x").await;
    assert_eq!((status, out.as_str()), (5, "tool x as root in /root\n"));
}

#[tokio::test]
async fn scp_sink_writes_files_and_acknowledges_each_step() {
    let vm = vm();
    vm.run("mkdir -p /srv").await;
    let stdin = b"C0640 5 hello.txt\nhello\0T1700000000 0 1700000000 0\nC0755 3 exact\nabc\0";
    let (status, out) = vm.run_as("root", "scp -t -- /srv", stdin).await;
    assert_eq!(status, 0, "{}", out.stdout());
    // Ready, then header + contents acks for each file, plus the T record.
    assert_eq!(out.stdout(), "\0\0\0\0\0\0");
    assert_eq!(
        std::fs::read_to_string(vm.host("/srv/hello.txt")).unwrap(),
        "hello"
    );
    let mode = std::fs::metadata(vm.host("/srv/hello.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    // A file target takes the contents whatever the announced name; an
    // existing file keeps its mode, as with OpenSSH.
    let (status, _) = vm
        .run_as("root", "scp -t /srv/hello.txt", b"C0777 2 other\nhi\0")
        .await;
    assert_eq!(status, 0);
    assert_eq!(
        std::fs::read_to_string(vm.host("/srv/hello.txt")).unwrap(),
        "hi"
    );
    let mode = std::fs::metadata(vm.host("/srv/hello.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[tokio::test]
async fn scp_sink_refuses_unsafe_names_escapes_and_unsupported_modes() {
    let vm = vm();
    vm.run("mkdir -p /srv").await;
    for (line, stdin, message) in [
        ("scp -t /srv", &b"C0644 1 ../x\nx\0"[..], "unsafe file name"),
        ("scp -t /srv", b"D0755 0 dir\n", "directories"),
        ("scp -t /../..", b"", "leaves the VM root"),
        ("scp /srv", b"", "usage"),
        ("scp -t -d /srv/none", b"", "Not a directory"),
        (
            "scp -t /srv",
            b"C0644 10 short\nabc",
            "unexpected end of input",
        ),
    ] {
        let (status, out) = vm.run_as("root", line, stdin).await;
        assert_eq!(status, 1, "{line}");
        let stdout = out.stdout();
        assert!(stdout.contains('\u{2}'), "{line}: {stdout:?}");
        assert!(stdout.contains(message), "{line}: {stdout:?}");
    }
    // A per-file failure (here: the parent directory is missing) is a
    // warning; the exchange goes on and the exit status reports it.
    let (status, out) = vm
        .run_as("root", "scp -t /srv/missing/file", b"C0644 1 f\nx\0")
        .await;
    assert_eq!(status, 1);
    assert!(
        out.stdout()
            .starts_with("\0\0\u{1}scp: /srv/missing/file: No such file"),
        "{:?}",
        out.stdout()
    );
    assert!(!vm.host("/srv/missing").exists());
    // The unsafe name was not written anywhere.
    assert!(!vm.host("/x").exists());
}

#[tokio::test]
async fn servers_listen_on_loopback_only() {
    let vm = vm();
    for addr in ["0.0.0.0:0", "192.0.2.1:22", "[::]:0"] {
        let config = super::Config::new(
            addr.parse().unwrap(),
            "root",
            Vec::new(),
            Arc::new(vm.shell.clone()),
        );
        let err = super::Server::start(config).await.unwrap_err();
        assert!(
            matches!(err, super::Error::NotLoopback { .. }),
            "{addr}: {err}"
        );
    }
}

#[test]
fn authorized_keys_text_is_parsed_like_sshd_does() {
    let text = "# cloud-init sshkeys\n\
        ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIARxl3eOe2eI+c6oHBapUqj5X9EesKCJ/W8JkUhHP5/W op@laptop\n\
        \n\
        no-pty,no-agent-forwarding ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIARxl3eOe2eI+c6oHBapUqj5X9EesKCJ/W8JkUhHP5/W\n";
    let keys = super::parse_authorized_keys(text).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        homestak_ssh::Fingerprint::of(&keys[0]).to_string(),
        "SHA256:OXT0zu7qI7MwTVHZMm+pvhdz14rm/bVRWmlzdunV4sQ"
    );
    let err = super::parse_authorized_keys("ssh-ed25519 AAAA\nssh-rsa !!!\n").unwrap_err();
    assert!(
        matches!(err, super::Error::AuthorizedKey { line: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn stdout_goes_to_files_and_sh_c_runs_a_line() {
    let vm = vm();
    let (status, out, err) = vm
        .run("mkdir -p /tmp && echo one > /tmp/f && echo two >> /tmp/f && cat /tmp/f")
        .await;
    assert_eq!((status, out.as_str(), err.as_str()), (0, "one\ntwo\n", ""));
    let (status, out, _) = vm.run("echo three > /tmp/f; cat /tmp/f").await;
    assert_eq!((status, out.as_str()), (0, "three\n"));
    let (status, _, err) = vm.run("echo x > /nope/f").await;
    assert_eq!(
        (status, err.as_str()),
        (2, "sh: 1: cannot create /nope/f: Directory nonexistent\n")
    );
    let (status, _, err) = vm.run("echo x > ../../etc/x").await;
    assert_eq!(status, 2);
    assert!(err.contains("leaves the VM root"), "{err}");
    // The redirection belongs to its command only.
    let (status, out, _) = vm
        .run("sh -c 'echo a > /tmp/g; cat /tmp/g' && echo b")
        .await;
    assert_eq!((status, out.as_str()), (0, "a\nb\n"));
    let (status, out) = vm.run_as("debian", "sudo -n sh -c 'whoami'", b"").await;
    assert_eq!((status, out.stdout().as_str()), (0, "root\n"));
    let (status, _, err) = vm.run("sh -x").await;
    assert_eq!(status, 2);
    assert!(err.contains("sh FILE"), "{err}");
}

#[tokio::test]
async fn sh_file_runs_a_script_line_by_line_and_set_e_stops_it() {
    let vm = vm();
    std::fs::create_dir_all(vm.host("/tmp")).unwrap();
    std::fs::write(
        vm.host("/tmp/ok.sh"),
        "#!/bin/sh\n# a comment\n\necho one\nfalse\necho two > /tmp/two\n",
    )
    .unwrap();
    // Without set -e a failing line does not stop the script.
    let (status, out, _) = vm.run("sh /tmp/ok.sh && cat /tmp/two").await;
    assert_eq!((status, out.as_str()), (0, "one\ntwo\n"));
    std::fs::write(
        vm.host("/tmp/stop.sh"),
        "#!/bin/sh\nset -eu\necho one\nfalse\necho never > /tmp/never\n",
    )
    .unwrap();
    let (status, out, _) = vm.run("sh /tmp/stop.sh").await;
    assert_eq!((status, out.as_str()), (1, "one\n"));
    assert!(!vm.host("/tmp/never").exists());
    let (status, _, err) = vm.run("sh /tmp/missing.sh").await;
    assert_eq!(status, 2);
    assert!(err.contains("cannot open /tmp/missing.sh"), "{err}");
    std::fs::write(vm.host("/tmp/bad.sh"), "set -o pipefail\n").unwrap();
    let (status, _, err) = vm.run("sh /tmp/bad.sh").await;
    assert_eq!(status, 2);
    assert!(err.contains("unsupported"), "{err}");
}

/// A storage at `/st` with one content directory, `/st/import`, whose
/// files are sizes only.
#[derive(Default)]
struct FakeStorage(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl FakeStorage {
    fn files(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

impl super::Mounts for FakeStorage {
    fn stat(&self, path: &str) -> Option<super::Entry> {
        if path == "/st" || path == "/st/import" {
            return Some(super::Entry::Dir);
        }
        let name = path.strip_prefix("/st/")?;
        Some(match self.0.lock().unwrap().get(name) {
            Some(&size) => super::Entry::File { size },
            None => super::Entry::Missing,
        })
    }

    fn check_writable(&self, path: &str) -> Result<(), super::MountError> {
        if path.starts_with("/st/import/") {
            Ok(())
        } else {
            Err(super::MountError::NotPermitted(
                "not a content directory".into(),
            ))
        }
    }

    fn write(
        &self,
        path: &str,
        sources: &[String],
        extra: u64,
        _head: &[u8],
        append: bool,
    ) -> Result<(), super::MountError> {
        let mut files = self.0.lock().unwrap();
        let name = path.trim_start_matches("/st/").to_string();
        let mut size: u64 = sources
            .iter()
            .filter_map(|s| files.get(s.trim_start_matches("/st/")))
            .sum::<u64>()
            + extra;
        if append {
            size += files.get(&name).copied().unwrap_or(0);
        }
        files.insert(name, size);
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), super::MountError> {
        let mut files = self.0.lock().unwrap();
        files
            .remove(path.trim_start_matches("/st/"))
            .map(|_| ())
            .ok_or(super::MountError::NotFound)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), super::MountError> {
        let mut files = self.0.lock().unwrap();
        let size = files
            .remove(from.trim_start_matches("/st/"))
            .ok_or(super::MountError::NotFound)?;
        files.insert(to.trim_start_matches("/st/").to_string(), size);
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, super::Entry)>, super::MountError> {
        let prefix = format!("{}/", dir.trim_start_matches("/st/"));
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .map(|n| (n.to_string(), super::Entry::File { size: *v }))
            })
            .collect())
    }
}

#[tokio::test]
async fn mounted_files_are_joined_moved_and_removed_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = VmRoot::create(&dir.path().join("root")).unwrap();
    let storage = Arc::new(FakeStorage::default());
    storage.0.lock().unwrap().extend([
        ("import/a.raw".to_string(), 100),
        ("import/b.raw".to_string(), 50),
    ]);
    let vm = Vm {
        shell: Shell::new(root, "pve").with_mounts(storage.clone()),
        _dir: dir,
    };
    let (status, _, err) = vm
        .run(
            "cd /st/import && cat a.raw b.raw > j.tmp && mv -f j.tmp j.qcow2 \
             && echo hi >> j.qcow2 && test -f j.qcow2 && test ! -e j.tmp",
        )
        .await;
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(storage.files().get("import/j.qcow2"), Some(&153));
    let (_, out, _) = vm.run("ls -l /st/import").await;
    assert_eq!(
        out,
        "-rw-r--r-- 1 root root 100 a.raw\n-rw-r--r-- 1 root root 50 b.raw\n\
         -rw-r--r-- 1 root root 153 j.qcow2\n"
    );
    // Contents are not kept: only copying into another mounted file works.
    let (status, _, err) = vm.run("cat /st/import/a.raw").await;
    assert_eq!(status, 1);
    assert!(err.contains("sizes of storage volumes"), "{err}");
    let (status, _, err) = vm.run("cat /st/import/a.raw > /st/x").await;
    assert_eq!(status, 2);
    assert!(err.contains("not a content directory"), "{err}");
    let (status, _, err) = vm.run("mv /st/import/a.raw /root/").await;
    assert_eq!(status, 1);
    assert!(err.contains("only by copying"), "{err}");
    // Writing needs root.
    let (status, out) = vm
        .run_as("debian", "cat /st/import/a.raw > /st/import/c.raw", b"")
        .await;
    assert_eq!(status, 2);
    assert!(
        out.stderr().contains("Permission denied"),
        "{}",
        out.stderr()
    );
    let (status, out) = vm.run_as("debian", "rm /st/import/a.raw", b"").await;
    assert_eq!(status, 1);
    assert!(
        out.stderr().contains("Permission denied"),
        "{}",
        out.stderr()
    );
    let (status, _, _) = vm
        .run("rm -f /st/import/a.raw /st/import/b.raw /st/import/none.raw")
        .await;
    assert_eq!(status, 0);
    assert_eq!(
        storage.files().into_keys().collect::<Vec<_>>(),
        ["import/j.qcow2"]
    );
}

#[tokio::test]
async fn curl_reaches_loopback_only_and_reads_headers_from_files() {
    let vm = vm();
    // Never another address, whatever the scheme.
    let (status, _, err) = vm.run("curl -fsS https://192.0.2.1/x").await;
    assert_ne!(status, 0, "{err}");
    assert!(!err.is_empty());
    // `-H @FILE` reads headers from a file; a missing one is curl's 26.
    let (status, _, err) = vm
        .run("curl -fsS -H @/etc/none.header http://127.0.0.1:9/x")
        .await;
    assert_eq!(status, 26, "{err}");
    std::fs::create_dir_all(vm.host("/etc")).unwrap();
    std::fs::write(vm.host("/etc/bad.header"), "no colon here\n").unwrap();
    let (status, _, err) = vm
        .run("curl -fsS -H @/etc/bad.header http://127.0.0.1:9/x")
        .await;
    assert_eq!(status, 2, "{err}");
    std::fs::write(vm.host("/etc/ok.header"), "Authorization: Bearer t\n").unwrap();
    // A good header file gets as far as connecting (nothing listens: 7).
    let (status, _, err) = vm
        .run("curl -fsS -H @/etc/ok.header http://127.0.0.1:9/x")
        .await;
    assert_eq!(status, 7, "{err}");
}
