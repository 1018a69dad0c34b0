//! A repository kept in two places: every object written goes to the primary and then to
//! the replica (the same bytes under the same name); reads use the primary and fall back
//! to the replica when an object is missing or unreadable there (and, through
//! [`Backend::fallback`], when it fails its authentication check). When the replica
//! cannot be written, the run goes on with the primary alone and says the replica is
//! behind; [`sync`] copies what one side lacks (or has damaged) from the other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, BackendStats, Kind, Leftover};
use crate::error::{Error, Result};
use crate::id::Id;

/// How far behind the replica fell during this run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaStatus {
    /// Objects written to the primary but not to the replica.
    pub objects_behind: u64,
    /// Why, the first time it failed.
    pub first_error: Option<String>,
}

pub struct Replicated {
    primary: Arc<dyn Backend>,
    replica: Arc<dyn Backend>,
    status: Mutex<ReplicaStatus>,
}

impl Replicated {
    pub fn new(primary: Arc<dyn Backend>, replica: Arc<dyn Backend>) -> Replicated {
        Replicated {
            primary,
            replica,
            status: Mutex::new(ReplicaStatus::default()),
        }
    }

    /// Writes to the replica unless it already failed in this run (one unreachable
    /// server must not cost every later object its full round of retries).
    fn to_replica(&self, what: impl FnOnce(&dyn Backend) -> Result<()>) {
        let down = self.status.lock().unwrap().first_error.is_some();
        let result = if down {
            Err(Error::Backend(String::new()))
        } else {
            what(&*self.replica)
        };
        if let Err(e) = result {
            let mut s = self.status.lock().unwrap();
            s.objects_behind += 1;
            if s.first_error.is_none() {
                s.first_error = Some(format!("{}: {e}", self.replica.location()));
            }
        }
    }
}

impl Backend for Replicated {
    fn location(&self) -> String {
        format!(
            "{} (replica {})",
            self.primary.location(),
            self.replica.location()
        )
    }

    fn create(&self) -> Result<()> {
        self.primary.create()?;
        self.replica.create()
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.primary
            .read(kind, name)
            .or_else(|e| self.replica.read(kind, name).map_err(|_| e))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: usize) -> Result<Vec<u8>> {
        self.primary
            .read_range(kind, name, offset, length)
            .or_else(|e| {
                self.replica
                    .read_range(kind, name, offset, length)
                    .map_err(|_| e)
            })
    }

    fn read_range_to(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        length: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        // What the primary handed over stays handed over; the replica gives the rest.
        let mut done = 0usize;
        let mut sink_failed = false;
        let first = self
            .primary
            .read_range_to(kind, name, offset, length, &mut |p| {
                sink(p).inspect_err(|_| sink_failed = true)?;
                done += p.len();
                Ok(())
            });
        match first {
            Ok(()) => Ok(()),
            Err(e) if !sink_failed && done < length => self
                .replica
                .read_range_to(kind, name, offset + done as u64, length - done, sink)
                .map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.primary.write(kind, name, data)?;
        self.to_replica(|r| r.write(kind, name, data));
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.primary.flush()?;
        let down = self.status.lock().unwrap().first_error.is_some();
        if !down {
            if let Err(e) = self.replica.flush() {
                let mut s = self.status.lock().unwrap();
                s.first_error = Some(format!("{}: {e}", self.replica.location()));
            }
        }
        Ok(())
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        self.primary
            .list(kind)
            .or_else(|e| self.replica.list(kind).map_err(|_| e))
    }

    fn leftovers(&self) -> Result<Vec<Leftover>> {
        let mut all = self.primary.leftovers()?;
        all.extend(self.replica.leftovers().unwrap_or_default());
        Ok(all)
    }

    fn remove_leftovers(&self, unowned: &[Kind], older_than: Duration) -> Result<(usize, u64)> {
        let (n, bytes) = self.primary.remove_leftovers(unowned, older_than)?;
        let (m, more) = self
            .replica
            .remove_leftovers(unowned, older_than)
            .unwrap_or_default();
        Ok((n + m, bytes + more))
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        self.primary.remove(kind, name)?;
        self.to_replica(|r| match r.remove(kind, name) {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        });
        Ok(())
    }

    fn exists(&self, kind: Kind, name: &str) -> Result<bool> {
        match self.primary.exists(kind, name) {
            Ok(true) => Ok(true),
            Ok(false) => Ok(self.replica.exists(kind, name).unwrap_or(false)),
            Err(e) => self.replica.exists(kind, name).map_err(|_| e),
        }
    }

    fn stats(&self) -> Option<BackendStats> {
        let (a, b) = (self.primary.stats(), self.replica.stats());
        match (a, b) {
            (None, None) => None,
            (a, b) => {
                let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
                Some(BackendStats {
                    puts: a.puts + b.puts,
                    gets: a.gets + b.gets,
                    lists: a.lists + b.lists,
                    deletes: a.deletes + b.deletes,
                    heads: a.heads + b.heads,
                    bytes_sent: a.bytes_sent + b.bytes_sent,
                    bytes_received: a.bytes_received + b.bytes_received,
                    retries: a.retries + b.retries,
                })
            }
        }
    }

    fn concurrency(&self) -> usize {
        self.primary.concurrency()
    }

    fn prefers_large_reads(&self) -> bool {
        self.primary.prefers_large_reads()
    }

    fn fallback(&self) -> Option<&dyn Backend> {
        Some(&*self.replica)
    }

    fn replica_status(&self) -> Option<ReplicaStatus> {
        Some(self.status.lock().unwrap().clone())
    }
}

/// One difference between the two sides.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub object: String,
    /// "missing on the replica", "damaged on the primary", ...
    pub problem: String,
    /// What `sync` did about it, if it ran.
    pub repaired: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub objects: u64,
    pub copied: u64,
    pub differences: Vec<Difference>,
}

