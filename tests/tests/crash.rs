//! Crash points: the real binary killed with SIGKILL at seeded random moments of a
//! backup, a forget, a prune, a `key add`, `passwd` or `remove`, and a restore, one after
//! another on one repository. After each: the repository opens with a password it had,
//! the next backup completes, `check --read-data` is clean, and the newest snapshot
//! restores identical. After them all, one prune leaves nothing the kills left, and the
//! repository within 2% of a fresh one holding the same files.
//!
//! `BACKAZON_CRASH_POINTS=N` runs N points (20 by default) from seed
//! `BACKAZON_CRASH_FIRST` (0), `BACKAZON_CRASH_SEED=S` reruns the one point S;
//! `bench/crash.sh` runs thousands. A failure names its seed.
#![cfg(target_os = "linux")]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backazon_e2e::*;

const NEW_PASSWORD: &str = "a new password for the crash test";

#[derive(Clone, Copy, Debug)]
enum Op {
    Backup,
    Forget,
    Prune,
    Passwd,
    KeyAdd,
    KeyRemove,
    Restore,
}

const OPS: [Op; 7] = [
    Op::Backup,
    Op::Forget,
    Op::Prune,
    Op::Passwd,
    Op::KeyAdd,
    Op::KeyRemove,
    Op::Restore,
];

/// The ids of the key files other than the one the test's password opens.
fn other_keys(env: &Env) -> Vec<String> {
    let keys = env.run(&["key", "list", "--json"]).ok().json();
    keys.as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == false)
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `password` opens the repository.
fn opens(env: &Env, password: &str) -> bool {
    env.command()
        .env("BACKAZON_PASSWORD", password)
        .arg("snapshots")
        .output()
        .unwrap()
        .status
        .success()
}

/// Starts `args` with `password` and kills it after `after`; whether it had finished.
fn kill_after(env: &Env, args: &[&str], password: &str, after: Duration) -> bool {
    let mut child = env
        .command()
        .env("BACKAZON_PASSWORD", password)
        .env("BACKAZON_NEW_PASSWORD", NEW_PASSWORD)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL
    child.wait().unwrap();
    false
}

/// Changes a few files: the next backup has something to add and something to reuse.
fn mutate(src: &Path, rng: &mut Rng) {
    for _ in 0..3 {
        let i = rng.below(24);
        let len = 64 * 1024 + rng.below(2 << 20) as usize;
        let data = if i.is_multiple_of(2) {
            rng.noise(len)
        } else {
            rng.text(len)
        };
        write(&src.join(format!("f{i:02}.bin")), &data);
    }
}

