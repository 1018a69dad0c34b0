//! `SnapshotFs` without FUSE in the loop: a real repository in a temporary folder,
//! backed up with the engine, then browsed and read through the view's calls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use backazon_engine::backup::{backup, BackupOptions, BackupProgress, ParentChoice};
use backazon_engine::restore::find_node;
use backazon_engine::sys;
use backazon_engine::tree::Name;
use backazon_engine::{LocalBackend, Repository};

use super::*;

struct Setup {
    dir: PathBuf,
    src: PathBuf,
    repo: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deterministic bytes that neither compress nor repeat.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("bz-fs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("docs/deeper")).unwrap();
    std::fs::write(src.join("docs/a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("docs/deeper/b.txt"), b"bravo bravo\n").unwrap();
    std::fs::write(src.join("big.bin"), noise(5 << 20, 7)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(
            src.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
            b"latin-1 name",
        )
        .unwrap();
        std::os::unix::fs::symlink("docs/a.txt", src.join("link")).unwrap();
    }
    let repo = dir.join("repo");
    Repository::init(Arc::new(LocalBackend::new(&repo)), b"pw", 1 << 20).unwrap();
    Setup { dir, src, repo }
}

fn open_repo(s: &Setup) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(&s.repo)), b"pw")
        .unwrap()
        .with_cache(Some(s.dir.join("cache")))
}

fn back_up(s: &Setup) {
    let repo = open_repo(s);
    let mut opts = BackupOptions::new(vec![s.src.clone()]);
    opts.hostname = "testhost".into();
    opts.parent = ParentChoice::None;
    backup(&repo, &opts, &BackupProgress::new(|_| {})).unwrap();
}

fn mount_view(s: &Setup, log: Arc<Mutex<Vec<String>>>) -> SnapshotFs {
    let opts = Options {
        chunk_cache_bytes: 4 << 20,
        tree_cache_bytes: 1 << 20,
        refresh_every: Duration::ZERO,
        log: Arc::new(move |m| log.lock().unwrap().push(m.to_string())),
        ..Options::default()
    };
    SnapshotFs::new(open_repo(s), opts).unwrap()
}

fn names(fs: &SnapshotFs, ino: Ino) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    fs.readdir(ino, 0, |_, name, _| {
        out.push(name.to_vec());
        false
    })
    .unwrap();
    out
}

/// Walks `path`'s components from `start`.
fn walk(fs: &SnapshotFs, start: Ino, path: &Path) -> Attr {
    let mut attr = fs.getattr(start).unwrap();
    for c in path.components() {
        if let std::path::Component::Normal(n) = c {
            attr = fs
                .lookup(attr.ino, &sys::name_of(n).0)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        }
    }
    attr
}

