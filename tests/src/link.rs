//! A wide-area link between a client and a server on this machine: a TCP proxy that
//! holds every byte for a fixed delay in each direction and lets at most a window of
//! bytes be on the way per direction (a link's bandwidth-delay product, as a TCP window
//! over that link would). Used where `tc netem` would be: this machine's kernel has no
//! netem (CONFIG_NET_SCH_NETEM is not set, and it loads no modules).
//!
//! It delays data, not connection set-up: a new connection costs no extra round trip.
//! Clients here keep their connections open, so that matters little.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes on their way in one direction, each piece with the time it may arrive.
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

struct PipeState {
    pieces: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    closed: bool,
}

/// Forwards `from` to `to` with `delay`, at most `window` bytes on the way.
fn carry(mut from: TcpStream, mut to: TcpStream, delay: Duration, window: usize) {
    let pipe = Arc::new(Pipe {
        state: Mutex::new(PipeState {
            pieces: VecDeque::new(),
            bytes: 0,
            closed: false,
        }),
        changed: Condvar::new(),
    });
    let out = pipe.clone();
    let writer = std::thread::spawn(move || loop {
        let (due, piece) = {
            let mut st = out.state.lock().unwrap();
            loop {
                if let Some(p) = st.pieces.pop_front() {
                    break p;
                }
                if st.closed {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                st = out.changed.wait(st).unwrap();
            }
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let failed = to.write_all(&piece).is_err();
        {
            let mut st = out.state.lock().unwrap();
            st.bytes -= piece.len();
            if failed {
                st.closed = true;
                st.pieces.clear();
                st.bytes = 0;
            }
        }
        out.changed.notify_all();
        if failed {
            return;
        }
    });
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut st = pipe.state.lock().unwrap();
        while st.bytes >= window && !st.closed {
            st = pipe.changed.wait(st).unwrap();
        }
        if st.closed {
            break;
        }
        st.bytes += n;
        st.pieces
            .push_back((Instant::now() + delay, buf[..n].to_vec()));
        drop(st);
        pipe.changed.notify_all();
    }
    pipe.state.lock().unwrap().closed = true;
    pipe.changed.notify_all();
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Read);
}

/// Serves `listener` forever: each connection goes on to `upstream` over the link.
pub fn serve(listener: TcpListener, upstream: String, delay: Duration, window: usize) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let upstream = upstream.clone();
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(&upstream) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => return,
            };
            let up = std::thread::spawn(move || carry(client, server, delay, window));
            carry(s2, c2, delay, window);
            let _ = up.join();
        });
    }
}
