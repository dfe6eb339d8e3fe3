//! `hrs connection-tool prepare | connect | import | export`: the offline round trip and
//! the review of what leaves, as an operator runs them. Each run writes a log file next to
//! its output, shows progress bars on a terminal (plain lines otherwise), and ends with an
//! error that says what to do.

use std::fs::File;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use hrs_connection::offline::{self, ConnectOptions, Progress, Report};
use hrs_core::clock::{Clock as _, SystemClock};

use crate::cli::ConnectArgs;

/// The environment variable `connect` reads the proxy user's password from.
const PROXY_PASSWORD_ENV: &str = "HRS_PROXY_PASSWORD";

/// What a run tells its operator: every line goes to its log file and to the terminal.
struct RunLog {
    file: Mutex<File>,
    path: PathBuf,
    bars: Option<indicatif::MultiProgress>,
}

impl RunLog {
    /// Starts the log of `step` in `folder` (created if needed).
    fn start(folder: &Path, step: &str) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let stamp: String = now().chars().filter(|c| *c != '-' && *c != ':').collect();
        // Runs within one second get their own files: -2, -3 and so on.
        let (path, file) = (1..100)
            .find_map(|n| {
                let suffix = if n == 1 {
                    String::new()
                } else {
                    format!("-{n}")
                };
                let path = folder.join(format!("hrs-connection-tool-{step}-{stamp}{suffix}.log"));
                match File::options().write(true).create_new(true).open(&path) {
                    Ok(file) => Some(Ok((path, file))),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                    Err(e) => {
                        Some(Err(e).with_context(|| {
                            format!("cannot write the log file {}", path.display())
                        }))
                    }
                }
            })
            .unwrap_or_else(|| {
                Err(anyhow::anyhow!(
                    "cannot write a log file in {}: too many runs this second",
                    folder.display()
                ))
            })?;
        let log = Arc::new(Self {
            file: Mutex::new(file),
            path,
            bars: std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
        });
        log.write(&format!("hrs {} connection-tool {step}", hrs_core::VERSION));
        Ok(log)
    }

    fn write(&self, text: &str) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // A log that cannot be written must not stop the step it describes.
        let _ = writeln!(file, "{} {text}", now());
    }

    /// Ends the run: its outcome goes to the log, and the log's place to the terminal.
    fn finish<T>(&self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        match &outcome {
            Ok(_) => self.write("done"),
            Err(e) => self.write(&format!("error: {e:#}")),
        }
        eprintln!("log: {}", self.path.display());
        outcome
    }
}

fn now() -> String {
    SystemClock.stamp()
}

impl Report for RunLog {
    fn line(&self, text: &str) {
        self.write(text);
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => println!("{text}"),
        }
    }

    fn progress(&self, label: &str, total: u64) -> Box<dyn Progress> {
        self.write(&format!("{label}: {total} to do"));
        match &self.bars {
            Some(bars) => {
                let bar = bars.add(indicatif::ProgressBar::new(total));
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {pos}/{len} {elapsed}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(label.to_owned());
                Box::new(Bar(bar))
            }
            None => Box::new(Plain {
                label: label.to_owned(),
                total,
                done: 0,
            }),
        }
    }
}

/// A progress bar on a terminal.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn set(&mut self, done: u64) {
        self.0.set_position(done);
    }

    fn finish(&mut self) {
        self.0.finish();
    }
}

/// Progress as one plain line at the end, for logs and pipes.
struct Plain {
    label: String,
    total: u64,
    done: u64,
}

impl Progress for Plain {
    fn set(&mut self, done: u64) {
        self.done = done;
    }

    fn finish(&mut self) {
        if self.total > 0 {
            println!("{}: {}/{}", self.label, self.done, self.total);
        }
    }
}

