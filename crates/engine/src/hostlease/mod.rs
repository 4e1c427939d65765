//! The host lease: one reconciler per PVE host, whoever runs it and
//! whatever its state directory.
//!
//! The store's own lock keeps two processes off one store, but a daemon
//! running as root (`/var/lib/homestak`) and a `reconcile --once` run by
//! another user (`~/.local/state/homestak`) have two stores and would
//! converge one host at once, each pruning the other's VMs. So the lease
//! lives on the PVE host itself, where every homestak that reaches it sees
//! it: a marked block in the node's notes (`description` of
//! `/nodes/{node}/config`, see [`block`]), written with the config's
//! `digest`. PVE checks the digest under its node config lock
//! (`PVE::API2::NodeConfig::set_options`), so two homestaks that read the
//! same lease and both write it cannot both win: the second gets `detected
//! modified configuration` and reads again. The block names its holder
//! (command, hostname, pid, state directory, homestak version, a random
//! nonce), when it was taken and when it lapses.
//!
//! A lease can be taken when it is free, when it lapsed, or at once when
//! its holder ran on this machine and is gone ([`identity`]): a SIGKILLed
//! run never blocks the next one for a whole TTL. Held leases are renewed
//! every third of the TTL in the background; a lease found taken by
//! someone else, or not renewed before it lapsed, is lost, and the run
//! holding it winds down ([`HostLease::lost`]).
//!
//! One gap PVE leaves: a node whose config file is empty has no digest,
//! and PVE then checks none. The first homestak to find it so writes a
//! `free` block (the same bytes whoever writes it) and takes the lease
//! under that block's digest; the block then stays for good, so the gap
//! is only ever open once per node.

mod block;
mod identity;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homestak_base::id::PveNode;
use homestak_base::time::Timestamp;
use homestak_pve::{self as pve, Api, ErrorKind, NodeConfigUpdate};
use tokio::sync::watch;

pub use block::{Holder, Problem, Record, State};
pub use identity::Liveness;

/// How long a lease lasts without renewal.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// How long a converging command waits for a held lease by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// How often a waiting homestak looks again.
const POLL: Duration = Duration::from_secs(2);
/// Tries of one read-decide-write over transient PVE errors.
const ATTEMPTS: u32 = 8;

/// What to do when another homestak holds the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once (`--no-wait`).
    No,
    /// Wait up to this long (`--lease-timeout`).
    For(Duration),
}

/// How a process holds host leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub ttl: Duration,
    /// Keep a lease from run to run until told to give it back (the
    /// daemon: one reconciler per tier while it serves), instead of giving
    /// it back at the end of each run.
    pub hold: bool,
    /// What this process is, for the holder line (`reconcile`, `serve`).
    pub command: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: DEFAULT_TTL,
            hold: false,
            command: "homestak".into(),
        }
    }
}

/// A lease someone else holds, as a waiting message or an error shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The site-config's name of the host.
    pub host: String,
    pub node: PveNode,
    pub record: Record,
}

impl Held {
    /// `reconcile (pid 4242 on build-01, state dir …, homestak 0.1.0)`.
    pub fn holder(&self) -> String {
        describe(&self.record.holder)
    }

    /// When the lease lapses unless renewed.
    pub fn until(&self) -> Timestamp {
        self.record.expires
    }
}

fn describe(h: &Holder) -> String {
    let command = h.command.as_deref().unwrap_or("homestak");
    format!(
        "`{command}` (pid {} on {}, state dir {}, homestak {})",
        h.pid,
        h.host,
        h.state_dir.as_deref().unwrap_or_default(),
        h.version.as_deref().unwrap_or_default()
    )
}

/// Taking, renewing or giving back a lease failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "host {host} is being converged by another homestak: {holder} holds its lease (notes of \
         PVE node {node}) until {until}{}; let it finish or stop it, or wait longer \
         (--lease-timeout)",
        waited.map(|w| format!(", still after waiting {}", humantime::format_duration(w))).unwrap_or_default()
    )]
    Held {
        host: String,
        node: PveNode,
        holder: String,
        until: Timestamp,
        waited: Option<Duration>,
    },
    #[error("host {host}: cannot read or write the lease in the notes of PVE node {node}; {hint}")]
    Api {
        host: String,
        node: PveNode,
        /// What to do next, by the kind of failure.
        hint: &'static str,
        #[source]
        source: pve::Error,
    },
    #[error(
        "host {host}: the homestak lease block in the notes of PVE node {node} cannot be read; \
         remove it (from `<!-- homestak:lease begin` to `<!-- homestak:lease end -->`) in the \
         node's notes, making sure no homestak converges the host, then run again"
    )]
    Damaged {
        host: String,
        node: PveNode,
        #[source]
        source: Problem,
    },
    #[error("host {host}: another homestak kept writing the notes of PVE node {node}; run again")]
    Contended { host: String, node: PveNode },
}

