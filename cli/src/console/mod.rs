//! `backazon ui`: the web console. An HTTP server on 127.0.0.1 (axum on tokio) serving
//! one page embedded in the binary (`page/`) and a JSON API over the same jobs file,
//! job state and repositories the command line uses (`api.rs`); who may use it is
//! decided in `guard.rs`. Job runs are processes of their own, started as the daemon
//! starts them, so that closing the console never stops a backup.

mod api;
mod guard;
mod ops;
mod tasks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;

use crate::commands::job::{absolute, config_path, state_dir};
use crate::ctx::{Ctx, Global};
use crate::daemon::ChildArgs;
use crate::jobs::StateDir;

#[derive(Args)]
pub struct UiArgs {
    /// Port on 127.0.0.1 (0: any free port)
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Print the address without opening a browser
    #[arg(long)]
    no_open: bool,
}

pub const DEFAULT_PORT: u16 = 4597;

/// What every request shares.
pub(crate) struct Console {
    /// The secret in the printed address; it opens a session.
    token: String,
    sessions: Mutex<std::collections::HashSet<String>>,
    /// `Host` values this server answers to (others are a DNS-rebinding attempt).
    hosts: Vec<String>,
    global: Global,
    child: ChildArgs,
    exe: PathBuf,
    /// Repositories opened for browsing, per job (their password stretched once).
    opened: Mutex<HashMap<String, Arc<api::Opened>>>,
    /// Restores and checks started here.
    tasks: tasks::Tasks,
    /// Repositories mounted from here, by job.
    mounts: Mutex<HashMap<String, ops::Mounted>>,
}

impl Drop for Console {
    /// Mounts end with the console.
    fn drop(&mut self) {
        for (_, m) in self.mounts.lock().unwrap().iter_mut() {
            m.stop();
        }
    }
}

impl Console {
    fn state(&self) -> StateDir {
        StateDir(self.child.state_dir.clone())
    }
}

/// 32 random bytes as hex.
fn secret() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)
        .map_err(|e| anyhow::anyhow!("asking the OS for random bytes: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The console serving on threads of its own until dropped.
pub struct Server {
    /// The address with its access token.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on 127.0.0.1:`port` and serves the console for the jobs file and state folder
/// of `child` (`backazon ui`, or `daemon --ui` beside its scheduler).
pub fn start(global: &Global, child: ChildArgs, port: u16) -> Result<Server> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("listening on {addr} (another console running? choose another --port)")
    })?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let console = Arc::new(Console {
        token: secret()?,
        sessions: Mutex::default(),
        hosts: vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")],
        global: global.clone(),
        child,
        exe: std::env::current_exe()?,
        opened: Mutex::default(),
        tasks: tasks::Tasks::default(),
        mounts: Mutex::default(),
    });
    let url = format!("http://127.0.0.1:{port}/?token={}", console.token);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("console")
        .enable_all()
        .build()
        .context("starting the console's threads")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return crate::ctx::warn(&format!("console: {e}")),
                };
                let served = axum::serve(listener, router(console))
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    crate::ctx::warn(&format!("console stopped: {e}"));
                }
            });
            // Streams still open (server-sent events) end with the runtime.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        })?;
    Ok(Server {
        url,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// Prints the address as the first line of standard output, for scripts and tests, and
/// opens it in a browser when asked.
pub fn announce(server: &Server, open: bool) {
    out!("{}", server.url);
    if open {
        if let Err(e) = crate::sys::open_browser(&server.url) {
            crate::ctx::warn(&format!(
                "could not open a browser ({e}); open the address above"
            ));
        }
    }
}

pub fn run(ctx: &Ctx, args: &UiArgs) -> Result<u8> {
    let state = state_dir(ctx);
    let child = ChildArgs {
        config: absolute(&config_path(ctx))?,
        state_dir: absolute(&state.0)?,
        cache_dir: ctx.global.cache_dir.clone(),
    };
    let stop = crate::sys::stop_signals()?;
    let config = child.config.clone();
    let server = start(&ctx.global, child, args.port)?;
    announce(&server, !args.no_open);
    // On stderr: standard output is the address alone, which scripts read.
    if !ctx.global.quiet {
        eprintln!(
            "console for the jobs in {}; Ctrl-C stops it (running jobs go on)",
            config.display()
        );
    }
    while let Ok(sig) = stop.recv() {
        if matches!(sig, crate::sys::Signal::Stop(_)) {
            break;
        }
    }
    drop(server);
    Ok(0)
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/app.js", get(api::script))
        .route("/app.css", get(api::style))
        .route("/api/status", get(api::status))
        .route("/api/events", get(api::events))
        .route("/api/jobs", post(api::create_job))
        .route(
            "/api/jobs/{name}",
            get(api::get_job)
                .put(api::update_job)
                .delete(api::delete_job),
        )
        .route("/api/jobs/{name}/run", post(api::run_job))
        .route("/api/jobs/{name}/cancel", post(api::cancel_job))
        .route("/api/jobs/{name}/snapshots", get(api::snapshots))
        .route("/api/jobs/{name}/ls", get(api::list_folder))
        .route("/api/jobs/{name}/download", get(api::download))
        .route("/api/jobs/{name}/zip", get(ops::download_zip))
        .route("/api/jobs/{name}/restore", post(ops::restore))
        .route("/api/jobs/{name}/check", post(ops::check))
        .route("/api/jobs/{name}/prune", post(ops::prune))
        .route("/api/jobs/{name}/diff", get(ops::diff))
        .route("/api/jobs/{name}/search", get(ops::search))
        .route(
            "/api/jobs/{name}/mount",
            post(ops::mount).delete(ops::unmount),
        )
        .route("/api/schedule", get(api::schedule_preview))
        .route("/api/notify-test", post(api::notify_test))
        .route("/api/test-repository", post(api::test_repository))
        .route("/api/folders", get(api::folders))
        .route("/api/log", get(api::log))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::guard,
        ))
        .with_state(console)
}