/// `hrs connection-tool prepare`.
pub async fn prepare(config: &Path, dest: &Path) -> anyhow::Result<()> {
    let config = hrs_connection::ConnectionPointConfig::load(config)?;
    let log = RunLog::start(dest, "prepare")?;
    let report = Arc::clone(&log);
    let dest = dest.to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        offline::prepare(&config, &dest, report.as_ref(), &SystemClock).map_err(anyhow::Error::from)
    })
    .await
    .context("the prepare step failed")
    .and_then(|outcome| outcome);
    log.finish(outcome).map(drop)
}

/// `hrs connection-tool connect`.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let log = RunLog::start(&args.updates_dest, "connect")?;
    let outcome = connect_logged(&args, &log).await;
    log.finish(outcome)
}

async fn connect_logged(args: &ConnectArgs, log: &RunLog) -> anyhow::Result<()> {
    if !args.source.is_dir() {
        anyhow::bail!(
            "--source {} is not a folder: give the folder holding the bundles (the removable media)",
            args.source.display()
        );
    }
    let token = args
        .token_file
        .as_deref()
        .map(hrs_core::token::Token::load)
        .transpose()?;
    let proxy = match (&args.proxy, &args.proxy_user) {
        (Some(url), user) => Some(hrs_rpc::proxy::Proxy::from_settings(
            url,
            user.as_deref(),
            user.as_ref()
                .map(|_| hrs_core::secret::PasswordSource::Env(PROXY_PASSWORD_ENV.into()))
                .as_ref(),
        )?),
        (None, Some(_)) => anyhow::bail!("--proxy-user needs --proxy"),
        (None, None) => None,
    };
    let options = ConnectOptions {
        updates_dest: args.updates_dest.clone(),
        download: args.download.clone(),
        intake: args.intake.clone(),
        intake_ca: args.intake_ca.clone(),
        token,
        proxy,
        ca: args.ca.clone(),
        allow_unsigned: args.allow_unsigned,
    };
    let summary = offline::connect(&args.source, &options, log, &SystemClock).await?;
    for connected in &summary.connected {
        log.line(&format!(
            "hierarchy {}: {} period(s) acknowledged, {} update(s) downloaded",
            connected.hierarchy_hash,
            connected.acknowledged.len(),
            connected.updates.len()
        ));
    }
    if !summary.failed.is_empty() {
        let reasons: Vec<String> = summary
            .failed
            .iter()
            .map(|(path, e)| format!("{}: {e}", path.display()))
            .collect();
        anyhow::bail!(
            "{} of {} bundle(s) or hierarchies failed:\n{}",
            summary.failed.len(),
            summary.failed.len() + summary.connected.len(),
            reasons.join("\n")
        );
    }
    Ok(())
}

/// `hrs connection-tool import`.
pub async fn import(config: &Path, source: &Path) -> anyhow::Result<()> {
    let config = hrs_connection::ConnectionPointConfig::load(config)?;
    if !source.is_dir() {
        anyhow::bail!(
            "--source {} is not a folder: give the folder `connect` downloaded into",
            source.display()
        );
    }
    let log = RunLog::start(source, "import")?;
    let report = Arc::clone(&log);
    let source = source.to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        offline::import(&config, &source, report.as_ref(), &SystemClock)
            .map_err(anyhow::Error::from)
    })
    .await
    .context("the import step failed")
    .and_then(|outcome| outcome)
    .map(|imported| {
        log.line(&format!(
            "imported: {} period(s) marked sent, {} update(s) available, {} package(s)",
            imported.outcome.accepted.len(),
            imported.updates.len(),
            imported.packages.len()
        ));
    });
    log.finish(outcome)
}

/// `hrs connection-tool export`.
pub fn export(config: &Path, dest: &Path) -> anyhow::Result<()> {
    let config = hrs_connection::ConnectionPointConfig::load(config)?;
    let folder = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let log = RunLog::start(folder, "export")?;
    let outcome = hrs_connection::export_csv(&config, dest)
        .map_err(anyhow::Error::from)
        .map(|summary| {
            log.line(&format!(
                "wrote {} rows of {} period(s) at level {} to {}",
                summary.rows,
                summary.periods,
                config.level,
                dest.display()
            ));
        });
    log.finish(outcome)
}
