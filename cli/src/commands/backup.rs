//! `backazon backup`: one run over the given paths into a new snapshot, with progress
//! and a summary (also what `job run` calls).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use backazon_engine::backup::{
    self, BackupOptions, BackupProgress, BackupResult, ParentChoice, Selection,
};
use backazon_engine::blob::Compression;
use clap::Args;

use crate::ctx::{patterns, warn, Ctx, EXIT_PARTIAL};
use crate::format::{self, bytes, duration};

/// What a backup leaves out: the same options for `backup` and `job add`.
#[derive(Args, Clone, Default)]
pub struct SelectArgs {
    /// Leave out paths matching this glob (repeatable)
    #[arg(short, long)]
    pub exclude: Vec<String>,
    /// Read exclude globs from this file, one per line (repeatable)
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out folders holding a file of this name (repeatable)
    #[arg(long)]
    pub exclude_if_present: Vec<String>,
    /// Leave out folders holding a valid CACHEDIR.TAG
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out files larger than this (e.g. 500M, 2G)
    #[arg(long, value_parser = format::size_text)]
    pub exclude_larger_than: Option<String>,
}

#[derive(Args, Default)]
pub struct BackupArgs {
    /// Files and folders to back up
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Tag the snapshot (repeatable)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Host name recorded in the snapshot
    #[arg(long)]
    pub host: Option<String>,
    /// Record the snapshot as this job's (jobs run by `job run` and the daemon set it)
    #[arg(long)]
    pub job: Option<String>,
    /// Read every file again instead of trusting unchanged metadata
    #[arg(long)]
    pub force: bool,
    /// Compare against this snapshot instead of the latest of the same paths and host
    #[arg(long)]
    pub parent: Option<String>,
    /// zstd level, 0 to store uncompressed
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=22))]
    pub compression: i32,
    /// Files read and compressed at once [default: number of cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Windows: read the files from a Volume Shadow Copy made for this run, so files held
    /// open by other programs are read whole and consistent (needs administrator rights)
    #[arg(long)]
    pub vss: bool,
    /// Count the selection ahead even with nobody watching the terminal (a job run
    /// started by hand, whose progress the console shows)
    #[arg(skip)]
    pub count_ahead: bool,
}

/// The backup's files and bytes against its selection's whole, once counted.
fn counted(p: &BackupProgress) -> format::Counted {
    format::Counted::of(&p.files_done, &p.bytes_done, &p.totals)
}

/// The terminal's bar.
fn show_backup_progress(bar: &indicatif::ProgressBar, p: &BackupProgress) {
    counted(p).show(
        bar,
        format!(
            "{} added, {} errors  {}",
            bytes(p.bytes_added.load(Relaxed)),
            p.errors.load(Relaxed),
            format::printable(&p.current.lock().unwrap().display().to_string(), false)
        ),
    );
}

/// `--json`: a status line a second, as restic's (`message_type` "status"), before the
/// summary line.
fn progress_event(p: &BackupProgress, elapsed: Duration) -> serde_json::Value {
    let mut v = counted(p).status_line(elapsed, p.errors.load(Relaxed));
    v["bytes_read"] = p.bytes_read.load(Relaxed).into();
    v["bytes_added"] = p.bytes_added.load(Relaxed).into();
    v["current_files"] = serde_json::json!([p.current.lock().unwrap().display().to_string()]);
    v
}

/// Counters whose warnings go to stderr unless `--quiet`.
pub fn progress_for(ctx: &Ctx) -> BackupProgress {
    let quiet = ctx.global.quiet;
    BackupProgress::new(move |m| {
        if !quiet {
            warn(m)
        }
    })
}

pub fn run(ctx: &Ctx, args: BackupArgs) -> Result<(u8, BackupResult)> {
    run_with(ctx, args, None)
}

