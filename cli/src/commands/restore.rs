//! `backazon restore SNAPSHOT[:PATH] --target DIR`.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use backazon_engine::restore::{self, RestoreOptions, RestoreProgress};

use super::split_spec;
use crate::ctx::{patterns, warn, Ctx, EXIT_PARTIAL};
use crate::format::{self, bytes, duration};

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A snapshot's id (or the start of it) or `latest`, and :PATH for a part of it
    snapshot: String,
    /// The folder to restore into (made if missing)
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching this glob (repeatable)
    #[arg(long)]
    include: Vec<String>,
    /// Leave out paths matching this glob (repeatable)
    #[arg(long)]
    exclude: Vec<String>,
    /// Rewrite files already in the target whole (same size and modification time as in
    /// the snapshot); by default they are left as they are, so a restore run again after
    /// an interruption carries on where it stopped
    #[arg(long)]
    overwrite: bool,
    /// Show what would be restored (files, folders, bytes), writing nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<u8> {
    let (target, include, exclude) = (&args.target, &args.include, &args.exclude);
    let repo = ctx.open()?;
    let (snap, path) = split_spec(&args.snapshot);
    // `C:\Users\alice` as the snapshot records it (`/C/Users/alice`) on Windows.
    let path = &backazon_engine::sys::snapshot_path(path);
    let snap = repo.find_snapshot(snap)?;
    let loaded = repo.load_index()?;
    for p in &loaded.problems {
        warn(p);
    }
    let mut opts = RestoreOptions::new(target.clone());
    // Remote reads wait on the network: more of them in flight than there are cores.
    opts.threads = opts.threads.max(repo.backend().concurrency());
    opts.include = patterns(include)?;
    opts.exclude = patterns(exclude)?;
    opts.overwrite = args.overwrite;
    opts.dry_run = args.dry_run;
    let progress = Arc::new(RestoreProgress::new(|m| {
        eprintln!("error: {}", format::printable(m, true))
    }));
    // The selection is counted ahead of the writers for a percentage and time left,
    // when someone watches.
    let events_wanted = ctx.global.json && !ctx.global.quiet && !args.dry_run;
    opts.count_ahead = !args.dry_run && (ctx.show_progress() || events_wanted);
    let ticker = (ctx.show_progress() && !args.dry_run).then(|| {
        let p = progress.clone();
        format::Bar::start(move |bar| {
            counted(&p).show(
                bar,
                format!(
                    "{} restored, {} errors",
                    bytes(p.bytes_done.load(Relaxed)),
                    p.errors.load(Relaxed)
                ),
            )
        })
    });
    let events = events_wanted.then(|| {
        let p = progress.clone();
        format::Repeat::start(format::status_period(), move |elapsed| {
            out!(
                "{}",
                counted(&p).status_line(elapsed, p.errors.load(Relaxed))
            )
        })
    });
    let started = Instant::now();
    let summary = restore::restore(
        &repo,
        &loaded.index,
        &snap.snapshot.tree,
        path,
        &opts,
        &progress,
    );
    drop((ticker, events));
    let summary = summary?;
    if ctx.global.json {
        let mut v = serde_json::to_value(&summary)?;
        if let Some(st) = repo.backend().stats() {
            v["requests"] = serde_json::to_value(st)?;
        }
        out!("{v}");
    } else {
        let left = match summary.unchanged {
            0 => String::new(),
            n => format!(" ({n} files already there whole were left as they were)"),
        };
        ctx.say(format!(
            "{} snapshot {} to {}: {} files, {} folders, {} links, {}{} in {}",
            if args.dry_run {
                "would restore"
            } else {
                "restored"
            },
            snap.id.short(),
            target.display(),
            summary.files,
            summary.dirs,
            summary.links,
            bytes(summary.bytes),
            left,
            duration(started.elapsed())
        ));
    }
    if !ctx.global.quiet && !ctx.global.json {
        report_renamed_and_skipped(&summary);
    }
    if summary.errors > 0 {
        eprintln!(
            "error: {} items could not be restored (named above); the rest was restored",
            summary.errors
        );
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}

/// The restore's files and bytes against its selection's whole, once counted.
fn counted(p: &RestoreProgress) -> format::Counted {
    format::Counted::of(&p.files_done, &p.bytes_done, &p.totals)
}

/// How many renamed entries are named one by one on stderr; `--json` lists all.
const NAMED: usize = 20;

fn report_renamed_and_skipped(summary: &restore::RestoreSummary) {
    for r in summary.renamed.iter().take(NAMED) {
        eprintln!(
            "note: {} restored as {} ({})",
            r.path,
            r.restored_as.display(),
            r.reason.describe()
        );
    }
    if summary.renamed.len() > NAMED {
        eprintln!(
            "note: {} more entries restored under another name (`restore --json` lists all, under \"renamed\")",
            summary.renamed.len() - NAMED
        );
    }
    for s in &summary.skipped {
        eprintln!("note: {} not restored: {}", s.path, s.reason);
    }
}
