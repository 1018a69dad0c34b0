//! Snapshots made through the repository's own API, as anyone holding the key could make
//! them: for tests that need names, kinds or layouts the local OS cannot create (`a:b` or
//! `CON` on Windows, two names differing only in case on a folder that ignores case, a
//! link beside a folder of the same name, a folder of 50,000 entries).

use crate::blob;
use crate::crypto::MasterKeys;
use crate::pack::{BlobKind, PackBuilder};
use crate::snapshot::Snapshot;
use crate::tree::{Name, Node, NodeKind, Tree};
use crate::{Id, Repository, Result};

/// An entry of a crafted snapshot. Names are stored in the order given: give them sorted
/// (bytewise), as a backup would.
pub enum Crafted {
    File(Vec<u8>, Vec<u8>),
    Dir(Vec<u8>, Vec<Crafted>),
    Link(Vec<u8>, Vec<u8>),
}

impl Crafted {
    pub fn file(name: impl AsRef<[u8]>, bytes: impl Into<Vec<u8>>) -> Crafted {
        Crafted::File(name.as_ref().to_vec(), bytes.into())
    }
    pub fn dir(name: impl AsRef<[u8]>, entries: Vec<Crafted>) -> Crafted {
        Crafted::Dir(name.as_ref().to_vec(), entries)
    }
    pub fn link(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Crafted {
        Crafted::Link(name.as_ref().to_vec(), target.as_ref().to_vec())
    }
}

/// Every crafted file's modification time: 2023-11-14 22:13:20 UTC.
pub const CRAFTED_MTIME: i64 = 1_700_000_000_000_000_000;

struct Packs<'a> {
    keys: &'a MasterKeys,
    data: PackBuilder,
    trees: PackBuilder,
    /// Blobs stored once, as a backup stores them.
    stored: std::collections::HashSet<Id>,
}

impl Packs<'_> {
    fn store(&mut self, kind: BlobKind, plain: &[u8]) -> Id {
        let id = self.keys.blob_id(plain);
        if !self.stored.insert(id) {
            return id;
        }
        let sealed = blob::encode(
            self.keys,
            kind.object_type(),
            Some(&id),
            plain,
            Default::default(),
            kind == BlobKind::Tree,
        );
        match kind {
            BlobKind::Data => self.data.add(id, plain.len(), &sealed),
            BlobKind::Tree => self.trees.add(id, plain.len(), &sealed),
        }
        id
    }

    fn tree(&mut self, entries: Vec<Crafted>) -> Id {
        let mut nodes = Vec::with_capacity(entries.len());
        for e in entries {
            nodes.push(match e {
                Crafted::File(name, bytes) => Node {
                    kind: NodeKind::File,
                    mode: 0o644,
                    size: bytes.len() as u64,
                    mtime: CRAFTED_MTIME,
                    content: if bytes.is_empty() {
                        vec![]
                    } else {
                        vec![self.store(BlobKind::Data, &bytes)]
                    },
                    ..Node::layout_dir(Name(name))
                },
                Crafted::Dir(name, inner) => Node {
                    subtree: Some(self.tree(inner)),
                    ..Node::layout_dir(Name(name))
                },
                Crafted::Link(name, target) => Node {
                    kind: NodeKind::Symlink,
                    mode: 0o777,
                    target: Some(Name(target)),
                    ..Node::layout_dir(Name(name))
                },
            });
        }
        self.store(BlobKind::Tree, &Tree { nodes }.to_bytes())
    }
}

/// Stores a snapshot of `entries` (at its root, host `crafted`, path `/`) with its packs
/// and index, and returns the snapshot's id.
pub fn craft_snapshot(repo: &Repository, entries: Vec<Crafted>) -> Result<Id> {
    let keys = repo.keys().clone();
    let mut packs = Packs {
        keys: &keys,
        data: PackBuilder::new(BlobKind::Data),
        trees: PackBuilder::new(BlobKind::Tree),
        stored: Default::default(),
    };
    let root = packs.tree(entries);
    let mut index = Vec::new();
    for mut p in [packs.data, packs.trees] {
        if p.is_empty() {
            continue;
        }
        let f = p.finish(&keys);
        let id = repo.write_pack(f.kind, &f.bytes)?;
        index.push((id, f.blobs));
    }
    repo.write_index(&index)?;
    repo.save_snapshot(&Snapshot {
        time: "2026-01-01T00:00:00Z".into(),
        tree: root,
        paths: vec!["/".into()],
        hostname: "crafted".into(),
        username: "crafted".into(),
        job: None,
        tags: vec![],
        parent: None,
        program_version: "0".into(),
        summary: Default::default(),
    })
}