fn read_all(fs: &SnapshotFs, ino: Ino, step: u32) -> Vec<u8> {
    let fh = fs.open(ino).unwrap();
    let mut out = Vec::new();
    loop {
        let b = fs.read(fh, out.len() as u64, step).unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    fs.release(fh);
    out
}

fn latest_src(fs: &SnapshotFs, s: &Setup) -> Attr {
    let mut attr = walk(fs, ROOT, Path::new("latest/testhost"));
    // The source folder as the snapshot records it (`/tmp/...`, `/C/users/...`).
    let recorded = sys::recorded_path(&s.src).unwrap();
    for part in recorded.split('/').filter(|p| !p.is_empty()) {
        attr = fs.lookup(attr.ino, part.as_bytes()).unwrap();
    }
    attr
}

#[test]
fn layout_lists_every_snapshot_and_files_read_back() {
    let s = setup("layout");
    back_up(&s);
    let fs = mount_view(&s, Arc::default());
    assert_eq!(
        names(&fs, ROOT),
        vec![
            b"by-date".to_vec(),
            b"by-id".to_vec(),
            b"by-job".to_vec(),
            b"latest".to_vec()
        ]
    );
    let by_date = walk(&fs, ROOT, Path::new("by-date"));
    let dated = names(&fs, by_date.ino);
    assert_eq!(dated.len(), 1);
    let name = String::from_utf8(dated[0].clone()).unwrap();
    assert!(name.ends_with(" testhost") && !name.contains(':'), "{name}");
    assert_eq!(
        names(&fs, walk(&fs, ROOT, Path::new("by-job/testhost")).ino).len(),
        1
    );

    let src = latest_src(&fs, &s);
    assert_eq!(src.kind, FileKind::Dir);
    let listed = names(&fs, src.ino);
    let mut expected: Vec<Vec<u8>> = std::fs::read_dir(&s.src)
        .unwrap()
        .map(|e| sys::name_of(&e.unwrap().file_name()).0)
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "entries in name order");

    for rel in ["big.bin", "docs/a.txt", "docs/deeper/b.txt", "empty"] {
        let a = walk(&fs, src.ino, Path::new(rel));
        let md = std::fs::symlink_metadata(s.src.join(rel)).unwrap();
        let node = sys::node_from_metadata(Name::default(), &md);
        assert_eq!(a.kind, FileKind::File);
        assert_eq!(a.size, md.len(), "{rel}");
        assert_eq!(a.perm as u32, node.mode, "{rel}");
        assert_eq!(a.mtime, node.mtime, "{rel}");
        assert!(a.immutable);
        let want = std::fs::read(s.src.join(rel)).unwrap();
        assert_eq!(read_all(&fs, a.ino, 128 << 10), want, "{rel}");
        assert_eq!(read_all(&fs, a.ino, 3 << 20), want, "{rel}");
    }
    #[cfg(unix)]
    {
        let odd = fs.lookup(src.ino, b"caf\xe9.txt").unwrap();
        assert_eq!(read_all(&fs, odd.ino, 4096), b"latin-1 name");
    }

    // Reads at offsets that straddle chunk ends, and past the end.
    let big = walk(&fs, src.ino, Path::new("big.bin"));
    let want = std::fs::read(s.src.join("big.bin")).unwrap();
    let fh = fs.open(big.ino).unwrap();
    for off in [0usize, 1, 524_287, 1 << 20, 3_000_001, want.len() - 10] {
        let got = fs.read(fh, off as u64, 700_000).unwrap();
        let end = (off + 700_000).min(want.len());
        assert_eq!(&*got, &want[off..end], "offset {off}");
    }
    assert!(fs.read(fh, want.len() as u64 + 5, 10).unwrap().is_empty());
    fs.release(fh);
    assert_eq!(fs.read(fh, 0, 10).unwrap_err(), FsError::BadHandle);

    #[cfg(unix)]
    {
        let link = walk(&fs, src.ino, Path::new("link"));
        assert_eq!(link.kind, FileKind::Symlink);
        assert_eq!(fs.readlink(link.ino).unwrap(), b"docs/a.txt");
    }
    assert_eq!(fs.readlink(big.ino), Err(FsError::NotASymlink));

    // Errors a caller can act on.
    assert_eq!(fs.lookup(src.ino, b"nope"), Err(FsError::NotFound));
    assert_eq!(fs.lookup(big.ino, b"x"), Err(FsError::NotADirectory));
    let docs = walk(&fs, src.ino, Path::new("docs"));
    assert_eq!(fs.open(docs.ino), Err(FsError::IsADirectory));
    assert_eq!(
        fs.parent(walk(&fs, docs.ino, Path::new("a.txt")).ino),
        Ok(docs.ino)
    );

    // The same path gives the same inode every time, and the inode gives back its path.
    assert_eq!(
        walk(&fs, src.ino, Path::new("docs/deeper/b.txt")).ino,
        walk(&fs, src.ino, Path::new("docs/deeper/b.txt")).ino
    );
    let b = walk(&fs, src.ino, Path::new("docs/deeper/b.txt"));
    assert!(fs.path_of(b.ino).starts_with("latest/testhost/"));
    assert!(
        fs.path_of(b.ino).ends_with("src/docs/deeper/b.txt"),
        "{}",
        fs.path_of(b.ino)
    );
}

#[test]
fn new_snapshots_appear_and_latest_follows() {
    let s = setup("refresh");
    back_up(&s);
    let fs = mount_view(&s, Arc::default());
    let before = latest_src(&fs, &s);
    let a_before = walk(&fs, before.ino, Path::new("docs/a.txt"));
    std::fs::write(s.src.join("docs/a.txt"), b"alpha, changed\n").unwrap();
    // A snapshot's time has second precision in its folder name; keep them apart.
    std::thread::sleep(Duration::from_millis(1100));
    back_up(&s);
    let by_date = walk(&fs, ROOT, Path::new("by-date"));
    assert_eq!(names(&fs, by_date.ino).len(), 2);
    let after = latest_src(&fs, &s);
    assert_ne!(after.ino, before.ino, "latest is a new folder");
    let a_after = walk(&fs, after.ino, Path::new("docs/a.txt"));
    assert_eq!(read_all(&fs, a_after.ino, 4096), b"alpha, changed\n");
    // The older snapshot still shows its own contents.
    assert_eq!(read_all(&fs, a_before.ino, 4096), b"alpha\n");
}

#[test]
fn a_damaged_chunk_fails_that_file_only_and_is_logged() {
    let s = setup("damage");
    back_up(&s);
    // Flip one byte inside big.bin's first chunk, in its pack.
    let repo = open_repo(&s);
    let index = repo.load_index().unwrap().index;
    let snap = repo.find_snapshot("latest").unwrap().snapshot;
    let rel = s.src.join("big.bin");
    let node = find_node(
        &repo,
        &index,
        &snap.tree,
        &sys::recorded_path(&rel).unwrap(),
    )
    .unwrap()
    .unwrap();
    let loc = index.get(&node.content[0]).unwrap();
    let hex = loc.pack.to_hex();
    let pack = s.repo.join("data").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 100] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    let log = Arc::new(Mutex::new(Vec::new()));
    let fs = mount_view(&s, log.clone());
    let src = latest_src(&fs, &s);
    let big = walk(&fs, src.ino, Path::new("big.bin"));
    let fh = fs.open(big.ino).unwrap();
    assert_eq!(fs.read(fh, 0, 4096).unwrap_err(), FsError::Io);
    let logged = log.lock().unwrap().join("\n");
    assert!(logged.contains("src/big.bin"), "{logged}");
    assert!(logged.contains(&hex), "names the pack: {logged}");
    let a = walk(&fs, src.ino, Path::new("docs/a.txt"));
    assert_eq!(read_all(&fs, a.ino, 4096), b"alpha\n");
}

