//! Time as roles see it: the wall clock in production, a clock a test moves by hand, so
//! schedules measured in hours or weeks (which week is due, period deadlines, update
//! checks, retention, certificate expiry) are tested in milliseconds, without sleeping,
//! and on any date.
//!
//! This module is the only place that reads the system's date and time: every role is
//! handed a [`SharedClock`], and `clippy.toml` refuses wall-clock reads anywhere else.
//! Durations of work in hand (a query's run time, a retry's backoff) are measured on the
//! monotonic clock, which no date can break.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

/// A source of the current time and of waiting until a time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time, UTC.
    fn now(&self) -> OffsetDateTime;

    /// Completes once the clock reads `at` or later.
    fn sleep_until(&self, at: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Returns the current time as roles record it: [`rfc3339`], whole seconds, UTC.
    fn stamp(&self) -> String {
        rfc3339(self.now())
    }
}

/// The clock a role's parts share: the wall clock in production, a [`ManualClock`] in tests.
pub type SharedClock = Arc<dyn Clock>;

/// Returns the wall clock, as a role is handed it outside tests.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

// The one place the system's date and time are read (see the module's documentation).
#[allow(clippy::disallowed_methods)]
impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, at: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when a test advances it; whatever sleeps on it wakes as soon
/// as it passes their time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
    moved: watch::Sender<OffsetDateTime>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            moved: watch::channel(start).0,
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
        self.moved.send_replace(*now);
    }

    /// Returns this clock as the shared clock roles are handed.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sleep_until(&self, at: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives its sleepers.
            let _ = moved.wait_for(|now| *now >= at).await;
        })
    }
}

/// RFC 3339 with whole seconds, UTC: how roles record times.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_passes_their_time() {
        let start = OffsetDateTime::UNIX_EPOCH;
        let clock = ManualClock::new(start);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(start + Duration::from_secs(3600)).await })
        };
        clock.advance(Duration::from_secs(1800));
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1800));
        sleeper.await.expect("wakes");
        assert_eq!(rfc3339(clock.now()), "1970-01-01T01:00:00Z");
    }
}