impl Error {
    /// Worth another try soon: PVE or the network failed, not the request.
    fn transient(&self) -> bool {
        match self {
            Error::Api { source, .. } => matches!(
                source.kind(),
                ErrorKind::Server
                    | ErrorKind::ProxyFailure
                    | ErrorKind::Unreachable
                    | ErrorKind::Timeout
                    | ErrorKind::Protocol
            ),
            Error::Contended { .. } => true,
            _ => false,
        }
    }
}

/// Where a lease lives: one PVE node through one client.
#[derive(Clone)]
struct Place {
    api: Arc<dyn Api>,
    host: String,
    node: PveNode,
}

/// What one read of the notes found.
struct Read {
    digest: Option<String>,
    notes: block::Notes,
}

impl Place {
    fn api_err(&self, source: pve::Error) -> Error {
        let hint = match source.kind() {
            ErrorKind::Unauthorized | ErrorKind::Forbidden => {
                "the API token needs Sys.Audit and Sys.Modify on /"
            }
            ErrorKind::NotImplemented => "this PVE has no node config API; PVE 6 or later has",
            _ => "check that PVE answers, then run again",
        };
        Error::Api {
            host: self.host.clone(),
            node: self.node.clone(),
            hint,
            source,
        }
    }

    async fn read(&self) -> Result<Read, Error> {
        let config = self
            .api
            .node_config(&self.node)
            .await
            .map_err(|e| self.api_err(e))?;
        let notes = block::Notes::parse(config.description.as_deref().unwrap_or_default())
            .map_err(|source| Error::Damaged {
                host: self.host.clone(),
                node: self.node.clone(),
                source,
            })?;
        Ok(Read {
            digest: config.digest,
            notes,
        })
    }

    /// Writes `notes`; `Ok(false)` when someone wrote first (stale digest).
    async fn write(&self, notes: String, digest: Option<String>) -> Result<bool, Error> {
        let update = NodeConfigUpdate {
            description: Some(notes),
            delete: Vec::new(),
            digest,
        };
        match self.api.node_config_put(&self.node, &update).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::DigestMismatch => Ok(false),
            Err(e) => Err(self.api_err(e)),
        }
    }

    fn held(&self, record: &Record) -> Held {
        Held {
            host: self.host.clone(),
            node: self.node.clone(),
            record: record.clone(),
        }
    }
}

/// How one try to take the lease ended.
enum Attempt {
    Taken(Record),
    Busy(Record),
    /// The notes changed under us: read again.
    Raced,
}

/// The `free` block written into an empty node config: the same bytes
/// from every homestak.
fn seed() -> Record {
    Record {
        state: State::Free,
        holder: Holder {
            command: None,
            host: String::new(),
            pid: 0,
            state_dir: None,
            version: None,
            nonce: "none".into(),
            machine: None,
            boot: None,
            pid_start: None,
        },
        acquired: Timestamp::EPOCH,
        renewed: Timestamp::EPOCH,
        expires: Timestamp::EPOCH,
    }
}

/// A new holder identity for this process.
fn holder(policy: &Policy, state_dir: &Path) -> Holder {
    let me = identity::this_process();
    Holder {
        command: Some(policy.command.clone()),
        host: me.host.clone(),
        pid: me.pid,
        state_dir: Some(state_dir.display().to_string()),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        nonce: format!("{:032x}", rand::random::<u128>()),
        machine: me.machine.clone(),
        boot: me.boot.clone(),
        pid_start: me.pid_start,
    }
}

/// Whether `record` keeps `me` out now.
fn blocks(record: &Record, me: &Holder, now: Timestamp) -> bool {
    if record.state != State::Held || record.holder.nonce == me.nonce {
        return false;
    }
    if record.expires <= now {
        tracing::info!(holder = %describe(&record.holder), expired = %record.expires, "taking over a lapsed host lease");
        return false;
    }
    match identity::liveness(&record.holder) {
        Liveness::Gone => {
            tracing::info!(holder = %describe(&record.holder), "taking over the host lease of a homestak on this machine that is gone");
            false
        }
        Liveness::Alive | Liveness::Unknown => true,
    }
}

