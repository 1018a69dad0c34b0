//! Storage backends: one small trait over whole objects named by kind and name. Writes are
//! atomic (an object is there whole or not at all); reads of part of an object are ranged.

pub mod local;
pub mod replica;
#[cfg(feature = "s3")]
pub mod s3;

use crate::error::Result;

/// The folders of a repository; every object lives in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Key => "keys",
            Kind::Pack => "data",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Lock => "locks",
        }
    }
}

pub trait Backend: Send + Sync {
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// Creates the repository's folders; fails if a config already exists.
    fn create(&self) -> Result<()>;
    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>>;
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: usize) -> Result<Vec<u8>>;
    /// Reads `length` bytes from `offset` and hands them to `sink` in order, piece by piece
    /// as they arrive, so that a large range is never held whole; one request where each
    /// read is one. A transfer cut off midway goes on from where it stopped: `sink` sees
    /// every byte once. An error from `sink` ends the read with that error.
    fn read_range_to(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        length: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        sink(&self.read_range(kind, name, offset, length)?)
    }
    /// Stores an object. A backend may hold packs back (not yet durable, not yet listed)
    /// until [`Backend::flush`]; it flushes by itself before storing any other kind, so
    /// an index or snapshot is never durable before the packs it names.
    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()>;
    /// Makes every pack written so far durable and visible.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Every object of a kind with its size in bytes.
    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>>;
    fn remove(&self, kind: Kind, name: &str) -> Result<()>;
    fn exists(&self, kind: Kind, name: &str) -> Result<bool>;
    /// Requests made and bytes moved so far, for backends where they cost money.
    fn stats(&self) -> Option<BackendStats> {
        None
    }
    /// Objects worth writing (or reading) at once.
    fn concurrency(&self) -> usize {
        2
    }
    /// Whether each read costs a request (and money), so that neighbouring blobs of a
    /// pack are better read with one ranged read than with one read each.
    fn prefers_large_reads(&self) -> bool {
        false
    }
    /// A second copy of the repository to read an object from when this one's copy fails
    /// its authentication check.
    fn fallback(&self) -> Option<&dyn Backend> {
        None
    }
    /// For a repository with a replica: how far the replica fell behind in this run.
    fn replica_status(&self) -> Option<replica::ReplicaStatus> {
        None
    }
    /// What interrupted writes left: temporary files of a local folder (an S3 PUT is
    /// whole or absent, and Backazon makes no multipart uploads, so S3 has none).
    fn leftovers(&self) -> Result<Vec<Leftover>> {
        Ok(Vec::new())
    }
    /// Removes leftovers: those of `unowned` kinds whatever their age (the caller knows
    /// no writer of them is live), the others once older than `older_than`. Returns how
    /// many were removed and their bytes.
    fn remove_leftovers(
        &self,
        unowned: &[Kind],
        older_than: std::time::Duration,
    ) -> Result<(usize, u64)> {
        let _ = (unowned, older_than);
        Ok((0, 0))
    }
}

/// A temporary object of an interrupted write.
#[derive(Clone, Debug)]
pub struct Leftover {
    pub kind: Kind,
    /// Where it is, for messages.
    pub path: String,
    pub size: u64,
    pub age: std::time::Duration,
}

/// What a remote backend did: requests by type (retries included) and payload bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    pub puts: u64,
    pub gets: u64,
    pub lists: u64,
    pub deletes: u64,
    pub heads: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Requests sent again after a failure (reset, 5xx, SlowDown, timeout, a body cut
    /// short): counted in the figures above too.
    pub retries: u64,
}
