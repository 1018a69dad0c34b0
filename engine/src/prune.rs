//! Prune: delete what no snapshot references. Packs holding nothing in use are removed;
//! packs mostly unused are repacked (their used blobs copied, still sealed, into new
//! packs) and removed. Runs under the exclusive lock, so no backup can be adding
//! references to old blobs meanwhile, and in the order of docs/FORMAT.md ("Prune"), so a
//! crash at any point loses nothing a snapshot references.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::id::{Id, IdHashBuilder};
use crate::index::Index;
use crate::lock;
use crate::pack::{BlobKind, PackBlob, PackBuilder};
use crate::progress::{Steps, Unit};
use crate::repo::Repository;
use crate::tree::NodeKind;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub dry_run: bool,
    /// Unused bytes left in packs, as a share of the bytes in use: packs with the most
    /// unused space are repacked until at most this much is left (as restic's
    /// `--max-unused`, 5% by default).
    pub max_unused: f64,
    /// Index objects hold at most this many packs each.
    pub packs_per_index: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: 0.05,
            packs_per_index: 10_000,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_used: usize,
    pub packs_before: usize,
    pub bytes_before: u64,
    /// Packs holding nothing in use: removed.
    pub packs_unused: usize,
    /// Packs mostly unused: their used blobs copied into new packs, then removed.
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub bytes_copied: u64,
    pub packs_after: usize,
    pub bytes_after: u64,
    pub index_objects_removed: usize,
    pub index_objects_written: usize,
    /// Leftovers of interrupted writes (local folders).
    pub temporary_files_removed: usize,
    pub temporary_bytes_removed: u64,
    /// Blobs snapshots name that no pack holds (damage `check` reports); prune goes on.
    pub missing_blobs: usize,
}

/// Every blob the snapshots reference, tree and data. Fails when a tree cannot be
/// read: prune must know everything in use before it deletes anything.
fn used_blobs(
    repo: &Repository,
    index: &Index,
    roots: &[Id],
    report: &mut PruneReport,
    steps: &Steps,
) -> Result<HashSet<Id, IdHashBuilder>> {
    let mut used: HashSet<Id, IdHashBuilder> = HashSet::default();
    let mut stack: Vec<Id> = Vec::new();
    for r in roots {
        if used.insert(*r) {
            stack.push(*r);
        }
    }
    while let Some(t) = stack.pop() {
        steps.add(1);
        let tree = repo.read_tree(index, &t).map_err(|e| {
            Error::Invalid(format!(
                "cannot read tree {t} ({e}); prune stops without deleting anything: run `backazon check`"
            ))
        })?;
        for n in &tree.nodes {
            if n.kind == NodeKind::Dir {
                if let Some(sub) = n.subtree {
                    if used.insert(sub) {
                        stack.push(sub);
                    }
                }
            }
            for c in &n.content {
                used.insert(*c);
            }
        }
    }
    report.missing_blobs = used.iter().filter(|b| !index.contains(b)).count();
    Ok(used)
}

