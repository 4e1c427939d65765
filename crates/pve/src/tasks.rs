//! Waiting on PVE tasks.
//!
//! Long operations return a UPID at once; their own errors only show in the
//! task's `exitstatus` (NOTES §6). Two ways to follow one:
//! - [`check`]: one status read. The executor records the UPID, requeues
//!   the node and checks again later, so no worker is held across a task.
//! - [`wait`]: polls with backoff until the task stops (CLI seed verbs,
//!   tests, short tasks).
//!
//! `OK` is success, `WARNINGS: n` success with warnings, anything else a
//! failure reported with the tail of the task log.

use std::time::Duration;

use tokio::time::Instant;

use super::error::Error;
use super::limits::Backoff;
use super::types::{TaskExit, TaskStatus};
use super::upid::Upid;
use super::{Api, Result};

/// How [`wait`] polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitOptions {
    /// Give up after this long (the task keeps running in PVE).
    pub timeout: Duration,
    /// Poll interval: starts short (most tasks are quick), grows to `max`.
    pub poll: Backoff,
    /// Log lines to fetch when the task fails.
    pub log_tail: u64,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(600),
            poll: Backoff::new(Duration::from_millis(250), Duration::from_secs(5)),
            log_tail: 20,
        }
    }
}

/// A task that finished successfully.
#[derive(Clone, Debug)]
pub struct Finished {
    pub status: TaskStatus,
    /// Warnings PVE counted (`WARNINGS: n`); 0 for a plain `OK`.
    pub warnings: u32,
}

/// The result of one [`check`].
#[derive(Clone, Debug)]
pub enum Check {
    Running(TaskStatus),
    Succeeded(Finished),
    /// The task failed: its exit status and the last lines of its log.
    Failed {
        status: TaskStatus,
        exitstatus: String,
        log_tail: Vec<String>,
    },
}

impl Check {
    /// Turns a failure into [`Error::TaskFailed`], for callers that treat it
    /// as one.
    pub fn into_result(self) -> Result<Option<Finished>> {
        match self {
            Check::Running(_) => Ok(None),
            Check::Succeeded(done) => Ok(Some(done)),
            Check::Failed {
                status,
                exitstatus,
                log_tail,
            } => Err(Error::TaskFailed {
                vmid: status.upid.vmid(),
                upid: Box::new(status.upid),
                exitstatus,
                log_tail,
            }),
        }
    }
}

/// Reads the task's status once; on failure also fetches the log tail.
pub async fn check<A: Api + ?Sized>(api: &A, upid: &Upid, log_tail: u64) -> Result<Check> {
    let status = api.task_status(upid).await?;
    Ok(match status.exit() {
        None => Check::Running(status),
        Some(TaskExit::Ok) => Check::Succeeded(Finished {
            status,
            warnings: 0,
        }),
        Some(TaskExit::Warnings(warnings)) => Check::Succeeded(Finished { status, warnings }),
        Some(TaskExit::Failed(exitstatus)) => {
            // The log is a courtesy: a failure to read it must not hide the
            // task's own error.
            let log_tail = tail(api, upid, log_tail).await.unwrap_or_else(|err| {
                tracing::debug!(error = %err, %upid, "cannot read the failed task's log");
                Vec::new()
            });
            Check::Failed {
                status,
                exitstatus,
                log_tail,
            }
        }
    })
}

/// Polls until the task stops or `options.timeout` passes.
pub async fn wait<A: Api + ?Sized>(
    api: &A,
    upid: &Upid,
    options: &WaitOptions,
) -> Result<Finished> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        if let Some(done) = check(api, upid, options.log_tail).await?.into_result()? {
            return Ok(done);
        }
        let waited = started.elapsed();
        if waited >= options.timeout {
            return Err(Error::TaskTimeout {
                upid: Box::new(upid.clone()),
                vmid: upid.vmid(),
                waited,
            });
        }
        attempt += 1;
        let delay = options.poll.delay(attempt).min(options.timeout - waited);
        tokio::time::sleep(delay).await;
    }
}

/// The last `lines` lines of a task log, oldest first.
pub async fn tail<A: Api + ?Sized>(api: &A, upid: &Upid, lines: u64) -> Result<Vec<String>> {
    if lines == 0 {
        return Ok(Vec::new());
    }
    // The total is only known after a read; most logs are short, so read a
    // page first and fetch the real tail only if the log was longer.
    let first = api.task_log(upid, 0, lines).await?;
    let total = first.total.unwrap_or(first.lines.len() as u64);
    let page = if total > lines {
        api.task_log(upid, total - lines, lines).await?
    } else {
        first
    };
    Ok(page.lines.into_iter().map(|l| l.t).collect())
}
