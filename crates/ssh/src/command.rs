//! Commands to run, their output, and files to upload.
//!
//! A [`Command`] keeps two renderings: the line sent to the remote shell and
//! the line shown in logs and errors, where secret arguments are masked.
//! Secrets are better passed on stdin ([`Command::stdin`]), which is never
//! shown and never appears in the remote process list.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{Destination, Error};

/// How much of each stream [`ExecOutput`] keeps; the sink still sees all.
pub(crate) const COLLECT_LIMIT: usize = 16 * 1024 * 1024;

/// A command line for the remote POSIX shell.
#[derive(Clone)]
pub struct Command {
    line: String,
    shown: String,
    /// Secret argument values, masked wherever the command's output is
    /// quoted back (a failing tool often echoes its arguments).
    secrets: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Command {
    /// Starts a command with its program name (quoted if needed).
    pub fn new(program: &str) -> Self {
        let quoted = quote(program);
        Command {
            shown: quoted.clone(),
            line: quoted,
            secrets: Vec::new(),
            stdin: None,
            timeout: None,
        }
    }

    /// A complete shell line, sent and shown as is (it must hold no secret).
    pub fn shell(line: impl Into<String>) -> Self {
        let line = line.into();
        Command {
            shown: line.clone(),
            line,
            secrets: Vec::new(),
            stdin: None,
            timeout: None,
        }
    }

    /// A shell line run as root by `user`: as is for root, else through
    /// `sudo -n sh -c` (no password prompt: it fails instead of hanging).
    pub fn as_root(user: &str, line: &str) -> Self {
        if user == "root" {
            Command::shell(line)
        } else {
            Command::shell(format!("sudo -n sh -c {}", quote(line)))
        }
    }

    /// Appends an argument, quoted for the shell.
    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        let quoted = quote(arg.as_ref());
        self.line.push(' ');
        self.line.push_str(&quoted);
        self.shown.push(' ');
        self.shown.push_str(&quoted);
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        args.into_iter().fold(self, Command::arg)
    }

    /// Appends an argument that is shown as `***` in logs and errors.
    pub fn secret_arg(mut self, arg: impl AsRef<str>) -> Self {
        self.line.push(' ');
        self.line.push_str(&quote(arg.as_ref()));
        self.shown.push_str(" ***");
        if !arg.as_ref().is_empty() {
            self.secrets.push(arg.as_ref().to_string());
        }
        self
    }

    /// `text` with every secret argument replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }

    /// Data written to the command's stdin (then EOF). Never shown.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Gives up on the command (and closes its channel) after `after`.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// The line sent to the remote shell. Do not log it: use `Display`.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The stdin data, if any.
    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// The timeout, if any.
    pub fn timeout_after(&self) -> Option<Duration> {
        self.timeout
    }
}

impl From<&str> for Command {
    fn from(line: &str) -> Self {
        Command::shell(line)
    }
}

