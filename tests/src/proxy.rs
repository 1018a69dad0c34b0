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

/// Faults per request rather than per connection: of every request, `percent` in 100
/// (chosen by a generator seeded with `seed`, so a run repeats) meet one fault, in turn:
/// the connection reset on its head, `503 Slow Down`, its upload or its response cut
/// midway, or the
/// server stalled for `stall` before it answers. Requests on a kept-alive connection
/// are told apart by their HTTP framing (Content-Length, chunked, `Expect: 100-continue`).
#[derive(Clone, Copy, Debug)]
pub struct FaultPlan {
    pub percent: u64,
    pub seed: u64,
    pub stall: std::time::Duration,
}

#[derive(Default, Debug)]
pub struct RequestFaults {
    pub requests: AtomicU64,
    pub resets: AtomicU64,
    pub slow_downs: AtomicU64,
    pub cuts: AtomicU64,
    pub stalls: AtomicU64,
}

impl RequestFaults {
    /// Requests, resets, 503s, cuts, stalls, so far.
    pub fn counts(&self) -> [u64; 5] {
        [
            self.requests.load(Relaxed),
            self.resets.load(Relaxed),
            self.slow_downs.load(Relaxed),
            self.cuts.load(Relaxed),
            self.stalls.load(Relaxed),
        ]
    }
}

pub struct RequestFaultProxy {
    pub endpoint: String,
    pub faults: Arc<RequestFaults>,
    /// Set to false to let every request through (a clean run through the same proxy).
    pub enabled: Arc<std::sync::atomic::AtomicBool>,
}

impl RequestFaultProxy {
    pub fn start(upstream: &str, plan: FaultPlan) -> RequestFaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(RequestFaults::default());
        let enabled = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (f, on) = (faults.clone(), enabled.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let (f, on, upstream) = (f.clone(), on.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, plan, &f, &on);
                });
            }
        });
        RequestFaultProxy {
            endpoint,
            faults,
            enabled,
        }
    }
}

/// SplitMix64 of the request number: the fault (if any) request `n` meets.
fn fault_of(n: u64, plan: FaultPlan) -> Option<u64> {
    // Each seed starts far along the sequence: seeds next to each other share nothing.
    let start = plan.seed.wrapping_mul(0xd1b5_4a32_d192_ed03);
    let mut z = n.wrapping_add(start).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % 100 < plan.percent).then_some((z >> 32) % 4)
}

/// An HTTP message head: its bytes and what frames the body after it.
struct Head {
    bytes: Vec<u8>,
    status: Option<u16>,
    length: Option<u64>,
    chunked: bool,
    expect_continue: bool,
    head_method: bool,
}

fn read_head(r: &mut std::io::BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    use std::io::BufRead;
    let mut bytes = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return if bytes.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        if bytes.ends_with(b"\r\n\r\n") || bytes == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    let first = text.lines().next().unwrap_or("");
    let status = first
        .strip_prefix("http/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    Ok(Some(Head {
        status,
        length: header("content-length:").and_then(|v| v.parse().ok()),
        chunked: header("transfer-encoding:").is_some_and(|v| v.contains("chunked")),
        expect_continue: header("expect:").is_some_and(|v| v.contains("100-continue")),
        head_method: first.starts_with("head "),
        bytes,
    }))
}

