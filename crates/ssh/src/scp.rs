//! The SCP protocol over an exec channel: sending runs `scp -t TARGET` on
//! the remote host, receiving (downloads) runs `scp -f FILE`.
//!
//! The exchange for one file (each arrow from the sink is an acknowledgement
//! byte: `0` for OK, `1` or `2` followed by a message line for an error):
//!
//! ```text
//! sink   → \0                              ready
//! source → C0600 <size> <name>\n           header
//! sink   → \0
//! source → <size bytes> \0                 contents
//! sink   → \0                              written
//! source → EOF                             done; the sink exits 0
//! ```

use std::collections::VecDeque;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ExitStatus;

/// Why sending failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The sink answered with an error message, or went away; the message is
    /// what it (or its stderr) said.
    Refused(String),
    /// The channel broke.
    Channel(russh::Error),
    /// Reading the local source failed.
    Source(std::io::Error),
    /// The local source ended before its announced size.
    Short { sent: u64, expected: u64 },
    /// Writing the local copy of a download failed.
    Local(std::io::Error),
}

/// Sends one file of `len` bytes named `name` with permission bits `mode`,
/// then EOF, and waits for the sink's exit status.
pub(crate) async fn send(
    rx: &mut ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    name: &str,
    len: u64,
    mode: u32,
    source: &mut (dyn AsyncRead + Unpin + Send),
) -> Result<(), Failure> {
    let mut sink = SinkReader::new(rx);
    sink.ack().await?;
    let header = format!("C{:04o} {len} {name}\n", mode & 0o7777);
    tx.data_bytes(header.into_bytes())
        .await
        .map_err(Failure::Channel)?;
    sink.ack().await?;

    let mut writer = Box::pin(tx.make_writer());
    let mut limited = AsyncReadExt::take(&mut *source, len);
    let sent = tokio::io::copy(&mut limited, &mut writer)
        .await
        .map_err(|e| match e.kind() {
            // The writer only fails when the channel is gone.
            std::io::ErrorKind::BrokenPipe => Failure::Channel(russh::Error::SendError),
            _ => Failure::Source(e),
        })?;
    drop(writer);
    if sent != len {
        return Err(Failure::Short {
            sent,
            expected: len,
        });
    }
    tx.data_bytes(&b"\0"[..]).await.map_err(Failure::Channel)?;
    sink.ack().await?;
    tx.eof().await.map_err(Failure::Channel)?;
    match sink.finish().await {
        Some(status) if status.success() => Ok(()),
        status => Err(Failure::Refused(sink.describe_end(status))),
    }
}

/// What a download received.
pub(crate) struct Received {
    pub(crate) size: u64,
    /// The permission bits the source sent.
    pub(crate) mode: u32,
}

/// Receives the one file a remote `scp -f FILE` sends, writing its contents
/// to `out`. The exchange mirrors [`send`]:
///
/// ```text
/// sink   → \0                              ready
/// source → [T… \n] C0644 <size> <name>\n   (times only with -p)
/// sink   → \0
/// source → <size bytes> \0
/// sink   → \0                              then the source exits 0
/// ```
pub(crate) async fn receive(
    rx: &mut ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
) -> Result<Received, Failure> {
    use tokio::io::AsyncWriteExt;
    let mut source = SinkReader::new(rx);
    tx.data_bytes(&b"\0"[..]).await.map_err(Failure::Channel)?;
    let (mode, size) = loop {
        let record = source.record().await?;
        match record.as_bytes().first() {
            Some(b'T') => tx.data_bytes(&b"\0"[..]).await.map_err(Failure::Channel)?,
            Some(b'C') => break parse_file_record(&record)?,
            Some(b'D') => {
                return Err(Failure::Refused(
                    "the remote path is a directory; name a file".to_string(),
                ));
            }
            _ => {
                return Err(Failure::Refused(format!(
                    "unexpected protocol record {record:?} (is `scp` on the remote host a real scp?)"
                )));
            }
        }
    };
    tx.data_bytes(&b"\0"[..]).await.map_err(Failure::Channel)?;
    let mut left = size;
    while left > 0 {
        if source.stdout.is_empty() && !source.pump().await? {
            return Err(Failure::Short {
                sent: size - left,
                expected: size,
            });
        }
        let take = (left as usize).min(source.stdout.len());
        let chunk: Vec<u8> = source.stdout.drain(..take).collect();
        out.write_all(&chunk).await.map_err(Failure::Local)?;
        left -= take as u64;
    }
    out.flush().await.map_err(Failure::Local)?;
    // The source ends the contents with its own acknowledgement.
    source.ack().await?;
    tx.data_bytes(&b"\0"[..]).await.map_err(Failure::Channel)?;
    tx.eof().await.map_err(Failure::Channel)?;
    match source.finish().await {
        Some(status) if status.success() => Ok(Received { size, mode }),
        status => Err(Failure::Refused(source.describe_end(status))),
    }
}

