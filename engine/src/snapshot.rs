//! Snapshot objects: the root tree of one backup run and what it was (time, host, user,
//! job, paths, tags, parent) and what it did (the summary).

use serde::{Deserialize, Serialize};

use crate::id::Id;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unchanged: u64,
    /// Files whose size or mtime changed while they were being read.
    pub files_changed_during_read: u64,
    /// Items that could not be read and were left out.
    pub errors: u64,
    pub total_files: u64,
    pub total_bytes: u64,
    pub bytes_read: u64,
    /// Bytes of new data blobs before compression.
    pub data_added_raw: u64,
    /// Bytes added to the repository (after compression and encryption, packs and trees).
    pub bytes_added: u64,
    pub blobs_added: u64,
    pub packs_written: u64,
    pub duration_seconds: f64,
    /// The first errors, for `snapshots --json` and the log; the count is in `errors`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_messages: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// RFC 3339 in UTC, nanoseconds.
    pub time: String,
    pub tree: Id,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    pub program_version: String,
    pub summary: Summary,
}

impl Snapshot {
    /// A snapshot object's contents, once opened.
    pub fn decode(plain: &[u8]) -> Result<Snapshot, String> {
        serde_json::from_slice(plain).map_err(|e| format!("malformed snapshot: {e}"))
    }

    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }
}

/// A snapshot together with the name of the object it was read from.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
}
