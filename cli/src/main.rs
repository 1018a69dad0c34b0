//! `backazon`: the command line over the engine. Parses arguments, finds the repository
//! and password, shows progress on a terminal, prints text or `--json`, and maps
//! outcomes to documented exit codes (see README.md, "Exit codes").

/// `println!` for results: a closed pipe (`backazon ls ... | head`) ends the program
/// quietly, as it ends other Unix tools. SIGPIPE itself stays ignored, so a network
/// connection reset by a server is an error to retry, never the end of the process.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::print_line(format_args!($($t)*))
    };
}

mod daemon;
mod format;
mod job_cmd;
mod jobs;
mod mount;
mod password;
mod schedule;
mod service;
mod vss;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use backazon_engine::backend::replica::{self, Replicated};
use backazon_engine::backend::s3::{S3Backend, S3Options};
use backazon_engine::backup::{self, BackupOptions, BackupProgress, ParentChoice, Selection};
use backazon_engine::blob::Compression;
use backazon_engine::forget::{self, KeepRules};
use backazon_engine::glob::Pattern;
use backazon_engine::prune::{self, PruneOptions};
use backazon_engine::restore::{self, RestoreOptions, RestoreProgress};
use backazon_engine::snapshot::SnapshotEntry;
use backazon_engine::tree::{Node, NodeKind};
use backazon_engine::{check, Backend, Error, Id, LocalBackend, Repository, DEFAULT_PACK_SIZE};
use clap::{Args, Parser, Subcommand};

use format::{bytes, duration, local_time};
use password::PasswordSource;

/// Exit codes, as restic's so scripts carry over.
const EXIT_FATAL: u8 = 1;
const EXIT_PARTIAL: u8 = 3;
const EXIT_NO_REPOSITORY: u8 = 10;
pub(crate) const EXIT_LOCKED: u8 = 11;

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

#[derive(Args, Clone)]
struct Global {
    /// Repository: a local folder, or s3://bucket/prefix
    #[arg(short = 'r', long, env = "BACKAZON_REPOSITORY", global = true)]
    repo: Option<String>,
    /// A second copy of the repository (a folder or s3://bucket/prefix): every object
    /// written goes to both; reads fall back to it
    #[arg(long, env = "BACKAZON_REPLICA", global = true)]
    replica: Option<String>,
    /// S3-compatible server of an s3:// replica [default: as --s3-endpoint]
    #[arg(long, env = "BACKAZON_REPLICA_S3_ENDPOINT", global = true)]
    replica_s3_endpoint: Option<String>,
    /// S3-compatible server for s3:// repositories [default: AWS, or AWS_ENDPOINT_URL]
    #[arg(long, env = "BACKAZON_S3_ENDPOINT", global = true)]
    s3_endpoint: Option<String>,
    /// Address buckets as http://host/bucket (most S3-compatible servers need this)
    #[arg(long, env = "BACKAZON_S3_PATH_STYLE", global = true)]
    s3_path_style: bool,
    /// S3 region [default: AWS_REGION or the profile's]
    #[arg(long, env = "BACKAZON_S3_REGION", global = true)]
    s3_region: Option<String>,
    /// S3 requests in flight at once
    #[arg(
        long,
        env = "BACKAZON_S3_CONNECTIONS",
        default_value_t = 8,
        global = true
    )]
    s3_connections: usize,
    /// Read the password from the first line of this file
    #[arg(long, env = "BACKAZON_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use what it prints as the password
    #[arg(long, env = "BACKAZON_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Do not use the local cache of index and tree data
    #[arg(long, global = true)]
    no_cache: bool,
    /// Where the local cache lives [default: $XDG_CACHE_HOME/backazon or ~/.cache/backazon]
    #[arg(long, env = "BACKAZON_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// The jobs file [default: $XDG_CONFIG_HOME/backazon/jobs.toml; macOS: Application
    /// Support; Windows: %APPDATA%]
    #[arg(long, env = "BACKAZON_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Where job state and the log live [default: $XDG_STATE_HOME/backazon]
    #[arg(long, env = "BACKAZON_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init,
    /// Back up files and folders into a new snapshot
    Backup(BackupArgs),
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
    Restore {
        snapshot: String,
        #[arg(short, long)]
        target: PathBuf,
        /// Restore only paths matching this glob (repeatable)
        #[arg(long)]
        include: Vec<String>,
        /// Leave out paths matching this glob (repeatable)
        #[arg(long)]
        exclude: Vec<String>,
    },
    /// Verify the repository's structure, and with --read-data every byte
    Check {
        #[arg(long)]
        read_data: bool,
    },
    /// Show every snapshot as a read-only folder (Windows: a drive letter) until Ctrl-C
    Mount {
        /// An empty folder (Windows: a free drive letter such as B:)
        mountpoint: PathBuf,
        /// Memory for decoded chunks and folders
        #[arg(long, default_value = "64MiB", value_parser = format::parse_size)]
        cache_size: u64,
        /// Let other users see the drive (needs user_allow_other in /etc/fuse.conf)
        #[arg(long)]
        allow_other: bool,
        /// Let the drive's threads run on any CPU, instead of on the CPU of the one
        /// program reading it (Linux)
        #[arg(long)]
        no_follow_reader: bool,
    },
    /// Compare the repository with its replica (--replica), or copy what one side lacks
    Replica {
        #[command(subcommand)]
        command: ReplicaCommand,
    },
    /// Remove snapshots the keep rules do not keep (their data stays until `prune`)
    Forget(ForgetArgs),
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
        command: job_cmd::JobCommand,
    },
    /// Run jobs when they are due, in the foreground (what the service runs)
    Daemon,
    /// Per job: last run, its result, next run
    Status,
    /// Install the daemon as a service (systemd user unit, launchd agent, Windows task)
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Manage the passwords (key files) that open the repository
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum ReplicaCommand {
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

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a password
    Add(NewPassword),
    /// List key files
    List,
    /// Remove a key file (not the one in use)
    Remove { id: String },
    /// Change the password in use
    Passwd(NewPassword),
}

