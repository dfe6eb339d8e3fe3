//! Fault injection: a TCP proxy between two HRS roles that, driven by a seed, delays
//! connections, cuts them after a number of bytes, or refuses them while "down".
//!
//! Everything random comes from one seeded generator, so a failing run can be replayed
//! with the same seed. The proxy listens on loopback only.

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
}

impl Faults {
    /// No faults: the proxy only forwards.
    pub fn none() -> Self {
        Self {
            cut_chance: 0.0,
            cut_after_max_bytes: 0,
            max_delay: Duration::ZERO,
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
        Plan { delay, cut_after }
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
    let budget = Arc::new(AtomicU64::new(plan.cut_after.unwrap_or(u64::MAX)));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pipe(client_read, server_write, Arc::clone(&budget)));
    let down = tokio::spawn(pipe(server_read, client_write, Arc::clone(&budget)));
    let (up, down) = (up.await, down.await);
    if plan.cut_after.is_some() && (matches!(up, Ok(true)) || matches!(down, Ok(true))) {
        shared.counters.cut.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(cut_after = ?plan.cut_after, "connection cut");
    }
}

/// Copies from `from` to `to` while the shared byte budget lasts; returns whether the
/// budget ran out (the connection was cut rather than closed).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    budget: Arc<AtomicU64>,
) -> bool {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return false;
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return false;
        }
        let left = budget.load(Ordering::Relaxed);
        let allowed = usize::try_from(left).unwrap_or(usize::MAX).min(n);
        budget.fetch_sub(allowed as u64, Ordering::Relaxed);
        if allowed > 0 && to.write_all(&buffer[..allowed]).await.is_err() {
            return false;
        }
        if allowed < n {
            // The budget is spent: drop both halves, as a broken link would.
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback, returning its address.
    async fn echo() -> SocketAddr {
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
        };
        let proxy = Proxy::start(echo().await, faults, 7).await.expect("starts");
        let data = vec![42u8; 50_000];
        let back = round_trip(proxy.addr(), &data).await;
        assert!(back.len() <= 1000, "{} bytes passed", back.len());
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
