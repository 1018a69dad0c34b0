//! `backazon ui`: the web console. An HTTP server on 127.0.0.1 (axum on tokio) serving
//! one page embedded in the binary (`page/`) and a JSON API over the same jobs file,
//! job state and repositories the command line uses (`api.rs`); who may use it is
//! decided in `guard.rs`. Job runs are processes of their own, started as the daemon
//! starts them, so that closing the console never stops a backup.

mod api;
mod guard;

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
    #[arg(long, default_value_t = 4597)]
    port: u16,
    /// Print the address without opening a browser
    #[arg(long)]
    no_open: bool,
}

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

pub fn run(ctx: &Ctx, args: &UiArgs) -> Result<u8> {
    let state = state_dir(ctx);
    let child = ChildArgs {
        config: absolute(&config_path(ctx))?,
        state_dir: absolute(&state.0)?,
        cache_dir: ctx.global.cache_dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the console's threads")?;
    let stop = crate::sys::stop_signals()?;
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("listening on {addr} (another console running? choose another --port)")
        })?;
        let port = listener.local_addr()?.port();
        let console = Arc::new(Console {
            token: secret()?,
            sessions: Mutex::default(),
            hosts: vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")],
            global: ctx.global.clone(),
            child,
            exe: std::env::current_exe()?,
            opened: Mutex::default(),
        });
        let url = format!("http://127.0.0.1:{port}/?token={}", console.token);
        // The first line of standard output, for scripts and tests.
        out!("{url}");
        ctx.say(format!(
            "console listening on 127.0.0.1:{port}; jobs file {}; Ctrl-C stops it",
            console.child.config.display()
        ));
        if !args.no_open {
            if let Err(e) = crate::sys::open_browser(&url) {
                crate::ctx::warn(&format!(
                    "could not open a browser ({e}); open the address above"
                ));
            }
        }
        let app = router(console);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = stop.recv();
            let _ = tx.send(());
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .context("serving the console")?;
        Ok(0)
    })
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
        .route("/api/schedule", get(api::schedule_preview))
        .route("/api/notify-test", post(api::notify_test))
        .route("/api/folders", get(api::folders))
        .route("/api/log", get(api::log))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::guard,
        ))
        .with_state(console)
}
