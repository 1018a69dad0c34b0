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

pub fn run(
    ctx: &Ctx,
    spec: &str,
    target: PathBuf,
    include: &[String],
    exclude: &[String],
) -> Result<u8> {
    let repo = ctx.open()?;
    let (snap, path) = split_spec(spec);
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
    let progress = Arc::new(RestoreProgress::new(|m| eprintln!("error: {m}")));
    let ticker = ctx.show_progress().then(|| {
        let p = progress.clone();
        format::Ticker::start(move |elapsed| {
            format!(
                "[{}] {} files, {} restored, {} errors",
                duration(elapsed),
                p.files_done.load(Relaxed),
                bytes(p.bytes_done.load(Relaxed)),
                p.errors.load(Relaxed)
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
    drop(ticker);
    let summary = summary?;
    if ctx.global.json {
        let mut v = serde_json::to_value(&summary)?;
        if let Some(st) = repo.backend().stats() {
            v["requests"] = serde_json::to_value(st)?;
        }
        out!("{v}");
    } else {
        ctx.say(format!(
            "restored snapshot {} to {}: {} files, {} folders, {} links, {} in {}",
            snap.id.short(),
            target.display(),
            summary.files,
            summary.dirs,
            summary.links,
            bytes(summary.bytes),
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
