//! One module per command; each takes the parsed command line and returns an exit code.

mod assess;
mod connectors;
mod cycle;
mod demo;
mod export;
mod import;
mod mail;
mod requests;
mod runs;
mod serve;
mod show;
mod sync;

use anyhow::Context as _;
use syncctl_store::Store;
use tracing::{Instrument as _, info_span};

use crate::cli::{Cli, Command};
use crate::config::{self, Plan};
use crate::exit::{CmdResult, Failure};

/// Runs the command the command line names.
pub async fn run(cli: &Cli) -> CmdResult {
    let name = match &cli.command {
        Command::Import(_) => "import",
        Command::Cycle(_) => "cycle",
        Command::Sync(_) => "sync",
        Command::Export(_) => "export",
        Command::Runs(_) => "runs",
        Command::Show(_) => "show",
        Command::Connectors => "connectors",
        Command::Assess(_) => "assess",
        Command::Mail(_) => "mail",
        Command::Requests(_) => "requests",
        Command::Demo(_) => "demo",
        Command::Serve(_) => "serve",
    };
    let span = info_span!("command", command = name, config = %cli.config.display());
    async {
        // assess can run without a config file (--ldif sources only).
        if let Command::Assess(args) = &cli.command {
            return assess::run(cli, args).await;
        }
        // demo writes its own config.
        if let Command::Demo(args) = &cli.command {
            return demo::run(args, cli.json).await;
        }
        let plan = config::load(&cli.config).map_err(Failure::usage)?;
        match &cli.command {
            Command::Import(args) => import::run(&plan, args, cli.json).await,
            Command::Cycle(args) => cycle::run(&plan, args, cli.json).await,
            Command::Sync(args) => sync::run(&plan, args, cli.json).await,
            Command::Export(args) => export::run(&plan, args, cli.json).await,
            Command::Runs(args) => runs::run(&plan, args, cli.json).await,
            Command::Show(args) => show::run(&plan, args, cli.json).await,
            Command::Connectors => connectors::run(&plan, cli.json),
            Command::Mail(args) => mail::run(&plan, args, cli.json).await,
            Command::Requests(args) => requests::run(&plan, args, cli.json).await,
            Command::Assess(args) => assess::run(cli, args).await,
            Command::Demo(args) => demo::run(args, cli.json).await,
            Command::Serve(args) => serve::run(&plan, args, cli.json).await,
        }
    }
    .instrument(span)
    .await
}

/// Opens (creating if needed) the database the config names.
async fn open_store(plan: &Plan) -> Result<Store, Failure> {
    if let Some(dir) = plan.store_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the database directory {}", dir.display()))
            .map_err(Failure::stopped)?;
    }
    Ok(Store::open(&plan.store_path).await?)
}
