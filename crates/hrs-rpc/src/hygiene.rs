//! What keeps a role's connections for callers that use them: at most
//! `max_connections_per_peer` from one address, and a connection closed when it makes no
//! call within `first_call_seconds` of opening (a TLS handshake, HTTP/2 preface or request
//! that never comes, or comes a byte at a time) or stays `idle_seconds` between calls. So
//! a flood of idle connections from one address never locks out another, and a connection
//! that does nothing does not hold a place for ever.
//!
//! The gate registers every connection it admits here; the refusal layer, which sees every
//! call begin and its response end, counts the calls on each; each connection checks its
//! deadlines as it is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How often a connection checks its deadlines.
const TICK: Duration = Duration::from_secs(1);

/// The deadlines and per-address cap of a role's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hygiene {
    /// Connections served at once from one address.
    pub max_per_peer: usize,
    /// Longest a connection may wait to make its first call.
    pub first_call: Duration,
    /// Longest a connection may stay open between calls.
    pub idle: Duration,
}

/// The calls of one open connection.
#[derive(Debug)]
struct Calls {
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// When the last call's response ended, or the connection opened.
    quiet_since: Mutex<Instant>,
}

impl Calls {
    fn quiet_since(&self) -> MutexGuard<'_, Instant> {
        // An instant cannot be left half-written by a panic elsewhere.
        self.quiet_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The open connections of a role: how many each address holds, and each one's calls.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<SocketAddr, Arc<Calls>>>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Calls>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn per_address(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection from `peer`, unless its address already holds `max`.
    pub(crate) fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        hygiene: Hygiene,
    ) -> Option<Registered> {
        {
            let mut per_address = self.per_address();
            let held = per_address.entry(peer.ip()).or_default();
            if *held >= hygiene.max_per_peer {
                return None;
            }
            *held += 1;
        }
        let calls = Arc::new(Calls {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            quiet_since: Mutex::new(Instant::now()),
        });
        self.open().insert(peer, Arc::clone(&calls));
        Some(Registered {
            connections: Arc::clone(self),
            peer,
            calls,
            hygiene,
            opened: Instant::now(),
            tick: Box::pin(tokio::time::sleep(TICK)),
            closed: false,
        })
    }

    /// Counts a call on the connection from `peer` until the guard is dropped (when its
    /// response's last byte went out, or it was abandoned).
    pub(crate) fn begin_call(&self, peer: SocketAddr) -> Option<CallGuard> {
        let calls = Arc::clone(self.open().get(&peer)?);
        calls.started.fetch_add(1, Ordering::Relaxed);
        calls.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(CallGuard(calls))
    }
}

/// A call in flight on a connection.
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<Calls>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        *self.0.quiet_since() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place among a role's connections, with its deadlines.
#[derive(Debug)]
pub(crate) struct Registered {
    connections: Arc<Connections>,
    peer: SocketAddr,
    calls: Arc<Calls>,
    hygiene: Hygiene,
    opened: Instant,
    tick: Pin<Box<Sleep>>,
    closed: bool,
}

impl Registered {
    /// True once the connection is past a deadline: it then reads as closed. Registers
    /// the waker, so a connection nobody writes to is still closed on time.
    pub(crate) fn overdue(&mut self, cx: &mut Context<'_>, role: &'static str) -> bool {
        while !self.closed && self.tick.as_mut().poll(cx).is_ready() {
            if let Some(why) = self.past_deadline() {
                tracing::info!(role, peer = %self.peer, "connection closed: {why}");
                self.closed = true;
                break;
            }
            self.tick.as_mut().reset(Instant::now() + TICK);
        }
        self.closed
    }

    fn past_deadline(&self) -> Option<String> {
        let calls = &self.calls;
        if calls.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if calls.started.load(Ordering::Relaxed) == 0 {
            return (self.opened.elapsed() >= self.hygiene.first_call).then(|| {
                format!(
                    "no call within {} s of connecting (limits.first_call_seconds)",
                    self.hygiene.first_call.as_secs()
                )
            });
        }
        (calls.quiet_since().elapsed() >= self.hygiene.idle).then(|| {
            format!(
                "idle for {} s between calls (limits.idle_seconds)",
                self.hygiene.idle.as_secs()
            )
        })
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open().remove(&self.peer);
        let mut per_address = self.connections.per_address();
        if let Some(held) = per_address.get_mut(&self.peer.ip()) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                per_address.remove(&self.peer.ip());
            }
        }
    }
}

/// A response body that holds its call's place until its last byte went out, so a
/// download that streams for long is not taken for an idle connection.
#[derive(Debug)]
pub struct Tracked<B> {
    body: Pin<Box<B>>,
    _call: Option<CallGuard>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, call: Option<CallGuard>) -> Self {
        Self {
            body: Box::pin(body),
            _call: call,
        }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
