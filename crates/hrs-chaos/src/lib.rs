//! Fault injection: a TCP proxy between two HRS roles that, driven by a seed, delays
//! connections, cuts them after a number of bytes, or refuses them while "down".
//!
//! Everything random comes from one seeded generator, so a failing run can be replayed
//! with the same seed. The proxy listens on loopback only.
//!
//! [`ConnectProxy`] is the other kind: an HTTP proxy that opens tunnels with `CONNECT`,
//! for tests of the roles that reach the intake through one.

pub mod connect;

pub use connect::{ConnectCounters, ConnectProxy};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// How often and how hard the proxy misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Chance that a new connection has its bytes cut off part-way.
    pub cut_chance: f64,
    /// Most bytes a cut connection carries (in both directions together) before it drops.
    pub cut_after_max_bytes: u64,
    /// Most extra delay added before a connection is forwarded.
    pub max_delay: Duration,
    /// When not zero, every connection is cut after living between half this and this
    /// long, as a WAN link that drops every few seconds.
    pub max_lifetime: Duration,
}

impl Faults {
    /// No faults: the proxy only forwards.
    pub fn none() -> Self {
        Self {
            cut_chance: 0.0,
            cut_after_max_bytes: 0,
            max_delay: Duration::ZERO,
            max_lifetime: Duration::ZERO,
        }
    }
}

/// What the proxy has done, for tests and logs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections cut part-way.
    pub cut: AtomicU64,
    /// Connections refused while down.
    pub refused: AtomicU64,
}

struct Shared {
    target: std::sync::Mutex<SocketAddr>,
    faults: Faults,
    rng: Mutex<ChaCha8Rng>,
    down: AtomicBool,
    counters: Counters,
}

/// A running fault-injecting proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (port 0) that forwards to `target` with `faults`
    /// drawn from `seed`.
    pub async fn start(target: SocketAddr, faults: Faults, seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target: std::sync::Mutex::new(target),
            faults,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            down: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepting
                    .counters
                    .connections
                    .fetch_add(1, Ordering::Relaxed);
                if accepting.down.load(Ordering::Relaxed) {
                    accepting.counters.refused.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let plan = accepting.plan().await;
                tokio::spawn(forward(Arc::clone(&accepting), client, plan));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The address clients connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the link down (new connections are dropped at once) or brings it back.
    /// Connections already open are not touched.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Forwards new connections to `target` from now on, as when the role behind the
    /// proxy was started again on another port.
    pub fn set_target(&self, target: SocketAddr) {
        *self
            .shared
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// What the proxy has done so far.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What happens to one connection, decided when it is accepted.
#[derive(Debug, Clone, Copy)]
struct Plan {
    delay: Duration,
    cut_after: Option<u64>,
    lifetime: Option<Duration>,
}

impl Shared {
    async fn plan(&self) -> Plan {
        let mut rng = self.rng.lock().await;
        let max_delay = u64::try_from(self.faults.max_delay.as_millis()).unwrap_or(u64::MAX);
        let delay = Duration::from_millis(if max_delay == 0 {
            0
        } else {
            rng.random_range(0..=max_delay)
        });
        let cut_after = (self.faults.cut_chance > 0.0
            && rng.random_bool(self.faults.cut_chance.min(1.0)))
        .then(|| rng.random_range(0..=self.faults.cut_after_max_bytes));
        let max_life = u64::try_from(self.faults.max_lifetime.as_millis()).unwrap_or(u64::MAX);
        let lifetime = (max_life > 0)
            .then(|| Duration::from_millis(rng.random_range(max_life / 2..=max_life)));
        Plan {
            delay,
            cut_after,
            lifetime,
        }
    }
}

/// Copies bytes both ways until either side closes, or until the planned cut.
async fn forward(shared: Arc<Shared>, client: TcpStream, plan: Plan) {
    tokio::time::sleep(plan.delay).await;
    let target = *shared
        .target
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let budget = Arc::new(Budget {
        bytes: AtomicU64::new(plan.cut_after.unwrap_or(u64::MAX)),
        spent: AtomicBool::new(false),
        shared: Arc::clone(&shared),
    });
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pipe(client_read, server_write, Arc::clone(&budget)));
    let down = tokio::spawn(pipe(server_read, client_write, Arc::clone(&budget)));
    if let Some(lifetime) = plan.lifetime {
        let (up_abort, down_abort) = (up.abort_handle(), down.abort_handle());
        let both = async { (up.await, down.await) };
        if tokio::time::timeout(lifetime, both).await.is_err() {
            // Counted first, so whoever sees the cut also sees it counted. Aborting the
            // pipes drops both sockets: the link is cut mid-stream.
            shared.counters.cut.fetch_add(1, Ordering::Relaxed);
            up_abort.abort();
            down_abort.abort();
            tracing::debug!(?lifetime, "connection cut at the end of its lifetime");
        }
        return;
    }
    let _ = (up.await, down.await);
}

/// The bytes a connection may still carry, shared by its two directions.
struct Budget {
    bytes: AtomicU64,
    /// Set by the direction that spends it, so the cut is counted once.
    spent: AtomicBool,
    shared: Arc<Shared>,
}

impl Budget {
    /// Counts the cut, once per connection, before the sockets are dropped, so whoever
    /// sees the cut also sees it counted.
    fn cut(&self) {
        if !self.spent.swap(true, Ordering::Relaxed) {
            self.shared.counters.cut.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("connection cut");
        }
    }
}

/// Copies from `from` to `to` while the shared byte budget lasts; when it runs out, the
/// cut is counted and both halves dropped.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    budget: Arc<Budget>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        let left = budget.bytes.load(Ordering::Relaxed);
        let allowed = usize::try_from(left).unwrap_or(usize::MAX).min(n);
        budget.bytes.fetch_sub(allowed as u64, Ordering::Relaxed);
        if allowed > 0 && to.write_all(&buffer[..allowed]).await.is_err() {
            return;
        }
        if allowed < n {
            // The budget is spent: drop both halves, as a broken link would.
            budget.cut();
            return;
        }
    }
}

