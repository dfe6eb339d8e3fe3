//! Wiring for each role: load and check the configuration, bind, announce, serve until a
//! signal, and report errors as an operator reads them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use hrs_core::SiteCode;
use hrs_core::config::{ConfigError, Folder};
use hrs_store::StoreError;
use tokio::net::TcpListener;

use crate::cli::Serve;

/// Exit status for a configuration the role refuses (BSD `EX_CONFIG`).
const EXIT_CONFIG: u8 = 78;

/// Logs to stderr; `RUST_LOG` overrides the default `info` (`warn` when stdout carries a
/// machine-read summary).
pub fn init_tracing(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Returns the exit status for an error: configuration errors are told apart so scripts
/// and service managers do not restart a role that cannot start.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(|e| e.is::<ConfigError>()) {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

/// Returns a role's failure to start as the operator should read it: a store that did not
/// open because the file system refuses its path (a folder in its place, no permission, a
/// mount made read-only since the load checked it) is a configuration error naming
/// `field`, as at load, since restarting cannot mend it; any other failure is itself.
fn at_start<E>(
    config: &Path,
    field: &str,
    error: E,
    store: fn(&E) -> Option<&StoreError>,
) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let refused = store(&error)
        .and_then(StoreError::unopened)
        .and_then(|file| {
            hrs_core::config::writable_file(config, field, file, Folder::Created).err()
        });
    match refused {
        Some(refused) => {
            tracing::debug!(%error, "the store did not open");
            refused.into()
        }
        None => error.into(),
    }
}

/// Resolves on Ctrl-C or SIGTERM, so service managers can stop a role cleanly.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

/// Binds the role's address and, when asked, writes the bound address to `ready_file`
/// (atomically, so a reader never sees half an address).
async fn bind(listen: SocketAddr, ready_file: Option<&Path>) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    if let Some(file) = ready_file {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .and_then(|()| std::fs::rename(&tmp, file))
            .with_context(|| format!("cannot write ready file {}", file.display()))?;
    }
    Ok(listener)
}

/// `hrs agent`: the service, or with `once` one collection and delivery; a collection
/// that spooled nothing, or a run held for an operator, is an error (non-zero exit).
pub async fn agent(path: &Path, once: bool, deadline_seconds: u64) -> anyhow::Result<()> {
    let config = hrs_agent::AgentConfig::load(path)?;
    let agent = hrs_agent::Agent::open(config, hrs_core::clock::system()).map_err(|e| {
        at_start(path, "spool", e, |e| match e {
            hrs_agent::AgentError::Spool(store) => Some(store),
            _ => None,
        })
    })?;
    if once {
        let summary = agent
            .run_once(Duration::from_secs(deadline_seconds))
            .await?;
        println!(
            "run {} for {}: {} queries ({} failed), {} rows, delivered",
            summary.run_id, summary.period, summary.queries, summary.failed_queries, summary.rows
        );
        Ok(())
    } else {
        Ok(agent.serve(shutdown_signal()).await?)
    }
}

/// `hrs aggregator`.
pub async fn aggregator(args: Serve) -> anyhow::Result<()> {
    let config = hrs_aggregator::AggregatorConfig::load(&args.config)?;
    let listener = bind(config.listen, args.ready_file.as_deref()).await?;
    hrs_aggregator::serve(config, listener, shutdown_signal())
        .await
        .map_err(|e| {
            at_start(&args.config, "store", e, |e| match e {
                hrs_aggregator::AggregatorError::Store(store) => Some(store),
                _ => None,
            })
        })
}

/// `hrs connection-point`.
pub async fn connection_point(args: Serve) -> anyhow::Result<()> {
    let config = hrs_connection::ConnectionPointConfig::load(&args.config)?;
    let listener = bind(config.listen, args.ready_file.as_deref()).await?;
    hrs_connection::serve(config, listener, shutdown_signal())
        .await
        .map_err(|e| {
            at_start(&args.config, "store", e, |e| match e {
                hrs_connection::ConnectionError::Store(store) => Some(store),
                _ => None,
            })
        })
}

/// `hrs intake`.
pub async fn intake(args: Serve) -> anyhow::Result<()> {
    let config = hrs_intake::IntakeConfig::load(&args.config)?;
    let listener = bind(config.listen, args.ready_file.as_deref()).await?;
    hrs_intake::serve(config, listener, shutdown_signal())
        .await
        .map_err(|e| {
            at_start(&args.config, "store", e, |e| match e {
                hrs_intake::IntakeError::Store(store) => Some(store),
                _ => None,
            })
        })
}

/// `hrs sitedb seed`.
pub async fn seed(
    db: Option<PathBuf>,
    site_db: Option<String>,
    password: &crate::cli::PasswordArgs,
    site: &SiteCode,
    size: &hrs_sitedb::SiteSize,
    seed: u64,
) -> anyhow::Result<()> {
    let spec = match (db, site_db) {
        (Some(path), _) => hrs_sitedb::SiteDbSpec::Sqlite(path),
        (None, Some(text)) => {
            hrs_sitedb::SiteDbSpec::parse(&text, password.source()).context("--site-db")?
        }
        (None, None) => anyhow::bail!("give --db FILE or --site-db SPEC"),
    };
    let summary = hrs_sitedb::seed_spec(&spec, site, size, seed)
        .await
        .with_context(|| format!("cannot seed {spec}"))?;
    println!(
        "seeded {spec} for site {site}: {} clients, {} servers, {} rows",
        summary.clients, summary.servers, summary.rows
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_the_file_system_refuses_at_start_exits_as_a_configuration_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("aggregator.toml");
        // A file where the store's folder should be: the load would have refused it, but
        // it can appear between the load and the start.
        let plain = dir.path().join("data");
        std::fs::write(&plain, "x").expect("writes");
        let store = plain.join("merge.sqlite");
        let error = hrs_store::Store::open(&store, "").expect_err("a file in the way");
        let error = at_start(&config, "store", error, |e| Some(e));
        assert_eq!(exit_code(&error), ExitCode::from(EXIT_CONFIG), "{error:#}");
        let text = format!("{error:#}");
        assert!(
            text.contains("aggregator.toml")
                && text.contains("store:")
                && text.contains(&store.display().to_string()),
            "{text}"
        );

        // Any other failure stays what it was: restarting may mend it.
        let error = at_start(&config, "store", StoreError::Corrupt("x".into()), |e| {
            Some(e)
        });
        assert_eq!(exit_code(&error), ExitCode::FAILURE, "{error:#}");
    }
}
