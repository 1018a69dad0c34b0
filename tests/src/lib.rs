//! Helpers for the end-to-end tests: run the real `backazon` binary against real
//! repositories in temporary folders, generate trees with every kind of file, and
//! compare trees byte for byte and metadata for metadata. The harness runs on Linux; it
//! drives the Windows build, `backazon.exe`, through Wine (`wine`, tests/windows.rs).
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod garage;
pub mod http;
pub mod link;
pub mod listeners;
pub mod proxy;
pub mod wine;

pub const PASSWORD: &str = "correct horse battery staple";

/// The release binary next to this test executable (target/release/backazon).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BACKAZON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let b = dir.join("backazon");
    assert!(
        b.exists(),
        "{} is missing: build it first (cargo build --release --bins), as ci/test.sh does",
        b.display()
    );
    b
}

/// A folder removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("BACKAZON_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!(
            "bz-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+rwx")
            .arg(&self.0)
            .status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One test's repository, cache and scratch space.
pub struct Env {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// More environment for every command (S3 endpoint and credentials).
    pub extra_env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(c: &mut Command) -> Run {
        // A freshly copied executable can be "busy" for a moment: another test thread's
        // child, between fork and exec, still holds the copy's write handle.
        for _ in 0..100 {
            match c.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return Run::from(other.expect("running backazon")),
            }
        }
        panic!("the executable stayed busy")
    }
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    /// Standard output as JSON: one document, or (backup's `--json`, status lines a
    /// second before it) the last line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .or_else(|e| {
                self.stdout
                    .lines()
                    .last()
                    .and_then(|l| serde_json::from_str(l).ok())
                    .ok_or(e)
            })
            .unwrap_or_else(|e| {
                panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
            })
    }
}

impl Env {
    pub fn new(name: &str) -> Env {
        let dir = TempDir::new(name);
        let repo = dir.join("repo");
        let cache = dir.join("cache");
        Env {
            dir,
            repo,
            cache,
            extra_env: Vec::new(),
        }
    }

    /// An environment whose repository is `s3://primary/<unique prefix>` on the test
    /// process's Garage server (not created yet).
    pub fn new_s3(name: &str) -> Env {
        let g = garage::Garage::get();
        let mut env = Env::new(name);
        let prefix = env
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        env.repo = PathBuf::from(format!("s3://primary/{prefix}"));
        env.extra_env = vec![
            ("AWS_ACCESS_KEY_ID".into(), g.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), g.secret.clone()),
            ("AWS_REGION".into(), g.region.clone()),
            ("BACKAZON_S3_ENDPOINT".into(), g.endpoint.clone()),
            ("BACKAZON_S3_PATH_STYLE".into(), "true".into()),
        ];
        env
    }

    /// [`Env::new_s3`], with the repository created.
    pub fn init_s3(name: &str) -> Env {
        let env = Env::new_s3(name);
        env.run(&["init"]).ok();
        env
    }

    /// Creates the repository.
    pub fn init(name: &str) -> Env {
        let env = Env::new(name);
        env.run(&["init"]).ok();
        env
    }

    pub fn command(&self) -> Command {
        self.command_of(&bin())
    }

    /// A command running `exe` with this test's repository, password and cache.
    pub fn command_of(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("BACKAZON_REPOSITORY", &self.repo)
            .env("BACKAZON_PASSWORD", PASSWORD)
            .env("BACKAZON_CACHE_DIR", &self.cache)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(
            self.command()
                .args(args)
                .output()
                .expect("running backazon"),
        )
    }

    pub fn run_os(&self, args: &[&OsStr]) -> Run {
        Run::from(
            self.command()
                .args(args)
                .output()
                .expect("running backazon"),
        )
    }

    /// Backs up `paths` with `--json` and returns the summary.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> serde_json::Value {
        let mut args: Vec<&OsStr> = vec![OsStr::new("backup"), OsStr::new("--json")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend(paths.iter().map(|p| p.as_os_str()));
        let r = self.run_os(&args).ok();
        r.json()
    }

    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("restore"),
            OsStr::new(spec),
            OsStr::new("--target"),
            target.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        self.run_os(&args)
    }

    /// Finds the pack and an offset inside the first chunk of a file in the latest snapshot.
    pub fn locate_chunk(&self, file: &Path) -> (String, u64) {
        let repo = self.open();
        let idx = repo.load_index().unwrap().index;
        let snap = repo.find_snapshot("latest").unwrap();
        let node = backazon_engine::restore::find_node(
            &repo,
            &idx,
            &snap.snapshot.tree,
            file.to_str().unwrap(),
        )
        .unwrap()
        .unwrap();
        let loc = idx.get(&node.content[0]).unwrap();
        (loc.pack.to_hex(), loc.offset as u64 + loc.length as u64 / 2)
    }

    /// Opens the repository through the engine, for tests that need to reach inside.
    pub fn open(&self) -> backazon_engine::Repository {
        let backend = backend_of(&self.repo.to_string_lossy());
        backazon_engine::Repository::open(backend, PASSWORD.as_bytes()).unwrap()
    }
}

