//! What each subcommand does: [`Command::run`] hands it to the module of its role.

use crate::cli::{CatalogCommand, Command, IntakeCommand, SitedbCommand, ToolCommand};
use crate::{
    bench, catalog, cli, collect, demo, intake, links, pki, roles, sitedb, stress, tool, view,
};

impl Command {
    /// Runs the subcommand to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Agent {
                config,
                once,
                deadline_seconds,
            } => roles::agent(&config, once, deadline_seconds).await,
            Command::Aggregator(args) => roles::aggregator(args).await,
            Command::ConnectionPoint(args) => roles::connection_point(args).await,
            Command::Intake(args) => match (args.command, args.config) {
                (Some(IntakeCommand::Token { hierarchy, out }), _) => {
                    pki::intake_token(&hierarchy, &out)
                }
                (Some(IntakeCommand::List { config, format }), _) => {
                    intake::list(&config, &format).await
                }
                (None, Some(config)) => {
                    roles::intake(cli::Serve {
                        config,
                        ready_file: args.ready_file,
                    })
                    .await
                }
                // clap requires --config when no subcommand is given.
                (None, None) => Err(anyhow::anyhow!("hrs intake needs --config FILE")),
            },
            Command::ConnectionTool(ToolCommand::Export { config, dest }) => {
                tool::export(&config, &dest)
            }
            Command::ConnectionTool(ToolCommand::Prepare { config, dest }) => {
                tool::prepare(&config, &dest).await
            }
            Command::ConnectionTool(ToolCommand::Connect(args)) => tool::connect(args).await,
            Command::ConnectionTool(ToolCommand::Import { config, source }) => {
                tool::import(&config, &source).await
            }
            Command::Sitedb(SitedbCommand::Seed {
                db,
                site_db,
                password,
                site,
                clients,
                updates,
                updates_per_client,
                seed,
            }) => {
                let size = hrs_sitedb::SiteSize {
                    clients,
                    updates,
                    updates_per_client,
                };
                roles::seed(db, site_db, &password, &site, &size, seed).await
            }
            Command::Sitedb(SitedbCommand::Check(args)) => sitedb::check(args).await,
            Command::Collect(args) => collect::run(args).await,
            Command::Status { config, format } => links::status(&config, &format).await,
            Command::Reinit {
                config,
                site,
                period,
            } => links::reinit(&config, &site, period.as_ref()),
            Command::Release { config, run } => links::release(&config, run.as_deref()).await,
            Command::View(args) => view::run(args),
            Command::Demo(args) => demo::run(args).await,
            Command::Stress(args) => stress::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Catalog(CatalogCommand::List { level, format }) => {
                catalog::list(level, &format)
            }
            Command::Catalog(CatalogCommand::Show { id }) => catalog::show(&id),
            Command::Pki(command) => pki::run(command),
            Command::Catalog(CatalogCommand::Diff {
                version_a,
                version_b,
            }) => catalog::diff(&version_a, &version_b),
            Command::Hash {
                value,
                key_file,
                new_key,
            } => catalog::hash(value.as_deref(), key_file.as_deref(), new_key.as_deref()),
        }
    }
}
