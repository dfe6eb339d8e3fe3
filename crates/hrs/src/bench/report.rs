//! What `hrs bench` reports: every phase's bytes, time and rate, each HRS figure as a ratio
//! to the storage limit (a) and the network limit (b) with its target, each role's peak
//! memory, CPU time and disk writes per phase, and the machine it ran on.

use std::time::Duration;

use serde::Serialize;

use crate::usage::Reading;

/// Bytes in the bench's megabyte: rates and sizes are in 10^6 bytes, as disks and links
/// are rated.
pub(crate) const MB: u64 = 1_000_000;

/// Peak memory each role may reach, in MiB (the target, read as `VmHWM`).
const PEAK_TARGET_MIB: f64 = 256.0;

/// The whole report; `--json` prints it as it is.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The command that made it, with every setting spelt out.
    pub command: String,
    /// What it ran on.
    pub machine: Machine,
    /// The period every run covers.
    pub period: String,
    /// The sizes of the runs the merged period is made of, in bytes.
    pub run_bytes: Vec<u64>,
    /// The sizes of the crowd's runs, in bytes.
    pub crowd_run_bytes: Vec<u64>,
    /// (a) to (e), in order.
    pub phases: Vec<Phase>,
    /// Each role's use of the machine in each phase it took part in.
    pub roles: Vec<RoleUse>,
    /// Where the bench's files are, when they are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// The machine, as far as a reader of the figures needs it.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    /// Cores this process may run on.
    pub cores: usize,
    /// Memory, in GiB.
    pub memory_gib: f64,
    /// The CPU's model name.
    pub cpu: String,
    /// The Linux kernel's release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine this runs on.
    pub(crate) fn this() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
                .unwrap_or_default()
        };
        let memory_kib: f64 = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: round(memory_kib / (1024.0 * 1024.0), 1),
            cpu: field(&read("/proc/cpuinfo"), "model name"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

/// One phase's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Phase {
    /// Its letter, as the issue names it.
    pub id: &'static str,
    /// What it measures.
    pub name: String,
    /// Bytes it carried: the same bytes for (a) to (d).
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// Its rate, in MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Its rate over the storage limit's.
    pub ratio_to_a: f64,
    /// Its rate over the network limit's.
    pub ratio_to_b: f64,
    /// The rate it should reach, for the phases with a target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// (c): each site's own time, in the order they sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub site_seconds: Vec<f64>,
    /// (d): the size of the merged period the intake stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_bytes: Option<u64>,
}

/// A phase's target: at least `at_least` times the rate of phase `of`.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    /// The phase it is read against.
    pub of: &'static str,
    /// The least ratio that meets it.
    pub at_least: f64,
    /// The ratio reached.
    pub ratio: f64,
    /// Whether it was met.
    pub met: bool,
}

/// A role's use of the machine in one phase.
#[derive(Debug, Serialize)]
pub(crate) struct RoleUse {
    /// The role.
    pub role: &'static str,
    /// The phase.
    pub phase: &'static str,
    /// Its processes (one per site for agents; their peaks' largest, their times' sum).
    pub processes: usize,
    /// Peak resident memory in the phase, in MiB.
    pub peak_rss_mib: f64,
    /// CPU time in the phase, in seconds.
    pub cpu_seconds: f64,
    /// Bytes written to storage in the phase, in MB.
    pub written_mb: f64,
    /// The peak it may reach, in MiB.
    pub target_mib: f64,
    /// Whether its peak stayed within the target.
    pub met: bool,
}

impl RoleUse {
    /// A role's use from its processes' readings over the phase.
    pub(crate) fn of(role: &'static str, phase: &'static str, readings: &[Reading]) -> Self {
        let peak_kib = readings.iter().map(|r| r.peak_kib).max().unwrap_or(0);
        let peak_rss_mib = peak_kib as f64 / 1024.0;
        Self {
            role,
            phase,
            processes: readings.len(),
            peak_rss_mib: round(peak_rss_mib, 1),
            cpu_seconds: round(readings.iter().map(|r| r.cpu_seconds).sum(), 2),
            written_mb: round(
                readings.iter().map(|r| r.written_bytes).sum::<u64>() as f64 / MB as f64,
                1,
            ),
            target_mib: PEAK_TARGET_MIB,
            met: peak_rss_mib <= PEAK_TARGET_MIB,
        }
    }
}

/// A phase's bytes and time, before it is read against the limits.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    /// Bytes carried.
    pub bytes: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.bytes as f64 / MB as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Builds the phases' figures: each rate over (a)'s and (b)'s, and the targets of (c), (d)