#[derive(Args)]
struct NewPassword {
    /// Read the new password from this file
    #[arg(long, env = "BACKAZON_NEW_PASSWORD_FILE")]
    new_password_file: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
pub(crate) struct KeepArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks (ISO) that have one
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this long of the newest (e.g. 30d, 2w, 6m, 1y)
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
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
struct ForgetArgs {
    /// Only the snapshots of this job
    #[arg(long)]
    job: Option<String>,
    /// Only the snapshots of this host
    #[arg(long)]
    host: Option<String>,
    #[command(flatten)]
    keep: KeepArgs,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Prune afterwards
    #[arg(long)]
    prune: bool,
}

/// What a backup leaves out: the same options for `backup` and `job add`.
#[derive(Args, Clone, Default)]
pub(crate) struct SelectArgs {
    /// Leave out paths matching this glob (repeatable)
    #[arg(short, long)]
    exclude: Vec<String>,
    /// Read exclude globs from this file, one per line (repeatable)
    #[arg(long)]
    exclude_file: Vec<PathBuf>,
    /// Leave out folders holding a file of this name (repeatable)
    #[arg(long)]
    exclude_if_present: Vec<String>,
    /// Leave out folders holding a valid CACHEDIR.TAG
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out files larger than this (e.g. 500M, 2G)
    #[arg(long, value_parser = format::size_text)]
    exclude_larger_than: Option<String>,
}

#[derive(Args, Default)]
pub(crate) struct BackupArgs {
    /// Files and folders to back up
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    select: SelectArgs,
    /// Tag the snapshot (repeatable)
    #[arg(long)]
    tag: Vec<String>,
    /// Host name recorded in the snapshot
    #[arg(long)]
    host: Option<String>,
    /// Record the snapshot as this job's (jobs run by `job run` and the daemon set it)
    #[arg(long)]
    job: Option<String>,
    /// Read every file again instead of trusting unchanged metadata
    #[arg(long)]
    force: bool,
    /// Compare against this snapshot instead of the latest of the same paths and host
    #[arg(long)]
    parent: Option<String>,
    /// zstd level, 0 to store uncompressed
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: i32,
    /// Files read and compressed at once [default: number of cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Windows: read the files from a Volume Shadow Copy made for this run, so files held
    /// open by other programs are read whole and consistent (needs administrator rights)
    #[arg(long)]
    vss: bool,
}

pub(crate) struct Ctx {
    global: Global,
}

impl Ctx {
    fn backend(&self) -> Result<Arc<dyn Backend>> {
        let primary = self.primary()?;
        match self.replica()? {
            Some(replica) => Ok(Arc::new(Replicated::new(primary, replica))),
            None => Ok(primary),
        }
    }

