//! Human-readable sizes, durations, times and modes, and progress on the terminal
//! (indicatif bars) and as `--json` status lines.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backazon_engine::progress::{fraction_and_left, StepView, Steps, Totals, Unit};
use backazon_engine::tree::{Node, NodeKind};
use indicatif::ProgressBar;

/// Text as a terminal may safely be shown it: control characters (an escape sequence in
/// a file name could retitle, recolour or rewrite the user's terminal) are written as
/// `\x1b` or `\u{9b}`. With `keep_lines`, line feeds stay (pretty JSON, listings of
/// several lines); without, a name holding one still shows on one line.
pub fn printable(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && !(keep_lines && c == '\n');
    if !s.chars().any(unsafe_char) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out.into()
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Parses `500`, `500K`, `20M`, `2G`, `1T` (powers of 1024).
/// A size as given (for the jobs file), once [`parse_size`] accepts it.
pub fn size_text(s: &str) -> Result<String, String> {
    parse_size(s).map(|_| s.to_string())
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    // `20MiB` and `20MB` mean `20M` too.
    let s = ["iB", "ib", "B", "b"]
        .iter()
        .find_map(|suf| {
            s.strip_suffix(suf)
                .filter(|r| r.ends_with(|c: char| "kKmMgGtT".contains(c)))
        })
        .unwrap_or(s);
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n.saturating_mul(mult))
        .map_err(|_| format!("{s:?} is not a size (e.g. 500M, 2G)"))
}

pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

