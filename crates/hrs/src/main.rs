//! The `hrs` binary: parses the command line and hands each subcommand to its role.

mod catalog;
mod cli;
mod collect;
mod demo;
mod intake;
mod links;
mod output;
mod pki;
mod roles;
mod sitedb;
mod stress;
mod tool;
mod view;

use std::process::ExitCode;

use clap::Parser as _;
use cli::{CatalogCommand, Cli, Command, IntakeCommand, SitedbCommand, ToolCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    roles::init_tracing(matches!(&cli.command, Command::Demo(args) if args.json));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
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
            Command::View(args) => view::run(args),
            Command::Demo(args) => demo::run(args).await,
            Command::Stress(args) => stress::run(args).await,
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
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            roles::exit_code(&error)
        }
    }
}