/// What a [`Pusher`] handed to the "OS": (inode, offset, bytes), in order.
type Pushed = Arc<Mutex<Vec<(Ino, u64, Vec<u8>)>>>;

fn recording_pusher(fs: &SnapshotFs) -> Pushed {
    let pushed: Pushed = Arc::default();
    let p = pushed.clone();
    fs.push_slot()
        .set(Arc::new(move |ino, offset, bytes: &[u8]| {
            p.lock().unwrap().push((ino, offset, bytes.to_vec()));
            true
        }));
    pushed
}

/// The bytes of `ino` pushed so far, when they make up its whole `size`.
fn pushed_file(pushed: &Pushed, ino: Ino, size: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for (i, offset, bytes) in pushed.lock().unwrap().iter() {
        if *i == ino && *offset == out.len() as u64 {
            out.extend_from_slice(bytes);
        }
    }
    (out.len() as u64 == size && size > 0).then_some(out)
}

#[test]
fn files_read_in_walk_order_are_pushed_ahead_of_the_reader() {
    let s = setup("walk");
    let w = s.src.join("w");
    std::fs::create_dir_all(w.join("m")).unwrap();
    std::fs::create_dir_all(w.join("n")).unwrap();
    let mut files = Vec::new();
    for k in 0..20 {
        files.push(format!("w/f{k:02}"));
    }
    for k in 0..5 {
        files.push(format!("w/m/g{k}"));
    }
    files.extend(["w/n/h0".to_string(), "w/n/h1".into(), "w/z.txt".into()]);
    for (k, f) in files.iter().enumerate() {
        std::fs::write(s.src.join(f), noise(3000 + k * 100, k as u64 + 11)).unwrap();
    }
    back_up(&s);

    let fs = mount_view(&s, Arc::default());
    let pushed = recording_pusher(&fs);
    let src = latest_src(&fs, &s);
    // Like `find` before `xargs cat`, `w` and `w/m` are listed first; `w/n` only when the
    // reader gets there, like `cp -r` does.
    let wdir = walk(&fs, src.ino, Path::new("w"));
    names(&fs, wdir.ino);
    names(&fs, walk(&fs, src.ino, Path::new("w/m")).ino);
    // A reader that finds a file whole in the "OS cache" reads it from there, and asks
    // the view otherwise.
    let mut asked = Vec::new();
    for f in &files {
        if f == "w/n/h0" {
            let n = walk(&fs, src.ino, Path::new("w/n")).ino;
            let before = pushed.lock().unwrap().len();
            names(&fs, n);
            assert_eq!(pushed.lock().unwrap().len(), before);
            // The walk stopped at the folder the OS had not listed.
            for later in ["w/n/h0", "w/n/h1", "w/z.txt"] {
                let ino = walk(&fs, src.ino, Path::new(later)).ino;
                assert!(
                    !pushed.lock().unwrap().iter().any(|(i, _, _)| *i == ino),
                    "{later} pushed before w/n was listed"
                );
            }
        }
        let a = walk(&fs, src.ino, Path::new(f));
        let want = std::fs::read(s.src.join(f)).unwrap();
        let got = match pushed_file(&pushed, a.ino, a.size) {
            Some(b) => b,
            None => {
                asked.push(f.clone());
                let b = fs.read_ino(a.ino, 0, 1 << 20).unwrap().to_vec();
                fs.wait_read_ahead();
                b
            }
        };
        assert_eq!(got, want, "{f}");
    }
    // The reader asked for the file that started the walk, for the one after the first
    // window of 8 (the walk goes on from there with 16), and for the first file of w/n,
    // where the walk had stopped because the OS had not listed it yet. Everything else
    // was pushed, byte for byte (checked above).
    assert_eq!(asked, ["w/f00", "w/f09", "w/n/h0"]);

    // Reading a folder's files out of order pushes nothing.
    let fs = mount_view(&s, Arc::default());
    let pushed = recording_pusher(&fs);
    let src = latest_src(&fs, &s);
    names(&fs, walk(&fs, src.ino, Path::new("w")).ino);
    for f in ["w/f07", "w/f03", "w/f12"] {
        let a = walk(&fs, src.ino, Path::new(f));
        fs.read_ino(a.ino, 0, 1 << 20).unwrap();
        fs.wait_read_ahead();
    }
    assert!(pushed.lock().unwrap().is_empty());
}