const KINDS: [Kind; 5] = [
    Kind::Config,
    Kind::Key,
    Kind::Index,
    Kind::Snapshot,
    Kind::Pack,
];

fn object_path(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Config => "config".into(),
        _ => format!("{}/{name}", kind.dir()),
    }
}

/// Whether a copy's bytes are what its name says (objects other than `config` are named
/// by the BLAKE3 of their bytes).
fn intact(kind: Kind, name: &str, bytes: &[u8]) -> bool {
    kind == Kind::Config || Id::of_object(bytes).to_hex() == name
}

fn listing(b: &dyn Backend, kind: Kind) -> Result<std::collections::BTreeMap<String, u64>> {
    if kind == Kind::Config {
        let mut m = std::collections::BTreeMap::new();
        if b.exists(Kind::Config, "config")? {
            m.insert("config".to_string(), 0);
        }
        return Ok(m);
    }
    Ok(b.list(kind)?.into_iter().collect())
}

/// Compares the two sides object by object: presence and size always, and with
/// `verify` every byte (each copy against its name). With `repair`, copies an object to
/// the side that lacks it or holds a damaged copy, from a side whose copy is intact.
pub fn sync(
    primary: &dyn Backend,
    replica: &dyn Backend,
    verify: bool,
    repair: bool,
    progress: &dyn Fn(&str),
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let sides: [(&str, &dyn Backend); 2] = [("primary", primary), ("replica", replica)];
    for kind in KINDS {
        let lists = [listing(primary, kind)?, listing(replica, kind)?];
        let mut names: Vec<&String> = lists[0].keys().chain(lists[1].keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            report.objects += 1;
            let path = object_path(kind, name);
            let present = [lists[0].get(name), lists[1].get(name)];
            // Which copies are good: read them when verifying, or when one side lacks
            // the object or sizes differ (the copy made must come from an intact one).
            let sizes_differ =
                matches!(present, [Some(a), Some(b)] if a != b && kind != Kind::Config);
            let needs_read = verify || present.iter().any(Option::is_none) || sizes_differ;
            if !needs_read {
                continue;
            }
            let mut copies: [Option<Vec<u8>>; 2] = [None, None];
            let mut good = [false, false];
            for (i, (_, b)) in sides.iter().enumerate() {
                if present[i].is_some() {
                    if let Ok(bytes) = b.read(kind, name) {
                        good[i] = intact(kind, name, &bytes);
                        copies[i] = Some(bytes);
                    }
                }
            }
            for i in 0..2 {
                let other = 1 - i;
                let problem = if present[i].is_none() {
                    format!("missing on the {}", sides[i].0)
                } else if !good[i] {
                    format!("damaged on the {}", sides[i].0)
                } else {
                    continue;
                };
                let mut repaired = false;
                if repair && good[other] {
                    let bytes = copies[other].as_ref().expect("a good copy was read");
                    sides[i].1.write(kind, name, bytes)?;
                    report.copied += 1;
                    repaired = true;
                }
                progress(&format!(
                    "{path}: {problem}{}",
                    if repaired {
                        format!(", copied from the {}", sides[other].0)
                    } else if !good[other] {
                        ", and no intact copy on either side".to_string()
                    } else {
                        String::new()
                    }
                ));
                report.differences.push(Difference {
                    object: path.clone(),
                    problem,
                    repaired,
                });
            }
        }
        for (_, b) in sides {
            b.flush()?;
        }
    }
    Ok(report)
}