/// A small deterministic generator, so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Incompressible bytes.
    pub fn noise(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
    /// Text-like bytes that compress well.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "invoice ",
            "ledger ",
            "the ",
            "quarterly ",
            "report ",
            "alice ",
            "backup ",
            "photo ",
            "2026 ",
            "total: ",
            "\n",
            "account ",
        ];
        let mut v = Vec::with_capacity(len + 16);
        while v.len() < len {
            v.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
        }
        v.truncate(len);
        v
    }
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::File::create(path).unwrap().write_all(data).unwrap();
}

pub fn set_mtime(path: &Path, secs: i64, nsec: i64, follow: bool) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as _,
    };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: valid C string and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), flags) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// A tree with every kind of entry the engine handles: empty, small, compressible,
/// incompressible and multi-chunk files, deep folders, many small files, symlinks
/// (relative, absolute, dangling), hard links, unicode and non-UTF-8 names, unusual
/// permissions and old and sub-second mtimes.
pub fn generate_tree(root: &Path, seed: u64, big_file: usize) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root).unwrap();
    write(&root.join("empty"), b"");
    write(&root.join("docs/letter.txt"), &rng.text(20_000));
    write(&root.join("docs/ledger.qbw"), &rng.text(3_000_000));
    write(&root.join("photos/IMG_0001.JPG"), &rng.noise(2_500_000));
    many_files(root, &mut rng, big_file, 300, 40);
    let raw = root
        .join("unicode")
        .join(OsStr::from_bytes(b"latin1-caf\xe9.txt"));
    write(&raw, b"not utf-8 name");
    fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../docs/letter.txt", root.join("links/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/absolute")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("links/dangling")).unwrap();
    write(&root.join("hard/original"), &rng.text(5000));
    fs::hard_link(root.join("hard/original"), root.join("hard/second-name")).unwrap();
    write(&root.join("perms/private"), b"secret");
    fs::set_permissions(
        root.join("perms/private"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(&root.join("perms/script.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(
        root.join("perms/script.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&root.join("perms/readonly"), b"ro");
    fs::set_permissions(
        root.join("perms/readonly"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    fs::create_dir_all(root.join("perms/sticky")).unwrap();
    fs::set_permissions(
        root.join("perms/sticky"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    set_mtime(
        &root.join("docs/letter.txt"),
        946_684_800,
        123_456_789,
        true,
    ); // 2000-01-01
    set_mtime(&root.join("links/relative"), 1_000_000_000, 0, false);
    set_mtime(&root.join("docs"), 1_234_567_890, 5, true);
}

/// What both generated trees hold: a multi-chunk file, `small` small files in seven
/// folders, a file `depth` folders down, and a Unicode name.
fn many_files(root: &Path, rng: &mut Rng, big_file: usize, small: usize, depth: usize) {
    write(&root.join("big/multi-chunk.bin"), &{
        let mut v = rng.text(big_file / 2);
        v.extend(rng.noise(big_file - big_file / 2));
        v
    });
    for i in 0..small {
        let len = rng.below(3000) as usize;
        write(
            &root.join(format!("many/sub{}/f{i:04}.txt", i % 7)),
            &rng.text(len),
        );
    }
    let mut deep = root.join("deep");
    for i in 0..depth {
        deep = deep.join(format!("level{i:02}"));
    }
    write(&deep.join("bottom.txt"), b"at the bottom\n");
    write(
        &root.join("unicode/Résumé – naïve 日本語 🎉.txt"),
        "ünïcödé".as_bytes(),
    );
}

/// Everything `compare_trees` looks at for one entry.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    content: Option<[u8; 32]>,
    target: Option<PathBuf>,
    link_group: Option<usize>,
}

fn scan(root: &Path) -> HashMap<Vec<u8>, Entry> {
    let mut out = HashMap::new();
    let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = md.file_type();
            let content = ft
                .is_file()
                .then(|| *blake3::hash(&fs::read(&p).unwrap()).as_bytes());
            let link_group = (ft.is_file() && md.nlink() > 1).then(|| {
                let n = groups.len();
                *groups.entry((md.dev(), md.ino())).or_insert(n)
            });
            out.insert(
                rel,
                Entry {
                    kind: md.mode() & libc::S_IFMT,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: if ft.is_dir() {
                        (0, 0)
                    } else {
                        (md.mtime(), md.mtime_nsec())
                    },
                    size: if ft.is_file() { md.len() } else { 0 },
                    content,
                    target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                    link_group,
                },
            );
            if ft.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Asserts two trees are identical in names, kinds, contents, modes, owners, file
/// mtimes (to the nanosecond), symlink targets and hard-link structure.
#[track_caller]
pub fn assert_same_tree(original: &Path, restored: &Path) {
    let a = scan(original);
    let b = scan(restored);
    let mut missing: Vec<_> = a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let mut extra: Vec<_> = b
        .keys()
        .filter(|k| !a.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    missing.sort();
    extra.sort();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (k, ea) in &a {
        assert_eq!(ea, &b[k], "{} differs", String::from_utf8_lossy(k));
    }
    // Folder mtimes are set after their contents, so they too must match.
    let dirs_a: Vec<_> = walk_dirs(original);
    for d in dirs_a {
        let rel = d.strip_prefix(original).unwrap();
        let ma = fs::metadata(&d).unwrap();
        let mb = fs::metadata(restored.join(rel)).unwrap();
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of folder {}",
            rel.display()
        );
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
                stack.push(e.path());
            }
        }
    }
    out
}

/// The storage of a repository (a folder, or s3:// on the tests' Garage), to reach its
/// objects directly.
pub fn backend_of(url: &str) -> std::sync::Arc<dyn backazon_engine::Backend> {
    if url.starts_with("s3://") {
        let g = garage::Garage::get();
        let mut o = backazon_engine::backend::s3::S3Options::from_url(url).unwrap();
        o.endpoint = Some(g.endpoint.clone());
        o.path_style = true;
        o.region = Some(g.region.clone());
        o.credentials = Some((g.key_id.clone(), g.secret.clone()));
        std::sync::Arc::new(backazon_engine::backend::s3::S3Backend::new(o).unwrap())
    } else {
        std::sync::Arc::new(backazon_engine::LocalBackend::new(url))
    }
}

/// Where `original` (an absolute path that was backed up) is inside a restored or
/// mounted snapshot whose top is `top`.
pub fn in_snapshot(top: &Path, original: &Path) -> PathBuf {
    top.join(original.strip_prefix("/").unwrap())
}

/// `diff -r --no-dereference a b`: what the ordinary tool says, empty or the test fails.
#[track_caller]
pub fn assert_diff_clean(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Total size of the files under a folder.
pub fn du(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

/// Every file under `path`, with its bytes.
pub fn all_files(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push((e.path(), fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

/// Flips one bit of a file in place.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

/// The path of an object in a local repository.
pub fn object_path(repo: &Path, folder: &str, name: &str) -> PathBuf {
    if folder == "data" {
        repo.join("data").join(&name[..2]).join(name)
    } else {
        repo.join(folder).join(name)
    }
}

/// Names of the objects in one folder of a local repository (not files being written).
/// Every file under `dir` (recursively): path and size.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), md.len()));
            }
        }
    }
    out
}

/// A local repository's temporary files (`.tmp-*`, from writes not finished).
pub fn temporary_files(repo: &Path) -> Vec<(PathBuf, u64)> {
    files_under(repo)
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}

pub fn objects(repo: &Path, folder: &str) -> Vec<String> {
    let mut out = Vec::new();
    let base = repo.join(folder);
    let mut stack = vec![base];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if !name.starts_with(".tmp-") {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// A tree every OS can hold as it is: no links, no special files, only names Windows
/// takes (Unicode ones too), small and multi-chunk files, an empty file and folder, deep
/// folders, a read-only file, and sub-second modification times. For snapshots that must
/// cross between Linux and Windows byte for byte.
pub fn generate_portable_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root.join("empty folder")).unwrap();
    write(&root.join("empty"), b"");
    write(&root.join("Documents/letter.txt"), &rng.text(20_000));
    write(
        &root.join("Documents/QuickBooks/company.qbw"),
        &rng.text(3_000_000),
    );
    write(&root.join("Photos/IMG_0001.JPG"), &rng.noise(2_500_000));
    many_files(root, &mut rng, 6 << 20, 120, 20);
    write(&root.join("perms/readonly.txt"), b"ro");
    fs::set_permissions(
        root.join("perms/readonly.txt"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    set_mtime(
        &root.join("Documents/letter.txt"),
        946_684_800,
        123_456_789,
        true,
    );
    set_mtime(
        &root.join("Photos/IMG_0001.JPG"),
        1_700_000_000,
        5_000_100,
        true,
    );
}

/// Asserts two trees hold the same names, kinds and file contents, file modification
/// times to Windows' 100 ns, and read-only files read-only: what survives a trip
/// through Windows.
#[track_caller]
pub fn assert_same_portable_tree(original: &Path, restored: &Path) {
    let a = scan(original);
    let b = scan(restored);
    let mut names_a: Vec<_> = a.keys().cloned().collect();
    let mut names_b: Vec<_> = b.keys().cloned().collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(
        names_a
            .iter()
            .map(|n| String::from_utf8_lossy(n))
            .collect::<Vec<_>>(),
        names_b
            .iter()
            .map(|n| String::from_utf8_lossy(n))
            .collect::<Vec<_>>(),
        "names differ"
    );
    for (k, ea) in &a {
        let eb = &b[k];
        let what = String::from_utf8_lossy(k);
        assert_eq!(ea.kind, eb.kind, "{what}: kind");
        assert_eq!(ea.content, eb.content, "{what}: content");
        assert_eq!(ea.size, eb.size, "{what}: size");
        if ea.kind == libc::S_IFREG {
            assert_eq!(ea.mtime.0, eb.mtime.0, "{what}: mtime seconds");
            assert_eq!(ea.mtime.1 / 100, eb.mtime.1 / 100, "{what}: mtime 100 ns");
            assert_eq!(
                ea.mode & 0o200 == 0,
                eb.mode & 0o200 == 0,
                "{what}: read-only"
            );
        }
    }
}

pub use backazon_engine::craft::Crafted;

/// Stores a snapshot of `entries` (at its root) and returns its id.
pub fn craft_snapshot(
    repo: &backazon_engine::Repository,
    entries: Vec<Crafted>,
) -> backazon_engine::Id {
    backazon_engine::craft::craft_snapshot(repo, entries).unwrap()
}

/// Where the fixture's tree was when Backazon 0.1.0 backed it up, and its password.
pub const FIXTURE_SRC: &str = "/tmp/backazon-fixture/src";
pub const FIXTURE_PASSWORD: &str = "fixture password";

/// A copy of `tests/fixtures/repo-0.1.0` as this test's repository (commands write
/// locks and caches: the committed one stays as it is).
pub fn copy_fixture_repo(env: &Env) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repo-0.1.0");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&fixture)
        .arg(&env.repo)
        .status()
        .unwrap();
    assert!(copied.success());
}

/// Waits for `f` to hold, checking every 100 ms; the test fails after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The tree in `tests/fixtures/repo-0.1.0`, a repository written by Backazon 0.1.0 (commit
/// 7fac499, before Windows nodes existed): generated again here to compare a restore of
/// it with. Everything in it is fixed, times included.
pub fn generate_fixture_tree(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let mut rng = Rng::new(2026);
    write(&root.join("Documents/letter.txt"), &rng.text(5_000));
    write(&root.join("Documents/ledger.qbw"), &rng.text(40_000));
    write(&root.join("Photos/IMG_0001.JPG"), &rng.noise(30_000));
    write(
        &root.join("unicode/Résumé 日本語.txt"),
        "ünïcödé".as_bytes(),
    );
    write(
        &root
            .join("unicode")
            .join(OsStr::from_bytes(b"latin1-caf\xe9.txt")),
        b"not utf-8 name",
    );
    write(&root.join("empty"), b"");
    fs::create_dir_all(root.join("empty folder")).unwrap();
    std::os::unix::fs::symlink("../Documents/letter.txt", root.join("unicode/link")).unwrap();
    write(&root.join("perms/script.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(
        root.join("perms/script.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&root.join("perms/readonly"), b"ro");
    fs::set_permissions(
        root.join("perms/readonly"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let mut t = 1_600_000_000;
    let mut all: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    // Deepest first, so a folder's time is set after its entries'.
    all.sort_by(|a, b| {
        (std::cmp::Reverse(a.components().count()), a)
            .cmp(&(std::cmp::Reverse(b.components().count()), b))
    });
    for p in all {
        t += 1000;
        set_mtime(&p, t, 250_000_000, false);
    }
}
