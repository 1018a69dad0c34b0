//! Counting a backup's selection ahead of its readers, as restic does, so that a front
//! end can show how far the backup is and when it will end. A thread of its own walks
//! the same paths with the same selection, only asking each entry's metadata; the
//! backup neither waits for it nor trusts it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{Selection, Totals};
use crate::glob::any_matches;
use crate::sys;

/// Starts the count on a thread of its own.
pub(super) fn start(paths: Vec<PathBuf>, selection: Selection, totals: Arc<Totals>) {
    let _ = std::thread::Builder::new()
        .name("count".into())
        .spawn(move || {
            for p in &paths {
                if !walk(p, &selection, &totals) {
                    return;
                }
            }
            totals.done.store(true, Relaxed);
        });
}

/// Depth first with a stack of its own; false when stopped.
fn walk(root: &Path, sel: &Selection, totals: &Totals) -> bool {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((path, depth)) = stack.pop() {
        if totals.stop.load(Relaxed) {
            return false;
        }
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if depth > 0 && any_matches(&sel.excludes, &sys::match_path(&path)) {
            continue;
        }
        if meta.is_file() {
            if sel.exclude_larger_than.is_some_and(|l| meta.len() > l) {
                continue;
            }
            totals.files.fetch_add(1, Relaxed);
            totals.bytes.fetch_add(meta.len(), Relaxed);
        } else if meta.is_dir() && depth < crate::MAX_DEPTH && !sel.excludes_folder(&path) {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| (e.path(), depth + 1)));
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_follows_the_selection() {
        let dir = std::env::temp_dir().join(format!("bz-count-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/skip")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("a/one"), b"12345").unwrap();
        std::fs::write(dir.join("a/big"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("a/x.tmp"), b"tmp").unwrap();
        std::fs::write(dir.join("a/skip/.nobackup"), b"").unwrap();
        std::fs::write(dir.join("a/skip/hidden"), b"hidden").unwrap();
        std::fs::write(dir.join("b/two"), b"12").unwrap();
        let sel = Selection {
            excludes: vec![crate::glob::Pattern::new("*.tmp").unwrap()],
            exclude_if_present: vec![".nobackup".into()],
            exclude_caches: false,
            exclude_larger_than: Some(500),
        };
        let totals = Arc::new(Totals::default());
        start(vec![dir.join("a"), dir.join("b")], sel, totals.clone());
        while !totals.done.load(Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(totals.files.load(Relaxed), 2);
        assert_eq!(totals.bytes.load(Relaxed), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
