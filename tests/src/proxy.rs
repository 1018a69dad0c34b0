//! A TCP proxy in front of the S3 server that misbehaves like a bad network and a busy
//! server: it resets some connections at once, answers some with `503 Slow Down`, and
//! cuts others midway through a response (or an upload). The rest pass through.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Default, Debug)]
pub struct Faults {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub slow_downs: AtomicU64,
    pub cuts: AtomicU64,
}

pub struct FaultyProxy {
    pub endpoint: String,
    pub faults: Arc<Faults>,
}

fn reset(s: &TcpStream) {
    // SO_LINGER 0: close sends RST instead of FIN.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a properly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Copies `from` to `to` until the end, or until `limit` bytes when given (then resets).
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<u64>, faults: Arc<Faults>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n as u64 >= l => {
                let part = (l - sent) as usize;
                let _ = to.write_all(&buf[..part]);
                faults.cuts.fetch_add(1, Relaxed);
                reset(&to);
                reset(&from);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl FaultyProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`). Of every
    /// `every` connections (at least 4), one is cut after some bytes, one reset and one
    /// answered 503, in that order from the first connection on, so every kind of fault
    /// happens early and a client that opens a new connection after each failure gets
    /// through by the fourth.
    pub fn start(upstream: &str, every: u64) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let n = f.connections.fetch_add(1, Relaxed);
                let (f, upstream) = (f.clone(), upstream.clone());
                std::thread::spawn(move || handle(client, n, every.max(4), &upstream, f));
            }
        });
        FaultyProxy { endpoint, faults }
    }
}

fn handle(mut client: TcpStream, n: u64, every: u64, upstream: &str, f: Arc<Faults>) {
    match n % every {
        1 => {
            f.resets.fetch_add(1, Relaxed);
            reset(&client);
        }
        2 => {
            // Read the request head, then refuse it as a busy S3 server does.
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
                match client.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => return,
                }
            }
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let _ = write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            f.slow_downs.fetch_add(1, Relaxed);
            let _ = client.shutdown(Shutdown::Both);
        }
        k => {
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            // One (the very first among them) is cut somewhere in its first few MiB
            // each way; the others pass.
            let limit = (k == 0).then(|| 2000 + (n * 7919 % (3 << 20)));
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let f2 = f.clone();
            let up = std::thread::spawn(move || pump(c2, s2, limit, f2));
            pump(server, client, limit, f);
            let _ = up.join();
        }
    }
}