/// A backup whose live counters someone else reads too (a job run writes them to the
/// job's state for `status` and the console).
pub fn run_with(
    ctx: &Ctx,
    args: BackupArgs,
    progress: Option<Arc<BackupProgress>>,
) -> Result<(u8, BackupResult)> {
    #[cfg(not(windows))]
    if args.vss {
        anyhow::bail!(
            "--vss: Volume Shadow Copies exist only on Windows; here a file that changes \
             while it is read is recorded in the snapshot summary (files_changed_during_read)"
        );
    }
    let sel = &args.select;
    let mut globs = sel.exclude.clone();
    for f in &sel.exclude_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading exclude file {}", f.display()))?;
        globs.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    let mut opts = BackupOptions::new(args.paths.clone());
    opts.selection = Selection {
        excludes: patterns(&globs)?,
        exclude_if_present: sel.exclude_if_present.clone(),
        exclude_caches: sel.exclude_caches,
        exclude_larger_than: sel
            .exclude_larger_than
            .as_deref()
            .map(format::parse_size)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    // The first folders are listed on another core while the password is stretched.
    // (Not from a shadow copy: that is made after the repository is open.)
    if !args.vss {
        opts.prescan = Some(backup::prescan(&opts.paths, &opts.selection.excludes));
    }
    let mut repo = ctx.open()?;
    repo.compression = Compression {
        level: args.compression,
    };
    opts.tags = args.tag.clone();
    opts.job = args.job.clone();
    if let Some(h) = &args.host {
        opts.hostname = h.clone();
    }
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    opts.uploads = repo.backend().concurrency();
    opts.parent = if args.force {
        ParentChoice::None
    } else if let Some(p) = &args.parent {
        ParentChoice::Given(repo.find_snapshot(p)?.id)
    } else {
        ParentChoice::Auto
    };
    let progress = progress.unwrap_or_else(|| Arc::new(progress_for(ctx)));
    // The selection is counted ahead of the readers for a percentage and time left,
    // when someone watches.
    opts.count_ahead =
        args.count_ahead || ctx.show_progress() || (ctx.global.json && !ctx.global.quiet);
    let ticker = ctx.show_progress().then(|| {
        let p = progress.clone();
        format::Bar::start(move |bar| show_backup_progress(bar, &p))
    });
    let events = (ctx.global.json && !ctx.global.quiet).then(|| {
        let p = progress.clone();
        format::Repeat::start(format::status_period(), move |elapsed| {
            out!("{}", progress_event(&p, elapsed))
        })
    });
    // Held until the backup is done: dropping it releases the shadow copies.
    #[cfg(windows)]
    let _shadows = if args.vss {
        let s = crate::vss::ShadowCopies::create(&opts.paths)?;
        opts.source = s.source_map();
        Some(s)
    } else {
        None
    };
    let result = backup::backup(&repo, &opts, &progress);
    drop(ticker);
    drop(events);
    let result = result?;
    let snap = &result.snapshot.snapshot;
    let s = &snap.summary;
    if ctx.global.json {
        let mut v = serde_json::to_value(s)?;
        v["message_type"] = "summary".into();
        v["snapshot_id"] = result.snapshot.id.to_hex().into();
        if let Some(st) = repo.backend().stats() {
            v["requests"] = serde_json::to_value(st)?;
        }
        if let Some(r) = repo.backend().replica_status() {
            v["replica"] = serde_json::to_value(r)?;
        }
        out!("{v}");
    } else {
        ctx.say(format!(
            "Files: {} new, {} changed, {} unchanged\nDirs:  {} new, {} changed, {} unchanged\n\
             Added to the repository: {} ({} of new data before compression)\n\
             Processed {} files, {} in {}",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs_new,
            s.dirs_changed,
            s.dirs_unchanged,
            bytes(s.bytes_added),
            bytes(s.data_added_raw),
            s.total_files,
            bytes(s.total_bytes),
            duration(Duration::from_secs_f64(s.duration_seconds)),
        ));
        if s.files_changed_during_read > 0 {
            ctx.say(format!(
                "{} files changed while they were read",
                s.files_changed_during_read
            ));
        }
        if let Some(st) = repo.backend().stats() {
            ctx.say(format!(
                "Requests: {} PUT, {} GET, {} LIST, {} HEAD, {} DELETE; {} sent, {} received",
                st.puts,
                st.gets,
                st.lists,
                st.heads,
                st.deletes,
                bytes(st.bytes_sent),
                bytes(st.bytes_received)
            ));
        }
        ctx.say(format!("snapshot {} saved", result.snapshot.id.short()));
    }
    if let Some(r) = repo.backend().replica_status() {
        if r.objects_behind > 0 && !ctx.global.quiet {
            eprintln!(
                "warning: the replica is behind: {} objects were stored on the primary only ({}); \
                 run `backazon replica sync` once the replica is reachable",
                r.objects_behind,
                r.first_error.as_deref().unwrap_or("unknown error")
            );
        }
    }
    if s.errors > 0 {
        if !ctx.global.quiet {
            eprintln!(
                "warning: {} items could not be read and are not in the snapshot (exit code {EXIT_PARTIAL})",
                s.errors
            );
        }
        return Ok((EXIT_PARTIAL, result));
    }
    Ok((0, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_events_say_how_far_and_how_long_once_counted() {
        let p = BackupProgress::new(|_| {});
        p.bytes_done.store(250, Relaxed);
        p.files_done.store(3, Relaxed);
        let v = progress_event(&p, Duration::from_secs(10));
        assert_eq!(v["message_type"], "status");
        assert!(v.get("percent_done").is_none(), "{v}");
        p.totals.bytes.store(1000, Relaxed);
        p.totals.files.store(9, Relaxed);
        p.totals.done.store(true, Relaxed);
        let v = progress_event(&p, Duration::from_secs(10));
        assert_eq!(v["percent_done"], 0.25);
        assert_eq!(v["total_files"], 9);
        assert_eq!(v["seconds_remaining"], 30);
    }
}
