//! The check operation: the structure (every index, snapshot and tree readable, every
//! referenced chunk indexed, every indexed pack present) and, with `read_data`, every
//! byte (each pack's name matches its contents, each blob opens and matches its id).
//! Damage is reported with the object and the files it affects.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::backend::Kind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::pack::{self, BlobKind, PackBlob, TRAILER_LEN};
use crate::progress::{Steps, Unit};
use crate::repo::Repository;
use crate::snapshot::SnapshotEntry;
use crate::tree::{EntryChecker, NodeKind};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub snapshots: usize,
    pub trees: usize,
    pub packs: usize,
    /// Packs of file data (the others hold folders' trees).
    pub data_packs: usize,
    pub index_objects: usize,
    pub blobs: usize,
    pub bytes_read: u64,
    /// Temporary files of interrupted writes (warned of, not errors).
    pub leftovers: usize,
    pub leftover_bytes: u64,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

const MAX_AFFECTED: usize = 1000;

/// A cache folder for one check, removed when it ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        Scratch(std::env::temp_dir().join(format!("backazon-check-{}", Id::random().to_hex())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks the repository. `steps` hears what is being done and how far it is, for a
/// front end to show.
pub fn check(repo: &Repository, read_data: bool, steps: &Steps) -> Result<CheckReport> {
    // The cache holds copies of good objects; check must see what storage holds. Trees
    // are read through a cache of this run's own, filled from storage: a tree pack is
    // read once, not once per tree (5,100 requests to S3 for the kernel tree's trees).
    let scratch = Scratch::new();
    let repo = &repo.without_cache().with_cache(Some(scratch.0.clone()));
    let mut report = CheckReport::default();
    // Prune deletes objects; a check running beside it would report them missing.
    // A repository this user may only read (no lock can be written) is checked anyway.
    let _lock = match crate::lock::lock(repo, false, "check", std::time::Duration::from_secs(60)) {
        Ok(l) => Some(l),
        Err(e @ crate::Error::Locked(_)) => return Err(e),
        Err(_) => None,
    };
    steps.begin("loading index", None, Unit::Items);
    let loaded = repo.load_index()?;
    report.errors.extend(loaded.problems.iter().cloned());
    for p in &loaded.unindexed_packs {
        report.warnings.push(format!(
            "pack {p} is in no index (left by an interrupted backup); its blobs are used from its header"
        ));
    }
    let leftovers = repo.backend().leftovers()?;
    if !leftovers.is_empty() {
        report.leftovers = leftovers.len();
        report.leftover_bytes = leftovers.iter().map(|l| l.size).sum();
        report.warnings.push(format!(
            "{} temporary files ({} bytes) left by interrupted writes, such as {}; \
             not part of the repository: `backazon prune` removes them",
            leftovers.len(),
            report.leftover_bytes,
            leftovers[0].path
        ));
    }
    let index = &loaded.index;
    report.packs = index.packs().len();
    report.data_packs = index
        .blobs_by_pack()
        .iter()
        .filter(|(_, blobs)| blobs.iter().any(|b| b.kind == BlobKind::Data))
        .count();
    let tree_blobs = index.count_of(BlobKind::Tree) as u64;
    report.blobs = index.len();
    report.index_objects = loaded.index_objects;
    for p in index.packs() {
        if !loaded.pack_sizes.contains_key(p) {
            report.errors.push(format!(
                "pack {p} is named by the index but missing from storage"
            ));
        }
    }

    let mut damaged: HashSet<Id> = HashSet::new();
    if read_data {
        let whole = index
            .packs()
            .iter()
            .filter_map(|p| loaded.pack_sizes.get(p))
            .sum();
        steps.begin("reading all data", Some(whole), Unit::Bytes);
        let (d, bytes) = read_all_packs(repo, index, &mut report.errors, steps);
        damaged = d;
        report.bytes_read = bytes;
    }

    // Trees in the index no snapshot uses (forgotten, not yet pruned) are not walked:
    // the whole is an upper bound, reached when the step ends.
    steps.begin(
        "checking snapshots and trees",
        Some(tree_blobs),
        Unit::Items,
    );
    let (snaps, problems) = repo.snapshots()?;
    report.errors.extend(problems);
    report.snapshots = snaps.len();
    let mut seen_trees = HashSet::new();
    let mut bad_files = Vec::new();
    for s in &snaps {
        walk(
            repo,
            index,
            s,
            &s.snapshot.tree,
            "",
            &mut seen_trees,
            &|| steps.add(1),
            &mut |msg| report.errors.push(msg),
            &mut |path, ids| {
                if ids.iter().any(|id| !index.contains(id)) {
                    bad_files.push(format!(
                        "snapshot {}: {path}: a chunk of this file is missing",
                        s.id.short()
                    ));
                }
            },
        );
    }
    steps.finish();
    report.trees = seen_trees.len();
    report.errors.append(&mut bad_files);

    if !damaged.is_empty() {
        // Name every file in every snapshot whose data is damaged.
        steps.begin(
            "naming the damaged files",
            Some(snaps.len() as u64),
            Unit::Items,
        );
        let mut affected = Vec::new();
        for s in &snaps {
            let mut no_dedup = HashSet::new();
            walk(
                repo,
                index,
                s,
                &s.snapshot.tree,
                "",
                &mut no_dedup,
                &|| {},
                &mut |_| {},
                &mut |path, ids| {
                    if affected.len() < MAX_AFFECTED && ids.iter().any(|id| damaged.contains(id)) {
                        affected.push(format!(
                            "snapshot {}: {path}: damaged data (this file cannot be restored)",
                            s.id.short()
                        ));
                    }
                },
            );
            steps.add(1);
        }
        report.errors.extend(affected);
    }
    Ok(report)
}