/// Copies one body framed by `head` from `r` to `w` (or drops it when `w` is None), at
/// most `cut` bytes of it when given: then `Ok(false)`.
fn copy_body(
    head: &Head,
    is_response_to_head: bool,
    r: &mut std::io::BufReader<TcpStream>,
    mut w: Option<&mut TcpStream>,
    cut: Option<u64>,
) -> std::io::Result<bool> {
    use std::io::BufRead;
    let no_body = is_response_to_head || matches!(head.status, Some(100..=199 | 204 | 304));
    if no_body {
        return Ok(true);
    }
    let mut sent = 0u64;
    let mut put = |w: &mut Option<&mut TcpStream>, data: &[u8]| -> std::io::Result<bool> {
        let room = cut.map_or(u64::MAX, |c| c.saturating_sub(sent));
        let n = (data.len() as u64).min(room) as usize;
        if let Some(w) = w.as_mut() {
            w.write_all(&data[..n])?;
        }
        sent += n as u64;
        Ok(n == data.len())
    };
    if head.chunked {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            if !put(&mut w, &line)? {
                return Ok(false);
            }
            let size = u64::from_str_radix(
                String::from_utf8_lossy(&line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    if !put(&mut w, &t)? {
                        return Ok(false);
                    }
                    if t == b"\r\n" || t.is_empty() {
                        return Ok(true);
                    }
                }
            }
            let mut chunk = vec![0u8; size as usize + 2];
            r.read_exact(&mut chunk)?;
            if !put(&mut w, &chunk)? {
                return Ok(false);
            }
        }
    }
    let Some(len) = head.length else {
        if head.status.is_none() {
            return Ok(true); // a request without a length has no body
        }
        // A response without framing: the body runs to the end of the connection.
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?;
        return put(&mut w, &rest);
    };
    let mut left = len;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let n = r.read(&mut buf[..(left.min(64 << 10)) as usize])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
        if !put(&mut w, &buf[..n])? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn serve(
    client: TcpStream,
    upstream: &str,
    plan: FaultPlan,
    f: &RequestFaults,
    on: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut from_client = std::io::BufReader::new(client);
    let server = TcpStream::connect(upstream)?;
    let mut to_server = server.try_clone()?;
    let mut from_server = std::io::BufReader::new(server);
    while let Some(req) = read_head(&mut from_client)? {
        let n = f.requests.fetch_add(1, Relaxed);
        let fault = if on.load(Relaxed) {
            fault_of(n, plan)
        } else {
            None
        };
        match fault {
            Some(0) => {
                f.resets.fetch_add(1, Relaxed);
                reset(&to_client);
                return Ok(());
            }
            Some(1) => {
                if !req.expect_continue {
                    copy_body(&req, false, &mut from_client, None, None)?;
                }
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                write!(
                    to_client,
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                f.slow_downs.fetch_add(1, Relaxed);
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(3) => {
                f.stalls.fetch_add(1, Relaxed);
                std::thread::sleep(plan.stall);
            }
            _ => {}
        }
        to_server.write_all(&req.bytes)?;
        if fault == Some(2) && req.length.is_some_and(|l| l > 0) && !req.expect_continue {
            // An upload cut short: half its body reaches the server, then both resets.
            let half = req.length.unwrap_or(0) / 2;
            copy_body(
                &req,
                false,
                &mut from_client,
                Some(&mut to_server),
                Some(half),
            )?;
            f.cuts.fetch_add(1, Relaxed);
            reset(&to_server);
            reset(&to_client);
            return Ok(());
        }
        let resp = read_head_after_body(
            &req,
            &mut from_client,
            &mut to_client,
            &mut to_server,
            &mut from_server,
        )?;
        if fault == Some(2) {
            // Cut somewhere in the response: after its head, partway into its body.
            to_client.write_all(&resp.bytes)?;
            let cut = resp.length.map_or(1000, |l| l / 2);
            copy_body(
                &resp,
                req.head_method,
                &mut from_server,
                Some(&mut to_client),
                Some(cut),
            )?;
            f.cuts.fetch_add(1, Relaxed);
            reset(&to_client);
            return Ok(());
        }
        to_client.write_all(&resp.bytes)?;
        copy_body(
            &resp,
            req.head_method,
            &mut from_server,
            Some(&mut to_client),
            None,
        )?;
        if resp.length.is_none() && !resp.chunked && !req.head_method && resp.status != Some(204) {
            return Ok(()); // the body ran to the end of the connection
        }
    }
    Ok(())
}

/// Sends the request body (after a `100 Continue` when the client waits for one) and
/// returns the final response head.
fn read_head_after_body(
    req: &Head,
    from_client: &mut std::io::BufReader<TcpStream>,
    to_client: &mut TcpStream,
    to_server: &mut TcpStream,
    from_server: &mut std::io::BufReader<TcpStream>,
) -> std::io::Result<Head> {
    if req.expect_continue {
        let first = read_head(from_server)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        if first.status != Some(100) {
            return Ok(first); // refused before the body: the client sends none
        }
        to_client.write_all(&first.bytes)?;
    }
    copy_body(req, false, from_client, Some(to_server), None)?;
    loop {
        let h = read_head(from_server)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        if h.status == Some(100) {
            continue;
        }
        return Ok(h);
    }
}
