//! `scp -f`: the sending (source) side of the SCP protocol, so files can be
//! downloaded from a simulated host by our client and by OpenSSH's `scp -O`.
//!
//! The exchange for one file (arrows from the sink are acknowledgements: `0`,
//! or `1`/`2` and a message line):
//!
//! ```text
//! sink   → \0                              ready
//! source → T<mtime> 0 <atime> 0\n          with -p only
//! sink   → \0
//! source → C0644 <size> <name>\n           header
//! sink   → \0
//! source → <size bytes> \0                 contents
//! sink   → \0                              written
//! ```
//!
//! Several operands send several files. A missing file or a directory
//! (`-r` is not simulated) is reported to the sink as a `\x01scp: …` line and
//! the rest still go; the exit status is then 1. Storage volumes have no
//! contents in the simulation ([`super::mounts`]), so they cannot be
//! downloaded.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::mounts::NO_CONTENTS;
use super::shell::Context;

pub(super) async fn source(args: &[String], cx: &mut Context) -> u32 {
    let mut from = false;
    let mut times = false;
    let mut files = Vec::new();
    let mut options_done = false;
    for arg in args {
        match arg.as_str() {
            "--" if !options_done => options_done = true,
            flag if !options_done && flag.starts_with('-') && flag.len() > 1 => {
                for c in flag.chars().skip(1) {
                    match c {
                        'f' => from = true,
                        'p' => times = true,
                        'v' | 'q' => {}
                        'r' => {
                            return fatal(cx, "recursive copies (scp -r) are not simulated").await;
                        }
                        't' => return fatal(cx, "scp: -f and -t exclude each other").await,
                        other => return fatal(cx, &format!("unknown option -{other}")).await,
                    }
                }
            }
            operand => {
                options_done = true;
                files.push(operand.to_string());
            }
        }
    }
    if !from || files.is_empty() {
        return fatal(cx, "usage: scp -f [-p] [--] FILE…").await;
    }
    let mut stdin = std::mem::replace(&mut cx.io.stdin, Box::new(tokio::io::empty()));
    let status = send_all(&files, times, &mut stdin, cx).await;
    cx.io.stdin = stdin;
    let _ = cx.io.stdout.flush().await;
    status
}

async fn send_all(
    files: &[String],
    times: bool,
    stdin: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    cx: &mut Context,
) -> u32 {
    // The sink speaks first.
    if !matches!(read_ack(stdin).await, Ack::Ok) {
        return 1;
    }
    let mut errors = 0;
    for file in files {
        match send_one(file, times, stdin, cx).await {
            Sent::Ok => {}
            Sent::Skipped(message) => {
                errors += 1;
                warn(cx, &message).await;
            }
            Sent::SinkRefused => errors += 1,
            Sent::Over => return 1,
        }
    }
    if errors > 0 { 1 } else { 0 }
}

enum Sent {
    Ok,
    /// This file cannot be sent; tell the sink and go on.
    Skipped(String),
    /// The sink refused this file (it said why).
    SinkRefused,
    /// The sink went away or stopped the transfer.
    Over,
}

enum Ack {
    Ok,
    Warning,
    Fatal,
}

async fn send_one(
    file: &str,
    times: bool,
    stdin: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    cx: &mut Context,
) -> Sent {
    let path = match cx.resolve(file) {
        Ok(path) => path,
        Err(e) => return Sent::Skipped(format!("{file}: {e}")),
    };
    if let Some(entry) = cx.mounted(&path.guest) {
        use super::mounts::Entry;
        return Sent::Skipped(match entry {
            Entry::File { .. } => format!("{file}: {NO_CONTENTS}"),
            Entry::Dir => format!("{file}: not a regular file"),
            Entry::Missing => format!("{file}: No such file or directory"),
        });
    }
    let meta = match tokio::fs::metadata(&path.host).await {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Sent::Skipped(format!("{file}: not a regular file")),
        Err(_) => return Sent::Skipped(format!("{file}: No such file or directory")),
    };
    let mut opened = match tokio::fs::File::open(&path.host).await {
        Ok(f) => f,
        Err(_) => return Sent::Skipped(format!("{file}: Permission denied")),
    };
    if times {
        let line = format!("T{} 0 {} 0\n", meta.mtime(), meta.atime());
        if let Some(end) = exchange(line.as_bytes(), stdin, cx).await {
            return end;
        }
    }
    let name = path.guest.rsplit('/').next().unwrap_or_default();
    let size = meta.len();
    let header = format!(
        "C{:04o} {size} {name}\n",
        meta.permissions().mode() & 0o7777
    );
    if let Some(end) = exchange(header.as_bytes(), stdin, cx).await {
        return end;
    }
    let mut limited = (&mut opened).take(size);
    let copied = tokio::io::copy(&mut limited, &mut cx.io.stdout)
        .await
        .unwrap_or(0);
    if copied != size {
        // The file shrank: the sink cannot be told otherwise; stop.
        let _ = cx
            .io
            .stdout
            .write_all(format!("\x02scp: {file}: file changed size\n").as_bytes())
            .await;
        return Sent::Over;
    }
    match exchange(b"\0", stdin, cx).await {
        Some(end) => end,
        None => Sent::Ok,
    }
}

/// Sends `data`, then reads the sink's answer; `None` when it is OK.
async fn exchange(
    data: &[u8],
    stdin: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    cx: &mut Context,
) -> Option<Sent> {
    if cx.io.stdout.write_all(data).await.is_err() {
        return Some(Sent::Over);
    }
    let _ = cx.io.stdout.flush().await;
    match read_ack(stdin).await {
        Ack::Ok => None,
        Ack::Warning => Some(Sent::SinkRefused),
        Ack::Fatal => Some(Sent::Over),
    }
}

/// Reads `\0`, or `\1`/`\2` and the message line the sink sends with it.
async fn read_ack(stdin: &mut (dyn tokio::io::AsyncRead + Send + Unpin)) -> Ack {
    let mut byte = [0u8; 1];
    match stdin.read_exact(&mut byte).await {
        Ok(_) if byte[0] == 0 => Ack::Ok,
        Ok(_) if byte[0] == 1 || byte[0] == 2 => {
            // Only a warning (1) lets the transfer go on.
            let kind = if byte[0] == 1 {
                Ack::Warning
            } else {
                Ack::Fatal
            };
            // Skip the message, bounded.
            for _ in 0..4096 {
                match stdin.read_exact(&mut byte).await {
                    Ok(_) if byte[0] == b'\n' => return kind,
                    Ok(_) => {}
                    Err(_) => return Ack::Fatal,
                }
            }
            Ack::Fatal
        }
        _ => Ack::Fatal,
    }
}

async fn warn(cx: &mut Context, message: &str) {
    let _ = cx
        .io
        .stdout
        .write_all(format!("\x01scp: {message}\n").as_bytes())
        .await;
    let _ = cx.io.stdout.flush().await;
}

async fn fatal(cx: &mut Context, message: &str) -> u32 {
    let _ = cx
        .io
        .stdout
        .write_all(format!("\x02scp: {message}\n").as_bytes())
        .await;
    let _ = cx.io.stdout.flush().await;
    1
}
