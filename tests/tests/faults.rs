//! Bad input and faults: wrong passwords, unreadable and changing files, altered objects,
//! a backup killed with SIGKILL, hostile snapshots, a newer format, a missing repository.
#![cfg(target_os = "linux")]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backazon_e2e::*;
use backazon_engine::pack::{BlobKind, PackBuilder};
use backazon_engine::snapshot::{Snapshot, Summary};
use backazon_engine::tree::{Name, Node, NodeKind, Tree};

fn listing(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = all_files(root)
        .into_iter()
        .map(|(p, b)| (p.to_string_lossy().into_owned(), b))
        .collect();
    v.sort();
    v
}

#[test]
fn wrong_password_is_refused_and_writes_nothing() {
    let env = Env::init("wrongpw");
    let src = env.dir.join("src");
    write(&src.join("a"), b"a");
    env.backup(&[&src], &[]);
    let before = listing(&env.repo);
    for args in [
        &["snapshots"][..],
        &["backup", src.to_str().unwrap()],
        &["check"],
        &["key", "list"],
    ] {
        let r = Run::from_output(
            env.command()
                .env("BACKAZON_PASSWORD", "not the password")
                .args(args),
        );
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("wrong password or no key file matches"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(before, listing(&env.repo));
}

#[test]
fn password_sources() {
    let env = Env::init("pwsources");
    let file = env.dir.join("pw");
    write(&file, format!("{PASSWORD}\n").as_bytes());
    let r = env
        .command()
        .env_remove("BACKAZON_PASSWORD")
        .args(["snapshots", "--password-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = env
        .command()
        .env_remove("BACKAZON_PASSWORD")
        .env("BACKAZON_PASSWORD_FILE", &file)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(r.status.success());
    let r = env
        .command()
        .env_remove("BACKAZON_PASSWORD")
        .args([
            "snapshots",
            "--password-command",
            &format!("echo '{PASSWORD}'"),
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = Run::from_output(
        env.command()
            .env_remove("BACKAZON_PASSWORD")
            .arg("snapshots"),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no password given"), "{}", r.stderr);
}

#[test]
fn missing_repository_and_newer_format() {
    let env = Env::new("norepo");
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("no repository at"), "{}", r.stderr);

    env.run(&["init"]).ok();
    let again = env.run(&["init"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"));

    let config = env.repo.join("config");
    let text = fs::read_to_string(&config).unwrap();
    let newer = text.replace("\"version\": 1", "\"version\": 99");
    assert_ne!(text, newer);
    fs::write(&config, newer).unwrap();
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("format version 99 is newer"),
        "{}",
        r.stderr
    );
}

#[test]
fn storage_writers_without_the_password_cannot_stall_or_bloat_an_open() {
    // Config and key files are plaintext: anyone who can write to the bucket can make
    // them claim 4 billion key derivation rounds or an 8 EiB pack size.
    let env = Env::init("absurd");
    let keys = fs::read_dir(env.repo.join("keys")).unwrap();
    let key = keys.map(|e| e.unwrap().path()).next().unwrap();
    let text = fs::read_to_string(&key).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    j["rounds"] = u32::MAX.into();
    fs::write(&key, serde_json::to_vec(&j).unwrap()).unwrap();
    let t = Instant::now();
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("wrong password or no key file matches"),
        "{}",
        r.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let r = env.run(&["key", "list"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    fs::write(&key, text).unwrap();

    let config = env.repo.join("config");
    let text = fs::read_to_string(&config).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    j["pack_size"] = (1u64 << 63).into();
    fs::write(&config, serde_json::to_vec(&j).unwrap()).unwrap();
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("config") && r.stderr.contains("pack size 9223372036854775808"),
        "{}",
        r.stderr
    );
    fs::write(&config, text).unwrap();
    env.run(&["snapshots"]).ok();
}

#[test]
fn passwords_and_keys_stay_with_their_owner() {
    let env = Env::init("secrets");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The repository, its key files and every object, the cache: the owner's alone.
    assert_eq!(mode(&env.repo), 0o700);
    for key in fs::read_dir(env.repo.join("keys")).unwrap() {
        assert_eq!(mode(&key.unwrap().path()), 0o600);
    }
    assert_eq!(mode(&env.repo.join("config")), 0o600);

    // A password command gets no password from Backazon's environment, and what it
    // prints is never shown, logged or put in --json output.
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"a");
    let seen = env.dir.join("command-env");
    let pw = env.dir.join("pw");
    write(&pw, PASSWORD.as_bytes());
    let cmd = format!("env > {}; cat {}", seen.display(), pw.display());
    let state = env.dir.join("state");
    let jobs = env.dir.join("jobs.toml");
    let common = [
        "--password-command",
        &cmd,
        "--config",
        jobs.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let run = |args: &[&str]| {
        let mut all = common.to_vec();
        all.extend_from_slice(args);
        Run::from_output(
            env.command()
                .env("BACKAZON_NEW_PASSWORD", "another secret")
                .args(&all),
        )
    };
    let b = run(&["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let env_text = fs::read_to_string(&seen).unwrap();
    assert!(!env_text.contains("BACKAZON_PASSWORD"), "{env_text}");
    assert!(!env_text.contains(PASSWORD) && !env_text.contains("another secret"));
    let add = [
        "job",
        "add",
        "docs",
        "--path",
        src.to_str().unwrap(),
        "--no-check",
    ];
    assert_eq!(run(&add).code, 0);
    let job = run(&["--json", "job", "run", "docs"]);
    assert_eq!(job.code, 0, "{}", job.stderr);
    let k = run(&["--json", "key", "list"]);
    for r in [&b, &job, &k] {
        assert!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD));
    }
    let log = fs::read_to_string(state.join("backazon.log")).unwrap();
    assert!(!log.contains(PASSWORD), "{log}");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("backazon.log")), 0o600);
    assert_eq!(mode(&state.join("docs.json")), 0o600);
    assert_eq!(mode(&jobs), 0o600);
    // A wrong password from a command: the error says so without repeating it.
    let bad = format!("echo {}", "not-the-password-42");
    let r = Run::from_output(
        env.command()
            .args(["--password-command", &bad, "snapshots"]),
    );
    assert_eq!(r.code, 1);
    assert!(!r.stderr.contains("not-the-password-42"), "{}", r.stderr);
}

#[test]
fn without_the_password_storage_reveals_no_names_and_no_chunk_ids() {
    let env = Env::init("opaque");
    let src = env.dir.join("Accounts-Ledger-2026");
    let name = "QuickBooks-Company-File-Unique.qbw";
    let text = "Invoice 4711 to ACME Widgets Ltd, net 30 days\n".repeat(500);
    write(&src.join(name), text.as_bytes());
    write(&src.join("raw.bin"), &Rng::new(5).noise(3 << 20));
    env.backup(&[&src], &[]);
    // The chunk ids, as only the password holder can list them.
    let repo = env.open();
    let index = repo.load_index().unwrap().index;
    let (snaps, _) = repo.snapshots().unwrap();
    let recorded = backazon_engine::sys::recorded_path(&src).unwrap();
    let mut ids = Vec::new();
    for file in [name, "raw.bin"] {
        let path = format!("{recorded}/{file}");
        let tree = &snaps[0].snapshot.tree;
        let node = backazon_engine::restore::find_node(&repo, &index, tree, &path).unwrap();
        ids.extend(node.unwrap().content);
    }
    assert!(!ids.is_empty());
    let mut needles: Vec<Vec<u8>> = vec![
        name.as_bytes().to_vec(),
        b"Accounts-Ledger-2026".to_vec(),
        b"ACME Widgets".to_vec(),
    ];
    for id in &ids {
        needles.push(id.0.to_vec());
        needles.push(id.to_hex().into_bytes());
    }
    for (path, bytes) in all_files(&env.repo) {
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(n)
            );
        }
        // Pack names are hashes of their encrypted bytes, not of any chunk.
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(ids.iter().all(|id| !file.contains(&id.to_hex())), "{file}");
    }
}

#[test]
fn unreadable_files_are_skipped_and_reported() {
    // Root reads everything, so the backup runs as an ordinary user (nobody).
    let env = Env::new("unreadable");
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = env.dir.join("src");
    write(&src.join("readable.txt"), b"fine");
    write(&src.join("secret.txt"), b"no access");
    fs::create_dir_all(src.join("locked")).unwrap();
    write(&src.join("locked/inner.txt"), b"inner");
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    // The build folder may not be reachable by nobody (a clone under /root): use a copy.
    let exe = env.dir.join("backazon");
    fs::copy(bin(), &exe).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = env.command_of(&exe);
        c.uid(65534).gid(65534).args(args);
        Run::from_output(&mut c)
    };
    as_nobody(&["init"]).ok();
    let r = as_nobody(&["backup", "--json", src.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("secret.txt"), "{}", r.stderr);
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    let s = r.json();
    assert_eq!(s["errors"], 2, "{s}");
    let snaps = as_nobody(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps[0]["summary"]["errors"], 2);
    let ls = as_nobody(&["ls", "latest"]).ok().stdout;
    assert!(
        ls.contains("readable.txt") && !ls.contains("secret.txt"),
        "{ls}"
    );
}

#[test]
fn a_file_changing_while_read_is_detected() {
    let env = Env::init("changing");
    let src = env.dir.join("src");
    let path = src.join("growing.log");
    write(&path, &Rng::new(1).noise(150 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[b'x'; 4096]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let r = env.run(&["backup", "--json", src.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let s = r.json();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s["files_changed_during_read"], 1, "{s}");
    assert!(
        r.stderr
            .contains("growing.log: file changed while it was read"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_altered_pack_is_named_and_never_restored_wrong() {
    let env = Env::init("badpack");
    let src = env.dir.join("src");
    write(&src.join("victim.txt"), &Rng::new(7).text(200_000));
    write(&src.join("bystander.txt"), &Rng::new(8).text(200_000));
    env.backup(&[&src], &[]);
    let (pack, offset) = env.locate_chunk(&src.join("victim.txt"));
    flip_byte(&object_path(&env.repo, "data", &pack), offset);

    let r = env.run(&["check", "--read-data"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("pack {pack}")), "{}", r.stderr);
    assert!(
        r.stderr.contains("victim.txt: damaged data"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("bystander.txt"), "{}", r.stderr);

    let out = env.dir.join("out");
    let r = env.restore("latest", &out, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("victim.txt: not restored"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&pack),
        "the message names the pack: {}",
        r.stderr
    );
    let restored = out.join(src.strip_prefix("/").unwrap());
    assert!(!restored.join("victim.txt").exists());
    assert_eq!(
        fs::read(restored.join("bystander.txt")).unwrap(),
        fs::read(src.join("bystander.txt")).unwrap()
    );
}

#[test]
fn altered_index_and_snapshot_objects_are_named() {
    let env = Env::init("badmeta");
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"hello");
    env.backup(&[&src], &[]);
    write(&src.join("b.txt"), b"second");
    env.backup(&[&src], &[]);

    let index = objects(&env.repo, "index")[0].clone();
    flip_byte(&object_path(&env.repo, "index", &index), 40);
    let r = env.run(&["check", "--read-data"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&format!("index/{index}")), "{}", r.stderr);
    // The packs it named are still found through their own headers: restore works.
    let out = env.dir.join("out");
    env.restore("latest", &out, &[]).ok();
    fs::remove_file(object_path(&env.repo, "index", &index)).unwrap();

    let snap = objects(&env.repo, "snapshots")[0].clone();
    flip_byte(&object_path(&env.repo, "snapshots", &snap), 30);
    // The local cache's copy was checked against its name when stored: still used.
    let r = env.run(&["snapshots"]).ok();
    assert!(r.stdout.contains("2 snapshots"), "{}", r.stdout);
    // Read from storage, the altered object is named.
    let r = env.run(&["--no-cache", "snapshots"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains(&format!("snapshot {snap}")),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("1 snapshots"), "{}", r.stdout);
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("snapshot {snap}")),
        "{}",
        r.stderr
    );

    // A truncated pack is named too.
    let pack = objects(&env.repo, "data")[0].clone();
    let p = object_path(&env.repo, "data", &pack);
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let r = env.run(&["check", "--read-data"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&pack), "{}", r.stderr);
}

#[test]
fn a_killed_backup_loses_nothing_and_is_resumed() {
    let env = Env::init("killed");
    let src = env.dir.join("src");
    let mut rng = Rng::new(11);
    for i in 0..12 {
        write(&src.join(format!("part{i:02}.bin")), &rng.noise(24 << 20));
    }
    let mut child = env
        .command()
        .args(["backup", "--quiet", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while objects(&env.repo, "data").len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no packs appeared"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backup ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let packs_before = objects(&env.repo, "data").len();
    assert!(objects(&env.repo, "snapshots").is_empty());
    // Packs being written when it was killed stay as temporary files: check names them
    // as leftovers (a warning, not an error).
    let left = temporary_files(&env.repo);
    if !left.is_empty() {
        let r = env.run(&["check"]).ok();
        assert!(
            r.stderr
                .contains(&format!("{} temporary files", left.len()))
                && r.stderr.contains("`backazon prune` removes them"),
            "{}",
            r.stderr
        );
    }

    let s = env.backup(&[&src], &[]);
    let added = s["bytes_added"].as_u64().unwrap();
    let total = s["total_bytes"].as_u64().unwrap();
    assert!(
        added + (packs_before as u64 - 1) * (15 << 20) < total + (2 << 20),
        "the second run added {added} of {total} bytes; {packs_before} packs were already there"
    );
    let r = env.run(&["check", "--read-data"]).ok();
    assert!(!r.stderr.contains("error"), "{}", r.stderr);
    let out = env.dir.join("out");
    env.restore("latest", &out, &[]).ok();
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));

    // One prune, and nothing the kill left remains: the repository is within 2% of a
    // fresh one holding the same snapshot.
    let r = env.run(&["prune"]).ok();
    assert!(temporary_files(&env.repo).is_empty(), "{}", r.stderr);
    if !left.is_empty() {
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(
            said.contains("temporary files of interrupted writes removed"),
            "{said}"
        );
    }
    let fresh = Env::init("killed-fresh");
    fresh.backup(&[&src], &[]);
    let size = |repo: &Path| files_under(repo).iter().map(|(_, n)| n).sum::<u64>();
    let (pruned, clean) = (size(&env.repo), size(&fresh.repo));
    assert!(
        pruned as f64 <= clean as f64 * 1.02,
        "after prune {pruned} bytes, a fresh repository {clean}"
    );
    let r = env.run(&["check", "--read-data"]).ok();
    assert!(!r.stderr.contains("temporary"), "{}", r.stderr);
}

#[test]
fn a_snapshot_that_expands_past_the_disk_stops_before_filling_it() {
    // A 1 MiB file in a folder, and 40 levels of two folders that are both the level
    // below: one pack of data and 41 small trees claim 2^40 files, a pebibyte.
    let env = Env::init("bomb");
    let mut c = Crafter::new(&env);
    let chunk = c.chunk(&Rng::new(9).noise(1 << 20));
    let mut file = node(b"f", NodeKind::File);
    file.content = vec![chunk];
    file.size = 1 << 20;
    let mut top = c.tree(vec![file]);
    for _ in 0..40 {
        let dir = |name: &[u8]| Node {
            subtree: Some(top),
            ..node(name, NodeKind::Dir)
        };
        top = c.tree(vec![dir(b"a"), dir(b"b")]);
    }
    c.save(top, "bomb");

    // Restored onto a 64 MiB file system: stopped with a clear error before it is full.
    let small = env.dir.join("small");
    fs::create_dir_all(&small).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(ok.success(), "mounting a tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let target = small.join("t");
    let t = Instant::now();
    for dry in [true, false] {
        let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
        let r = env.restore("latest", &target, extra);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("free where it is restored: stopped after"),
            "{}",
            r.stderr
        );
    }
    let written: u64 = all_files(&small).iter().map(|(_, b)| b.len() as u64).sum();
    assert!(written > 0 && written <= 64 << 20, "{written}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // ls and check take the shared folders once each.
    env.run(&["check", "--read-data"]).ok();
}

/// Blobs and trees stored through the engine as anyone with the key could store them,
/// for snapshots backup never makes (hostile names, claimed sizes, shared folders).
struct Crafter {
    repo: backazon_engine::Repository,
    keys: backazon_engine::crypto::MasterKeys,
    data: PackBuilder,
    trees: PackBuilder,
}

impl Crafter {
    fn new(env: &Env) -> Crafter {
        let repo = env.open();
        Crafter {
            keys: repo.keys().clone(),
            repo,
            data: PackBuilder::new(BlobKind::Data),
            trees: PackBuilder::new(BlobKind::Tree),
        }
    }

    fn add(&mut self, kind: BlobKind, bytes: &[u8]) -> backazon_engine::Id {
        let id = self.keys.blob_id(bytes);
        let sealed = backazon_engine::blob::encode(
            &self.keys,
            kind.object_type(),
            Some(&id),
            bytes,
            Default::default(),
            true,
        );
        let pack = if kind == BlobKind::Data {
            &mut self.data
        } else {
            &mut self.trees
        };
        pack.add(id, bytes.len(), &sealed);
        id
    }

    fn chunk(&mut self, bytes: &[u8]) -> backazon_engine::Id {
        self.add(BlobKind::Data, bytes)
    }

    fn tree(&mut self, nodes: Vec<Node>) -> backazon_engine::Id {
        self.add(BlobKind::Tree, &Tree { nodes }.to_bytes())
    }

    /// Writes the packs and their index, and a snapshot of `root` from `host`.
    fn save(mut self, root: backazon_engine::Id, host: &str) {
        let mut index = Vec::new();
        for p in [&mut self.data, &mut self.trees] {
            let f = p.finish(&self.keys);
            let id = self.repo.write_pack(f.kind, &f.bytes).unwrap();
            index.push((id, f.blobs));
        }
        self.repo.write_index(&index).unwrap();
        self.repo
            .save_snapshot(&Snapshot {
                time: "2026-01-01T00:00:00Z".into(),
                tree: root,
                paths: vec!["/".into()],
                hostname: host.into(),
                username: host.into(),
                job: None,
                tags: vec![],
                parent: None,
                program_version: "0".into(),
                summary: Summary::default(),
            })
            .unwrap();
    }
}

/// Runs backazon with `args` under GNU time: its exit code, stderr and peak resident
/// memory in KiB (measured by time, a small process: a child forked from this large test
/// process would report the pages it shared before it exec'd).
fn peak_rss(env: &Env, args: &[&str]) -> (i32, String, u64) {
    let out = env
        .command_of(Path::new("/usr/bin/time"))
        .args(["-f", "peak-kib=%M"])
        .arg(bin())
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    (out.status.code().unwrap_or(-1), stderr, kib)
}

#[test]
fn a_folder_of_hundreds_of_thousands_of_entries_is_listed_checked_and_restored_in_bounded_memory() {
    // One folder of 400,000 files (sharing one chunk), as anyone with the key could
    // store it: its tree is 60 MB of text, 1 MB stored.
    let n = 400_000;
    let env = Env::init("wide");
    let mut c = Crafter::new(&env);
    let chunk = c.chunk(b"tiny");
    let nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            content: vec![chunk],
            size: 4,
            ..node(format!("entry-{i:08}").as_bytes(), NodeKind::File)
        })
        .collect();
    let raw = Tree {
        nodes: nodes.clone(),
    }
    .to_bytes()
    .len();
    let root = c.tree(nodes);
    c.save(root, "wide");
    // Restore reads every entry (ten of them restored) and plans their names without
    // holding them (the mount's side is in tests/tests/mount.rs).
    let target = env.dir.join("ten");
    let restore = [
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        "/entry-0039999*",
    ];
    let ls_json = ["ls", "--json", "latest"];
    for args in [
        &["check", "--read-data"][..],
        &["ls", "latest"],
        &ls_json,
        &restore,
    ] {
        let (code, stderr, kib) = peak_rss(&env, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        eprintln!(
            "{}: peak {} KiB, tree text {raw} bytes",
            args.join(" "),
            kib
        );
        // Held whole, the tree's text alone would be {raw} bytes, its entries more.
        assert!(
            kib * 1024 < raw as u64 / 2,
            "{args:?} peaked at {kib} KiB for a tree of {raw} bytes of text"
        );
    }
    let restored: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
    assert_eq!(restored.len(), 10);
    assert_eq!(
        std::fs::read(target.join("entry-00399990")).unwrap(),
        b"tiny"
    );
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        kind,
        mode: 0o644,
        ..Node::layout_dir(Name(name.to_vec()))
    }
}

#[test]
fn hostile_names_in_a_snapshot_never_escape_the_target() {
    let env = Env::init("hostile");
    // Craft a snapshot through the engine, as an attacker with the key could.
    let mut c = Crafter::new(&env);
    let chunk = c.chunk(b"owned");
    let file = |name: &[u8]| {
        let mut n = node(name, NodeKind::File);
        n.content = vec![chunk];
        n.size = 5;
        n
    };
    let mut nodes = vec![
        // A terminal escape sequence that would retitle the terminal.
        file(b"\x1b]0;owned\x07"),
        file(b".."),
        file(b"../../escaped"),
        file(b"a/b"),
        // Sizes the chunks do not hold: 2^60 bytes, and one that wraps a total.
        Node {
            size: 1 << 60,
            ..file(b"huge")
        },
        file(b"nul\0byte"),
        file(b"ok.txt"),
        file(b"ok.txt"), // duplicate
        Node {
            size: u64::MAX - 2,
            ..file(b"zz-wrap")
        },
    ];
    nodes.push(file(b"."));
    let root = c.tree(nodes);
    c.save(root, "evil");

    let outer = env.dir.join("outer");
    let target = outer.join("a/b/target");
    let r = env.restore("latest", &target, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("unsafe name"), "{}", r.stderr);
    assert_eq!(fs::read(target.join("ok.txt")).unwrap(), b"owned");
    assert!(
        r.stderr.contains(
            "/huge: the snapshot gives its size as 1152921504606846976 bytes but its chunks hold 5"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read(target.join("huge")).unwrap(), b"owned");
    assert_eq!(fs::read(target.join("zz-wrap")).unwrap(), b"owned");
    // Run again, the files already there whole are left; rewritten, the total is what
    // the chunks hold (4 files of 5 bytes), not a wrapped sum of the claimed sizes.
    let t = target.to_str().unwrap();
    let again = env.run(&["restore", "--json", "latest", "--target", t]);
    assert_eq!(again.json()["unchanged"], 4, "{}", again.stdout);
    let json = env.run(&["restore", "--json", "--overwrite", "latest", "--target", t]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stderr);
    assert_eq!(v["bytes"], 20, "{}", json.stdout);
    // Listed, the name shows escaped; `--json` keeps it exact.
    for args in [&["ls", "latest"][..], &["ls", "--long", "latest"]] {
        let l = env.run(args);
        assert!(
            !l.stdout.contains('\x1b') && !l.stdout.contains('\x07'),
            "{}",
            l.stdout
        );
        assert!(l.stdout.contains("/\\x1b]0;owned\\x07"), "{}", l.stdout);
    }
    let l = env.run(&["ls", "--json", "latest"]);
    assert!(l.stdout.contains("\\u001b]0;owned\\u0007"), "{}", l.stdout);
    // check names every fault of the tree, and what its chunks hold.
    let c = env.run(&["check", "--read-data"]);
    assert_eq!(c.code, 1, "{}", c.stderr);
    for fault in [
        "entry \"..\" is not a valid name",
        "entry \"a/b\" is not a valid name",
        "entry \"ok.txt\" appears twice",
        "entry \".\" is out of order",
        "/huge: its size is given as 1152921504606846976 bytes but its chunks hold 5",
        "/zz-wrap: its size is given as 18446744073709551613 bytes",
    ] {
        assert!(
            c.stdout.contains(fault) || c.stderr.contains(fault),
            "{fault}: {}{}",
            c.stdout,
            c.stderr
        );
    }
    let mut everything: Vec<_> = all_files(&env.dir.0)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with(&env.repo) && !p.starts_with(&env.cache))
        .collect();
    everything.sort();
    assert_eq!(
        everything,
        vec![
            target.join("\x1b]0;owned\x07"),
            target.join("huge"),
            target.join("ok.txt"),
            target.join("zz-wrap")
        ],
        "files outside the target"
    );
}

#[test]
fn folders_nested_thousands_deep_are_listed_checked_and_restored_to_a_limit() {
    // 7,000 folders one inside the other, crafted (no OS makes such a path): ls, check
    // and restore once overflowed their stacks at this depth and aborted (exit 134).
    let env = Env::init("deep");
    let repo = env.open();
    let snap = std::thread::Builder::new()
        .stack_size(1 << 30) // the crafting recursion, not Backazon's
        .spawn(move || {
            let mut entries = vec![Crafted::file("bottom.txt", "deep down")];
            for _ in 0..7000 {
                entries = vec![Crafted::dir("d", entries)];
            }
            craft_snapshot(&repo, entries).to_hex()
        })
        .unwrap()
        .join()
        .unwrap();
    let limit = backazon_engine::MAX_DEPTH;
    let deeper = format!("deeper than {limit} levels");

    let ls = env.run(&["ls", &snap]);
    assert_eq!(ls.code, 0, "{}", ls.stderr);
    assert!(ls.stderr.contains(&deeper), "{}", ls.stderr);
    assert_eq!(ls.stdout.lines().count(), limit);

    let check = env.run(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stderr);
    assert!(check.stderr.contains(&deeper), "{}", check.stderr);

    let out = env.dir.join("out");
    let r = env.restore(&snap, &out, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(&deeper), "{}", r.stderr);
}

#[test]
fn index_objects_put_back_from_before_a_prune_lose_no_data() {
    // Someone who can write to the bucket, without the password, puts back the index
    // objects a prune deleted: they name a pack the prune removed.
    let env = Env::init("replay");
    let src = env.dir.join("src");
    let mut rng = Rng::new(7);
    let back = rng.noise(300_000);
    write(&src.join("kept"), &rng.noise(300_000));
    write(&src.join("back"), &back);
    env.backup(&[&src], &[]);
    let index_dir = env.repo.join("index");
    let old: Vec<_> = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    // `back` goes: forget and prune repack `kept` and remove the pack both were in.
    std::fs::remove_file(src.join("back")).unwrap();
    env.backup(&[&src], &[]);
    env.run(&["forget", "--keep-last", "1"]).ok();
    env.run(&["prune"]).ok();
    for (name, bytes) in &old {
        assert!(!index_dir.join(name).exists(), "prune rewrote the index");
        write(&index_dir.join(name), bytes);
    }
    // `back` comes back: its data is stored again, not taken as being in the gone pack,
    // and `kept` is read from where the prune put it.
    write(&src.join("back"), &back);
    let run = env.run(&["backup", src.to_str().unwrap()]).ok();
    let out = env.dir.join("out");
    env.restore("latest", &out, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&out, &src));
    assert!(
        run.stderr.contains("not in the repository"),
        "{}",
        run.stderr
    );
    // check names the gone pack; the next prune drops what named it.
    let check = env.run(&["check", "--read-data"]);
    assert_ne!(check.code, 0);
    assert!(
        check.stderr.contains("missing from storage"),
        "{}",
        check.stderr
    );
    env.run(&["prune"]).ok();
    env.run(&["check", "--read-data"]).ok();
    let out = env.dir.join("out-after-prune");
    env.restore("latest", &out, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&out, &src));
}

#[test]
fn a_folder_of_a_hundred_thousand_folders_restores_in_bounded_memory() {
    // 100,000 empty folders in one: restore sets each one's times at its end, and keeps
    // what it needs for that in a temporary file past 20,000 of them. Peak: 39 MiB for
    // 100,000, 42 MiB for 200,000 (it was 75 MiB for 200,000, growing 350 bytes a
    // folder; BACKAZON_FOLDERS sets another number).
    let n: usize = std::env::var("BACKAZON_FOLDERS").map_or(100_000, |v| v.parse().unwrap());
    let env = Env::init("folders");
    let mut c = Crafter::new(&env);
    let empty = c.tree(vec![]);
    let nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            subtree: Some(empty),
            mtime: 1_600_000_000_000_000_000 + i as i64 * 1_000_000_000,
            mode: 0o750,
            ..node(format!("d{i:07}").as_bytes(), NodeKind::Dir)
        })
        .collect();
    let many = c.tree(nodes);
    let root = c.tree(vec![Node {
        subtree: Some(many),
        ..node(b"many", NodeKind::Dir)
    }]);
    c.save(root, "folders");
    let target = env.dir.join("out");
    let (code, stderr, kib) = peak_rss(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    eprintln!("restore of {n} folders: peak {kib} KiB");
    assert!(kib < 48 << 10, "restore peaked at {kib} KiB");
    let many = target.join("many");
    assert_eq!(std::fs::read_dir(&many).unwrap().count(), n);
    for i in [0, n / 2, n - 1] {
        let md = std::fs::metadata(many.join(format!("d{i:07}"))).unwrap();
        assert_eq!(md.mtime(), 1_600_000_000 + i as i64, "d{i:07}");
        assert_eq!(md.mode() & 0o7777, 0o750);
    }
    // Nothing left in the temporary folder.
    let left = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("backazon-restore-folders-")
        })
        .count();
    assert_eq!(left, 0);
}