impl fmt::Display for Command {
    /// The line with secret arguments masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("line", &self.shown)
            .field("stdin_bytes", &self.stdin.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Quotes a word for a POSIX shell: unchanged when it is made only of safe
/// characters, otherwise in single quotes (with `'` written as `'\''`).
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(u32),
    /// It was killed by this signal (name as SSH reports it, e.g. `TERM`).
    Signal(String),
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(code) => Some(*code),
            ExitStatus::Signal(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: ExitStatus,
    /// Stdout, up to 16 MiB.
    pub stdout: Vec<u8>,
    /// Stderr, up to 16 MiB.
    pub stderr: Vec<u8>,
    /// Whether either stream was longer than what was kept.
    pub truncated: bool,
}

impl ExecOutput {
    /// An empty output with this status.
    pub fn new(status: ExitStatus) -> Self {
        ExecOutput {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Appends a chunk, respecting the collection limit.
    pub(crate) fn collect(&mut self, stream: Stream, data: &[u8]) {
        let buffer = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let room = COLLECT_LIMIT.saturating_sub(buffer.len());
        if data.len() > room {
            self.truncated = true;
        }
        buffer.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// `Ok(self)` when the command succeeded, else [`Error::CommandFailed`]
    /// with the last lines of stderr.
    pub fn check(self, destination: &Destination, command: &Command) -> Result<Self, Error> {
        if self.success() {
            return Ok(self);
        }
        Err(Error::CommandFailed {
            destination: destination.clone(),
            command: command.to_string(),
            status: self.status.clone(),
            stderr: stderr_tail(&command.redact(&String::from_utf8_lossy(&self.stderr))),
        })
    }
}

/// The last few lines of stderr, bounded, for error messages.
fn stderr_tail(text: &str) -> String {
    const LINES: usize = 3;
    const CHARS: usize = 400;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join(" | ");
    if tail.chars().count() > CHARS {
        let skip = tail.chars().count() - CHARS;
        format!("…{}", tail.chars().skip(skip).collect::<String>())
    } else {
        tail
    }
}

/// Turns output chunks into whole lines, per stream.
///
/// ```
/// use homestak_ssh::{LineBuffer, Stream};
/// let mut lines = Vec::new();
/// let mut buffer = LineBuffer::default();
/// buffer.push(Stream::Stdout, b"one\ntw", &mut |s, l| lines.push((s, l.to_string())));
/// buffer.push(Stream::Stdout, b"o\n", &mut |s, l| lines.push((s, l.to_string())));
/// assert_eq!(lines, [(Stream::Stdout, "one".to_string()), (Stream::Stdout, "two".to_string())]);
/// ```
#[derive(Debug, Default)]
pub struct LineBuffer {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineBuffer {
    /// Feeds a chunk; calls `line` for each complete line (without `\n`).
    pub fn push(&mut self, stream: Stream, data: &[u8], line: &mut dyn FnMut(Stream, &str)) {
        let buffer = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        buffer.extend_from_slice(data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let rest = buffer.split_off(end + 1);
            let whole = std::mem::replace(buffer, rest);
            let text = String::from_utf8_lossy(&whole[..end]);
            line(stream, text.trim_end_matches('\r'));
        }
    }

    /// Emits what is left (a last line without `\n`).
    pub fn finish(&mut self, line: &mut dyn FnMut(Stream, &str)) {
        for (stream, buffer) in [
            (Stream::Stdout, &mut self.stdout),
            (Stream::Stderr, &mut self.stderr),
        ] {
            if !buffer.is_empty() {
                let text = String::from_utf8_lossy(buffer).into_owned();
                buffer.clear();
                line(stream, &text);
            }
        }
    }
}

/// What to upload.
#[derive(Clone)]
pub enum UploadSource {
    /// These bytes (may be secret: `Debug` shows only the length).
    Bytes(Vec<u8>),
    /// The contents of this local file, streamed.
    File(PathBuf),
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadSource::Bytes(data) => write!(f, "Bytes({} bytes)", data.len()),
            UploadSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A file to write on the remote host.
#[derive(Clone, Debug)]
pub struct Upload {
    pub source: UploadSource,
    /// Absolute path, or relative to the user's home.
    pub remote_path: String,
    /// Permission bits (e.g. `0o755`), applied whether or not the file existed.
    pub mode: u32,
}

impl Upload {
    pub fn bytes(data: impl Into<Vec<u8>>, remote_path: impl Into<String>, mode: u32) -> Self {
        Upload {
            source: UploadSource::Bytes(data.into()),
            remote_path: remote_path.into(),
            mode,
        }
    }

    pub fn file(local: impl Into<PathBuf>, remote_path: impl Into<String>, mode: u32) -> Self {
        Upload {
            source: UploadSource::File(local.into()),
            remote_path: remote_path.into(),
            mode,
        }
    }
}

/// A remote file to copy to this machine.
#[derive(Clone, Debug)]
pub struct Download {
    /// Absolute path, or relative to the user's home.
    pub remote_path: String,
    /// Where the copy goes; written under a temporary name next to it, then
    /// renamed, so it appears whole or not at all.
    pub local_path: PathBuf,
}

impl Download {
    pub fn new(remote_path: impl Into<String>, local_path: impl Into<PathBuf>) -> Self {
        Download {
            remote_path: remote_path.into(),
            local_path: local_path.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_safe_words_and_single_quotes_the_rest() {
        assert_eq!(quote("/usr/local/bin/homestak"), "/usr/local/bin/homestak");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn secret_arguments_are_sent_but_never_shown() {
        let command = Command::new("pveum")
            .args(["user", "token", "add"])
            .secret_arg("s3cr3t value")
            .stdin("more secret");
        assert_eq!(command.line(), "pveum user token add 's3cr3t value'");
        assert_eq!(command.to_string(), "pveum user token add ***");
        let debug = format!("{command:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(!debug.contains("more secret"), "{debug}");
    }

    #[test]
    fn failed_output_becomes_an_error_naming_destination_command_and_stderr_tail() {
        let destination = Destination::new("127.0.0.9", 2222, "root");
        let mut output = ExecOutput::new(ExitStatus::Code(3));
        output.collect(Stream::Stderr, b"one\ntwo\nthree\nfour\n");
        let err = output
            .check(&destination, &Command::new("false"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`false` on root@127.0.0.9:2222 failed with exit code 3; stderr ends with: two | three | four"
        );
    }

    #[test]
    fn collection_is_bounded_and_flags_truncation() {
        let mut output = ExecOutput::new(ExitStatus::Code(0));
        output.collect(Stream::Stdout, &vec![b'x'; COLLECT_LIMIT - 1]);
        assert!(!output.truncated);
        output.collect(Stream::Stdout, b"yz");
        assert!(output.truncated);
        assert_eq!(output.stdout.len(), COLLECT_LIMIT);
    }

    #[test]
    fn line_buffer_keeps_streams_apart_and_flushes_the_tail() {
        let mut seen = Vec::new();
        let mut buffer = LineBuffer::default();
        let mut record = |s: Stream, l: &str| seen.push((s, l.to_string()));
        buffer.push(Stream::Stdout, b"a\r\nb", &mut record);
        buffer.push(Stream::Stderr, b"err", &mut record);
        buffer.push(Stream::Stdout, b"c\n", &mut record);
        buffer.finish(&mut record);
        assert_eq!(
            seen,
            [
                (Stream::Stdout, "a".to_string()),
                (Stream::Stdout, "bc".to_string()),
                (Stream::Stderr, "err".to_string()),
            ]
        );
    }

    #[test]
    fn upload_debug_hides_bytes() {
        let upload = Upload::bytes("token=abc", "/etc/x", 0o600);
        assert!(!format!("{upload:?}").contains("abc"));
    }
}
