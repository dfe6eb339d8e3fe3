//! What Linux knows of a role's process: its peak resident memory, the CPU time it used and
//! the bytes it wrote to storage, read from `/proc`, so `hrs stress` and `hrs bench` measure
//! each role as the process it runs as.

/// The unit of the CPU times in `/proc/PID/stat` (`USER_HZ`), which Linux fixes at 100 for
/// user space whatever the kernel's own tick.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Reading {
    /// Peak resident memory since the process started or its peak was last reset, in KiB
    /// (`VmHWM`).
    pub peak_kib: u64,
    /// User and system CPU time of all its threads so far, in seconds.
    pub cpu_seconds: f64,
    /// Bytes it caused to be written to storage so far (`write_bytes`).
    pub written_bytes: u64,
}

impl Reading {
    /// What the process did since `earlier`: the peak since then (when it was reset then),
    /// and the CPU time and writes in between.
    pub(crate) fn since(&self, earlier: &Reading) -> Reading {
        Reading {
            peak_kib: self.peak_kib,
            cpu_seconds: (self.cpu_seconds - earlier.cpu_seconds).max(0.0),
            written_bytes: self.written_bytes.saturating_sub(earlier.written_bytes),
        }
    }
}

/// Reads a running process's counters; `None` once it has gone.
pub(crate) fn read(pid: u32) -> Option<Reading> {
    Some(Reading {
        peak_kib: peak_kib(pid)?,
        cpu_seconds: cpu_seconds(pid).unwrap_or(0.0),
        written_bytes: written_bytes(pid).unwrap_or(0),
    })
}

/// A process's peak resident memory so far, in KiB (Linux's `VmHWM`).
pub(crate) fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Starts a process's peak resident memory afresh from what it holds now, so a peak read
/// later belongs to what it did in between; false where the kernel does not allow it.
pub(crate) fn reset_peak(pid: u32) -> bool {
    // "5" resets the peak resident set size (Documentation/filesystems/proc.rst).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The largest peak resident memory of any child this process has waited for, in KiB.
pub(crate) fn children_peak_kib() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|usage| u64::try_from(usage.max_rss()).unwrap_or(0))
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    // utime and stime are fields 14 and 15; the first after the name is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

fn written_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|rest| rest.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let reading = read(std::process::id()).expect("reads /proc/self");
        assert!(reading.peak_kib > 0);
        assert!(reading.cpu_seconds >= 0.0);
    }

    #[test]
    fn a_later_reading_counts_what_happened_in_between() {
        let earlier = Reading {
            peak_kib: 10,
            cpu_seconds: 1.5,
            written_bytes: 100,
        };
        let later = Reading {
            peak_kib: 7,
            cpu_seconds: 2.0,
            written_bytes: 350,
        };
        let between = later.since(&earlier);
        assert_eq!(between.peak_kib, 7);
        assert!((between.cpu_seconds - 0.5).abs() < 1e-9);
        assert_eq!(between.written_bytes, 250);
    }
}
