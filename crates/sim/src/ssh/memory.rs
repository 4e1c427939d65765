//! In-memory stdio for testing a handler without SSH (unit tests only).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::Stdio;

impl Stdio {
    /// In-memory streams for testing a handler without SSH: stdin yields
    /// `stdin`, and the returned [`Captured`] collects stdout and stderr.
    pub fn in_memory(stdin: impl Into<Vec<u8>>) -> (Stdio, Captured) {
        let captured = Captured::default();
        let stdio = Stdio {
            stdin: Box::new(std::io::Cursor::new(stdin.into())),
            stdout: Box::new(captured.stdout.clone()),
            stderr: Box::new(captured.stderr.clone()),
        };
        (stdio, captured)
    }
}

/// Output collected by [`Stdio::in_memory`].
#[derive(Clone, Default)]
pub struct Captured {
    stdout: SharedBuffer,
    stderr: SharedBuffer,
}

impl Captured {
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }
}

/// A cloneable in-memory writer.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl AsyncWrite for SharedBuffer {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.lock() {
            Ok(mut b) => {
                b.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            Err(_) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
