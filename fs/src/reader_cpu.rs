//! Keeps a FUSE thread on the CPU of the one program it is answering (`find`, `cp -r`, a
//! file manager's copy): each request and its answer then hand over on one CPU, instead
//! of waking an idle CPU twice per request. On a virtual machine that wake-up costs more
//! than answering the request (measured here: `find` over the kernel tree 1.0 s spread
//! over two CPUs, 0.6 s on one). While several programs read at once the thread may run
//! anywhere, as before. Linux only; everything here is best effort.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How often a thread looks again at whom it answers.
const WINDOW: Duration = Duration::from_millis(5);
/// Fewer requests than this in a window: not a busy reader, not worth following.
const BUSY: u32 = 8;

struct State {
    since: Instant,
    pid: u32,
    one_reader: bool,
    requests: u32,
    pinned: Option<usize>,
    allowed: libc::cpu_set_t,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Called by a FUSE thread for each request, with the requesting thread's id.
pub fn note_request(pid: u32) {
    if pid == 0 {
        return;
    }
    STATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let now = Instant::now();
        let s = match cell.as_mut() {
            Some(s) => s,
            None => match allowed_cpus() {
                Some(allowed) => cell.insert(State {
                    since: now,
                    pid,
                    one_reader: true,
                    requests: 0,
                    pinned: None,
                    allowed,
                }),
                None => return,
            },
        };
        s.one_reader &= pid == s.pid;
        s.requests += 1;
        if now.duration_since(s.since) < WINDOW {
            return;
        }
        let target = if s.one_reader && s.requests >= BUSY {
            // SAFETY: `allowed` is an initialised cpu_set_t; CPU_ISSET only reads it.
            cpu_of(pid).filter(|&c| {
                c < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(c, &s.allowed) }
            })
        } else {
            None
        };
        match target {
            Some(cpu) if s.pinned != Some(cpu) && pin_to(cpu) => s.pinned = Some(cpu),
            None if s.pinned.is_some() => {
                set_affinity(&s.allowed);
                s.pinned = None;
            }
            _ => {}
        }
        s.since = now;
        s.pid = pid;
        s.one_reader = true;
        s.requests = 0;
    });
}

/// The CPU a thread last ran on: field 39 of /proc/<tid>/stat.
fn cpu_of(tid: u32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    processor_field(&stat)
}

fn processor_field(stat: &str) -> Option<usize> {
    // The name in parentheses may hold spaces and ')': fields are counted after the last one.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(39 - 3)?.parse().ok()
}

fn allowed_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn pin_to(cpu: usize) -> bool {
    // SAFETY: as in `allowed_cpus`; `cpu` is below CPU_SETSIZE (checked by the caller).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&set)
}

fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 means the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(set: &libc::cpu_set_t) -> u32 {
        // SAFETY: reads an initialised set.
        unsafe { libc::CPU_COUNT(set) as u32 }
    }

    #[test]
    fn processor_is_read_after_the_name() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[39 - 3] = "7".into();
        let line = format!("123 (a) b (c)) {}", fields.join(" "));
        assert_eq!(processor_field(&line), Some(7));
        assert_eq!(processor_field("123 (x) S 1"), None);
        assert!(cpu_of(std::process::id()).is_some());
    }

    #[test]
    fn follows_one_busy_reader_and_lets_go_for_two() {
        let before = allowed_cpus().unwrap();
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        let other = std::process::id();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < WINDOW * 3 {
                note_request(me);
            }
            // One busy reader (the test's thread, waiting in `join`): pinned to its CPU.
            let pinned = STATE.with(|s| s.borrow().as_ref().unwrap().pinned);
            assert_eq!(pinned, cpu_of(me));
            assert_eq!(count(&allowed_cpus().unwrap()), 1);
            let start = Instant::now();
            while start.elapsed() < WINDOW * 3 {
                note_request(me);
                note_request(other);
            }
            let after = allowed_cpus().unwrap();
            assert_eq!(count(&after), count(&before), "two readers: not pinned");
            assert!(STATE.with(|s| s.borrow().as_ref().unwrap().pinned.is_none()));
        })
        .join()
        .unwrap();
    }
}
