//! Replication link health, as operators of the modelled system know it: a link is
//! `active` until delivery has failed a number of consecutive times, then `degraded`, then
//! `failed`, and `active` again with the first success.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of one replication link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Deliveries succeed (or have not failed often enough to matter).
    Active,
    /// Deliveries have failed [`LinkThresholds::degraded_after`] times in a row.
    Degraded,
    /// Deliveries have failed [`LinkThresholds::failed_after`] times in a row.
    Failed,
}

impl LinkState {
    /// The state's name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// After how many consecutive failed attempts a link counts as degraded, then failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkThresholds {
    /// Consecutive failures that make a link degraded (default 12).
    pub degraded_after: u32,
    /// Consecutive failures that make a link failed (default 24).
    pub failed_after: u32,
}

impl Default for LinkThresholds {
    fn default() -> Self {
        Self {
            degraded_after: 12,
            failed_after: 24,
        }
    }
}

impl LinkThresholds {
    /// Checks the thresholds make sense: both at least 1, degraded before failed.
    pub fn check(&self) -> Result<(), String> {
        if self.degraded_after == 0 {
            return Err("must be at least 1".into());
        }
        if self.failed_after <= self.degraded_after {
            return Err(format!(
                "link_failed_after ({}) must be greater than link_degraded_after ({})",
                self.failed_after, self.degraded_after
            ));
        }
        Ok(())
    }

    /// The state of a link with this many consecutive failures.
    pub fn state(&self, consecutive_failures: u32) -> LinkState {
        if consecutive_failures >= self.failed_after {
            LinkState::Failed
        } else if consecutive_failures >= self.degraded_after {
            LinkState::Degraded
        } else {
            LinkState::Active
        }
    }
}

/// What is known of one link's attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the last attempt was made (RFC 3339), if any.
    pub last_attempt_at: Option<String>,
    /// When the last attempt succeeded (RFC 3339), if any.
    pub last_success_at: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_consecutive_failures() {
        let t = LinkThresholds::default();
        assert_eq!(t.state(0), LinkState::Active);
        assert_eq!(t.state(11), LinkState::Active);
        assert_eq!(t.state(12), LinkState::Degraded);
        assert_eq!(t.state(23), LinkState::Degraded);
        assert_eq!(t.state(24), LinkState::Failed);
        assert!(t.check().is_ok());
        let equal = LinkThresholds {
            degraded_after: 5,
            failed_after: 5,
        };
        assert!(equal.check().is_err());
    }
}