    fn primary(&self) -> Result<Arc<dyn Backend>> {
        let Some(repo) = &self.global.repo else {
            bail!("no repository given: use --repo or set BACKAZON_REPOSITORY");
        };
        self.open_backend(repo, self.global.s3_endpoint.clone())
    }

    fn replica(&self) -> Result<Option<Arc<dyn Backend>>> {
        let Some(url) = &self.global.replica else {
            return Ok(None);
        };
        let endpoint = self
            .global
            .replica_s3_endpoint
            .clone()
            .or_else(|| self.global.s3_endpoint.clone());
        self.open_backend(url, endpoint).map(Some)
    }

    fn open_backend(&self, url: &str, endpoint: Option<String>) -> Result<Arc<dyn Backend>> {
        if url.starts_with("s3://") {
            let mut o = S3Options::from_url(url)?;
            o.endpoint = endpoint;
            o.path_style = self.global.s3_path_style;
            o.region = self.global.s3_region.clone();
            o.connections = self.global.s3_connections.max(1);
            return Ok(Arc::new(S3Backend::new(o)?));
        }
        if url.contains("://") {
            bail!("{url}: repositories are local folders or s3://bucket/prefix");
        }
        Ok(Arc::new(LocalBackend::new(url)))
    }

    fn passwords(&self) -> PasswordSource {
        PasswordSource {
            file: self.global.password_file.clone(),
            command: self.global.password_command.clone(),
        }
    }

    fn open(&self) -> Result<Repository> {
        let backend = self.backend()?;
        // Fail on a missing repository before asking for a password.
        backend
            .exists(backazon_engine::Kind::Config, "config")
            .and_then(|there| {
                if there {
                    Ok(())
                } else {
                    Err(Error::NoRepository(backend.location()))
                }
            })?;
        let pw = self.passwords().get()?;
        let repo = Repository::open(backend, pw.as_bytes())?;
        let cache = if self.global.no_cache {
            None
        } else {
            self.global
                .cache_dir
                .clone()
                .or_else(backazon_engine::cache::Cache::default_base)
        };
        Ok(repo.with_cache(cache))
    }

    fn say(&self, msg: impl AsRef<str>) {
        if !self.global.quiet && !self.global.json {
            out!("{}", msg.as_ref());
        }
    }

    fn show_progress(&self) -> bool {
        !self.global.quiet && !self.global.json && std::io::stderr().is_terminal()
    }
}

fn print_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // End as a tool killed by SIGPIPE would (exit status 141 in the shell).
            // SAFETY: restoring a signal's default action and raising it have no
            // preconditions.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        std::process::exit(1);
    }
}

fn warn(msg: &str) {
    eprintln!("warning: {msg}");
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let ctx = Ctx { global: cli.global };
    match run(&ctx, cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match e.downcast_ref::<Error>() {
                Some(Error::NoRepository(_)) => EXIT_NO_REPOSITORY,
                Some(Error::Locked(_)) => EXIT_LOCKED,
                _ if e.downcast_ref::<jobs::AlreadyRunning>().is_some() => EXIT_LOCKED,
                _ if e
                    .chain()
                    .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Locked(_)))) =>
                {
                    EXIT_LOCKED
                }
                _ => EXIT_FATAL,
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// glibc raises its mmap threshold as large buffers (packs, chunks) are freed, after
/// which freed chunk buffers stay in per-thread arenas: peak RSS nearly doubles.
/// Fixed thresholds keep large buffers mapped and returned (measured on the kernel
/// tree: 113-128 MB down to about 66 MB, same time).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

