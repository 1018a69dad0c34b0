//! What every command shares: the global options, the repository they name (opened
//! with its password and cache), printing results and warnings, and the exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use backazon_engine::backend::replica::Replicated;
#[cfg(feature = "s3")]
use backazon_engine::backend::s3::{S3Backend, S3Options};
use backazon_engine::glob::Pattern;
use backazon_engine::{Backend, Error, LocalBackend, Repository};
use clap::Args;

use crate::password::PasswordSource;

/// Exit codes, as restic's so scripts carry over.
pub const EXIT_FATAL: u8 = 1;
pub const EXIT_PARTIAL: u8 = 3;
pub const EXIT_NO_REPOSITORY: u8 = 10;
pub const EXIT_LOCKED: u8 = 11;
pub const EXIT_UNREACHABLE: u8 = 12;

/// Options every command takes, shown under their own heading after the command's own
/// (as restic's "Global Flags").
#[derive(Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Repository: a local folder, or s3://bucket/prefix
    #[arg(short = 'r', long, env = "BACKAZON_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// A second copy of the repository (a folder or s3://bucket/prefix): every object
    /// written goes to both; reads fall back to it
    #[arg(long, env = "BACKAZON_REPLICA", global = true)]
    pub replica: Option<String>,
    /// S3-compatible server of an s3:// replica [default: as --s3-endpoint]
    #[arg(long, env = "BACKAZON_REPLICA_S3_ENDPOINT", global = true)]
    pub replica_s3_endpoint: Option<String>,
    /// S3-compatible server for s3:// repositories [default: AWS, or AWS_ENDPOINT_URL]
    #[arg(long, env = "BACKAZON_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// Address buckets as http://host/bucket (most S3-compatible servers need this)
    #[arg(long, env = "BACKAZON_S3_PATH_STYLE", global = true)]
    pub s3_path_style: bool,
    /// S3 region [default: AWS_REGION or the profile's]
    #[arg(long, env = "BACKAZON_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// S3 requests in flight at once
    #[arg(
        long,
        env = "BACKAZON_S3_CONNECTIONS",
        default_value_t = 8,
        global = true
    )]
    pub s3_connections: usize,
    /// Read the password from the first line of this file
    #[arg(long, env = "BACKAZON_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use what it prints as the password
    #[arg(long, env = "BACKAZON_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Do not use the local cache of index and tree data
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Where the local cache lives [default: $XDG_CACHE_HOME/backazon or ~/.cache/backazon]
    #[arg(long, env = "BACKAZON_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Largest size of the local data cache of an S3 repository (pack parts read by
    /// mount and restore, so that reading them again makes no request)
    #[arg(long, env = "BACKAZON_CACHE_SIZE", global = true, default_value = "2GiB",
          value_parser = crate::format::parse_size)]
    pub cache_size: u64,
    /// The jobs file [default: $XDG_CONFIG_HOME/backazon/jobs.toml; macOS: Application
    /// Support; Windows: %APPDATA%]
    #[arg(long, env = "BACKAZON_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Where job state and the log live [default: $XDG_STATE_HOME/backazon]
    #[arg(long, env = "BACKAZON_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

pub struct Ctx {
    pub global: Global,
    /// Every S3 backend this command opened, for the retries it made (see `report_retries`).
    opened: std::sync::Mutex<Vec<Arc<dyn Backend>>>,
    /// The password that opened the repository: a second opening in the same command (a
    /// job's retention after its backup) neither runs the password command nor asks
    /// again.
    password: std::sync::Mutex<Option<crate::password::Password>>,
}

impl Ctx {
    pub fn new(global: Global) -> Ctx {
        Ctx {
            global,
            opened: Default::default(),
            password: Default::default(),
        }
    }

