//! The command line as clap parses it (the raw phase). Commands turn it, together with the
//! validated configuration ([`crate::config::Plan`]), into what they run.

use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// syncctl: identity synchronization from Active Directory / LDAP into a SQLite metaverse.
#[derive(Debug, Parser)]
#[command(name = "syncctl", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 completed with errors, 2 stopped or failed, \
                        3 configuration or usage error, 4 not found.")]
pub struct Cli {
    /// The configuration file (TOML).
    #[arg(long, global = true, env = "SYNCCTL_CONFIG", default_value = "syncctl.toml", value_name = "FILE")]
    pub config: PathBuf,

    /// Print JSON on stdout instead of tables and summaries (no progress bar).
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Format of the log lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import one connector's objects into its connector space (full or delta).
    Import(ImportArgs),
    /// One whole cycle, in Entra Connect's order: import every connector, sync every connector,
    /// export to every target (delta unless --full).
    Cycle(CycleArgs),
    /// Synchronize connector spaces into the metaverse and stage pending exports (full or
    /// delta), connector by connector: sources first, then targets.
    Sync(SyncArgs),
    /// Write the pending exports to the target connectors, behind the deletion threshold and
    /// staging mode; or, with --preview, show what would be written.
    Export(ExportArgs),
    /// Show run history, or the per-object errors of one run.
    Runs(RunsArgs),
    /// Show one object as each connector space holds it, found by DN, anchor or ImmutableID.
    Show(ShowArgs),
    /// List the configured connectors (no secrets).
    Connectors,
    /// The notification mail outbox: list, show, send what is due, retry dead letters, purge,
    /// and send a test message through the configured relay.
    Mail(MailArgs),
    /// The requests that set transitions made (FIM's "Search Requests"): object, set, policy,
    /// workflow, status (pending, delivered, failed, dead-letter), timestamps and errors.
    Requests(RequestsArgs),
    /// The readiness report: what will break when these directories synchronize to Microsoft 365.
    #[command(
        after_help = "Exit codes: 0 ready, 1 warnings only, 2 blocking errors, 3 configuration or usage \
                            error, 4 a file named on the command line does not exist, 5 a source could not be \
                            read or a report could not be written."
    )]
    Assess(AssessArgs),
    /// The demo on embedded defaults, no server needed: a sample directory -> the metaverse ->
    /// a Graph emulator in this process; two cycles, what happened, what to run next.
    ///
    /// A full cycle, then a day-2 delta cycle (a department removed, one user renamed) whose
    /// deletes the deletion threshold holds; then the report, read from run history and the
    /// metaverse, and the commands to run next.
    #[command(
        after_help = "Exit codes: 0 the demo ran through, 2 a step failed, 3 usage error (such as the \
                            port being taken)."
    )]
    Demo(DemoArgs),
    /// The long-running service: a delta cycle every `[service] interval` (full when required),
    /// HTTP health, metrics, status and control on `[service] listen`; or, with a subcommand,
    /// talk to the service that runs on this config.
    #[command(
        after_help = "Exit codes: 0 stopped cleanly (SIGTERM, SIGINT) or request done, 2 the service could \
                            not start (another one holds the database) or could not be reached, 3 configuration error."
    )]
    Serve(ServeArgs),
}

/// `syncctl serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run one cycle (delta, or full when required) and exit.
    #[arg(long)]
    pub once: bool,
    /// Talk to the running service instead of starting one.
    #[command(subcommand)]
    pub action: Option<ServeAction>,
}

/// Requests to a running `syncctl serve`.
#[derive(Debug, Subcommand)]
pub enum ServeAction {
    /// Its state, last cycle, recent runs, pending exports and mail outbox.
    Status,
    /// Start a cycle now.
    RunNow {
        /// A full cycle.
        #[arg(long)]
        full: bool,
    },
    /// Skip scheduled cycles until resumed.
    Pause,
    /// Run scheduled cycles again.
    Resume,
}