/// One read-decide-write.
async fn try_take(place: &Place, me: &Holder, ttl: Duration) -> Result<Attempt, Error> {
    let read = place.read().await?;
    let now = Timestamp::now();
    if let Some(record) = &read.notes.record {
        if record.state == State::Held && record.holder.nonce == me.nonce {
            // An earlier write landed though its answer was lost.
            return Ok(Attempt::Taken(record.clone()));
        }
        if blocks(record, me, now) {
            return Ok(Attempt::Busy(record.clone()));
        }
    }
    if read.digest.is_none() {
        // No digest, no compare-and-swap: make the file non-empty first.
        place.write(read.notes.with(&seed()), None).await?;
        return Ok(Attempt::Raced);
    }
    let record = Record {
        state: State::Held,
        holder: me.clone(),
        acquired: now,
        renewed: now,
        expires: now.plus(ttl),
    };
    Ok(
        match place.write(read.notes.with(&record), read.digest).await? {
            true => Attempt::Taken(record),
            false => Attempt::Raced,
        },
    )
}

/// A pause that grows with `attempt` (100 ms … 3.2 s), jittered so two
/// racing homestaks fall out of step.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(5);
    Duration::from_millis(base + rand::random::<u64>() % (base / 2 + 1))
}

/// Signals that a held lease was lost.
#[derive(Clone, Debug)]
pub struct Lost(watch::Receiver<Option<String>>);

