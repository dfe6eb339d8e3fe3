//! The agent's metrics as a Prometheus text file: an agent has no listener of its own, so
//! it rewrites the file after every delivery attempt and an exporter's textfile collector
//! (node_exporter, windows_exporter) serves it. What an operator alerts on: a backlog that
//! grows, runs dropped to stay within the spool's limits, a link that is not active, a
//! collection that spooled nothing, a run held for an operator's word.

use std::path::Path;

use hrs_core::link::LinkState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AgentStatus;

fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

fn unix_seconds(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or(0, OffsetDateTime::unix_timestamp)
}

/// Renders the agent's status as Prometheus text.
pub fn render(status: &AgentStatus) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("hrs_agent");
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    registry.register(
        "spool_runs",
        "Runs waiting in the spool for the upstream",
        gauge(count(status.backlog_runs)),
    );
    registry.register(
        "spool_bytes",
        "Size of the runs waiting in the spool",
        gauge(count(status.backlog_bytes)),
    );
    registry.register(
        "spool_oldest_age_seconds",
        "How long the oldest waiting run has waited (0 when none waits)",
        gauge(status.lag_seconds.unwrap_or(0)),
    );
    let dropped = Counter::<u64>::default();
    dropped.inc_by(status.dropped_runs);
    registry.register(
        "spool_dropped_runs",
        "Runs dropped to keep the spool within its limits; they are never delivered",
        dropped,
    );
    let failed = Counter::<u64>::default();
    failed.inc_by(status.failed_collections.count);
    registry.register(
        "failed_collections",
        "Collections that spooled nothing: the site database could not be opened, or every query failed",
        failed,
    );
    registry.register(
        "last_failed_collection_timestamp_seconds",
        "When a collection last spooled nothing (0 if never)",
        gauge(unix_seconds(
            status
                .failed_collections
                .last
                .as_ref()
                .map(|last| last.at.as_str()),
        )),
    );
    registry.register(
        "held_runs",
        "Runs kept in the spool, not delivered, until an operator releases them (hrs release)",
        gauge(count(status.held_runs.len() as u64)),
    );
    registry.register(
        "link_consecutive_failures",
        "Failed delivery attempts since the last success",
        gauge(i64::from(status.consecutive_failures)),
    );
    registry.register(
        "link_last_success_timestamp_seconds",
        "When delivery last succeeded (0 if never)",
        gauge(unix_seconds(status.last_success_at.as_deref())),
    );
    let state = Family::<Vec<(String, String)>, Gauge>::default();
    for each in [LinkState::Active, LinkState::Degraded, LinkState::Failed] {
        state
            .get_or_create(&vec![("state".to_owned(), each.to_string())])
            .set(i64::from(each == status.state));
    }
    registry.register(
        "link_state",
        "1 for the state the link to the upstream is in",
        state,
    );
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// Writes the file whole or not at all, so a collector never reads half of it.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("prom.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_reads_as_prometheus_text() {
        let status = AgentStatus {
            site: "P01".into(),
            upstream: "http://127.0.0.1:1".into(),
            site_db: "sqlite:x".into(),
            state: LinkState::Degraded,
            consecutive_failures: 13,
            last_attempt_at: None,
            last_success_at: Some("2026-11-23T10:00:00Z".into()),
            last_error: Some("unreachable".into()),
            backlog_runs: 2,
            backlog_bytes: 4096,
            oldest_pending_at: None,
            lag_seconds: Some(3600),
            last_collected_period: None,
            dropped_runs: 1,
            held_runs: vec![crate::spool::HeldRun {
                run_id: "r1".into(),
                period: "2026-W48".into(),
                reason: "69 of 70 queries failed".into(),
                held_at: "2026-11-30T06:00:00Z".into(),
                size: 512,
            }],
            failed_collections: crate::spool::FailedCollections {
                count: 3,
                last: Some(crate::spool::FailedCollection {
                    at: "2026-11-23T10:00:00Z".into(),
                    period: "2026-W47".into(),
                    error: "every one of the 70 queries failed".into(),
                }),
            },
            certificate: None,
        };
        let text = render(&status).expect("renders");
        for line in [
            "hrs_agent_spool_runs 2",
            "hrs_agent_spool_bytes 4096",
            "hrs_agent_spool_oldest_age_seconds 3600",
            "hrs_agent_spool_dropped_runs_total 1",
            "hrs_agent_link_consecutive_failures 13",
            "hrs_agent_link_last_success_timestamp_seconds 1795428000",
            "hrs_agent_link_state{state=\"degraded\"} 1",
            "hrs_agent_link_state{state=\"active\"} 0",
            "hrs_agent_failed_collections_total 3",
            "hrs_agent_last_failed_collection_timestamp_seconds 1795428000",
            "hrs_agent_held_runs 1",
            "# TYPE hrs_agent_failed_collections counter",
            "# HELP hrs_agent_held_runs Runs kept in the spool, not delivered, until an operator releases them (hrs release).",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
