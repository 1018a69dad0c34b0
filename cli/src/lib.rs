//! `backazon`: the command line over the engine. Parses arguments, finds the repository
//! and password, shows progress on a terminal, prints text or `--json`, and maps
//! outcomes to documented exit codes (see README.md, "Exit codes").
//!
//! The program is this library's [`main`] (src/main.rs calls it); the library exists so
//! that the fuzz targets (fuzz/) reach the jobs file and schedule parsers as the
//! program runs them. They build it without the `console` feature, which leaves parts
//! of it unused there.
#![cfg_attr(
    not(feature = "console"),
    allow(dead_code, unused_imports, unused_variables)
)]

/// `println!` for results: a closed pipe (`backazon ls ... | head`) ends the program
/// quietly, as it ends other Unix tools. SIGPIPE itself stays ignored, so a network
/// connection reset by a server is an error to retry, never the end of the process.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::ctx::print_line(format_args!($($t)*))
    };
}

mod commands;
#[cfg(feature = "console")]
mod console;
mod ctx;
mod daemon;
mod format;
pub mod jobs;
mod notify;
mod password;
pub mod schedule;
mod sys;
mod vss;

use std::process::ExitCode;

use anyhow::Result;
use backazon_engine::Error;
use clap::{Parser, Subcommand};

use commands::{
    backup, check, forget, init, job, key, ls, mount, prune, replica, restore, service, snapshots,
    status,
};
use ctx::{Ctx, Global, EXIT_FATAL, EXIT_LOCKED, EXIT_NO_REPOSITORY, EXIT_UNREACHABLE};

#[derive(Parser)]
#[command(
    name = "backazon",
    version,
    about = "Encrypted, compressed, deduplicated backups you restore by browsing"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init(init::InitArgs),
    /// Back up files and folders into a new snapshot
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots,
    /// List the files of a snapshot: SNAPSHOT[:PATH]
    Ls {
        snapshot: String,
        /// Show mode, size and modification time
        #[arg(short, long)]
        long: bool,
    },
    /// Restore a snapshot (or a path in it: SNAPSHOT[:PATH]) into a folder
    Restore(restore::RestoreArgs),
    /// Verify the repository's structure, and with --read-data every byte
    Check {
        /// Also download and verify every byte of every pack (reads the whole repository)
        #[arg(long)]
        read_data: bool,
    },
    /// Show every snapshot as a read-only folder (Windows: a drive letter) until Ctrl-C
    Mount(mount::MountArgs),
    /// Compare the repository with its replica (--replica), or copy what one side lacks
    Replica {
        #[command(subcommand)]
        command: replica::ReplicaCommand,
    },
    /// Remove snapshots the keep rules do not keep (their data stays until `prune`)
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot uses, and repack mostly unused packs
    Prune {
        /// Say what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Unused space to leave in packs, in percent of the data in use: packs with the
        /// most unused space are repacked until at most this much is left
        #[arg(long, default_value_t = 5.0)]
        max_unused: f64,
    },
    /// Define, list, show, remove and run backup jobs
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Run jobs when they are due, in the foreground (what the service runs)
    Daemon(commands::daemon::DaemonArgs),
    /// Per job: last run, its result, next run
    Status,
    /// The web console on 127.0.0.1: jobs, their state and history, snapshots; prints
    /// its address (with an access token) first
    #[cfg(feature = "console")]
    Ui(console::UiArgs),
    /// Run the daemon as a service (systemd user unit, launchd agent, Windows service)
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Manage the passwords (key files) that open the repository
    Key {
        #[command(subcommand)]
        command: key::KeyCommand,
    },
}

/// The whole program: arguments, the command, its exit code.
pub fn main() -> ExitCode {
    sys::tune_allocator();
    let cli = Cli::parse();
    // Windows: Ctrl-C ends a command with exit code 130, as a shell reports SIGINT on
    // Unix (where the signal itself ends the process). What was stored stays: a
    // backup only adds complete objects, and its lock is stale once the process is gone.
    // `mount` and `daemon` stop cleanly on Ctrl-C instead.
    #[cfg(windows)]
    if !matches!(
        cli.command,
        Command::Mount(_)
            | Command::Daemon(_)
            | Command::Ui(_)
            | Command::Service {
                command: service::ServiceCommand::Run(_)
            }
    ) {
        let _ = ctrlc::set_handler(|| std::process::exit(130));
    }
    let ctx = Ctx::new(cli.global);
    let result = run(&ctx, cli.command);
    ctx.report_retries();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // The first engine error, however much context was added around it.
            let engine = e.chain().find_map(|c| c.downcast_ref::<Error>());
            let code = match engine {
                Some(Error::NoRepository(_)) => EXIT_NO_REPOSITORY,
                Some(Error::Unreachable(_)) => EXIT_UNREACHABLE,
                Some(Error::Locked(_)) => EXIT_LOCKED,
                _ if e.downcast_ref::<crate::jobs::AlreadyRunning>().is_some() => EXIT_LOCKED,
                _ => EXIT_FATAL,
            };
            eprintln!("error: {}", format::printable(&format!("{e:#}"), true));
            ExitCode::from(code)
        }
    }
}

fn run(ctx: &Ctx, command: Command) -> Result<u8> {
    match command {
        Command::Init(args) => init::run(ctx, &args),
        Command::Backup(args) => backup::run(ctx, args).map(|(code, _)| code),
        Command::Snapshots => snapshots::run(ctx),
        Command::Ls { snapshot, long } => ls::run(ctx, &snapshot, long),
        Command::Restore(args) => restore::run(ctx, &args),
        Command::Check { read_data } => check::run(ctx, read_data),
        Command::Mount(args) => mount::run(ctx, &args),
        Command::Replica { command } => replica::run(ctx, command),
        Command::Forget(args) => forget::run(ctx, &args),
        Command::Prune {
            dry_run,
            max_unused,
        } => prune::run(ctx, dry_run, max_unused),
        Command::Job { command } => job::run(ctx, command),
        Command::Daemon(args) => commands::daemon::run(ctx, &args),
        Command::Status => status::run(ctx),
        #[cfg(feature = "console")]
        Command::Ui(args) => console::run(ctx, &args),
        Command::Service { command } => service::run(ctx, command),
        Command::Key { command } => key::run(ctx, command),
    }
}
