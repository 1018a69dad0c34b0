//! A repository with a replica: every object in both places, reads that fall back to
//! the replica when the primary's copy is missing or damaged, `replica sync` repairing
//! either side, and a backup that completes when the replica cannot be reached.

use std::fs;
use std::net::TcpListener;

use backazon_e2e::*;

fn set(env: &mut Env, key: &str, value: &str) {
    env.extra_env.retain(|(k, _)| k != key);
    env.extra_env.push((key.into(), value.into()));
}

#[test]
fn the_replica_serves_what_the_primary_lost_and_sync_repairs_it() {
    let mut env = Env::new("replica-local");
    let replica = env.dir.join("replica");
    set(&mut env, "BACKAZON_REPLICA", replica.to_str().unwrap());
    env.run(&["init"]).ok();
    let src = env.dir.join("src");
    generate_tree(&src, 21, 24 << 20);
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["replica"]["objects_behind"], 0, "{s}");

    // Both sides hold the same objects, byte for byte.
    for folder in ["data", "index", "snapshots", "keys"] {
        let names = objects(&env.repo, folder);
        assert!(!names.is_empty(), "{folder}");
        assert_eq!(names, objects(&replica, folder), "{folder}");
        for n in &names {
            assert_eq!(
                fs::read(object_path(&env.repo, folder, n)).unwrap(),
                fs::read(object_path(&replica, folder, n)).unwrap()
            );
        }
    }
    assert_eq!(
        fs::read(env.repo.join("config")).unwrap(),
        fs::read(replica.join("config")).unwrap()
    );

    // Damage the primary: a pack gone, a byte flipped in another pack, in the snapshot
    // and in an index object.
    let (victim, offset) = env.locate_chunk(&src.join("docs/ledger.qbw"));
    let packs: Vec<String> = objects(&env.repo, "data")
        .into_iter()
        .filter(|p| *p != victim)
        .collect();
    assert!(!packs.is_empty());
    flip_byte(&object_path(&env.repo, "data", &victim), offset);
    fs::remove_file(object_path(&env.repo, "data", &packs[0])).unwrap();
    let snap = &objects(&env.repo, "snapshots")[0];
    flip_byte(&object_path(&env.repo, "snapshots", snap), 40);
    let index = &objects(&env.repo, "index")[0];
    flip_byte(&object_path(&env.repo, "index", index), 40);

    // Restored from the replica where the primary fails: byte for byte.
    let target = env.dir.join("restore");
    let r = env.run_os(&[
        "--no-cache".as_ref(),
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_same_tree(&src, &in_snapshot(&target, &src));

    // Without the replica the primary alone is damaged.
    let mut alone = Env::new("replica-alone");
    alone.repo = env.repo.clone();
    assert_ne!(alone.run(&["--no-cache", "check", "--read-data"]).code, 0);

    // `replica check` names every difference; `replica sync --verify` repairs them.
    let r = env.run(&["replica", "check"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    for name in [&packs[0], &victim, snap, index] {
        assert!(r.stderr.contains(name.as_str()), "{name}: {}", r.stderr);
    }
    assert!(r.stderr.contains("missing on the primary"), "{}", r.stderr);
    assert!(r.stderr.contains("damaged on the primary"), "{}", r.stderr);
    let r = env.run(&["replica", "sync", "--verify"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("copied from the replica"), "{}", r.stderr);
    env.run(&["replica", "check"]).ok();
    alone.run(&["--no-cache", "check", "--read-data"]).ok();
}

#[test]
fn a_backup_completes_while_the_replica_is_down_and_sync_catches_up() {
    let mut env = Env::init_s3("replica-down");
    let src = env.dir.join("src");
    generate_tree(&src, 22, 4 << 20);
    let primary = env.repo.to_string_lossy().into_owned();
    let replica = primary.replace("s3://primary/", "s3://replica/");

    // A replica whose server does not answer: the backup still completes, and says so.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    set(&mut env, "BACKAZON_REPLICA", &replica);
    set(&mut env, "BACKAZON_REPLICA_S3_ENDPOINT", &dead_endpoint);
    let r = env.run_os(&["backup".as_ref(), "--json".as_ref(), src.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = r.json();
    assert!(s["replica"]["objects_behind"].as_u64().unwrap() > 0, "{s}");
    assert!(r.stderr.contains("replica is behind"), "{}", r.stderr);

    // Reachable again: sync copies everything over, and the replica alone restores.
    let endpoint = backazon_e2e::garage::Garage::get().endpoint.clone();
    set(&mut env, "BACKAZON_REPLICA_S3_ENDPOINT", &endpoint);
    let r = env.run(&["replica", "sync"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("missing on the replica, copied from the primary"),
        "{}",
        r.stderr
    );
    env.run(&["replica", "check"]).ok();
    let mut from_replica = Env::new_s3("replica-only");
    from_replica.repo = replica.into();
    let target = env.dir.join("restore");
    from_replica.restore("latest", &target, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&target, &src));
}
