//! `homestak` in a simulated VM: the real binary a parent tier uploaded
//! (for example to `/usr/local/bin/homestak` with SCP), run in the
//! foreground with the SSH channel as its stdin, stdout and stderr. See
//! [`process`](crate::guest::process) for how it is confined.

use std::process::Stdio;

use crate::guest::process;
use crate::ssh::Context;
use homestak_ssh::BoxFuture;

pub(crate) struct Homestak;

impl crate::ssh::Program for Homestak {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let prepared = process::find_executable(&cx.root, &cx.cwd, &cx.program)
                .and_then(|exe| process::launch(&cx.root, &cx.user, &cx.cwd, exe, args, &[]));
            let launch = match prepared {
                Ok(launch) => launch,
                Err(e) => {
                    cx.err(format!("sh: 1: {e}\n")).await;
                    return 127;
                }
            };
            let mut child =
                match process::spawn(&launch, Stdio::piped, Stdio::piped, Stdio::piped).await {
                    Ok(child) => child,
                    Err(e) => {
                        cx.err(format!("sh: 1: {}: {e}\n", launch.guest_exe)).await;
                        return 126;
                    }
                };
            // Whatever the program started dies with the command.
            let _group = process::GroupGuard(child.id());
            let (child_in, child_out, child_err) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take());
            let crate::ssh::Stdio {
                stdin: io_in,
                stdout: io_out,
                stderr: io_err,
            } = &mut cx.io;
            let run = async {
                let out = async {
                    if let Some(mut pipe) = child_out {
                        let _ = tokio::io::copy(&mut pipe, io_out).await;
                    }
                };
                let err = async {
                    if let Some(mut pipe) = child_err {
                        let _ = tokio::io::copy(&mut pipe, io_err).await;
                    }
                };
                tokio::join!(out, err);
                child.wait().await
            };
            let feed = async {
                if let Some(mut pipe) = child_in {
                    let _ = tokio::io::copy(io_in, &mut pipe).await;
                }
                // EOF reached the program; keep waiting for it to end.
                std::future::pending::<()>().await;
            };
            let status = tokio::select! {
                status = run => status,
                () = feed => unreachable_status(),
            };
            match status {
                Ok(status) => process::exit_code(status),
                Err(_) => 255,
            }
        })
    }
}

/// `feed` never completes; this only satisfies the type.
fn unreachable_status() -> std::io::Result<std::process::ExitStatus> {
    Err(std::io::ErrorKind::Other.into())
}
