//! The HTTPS front's defences against clients that hold connections
//! without using them: caps checked at accept, before TLS, and timeouts on
//! every phase of a connection.
//!
//! [`Acceptor`] runs first on each accepted TCP stream (axum-server's TLS
//! acceptor wraps it, so TLS runs over what it returns):
//! - the **caps**: at most [`Limits::max_connections`] connections in all
//!   (lowered to leave file descriptors for the reconciler, see
//!   [`super::fds`]) and [`Limits::max_connections_per_address`] from one
//!   client address ([`client_key`]); a connection over either is closed
//!   at once, before any TLS work, and counted in
//!   `homestak_connections_refused_total`;
//! - the **timeouts**, kept by [`Guarded`], the stream under TLS, from what
//!   [`Arrival`] (around the connection's service) tells it:
//!   - `first_request`: the TLS handshake and the first request's head must
//!     be complete within [`Limits::first_request_timeout`] of accept;
//!   - `header`: a later request's head must be complete within
//!     [`Limits::header_timeout`] of its first byte (slowloris);
//!   - `idle`: a kept-alive connection with no request in flight is closed
//!     after [`Limits::idle_timeout`] without a byte either way;
//!   - `write`: a write the client does not read for
//!     [`Limits::idle_timeout`] closes the connection.
//!
//!   While a request is being handled no read deadline applies: its body is
//!   read by the API, after auth, within its own limit (see
//!   [`super::api::Unread`]). Each timeout counts in
//!   `homestak_connections_timed_out_total{phase}`.
//!
//! A connection's place in its address's cap is a [`Place`], which every
//! request carries (an extension): the tarpit ([`super::tarpit`]) keeps a
//! held guess's place taken until the hold ends, even once the client
//! has hung up, so hanging up does not buy a guesser a new connection.
//! A kept place is not a file descriptor: the total cap counts only open
//! connections.
//!
//! hyper's own `header_read_timeout` is off: it runs from the moment hyper
//! waits for a head, so it would also close kept-alive connections after
//! the header timeout and leave no separate idle timeout.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::metrics::Metrics;

/// Connection caps, timeouts and the request body cap (`homestak serve`
/// flags; README "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to a complete first request head, TLS handshake included.
    pub first_request_timeout: Duration,
    /// From the first byte of a later request head to its end.
    pub header_timeout: Duration,
    /// A kept-alive connection with nothing in flight, or a stalled write.
    pub idle_timeout: Duration,
    /// Connections held at once, at most (before the fd headroom lowers it).
    pub max_connections: usize,
    /// Connections from one client address ([`client_key`]), at most.
    pub max_connections_per_address: usize,
    /// Largest request body, in bytes; it must also arrive within
    /// `idle_timeout`.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            first_request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_address: 64,
            max_body: 4 * 1024 * 1024,
        }
    }
}

/// The address caps and the auth throttle count by: an IPv4 address (also
/// when mapped into IPv6), or an IPv6 address's /64, since one host
/// usually has a whole /64 to pick from.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection table: counts per client address and in all.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    cap: usize,
    table: Mutex<Table>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Gate {
    /// `cap` is the total cap in force ([`super::fds::connection_cap`]).
    pub fn new(limits: Limits, cap: usize, metrics: Arc<Metrics>) -> Arc<Gate> {
        metrics
            .connections_limit
            .store(cap as u64, Ordering::Relaxed);
        Arc::new(Gate {
            limits,
            cap,
            table: Mutex::new(Table::default()),
            metrics,
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        lock(&self.table).total
    }

    /// Takes a place for a connection from `ip`, or says which cap is full.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, &'static str> {
        let key = client_key(ip);
        let mut table = lock(&self.table);
        if table.total >= self.cap {
            return Err("max_connections");
        }
        let from = table.per_address.entry(key).or_insert(0);
        if *from >= self.limits.max_connections_per_address {
            return Err("max_per_address");
        }
        *from += 1;
        table.total += 1;
        self.metrics
            .connections_open
            .store(table.total as u64, Ordering::Relaxed);
        Ok(Permit {
            gate: Arc::clone(self),
            place: Place {
                _shared: Arc::new(AddressPlace {
                    gate: Arc::clone(self),
                    key,
                }),
            },
        })
    }
}

/// An open connection's place in the [`Gate`]'s total, given back when it
/// closes; its [`Place`] in the address's count may outlive it.
#[derive(Debug)]
struct Permit {
    gate: Arc<Gate>,
    place: Place,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut table = lock(&self.gate.table);
        table.total = table.total.saturating_sub(1);
        self.gate
            .metrics
            .connections_open
            .store(table.total as u64, Ordering::Relaxed);
    }
}