/// Temporary files of keys and locks older than this are leftovers of dead writers.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Prunes, or with `dry_run` only says what it would do. `steps` hears what is being
/// done and how far it is.
pub fn prune(repo: &Repository, opts: &PruneOptions, steps: &Steps) -> Result<PruneReport> {
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock::lock(repo, true, "prune", Duration::ZERO)?)
    };
    let backend = repo.backend();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    steps.begin("loading index", None, Unit::Items);
    let old_index_objects: Vec<String> = backend
        .list(Kind::Index)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let loaded = repo.load_index()?;
    if !loaded.problems.is_empty() {
        return Err(Error::Invalid(format!(
            "the index has problems ({}); prune deletes nothing until `backazon check` is clean",
            loaded.problems.join("; ")
        )));
    }
    let index = &loaded.index;
    let (snaps, problems) = repo.snapshots()?;
    if !problems.is_empty() {
        return Err(Error::Invalid(format!(
            "some snapshots cannot be read ({}); prune deletes nothing while it cannot see what they use",
            problems.join("; ")
        )));
    }
    report.snapshots = snaps.len();
    // Trees no snapshot uses any more are not walked: the whole is an upper bound.
    let trees = index.count_of(BlobKind::Tree) as u64;
    steps.begin(
        &format!("finding the data {} snapshots use", snaps.len()),
        Some(trees),
        Unit::Items,
    );
    let roots: Vec<Id> = snaps.iter().map(|s| s.snapshot.tree).collect();
    let used = used_blobs(repo, index, &roots, &mut report, steps)?;
    steps.finish();
    report.blobs_used = used.len();

    // Which packs stay as they are, which go, which are repacked. A blob stored in
    // several packs (a repack interrupted before its old packs were removed) counts as
    // used in one of them only: its home, the fullest pack holding it.
    let by_pack: Vec<(Id, Vec<PackBlob>)> = index
        .blobs_by_pack()
        .into_iter()
        .filter(|(p, _)| loaded.pack_sizes.contains_key(p))
        .collect();
    let mut order: Vec<(u64, usize)> = by_pack
        .iter()
        .enumerate()
        .map(|(i, (p, blobs))| {
            let used_bytes: u64 = blobs
                .iter()
                .filter(|b| used.contains(&b.id))
                .map(|b| b.length as u64)
                .sum();
            (used_bytes * 1000 / loaded.pack_sizes[p].max(1), i)
        })
        .collect();
    order.sort_by_key(|&(share, i)| (std::cmp::Reverse(share), by_pack[i].0));
    let mut home: HashMap<Id, Id, IdHashBuilder> = HashMap::default();
    for &(_, i) in &order {
        let (pack, blobs) = &by_pack[i];
        for b in blobs {
            if used.contains(&b.id) {
                home.entry(b.id).or_insert(*pack);
            }
        }
    }
    let mut keep: Vec<(Id, Vec<PackBlob>)> = Vec::new();
    let mut remove: Vec<Id> = Vec::new();
    let mut partly: Vec<(u64, Id, Vec<PackBlob>)> = Vec::new();
    let (mut used_total, mut unused_total) = (0u64, 0u64);
    for (pack, blobs) in by_pack {
        let size = loaded.pack_sizes[&pack];
        report.packs_before += 1;
        report.bytes_before += size;
        let used_bytes: u64 = blobs
            .iter()
            .filter(|b| home.get(&b.id) == Some(&pack))
            .map(|b| b.length as u64)
            .sum();
        // The header (about 41 bytes a blob) is not waste.
        let overhead = 64 + 41 * blobs.len() as u64;
        let unused = size.saturating_sub(used_bytes + overhead);
        if used_bytes == 0 {
            remove.push(pack);
        } else if unused == 0 {
            used_total += used_bytes;
            keep.push((pack, blobs));
        } else {
            used_total += used_bytes;
            unused_total += unused;
            partly.push((unused * 1000 / size.max(1), pack, blobs));
        }
    }
    // The emptiest packs first, until what stays unused is within the limit.
    partly.sort_by_key(|(share, pack, _)| (std::cmp::Reverse(*share), *pack));
    let limit = (opts.max_unused.max(0.0) * used_total as f64) as u64;
    let mut repack: Vec<(Id, Vec<PackBlob>)> = Vec::new();
    for (share, pack, blobs) in partly {
        if unused_total > limit {
            let size = loaded.pack_sizes[&pack];
            unused_total -= (share * size / 1000).min(unused_total);
            repack.push((pack, blobs));
        } else {
            keep.push((pack, blobs));
        }
    }
    report.packs_unused = remove.len();
    report.packs_repacked = repack.len();
    // Blobs whose home is a repacked pack are copied; the others stay where they are.
    let to_copy: u64 = repack
        .iter()
        .flat_map(|(p, b)| {
            let home = &home;
            b.iter().filter(move |b| home.get(&b.id) == Some(p))
        })
        .map(|b| b.length as u64)
        .sum();
    let kept_bytes: u64 = keep
        .iter()
        .map(|(p, _)| loaded.pack_sizes.get(p).copied().unwrap_or(0))
        .sum();
    if opts.dry_run {
        report.bytes_copied = to_copy;
        report.packs_after = keep.len() + (to_copy > 0) as usize;
        report.bytes_after = kept_bytes + to_copy;
        return Ok(report);
    }

    // 1. New packs with the used blobs of the packs being repacked.
    let mut new_packs: Vec<(Id, Vec<PackBlob>)> = Vec::new();
    let pack_size = repo.config().pack_size;
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    steps.begin(
        &format!(
            "copying the used data of {} of {} packs ({} to remove whole, {} kept)",
            repack.len(),
            report.packs_before,
            remove.len(),
            keep.len()
        ),
        Some(to_copy),
        Unit::Bytes,
    );
    let flush = |b: &mut PackBuilder, new_packs: &mut Vec<(Id, Vec<PackBlob>)>| -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let f = b.finish(repo.keys());
        let id = repo.write_pack(f.kind, &f.bytes)?;
        new_packs.push((id, f.blobs));
        Ok(())
    };
    for (pack, blobs) in &repack {
        let wanted: Vec<&PackBlob> = blobs
            .iter()
            .filter(|b| home.get(&b.id) == Some(pack))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let name = pack.to_hex();
        let bytes = backend.read(Kind::Pack, &name)?;
        for b in wanted {
            let loc = index.get(&b.id).filter(|l| l.pack == *pack).unwrap_or(
                crate::index::BlobLocation {
                    pack: *pack,
                    kind: b.kind,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                },
            );
            let range = b.offset as usize..b.offset as usize + b.length as usize;
            let stored = bytes.get(range).map(<[u8]>::to_vec).ok_or_else(|| {
                Error::corrupt(
                    format!("pack {name}"),
                    "a blob lies past the end of the pack",
                )
            });
            // Copy only blobs that verify; a damaged one is read through the replica or
            // another pack if there is one, else prune stops before deleting anything.
            let stored = match stored.and_then(|s| {
                repo.decode_blob(b.kind, &b.id, &loc, s.clone()).map(|_| s)
            }) {
                Ok(s) => s,
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "blob {} in pack {name} is damaged ({e}); prune stops before deleting anything: run `backazon check`",
                        b.id
                    )))
                }
            };
            let builder = builders
                .entry(b.kind)
                .or_insert_with(|| PackBuilder::new(b.kind));
            builder.add(b.id, b.raw_length as usize, &stored);
            report.bytes_copied += stored.len() as u64;
            steps.add(stored.len() as u64);
            if builder.len() >= pack_size {
                flush(builder, &mut new_packs)?;
            }
        }
    }
    for b in builders.values_mut() {
        flush(b, &mut new_packs)?;
    }
    report.packs_written = new_packs.len();

    // 2. The new index: every kept pack and every new one (packs are durable first).
    backend.flush()?;
    let mut all: Vec<(Id, Vec<PackBlob>)> = keep;
    all.extend(new_packs);
    let mut new_names = HashSet::new();
    let per_index = opts.packs_per_index.max(1);
    steps.begin(
        "writing the new index",
        Some(all.len().div_ceil(per_index) as u64),
        Unit::Items,
    );
    for chunk in all.chunks(per_index) {
        new_names.insert(repo.write_index(chunk)?.to_hex());
        report.index_objects_written += 1;
        steps.add(1);
    }
    let old: Vec<&String> = old_index_objects
        .iter()
        .filter(|n| !new_names.contains(*n))
        .collect();
    let packs_gone = remove.len() + repack.len();
    steps.begin(
        &format!(
            "removing {} old index objects and {packs_gone} packs",
            old.len()
        ),
        Some((old.len() + packs_gone) as u64),
        Unit::Items,
    );
    // 3. The old index objects (a blob named by both old and new is found either way).
    for name in old {
        match backend.remove(Kind::Index, name) {
            Ok(()) | Err(Error::NotFound(_)) => report.index_objects_removed += 1,
            Err(e) => return Err(e),
        }
        steps.add(1);
    }
    // 4. Only now the packs: nothing in the index names them any more.
    for p in remove.iter().chain(repack.iter().map(|(p, _)| p)) {
        match backend.remove(Kind::Pack, &p.to_hex()) {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        steps.add(1);
    }
    // What interrupted writers left. Packs, index and snapshot objects are written only
    // under a lock (backup: shared, prune: exclusive); this prune holds the exclusive
    // one, so no writer of theirs is live and their temporary files go whatever their
    // age. (`replica sync` copies without a lock, needing no password: one it is
    // writing at this moment fails and is copied on its next run.) Keys and locks are
    // written without one: theirs go after an hour.
    steps.begin("removing what interrupted writes left", None, Unit::Items);
    let (n, bytes) =
        backend.remove_leftovers(&[Kind::Pack, Kind::Index, Kind::Snapshot], LEFTOVER_AGE)?;
    report.temporary_files_removed = n;
    report.temporary_bytes_removed = bytes;
    for (_, size) in backend.list(Kind::Pack)? {
        report.packs_after += 1;
        report.bytes_after += size;
    }
    Ok(report)
}