pub fn local_time(ts: jiff::Timestamp) -> String {
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn timestamp(ns: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_nanosecond(ns as i128).ok()
}

pub fn nanos_to_local(ns: i64) -> String {
    timestamp(ns).map(local_time).unwrap_or_default()
}

pub fn nanos_to_rfc3339(ns: i64) -> String {
    timestamp(ns).map(|t| t.to_string()).unwrap_or_default()
}

pub fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Calls `f` with the time since the start every `period` (the first after one period),
/// on a thread of its own, until dropped.
pub struct Repeat {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Repeat {
    pub fn start(period: Duration, f: impl Fn(Duration) + Send + 'static) -> Repeat {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let s = stop.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let (lock, cv) = &*s;
            let mut stopped = lock.lock().unwrap();
            loop {
                stopped = cv.wait_timeout(stopped, period).unwrap().0;
                if *stopped {
                    return;
                }
                f(started.elapsed());
            }
        });
        Repeat {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Repeat {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A progress bar on stderr (indicatif), brought up to date four times a second by
/// `update` until dropped, then cleared.
pub struct Bar {
    bar: indicatif::ProgressBar,
    _repeat: Repeat,
}

impl Bar {
    pub fn start(update: impl Fn(&indicatif::ProgressBar) + Send + 'static) -> Bar {
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        let b = bar.clone();
        update(&bar);
        Bar {
            bar,
            _repeat: Repeat::start(Duration::from_millis(250), move |_| update(&b)),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Work measured in files and bytes against a whole counted ahead of it (a backup, a
/// restore): the whole is `None` until the count is done.
pub struct Counted {
    pub files: u64,
    pub bytes: u64,
    pub whole: Option<(u64, u64)>,
}

impl Counted {
    /// Counters as a backup's or a restore's progress holds them.
    pub fn of(files: &AtomicU64, bytes: &AtomicU64, totals: &Totals) -> Counted {
        Counted {
            files: files.load(Relaxed),
            bytes: bytes.load(Relaxed),
            whole: totals
                .done
                .load(Relaxed)
                .then(|| (totals.files.load(Relaxed), totals.bytes.load(Relaxed))),
        }
    }

    /// The files and bytes of the whole, never less than what is done.
    fn whole(&self) -> Option<(u64, u64)> {
        self.whole
            .map(|(f, b)| (f.max(self.files), b.max(self.bytes)))
    }

    /// The bar: a percentage, the bytes against the whole and the time left once the
    /// whole is counted; until then what was done so far. `msg` follows.
    pub fn show(&self, bar: &ProgressBar, msg: String) {
        let template = match self.whole() {
            Some((_, bytes)) => {
                bar.set_length(bytes.max(1));
                "[{elapsed_precise}] {percent:>3}% [{bar:20}] {bytes}/{total_bytes}, ETA {eta}  {wide_msg}"
            }
            None => "[{elapsed_precise}] {spinner} {bytes} (counting the selection)  {wide_msg}",
        };
        set_template(bar, template);
        bar.set_position(self.bytes);
        let of = self.whole().map_or(String::new(), |(f, _)| format!("/{f}"));
        bar.set_message(format!("{}{of} files, {msg}", self.files));
    }

    /// `--json`: a status line, as restic's (`message_type` "status"): what is done,
    /// and once counted the whole, the share done and the seconds left.
    pub fn status_line(&self, elapsed: Duration, errors: u64) -> serde_json::Value {
        let mut v = serde_json::json!({
            "message_type": "status",
            "seconds_elapsed": elapsed.as_secs(),
            "files_done": self.files,
            "bytes_done": self.bytes,
            "error_count": errors,
        });
        if let Some((files, bytes)) = self.whole() {
            v["total_files"] = files.into();
            v["total_bytes"] = bytes.into();
            add_fraction(&mut v, fraction_and_left(self.bytes, bytes, elapsed));
        }
        v
    }
}

fn add_fraction(v: &mut serde_json::Value, f: Option<(f64, Option<u64>)>) {
    if let Some((fraction, left)) = f {
        v["percent_done"] = fraction.into();
        if let Some(left) = left {
            v["seconds_remaining"] = left.into();
        }
    }
}

fn set_template(bar: &ProgressBar, template: &str) {
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => bytes(n),
        Unit::Items => n.to_string(),
    }
}

/// The bar of a check or a prune: the step, and within it the share done and the time
/// left once its whole is known.
pub fn show_step(bar: &ProgressBar, v: &StepView) {
    let name = printable(&v.step, false);
    match (v.total, v.fraction_and_left()) {
        (Some(total), Some((_, left))) => {
            let eta = left.map_or("--".into(), |s| duration(Duration::from_secs(s)));
            bar.set_message(format!(
                "{name}: {}/{}, ETA {eta}",
                amount(v.done, v.unit),
                amount(total, v.unit)
            ));
            bar.set_length(total);
            bar.set_position(v.done);
            set_template(
                bar,
                "[{elapsed_precise}] {percent:>3}% [{bar:20}] {wide_msg}",
            );
        }
        _ => {
            let name = if v.step_number == 0 {
                "starting".into()
            } else {
                name
            };
            bar.set_message(format!("{name}…"));
            set_template(bar, "[{elapsed_precise}] {spinner} {wide_msg}");
        }
    }
}

/// `--json`: a check's or a prune's status line.
pub fn step_event(v: &StepView, elapsed: Duration) -> serde_json::Value {
    let mut j = serde_json::json!({
        "message_type": "status",
        "seconds_elapsed": elapsed.as_secs(),
        "step": v.step,
        "step_number": v.step_number,
        "unit": v.unit,
        "done": v.done,
    });
    if let Some(total) = v.total {
        j["total"] = total.into();
    }
    add_fraction(&mut j, v.fraction_and_left());
    j
}

/// How often `--json` status lines are written: once a second, or
/// `BACKAZON_PROGRESS_FPS` times a second (as restic's `RESTIC_PROGRESS_FPS`; 0.1 for
/// one every ten seconds).
pub fn status_period() -> Duration {
    std::env::var("BACKAZON_PROGRESS_FPS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .map_or(Duration::from_secs(1), |f| {
            Duration::from_secs_f64((1.0 / f).clamp(0.01, 3600.0))
        })
}

/// A check's or a prune's progress where it is wanted: a bar on a terminal, a status
/// line a second with `--json`, else each step's name on stdout as it begins. Shows
/// until dropped.
pub struct StepDisplay {
    pub steps: Arc<Steps>,
    _bar: Option<Bar>,
    _events: Option<Repeat>,
}

impl StepDisplay {
    pub fn start(bar: bool, json: bool, lines: bool) -> StepDisplay {
        let steps = Arc::new(Steps::new(move |step| {
            if lines {
                out!("{step}");
            }
        }));
        let shown = steps.clone();
        let bar = bar.then(|| Bar::start(move |b| show_step(b, &shown.view())));
        let shown = steps.clone();
        let events = json.then(|| {
            Repeat::start(status_period(), move |elapsed| {
                out!("{}", step_event(&shown.view(), elapsed))
            })
        });
        StepDisplay {
            steps,
            _bar: bar,
            _events: events,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_shown_escaped() {
        use super::printable;
        assert_eq!(printable("plain name.txt", false), "plain name.txt");
        assert_eq!(
            printable("a\x1b]0;owned\x07b", false),
            "a\\x1b]0;owned\\x07b"
        );
        assert_eq!(printable("x\u{9b}2J\ny", false), "x\\u{9b}2J\\x0ay");
        assert_eq!(printable("{\n  \"a\": 1\n}", true), "{\n  \"a\": 1\n}");
    }

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500").unwrap(), 500);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("20m").unwrap(), 20 << 20);
        assert!(parse_size("x").is_err());
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("10B").unwrap(), 10);
        assert_eq!(bytes(1536), "1.50 KiB");
    }
}