/// `Cmmmm SIZE NAME` → (mode, size).
fn parse_file_record(record: &str) -> Result<(u32, u64), Failure> {
    let mut fields = record[1..].splitn(3, ' ');
    let parsed = match (fields.next(), fields.next(), fields.next()) {
        (Some(mode), Some(size), Some(_name)) => u32::from_str_radix(mode, 8)
            .ok()
            .zip(size.parse::<u64>().ok()),
        _ => None,
    };
    parsed.ok_or_else(|| Failure::Refused(format!("malformed file record {record:?}")))
}

/// Reads the peer's stdout byte by byte, keeping its stderr and exit status.
struct SinkReader<'a> {
    rx: &'a mut ChannelReadHalf,
    stdout: VecDeque<u8>,
    stderr: Vec<u8>,
    status: Option<ExitStatus>,
    closed: bool,
}

impl<'a> SinkReader<'a> {
    fn new(rx: &'a mut ChannelReadHalf) -> Self {
        SinkReader {
            rx,
            stdout: VecDeque::new(),
            stderr: Vec::new(),
            status: None,
            closed: false,
        }
    }

    /// Takes the next message; false when the channel is over.
    async fn pump(&mut self) -> Result<bool, Failure> {
        if self.closed {
            return Ok(false);
        }
        match self.rx.wait().await {
            Some(ChannelMsg::Data { data }) => self.stdout.extend(data.iter()),
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                // Bounded: a chatty sink cannot make us buffer without end.
                if self.stderr.len() < 64 * 1024 {
                    self.stderr.extend_from_slice(&data);
                }
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                self.status = Some(ExitStatus::Code(exit_status));
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                self.status = Some(ExitStatus::Signal(signal_name_of(&signal_name)));
            }
            Some(ChannelMsg::Failure) => {
                return Err(Failure::Refused("exec request refused".to_string()));
            }
            Some(ChannelMsg::Close) | None => self.closed = true,
            Some(_) => {}
        }
        Ok(!self.closed)
    }

    async fn byte(&mut self) -> Result<Option<u8>, Failure> {
        loop {
            if let Some(b) = self.stdout.pop_front() {
                return Ok(Some(b));
            }
            if !self.pump().await? {
                return Ok(None);
            }
        }
    }

    /// Reads one control record (a line, without its newline); an error
    /// byte instead comes with a message, as in [`ack`](Self::ack).
    async fn record(&mut self) -> Result<String, Failure> {
        let mut line = Vec::new();
        match self.byte().await? {
            Some(first @ (1 | 2)) => {
                self.stdout.push_front(first);
                self.ack().await?;
                return Err(Failure::Refused("remote scp sent an empty error".into()));
            }
            Some(b'\n') => return Ok(String::new()),
            Some(b) => line.push(b),
            None => {
                let status = self.finish().await;
                return Err(Failure::Refused(self.describe_end(status)));
            }
        }
        loop {
            match self.byte().await? {
                Some(b'\n') => return Ok(String::from_utf8_lossy(&line).into_owned()),
                Some(b) if line.len() < 4096 => line.push(b),
                Some(_) => return Err(Failure::Refused("control record too long".into())),
                None => {
                    let status = self.finish().await;
                    return Err(Failure::Refused(self.describe_end(status)));
                }
            }
        }
    }

    /// Reads one acknowledgement; an error byte comes with a message line.
    async fn ack(&mut self) -> Result<(), Failure> {
        match self.byte().await? {
            Some(0) => Ok(()),
            Some(1 | 2) => {
                let mut message = Vec::new();
                while let Some(b) = self.byte().await? {
                    if b == b'\n' || message.len() >= 1024 {
                        break;
                    }
                    message.push(b);
                }
                Err(Failure::Refused(
                    String::from_utf8_lossy(&message).trim().to_string(),
                ))
            }
            Some(other) => Err(Failure::Refused(format!(
                "unexpected protocol byte {other:#04x} (is `scp` on the remote host a real scp?)"
            ))),
            None => {
                let status = self.finish().await;
                Err(Failure::Refused(self.describe_end(status)))
            }
        }
    }

    /// Drains the channel and returns the exit status, if any.
    async fn finish(&mut self) -> Option<ExitStatus> {
        while let Ok(true) = self.pump().await {}
        self.status.clone()
    }

    /// What to say when the sink ended unexpectedly: its stderr, or how it ended.
    fn describe_end(&self, status: Option<ExitStatus>) -> String {
        let stderr = String::from_utf8_lossy(&self.stderr).trim().to_string();
        match (stderr.is_empty(), status) {
            (false, _) => stderr,
            (true, Some(status)) => format!("remote scp ended with {status}"),
            (true, None) => "remote scp ended without an exit status".to_string(),
        }
    }
}

/// The SSH name of a signal (`TERM`, `KILL`, …).
pub(crate) fn signal_name_of(signal: &russh::Sig) -> String {
    match signal {
        russh::Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}