/// A connection's place in its address's cap: given back when the
/// connection has closed and every clone is gone (module docs).
#[derive(Debug, Clone)]
pub struct Place {
    /// Held for its `Drop`, which gives the place back.
    _shared: Arc<AddressPlace>,
}

#[derive(Debug)]
struct AddressPlace {
    gate: Arc<Gate>,
    key: IpAddr,
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut table = lock(&self.gate.table);
        if let Some(n) = table.per_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.per_address.remove(&self.key);
            }
        }
    }
}

/// Where a connection is, as its service sees it.
#[derive(Debug)]
struct Phase {
    /// The first request reached the service.
    started: bool,
    /// Requests being handled.
    in_flight: usize,
    /// When the last answer was ready.
    idle_since: Instant,
    /// The first byte of the next request head, read while idle.
    head_since: Option<Instant>,
}

type Shared = Arc<Mutex<Phase>>;

/// The first step of every accepted connection (module docs).
#[derive(Debug, Clone)]
pub struct Acceptor {
    gate: Arc<Gate>,
}

impl Acceptor {
    pub fn new(gate: Arc<Gate>) -> Acceptor {
        Acceptor { gate }
    }
}

impl<S> Accept<TcpStream, S> for Acceptor {
    type Stream = Guarded<TcpStream>;
    type Service = Arrival<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.guard(stream).map(|(stream, phase)| {
            let place = stream.permit.place.clone();
            (
                stream,
                Arrival {
                    inner: service,
                    phase,
                    place,
                },
            )
        }))
    }
}

impl Acceptor {
    /// Admits `stream` under the caps; a refused one is dropped (closed)
    /// here, before TLS.
    fn guard(&self, stream: TcpStream) -> io::Result<(Guarded<TcpStream>, Shared)> {
        let ip = stream.peer_addr()?.ip();
        let permit = match self.gate.admit(ip) {
            Ok(permit) => permit,
            Err(reason) => {
                self.gate.metrics.connections_refused.inc(&[reason]);
                tracing::debug!(peer = %ip, reason, "connection refused");
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("connection cap reached ({reason})"),
                ));
            }
        };
        // Answers are written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let phase = Arc::new(Mutex::new(Phase {
            started: false,
            in_flight: 0,
            idle_since: now,
            head_since: None,
        }));
        let limits = self.gate.limits;
        let guarded = Guarded {
            inner: stream,
            phase: Arc::clone(&phase),
            limits,
            accepted: now,
            last_io: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + limits.first_request_timeout)),
            write_timer: None,
            write_stalled: None,
            timed_out: false,
            metrics: Arc::clone(&self.gate.metrics),
            permit,
        };
        Ok((guarded, phase))
    }
}

