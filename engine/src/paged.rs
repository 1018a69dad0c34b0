//! A folder too large to hold decoded (a tree of millions of entries, over 8 MiB of
//! text): its entries in pages of [`PAGE`], each kept zstd-compressed and decoded when
//! asked for, a few decoded at a time. The mount holds a listed folder this way, so a
//! folder of 10 million entries costs about what its stored tree costs, not gigabytes
//! of decoded entries. Entries keep the tree's order; lookups by name bisect the pages'
//! first names, then the page.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::{Name, Node, Tree};

/// Entries in a page.
pub const PAGE: usize = 1024;

/// Decoded pages kept per folder (about 300 KiB each).
const DECODED: usize = 4;

struct Page {
    first: Name,
    raw_len: usize,
    bytes: Vec<u8>,
}

/// Whether tree `id` is one to read as pages: over 8 MiB decoded (some 50,000 entries).
pub fn is_large(index: &Index, id: &Id) -> bool {
    index
        .get(id)
        .is_some_and(|l| l.raw_length > crate::repo::STREAM_OVER)
}

pub struct PagedTree {
    id: Id,
    len: usize,
    pages: Vec<Page>,
    decoded: Mutex<LruCache<usize, Arc<Tree>>>,
}

impl PagedTree {
    /// Reads tree `id` entry by entry into pages.
    pub fn read(repo: &Repository, index: &Index, id: &Id) -> Result<PagedTree> {
        let mut pages = Vec::new();
        let mut len = 0;
        let mut page: Vec<Node> = Vec::with_capacity(PAGE);
        let seal = |page: &mut Vec<Node>, pages: &mut Vec<Page>| {
            let nodes = std::mem::take(page);
            let first = nodes[0].name.clone();
            let raw = Tree { nodes }.to_bytes();
            let mut bytes = zstd::bulk::compress(&raw, 1)
                .map_err(|e| Error::Invalid(format!("compressing a page of tree {id}: {e}")))?;
            // Made with room for the worst case: keep only what it holds.
            bytes.shrink_to_fit();
            pages.push(Page {
                first,
                raw_len: raw.len(),
                bytes,
            });
            Ok::<(), Error>(())
        };
        repo.for_each_tree_node(index, id, &mut |node| {
            page.push(node);
            len += 1;
            if page.len() == PAGE {
                seal(&mut page, &mut pages)?;
            }
            Ok(())
        })?;
        if !page.is_empty() {
            seal(&mut page, &mut pages)?;
        }
        pages.shrink_to_fit();
        Ok(PagedTree {
            id: *id,
            len,
            pages,
            decoded: Mutex::new(LruCache::new(NonZeroUsize::new(DECODED).expect("non-zero"))),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Memory held: the compressed pages and the decoded ones.
    pub fn bytes(&self) -> usize {
        let pages: usize = self.pages.iter().map(|p| p.bytes.len() + 64).sum();
        pages + DECODED * PAGE * 300
    }

    /// Page `p`, decoded.
    pub fn page(&self, p: usize) -> Option<Arc<Tree>> {
        if let Some(t) = self.decoded.lock().unwrap().get(&p) {
            return Some(t.clone());
        }
        let page = self.pages.get(p)?;
        let raw = zstd::bulk::decompress(&page.bytes, page.raw_len).ok()?;
        let tree = Arc::new(Tree::from_bytes(&self.id, &raw).ok()?);
        self.decoded.lock().unwrap().put(p, tree.clone());
        Some(tree)
    }

    /// Entry `i`: the decoded page holding it and its place there.
    pub fn at(&self, i: usize) -> Option<(Arc<Tree>, usize)> {
        if i >= self.len {
            return None;
        }
        Some((self.page(i / PAGE)?, i % PAGE))
    }

    /// The place of the entry named `name`.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        // The last page whose first name is not after `name`.
        let p = self
            .pages
            .partition_point(|pg| pg.first.0.as_slice() <= name)
            .checked_sub(1)?;
        let page = self.page(p)?;
        let j = page
            .nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()?;
        Some(p * PAGE + j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{craft_snapshot, Crafted};

    #[test]
    fn pages_hold_every_entry_in_order_and_find_each() {
        let dir = std::env::temp_dir().join(format!("bz-paged-{}", Id::random().short()));
        let backend = Arc::new(crate::LocalBackend::new(&dir));
        let repo = Repository::init(backend, b"pw", 1 << 20).unwrap();
        let n = 2 * PAGE + 7;
        let names: Vec<String> = (0..n).map(|i| format!("e{i:06}")).collect();
        let entries = names
            .iter()
            .map(|s| Crafted::file(s, s.as_bytes()))
            .collect();
        let snap = craft_snapshot(&repo, vec![Crafted::dir("big", entries)]).unwrap();
        let index = repo.load_index().unwrap().index;
        let root = repo.read_snapshot(&snap.to_hex()).unwrap().tree;
        let big = repo.read_tree(&index, &root).unwrap().nodes[0]
            .subtree
            .unwrap();
        let paged = PagedTree::read(&repo, &index, &big).unwrap();
        assert_eq!(paged.len(), n);
        for (i, name) in names.iter().enumerate() {
            let (page, j) = paged.at(i).unwrap();
            assert_eq!(page.nodes[j].name.0, name.as_bytes());
            assert_eq!(paged.find(name.as_bytes()), Some(i), "{name}");
        }
        assert!(paged.at(n).is_none());
        for missing in ["", "a", "e0010235", "e00102", "zzz"] {
            assert_eq!(paged.find(missing.as_bytes()), None, "{missing}");
        }
        // Closed first: Windows removes an open file only once it is closed.
        drop(paged);
        drop(repo);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
