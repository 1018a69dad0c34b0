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
    #[command(flatten)]
    listen: ListenArgs,
}

/// Serving the console to other computers: never without a password and TLS.
#[derive(Args, Clone, Default)]
pub struct ListenArgs {
    /// Listen on this address (like 0.0.0.0:4597) instead of 127.0.0.1, for other
    /// computers; needs --ui-password-file, --tls-cert and --tls-key
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The console's password (first line of the file), asked of every browser that
    /// comes without the printed address
    #[arg(long, env = "BACKAZON_UI_PASSWORD_FILE")]
    pub ui_password_file: Option<PathBuf>,
    /// The TLS certificate chain (PEM) the console shows with --listen
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

/// What `--listen` adds: a password and TLS.
struct Remote {
    password: zeroize::Zeroizing<String>,
    tls: tokio_rustls::TlsAcceptor,
    /// Wrong passwords in a row; each attempt waits on this, so that guesses are slowed
    /// down however many are sent at once.
    failures: tokio::sync::Mutex<u32>,
}

impl Remote {
    fn from_args(l: &ListenArgs) -> Result<Remote> {
        let (Some(pw), Some(cert), Some(key)) = (&l.ui_password_file, &l.tls_cert, &l.tls_key)
        else {
            anyhow::bail!(
                "--listen serves the console to other computers: give it a password \
                 (--ui-password-file) and TLS (--tls-cert and --tls-key)"
            );
        };
        let text = std::fs::read_to_string(pw)
            .with_context(|| format!("reading the console password from {}", pw.display()))?;
        let password = zeroize::Zeroizing::new(text.lines().next().unwrap_or("").to_string());
        if password.chars().count() < 12 {
            anyhow::bail!(
                "the console password in {} is shorter than 12 characters: choose a longer one",
                pw.display()
            );
        }
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("reading the certificate {}: {e}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| anyhow::anyhow!("reading the private key {}: {e}", key.display()))?;
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not go together")?;
        Ok(Remote {
            password,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            failures: tokio::sync::Mutex::new(0),
        })
    }
}

pub const DEFAULT_PORT: u16 = 4597;

/// What every request shares.
pub(crate) struct Console {
    /// The secret in the printed address; it opens a session.
    token: String,
    /// Open sessions, with when each was last used.
    sessions: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// `Host` values this server answers to (others are a DNS-rebinding attempt).
    hosts: Vec<String>,
    global: Global,
    child: ChildArgs,
    exe: PathBuf,
    /// Repositories opened for browsing, by what opens them (`api::repo_key`): their
    /// password stretched once for every job using them.
    opened: Mutex<HashMap<String, Arc<api::Opened>>>,
    /// Held while a repository is opened.
    opening: Mutex<()>,
    /// Restores and checks started here.
    tasks: tasks::Tasks,
    /// Repositories mounted from here, by job.
    mounts: Mutex<HashMap<String, ops::Mounted>>,
    /// Served to other computers (`--listen`).
    remote: Option<Remote>,
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

/// Listens on 127.0.0.1:`port` (or `--listen`'s address, with TLS) and serves the
/// console for the jobs file and state folder of `child` (`backazon ui`, or `daemon --ui`
/// beside its scheduler).
pub fn start(global: &Global, child: ChildArgs, port: u16, listen: &ListenArgs) -> Result<Server> {
    let remote = listen
        .listen
        .map(|_| Remote::from_args(listen))
        .transpose()?;
    let addr = listen
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)));
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
        opening: Mutex::default(),
        tasks: tasks::Tasks::default(),
        mounts: Mutex::default(),
        remote,
    });
    api::warm_up(console.clone());
    let url = match listen.listen {
        None => format!("http://127.0.0.1:{port}/?token={}", console.token),
        Some(a) => format!("https://{}:{port}/?token={}", a.ip(), console.token),
    };
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
                if console.remote.is_some() {
                    return serve_tls(listener, console, rx).await;
                }
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

/// `--listen`: each connection's TLS handshake, then HTTP/1.1 over it, until `stop`.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Some(acceptor) = console.remote.as_ref().map(|r| r.tls.clone()) else {
        return;
    };
    let app = router(console);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that never finishes its handshake is let go.
            let tls =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(tls)) = tls.await else { return };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
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
    let server = start(&ctx.global, child, args.port, &args.listen)?;
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
        .route("/login", get(guard::login_page).post(guard::login))
        .route("/app.js", get(api::script))
        .route("/app.css", get(api::style))
        .route("/api/status", get(api::status))
        .route("/api/logout", post(guard::logout))
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
