//! `backazon forget`: removes the snapshots the keep rules do not keep.

use anyhow::Result;
use backazon_engine::forget::{self, KeepRules};
use clap::Args;

use crate::ctx::{warn, Ctx, EXIT_PARTIAL};
use crate::format::local_time;

#[derive(Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks (ISO) that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this long of the newest (e.g. 30d, 2w, 6m, 1y)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
}

impl KeepArgs {
    pub(crate) fn rules(&self) -> KeepRules {
        KeepRules {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within.clone(),
        }
    }
}

#[derive(Args)]
pub struct ForgetArgs {
    /// Only the snapshots of this job
    #[arg(long)]
    pub job: Option<String>,
    /// Only the snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards
    #[arg(long)]
    pub prune: bool,
}

pub fn run(ctx: &Ctx, args: &ForgetArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (snaps, problems) = repo.snapshots()?;
    for p in &problems {
        warn(p);
    }
    let selected: Vec<_> = snaps
        .into_iter()
        .filter(|s| args.job.is_none() || s.snapshot.job == args.job)
        .filter(|s| args.host.as_ref().is_none_or(|h| *h == s.snapshot.hostname))
        .collect();
    let rules = args.keep.rules();
    rules.validate()?;
    let decisions = forget::plan(&selected, &rules, &jiff::tz::TimeZone::system())?;
    let removed = if args.dry_run {
        0
    } else {
        forget::forget(&repo, &decisions)?
    };
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({"dry_run": args.dry_run, "removed": removed, "snapshots": decisions})
        );
    } else if !ctx.global.quiet {
        let mut group = None;
        for d in &decisions {
            if group != Some(&d.group) {
                out!("{}:", d.group);
                group = Some(&d.group);
            }
            let time = d
                .time
                .parse()
                .map(local_time)
                .unwrap_or_else(|_| d.time.clone());
            if d.keep {
                out!(
                    "  keep    {}  {}  ({})",
                    d.id.short(),
                    time,
                    d.reasons.join(", ")
                );
            } else {
                out!("  remove  {}  {}", d.id.short(), time);
            }
        }
        let n = decisions.iter().filter(|d| !d.keep).count();
        if args.dry_run {
            out!("{n} snapshots would be removed (dry run: nothing changed)");
        } else {
            out!("{removed} snapshots removed; run `backazon prune` to free their data");
        }
    }
    if args.prune && !args.dry_run {
        return super::prune::prune_repo(ctx, &repo, false, 5.0);
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_PARTIAL })
}
