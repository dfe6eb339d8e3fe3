//! Fault injection for `hrs demo --chaos SEED`: every link goes through a proxy that
//! delays and cuts connections, and roles are killed with SIGKILL and started again at
//! random moments. One seed drives all of it, so the schedule of faults can be replayed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use hrs_chaos::{Faults, Proxy};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::time::Instant;

use super::processes::Processes;

/// How hard each link misbehaves: a third of connections are cut part-way, and any may
/// wait before it is forwarded.
const LINK_FAULTS: Faults = Faults {
    cut_chance: 0.3,
    cut_after_max_bytes: 256 * 1024,
    max_delay: Duration::from_millis(150),
    max_lifetime: Duration::ZERO,
};
/// Kills per period; after that the hierarchy is left to recover on its own.
const KILLS_PER_PERIOD: u32 = 3;

/// What the faults did, as the demo's summary reports it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ChaosSummary {
    /// The seed that drove them.
    pub seed: u64,
    /// Roles killed with SIGKILL and started again, in order.
    pub kills: Vec<String>,
    /// Connections that went through the proxies.
    pub connections: u64,
    /// Connections the proxies cut part-way.
    pub cuts: u64,
}

/// The demo's source of faults.
pub(super) struct Chaos {
    seed: u64,
    rng: ChaCha8Rng,
    /// Each faulty link, with the role behind it.
    proxies: Vec<(String, Proxy)>,
    kills: Vec<String>,
    kills_left: u32,
    next_kill: Instant,
}

impl Chaos {
    pub(super) fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let next_kill = Instant::now() + pause(&mut rng);
        Self {
            seed,
            rng,
            proxies: Vec::new(),
            kills: Vec::new(),
            kills_left: 0,
            next_kill,
        }
    }

    /// Puts a faulty link in front of a role: returns the address its clients should use.
    pub(super) async fn link_to(&mut self, role: &str, addr: &str) -> anyhow::Result<String> {
        let target: SocketAddr = addr
            .parse()
            .with_context(|| format!("the {role} listens on {addr}, not an address"))?;
        let proxy = Proxy::start(target, LINK_FAULTS, self.rng.random())
            .await
            .with_context(|| format!("cannot start the faulty link to the {role}"))?;
        let addr = proxy.addr().to_string();
        tracing::info!(role, via = addr, "faulty link in front of the role");
        self.proxies.push((role.to_owned(), proxy));
        Ok(addr)
    }

    /// Allows another round of kills, for the next period.
    pub(super) fn arm(&mut self) {
        self.kills_left = KILLS_PER_PERIOD;
        self.next_kill = Instant::now() + pause(&mut self.rng);
    }

    /// True once this period's kills have all happened.
    pub(super) fn spent(&self) -> bool {
        self.kills_left == 0
    }

    /// Kills one role and starts it again, when the next kill is due.
    pub(super) async fn strike(&mut self, processes: &mut Processes) -> anyhow::Result<()> {
        if self.kills_left == 0 || Instant::now() < self.next_kill {
            return Ok(());
        }
        let victims = processes.victims();
        if victims.is_empty() {
            return Ok(());
        }
        let victim = victims[self.rng.random_range(0..victims.len())].clone();
        tracing::warn!(
            seed = self.seed,
            victim,
            "chaos: killing with SIGKILL and starting again"
        );
        if let Some(addr) = processes.kill_and_restart(&victim).await? {
            let addr: SocketAddr = addr.parse()?;
            for (_, proxy) in self.proxies.iter().filter(|(role, _)| *role == victim) {
                proxy.set_target(addr);
            }
        }
        self.kills.push(victim);
        self.kills_left -= 1;
        self.next_kill = Instant::now() + pause(&mut self.rng);
        Ok(())
    }

    pub(super) fn summary(&self) -> ChaosSummary {
        let total = |pick: fn(&hrs_chaos::Counters) -> u64| {
            self.proxies.iter().map(|(_, p)| pick(p.counters())).sum()
        };
        ChaosSummary {
            seed: self.seed,
            kills: self.kills.clone(),
            connections: total(|c| c.connections.load(Ordering::Relaxed)),
            cuts: total(|c| c.cut.load(Ordering::Relaxed)),
        }
    }
}

/// The wait before the next kill: short enough that kills land while a period is still
/// travelling, long enough for restarted roles to get some work done in between.
fn pause(rng: &mut ChaCha8Rng) -> Duration {
    Duration::from_millis(rng.random_range(50..500))
}