fn run(ctx: &Ctx, command: Command) -> Result<u8> {
    match command {
        Command::Init => init(ctx),
        Command::Backup(args) => run_backup(ctx, args).map(|(code, _)| code),
        Command::Snapshots => snapshots(ctx),
        Command::Ls { snapshot, long } => ls(ctx, &snapshot, long),
        Command::Restore {
            snapshot,
            target,
            include,
            exclude,
        } => run_restore(ctx, &snapshot, target, &include, &exclude),
        Command::Check { read_data } => run_check(ctx, read_data),
        Command::Mount {
            mountpoint,
            cache_size,
            allow_other,
            no_follow_reader,
        } => mount::run(ctx, &mountpoint, cache_size, allow_other, !no_follow_reader),
        Command::Replica { command } => run_replica(ctx, command),
        Command::Forget(args) => run_forget(ctx, &args),
        Command::Prune {
            dry_run,
            max_unused,
        } => run_prune(ctx, dry_run, max_unused),
        Command::Job { command } => job_cmd::run(ctx, command),
        Command::Daemon => job_cmd::daemon(ctx),
        Command::Status => job_cmd::status(ctx),
        Command::Service { command } => service::run(ctx, command),
        Command::Key { command } => key(ctx, command),
    }
}

fn init(ctx: &Ctx) -> Result<u8> {
    let backend = ctx.backend()?;
    if backend.exists(backazon_engine::Kind::Config, "config")? {
        return Err(Error::RepositoryExists(backend.location()).into());
    }
    let pw = ctx.passwords().get_new()?;
    let repo = Repository::init(backend.clone(), pw.as_bytes(), DEFAULT_PACK_SIZE)?;
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({"id": repo.config().id, "location": backend.location(), "version": repo.config().version})
        );
    }
    ctx.say(format!(
        "created backazon repository {} at {}\n\nKeep the password safe: without it the data cannot be recovered.",
        repo.config().id.short(),
        backend.location()
    ));
    Ok(0)
}

fn patterns(globs: &[String]) -> Result<Vec<Pattern>> {
    globs
        .iter()
        .map(|g| Pattern::new(g).with_context(|| format!("pattern {g:?}")))
        .collect()
}

fn run_backup(ctx: &Ctx, args: BackupArgs) -> Result<(u8, SnapshotEntry)> {
    #[cfg(not(windows))]
    if args.vss {
        bail!(
            "--vss: Volume Shadow Copies exist only on Windows; here a file that changes \
             while it is read is recorded in the snapshot summary (files_changed_during_read)"
        );
    }
    let mut repo = ctx.open()?;
    repo.compression = Compression {
        level: args.compression,
    };
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
    let quiet = ctx.global.quiet;
    let progress = Arc::new(BackupProgress::new(move |m| {
        if !quiet {
            warn(m)
        }
    }));
    let ticker = ctx.show_progress().then(|| {
        let p = progress.clone();
        format::Ticker::start(move |elapsed| {
            let read = p.bytes_read.load(Relaxed);
            let rate = read as f64 / elapsed.as_secs_f64().max(0.001);
            format!(
                "[{}] {} files, {} read ({}/s), {} added, {} errors  {}",
                duration(elapsed),
                p.files_done.load(Relaxed),
                bytes(read),
                bytes(rate as u64),
                bytes(p.bytes_added.load(Relaxed)),
                p.errors.load(Relaxed),
                p.current.lock().unwrap().display()
            )
        })
    });
    // Held until the backup is done: dropping it releases the shadow copies.
    #[cfg(windows)]
    let _shadows = if args.vss {
        let s = vss::ShadowCopies::create(&opts.paths)?;
        opts.source = s.source_map();
        Some(s)
    } else {
        None
    };
    let result = backup::backup(&repo, &opts, &progress);
    drop(ticker);
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
        return Ok((EXIT_PARTIAL, result.snapshot));
    }
    Ok((0, result.snapshot))
}