/// `syncctl demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo writes its config, database, sample directory and tenant state. A re-run
    /// starts over: it replaces the files the demo writes there (and nothing else).
    #[arg(long, default_value = "/tmp/syncctl-demo", value_name = "DIR")]
    pub dir: PathBuf,
    /// The loopback port of the Graph emulator (written into the demo's config) [default: 18650].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Do not run the demo: serve the tenant of the demo already in DIR (its state file, on the
    /// port its config names) until Ctrl-C, for `syncctl export` and the other commands.
    #[arg(long)]
    pub serve: bool,
}

/// `syncctl assess`.
#[derive(Debug, Args)]
pub struct AssessArgs {
    /// Print the rule catalogue (id, severity, attribute, what it checks, how the fix is
    /// suggested) and exit.
    #[arg(long)]
    pub rules: bool,
    /// Assess this configured connector (repeatable). Default: every configured connector,
    /// unless --ldif is given.
    #[arg(long = "connector", value_name = "NAME")]
    pub connectors: Vec<String>,
    /// Assess an LDIF export (ldapsearch or `ldifde -f`) of Active Directory (repeatable). No
    /// config file is needed when only --ldif sources are assessed.
    #[arg(long, value_name = "FILE")]
    pub ldif: Vec<PathBuf>,
    /// Tenant data to compare with: users, groups, contacts, admin roles and domains as
    /// Microsoft Graph returns them (see the README). Default: the tenant read live through the
    /// configured Graph connector, if there is one.
    #[arg(long, value_name = "FILE")]
    pub tenant: Option<PathBuf>,
    /// Write the findings as CSV in IdFix's columns (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the report as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the suggested fixes as LDIF for review and ldapmodify, and beside it the undo LDIF
    /// (FILE with `.undo.ldif`). With fixes for several sources, one pair per source
    /// (`FILE.<source>.ldif`).
    #[arg(long, value_name = "FILE")]
    pub fix_ldif: Option<PathBuf>,
    /// Check this notification sender address (overrides `[mail] sender`).
    #[arg(long, value_name = "ADDRESS")]
    pub mail_sender: Option<String>,
    /// The SMTP relay account's UPN for the sender check (overrides `[mail.smtp] username`).
    #[arg(long, value_name = "UPN")]
    pub mail_relay_account: Option<String>,
    /// How many of the worst objects the summary lists.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
}

/// `syncctl import`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["full", "delta"])))]
pub struct ImportArgs {
    /// The connector's name, as in the config file.
    #[arg(long, value_name = "NAME")]
    pub connector: String,
    /// Full import: read every object in scope; objects not seen are marked deleted.
    #[arg(long)]
    pub full: bool,
    /// Delta import: read what changed since the stored watermark (runs as a full import when
    /// there is no usable watermark, and says so in run history).
    #[arg(long)]
    pub delta: bool,
}

/// `syncctl cycle`.
#[derive(Debug, Args)]
pub struct CycleArgs {
    /// Full import and full sync (default: delta, which falls back to full where a connector has
    /// no usable watermark or sync mark, and says so).
    #[arg(long)]
    pub full: bool,
}

/// `syncctl sync`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").args(["full", "delta"])))]
pub struct SyncArgs {
    /// Only this connector (repeatable). Default: every configured connector, sources first,
    /// then targets, in the config file's order.
    #[arg(long = "connector", value_name = "NAME")]
    pub connectors: Vec<String>,
    /// Full sync: every connector-space object, with the current rules.
    #[arg(long)]
    pub full: bool,
    /// Delta sync (the default): only connector-space objects changed since the last sync (runs
    /// as a full sync when the rules changed or there was no sync yet, and says so).
    #[arg(long)]
    pub delta: bool,
}

/// `syncctl export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// List the pending exports without writing anything: one line per object, operation,
    /// attribute, old and new value (with --json, one object per pending export).
    #[arg(long)]
    pub preview: bool,
    /// Only the pending exports of this target connector.
    #[arg(long, value_name = "NAME")]
    pub connector: Option<String>,
    /// Write the preview as CSV (connector, object, operation, attribute, old, new) to FILE
    /// (`-` for stdout).
    #[arg(long, value_name = "FILE", requires = "preview")]
    pub csv: Option<PathBuf>,
    /// Release the deletes held by the deletion threshold: exactly the set the token was
    /// issued for, once.
    #[arg(long, value_name = "TOKEN", conflicts_with = "preview")]
    pub approve_deletes: Option<String>,
}

