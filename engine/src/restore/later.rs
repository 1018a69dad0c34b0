//! Folders whose metadata (times, mode, owner) a restore applies at its end, when their
//! contents are all written (writing a file into a folder moves the folder's times).
//! Applied newest first, so a folder's own times are set after its sub-folders'.
//!
//! A snapshot may hold millions of folders: past [`IN_MEMORY`] of them, they go to a
//! temporary file in batches, and come back a batch at a time, last batch first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::sys;
use crate::tree::Node;

/// Folders kept in memory before a batch goes to the file (about 300 bytes each).
const IN_MEMORY: usize = 20_000;

#[derive(Default)]
pub(super) struct FolderMetadata {
    batch: Vec<(PathBuf, Node)>,
    spilled: Option<Spill>,
}

struct Spill {
    file: File,
    path: PathBuf,
    /// (offset, length) of each batch written.
    batches: Vec<(u64, u64)>,
    end: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl FolderMetadata {
    pub fn push(&mut self, path: PathBuf, node: Node) -> Result<()> {
        self.batch.push((path, node));
        if self.batch.len() >= IN_MEMORY {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        if self.spilled.is_none() {
            let path = std::env::temp_dir().join(format!(
                "backazon-restore-folders-{}-{}",
                std::process::id(),
                Id::random().short()
            ));
            let file = sys::private_file(File::options().read(true).write(true).create_new(true))
                .open(&path)
                .map_err(|e| Error::io("creating", &path, e))?;
            self.spilled = Some(Spill {
                file,
                path,
                batches: Vec::new(),
                end: 0,
            });
        }
        let s = self.spilled.as_mut().expect("made above");
        // Paths as this process's own OS string bytes: read back by this process only.
        let records: Vec<(&[u8], &Node)> = self
            .batch
            .iter()
            .map(|(p, n)| (p.as_os_str().as_encoded_bytes(), n))
            .collect();
        let bytes = serde_json::to_vec(&records).expect("serialising folders");
        s.file
            .write_all(&bytes)
            .map_err(|e| Error::io("writing", &s.path, e))?;
        s.batches.push((s.end, bytes.len() as u64));
        s.end += bytes.len() as u64;
        self.batch.clear();
        Ok(())
    }

    /// Hands every folder to `apply`, newest first.
    pub fn drain(mut self, mut apply: impl FnMut(&Path, &Node)) -> Result<()> {
        for (path, node) in self.batch.drain(..).rev() {
            apply(&path, &node);
        }
        let Some(mut s) = self.spilled.take() else {
            return Ok(());
        };
        for &(offset, len) in s.batches.iter().rev() {
            let mut bytes = vec![0u8; len as usize];
            s.file
                .seek(SeekFrom::Start(offset))
                .and_then(|_| s.file.read_exact(&mut bytes))
                .map_err(|e| Error::io("reading", &s.path, e))?;
            let records: Vec<(Vec<u8>, Node)> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(s.path.display().to_string(), e.to_string()))?;
            for (path, node) in records.into_iter().rev() {
                // SAFETY: these bytes are `as_encoded_bytes` of an OsStr, written above by
                // this same process.
                let path = unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(path) };
                apply(Path::new(&path), &node);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Name;

    #[test]
    fn folders_come_back_newest_first_past_the_memory_bound() {
        let mut m = FolderMetadata::default();
        let n = 2 * IN_MEMORY + 17;
        for i in 0..n {
            m.push(
                PathBuf::from(format!("/t/{i}")),
                Node::layout_dir(Name(vec![b'x'])),
            )
            .unwrap();
        }
        let file = m.spilled.as_ref().unwrap().path.clone();
        assert!(file.exists());
        let mut seen = Vec::new();
        m.drain(|p, _| seen.push(p.to_path_buf())).unwrap();
        let want: Vec<_> = (0..n)
            .rev()
            .map(|i| PathBuf::from(format!("/t/{i}")))
            .collect();
        assert_eq!(seen, want);
        assert!(!file.exists(), "the temporary file is removed");
    }
}
