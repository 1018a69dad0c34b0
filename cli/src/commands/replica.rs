//! `backazon replica sync|check`: the repository against its second copy.

use anyhow::{bail, Result};
use backazon_engine::backend::replica::{self};
use clap::Subcommand;

use crate::ctx::{Ctx, EXIT_FATAL};

#[derive(Subcommand)]
pub enum ReplicaCommand {
    /// Copy every object one side lacks or holds damaged from the other (every object on
    /// both sides is read and checked against its name, unless --quick)
    Sync {
        /// Compare only names and sizes: copies what is missing, faster, but a damaged
        /// copy of the same size goes unnoticed
        #[arg(long)]
        quick: bool,
    },
    /// Compare both sides object by object, every byte; exit 1 if they differ
    Check,
}

pub fn run(ctx: &Ctx, command: ReplicaCommand) -> Result<u8> {
    let primary = ctx.primary()?;
    let Some(replica) = ctx.replica()? else {
        bail!("no replica given: use --replica or set BACKAZON_REPLICA");
    };
    let (verify, repair) = match command {
        ReplicaCommand::Sync { quick } => (!quick, true),
        ReplicaCommand::Check => (true, false),
    };
    let quiet = ctx.global.quiet || ctx.global.json;
    let report = replica::sync(&*primary, &*replica, verify, repair, &|line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    if ctx.global.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    }
    let unrepaired = report.differences.iter().filter(|d| !d.repaired).count();
    ctx.say(format!(
        "{} objects compared, {} differences, {} copied",
        report.objects,
        report.differences.len(),
        report.copied
    ));
    Ok(if unrepaired > 0 { EXIT_FATAL } else { 0 })
}