/// Walks a snapshot's trees with a stack of its own, not the thread's, so a hostile
/// nesting cannot overflow it; past [`crate::MAX_DEPTH`] folders it stops with an error.
#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &Index,
    snap: &SnapshotEntry,
    tree_id: &Id,
    path: &str,
    seen: &mut HashSet<Id>,
    on_tree: &dyn Fn(),
    on_error: &mut dyn FnMut(String),
    on_file: &mut dyn FnMut(&str, &[Id]),
) {
    let mut todo = vec![(*tree_id, path.to_string(), 0usize)];
    while let Some((tree_id, path, depth)) = todo.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        on_tree();
        // Entry by entry: a folder of millions of entries is never held whole.
        let mut checker = EntryChecker::default();
        let mut subs = Vec::new();
        let read = repo.for_each_tree_node(index, &tree_id, &mut |n| {
            for problem in checker.check(&n) {
                on_error(format!("snapshot {}: {path}/: {problem}", snap.id.short()));
            }
            let p = format!("{path}/{}", n.name.to_string_lossy());
            match n.kind {
                NodeKind::Dir => match &n.subtree {
                    Some(_) if depth + 1 >= crate::MAX_DEPTH => on_error(format!(
                        "snapshot {}: {p}: folders nested deeper than {} levels (not checked)",
                        snap.id.short(),
                        crate::MAX_DEPTH
                    )),
                    Some(sub) => subs.push((*sub, p, depth + 1)),
                    None => {} // named by the entry's problems
                },
                NodeKind::File => {
                    if let Some(held) = index.bytes_of(&n.content).filter(|&h| h != n.size) {
                        on_error(format!(
                            "snapshot {}: {p}: its size is given as {} bytes but its chunks \
                             hold {held}",
                            snap.id.short(),
                            n.size
                        ));
                    }
                    on_file(&p, &n.content)
                }
                _ => {}
            }
            Ok(())
        });
        if let Err(e) = read {
            on_error(format!("snapshot {}: {}/: {e}", snap.id.short(), path));
        }
        // Depth-first in name order, as the recursion it replaces.
        todo.extend(subs.into_iter().rev());
    }
}

/// Reads every pack whole, on all cores. Returns the ids of damaged blobs.
fn read_all_packs(
    repo: &Repository,
    index: &Index,
    errors: &mut Vec<String>,
    steps: &Steps,
) -> (HashSet<Id>, u64) {
    let groups = index.blobs_by_pack();
    let next = Mutex::new(groups.iter());
    let damaged = Mutex::new(HashSet::new());
    let errs = Mutex::new(Vec::new());
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some((pack, blobs)) = next.lock().unwrap().next() else {
                    return;
                };
                let (bad, mut msgs, n) = check_pack(repo, pack, blobs);
                bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                steps.add(n);
                damaged.lock().unwrap().extend(bad);
                errs.lock().unwrap().append(&mut msgs);
            });
        }
    });
    errors.extend(errs.into_inner().unwrap());
    (damaged.into_inner().unwrap(), bytes.into_inner())
}

fn check_pack(repo: &Repository, pack: &Id, blobs: &[PackBlob]) -> (Vec<Id>, Vec<String>, u64) {
    let mut errors = Vec::new();
    let all_damaged = || blobs.iter().map(|b| b.id).collect::<Vec<_>>();
    let bytes = match repo.backend().read(Kind::Pack, &pack.to_hex()) {
        Ok(b) => b,
        Err(e) => {
            errors.push(format!("pack {pack}: {e}"));
            return (all_damaged(), errors, 0);
        }
    };
    if Id::of_object(&bytes) != *pack {
        errors.push(format!(
            "pack {pack}: contents do not match its name (the object was altered or truncated)"
        ));
    }
    let mut damaged = Vec::new();
    for b in blobs {
        let loc = BlobLocation {
            pack: *pack,
            kind: b.kind,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
        };
        let stored = bytes.get(b.offset as usize..b.offset as usize + b.length as usize);
        let result = match stored {
            Some(st) => repo.verify_blob(b.kind, &b.id, &loc, st.to_vec()),
            None => Err(crate::error::Error::corrupt(
                format!("blob {} in pack {pack}", b.id),
                "lies past the end of the pack",
            )),
        };
        if let Err(e) = result {
            let kind = if b.kind == BlobKind::Tree {
                "tree"
            } else {
                "data"
            };
            errors.push(format!("pack {pack}: {kind} {e}"));
            damaged.push(b.id);
        }
    }
    if bytes.len() >= TRAILER_LEN {
        let hl = pack::header_length(&bytes);
        let end = bytes.len() - TRAILER_LEN;
        match end
            .checked_sub(hl)
            .map(|start| pack::parse_header(repo.keys(), pack, &bytes[start..end]))
        {
            Some(Ok(header)) => {
                let mut listed: Vec<_> = header.iter().map(|h| h.id).collect();
                listed.sort();
                if blobs.iter().any(|b| listed.binary_search(&b.id).is_err()) {
                    errors.push(format!(
                        "pack {pack}: header does not list every blob the index names"
                    ));
                }
            }
            Some(Err(e)) => errors.push(format!("pack {pack}: {e}")),
            None => errors.push(format!("pack {pack}: header length is out of range")),
        }
    }
    (damaged, errors, bytes.len() as u64)
}
