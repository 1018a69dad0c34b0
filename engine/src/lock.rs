//! Repository locks (docs/FORMAT.md, "Locks"): backups (and checks) hold a shared lock,
//! prune an exclusive one, so prune never deletes a pack a running backup may still
//! reference. A lock is an object `locks/<id>` refreshed every few minutes; one whose
//! holder is gone (a dead process on this host, or not refreshed for half an hour) is
//! stale and removed by whoever finds it: no `unlock` step after a crash.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Kind};
use crate::blob::{self, Compression};
use crate::crypto::{MasterKeys, ObjectType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;

/// How often a held lock is rewritten.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale, wherever its holder runs.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    /// `backup`, `prune`, `check`, ...
    pub operation: String,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    /// RFC 3339.
    pub started: String,
    pub refreshed: String,
}

impl LockInfo {
    /// A lock object's contents, once opened.
    pub fn decode(plain: &[u8]) -> Option<LockInfo> {
        serde_json::from_slice(plain).ok()
    }

    fn describe(&self) -> String {
        format!(
            "{} by {}@{} (pid {}, since {})",
            self.operation, self.username, self.hostname, self.pid, self.started
        )
    }

    /// Gone: not refreshed for [`STALE_AFTER`], or its process no longer runs here.
    pub fn is_stale(&self, now: jiff::Timestamp) -> bool {
        let refreshed = self.refreshed.parse::<jiff::Timestamp>().ok();
        let old = refreshed.is_none_or(|t| {
            now.duration_since(t) > jiff::SignedDuration::try_from(STALE_AFTER).unwrap()
        });
        old || (self.hostname == crate::sys::hostname() && !crate::sys::process_alive(self.pid))
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    keys: MasterKeys,
    info: LockInfo,
    name: Mutex<String>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Inner {
    fn write(&self) -> Result<String> {
        let mut info = self.info.clone();
        info.refreshed = jiff::Timestamp::now().to_string();
        let plain = serde_json::to_vec(&info).expect("serialising lock");
        let sealed = blob::encode(
            &self.keys,
            ObjectType::Lock,
            None,
            &plain,
            Compression::default(),
            false,
        );
        let name = Id::of_object(&sealed).to_hex();
        self.backend.write(Kind::Lock, &name, &sealed)?;
        Ok(name)
    }

    fn refresh_loop(&self) {
        let mut stop = self.stop.lock().unwrap();
        loop {
            // Checked before every wait: the stop may come before this thread first waits.
            if *stop {
                return;
            }
            let (s, timeout) = self.wake.wait_timeout(stop, REFRESH).unwrap();
            stop = s;
            if *stop {
                return;
            }
            if timeout.timed_out() {
                // A failed refresh leaves the old object in place; the next try may work.
                if let Ok(new) = self.write() {
                    let old = std::mem::replace(&mut *self.name.lock().unwrap(), new);
                    let _ = self.backend.remove(Kind::Lock, &old);
                }
            }
        }
    }
}

/// A held lock; released (its object removed) when dropped.
pub struct RepoLock {
    inner: Arc<Inner>,
    refresher: Option<JoinHandle<()>>,
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        *self.inner.stop.lock().unwrap() = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.inner.name.lock().unwrap().clone();
        let _ = self.inner.backend.remove(Kind::Lock, &name);
    }
}

/// Every other live lock in the repository; stale ones are removed on the way.
pub fn other_locks(repo: &Repository, own: Option<&str>) -> Result<Vec<LockInfo>> {
    let backend = repo.backend();
    let now = jiff::Timestamp::now();
    let mut live = Vec::new();
    for (name, _) in backend.list(Kind::Lock)? {
        if Some(name.as_str()) == own {
            continue;
        }
        let Ok(bytes) = backend.read(Kind::Lock, &name) else {
            continue; // released meanwhile
        };
        let what = || format!("locks/{name}");
        let info = blob::decode(repo.keys(), ObjectType::Lock, None, bytes, None, &what)
            .ok()
            .and_then(|plain| LockInfo::decode(&plain));
        match info {
            Some(info) if info.is_stale(now) => {
                let _ = backend.remove(Kind::Lock, &name);
            }
            Some(info) => live.push(info),
            // Not readable with this repository's keys: not a lock of ours; ignored.
            None => {}
        }
    }
    Ok(live)
}

/// Takes a lock. A shared lock waits up to `wait` while an exclusive one is held; an
/// exclusive lock fails at once when any other lock is held.
pub fn lock(
    repo: &Repository,
    exclusive: bool,
    operation: &str,
    wait: Duration,
) -> Result<RepoLock> {
    let now = jiff::Timestamp::now().to_string();
    let inner = Arc::new(Inner {
        backend: repo.backend().clone(),
        keys: repo.keys().clone(),
        info: LockInfo {
            exclusive,
            operation: operation.into(),
            hostname: crate::sys::hostname(),
            username: crate::sys::username(),
            pid: std::process::id(),
            started: now.clone(),
            refreshed: now,
        },
        name: Mutex::new(String::new()),
        stop: Mutex::new(false),
        wake: Condvar::new(),
    });
    let started = Instant::now();
    loop {
        let name = inner.write()?;
        *inner.name.lock().unwrap() = name.clone();
        let others = match other_locks(repo, Some(&name)) {
            Ok(o) => o,
            Err(e) => {
                let _ = inner.backend.remove(Kind::Lock, &name);
                return Err(e);
            }
        };
        let blocking: Vec<&LockInfo> = others.iter().filter(|o| exclusive || o.exclusive).collect();
        if blocking.is_empty() {
            let t = inner.clone();
            let refresher = std::thread::Builder::new()
                .name("lock-refresh".into())
                .spawn(move || t.refresh_loop())
                .map_err(|e| Error::Backend(format!("starting the lock refresher: {e}")))?;
            return Ok(RepoLock {
                inner,
                refresher: Some(refresher),
            });
        }
        // Step back, so two processes taking locks at once cannot block each other.
        let _ = inner.backend.remove(Kind::Lock, &name);
        let holders: Vec<String> = blocking.iter().map(|l| l.describe()).collect();
        if exclusive || started.elapsed() >= wait {
            return Err(Error::Locked(format!(
                "the repository is locked: {} (try again when it has finished; a lock whose \
                 process has died is removed automatically)",
                holders.join("; ")
            )));
        }
        let mut jitter = [0u8; 1];
        let _ = getrandom::getrandom(&mut jitter);
        std::thread::sleep(Duration::from_millis(1000 + jitter[0] as u64 * 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    fn repo(dir: &std::path::Path) -> Repository {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
        Repository::init(backend, b"pw", crate::DEFAULT_PACK_SIZE).unwrap()
    }

    #[test]
    fn shared_locks_share_and_exclusive_excludes() {
        let dir = std::env::temp_dir().join(format!("bz-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = repo(&dir);
        let a = lock(&r, false, "backup", Duration::ZERO).unwrap();
        let b = lock(&r, false, "backup", Duration::ZERO).unwrap();
        let e = lock(&r, true, "prune", Duration::ZERO);
        assert!(
            matches!(e, Err(Error::Locked(_))),
            "prune took a lock beside backups"
        );
        drop(a);
        drop(b);
        assert!(r.backend().list(Kind::Lock).unwrap().is_empty());
        let p = lock(&r, true, "prune", Duration::ZERO).unwrap();
        assert!(matches!(
            lock(&r, false, "backup", Duration::ZERO),
            Err(Error::Locked(_))
        ));
        drop(p);
        // A lock left by a process that died is stale and removed by the next taker.
        let dead = Inner {
            backend: r.backend().clone(),
            keys: r.keys().clone(),
            info: LockInfo {
                exclusive: false,
                operation: "backup".into(),
                hostname: crate::sys::hostname(),
                username: "u".into(),
                pid: u32::MAX / 2,
                started: jiff::Timestamp::now().to_string(),
                refreshed: jiff::Timestamp::now().to_string(),
            },
            name: Mutex::new(String::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        };
        dead.write().unwrap();
        let p = lock(&r, true, "prune", Duration::ZERO).unwrap();
        assert_eq!(r.backend().list(Kind::Lock).unwrap().len(), 1);
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
