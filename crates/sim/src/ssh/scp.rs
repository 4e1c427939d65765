//! `scp -t`: the receiving (sink) side of the SCP protocol, so files can be
//! uploaded into a simulated VM by our client and by OpenSSH's `scp -O`.
//!
//! Supported: single files (`C` records), `-p` time records (acknowledged,
//! times not applied), `-d` (target must be a directory). Not supported:
//! recursive directory uploads (`D`/`E` records, `-r`), refused with an SCP
//! error the client prints. Downloads (`scp -f`) are in
//! [`scp_source`](super::scp_source). Like OpenSSH, a file's mode (less the umask 022) is applied when
//! the file is created, and an existing file keeps its mode.

use std::os::unix::fs::PermissionsExt;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::shell::Context;

/// Control records are short; a longer line is a protocol error.
const MAX_RECORD: usize = 4096;

pub(super) async fn sink(args: &[String], cx: &mut Context) -> u32 {
    let mut to = false;
    let mut dir_only = false;
    let mut target = None;
    let mut options_done = false;
    for arg in args {
        match arg.as_str() {
            "--" if !options_done => options_done = true,
            flag if !options_done && flag.starts_with('-') && flag.len() > 1 => {
                for c in flag.chars().skip(1) {
                    match c {
                        't' => to = true,
                        'd' => dir_only = true,
                        'p' | 'v' | 'q' => {}
                        'f' => return super::scp_source::source(args, cx).await,
                        'r' => {
                            return fatal(cx, "recursive copies (scp -r) are not simulated").await;
                        }
                        other => {
                            return fatal(cx, &format!("unknown option -{other}")).await;
                        }
                    }
                }
            }
            operand => {
                options_done = true;
                if target.replace(operand.to_string()).is_some() {
                    return fatal(cx, "ambiguous target").await;
                }
            }
        }
    }
    let (true, Some(target)) = (to, target) else {
        return fatal(cx, "usage: scp -t [-d] [-p] [--] TARGET").await;
    };
    let resolved = match cx.resolve(&target) {
        Ok(path) => path,
        Err(e) => return fatal(cx, &format!("{target}: {e}")).await,
    };
    let target_is_dir = tokio::fs::metadata(&resolved.host)
        .await
        .is_ok_and(|m| m.is_dir());
    if dir_only && !target_is_dir {
        return fatal(cx, &format!("{target}: Not a directory")).await;
    }
    ack(cx).await;

    let mut errors = 0;
    // Borrow stdin through a buffer for the whole exchange.
    let mut stdin = std::mem::replace(&mut cx.io.stdin, Box::new(tokio::io::empty()));
    let status = {
        let mut input = BufReader::new(&mut stdin);
        loop {
            let mut record = Vec::new();
            let read = (&mut input)
                .take(MAX_RECORD as u64)
                .read_until(b'\n', &mut record)
                .await;
            match read {
                Ok(0) => break if errors > 0 { 1 } else { 0 },
                Ok(_) if record.last() != Some(&b'\n') => {
                    break fatal(cx, "protocol error: control record too long or cut short").await;
                }
                Ok(_) => {}
                Err(_) => break 1,
            }
            record.pop();
            let record = String::from_utf8_lossy(&record).into_owned();
            match record.as_bytes().first() {
                Some(b'T') => ack(cx).await,
                Some(b'C') => {
                    match receive_file(&record, &resolved, target_is_dir, &mut input, cx).await {
                        Received::Ok => ack(cx).await,
                        Received::Failed(message) => {
                            errors += 1;
                            warn(cx, &message).await;
                        }
                        Received::Broken(message) => break fatal(cx, &message).await,
                    }
                }
                Some(b'D' | b'E') => {
                    break fatal(cx, "directories (scp -r) are not simulated").await;
                }
                // The source reports its own errors this way; keep going.
                Some(1 | 2) => {}
                _ => break fatal(cx, "protocol error: unexpected control record").await,
            }
        }
    };
    cx.io.stdin = stdin;
    let _ = cx.io.stdout.flush().await;
    status
}

