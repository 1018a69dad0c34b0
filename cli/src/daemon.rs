//! `backazon daemon`: idles until a job is due, runs it as a child process
//! (`backazon job run NAME`), and sleeps again. No polling: the main loop waits on one
//! channel fed by a signal thread (SIGTERM/SIGINT stop, SIGHUP reloads), a file-watch
//! thread (inotify on the jobs file's folder) and one thread per running child; its
//! timeout is the next due run (capped at a minute, so a suspended machine or a changed
//! clock is noticed soon after).
//!
//! A run missed while the daemon was not running (machine off or asleep) is due once:
//! each job's state holds the newest slot a run covered, and any slot between it and
//! now makes the job due, however many there were.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::Result;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::jobs::{self, Jobs, RunRecord, StateDir};
use crate::sys::Signal;

enum Event {
    Stop(&'static str),
    Reload(&'static str),
    Done {
        job: String,
        task: Task,
        pid: u32,
        status: std::io::Result<std::process::ExitStatus>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Task {
    Backup,
    Prune,
}

impl Task {
    fn word(self) -> &'static str {
        match self {
            Task::Backup => "run",
            Task::Prune => "prune",
        }
    }
}

/// When each job's tasks last covered a slot (in memory; children persist it).
struct Slots {
    backup: Option<Timestamp>,
    prune: Option<Timestamp>,
}

pub struct Daemon {
    config: PathBuf,
    state: StateDir,
    exe: PathBuf,
    tz: TimeZone,
    jobs: Jobs,
    slots: BTreeMap<String, Slots>,
    running: HashMap<(String, Task), u32>,
    /// Runs that an earlier daemon started and that never finished (it was killed, or
    /// the machine stopped): due at once, whatever the schedule.
    resume: Vec<(String, Task)>,
    /// The jobs file's time, for systems where its folder is not watched.
    config_mtime: Option<std::time::SystemTime>,
}

/// Options the daemon hands to every child it starts.
#[derive(Clone)]
pub struct ChildArgs {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: Option<PathBuf>,
}

/// `backazon --config C --state-dir S job run|prune NAME`: a job's run as a process of
/// its own, so that it keeps its lock and writes its state whoever started it (the
/// daemon or the console) and ends cleanly on its own if they stop.
pub(crate) fn job_command(exe: &Path, args: &ChildArgs, task: Task, name: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(&args.config)
        .arg("--state-dir")
        .arg(&args.state_dir);
    if let Some(c) = &args.cache_dir {
        cmd.arg("--cache-dir").arg(c);
    }
    cmd.arg("job").arg(task.word()).arg(name);
    // A job run reads its own password source; none from the daemon's environment.
    crate::password::scrub(&mut cmd);
    cmd
}

/// Marks a run that ended without writing its own result (killed, or the machine
/// stopped) as interrupted; a backup's goes into the job's history too (the chart shows
/// it as a failed run). Returns the record as it now stands.
pub(crate) fn record_interrupted(
    state: &StateDir,
    job: &str,
    task: Task,
    pid: u32,
    why: &str,
) -> Option<RunRecord> {
    let Ok(_lock) = state.lock_job(job) else {
        return None;
    };
    let mut ended = None;
    let _ = state.update(job, |s| {
        let rec = match task {
            Task::Backup => &mut s.last_run,
            Task::Prune => &mut s.last_prune,
        };
        if let Some(r) = rec
            .as_mut()
            .filter(|r| r.pid == pid && r.finished.is_none())
        {
            r.finished = Some(Timestamp::now().to_string());
            r.result = "interrupted".into();
            r.error = Some(why.into());
        } else if rec.as_ref().is_none_or(|r| r.pid != pid) {
            *rec = Some(RunRecord {
                started: Timestamp::now().to_string(),
                finished: Some(Timestamp::now().to_string()),
                result: "interrupted".into(),
                trigger: "schedule".into(),
                error: Some(why.into()),
                pid,
                ..Default::default()
            });
        } else {
            return;
        }
        ended = rec.clone();
    });
    if let (Task::Backup, Some(rec)) = (task, &ended) {
        if let Err(e) = state.append_history(job, rec) {
            state.log(&format!("job {job}: keeping its history: {e:#}"));
        }
    }
    ended
}

/// A child ended by signal `sig`: recorded as interrupted and logged. A backup killed
/// or crashed rather than asked to stop (see [`crate::sys::signal_ending`]) is a failed
/// backup nobody would hear of otherwise: the job's notifiers are told, on a thread of
/// their own (a webhook or mail server may be slow), and what fails is logged and kept
/// in the record's `notify_errors`.
pub(crate) fn ended_by_signal(
    state: &StateDir,
    job: Option<&jobs::LoadedJob>,
    name: &str,
    task: Task,
    pid: u32,
    sig: i32,
) {
    let (what, asked) = crate::sys::signal_ending(sig);
    state.log(&format!(
        "job {name}: {} (pid {pid}) ended by {what}; the repository keeps everything \
         stored so far and the next run goes on from there",
        task.word()
    ));
    let rec = record_interrupted(state, name, task, pid, &format!("ended by {what}"));
    let (Some(rec), Some(job), Task::Backup, false) = (rec, job, task, asked) else {
        return;
    };
    let (state, notify, name) = (
        StateDir(state.0.clone()),
        job.job.notify.clone(),
        name.to_string(),
    );
    let host = job
        .job
        .host
        .clone()
        .unwrap_or_else(backazon_engine::sys::hostname);
    std::thread::spawn(move || {
        let failed = notify.finished(&name, &host, &rec, crate::notify::Event::Failure);
        for e in &failed {
            state.log(&format!("job {name}: notification failed: {e}"));
        }
        if failed.is_empty() {
            return;
        }
        let Ok(_lock) = state.lock_job(&name) else {
            return;
        };
        let _ = state.update(&name, |s| {
            if let Some(r) = s.last_run.as_mut().filter(|r| r.pid == pid) {
                r.notify_errors = failed;
            }
        });
    });
}

/// Runs until a stop request arrives on `signals` (the OS's signals in a console, the
/// service manager's stop under a Windows service).
pub fn run(args: ChildArgs, signals: Receiver<Signal>) -> Result<u8> {
    let state = StateDir(args.state_dir.clone());
    let jobs = jobs::load(&args.config)?;
    let mut d = Daemon {
        config: args.config.clone(),
        state,
        exe: std::env::current_exe()?,
        tz: TimeZone::system(),
        jobs,
        slots: BTreeMap::new(),
        running: HashMap::new(),
        resume: Vec::new(),
        config_mtime: std::fs::metadata(&args.config)
            .and_then(|m| m.modified())
            .ok(),
    };
    d.sync_slots();
    d.find_interrupted();
    d.state.log(&format!(
        "daemon started: {} jobs from {} (pid {})",
        d.jobs.jobs.len(),
        d.config.display(),
        std::process::id()
    ));

    let (tx, rx) = channel::<Event>();
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals {
                    let ev = match sig {
                        Signal::Reload => Event::Reload("SIGHUP"),
                        Signal::Stop(name) => Event::Stop(name),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            })?;
    }
    let watched = watch(&args.config, tx.clone());

    loop {
        let now = Timestamp::now();
        d.start_due(now, &args, &tx);
        let wait = d
            .next_wake(now)
            .map(|t| t.duration_since(now).unsigned_abs())
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(60));
        match rx.recv_timeout(wait) {
            Ok(Event::Stop(sig)) => {
                d.stop(sig, &rx);
                return Ok(0);
            }
            Ok(Event::Reload(why)) => d.reload(why),
            Ok(Event::Done {
                job,
                task,
                pid,
                status,
            }) => d.finished(&job, task, pid, status),
            Err(RecvTimeoutError::Timeout) if !watched => {
                // Unwatched, a changed jobs file is noticed at the next wake.
                let m = std::fs::metadata(&d.config).and_then(|m| m.modified()).ok();
                if m != d.config_mtime {
                    d.config_mtime = m;
                    d.reload("the jobs file changed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(0),
        }
    }
}

impl Daemon {
    /// Slots for every job: from its state, or now for a job never seen (its first run
    /// is its first slot from now on).
    fn sync_slots(&mut self) {
        let now = Timestamp::now();
        let mut slots = BTreeMap::new();
        for j in &self.jobs.jobs {
            let s = self.state.read(&j.name);
            let mut backup = self
                .slots
                .get(&j.name)
                .and_then(|s| s.backup)
                .or(s.last_slot);
            let mut prune = self
                .slots
                .get(&j.name)
                .and_then(|s| s.prune)
                .or(s.prune_slot);
            if backup.is_none() || prune.is_none() {
                backup = backup.or(Some(now));
                prune = prune.or(Some(now));
                let _ = self.state.update(&j.name, |st| {
                    st.last_slot = st.last_slot.or(backup);
                    st.prune_slot = st.prune_slot.or(prune);
                });
            }
            slots.insert(j.name.clone(), Slots { backup, prune });
        }
        self.slots = slots;
    }

    /// Scheduled runs that never finished: the state still says `running` and no
    /// process holds the job's run lock (so whoever ran it is gone), or `interrupted`.
    /// Each runs again now; a backup goes on from the packs the interrupted one stored.
    fn find_interrupted(&mut self) {
        for j in &self.jobs.jobs {
            if self.state.running(&j.name).is_some() {
                continue; // a run started by hand is going on
            }
            let s = self.state.read(&j.name);
            for (task, rec) in [(Task::Backup, &s.last_run), (Task::Prune, &s.last_prune)] {
                let Some(rec) = rec else { continue };
                if rec.trigger == "manual"
                    || !matches!(rec.result.as_str(), "running" | "interrupted")
                {
                    continue;
                }
                if rec.result == "running" {
                    self.record_interrupted(
                        &j.name,
                        task,
                        rec.pid,
                        "the daemon or the machine stopped during the run",
                    );
                }
                self.state.log(&format!(
                    "job {}: its {} started {} did not finish; it runs again now",
                    j.name,
                    task.word(),
                    rec.started
                ));
                self.resume.push((j.name.clone(), task));
            }
        }
    }

    fn due(&self, job: &jobs::LoadedJob, task: Task) -> Option<Timestamp> {
        if self
            .resume
            .iter()
            .any(|(n, t)| *n == job.name && *t == task)
        {
            return Some(Timestamp::UNIX_EPOCH);
        }
        if let Some((at, _)) = self.retry_of(&job.name, task) {
            return Some(at);
        }
        let slots = self.slots.get(&job.name)?;
        let (sched, last) = match task {
            Task::Backup => (job.schedule.as_ref()?, slots.backup?),
            Task::Prune => (job.prune_schedule.as_ref()?, slots.prune?),
        };
        sched.next_after(last, &self.tz)
    }

    /// A backup waiting to be tried again (its repository could not be reached): when,
    /// and which try that will be.
    fn retry_of(&self, job: &str, task: Task) -> Option<(Timestamp, u32)> {
        if task != Task::Backup {
            return None;
        }
        let last = self.state.read(job).last_run?;
        if last.result != "retrying" {
            return None;
        }
        let at = last.retry_at?.parse().ok()?;
        Some((at, last.attempt.unwrap_or(1) + 1))
    }

    fn start_due(&mut self, now: Timestamp, args: &ChildArgs, tx: &Sender<Event>) {
        let mut due = Vec::new();
        for j in &self.jobs.jobs {
            for task in [Task::Backup, Task::Prune] {
                if let Some(t) = self.due(j, task) {
                    if t <= now && !self.running.contains_key(&(j.name.clone(), task)) {
                        due.push((t, j.name.clone(), task));
                    }
                }
            }
        }
        // The longest-waiting first.
        due.sort();
        for (slot, name, task) in due {
            if self.running.len() >= self.jobs.settings.max_concurrent {
                return; // started when a running one finishes
            }
            // A job's prune waits for its backup and the other way round.
            let other = match task {
                Task::Backup => Task::Prune,
                Task::Prune => Task::Backup,
            };
            if self.running.contains_key(&(name.clone(), other)) {
                continue;
            }
            let resumed = self
                .resume
                .iter()
                .position(|(n, t)| *n == name && *t == task);
            let retry = self.retry_of(&name, task);
            let trigger = if let Some(i) = resumed {
                self.resume.remove(i);
                "resume"
            } else if retry.is_some() {
                "retry"
            } else if now.duration_since(slot) > jiff::SignedDuration::from_secs(60) {
                "catch-up"
            } else {
                "schedule"
            };
            let slots = self.slots.get_mut(&name).expect("slots for every job");
            match task {
                Task::Backup => slots.backup = Some(now),
                Task::Prune => slots.prune = Some(now),
            }
            let attempt = retry.map_or(1, |(_, n)| n);
            match self.spawn(&name, task, now, (trigger, attempt), args, tx) {
                Ok(pid) => {
                    self.running.insert((name.clone(), task), pid);
                }
                Err(e) => self.state.log(&format!(
                    "job {name}: could not start its {}: {e:#}",
                    task.word()
                )),
            }
        }
    }

    fn spawn(
        &self,
        name: &str,
        task: Task,
        slot: Timestamp,
        (trigger, attempt): (&str, u32),
        args: &ChildArgs,
        tx: &Sender<Event>,
    ) -> Result<u32> {
        let mut cmd = job_command(&self.exe, args, task, name);
        cmd.arg("--slot")
            .arg(slot.to_string())
            .arg("--trigger")
            .arg(trigger);
        if attempt > 1 {
            cmd.arg("--attempt").arg(attempt.to_string());
        }
        let mut child: Child = cmd.spawn()?;
        let pid = child.id();
        let tx = tx.clone();
        let job = name.to_string();
        std::thread::Builder::new()
            .name(format!("wait-{name}"))
            .spawn(move || {
                let status = child.wait();
                let _ = tx.send(Event::Done {
                    job,
                    task,
                    pid,
                    status,
                });
            })?;
        Ok(pid)
    }

    fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        for j in &self.jobs.jobs {
            for task in [Task::Backup, Task::Prune] {
                if self.running.contains_key(&(j.name.clone(), task)) {
                    continue; // its end wakes the loop
                }
                if let Some(t) = self.due(j, task) {
                    if t <= now && self.running.len() >= self.jobs.settings.max_concurrent {
                        continue; // waits for a running child to end
                    }
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next.map(|t| t.max(now))
    }

    fn finished(
        &mut self,
        job: &str,
        task: Task,
        pid: u32,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        self.running.remove(&(job.to_string(), task));
        match status {
            Ok(s) if crate::sys::ended_by_signal(&s).is_none() => {
                // The child logged its own start, end and result.
                if s.code() == Some(crate::ctx::EXIT_LOCKED as i32) {
                    self.state.log(&format!(
                        "job {job}: {} skipped: it was running already or its repository was locked; \
                         it runs again at its next slot",
                        task.word()
                    ));
                }
            }
            Ok(s) => {
                let sig = crate::sys::ended_by_signal(&s).unwrap_or(0);
                ended_by_signal(&self.state, self.jobs.get(job).ok(), job, task, pid, sig);
            }
            Err(e) => self
                .state
                .log(&format!("job {job}: waiting for pid {pid}: {e}")),
        }
    }

    fn record_interrupted(&self, job: &str, task: Task, pid: u32, why: &str) {
        record_interrupted(&self.state, job, task, pid, why);
    }

    fn reload(&mut self, why: &str) {
        match jobs::load(&self.config) {
            Ok(j) => {
                let before: Vec<String> = self.jobs.jobs.iter().map(|j| j.name.clone()).collect();
                self.jobs = j;
                self.sync_slots();
                let after: Vec<String> = self.jobs.jobs.iter().map(|j| j.name.clone()).collect();
                if before != after || why == "SIGHUP" {
                    self.state.log(&format!(
                        "jobs reloaded ({why}): {}",
                        if after.is_empty() {
                            "none".into()
                        } else {
                            after.join(", ")
                        }
                    ));
                }
            }
            Err(e) => self.state.log(&format!(
                "the jobs file has an error, keeping the jobs loaded before: {e:#}"
            )),
        }
    }

    /// Stops the running children (their repositories stay consistent: a backup only
    /// adds complete objects) and waits for them.
    fn stop(&mut self, sig: &str, rx: &std::sync::mpsc::Receiver<Event>) {
        self.state.log(&format!(
            "daemon stopping ({sig}); {} runs in progress are stopped",
            self.running.len()
        ));
        for pid in self.running.values() {
            crate::sys::terminate(*pid);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.running.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Done {
                    job,
                    task,
                    pid,
                    status,
                }) => self.finished(&job, task, pid, status),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.state.log("daemon stopped");
    }
}

/// Wakes the loop when the jobs file changes (written in place, replaced, created or
/// deleted), where the OS can watch its folder; false where it cannot.
fn watch(config: &Path, tx: Sender<Event>) -> bool {
    let (Some(dir), Some(name)) = (config.parent(), config.file_name()) else {
        return false;
    };
    crate::sys::watch_folder(dir, name, move || {
        tx.send(Event::Reload("the jobs file changed")).is_ok()
    })
}
