//! What runs an exec request: the [`CommandHandler`] trait and the stdio it
//! is given.
//!
//! The SSH server never starts host processes by itself. Each exec request
//! (the command line a client sent) goes to a handler, with the channel's
//! stdin, stdout and stderr, and the handler returns an exit status when it
//! is done. Each request runs in its own task, so a long command never holds
//! up other channels or sessions; if the client closes the channel or the
//! server shuts down first, the handler's future is dropped.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

use homestak_ssh::BoxFuture;

/// Runs the commands of a simulated host.
pub trait CommandHandler: Send + Sync + 'static {
    /// Runs one exec request to completion and returns its exit status.
    /// Output written to `request.io` reaches the client as it is written.
    fn exec(&self, request: ExecRequest) -> BoxFuture<'static, u32>;
}

/// One exec request.
pub struct ExecRequest {
    /// The command line as the client sent it.
    pub command: String,
    /// The authenticated user.
    pub user: String,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The channel's standard streams.
    pub io: Stdio,
}

/// Boxed standard streams of one command.
pub struct Stdio {
    /// Ends when the client sends EOF.
    pub stdin: Box<dyn AsyncRead + Send + Unpin>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
}

/// A channel writer made safe for handlers: russh's writer fails on empty
/// writes and sends the channel's EOF on shutdown, which would cut off the
/// other stream and the exit status. The session sends EOF itself.
pub(super) struct ChannelOutput<W>(pub(super) W);

impl<W: AsyncWrite + Unpin> AsyncWrite for ChannelOutput<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
