//! The `hrs` binary: parses the command line and hands each subcommand to its role.

mod bench;
mod catalog;
mod cli;
mod collect;
mod commands;
mod demo;
mod intake;
mod links;
mod output;
mod pki;
mod roles;
mod sitedb;
mod stress;
mod tool;
mod usage;
mod view;

use std::process::ExitCode;

use clap::Parser as _;
use cli::{Cli, Command};

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
    let result = runtime.block_on(cli.command.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            roles::exit_code(&error)
        }
    }
}
