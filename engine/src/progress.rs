//! How far a long operation is, for a front end (a terminal bar, `--json` status lines,
//! the web console) to show a percentage and the time left. Two shapes:
//!
//! - [`Totals`]: the whole of a backup's or a restore's selection, counted on a thread
//!   of its own ahead of the work, as restic does; the work neither waits for the count
//!   nor trusts it.
//! - [`Steps`]: an operation made of steps (check, prune), each with a whole known when
//!   it begins (bytes of packs to read, trees to walk, packs to delete) or none.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a count ahead found so far, and whether it is done.
#[derive(Debug, Default)]
pub struct Totals {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Everything selected was counted: `files` and `bytes` are the work's whole.
    pub done: AtomicBool,
    /// Set when the work ends first.
    pub(crate) stop: AtomicBool,
}

/// Stops the count when dropped (the work is over, however it ended).
pub(crate) struct StopCount<'a>(pub &'a Totals);

impl Drop for StopCount<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Relaxed);
    }
}

/// What a step's `done` and `total` count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Items,
}

/// The steps of a check or a prune, and how far the current one is.
pub struct Steps {
    current: Mutex<(String, u32, Unit, Instant)>,
    done: AtomicU64,
    /// 0: the step's whole is not known.
    total: AtomicU64,
    on_step: Box<dyn Fn(&str) + Send + Sync>,
}

/// A step as a front end shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StepView {
    pub step: String,
    /// 1 for the first step; 0 ("starting") before it.
    pub step_number: u32,
    pub unit: Unit,
    pub done: u64,
    /// None while the step's whole is unknown.
    pub total: Option<u64>,
    #[serde(skip)]
    pub elapsed: Duration,
}

impl StepView {
    /// How much of the step is done (0 to 1), and the seconds it probably has left.
    pub fn fraction_and_left(&self) -> Option<(f64, Option<u64>)> {
        fraction_and_left(self.done, self.total?, self.elapsed)
    }
}

/// Done out of total after `elapsed`: the fraction (0 to 1), and the seconds left at the
/// pace so far (none before anything is done).
pub fn fraction_and_left(done: u64, total: u64, elapsed: Duration) -> Option<(f64, Option<u64>)> {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let left = (fraction > 0.0)
        .then(|| (elapsed.as_secs_f64() * (1.0 - fraction) / fraction).round() as u64);
    Some((fraction, left))
}

impl Default for Steps {
    fn default() -> Self {
        Steps::new(|_| {})
    }
}

impl Steps {
    /// `on_step` hears each step's name as it begins.
    pub fn new(on_step: impl Fn(&str) + Send + Sync + 'static) -> Steps {
        Steps {
            current: Mutex::new(("starting".into(), 0, Unit::Items, Instant::now())),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            on_step: Box::new(on_step),
        }
    }

    /// The next step begins: `total` of `unit` to do, when known.
    pub fn begin(&self, name: &str, total: Option<u64>, unit: Unit) {
        {
            let mut c = self.current.lock().unwrap();
            self.done.store(0, Relaxed);
            // A whole of 0 is shown as unknown: mark a known empty step as 1 of 1.
            self.total.store(total.map_or(0, |t| t.max(1)), Relaxed);
            *c = (name.to_string(), c.1 + 1, unit, Instant::now());
        }
        (self.on_step)(name);
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Relaxed);
    }

    /// The step's whole is reached (an estimate fell short of it, or the step was
    /// empty).
    pub fn finish(&self) {
        let total = self.total.load(Relaxed);
        if total > 0 {
            self.done.store(total, Relaxed);
        }
    }

    pub fn view(&self) -> StepView {
        let c = self.current.lock().unwrap();
        let total = self.total.load(Relaxed);
        StepView {
            step: c.0.clone(),
            step_number: c.1,
            unit: c.2,
            done: self
                .done
                .load(Relaxed)
                .min(if total > 0 { total } else { u64::MAX }),
            total: (total > 0).then_some(total),
            elapsed: c.3.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_knows_its_fraction_and_time_left() {
        let s = Steps::default();
        assert_eq!(s.view().step_number, 0);
        s.begin("loading index", None, Unit::Items);
        assert!(s.view().fraction_and_left().is_none());
        s.begin("reading all data", Some(1000), Unit::Bytes);
        s.add(250);
        let mut v = s.view();
        assert_eq!((v.step_number, v.done, v.total), (2, 250, Some(1000)));
        v.elapsed = Duration::from_secs(10);
        assert_eq!(v.fraction_and_left(), Some((0.25, Some(30))));
        s.add(5000);
        assert_eq!(s.view().done, 1000, "never past the whole");
        s.begin("empty", Some(0), Unit::Items);
        s.finish();
        assert_eq!(s.view().fraction_and_left().unwrap().0, 1.0);
    }
}