/// What this crate's tests share.
#[cfg(test)]
mod test_support {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;

    /// An echo server on loopback, returning its address.
    pub(crate) async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::echo;

    /// Sends `bytes` through `addr` and returns what came back before the connection ended.
    async fn round_trip(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return Vec::new();
        };
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let mut back = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back)).await;
        back
    }

    #[tokio::test]
    async fn without_faults_bytes_pass_unchanged() {
        let proxy = Proxy::start(echo().await, Faults::none(), 1)
            .await
            .expect("starts");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(proxy.addr(), &data).await, data);
        assert_eq!(proxy.counters().cut.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_cut_connection_carries_at_most_its_budget() {
        let faults = Faults {
            cut_chance: 1.0,
            cut_after_max_bytes: 1000,
            max_delay: Duration::from_millis(5),
            max_lifetime: Duration::ZERO,
        };
        let proxy = Proxy::start(echo().await, faults, 7).await.expect("starts");
        let data = vec![42u8; 50_000];
        let back = round_trip(proxy.addr(), &data).await;
        assert!(back.len() <= 1000, "{} bytes passed", back.len());
        assert_eq!(proxy.counters().cut.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_connection_is_cut_at_the_end_of_its_lifetime() {
        let faults = Faults {
            max_lifetime: Duration::from_millis(100),
            ..Faults::none()
        };
        let proxy = Proxy::start(echo().await, faults, 5).await.expect("starts");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        // An echo conversation that would go on for ever ends when the link is cut.
        let talk = async {
            let mut buffer = [0u8; 4];
            loop {
                if stream.write_all(b"ping").await.is_err() {
                    return;
                }
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), talk)
            .await
            .expect("the link is cut well within the bound");
        assert_eq!(proxy.counters().cut.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_down_link_refuses_until_it_is_back() {
        let proxy = Proxy::start(echo().await, Faults::none(), 3)
            .await
            .expect("starts");
        proxy.set_down(true);
        assert!(round_trip(proxy.addr(), b"hello").await.is_empty());
        assert_eq!(proxy.counters().refused.load(Ordering::Relaxed), 1);
        proxy.set_down(false);
        assert_eq!(round_trip(proxy.addr(), b"hello").await, b"hello");
    }

    #[tokio::test]
    async fn the_same_seed_makes_the_same_plans() {
        let faults = Faults {
            cut_chance: 0.5,
            cut_after_max_bytes: 10_000,
            max_delay: Duration::from_millis(100),
            max_lifetime: Duration::ZERO,
        };
        let plans = |seed| async move {
            let proxy = Proxy::start("127.0.0.1:9".parse().expect("addr"), faults, seed)
                .await
                .expect("starts");
            let mut out = Vec::new();
            for _ in 0..20 {
                let plan = proxy.shared.plan().await;
                out.push((plan.delay, plan.cut_after));
            }
            out
        };
        assert_eq!(plans(11).await, plans(11).await);
        assert_ne!(plans(11).await, plans(12).await);
    }
}
