//! The role processes of the demo: each role is this binary, started on loopback with its
//! own configuration file and log, and can be stopped, killed and started again.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hrs_core::SiteCode;
use tokio::process::{Child, Command};

use super::configs::LISTEN_ANY;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the demo looks at a file it is waiting on.
const POLL: Duration = Duration::from_millis(50);

/// One running role.
struct Process {
    name: String,
    config: PathBuf,
    child: Child,
}

/// The role processes the demo started; any still running are killed if the demo fails.
pub(crate) struct Processes {
    exe: PathBuf,
    logs: PathBuf,
    servers: Vec<Process>,
    agents: Vec<Process>,
}

impl Processes {
    pub(crate) fn new(exe: PathBuf, logs: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            exe,
            logs,
            servers: Vec::new(),
            agents: Vec::new(),
        })
    }

    /// The folder every role logs to.
    pub(crate) fn logs(&self) -> &Path {
        &self.logs
    }

    pub(crate) fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// A command running this binary; its output is appended to the role's log, so a
    /// restarted role keeps the story of the one before.
    fn command(&self, name: &str, args: &[&str]) -> anyhow::Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .kill_on_drop(true);
        Ok(command)
    }

    /// Starts a server role and returns the address it listens on, once it listens. The
    /// first start binds port 0; the bound address is then written into the configuration,
    /// so a restart listens where the others already point.
    pub(crate) async fn start_server(
        &mut self,
        role: &str,
        config: &Path,
    ) -> anyhow::Result<String> {
        let ready = config.with_extension("addr");
        let _ = std::fs::remove_file(&ready);
        let config_arg = config.display().to_string();
        let ready_arg = ready.display().to_string();
        let mut child = self
            .command(
                role,
                &[role, "--config", &config_arg, "--ready-file", &ready_arg],
            )?
            .spawn()
            .with_context(|| format!("cannot start the {role}"))?;
        let started = tokio::time::Instant::now();
        let addr = loop {
            if let Ok(addr) = std::fs::read_to_string(&ready) {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the {role} exited ({status}) before listening; see {}",
                    self.log_path(role).display()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the {role} did not start listening in time");
            }
            tokio::time::sleep(POLL).await;
        };
        let _ = std::fs::remove_file(&ready);
        set_listen(config, &addr)?;
        tracing::info!(role, addr, "role listening");
        self.servers.push(Process {
            name: role.to_owned(),
            config: config.to_owned(),
            child,
        });
        Ok(addr)
    }

    /// Writes a server role's configuration file, then starts it; see
    /// [`Processes::start_server`].
    pub(crate) async fn start_configured(
        &mut self,
        role: &str,
        config: &Path,
        text: &str,
    ) -> anyhow::Result<String> {
        super::configs::write(config, text)?;
        self.start_server(role, config).await
    }

    /// Starts an agent: one-shot (collects, delivers and exits) or as a service.
    pub(crate) fn start_agent(
        &mut self,
        site: &SiteCode,
        config: &Path,
        once: bool,
    ) -> anyhow::Result<()> {
        self.start_agent_with(site, config, if once { &["--once"] } else { &[] })
    }

    /// Starts an agent with extra arguments.
    pub(crate) fn start_agent_with(
        &mut self,
        site: &SiteCode,
        config: &Path,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let config_arg = config.display().to_string();
        let mut args = vec!["agent", "--config", &config_arg];
        args.extend_from_slice(extra);
        let child = self
            .command(&format!("agent-{site}"), &args)?
            .spawn()
            .with_context(|| format!("cannot start the agent of {site}"))?;
        self.agents.push(Process {
            name: site.to_string(),
            config: config.to_owned(),
            child,
        });
        Ok(())
    }

    /// Waits for every one-shot agent to finish, failing on the first that did not succeed.
    pub(crate) async fn wait_agents(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for mut agent in std::mem::take(&mut self.agents) {
            let site = agent.name.clone();
            let status = tokio::time::timeout(timeout, agent.child.wait())
                .await
                .with_context(|| format!("the agent of {site} did not finish in time"))??;
            if !status.success() {
                bail!(
                    "the agent of {site} failed ({status}); see {}",
                    self.log_path(&format!("agent-{site}")).display()
                );
            }
        }
        Ok(())
    }

    /// The process id of a running role (a server's role or an agent's site).
    pub(crate) fn pid(&self, name: &str) -> Option<u32> {
        self.servers
            .iter()
            .chain(&self.agents)
            .find(|p| p.name == name)
            .and_then(|p| p.child.id())
    }

    /// Returns an agent's exit status once it has exited, and forgets it.
    pub(crate) fn try_wait_agent(
        &mut self,
        site: &str,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(at) = self.agents.iter().position(|p| p.name == site) else {
            return Ok(None);
        };
        let status = self.agents[at].child.try_wait()?;
        if status.is_some() {
            self.agents.remove(at);
        }
        Ok(status)
    }

    /// The names of the roles that can be killed: the servers, then each agent's site.
    pub(crate) fn victims(&self) -> Vec<String> {
        self.servers
            .iter()
            .chain(&self.agents)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Kills a role with SIGKILL, as a power cut would, and starts it again from the same
    /// configuration. A server comes back on a new port, returned: its old one may already
    /// be taken by some client's outgoing connection, as ports in the ephemeral range are.
    pub(crate) async fn kill_and_restart(&mut self, name: &str) -> anyhow::Result<Option<String>> {
        if let Some(at) = self.servers.iter().position(|p| p.name == name) {
            let mut server = self.servers.remove(at);
            server.child.kill().await?;
            set_listen(&server.config, LISTEN_ANY)?;
            return Ok(Some(self.start_server(name, &server.config).await?));
        }
        if let Some(at) = self.agents.iter().position(|p| p.name == name) {
            let mut agent = self.agents.remove(at);
            agent.child.kill().await?;
            let site: SiteCode = name.parse()?;
            self.start_agent(&site, &agent.config, false)?;
        }
        Ok(None)
    }

    /// Fails with the role's log path when a server or a service agent has stopped.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        check_running(
            self.servers.iter_mut().chain(self.agents.iter_mut()),
            &self.logs,
        )
    }

    /// Fails with the role's log path when a server has stopped.
    pub(crate) fn check_servers_running(&mut self) -> anyhow::Result<()> {
        check_running(self.servers.iter_mut(), &self.logs)
    }

    /// Stops the agents, then the servers in reverse start order: SIGTERM, then a kill
    /// after a deadline.
    pub(crate) async fn stop(&mut self) {
        let agents = std::mem::take(&mut self.agents);
        let servers = std::mem::take(&mut self.servers);
        for process in agents.into_iter().chain(servers.into_iter().rev()) {
            stop(process).await;
        }
    }

    /// Stops the service agents (between periods, before their configuration changes).
    pub(crate) async fn stop_agents(&mut self) {
        for process in std::mem::take(&mut self.agents) {
            stop(process).await;
        }
    }
}

fn check_running<'a>(
    processes: impl Iterator<Item = &'a mut Process>,
    logs: &Path,
) -> anyhow::Result<()> {
    for process in processes {
        if let Some(status) = process.child.try_wait()? {
            bail!(
                "the {} stopped ({status}); see {}",
                process.name,
                logs.join(format!("{}.log", process.name)).display()
            );
        }
    }
    Ok(())
}

/// Rewrites the `listen` line of a server's configuration file.
fn set_listen(config: &Path, addr: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let text: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("listen = ") {
                format!("listen = \"{addr}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(config, text.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", config.display()))
}

async fn stop(mut process: Process) {
    if let Some(pid) = process.child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), process.child.wait())
        .await
        .is_err()
    {
        tracing::warn!(role = process.name, "did not stop in time; killing it");
        let _ = process.child.kill().await;
    }
}