impl Lost {
    /// Resolves with why, once the lease is lost (never if it is not).
    pub async fn wait(&mut self) -> String {
        loop {
            if let Some(why) = self.0.borrow_and_update().clone() {
                return why;
            }
            if self.0.changed().await.is_err() {
                // The lease was given back or dropped: never lost.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Why it was lost, if it was.
    pub fn why(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

/// A held host lease. [`HostLease::release`] gives it back; dropping it
/// only stops renewing (the lease lapses, or another homestak on this
/// machine takes it at once).
pub struct HostLease {
    place: Place,
    me: Holder,
    ttl: Duration,
    acquired: Timestamp,
    lost: watch::Receiver<Option<String>>,
    renew: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HostLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLease")
            .field("host", &self.place.host)
            .field("node", &self.place.node)
            .field("holder", &describe(&self.me))
            .finish_non_exhaustive()
    }
}

impl HostLease {
    /// Takes the lease of PVE node `node` (site-config host `host`) through
    /// `api`. While another homestak holds it, `on_wait` hears who (once
    /// per holder) and this waits as `wait` says.
    pub async fn acquire(
        api: Arc<dyn Api>,
        host: &str,
        node: PveNode,
        policy: &Policy,
        state_dir: &Path,
        wait: Wait,
        on_wait: &(dyn Fn(&Held) + Send + Sync),
    ) -> Result<HostLease, Error> {
        let place = Place {
            api,
            host: host.to_string(),
            node,
        };
        let me = holder(policy, state_dir);
        let started = tokio::time::Instant::now();
        let deadline = match wait {
            Wait::No => None,
            Wait::For(d) => Some(started + d),
        };
        let mut told: Option<String> = None;
        let mut failures = 0;
        let mut races = 0;
        loop {
            let attempt = match try_take(&place, &me, policy.ttl).await {
                Ok(a) => a,
                Err(e) if e.transient() && failures < ATTEMPTS => {
                    failures += 1;
                    tracing::debug!(error = %homestak_base::error_chain(&e), "retrying the host lease");
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            failures = 0;
            match attempt {
                Attempt::Taken(record) => {
                    return Ok(HostLease::held(place, me, policy.ttl, record));
                }
                Attempt::Raced => {
                    races += 1;
                    if races > 4 * ATTEMPTS {
                        return Err(Error::Contended {
                            host: place.host.clone(),
                            node: place.node.clone(),
                        });
                    }
                    tokio::time::sleep(backoff(races.min(3))).await;
                }
                Attempt::Busy(record) => {
                    let held = place.held(&record);
                    let now = tokio::time::Instant::now();
                    let out_of_time = deadline.is_none_or(|d| now >= d);
                    if out_of_time {
                        return Err(Error::Held {
                            host: place.host.clone(),
                            node: place.node.clone(),
                            holder: held.holder(),
                            until: held.until(),
                            waited: deadline.map(|_| now - started),
                        });
                    }
                    if told.as_deref() != Some(record.holder.nonce.as_str()) {
                        tracing::info!(host = %place.host, holder = %held.holder(), until = %held.until(), "waiting for the host lease");
                        on_wait(&held);
                        told = Some(record.holder.nonce.clone());
                    }
                    let lapses = record.expires.since(Timestamp::now()) + Duration::from_millis(50);
                    let mut pause = POLL.min(lapses);
                    if let Some(d) = deadline {
                        pause = pause.min(d - now);
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    fn held(place: Place, me: Holder, ttl: Duration, record: Record) -> HostLease {
        identity::register(&me.nonce);
        tracing::info!(host = %place.host, node = %place.node, until = %record.expires, "took the host lease");
        let (tx, rx) = watch::channel(None);
        let renew = tokio::spawn(renew(place.clone(), me.clone(), ttl, record.expires, tx));
        HostLease {
            place,
            me,
            ttl,
            acquired: record.acquired,
            lost: rx,
            renew,
        }
    }

    /// Fires when the lease is lost.
    pub fn lost(&self) -> Lost {
        Lost(self.lost.clone())
    }

    /// Whether it was lost already.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// This holder, as the notes show it.
    pub fn holder(&self) -> &Holder {
        &self.me
    }

    /// When it was taken.
    pub fn acquired(&self) -> Timestamp {
        self.acquired
    }

    /// The TTL it is renewed with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Gives the lease back: the block says `free` (who held it last and
    /// when it was given back). A lease someone else took meanwhile is
    /// left alone.
    pub async fn release(self) -> Result<(), Error> {
        self.renew.abort();
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let step = async {
                let read = self.place.read().await?;
                let Some(record) = &read.notes.record else {
                    return Ok(true);
                };
                if record.state != State::Held || record.holder.nonce != self.me.nonce {
                    return Ok(true);
                }
                let now = Timestamp::now();
                let free = Record {
                    state: State::Free,
                    holder: self.me.clone(),
                    acquired: record.acquired,
                    renewed: now,
                    expires: now,
                };
                self.place.write(read.notes.with(&free), read.digest).await
            };
            match step.await {
                Ok(true) => break Ok(()),
                Ok(false) if tries < ATTEMPTS => {}
                Err(e) if e.transient() && tries < ATTEMPTS => {}
                Ok(false) => {
                    break Err(Error::Contended {
                        host: self.place.host.clone(),
                        node: self.place.node.clone(),
                    });
                }
                Err(e) => break Err(e),
            }
            tokio::time::sleep(backoff(tries)).await;
        };
        if result.is_ok() {
            tracing::info!(host = %self.place.host, node = %self.place.node, "gave the host lease back");
        }
        result
    }
}

impl Drop for HostLease {
    fn drop(&mut self) {
        self.renew.abort();
        identity::unregister(&self.me.nonce);
    }
}

/// Renews every third of the TTL. Transient errors are retried sooner; a
/// lease another homestak holds, or one that lapsed before it could be
/// renewed, is lost for good.
async fn renew(
    place: Place,
    me: Holder,
    ttl: Duration,
    mut expires: Timestamp,
    lost: watch::Sender<Option<String>>,
) {
    let period = ttl / 3;
    let mut pause = period;
    loop {
        tokio::time::sleep(pause).await;
        match renew_once(&place, &me, ttl).await {
            Ok(Ok(until)) => {
                expires = until;
                pause = period;
            }
            Ok(Err(why)) => {
                tracing::error!(host = %place.host, why = %why, "lost the host lease");
                let _ = lost.send(Some(why));
                return;
            }
            Err(e) => {
                let why = homestak_base::error_chain(&e);
                if Timestamp::now() >= expires {
                    tracing::error!(host = %place.host, error = %why, "the host lease lapsed before it could be renewed");
                    let _ = lost.send(Some(format!(
                        "it lapsed at {expires} before it could be renewed: {why}"
                    )));
                    return;
                }
                tracing::warn!(host = %place.host, error = %why, "cannot renew the host lease; retrying");
                pause = (period / 4).max(Duration::from_millis(200));
            }
        }
    }
}

/// One renewal: `Ok(Ok(expiry))` when renewed, `Ok(Err(why))` when it is
/// no longer ours.
async fn renew_once(
    place: &Place,
    me: &Holder,
    ttl: Duration,
) -> Result<Result<Timestamp, String>, Error> {
    // The `renewed` of a write whose answer was lost: found on a later
    // read, that write landed.
    let mut tried: Option<Timestamp> = None;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let read = place.read().await?;
        let record = match &read.notes.record {
            Some(r) if r.state == State::Held && r.holder.nonce == me.nonce => r.clone(),
            Some(r) if r.state == State::Held => {
                return Ok(Err(format!("{} holds it now", describe(&r.holder))));
            }
            _ => return Ok(Err("its block was removed or marked free".into())),
        };
        if tried == Some(record.renewed) {
            return Ok(Ok(record.expires));
        }
        let now = Timestamp::now();
        let renewed = Record {
            renewed: now,
            expires: now.plus(ttl),
            ..record
        };
        tried = Some(now);
        match place.write(read.notes.with(&renewed), read.digest).await {
            Ok(true) => return Ok(Ok(renewed.expires)),
            Ok(false) => {}
            Err(e) if e.transient() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(Error::Contended {
        host: place.host.clone(),
        node: place.node.clone(),
    }))
}

#[cfg(test)]
mod tests;