fn snapshots(ctx: &Ctx) -> Result<u8> {
    let repo = ctx.open()?;
    let (snaps, problems) = repo.snapshots()?;
    for p in &problems {
        warn(p);
    }
    if ctx.global.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(&s.snapshot).expect("snapshot serialises");
                v["id"] = s.id.to_hex().into();
                v["short_id"] = s.id.short().into();
                v
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if !ctx.global.quiet {
        out!(
            "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  Paths",
            "ID",
            "Time",
            "Host",
            "Tags",
            "Size"
        );
        for s in &snaps {
            let sn = &s.snapshot;
            out!(
                "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {}",
                s.id.short(),
                sn.timestamp()
                    .map(local_time)
                    .unwrap_or_else(|| sn.time.clone()),
                sn.hostname,
                sn.tags.join(","),
                bytes(sn.summary.total_bytes),
                sn.paths.join(" ")
            );
        }
        out!("{} snapshots", snaps.len());
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_PARTIAL })
}

/// Splits `SNAPSHOT[:PATH]`.
fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once(':') {
        Some((s, p)) => (s, p),
        None => (spec, ""),
    }
}

fn node_json(path: &str, n: &Node) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": path,
        "name": n.name.to_string_lossy(),
        "type": n.kind,
        "size": n.size,
        "mode": n.mode,
        "uid": n.uid,
        "gid": n.gid,
        "mtime": format::nanos_to_rfc3339(n.mtime),
    });
    if let Some(t) = &n.target {
        v["target"] = t.to_string_lossy().into();
    }
    v
}

fn ls(ctx: &Ctx, spec: &str, long: bool) -> Result<u8> {
    let repo = ctx.open()?;
    let (snap, path) = split_spec(spec);
    let snap = repo.find_snapshot(snap)?;
    let loaded = repo.load_index()?;
    let index = &loaded.index;
    let base = path.trim_end_matches('/');
    let start = restore::find_node(&repo, index, &snap.snapshot.tree, base)?;
    let mut out = Vec::new();
    let mut stack: Vec<(String, Id)> = Vec::new();
    match &start {
        None => stack.push((String::new(), snap.snapshot.tree)),
        Some(n) => {
            out.push((base.to_string(), n.clone()));
            if let Some(sub) = n.subtree {
                stack.push((base.to_string(), sub));
            }
        }
    }
    let json = ctx.global.json;
    let mut items = Vec::new();
    let mut emit = |path: &str, n: &Node| {
        if json {
            items.push(node_json(path, n));
        } else if long {
            out!(
                "{} {:>5} {:>5} {:>12} {}  {}{}",
                format::mode_string(n),
                n.uid,
                n.gid,
                n.size,
                format::nanos_to_local(n.mtime),
                path,
                n.target
                    .as_ref()
                    .map(|t| format!(" -> {}", t.to_string_lossy()))
                    .unwrap_or_default()
            );
        } else {
            out!("{path}");
        }
    };
    for (p, n) in &out {
        emit(p, n);
    }
    // Depth-first, in name order, like `find`.
    fn visit(
        repo: &Repository,
        index: &backazon_engine::index::Index,
        path: &str,
        tree: &Id,
        emit: &mut dyn FnMut(&str, &Node),
    ) -> Result<()> {
        let t = repo.read_tree(index, tree)?;
        for n in &t.nodes {
            let p = format!("{path}/{}", n.name.to_string_lossy());
            emit(&p, n);
            if n.kind == NodeKind::Dir {
                if let Some(sub) = &n.subtree {
                    visit(repo, index, &p, sub, emit)?;
                }
            }
        }
        Ok(())
    }
    for (p, t) in stack {
        visit(&repo, index, &p, &t, &mut emit)?;
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&items)?);
    }
    Ok(0)
}