enum Received {
    Ok,
    /// This file failed, the protocol can go on.
    Failed(String),
    /// The stream is unusable.
    Broken(String),
}

/// Handles `Cmmmm SIZE NAME` and the file contents that follow it.
async fn receive_file(
    record: &str,
    target: &super::vmfs::VmPath,
    target_is_dir: bool,
    input: &mut (impl tokio::io::AsyncBufRead + Unpin),
    cx: &mut Context,
) -> Received {
    let mut fields = record[1..].splitn(3, ' ');
    let (Some(mode), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
        return Received::Broken("protocol error: malformed file record".into());
    };
    let (Ok(mode), Ok(size)) = (u32::from_str_radix(mode, 8), size.parse::<u64>()) else {
        return Received::Broken("protocol error: malformed mode or size".into());
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Received::Broken(format!("protocol error: unsafe file name {name:?}"));
    }
    let destination = if target_is_dir {
        cx.root.resolve(&target.guest, name)
    } else {
        Ok(target.clone())
    };
    ack(cx).await;

    // Open the destination; on failure the contents are still read (and
    // dropped) so the protocol stays in step, as OpenSSH does.
    let opened = match &destination {
        Ok(path) => {
            let existed = tokio::fs::symlink_metadata(&path.host).await.is_ok();
            tokio::fs::File::create(&path.host)
                .await
                .map(|f| (f, existed, path))
                .map_err(|e| format!("{}: {}", path.guest, describe(&e)))
        }
        Err(e) => Err(format!("{name}: {e}")),
    };
    let (copied, failure) = {
        let mut limited = (&mut *input).take(size);
        let failure = match opened {
            Ok((mut file, existed, path)) => {
                let written = tokio::io::copy(&mut limited, &mut file).await;
                let _ = file.flush().await;
                if !existed {
                    let perms = std::fs::Permissions::from_mode(mode & 0o7777 & !0o022);
                    let _ = tokio::fs::set_permissions(&path.host, perms).await;
                }
                written
                    .err()
                    .map(|e| format!("{}: {}", path.guest, describe(&e)))
            }
            Err(message) => Some(message),
        };
        // After a failure, drain the rest so the protocol stays in step.
        if failure.is_some() {
            let _ = tokio::io::copy(&mut limited, &mut tokio::io::sink()).await;
        }
        (size - limited.limit(), failure)
    };
    if copied != size {
        return Received::Broken("unexpected end of input in file contents".into());
    }
    let outcome = match failure {
        None => Received::Ok,
        Some(message) => Received::Failed(message),
    };
    expect_end(input, outcome).await
}

/// Reads the `\0` the source sends after a file's contents.
async fn expect_end(
    input: &mut (impl tokio::io::AsyncBufRead + Unpin),
    then: Received,
) -> Received {
    let mut end = [0u8; 1];
    match input.read_exact(&mut end).await {
        Ok(_) if end[0] == 0 => then,
        _ => Received::Broken("protocol error: missing end of file marker".into()),
    }
}

fn describe(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory",
        std::io::ErrorKind::IsADirectory => "Is a directory",
        std::io::ErrorKind::PermissionDenied => "Permission denied",
        _ => "Input/output error",
    }
}

async fn ack(cx: &mut Context) {
    let _ = cx.io.stdout.write_all(b"\0").await;
    let _ = cx.io.stdout.flush().await;
}

/// A per-file error: the source reports it and goes on.
async fn warn(cx: &mut Context, message: &str) {
    let _ = cx
        .io
        .stdout
        .write_all(format!("\x01scp: {message}\n").as_bytes())
        .await;
}

/// A fatal error: the source stops. Returns the exit status.
async fn fatal(cx: &mut Context, message: &str) -> u32 {
    let _ = cx
        .io
        .stdout
        .write_all(format!("\x02scp: {message}\n").as_bytes())
        .await;
    let _ = cx.io.stdout.flush().await;
    1
}
