//! Repositories in S3, against a real S3 server (Garage on 127.0.0.1, started by the
//! test helpers): round trips through the binary, a restore that reads each pack once, a
//! mount of an S3 repository that reads packs rather than chunks and reads its data
//! cache the second time, and the messages for wrong credentials and a missing bucket.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use backazon_e2e::garage::Garage;
use backazon_e2e::proxy::FaultyProxy;
use backazon_e2e::*;

#[test]
fn a_tree_round_trips_through_s3() {
    let env = Env::init_s3("s3-kinds");
    let src = env.dir.join("src");
    generate_tree(&src, 11, 40 << 20);
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["errors"], 0);
    let req = &s["requests"];
    let puts = req["puts"].as_u64().unwrap();
    let packs = s["packs_written"].as_u64().unwrap();
    // One PUT per pack, plus the index objects and the snapshot.
    assert!(
        puts >= packs && puts <= packs + 6,
        "{req} for {packs} packs"
    );
    assert!(req["bytes_sent"].as_u64().unwrap() >= s["bytes_added"].as_u64().unwrap());

    let target = env.dir.join("restore");
    let r = env.restore("latest", &target, &["--json"]).ok().json();
    assert_same_tree(&src, &in_snapshot(&target, &src));
    // Each pack is read once, with one ranged GET: besides the packs, only the config,
    // the key, the index objects and the snapshot are read.
    let gets = r["requests"]["gets"].as_u64().unwrap();
    let c = env.run(&["check", "--json"]).ok().json();
    let objects = c["packs"].as_u64().unwrap() + c["index_objects"].as_u64().unwrap() + 3;
    assert!(gets <= objects, "{gets} GETs for {c}");
    env.run(&["check", "--read-data"]).ok();

    // A second run reads nothing and stores no new data (only the folders above `src`,
    // whose times changed as this test wrote next to it).
    let again = env.backup(&[&src], &[]);
    assert_eq!(again["bytes_read"], 0);
    assert_eq!(again["data_added_raw"], 0);
    assert!(
        again["requests"]["puts"].as_u64().unwrap() <= 4,
        "{}",
        again["requests"]
    );
    let list = env.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let ls = env.run(&["ls", "latest"]).ok().stdout;
    assert!(ls.contains("docs/letter.txt"), "{ls}");
    // A second password, stored as a key object in the bucket.
    let second = env.dir.join("second-pw");
    write(&second, b"another password\n");
    env.run(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
    ])
    .ok();
    let keys = env.run(&["key", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);

    // The cache is only a cache: without it everything reads from the bucket.
    let target2 = env.dir.join("restore-nocache");
    env.run_os(&[
        "--no-cache".as_ref(),
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target2.as_os_str(),
    ])
    .ok();
    assert_same_tree(&src, &in_snapshot(&target2, &src));
}

/// Mounts the repository, compares the snapshot with `src` byte for byte, unmounts, and
/// returns the GET requests the mount made for file data.
fn mount_and_compare(env: &Env, src: &std::path::Path, extra: &[&str]) -> u64 {
    mount_compare_unmount(env, src, extra).0
}