fn run_restore(
    ctx: &Ctx,
    spec: &str,
    target: PathBuf,
    include: &[String],
    exclude: &[String],
) -> Result<u8> {
    let repo = ctx.open()?;
    let (snap, path) = split_spec(spec);
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
    if summary.errors > 0 {
        eprintln!(
            "error: {} items could not be restored (named above); the rest was restored",
            summary.errors
        );
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}

fn run_replica(ctx: &Ctx, command: ReplicaCommand) -> Result<u8> {
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

fn run_check(ctx: &Ctx, read_data: bool) -> Result<u8> {
    let repo = ctx.open()?;
    let quiet = ctx.global.quiet || ctx.global.json;
    let report = check::check(&repo, read_data, &|step| {
        if !quiet {
            out!("{step}");
        }
    })?;
    if ctx.global.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            warn(w);
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        ctx.say(format!(
            "{} snapshots, {} trees, {} packs, {} blobs{}",
            report.snapshots,
            report.trees,
            report.packs,
            report.blobs,
            if read_data {
                format!(", {} read", bytes(report.bytes_read))
            } else {
                String::new()
            }
        ));
        if report.is_ok() {
            ctx.say("no errors were found");
        }
    }
    if report.is_ok() {
        Ok(0)
    } else {
        if !ctx.global.json {
            eprintln!("{} errors found", report.errors.len());
        }
        Ok(EXIT_FATAL)
    }
}

fn run_forget(ctx: &Ctx, args: &ForgetArgs) -> Result<u8> {
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
        return prune_repo(ctx, &repo, false, 5.0);
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_PARTIAL })
}

fn run_prune(ctx: &Ctx, dry_run: bool, max_unused: f64) -> Result<u8> {
    let repo = ctx.open()?;
    prune_repo(ctx, &repo, dry_run, max_unused)
}

fn prune_repo(ctx: &Ctx, repo: &Repository, dry_run: bool, max_unused: f64) -> Result<u8> {
    let quiet = ctx.global.quiet || ctx.global.json;
    let opts = PruneOptions {
        dry_run,
        max_unused: max_unused / 100.0,
        ..Default::default()
    };
    let r = prune::prune(repo, &opts, &|line| {
        if !quiet {
            out!("{line}");
        }
    })?;
    if ctx.global.json {
        out!("{}", serde_json::to_string_pretty(&r)?);
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
    }
    Ok(0)
}

fn new_password(ctx: &Ctx, np: &NewPassword) -> Result<String> {
    if let Some(f) = &np.new_password_file {
        PasswordSource {
            file: Some(f.clone()),
            command: None,
        }
        .get()
    } else if let Ok(pw) = std::env::var("BACKAZON_NEW_PASSWORD") {
        Ok(pw)
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no new password given: use --new-password-file or set BACKAZON_NEW_PASSWORD");
        }
        let _ = ctx;
        PasswordSource::default().get_new_prompt_only()
    }
}

fn key(ctx: &Ctx, command: KeyCommand) -> Result<u8> {
    let mut repo = ctx.open()?;
    match command {
        KeyCommand::Add(np) => {
            let pw = new_password(ctx, &np)?;
            let name = repo.add_key(pw.as_bytes())?;
            ctx.say(format!("added key {}", &name[..8]));
        }
        KeyCommand::List => {
            let keys = repo.keys_list()?;
            if ctx.global.json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|(n, k)| {
                        serde_json::json!({"id": n, "current": n == repo.key_name(), "created": k.created,
                        "hostname": k.hostname, "username": k.username, "kdf": k.kdf, "rounds": k.rounds})
                    })
                    .collect();
                out!("{}", serde_json::to_string_pretty(&list)?);
            } else if !ctx.global.quiet {
                out!(" {:<8}  {:<19}  {:<16}  User", "ID", "Created", "Host");
                for (n, k) in &keys {
                    let mark = if n == repo.key_name() { "*" } else { " " };
                    let created = k
                        .created
                        .parse()
                        .map(local_time)
                        .unwrap_or_else(|_| k.created.clone());
                    out!(
                        "{mark}{:<8}  {:<19}  {:<16}  {}",
                        &n[..8],
                        created,
                        k.hostname,
                        k.username
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repo.keys_list()?;
            let matches: Vec<_> = keys.iter().filter(|(n, _)| n.starts_with(&id)).collect();
            match matches.as_slice() {
                [(name, _)] => {
                    repo.remove_key(name)?;
                    ctx.say(format!("removed key {}", &name[..8]));
                }
                [] => bail!("no key file matches {id:?}"),
                _ => bail!("{id:?} matches several key files; give more digits"),
            }
        }
        KeyCommand::Passwd(np) => {
            let pw = new_password(ctx, &np)?;
            let name = repo.change_password(pw.as_bytes())?;
            ctx.say(format!("password changed (key {})", &name[..8]));
        }
    }
    Ok(0)
}
