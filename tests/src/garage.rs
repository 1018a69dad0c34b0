//! A real S3 server for the tests: one throw-away single-node Garage per test process,
//! on free loopback ports, with a key and two buckets (`primary`, `replica`). It is
//! killed when the test process ends. The binary comes from `GARAGE_BIN`, the PATH, or
//! ~/.cargo/bin (ci/setup.sh builds it there once).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Garage {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub region: String,
    bin: PathBuf,
    config: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v garage"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cargo/bin/garage");
    assert!(
        p.exists(),
        "garage is not installed: run ci/setup.sh (cargo install garage) or set GARAGE_BIN"
    );
    p
}

impl Garage {
    /// The shared server, started on first use.
    pub fn get() -> &'static Garage {
        static G: OnceLock<Garage> = OnceLock::new();
        G.get_or_init(Garage::start)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> Garage {
        let bin = garage_bin();
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("bz-garage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (rpc, s3) = (free_port(), free_port());
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
            .unwrap();
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\n\
                 data_dir = \"{d}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("garage.log")).unwrap();
        let mut server = Command::new(&bin);
        server
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // The server dies with the test process, however that ends.
        // SAFETY: prctl is async-signal-safe and only affects the child being started.
        unsafe {
            use std::os::unix::process::CommandExt;
            server.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // PR_SET_PDEATHSIG follows the thread that started the child, and test threads
        // end with their test: start the server from a thread that lives as long as the
        // test process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("garage".into())
            .spawn(move || {
                let child = server.spawn();
                let ok = child.is_ok();
                tx.send(child.map(|_| ())).unwrap();
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .unwrap();
        rx.recv().unwrap().expect("starting garage");
        let g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
            region: "garage".into(),
            bin,
            config,
        };
        let start = Instant::now();
        let node = loop {
            let out = Command::new(&g.bin)
                .arg("-c")
                .arg(&g.config)
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "garage did not start: {}",
                std::fs::read_to_string(dir.join("garage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // `node id` reads the node's key file; the server answers RPC a moment later.
        while !Command::new(&g.bin)
            .arg("-c")
            .arg(&g.config)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "garage does not answer: {}",
                std::fs::read_to_string(dir.join("garage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let node_id = node.split('@').next().unwrap().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let key = g.cli(&["key", "create", "backazon-tests"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        for b in ["primary", "replica"] {
            g.cli(&["bucket", "create", b]);
            g.cli(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                b,
                "--key",
                "backazon-tests",
            ]);
        }
        Garage {
            key_id,
            secret,
            ..g
        }
    }
}

/// Removes the data folders of servers whose test process has ended. A server lives as
/// long as its test binary, which cannot clean up after itself when it exits (statics
/// are not dropped): 88 such folders, 4.3 GB, had piled up here.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("bz-garage-"))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