/// [`mount_and_compare`], with what the mount said on stderr.
fn mount_compare_unmount(env: &Env, src: &std::path::Path, extra: &[&str]) -> (u64, String) {
    let mnt = env.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let child = env
        .command()
        .arg("mount")
        .args(extra)
        .arg(&mnt)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !mnt.join("by-date").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mount did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let group = std::fs::read_dir(mnt.join("latest"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let diff = std::panic::catch_unwind(|| assert_diff_clean(src, &in_snapshot(&group, src)));
    // SAFETY: kill with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(
        diff.is_ok(),
        "the mounted snapshot differs from the original"
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // "requests to s3://...: 12 GET (7 for file data), ..."
    let line = text
        .lines()
        .find(|l| l.starts_with("requests to"))
        .unwrap_or_else(|| panic!("{text}"));
    let gets = line
        .split_once(" GET (")
        .and_then(|(_, r)| r.split_once(' '))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    (gets, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_mount_of_s3_reads_packs_not_chunks_and_then_reads_its_cache() {
    let env = Env::new_s3("s3-browse");
    env.run(&["init", "--pack-size", "1MiB"]).ok();
    let src = env.dir.join("src");
    generate_tree(&src, 13, 8 << 20);
    env.backup(&[&src], &[]);
    let c = env.run(&["check", "--json"]).ok().json();
    let data_packs = c["data_packs"].as_u64().unwrap();
    assert!(data_packs >= 5, "{c}");
    // `diff -r` reads every file in the order of a walk: whole packs come in few GETs,
    // not one per file (hundreds here).
    let first = mount_and_compare(&env, &src, &[]);
    assert!(
        first <= 2 * data_packs,
        "{first} GETs for {data_packs} data packs"
    );
    // Read again, by another mount: everything from the data cache.
    assert_eq!(mount_and_compare(&env, &src, &[]), 0);
    // A cache smaller than one file still reads every byte right, and stays that small.
    let budget = 1 << 20;
    mount_and_compare(&env, &src, &["--cache-size", "1MiB"]);
    let data: u64 = walk_files(&env.cache)
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "data"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(data <= budget, "{data} bytes in the data cache");
    // Deleting the cache is safe.
    std::fs::remove_dir_all(&env.cache).unwrap();
    assert!(mount_and_compare(&env, &src, &[]) > 0);
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_named_at_once() {
    let env = Env::init_s3("s3-refused");
    // A wrong secret: refused, named, and not retried for long.
    let mut bad = Env::new_s3("s3-refused-2");
    bad.repo = env.repo.clone();
    for (k, v) in &mut bad.extra_env {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "0".repeat(64);
        }
    }
    let start = Instant::now();
    let r = bad.run(&["snapshots"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    assert!(r.stderr.contains("s3://primary/"), "{}", r.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );

    // A bucket that does not exist.
    let mut missing = Env::new_s3("s3-nobucket");
    missing.repo = "s3://no-such-bucket/x".into();
    let start = Instant::now();
    let r = missing.run(&["init"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("bucket no-such-bucket does not exist"),
        "{}",
        r.stderr
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    // An S3 repository that was never created: the same exit code as a missing folder.
    let mut absent = Env::new_s3("s3-absent");
    absent.repo = format!("s3://primary/never-created-{}", std::process::id()).into();
    assert_eq!(absent.run(&["snapshots"]).code, 10);

    // A server that is not there: one sentence naming it and what to check, none of
    // the SDK's debug structures.
    let mut gone = Env::new_s3("s3-gone");
    set_endpoint(&mut gone, "http://127.0.0.1:9");
    let r = gone.run(&["snapshots"]);
    assert_eq!(r.code, 12, "unreachable, worth trying again: {}", r.stderr);
    let error = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        error.contains("cannot reach the S3 server at http://127.0.0.1:9")
            && error.contains("Connection refused")
            && !error.contains("DispatchFailure"),
        "{error}"
    );
    let _ = Garage::get();
}

fn set_endpoint(env: &mut Env, endpoint: &str) {
    for (k, v) in &mut env.extra_env {
        if k == "BACKAZON_S3_ENDPOINT" {
            *v = endpoint.to_string();
        }
    }
}

#[test]
fn a_backup_through_resets_and_slow_downs_completes_and_checks_clean() {
    let g = Garage::get();
    // Three connections in four misbehave, in turn.
    let proxy = FaultyProxy::start(g.endpoint.trim_start_matches("http://"), 4);
    let mut env = Env::init_s3("s3-faults");
    let src = env.dir.join("src");
    generate_tree(&src, 13, 50 << 20);

    set_endpoint(&mut env, &proxy.endpoint);
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["errors"], 0);
    let f = &proxy.faults;
    use std::sync::atomic::Ordering::Relaxed;
    let (resets, slow, cuts) = (
        f.resets.load(Relaxed),
        f.slow_downs.load(Relaxed),
        f.cuts.load(Relaxed),
    );
    assert!(resets > 0 && slow > 0 && cuts > 0, "faults: {f:?}");
    // Retries show in the request counts: more PUTs than objects stored.
    assert!(s["requests"]["puts"].as_u64().unwrap() > s["packs_written"].as_u64().unwrap());

    // Straight to the server: every object is whole and every byte verifies.
    set_endpoint(&mut env, &g.endpoint);
    env.run(&["check", "--read-data"]).ok();

    // A restore through the same bad network is byte for byte right too.
    set_endpoint(&mut env, &proxy.endpoint);
    let before = f.connections.load(Relaxed);
    let target = env.dir.join("restore");
    env.restore("latest", &target, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&target, &src));
    assert!(f.connections.load(Relaxed) > before, "{f:?}");
}

/// Requests sent again, from the note a command prints on stderr when it retried.
fn retries_noted(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("note: "))
        .filter(|l| l.contains("were sent again"))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Every command through a proxy that faults one request in ten (by a seeded draw; a
/// reset, a 503 SlowDown, a response cut midway or a 10 s stall), each beside the same
/// command on a second repository through the same proxy with faults off: each
/// completes, the snapshots restore and mount byte for byte, and the table printed says
/// what was injected, what Backazon retried and the time it cost.
/// `BACKAZON_FAULT_PERCENT`, `BACKAZON_FAULT_SEED`, `BACKAZON_FAULT_STALL_SECS` change
/// the plan (`bench/s3faults.sh` runs several seeds).
#[test]
fn every_command_completes_when_one_request_in_ten_fails() {
    use backazon_e2e::proxy::{FaultPlan, RequestFaultProxy};
    use std::sync::atomic::Ordering::Relaxed;
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let plan = FaultPlan {
        percent: var("BACKAZON_FAULT_PERCENT", 10),
        seed: var("BACKAZON_FAULT_SEED", 1),
        stall: Duration::from_secs(var("BACKAZON_FAULT_STALL_SECS", 10)),
    };
    let g = Garage::get();
    let proxy = RequestFaultProxy::start(g.endpoint.trim_start_matches("http://"), plan);
    let f = &proxy.faults;
    let src = Env::new("s3-rfaults-src").dir.join("src");
    generate_tree(&src, 23, 24 << 20);
    let mut clean = Env::init_s3("s3-rfaults-clean");
    let mut faulty = Env::init_s3("s3-rfaults");
    set_endpoint(&mut clean, &proxy.endpoint);
    set_endpoint(&mut faulty, &proxy.endpoint);
    let changed = src.join("changed.bin");
    let steps: [(&str, &[&str]); 6] = [
        ("backup", &["backup"]),
        ("backup (one file changed)", &["backup"]),
        ("restore", &["restore", "latest", "--target"]),
        ("forget + prune", &["forget", "--keep-last", "1", "--prune"]),
        ("check --read-data", &["check", "--read-data"]),
        ("mount, read all", &[]),
    ];
    let mut table = Vec::new();
    for (i, (name, args)) in steps.iter().enumerate() {
        if i == 1 {
            write(&changed, &Rng::new(3).noise(2 << 20));
        }
        let mut row = (name.to_string(), [Duration::ZERO; 2], 0u64, [0u64; 5], 0u64);
        for (k, env) in [&clean, &faulty].into_iter().enumerate() {
            proxy.enabled.store(k == 1, Relaxed);
            let before = f.counts();
            let t = Instant::now();
            let stderr = if name.starts_with("mount") {
                mount_compare_unmount(env, &src, &[]).1
            } else {
                let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                if name.starts_with("backup") {
                    a.push(src.to_str().unwrap().into());
                }
                if *name == "restore" {
                    a.push(env.dir.join("restored").to_str().unwrap().into());
                }
                let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
                let r = env.run(&a);
                assert_eq!(r.code, 0, "{name} through faults ({k}): {}", r.stderr);
                r.stderr
            };
            row.1[k] = t.elapsed();
            if k == 1 {
                row.2 = retries_noted(&stderr);
                let now = f.counts();
                for j in 0..5 {
                    row.3[j] = now[j] - before[j];
                }
                row.4 = row.3[1..].iter().sum();
            }
        }
        table.push(row);
    }
    proxy.enabled.store(false, Relaxed);
    let restored = |env: &Env| in_snapshot(&env.dir.join("restored"), &src);
    assert_same_tree(&src, &restored(&faulty));
    assert_same_tree(&src, &restored(&clean));
    // Straight to the server: prune deleted nothing a snapshot needs, every byte verifies.
    set_endpoint(&mut faulty, &g.endpoint);
    faulty.run(&["check", "--read-data"]).ok();
    let again = faulty.dir.join("again");
    faulty.restore("latest", &again, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&again, &src));

    eprintln!(
        "faults in {}% of requests (seed {}, stalls of {:?}):",
        plan.percent, plan.seed, plan.stall
    );
    eprintln!(
        "| command | requests | resets | 503 | cut | stalled | retried | clean | with faults | time lost |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, t, retried, n, _) in &table {
        eprintln!(
            "| {name} | {} | {} | {} | {} | {} | {retried} | {:.1} s | {:.1} s | {:.1} s |",
            n[0],
            n[1],
            n[2],
            n[3],
            n[4],
            t[0].as_secs_f64(),
            t[1].as_secs_f64(),
            t[1].as_secs_f64() - t[0].as_secs_f64()
        );
    }
    let injected: u64 = table.iter().map(|r| r.4).sum();
    assert!(injected > 0, "no fault was injected: {:?}", f);
    // A fault that makes the request fail shows up as a retry (a stall only delays it).
    let failing: u64 = table.iter().map(|r| r.3[1] + r.3[2] + r.3[3]).sum();
    let retried: u64 = table.iter().map(|r| r.2).sum();
    assert!(
        retried >= failing.min(1),
        "{failing} failed requests, {retried} retried"
    );
}

#[test]
fn the_endpoint_can_come_from_the_aws_environment() {
    let mut env = Env::new_s3("s3-aws-env");
    let endpoint = Garage::get().endpoint.clone();
    env.extra_env.retain(|(k, _)| k != "BACKAZON_S3_ENDPOINT");
    env.extra_env
        .push(("AWS_ENDPOINT_URL".into(), endpoint.clone()));
    env.run(&["init"]).ok();
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"through AWS_ENDPOINT_URL");
    env.backup(&[&src], &[]);
    let list = env.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn forget_and_prune_in_s3_keep_every_kept_byte_and_respect_locks() {
    let env = Env::init_s3("s3-prune");
    let src = env.dir.join("src");
    let mut rng = Rng::new(21);
    std::fs::create_dir_all(&src).unwrap();
    let mut states = Vec::new();
    for g in 0..4 {
        for i in 0..6 {
            if g == 0 || i % 3 == g % 3 {
                write(&src.join(format!("f{i}.bin")), &rng.noise(3 << 20));
            }
        }
        env.backup(&[&src], &["--job", "s3"]);
        let copy = env.dir.join(format!("state{g}"));
        assert!(std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&copy)
            .status()
            .unwrap()
            .success());
        states.push(copy);
        std::thread::sleep(Duration::from_millis(20));
    }
    // A live lock held by a running process (this test's) keeps prune away.
    let repo = env.open();
    let held = backazon_engine::lock::lock(&repo, false, "backup", Duration::ZERO).unwrap();
    let refused = env.run(&["prune"]);
    assert_eq!(refused.code, 11, "{}", refused.stderr);
    assert!(refused.stderr.contains("locked"), "{}", refused.stderr);
    drop(held);

    env.run(&["forget", "--job", "s3", "--keep-last", "2"]).ok();
    let p = env.run(&["prune", "--json"]).ok().json();
    assert!(
        p["bytes_after"].as_u64().unwrap() < p["bytes_before"].as_u64().unwrap(),
        "{p}"
    );
    env.run(&["check", "--read-data"]).ok();
    let snaps = env.run(&["snapshots", "--json"]).ok().json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    for (i, s) in snaps.iter().enumerate() {
        let target = env.dir.join(format!("restore{i}"));
        env.restore(s["id"].as_str().unwrap(), &target, &[]).ok();
        assert_diff_clean(&states[2 + i], &in_snapshot(&target, &src));
    }
    // No lock objects are left behind.
    let backend = backend_of(&env.repo.to_string_lossy());
    assert!(backend
        .list(backazon_engine::Kind::Lock)
        .unwrap()
        .is_empty());
}