/// `syncctl runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this connector.
    #[arg(long, value_name = "NAME")]
    pub connector: Option<String>,
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..), value_name = "N")]
    pub limit: i64,
    /// List the per-object errors of this run instead.
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["connector", "limit"])]
    pub errors: Option<i64>,
}

/// `syncctl show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A DN (`CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com`), an ImmutableID (base64, hex
    /// or GUID string) or an anchor (an OpenLDAP entryUUID).
    #[arg(value_name = "DN|ANCHOR|IMMUTABLEID")]
    pub key: String,
}

/// `syncctl mail`.
#[derive(Debug, Args)]
pub struct MailArgs {
    /// What to do with the outbox.
    #[command(subcommand)]
    pub command: MailCommand,
}

/// `syncctl mail ...`.
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// List the outbox, newest first.
    List(MailListArgs),
    /// Show one message: headers, body, and every delivery attempt with its SMTP transcript.
    Show(MailShowArgs),
    /// Deliver every message that is due now (`syncctl cycle` does this after export).
    Send(MailSendArgs),
    /// Queue dead letters (or queued messages) again with a fresh attempt count, and deliver
    /// them now.
    #[command(group(ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Retry(MailRetryArgs),
    /// Delete old messages (delivered ones by default) with their attempts.
    Purge(MailPurgeArgs),
    /// Check the sender against the relay rules, send one test message now through the
    /// configured relay, and explain any failure.
    Test(MailTestArgs),
}

/// Message states, as `mail list --status` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MailStatusArg {
    /// Waiting for its next attempt.
    Queued,
    /// An attempt under way (or cut short by the process ending).
    Sending,
    /// Accepted by the relay.
    Delivered,
    /// Given up after the configured attempts.
    DeadLetter,
}

/// `syncctl mail list`.
#[derive(Debug, Args)]
pub struct MailListArgs {
    /// Only messages in this state.
    #[arg(long, value_enum, value_name = "STATUS")]
    pub status: Option<MailStatusArg>,
    /// How many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..), value_name = "N")]
    pub limit: i64,
}

/// `syncctl mail show`.
#[derive(Debug, Args)]
pub struct MailShowArgs {
    /// The message's id (from `mail list`).
    #[arg(value_name = "ID")]
    pub id: i64,
}

/// `syncctl mail send`.
#[derive(Debug, Args)]
pub struct MailSendArgs {
    /// At most this many messages in this run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..), value_name = "N")]
    pub limit: i64,
}

/// `syncctl mail retry`.
#[derive(Debug, Args)]
pub struct MailRetryArgs {
    /// The messages to retry (from `mail list --status dead-letter`).
    #[arg(value_name = "ID")]
    pub ids: Vec<i64>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}

/// `syncctl mail purge`.
#[derive(Debug, Args)]
pub struct MailPurgeArgs {
    /// Which messages (repeatable). Default: delivered.
    #[arg(long, value_enum, value_name = "STATUS")]
    pub status: Vec<MailStatusArg>,
    /// Only those last changed longer ago than this (`30d`, `12h`, `0s` for all).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "AGE")]
    pub older_than: std::time::Duration,
}

/// `syncctl mail test`.
#[derive(Debug, Args)]
pub struct MailTestArgs {
    /// The recipient of the test message.
    #[arg(long, value_name = "ADDRESS")]
    pub to: String,
}

/// `syncctl requests`.
#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Only requests in this state.
    #[arg(long, value_parser = ["pending", "delivered", "failed", "dead-letter"], value_name = "STATUS")]
    pub status: Option<String>,
    /// Only requests about this object: its metaverse id (`42` or `mv:42`) or part of its name.
    #[arg(long, value_name = "OBJECT")]
    pub object: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..), value_name = "N")]
    pub limit: i64,
}