    /// Says on stderr how many requests had to be sent again (resets, 503 SlowDown,
    /// timeouts, bodies cut short), so a flaky link or a busy server is visible even when
    /// everything succeeded.
    pub fn report_retries(&self) {
        if self.global.quiet {
            return;
        }
        for b in self.opened.lock().unwrap().iter() {
            if let Some(st) = b.stats().filter(|s| s.retries > 0) {
                eprintln!(
                    "note: {} of {} requests to {} were sent again after a failure (connection \
                     reset, 503 SlowDown, timeout, response cut short)",
                    st.retries,
                    st.puts + st.gets + st.lists + st.deletes + st.heads,
                    b.location()
                );
            }
        }
    }

    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let primary = self.primary()?;
        match self.replica()? {
            Some(replica) => Ok(Arc::new(Replicated::new(primary, replica))),
            None => Ok(primary),
        }
    }

    pub fn primary(&self) -> Result<Arc<dyn Backend>> {
        let Some(repo) = &self.global.repo else {
            bail!("no repository given: use --repo or set BACKAZON_REPOSITORY");
        };
        self.open_backend(repo, self.global.s3_endpoint.clone())
    }

    pub fn replica(&self) -> Result<Option<Arc<dyn Backend>>> {
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

    pub fn open_backend(&self, url: &str, endpoint: Option<String>) -> Result<Arc<dyn Backend>> {
        #[cfg(feature = "s3")]
        if url.starts_with("s3://") {
            let mut o = S3Options::from_url(url)?;
            o.endpoint = endpoint;
            o.path_style = self.global.s3_path_style;
            o.region = self.global.s3_region.clone();
            o.connections = self.global.s3_connections.max(1);
            let b: Arc<dyn Backend> = Arc::new(S3Backend::new(o)?);
            self.opened.lock().unwrap().push(b.clone());
            return Ok(b);
        }
        #[cfg(not(feature = "s3"))]
        if url.starts_with("s3://") {
            let _ = endpoint;
            bail!(
                "{url}: this build of backazon has no S3 support (built without the `s3` feature)"
            );
        }
        if url.contains("://") {
            bail!("{url}: repositories are local folders or s3://bucket/prefix");
        }
        Ok(Arc::new(LocalBackend::new(url)))
    }

    pub fn passwords(&self) -> PasswordSource {
        PasswordSource {
            file: self.global.password_file.clone(),
            command: self.global.password_command.clone(),
        }
    }

    pub fn open(&self) -> Result<Repository> {
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
        let known = self.password.lock().unwrap().clone();
        let pw = match known {
            Some(pw) => pw,
            None => self.passwords().get()?,
        };
        let repo = Repository::open(backend, pw.as_bytes())?;
        *self.password.lock().unwrap() = Some(pw);
        let cache = if self.global.no_cache {
            None
        } else {
            self.global
                .cache_dir
                .clone()
                .or_else(backazon_engine::cache::Cache::default_base)
        };
        Ok(repo
            .with_cache(cache)
            .with_data_cache(self.global.cache_size))
    }

    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.global.quiet && !self.global.json {
            out!("{}", msg.as_ref());
        }
    }

    pub fn show_progress(&self) -> bool {
        !self.global.quiet && !self.global.json && std::io::stderr().is_terminal()
    }
}

pub fn print_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // Every line of output may hold names from a snapshot (anyone with the password
    // chooses them): never raw control characters to the terminal.
    let text = match args.as_str() {
        Some(s) => crate::format::printable(s, true),
        None => crate::format::printable(&args.to_string(), true)
            .into_owned()
            .into(),
    };
    if let Err(e) = writeln!(stdout, "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            crate::sys::broken_pipe();
        }
        std::process::exit(1);
    }
}

pub fn warn(msg: &str) {
    eprintln!("warning: {}", crate::format::printable(msg, true));
}

pub fn patterns(globs: &[String]) -> Result<Vec<Pattern>> {
    globs
        .iter()
        .map(|g| Pattern::new(g).with_context(|| format!("pattern {g:?}")))
        .collect()
}
