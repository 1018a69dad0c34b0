//! The Windows view over crafted snapshots holding what no Windows disk can: names
//! Windows refuses, names differing only in case, a folder of 50,000 entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backazon_engine::craft::{craft_snapshot, Crafted, CRAFTED_MTIME};
use backazon_engine::{LocalBackend, Repository};

use super::*;
use crate::Options;

/// A temporary folder, removed when dropped.
pub(crate) struct Folder(pub PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A repository in a temporary folder and a view of it.
pub(crate) struct Crafted1 {
    /// Kept for its removal when dropped (the WinFsp tests take it over).
    #[cfg_attr(not(windows), allow(dead_code))]
    pub folder: Folder,
    pub view: WinView,
}

pub(crate) fn w(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// A fresh view of the repository in `dir` (nothing cached).
pub(crate) fn view_of(dir: &Path) -> WinView {
    let repo = Repository::open(Arc::new(LocalBackend::new(dir.join("repo"))), b"pw").unwrap();
    let opts = Options {
        chunk_cache_bytes: 4 << 20,
        tree_cache_bytes: 1 << 20,
        refresh_every: Duration::ZERO,
        log: Arc::new(|_| {}),
        ..Options::default()
    };
    WinView::new(SnapshotFs::new(repo, opts).unwrap())
}

/// A repository holding one crafted snapshot of `entries`, seen through the view.
pub(crate) fn crafted(name: &str, entries: Vec<Crafted>) -> Crafted1 {
    let dir = std::env::temp_dir().join(format!("bz-winview-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = Folder(dir.clone());
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.join("repo"))),
        b"pw",
        1 << 20,
    )
    .unwrap();
    craft_snapshot(&repo, entries).unwrap();
    Crafted1 {
        folder,
        view: view_of(&dir),
    }
}

/// `\by-id\<the one snapshot>`, the crafted snapshot's root.
pub(crate) fn snapshot_path(v: &WinView) -> String {
    let by_id = v.resolve(&w(r"\by-id")).unwrap().0;
    let l = v.listing(by_id.ino).unwrap();
    assert_eq!(l.entries.len(), 1);
    format!(
        r"\by-id\{}",
        String::from_utf16(&l.entries[0].name).unwrap()
    )
}

fn shown(l: &Listing) -> Vec<String> {
    l.entries
        .iter()
        .map(|e| String::from_utf16_lossy(&e.name))
        .collect()
}

fn awkward() -> Vec<Crafted> {
    vec![
        Crafted::file("CON", "device name"),
        Crafted::file("Notes.TXT", "upper"),
        Crafted::file("a:b", "colon"),
        Crafted::file("aux.txt", "device with extension"),
        Crafted::dir("docs", vec![Crafted::file("inside.txt", "in docs")]),
        Crafted::link("link", "docs"),
        Crafted::file("notes.txt", "lower"),
        Crafted::file("trail.", "trailing dot"),
    ]
}

#[test]
fn names_windows_refuses_show_escaped_and_case_twins_numbered_as_restore_does() {
    let c = crafted("names", awkward());
    let (snap, _) = c.view.resolve(&w(&snapshot_path(&c.view))).unwrap();
    let l = c.view.listing(snap.ino).unwrap();
    let mut names = shown(&l);
    names.sort();
    // The link is not shown; the later of two case twins (in the snapshot's bytewise
    // order, `N` < `n`) is numbered; refused names are escaped as the restore does.
    assert_eq!(
        names,
        [
            "CON_",
            "Notes.TXT",
            "aux_.txt",
            "a：b",
            "docs",
            "notes (2).txt",
            "trail．"
        ]
    );
    // Every name is distinct ignoring case, and found whatever the case asked.
    for e in &l.entries {
        let upper: Vec<u16> = String::from_utf16(&e.name)
            .unwrap()
            .to_uppercase()
            .encode_utf16()
            .collect();
        assert_eq!(l.find(&upper).unwrap().name, e.name);
    }
    assert!(l.find(&w("link")).is_none());
    assert!(
        l.find(&w("a:b")).is_none(),
        "only the escaped name is there"
    );
}

#[test]
fn paths_resolve_with_backslashes_ignoring_case_and_come_back_spelled_as_shown() {
    let c = crafted("resolve", awkward());
    let snap = snapshot_path(&c.view);
    let asked = format!(r"{}\DOCS\Inside.TXT", snap.to_uppercase());
    let (a, spelled) = c.view.resolve(&w(&asked)).unwrap();
    assert_eq!(a.kind, FileKind::File);
    assert_eq!(
        String::from_utf16(&spelled).unwrap(),
        format!(r"{snap}\docs\inside.txt")
    );
    let (root, spelled) = c.view.resolve(&w(r"\")).unwrap();
    assert_eq!((root.ino, spelled), (ROOT, w(r"\")));
    assert_eq!(
        c.view
            .resolve(&w(&format!(r"{snap}\nothing\inside.txt")))
            .unwrap_err(),
        Missing::Path
    );
    assert_eq!(
        c.view
            .resolve(&w(&format!(r"{snap}\docs\nothing.txt")))
            .unwrap_err(),
        Missing::Name
    );
    assert_eq!(
        c.view
            .resolve(&w(&format!(r"{snap}\CON_\below")))
            .unwrap_err(),
        Missing::Path,
        "a file is not a folder"
    );
}

#[test]
fn everything_is_read_only_with_windows_times() {
    let c = crafted("attrs", awkward());
    let snap = snapshot_path(&c.view);
    let (f, _) = c.view.resolve(&w(&format!(r"{snap}\CON_"))).unwrap();
    let (d, _) = c.view.resolve(&w(&format!(r"{snap}\docs"))).unwrap();
    assert_eq!(attributes(&f), FILE_ATTRIBUTE_READONLY);
    assert_eq!(
        attributes(&d),
        FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_DIRECTORY
    );
    // 2023-11-14 22:13:20 UTC as a FILETIME; a Linux node's creation time is its mtime.
    let t = times(&f);
    assert_eq!(t[2], 133_444_736_000_000_000);
    assert_eq!(t[0], t[2]);
    assert_eq!(filetime(CRAFTED_MTIME), 133_444_736_000_000_000);
    assert_eq!(filetime(0), 116_444_736_000_000_000);
    assert_eq!(
        filetime(-150),
        116_444_735_999_999_998,
        "before 1970 rounds down"
    );
    let recorded = Attr {
        attributes: FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM | 0x400 | 0x800,
        created: 1_000_000_000,
        ..f
    };
    assert_eq!(
        attributes(&recorded),
        FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM,
        "hidden and system kept; reparse point and compressed are the old disk's"
    );
    assert_eq!(times(&recorded)[0], filetime(1_000_000_000));
}

/// Every name of a listing, read `per_call` entries at a time, each call resuming after
/// the last name the one before gave, as WinFsp does with its marker.
pub(crate) fn page_through(l: &Listing, per_call: usize) -> Vec<Vec<u16>> {
    let mut out: Vec<Vec<u16>> = Vec::new();
    let mut marker: Option<Vec<u16>> = None;
    loop {
        let mut n = 0;
        let done = l.each_from(l.resume(marker.as_deref()), |name, _| {
            if n == per_call {
                return false;
            }
            out.push(name.to_vec());
            n += 1;
            true
        });
        if done {
            return out;
        }
        marker = out.last().cloned();
    }
}

#[test]
fn a_folder_of_50000_entries_pages_through_whole_in_any_page_size() {
    let files: Vec<Crafted> = (0..50_000)
        .map(|i| Crafted::file(format!("f{i:05}.txt"), ""))
        .collect();
    let c = crafted("big", vec![Crafted::dir("big", files)]);
    let (dir, _) = c
        .view
        .resolve(&w(&format!(r"{}\big", snapshot_path(&c.view))))
        .unwrap();
    let l = c.view.listing(dir.ino).unwrap();
    let mut expected = vec![w("."), w("..")];
    expected.extend((0..50_000).map(|i| w(&format!("f{i:05}.txt"))));
    for per_call in [1, 2, 7, 100, 4096, 60_000] {
        let got = page_through(&l, per_call);
        assert_eq!(got.len(), expected.len(), "page size {per_call}");
        assert!(
            got == expected,
            "page size {per_call}: order or content differs"
        );
    }
    // A marker with other case, or one that is not in the folder, resumes after it.
    assert_eq!(l.resume(Some(&w("F00009.TXT"))), Resume::At(10));
    assert_eq!(l.resume(Some(&w("f00009.txt~"))), Resume::At(10));
    assert_eq!(l.resume(Some(&w("zzz"))), Resume::At(50_000));
    assert_eq!(l.resume(Some(&w("."))), Resume::DotDot);
    assert_eq!(l.resume(Some(&w(".."))), Resume::At(0));
}

#[test]
fn the_root_has_no_dots_and_the_layout_folders() {
    let c = crafted("root", awkward());
    let l = c.view.listing(ROOT).unwrap();
    assert!(l.dots.is_none());
    let names = page_through(&l, 1);
    let names: Vec<String> = names
        .iter()
        .map(|n| String::from_utf16(n).unwrap())
        .collect();
    for want in ["by-date", "by-id", "latest"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "." || n == ".."));
}
