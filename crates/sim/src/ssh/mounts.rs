//! Directories of a simulated host that are views of something other than
//! its root directory: a PVE node's storages (`/var/lib/vz/import`, …),
//! whose files are the simulator's volume records.
//!
//! A [`Mounts`] implementation answers for the guest paths it covers; the
//! builtins (`cat`, `rm`, `mv`, `test`, `cd`, `ls`, `mkdir -p`) and `>`
//! consult it before the VM root. Volumes have sizes but no contents, so
//! the only way to write one is `cat` of other volumes redirected into it
//! (`cat a b > c`: `c` is as big as `a` and `b` together), plus whatever
//! plain bytes the command writes; reading a volume's contents anywhere
//! else is refused with a clear message.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};

use tokio::io::AsyncWrite;

/// What a mounted path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Dir,
    File { size: u64 },
}

/// Why a mount refused an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountError {
    NotFound,
    IsDir,
    NoSpace,
    PermissionDenied,
    /// Not possible in the simulation, with the reason.
    NotPermitted(String),
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::NotFound => f.write_str("No such file or directory"),
            MountError::IsDir => f.write_str("Is a directory"),
            MountError::NoSpace => f.write_str("No space left on device"),
            MountError::PermissionDenied => f.write_str("Permission denied"),
            MountError::NotPermitted(why) => write!(f, "Operation not permitted ({why})"),
        }
    }
}

/// A view of volumes as files. Paths are normalized absolute guest paths.
pub trait Mounts: Send + Sync + 'static {
    /// `None` when `path` is not under a mount.
    fn stat(&self, path: &str) -> Option<Entry>;

    /// Whether a file may be created at `path` (checked before a command
    /// whose output goes there runs).
    fn check_writable(&self, path: &str) -> Result<(), MountError>;

    /// Makes `path` the concatenation of the mounted files `sources` and
    /// `extra` bytes of other data (appended to what is there with
    /// `append`). `head` is the start of that other data (at most
    /// [`HEAD_LEN`] bytes), where an image file copied in keeps its header.
    fn write(
        &self,
        path: &str,
        sources: &[String],
        extra: u64,
        head: &[u8],
        append: bool,
    ) -> Result<(), MountError>;

    /// Makes `path` hold exactly `data` (appended with `append`): files
    /// whose contents the mount keeps (snippets) keep them; others only
    /// count the bytes, as [`write`](Self::write).
    fn write_data(&self, path: &str, data: &[u8], append: bool) -> Result<(), MountError> {
        self.write(
            path,
            &[],
            data.len() as u64,
            &data[..data.len().min(HEAD_LEN)],
            append,
        )
    }

    fn remove(&self, path: &str) -> Result<(), MountError>;

    /// Moves a file; an existing `to` is replaced.
    fn rename(&self, from: &str, to: &str) -> Result<(), MountError>;

    /// The entries of a mounted directory, sorted by name.
    fn list(&self, dir: &str) -> Result<Vec<(String, Entry)>, MountError>;
}

/// A command's stdout redirected into a mounted file: the mounted files it
/// copies there, and the count of other bytes it writes.
#[derive(Clone, Default)]
pub struct Sink {
    sources: Arc<std::sync::Mutex<Vec<String>>>,
    bytes: Arc<AtomicU64>,
    /// The first [`KEPT`] bytes of other data, for mounts that keep
    /// contents (snippets).
    data: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// How much written data a sink keeps (PVE reads snippets up to 1 MiB).
const KEPT: usize = 1 << 20;

/// How much of the plain bytes written to a mounted file a volume's header
/// reader sees: enough for a qcow2 header.
pub const HEAD_LEN: usize = 512;

impl Sink {
    /// Records a mounted file copied to the sink.
    pub fn copy_from(&self, path: &str) {
        if let Ok(mut s) = self.sources.lock() {
            s.push(path.to_string());
        }
    }

    pub(super) fn sources(&self) -> Vec<String> {
        self.sources.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Everything written, when the sink copied no mounted file and kept
    /// every byte.
    pub(super) fn data(&self) -> Option<Vec<u8>> {
        let data = self.data.lock().ok()?.clone();
        (self.sources().is_empty() && data.len() as u64 == self.bytes()).then_some(data)
    }

    /// The first [`HEAD_LEN`] plain bytes written.
    pub(super) fn head(&self) -> Vec<u8> {
        self.data
            .lock()
            .map(|d| d[..d.len().min(HEAD_LEN)].to_vec())
            .unwrap_or_default()
    }

    /// A writer that counts what it is given.
    pub(super) fn writer(&self) -> Counter {
        Counter(self.bytes.clone(), self.data.clone())
    }
}

/// Counts bytes written to a mounted file (keeping the first [`KEPT`]).
pub(super) struct Counter(Arc<AtomicU64>, Arc<std::sync::Mutex<Vec<u8>>>);

impl AsyncWrite for Counter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Ok(mut kept) = self.1.lock() {
            let room = KEPT.saturating_sub(kept.len()).min(buf.len());
            kept.extend_from_slice(&buf[..room]);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The message for reading a volume's contents.
pub(super) const NO_CONTENTS: &str =
    "the simulated host keeps the sizes of storage volumes, not their contents";
