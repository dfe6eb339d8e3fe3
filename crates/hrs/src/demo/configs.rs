//! The configuration files the demo writes: the same files an operator would deploy,
//! with loopback addresses and the demo's timings.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hrs_core::{HierarchyId, Level, Period, SiteCode};

/// Loopback with port 0: the role picks a free port, reports it, and the demo writes the
/// port it got back into the file, so the file on disk is what is running.
pub(crate) const LISTEN_ANY: &str = "127.0.0.1:0";

/// Timings that differ when faults are injected: retries come sooner, so a demo under
/// faults still ends in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    /// Seconds between a server's delivery retries.
    pub retry_seconds: u64,
    /// Cap of an agent's backoff, in seconds.
    pub agent_retry_max_seconds: u64,
    /// Hours after a period ends before it is forwarded with sites missing.
    pub period_deadline_hours: u64,
}

impl Timings {
    /// The demo's timings at `now`; the deadline leaves the oldest period room to wait for
    /// every site however long ago it closed, so each period leaves once, complete.
    pub(crate) fn new(chaos: bool, oldest: Period, now: time::OffsetDateTime) -> Self {
        let since_close = (now - oldest.closes_at()).whole_hours();
        Self {
            retry_seconds: if chaos { 1 } else { 5 },
            agent_retry_max_seconds: if chaos { 2 } else { 10 },
            period_deadline_hours: 72 + u64::try_from(since_close).unwrap_or(0),
        }
    }
}

/// How the demo's roles talk: mutual TLS with a PKI made in the demo's folder, or, with
/// `--insecure`, plaintext.
#[derive(Debug, Clone)]
pub(crate) enum Security {
    /// Certificates and keys in this folder (`hrs pki` layout).
    Tls(PathBuf),
    /// Plaintext.
    Insecure,
}

impl Security {
    /// The URL scheme clients use.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Self::Tls(_) => "https",
            Self::Insecure => "http",
        }
    }

    /// The `[tls]` table of a configuration file for the certificate `name`: last in the
    /// file, as every key after a table header belongs to the table.
    pub(crate) fn settings(&self, name: &str) -> String {
        match self {
            Self::Tls(dir) => format!(
                "# Mutual TLS: this role's certificate and key, and the hierarchy's CA.\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                dir.join(format!("{name}.pem")).display(),
                dir.join(format!("{name}.key")).display(),
                dir.join("ca.pem").display()
            ),
            Self::Insecure => String::new(),
        }
    }
}

pub(crate) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The intake's file; `token` is a hierarchy's hashed ID and its token's SHA-256, for the
/// connection tool, which carries no client certificate.
pub(crate) fn intake(security: &Security, token: Option<(&str, &str)>) -> String {
    let tls = security.settings("intake");
    let tokens = token
        .map(|(hierarchy, sha256)| {
            format!(
                r#"# The hierarchy whose connection tool presents a token instead of a certificate.
[[hierarchy_tokens]]
hierarchy = "{hierarchy}"
token_sha256 = "{sha256}"
"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"# HRS intake: the service that receives each hierarchy's merged periods.
listen = "{LISTEN_ANY}"
# Submissions, per hashed hierarchy ID (relative paths are relative to this file).
store = "intake.sqlite"
# How long submissions are kept.
retention_days = 365
{tls}{tokens}"#
    )
}

/// What every role's file of one demo hierarchy shares.
pub(crate) struct Common<'a> {
    pub hierarchy: HierarchyId,
    pub level: Level,
    pub timings: Timings,
    pub security: &'a Security,
}

pub(crate) fn connection_point(common: &Common<'_>, offline: bool, intake: &str) -> String {
    let Common {
        hierarchy,
        level,
        timings,
        security,
    } = common;
    let mode = if offline { "offline" } else { "online" };
    let retry = timings.retry_seconds;
    let (scheme, tls) = (security.scheme(), security.settings("connection-point"));
    format!(
        r#"# HRS connection point, at the top-level site: the only role that sends data out.
listen = "{LISTEN_ANY}"
hierarchy_id = "{hierarchy}"
# What leaves the hierarchy never exceeds this level (Basic, Enhanced or Full).
level = "{level}"
# online: submit to the intake with each update check; offline: the connection tool carries
# periods out (prepare, connect, import).
mode = "{mode}"
store = "connection-point.sqlite"
intake = "{scheme}://{intake}"
retry_seconds = {retry}
{tls}"#
    )
}

pub(crate) fn aggregator(
    common: &Common<'_>,
    sites: &[SiteCode],
    connection_point: &str,
) -> String {
    let Common {
        hierarchy,
        level,
        timings,
        security,
    } = common;
    let (scheme, tls) = (security.scheme(), security.settings("aggregator"));
    let sites = sites
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (deadline, retry) = (timings.period_deadline_hours, timings.retry_seconds);
    format!(
        r#"# HRS aggregator, at the CAS: receives every site's runs and merges them per period.
listen = "{LISTEN_ANY}"
hierarchy_id = "{hierarchy}"
level = "{level}"
store = "merge.sqlite"
# Every site expected to report; a period is complete once each has.
sites = [{sites}]
connection_point = "{scheme}://{connection_point}"
# Forward a period with sites missing this many hours after it ends.
period_deadline_hours = {deadline}
retry_seconds = {retry}
{tls}"#
    )
}

pub(crate) fn agent(
    common: &Common<'_>,
    site: &SiteCode,
    site_type: &str,
    period: Period,
    aggregator: &str,
) -> String {
    let Common {
        hierarchy,
        level,
        timings,
        security,
    } = common;
    let retry = timings.agent_retry_max_seconds;
    let (scheme, tls) = (
        security.scheme(),
        security.settings(&format!("site-{site}")),
    );
    format!(
        r#"# HRS agent of site {site}: runs the catalog weekly and pushes each run upstream.
site = "{site}"
site_type = "{site_type}"
hierarchy_id = "{hierarchy}"
level = "{level}"
site_db = "sqlite:sitedb.sqlite"
spool = "spool.sqlite"
upstream = "{scheme}://{aggregator}"
# The demo collects one fixed period; leave this out to collect the last ISO week to end.
period = "{period}"
check_minutes = 60
retry_max_seconds = {retry}
{tls}"#
    )
}