/// A connection's stream under TLS: holds its place in the [`Gate`] and
/// fails a read or write whose deadline passed (module docs).
pub struct Guarded<S> {
    inner: S,
    phase: Shared,
    limits: Limits,
    accepted: Instant,
    /// The last byte read or written.
    last_io: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Since when writes have been pending.
    write_stalled: Option<Instant>,
    timed_out: bool,
    metrics: Arc<Metrics>,
    permit: Permit,
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl<S> Guarded<S> {
    /// The deadline of a pending read, and its phase; `None` while a
    /// request is being handled.
    fn read_deadline(&self) -> Option<(Instant, &'static str)> {
        let phase = lock(&self.phase);
        if !phase.started {
            return Some((
                self.accepted + self.limits.first_request_timeout,
                "first_request",
            ));
        }
        if phase.in_flight > 0 {
            return None;
        }
        if let Some(head) = phase.head_since {
            return Some((head + self.limits.header_timeout, "header"));
        }
        Some((
            phase.idle_since.max(self.last_io) + self.limits.idle_timeout,
            "idle",
        ))
    }

    fn read_some(&mut self) {
        let now = Instant::now();
        self.last_io = now;
        let mut phase = lock(&self.phase);
        if phase.started && phase.in_flight == 0 && phase.head_since.is_none() {
            phase.head_since = Some(now);
        }
    }

    fn expire(&mut self, phase: &'static str) -> io::Error {
        if !self.timed_out {
            self.timed_out = true;
            self.metrics.connections_timed_out.inc(&[phase]);
            tracing::debug!(phase, "connection timed out");
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection closed: {phase} timeout"),
        )
    }
}

/// Polls `timer` to `deadline`: ready when it passed.
fn due(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.read_deadline() {
                Some((deadline, phase)) if due(&mut this.read_timer, deadline, cx) => {
                    Poll::Ready(Err(this.expire(phase)))
                }
                _ => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.write_stalled = None;
                if n > 0 {
                    this.last_io = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                let since = *this.write_stalled.get_or_insert_with(Instant::now);
                let deadline = since + this.limits.idle_timeout;
                let timer = this
                    .write_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if due(timer, deadline, cx) {
                    Poll::Ready(Err(this.expire("write")))
                } else {
                    Poll::Pending
                }
            }
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's service: tells its [`Guarded`] stream when a request
/// arrives and when its answer is ready, and gives each request the
/// connection's [`Place`].
#[derive(Debug, Clone)]
pub struct Arrival<S> {
    inner: S,
    phase: Shared,
    place: Place,
}

/// Marks a request in flight until dropped.
struct Busy(Shared);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = lock(&self.0);
        phase.in_flight = phase.in_flight.saturating_sub(1);
        phase.idle_since = Instant::now();
    }
}

impl<S, B> Service<Request<B>> for Arrival<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.place.clone());
        {
            let mut phase = lock(&self.phase);
            phase.started = true;
            phase.in_flight += 1;
            phase.head_since = None;
        }
        let busy = Busy(Arc::clone(&self.phase));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(busy);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_group_mapped_v4_and_v6_prefixes() {
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(client_key(v4), v4);
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
    }

    #[test]
    fn caps_count_per_address_and_in_all_and_free_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let limits = Limits {
            max_connections_per_address: 2,
            ..Limits::default()
        };
        let gate = Gate::new(limits, 3, Arc::clone(&metrics));
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let a1 = gate.admit(ip(1)).unwrap();
        let _a2 = gate.admit(ip(1)).unwrap();
        assert_eq!(gate.admit(ip(1)).unwrap_err(), "max_per_address");
        let _b1 = gate.admit(ip(2)).unwrap();
        assert_eq!(gate.admit(ip(3)).unwrap_err(), "max_connections");
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(
            gate.admit(ip(3)).is_ok(),
            "a closed connection frees its place"
        );
    }

    /// A place kept past its connection (a tarpit hold) still counts for
    /// its address, not in the total, and frees when the last clone goes.
    #[test]
    fn a_kept_place_counts_for_its_address_until_released() {
        let metrics = Arc::new(Metrics::default());
        let limits = Limits {
            max_connections_per_address: 1,
            ..Limits::default()
        };
        let gate = Gate::new(limits, 10, Arc::clone(&metrics));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let permit = gate.admit(ip).unwrap();
        let kept = permit.place.clone();
        drop(permit);
        assert_eq!(gate.open(), 0, "the connection itself is closed");
        assert_eq!(gate.admit(ip).unwrap_err(), "max_per_address");
        drop(kept);
        assert!(gate.admit(ip).is_ok(), "the released place is free again");
    }
}
