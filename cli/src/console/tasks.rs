//! Long operations the console starts in its own process (a restore, a check): each runs
//! on a thread of its own with counters the page sees through the status events; the
//! last ones stay listed once done, with how they ended.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use backazon_engine::progress::{Steps, Unit};
use serde_json::{json, Value};

/// Finished tasks kept for the page.
const KEPT: usize = 20;

pub struct Task {
    pub id: u64,
    pub kind: &'static str,
    pub job: String,
    pub title: String,
    pub started: String,
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Bytes the task will reach, 0 when unknown.
    pub total_bytes: AtomicU64,
    pub step: Mutex<String>,
    /// A check's steps, and how far the current one is.
    pub steps: Steps,
    /// `Ok(summary)` or `Err(message)` once done.
    pub outcome: Mutex<Option<Result<String, String>>>,
}

impl Task {
    pub fn say(&self, step: &str) {
        *self.step.lock().unwrap() = step.to_string();
    }

    fn json(&self) -> Value {
        let outcome = self.outcome.lock().unwrap().clone();
        let steps = self.steps.view();
        let mut step = self.step.lock().unwrap().clone();
        let (mut done, mut total) = (self.bytes.load(Relaxed), self.total_bytes.load(Relaxed));
        let mut unit = Unit::Bytes;
        if steps.step_number > 0 {
            step = steps.step;
            (done, total, unit) = (steps.done, steps.total.unwrap_or(0), steps.unit);
        }
        json!({
            "id": self.id,
            "kind": self.kind,
            "job": self.job,
            "title": self.title,
            "started": self.started,
            "files": self.files.load(Relaxed),
            "done": done,
            "total": total,
            "unit": unit,
            "step": step,
            "finished": outcome.is_some(),
            "summary": outcome.as_ref().and_then(|o| o.as_ref().ok()),
            "error": outcome.as_ref().and_then(|o| o.as_ref().err()),
        })
    }
}

#[derive(Default)]
pub struct Tasks {
    next: AtomicU64,
    list: Mutex<Vec<Arc<Task>>>,
}

impl Tasks {
    /// Starts `work` on a thread of its own; what it returns is the task's outcome.
    pub fn start(
        &self,
        kind: &'static str,
        job: &str,
        title: String,
        work: impl FnOnce(&Task) -> anyhow::Result<String> + Send + 'static,
    ) -> u64 {
        let task = Arc::new(Task {
            id: self.next.fetch_add(1, Relaxed) + 1,
            kind,
            job: job.to_string(),
            title,
            started: jiff::Timestamp::now().to_string(),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            step: Mutex::new(String::new()),
            steps: Steps::default(),
            outcome: Mutex::new(None),
        });
        {
            let mut list = self.list.lock().unwrap();
            list.push(task.clone());
            // Forget the oldest finished ones.
            while list.len() > KEPT {
                match list
                    .iter()
                    .position(|t| t.outcome.lock().unwrap().is_some())
                {
                    Some(i) => drop(list.remove(i)),
                    None => break,
                }
            }
        }
        let id = task.id;
        std::thread::spawn(move || {
            let r = work(&task).map_err(|e| format!("{e:#}"));
            *task.outcome.lock().unwrap() = Some(r);
        });
        id
    }

    pub fn json(&self) -> Value {
        Value::Array(self.list.lock().unwrap().iter().map(|t| t.json()).collect())
    }
}