/// (half the storage limit) and (e) (four fifths of one site's rate in (c)).
pub(crate) fn phases(
    names: [String; 5],
    measured: [Measured; 5],
    site_seconds: Vec<f64>,
    period_bytes: u64,
) -> Vec<Phase> {
    let rates = measured.each_ref().map(Measured::rate);
    let targets: [Option<(&'static str, usize, f64)>; 5] = [
        None,
        None,
        Some(("a", 0, 0.5)),
        Some(("a", 0, 0.5)),
        Some(("c", 2, 0.8)),
    ];
    let mut site_seconds = Some(site_seconds);
    ["a", "b", "c", "d", "e"]
        .into_iter()
        .zip(names)
        .zip(measured)
        .zip(targets)
        .enumerate()
        .map(|(n, (((id, name), measured), target))| {
            let rate = rates[n];
            Phase {
                id,
                name,
                bytes: measured.bytes,
                seconds: round(measured.elapsed.as_secs_f64(), 6),
                mb_per_s: round(rate, 2),
                ratio_to_a: rate / rates[0],
                ratio_to_b: rate / rates[1],
                target: target.map(|(of, against, at_least)| {
                    let ratio = rate / rates[against];
                    Target {
                        of,
                        at_least,
                        ratio,
                        met: ratio >= at_least,
                    }
                }),
                site_seconds: if id == "c" {
                    site_seconds.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                period_bytes: (id == "d").then_some(period_bytes),
            }
        })
        .collect()
}

/// Rounds to `places` decimals: figures no finer than they were measured.
pub(crate) fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// Prints the report as tables.
pub(crate) fn print(report: &Report) {
    let m = &report.machine;
    println!("{}", report.command);
    println!(
        "machine: {} cores, {}, {} GiB memory, Linux {}",
        m.cores, m.cpu, m.memory_gib, m.kernel
    );
    println!(
        "period {}: {} runs of {}; crowd: {} runs of {}; MB = 10^6 bytes",
        report.period,
        report.run_bytes.len(),
        sizes(&report.run_bytes),
        report.crowd_run_bytes.len(),
        sizes(&report.crowd_run_bytes),
    );
    println!();
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>6} {:>6}  {:<12} met",
        "phase", "MB", "s", "MB/s", "×(a)", "×(b)", "target"
    );
    for phase in &report.phases {
        let (target, met) = match &phase.target {
            Some(t) => (
                format!("≥ {} × ({})", t.at_least, t.of),
                format!(
                    "{} ({:.2} × ({}))",
                    if t.met { "yes" } else { "no" },
                    t.ratio,
                    t.of
                ),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "{:<42} {:>8.1} {:>8.2} {:>8.1} {:>6.2} {:>6.2}  {:<12} {}",
            format!("({}) {}", phase.id, phase.name),
            phase.bytes as f64 / MB as f64,
            phase.seconds,
            phase.mb_per_s,
            phase.ratio_to_a,
            phase.ratio_to_b,
            target,
            met
        );
    }
    if let Some(bytes) = report.phases.iter().find_map(|p| p.period_bytes) {
        println!(
            "(d) the intake stored the merged period as {:.1} MB",
            bytes as f64 / MB as f64
        );
    }
    println!();
    println!(
        "{:<18} {:<6} {:>9} {:>13} {:>8} {:>11}  {:<11} met",
        "role", "phase", "processes", "peak RSS MiB", "CPU s", "written MB", "target"
    );
    for role in &report.roles {
        println!(
            "{:<18} {:<6} {:>9} {:>13.1} {:>8.2} {:>11.1}  {:<11} {}",
            role.role,
            format!("({})", role.phase),
            role.processes,
            role.peak_rss_mib,
            role.cpu_seconds,
            role.written_mb,
            format!("≤ {} MiB", role.target_mib),
            if role.met { "yes" } else { "no" }
        );
    }
    if let Some(dir) = &report.dir {
        println!();
        println!("folder: {dir}");
    }
}

/// Sizes of runs as the table shows them: one figure when they are all alike.
fn sizes(bytes: &[u64]) -> String {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / MB as f64);
    match (bytes.iter().min(), bytes.iter().max()) {
        (Some(&low), Some(&high)) if mb(low) == mb(high) => mb(low),
        (Some(&low), Some(&high)) => format!("{} to {}", mb(low), mb(high)),
        _ => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(bytes: u64, seconds: u64) -> Measured {
        Measured {
            bytes,
            elapsed: Duration::from_secs(seconds),
        }
    }

    #[test]
    fn every_figure_is_read_against_both_limits_and_its_target() {
        let names = ["a", "b", "c", "d", "e"].map(str::to_owned);
        let phases = phases(
            names,
            [
                measured(100 * MB, 1),
                measured(100 * MB, 2),
                measured(100 * MB, 4),
                measured(100 * MB, 2),
                measured(200 * MB, 10),
            ],
            vec![2.0, 2.0],
            99 * MB,
        );
        let ratios: Vec<(f64, f64)> = phases
            .iter()
            .map(|p| (p.ratio_to_a, p.ratio_to_b))
            .collect();
        assert_eq!(
            ratios,
            [(1.0, 2.0), (0.5, 1.0), (0.25, 0.5), (0.5, 1.0), (0.2, 0.4)]
        );
        let met: Vec<Option<bool>> = phases
            .iter()
            .map(|p| p.target.as_ref().map(|t| t.met))
            .collect();
        // (e) runs at 20 MB/s against one site's 25 MB/s in (c): 0.8, just met.
        assert_eq!(met, [None, None, Some(false), Some(true), Some(true)]);
        assert_eq!(phases[2].site_seconds, [2.0, 2.0]);
        assert_eq!(phases[3].period_bytes, Some(99 * MB));
    }

    #[test]
    fn a_role_counts_its_largest_peak_and_all_its_work() {
        let readings = [
            Reading {
                peak_kib: 100 * 1024,
                cpu_seconds: 1.0,
                written_bytes: 3 * MB,
            },
            Reading {
                peak_kib: 300 * 1024,
                cpu_seconds: 0.5,
                written_bytes: MB,
            },
        ];
        let agents = RoleUse::of("agent", "e", &readings);
        assert_eq!(agents.processes, 2);
        assert_eq!(agents.peak_rss_mib, 300.0);
        assert_eq!(agents.cpu_seconds, 1.5);
        assert_eq!(agents.written_mb, 4.0);
        assert!(!agents.met);
    }

    #[test]
    fn run_sizes_read_as_one_figure_when_alike() {
        assert_eq!(sizes(&[248 * MB, 248 * MB + 10]), "248.0 MB");
        assert_eq!(sizes(&[2 * MB, 3 * MB]), "2.0 MB to 3.0 MB");
    }
}
