//! `backazon prune`: deletes the data no snapshot uses (also `forget --prune`, `job prune`).

use anyhow::Result;
use backazon_engine::prune::{self, PruneOptions};
use backazon_engine::Repository;

use crate::ctx::{warn, Ctx};
use crate::format::{bytes, StepDisplay};

pub fn run(ctx: &Ctx, dry_run: bool, max_unused: f64) -> Result<u8> {
    let repo = ctx.open()?;
    prune_repo(ctx, &repo, dry_run, max_unused)
}

pub fn prune_repo(ctx: &Ctx, repo: &Repository, dry_run: bool, max_unused: f64) -> Result<u8> {
    let opts = PruneOptions {
        dry_run,
        max_unused: max_unused / 100.0,
        ..Default::default()
    };
    let shown = StepDisplay::start(
        ctx.show_progress(),
        ctx.global.json && !ctx.global.quiet,
        !ctx.global.quiet && !ctx.global.json && !ctx.show_progress(),
    );
    let r = prune::prune(repo, &opts, &shown.steps);
    drop(shown);
    let r = r?;
    if ctx.global.json {
        out!("{}", serde_json::to_string(&r)?);
    } else {
        if r.missing_blobs > 0 {
            warn(&format!(
                "{} blobs used by snapshots are in no pack; run `backazon check`",
                r.missing_blobs
            ));
        }
        ctx.say(format!(
            "{}{} packs removed, {} repacked into {} ({} copied); {} packs, {} before -> {} packs, {} after",
            if dry_run { "dry run, would be: " } else { "" },
            r.packs_unused,
            r.packs_repacked,
            r.packs_written,
            bytes(r.bytes_copied),
            r.packs_before,
            bytes(r.bytes_before),
            r.packs_after,
            bytes(r.bytes_after)
        ));
        if r.temporary_files_removed > 0 {
            ctx.say(format!(
                "{} temporary files of interrupted writes removed ({})",
                r.temporary_files_removed,
                bytes(r.temporary_bytes_removed)
            ));
        }
    }
    Ok(0)
}