#[test]
fn killed_at_random_moments_nothing_referenced_is_lost() {
    let points: Vec<u64> = match std::env::var("BACKAZON_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("BACKAZON_CRASH_SEED: a number")],
        Err(_) => {
            let var = |name: &str, default: u64| {
                std::env::var(name)
                    .ok()
                    .map_or(default, |n| n.parse().expect("a number"))
            };
            let first = var("BACKAZON_CRASH_FIRST", 0);
            (first..first + var("BACKAZON_CRASH_POINTS", 20)).collect()
        }
    };
    let env = Env::init("crash");
    let src = env.dir.join("src");
    let mut rng = Rng::new(0xc0ffee);
    for i in 0..24 {
        write(&src.join(format!("f{i:02}.bin")), &rng.noise(1 << 20));
    }
    generate_tree(&src.join("tree"), 5, 4 << 20);
    env.backup(&[&src], &[]);

    for &seed in &points {
        let mut rng = Rng::new(seed);
        let op = OPS[rng.below(OPS.len() as u64) as usize];
        // These commands take 0.1-0.4 s here (a password costs 65 ms of it): kill
        // within that, at any moment.
        let after = Duration::from_millis(rng.below(300));
        eprintln!("crash point {seed}: {op:?} killed after {after:?} (BACKAZON_CRASH_SEED={seed} reruns it)");
        let out = env.dir.join(format!("restore-{seed}"));
        let finished = match op {
            Op::Backup => {
                mutate(&src, &mut rng);
                let s = src.to_str().unwrap();
                kill_after(&env, &["backup", "--quiet", s], PASSWORD, after)
            }
            Op::Forget => kill_after(&env, &["forget", "--keep-last", "2"], PASSWORD, after),
            Op::Prune => {
                env.run(&["forget", "--keep-last", "2"]).ok();
                kill_after(&env, &["prune"], PASSWORD, after)
            }
            Op::Passwd => kill_after(&env, &["key", "passwd"], PASSWORD, after),
            Op::KeyAdd => {
                let done = kill_after(&env, &["key", "add"], PASSWORD, after);
                assert!(!done || opens(&env, NEW_PASSWORD), "point {seed}: key add");
                done
            }
            Op::KeyRemove => {
                env.command()
                    .env("BACKAZON_NEW_PASSWORD", NEW_PASSWORD)
                    .args(["key", "add"])
                    .output()
                    .unwrap();
                let id = other_keys(&env).pop().expect("the key just added");
                let done = kill_after(&env, &["key", "remove", &id], PASSWORD, after);
                assert!(
                    !done || !opens(&env, NEW_PASSWORD),
                    "point {seed}: key remove"
                );
                done
            }
            Op::Restore => {
                let args = ["restore", "latest", "--target", out.to_str().unwrap()];
                kill_after(&env, &args, PASSWORD, after)
            }
        };
        eprintln!(
            "  the command {}",
            if finished {
                "had finished"
            } else {
                "was killed"
            }
        );

        // Never left with no usable key: the old password or the new one opens it.
        let old = env.run(&["snapshots"]);
        if old.code != 0 {
            assert!(
                matches!(op, Op::Passwd),
                "point {seed}: the password no longer works after {op:?}: {}",
                old.stderr
            );
            let new = env
                .command()
                .env("BACKAZON_PASSWORD", NEW_PASSWORD)
                .arg("snapshots")
                .output()
                .unwrap();
            assert!(
                new.status.success(),
                "point {seed}: neither password opens the repository: {}",
                String::from_utf8_lossy(&new.stderr)
            );
            // Back to the test's own password, for the next points.
            let back = env
                .command()
                .env("BACKAZON_PASSWORD", NEW_PASSWORD)
                .env("BACKAZON_NEW_PASSWORD", PASSWORD)
                .args(["key", "passwd"])
                .output()
                .unwrap();
            assert!(back.status.success(), "point {seed}: key passwd back");
        }
        if let Op::KeyAdd | Op::KeyRemove = op {
            // The test's own password opens it (checked above); the other keys go, so
            // a later `key passwd` point changes the one key there is.
            for id in other_keys(&env) {
                env.run(&["key", "remove", &id]).ok();
            }
            assert!(
                !opens(&env, NEW_PASSWORD),
                "point {seed}: a key left behind"
            );
        }
        if let Op::Restore = op {
            // Run again into the same target, it finishes the work: identical, and the
            // files the killed run had finished are left as they were, not rewritten.
            let done = finished_files(&src, &in_snapshot(&out, &src));
            let again = env.restore("latest", &out, &["--json"]).ok().json();
            assert_same_tree(&src, &in_snapshot(&out, &src));
            assert_eq!(again["unchanged"], done.len(), "point {seed}: {again}");
            for (path, ctime, ino) in &done {
                let now = std::fs::symlink_metadata(path).unwrap();
                // A file with several links gets a new change time when the rerun adds
                // a link the killed run had not made: for those, the same inode.
                let same = if now.nlink() > 1 {
                    now.ino() == *ino
                } else {
                    (now.ctime(), now.ctime_nsec()) == *ctime
                };
                assert!(same, "point {seed}: {} was rewritten", path.display());
            }
        }

        let s = env.backup(&[&src], &[]);
        assert_eq!(s["errors"], 0, "point {seed}");
        let r = env.run(&["check", "--read-data"]);
        assert_eq!(r.code, 0, "point {seed}: check after {op:?}:\n{}", r.stderr);
        assert!(!r.stderr.contains("error"), "point {seed}: {}", r.stderr);
        let fresh = env.dir.join(format!("verify-{seed}"));
        env.restore("latest", &fresh, &[]).ok();
        assert_same_tree(&src, &in_snapshot(&fresh, &src));
        let _ = std::fs::remove_dir_all(&fresh);
        let _ = std::fs::remove_dir_all(&out);
    }

    // Whatever the kills left of packs, index and snapshot objects, one prune removes
    // (a key's or a lock's temporary file, a few hundred bytes, goes after an hour: a
    // `key add` may be writing it, and those take no lock).
    env.run(&["prune"]).ok();
    let left: Vec<_> = temporary_files(&env.repo)
        .into_iter()
        .filter(|(p, _)| {
            !p.starts_with(env.repo.join("keys")) && !p.starts_with(env.repo.join("locks"))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    env.run(&["check", "--read-data"]).ok();

    // Down to the last snapshot, pruned whole: within 2% of a fresh repository holding
    // the same files (each holds its own chunker seed, so their chunks differ a little).
    env.run(&["forget", "--keep-last", "1"]).ok();
    env.run(&["prune", "--max-unused", "0"]).ok();
    let fresh = Env::init("crash-fresh");
    fresh.backup(&[&src], &[]);
    let size = |repo: &Path| files_under(repo).iter().map(|(_, n)| n).sum::<u64>();
    let (pruned, clean) = (size(&env.repo), size(&fresh.repo));
    eprintln!("after the points and one prune: {pruned} bytes; a fresh repository: {clean}");
    assert!(
        pruned as f64 <= clean as f64 * 1.02,
        "after prune {pruned} bytes, a fresh repository {clean}"
    );
}

/// The files of `src` that a restore into `restored` had finished: there whole, with
/// the original's size and modification time; with their change time and inode then.
fn finished_files(src: &Path, restored: &Path) -> Vec<(PathBuf, (i64, i64), u64)> {
    let mut out = Vec::new();
    for (path, _) in all_files(src) {
        let rel = path.strip_prefix(src).unwrap();
        let (Ok(a), Ok(b)) = (
            std::fs::symlink_metadata(&path),
            std::fs::symlink_metadata(restored.join(rel)),
        ) else {
            continue;
        };
        if a.is_file()
            && b.is_file()
            && a.len() == b.len()
            && (a.mtime(), a.mtime_nsec()) == (b.mtime(), b.mtime_nsec())
        {
            out.push((restored.join(rel), (b.ctime(), b.ctime_nsec()), b.ino()));
        }
    }
    out
}
