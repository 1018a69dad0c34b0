//! A repository with a replica: every object in both places, reads that fall back to
//! the replica when the primary's copy is missing or damaged, `replica sync` repairing
//! either side, and a backup that completes when the replica cannot be reached.
#![cfg(target_os = "linux")]

use std::net::TcpListener;

use backazon_e2e::*;
use backazon_engine::{Backend, Kind};

fn set(env: &mut Env, key: &str, value: &str) {
    env.extra_env.retain(|(k, _)| k != key);
    env.extra_env.push((key.into(), value.into()));
}

/// Every object of a repository by kind, with its bytes.
fn all_objects(b: &dyn Backend) -> Vec<(Kind, String, Vec<u8>)> {
    let mut out = vec![(
        Kind::Config,
        "config".to_string(),
        b.read(Kind::Config, "config").unwrap(),
    )];
    for kind in [Kind::Key, Kind::Index, Kind::Snapshot, Kind::Pack] {
        for (name, _) in b.list(kind).unwrap() {
            let bytes = b.read(kind, &name).unwrap();
            out.push((kind, name, bytes));
        }
    }
    out
}

fn flip(b: &dyn Backend, kind: Kind, name: &str, offset: usize) {
    let mut bytes = b.read(kind, name).unwrap();
    bytes[offset] ^= 1;
    b.write(kind, name, &bytes).unwrap();
    b.flush().unwrap();
}

/// Backs up with a replica, damages the primary (a pack gone; a byte flipped in a pack,
/// the snapshot and an index object), restores through the replica, and repairs.
fn replica_serves_what_the_primary_lost(mut env: Env, replica: &str) {
    set(&mut env, "BACKAZON_REPLICA", replica);
    env.run(&["init"]).ok();
    let src = env.dir.join("src");
    generate_tree(&src, 21, 24 << 20);
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["replica"]["objects_behind"], 0, "{s}");

    // Both sides hold the same objects, byte for byte.
    let primary = backend_of(&env.repo.to_string_lossy());
    let other = backend_of(replica);
    let objects = all_objects(&*primary);
    assert!(objects.len() > 5);
    assert_eq!(objects, all_objects(&*other));

    let (victim, offset) = env.locate_chunk(&src.join("docs/ledger.qbw"));
    let gone = primary
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| *n != victim)
        .unwrap();
    flip(&*primary, Kind::Pack, &victim, offset as usize);
    primary.remove(Kind::Pack, &gone).unwrap();
    let snap = primary.list(Kind::Snapshot).unwrap()[0].0.clone();
    flip(&*primary, Kind::Snapshot, &snap, 40);
    let index = primary.list(Kind::Index).unwrap()[0].0.clone();
    flip(&*primary, Kind::Index, &index, 40);

    // Restored through the replica where the primary fails: byte for byte.
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
    alone.extra_env = env.extra_env.clone();
    alone.extra_env.retain(|(k, _)| k != "BACKAZON_REPLICA");
    assert_ne!(alone.run(&["--no-cache", "check", "--read-data"]).code, 0);

    // `replica check` names every difference; `replica sync` repairs them.
    let r = env.run(&["replica", "check"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    for name in [&gone, &victim, &snap, &index] {
        assert!(r.stderr.contains(name.as_str()), "{name}: {}", r.stderr);
    }
    assert!(r.stderr.contains("missing on the primary"), "{}", r.stderr);
    assert!(r.stderr.contains("damaged on the primary"), "{}", r.stderr);
    let r = env.run(&["replica", "sync"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("copied from the replica"), "{}", r.stderr);
    env.run(&["replica", "check"]).ok();
    alone.run(&["--no-cache", "check", "--read-data"]).ok();
    assert_eq!(all_objects(&*primary), all_objects(&*other));
}

#[test]
fn a_replica_folder_serves_what_the_primary_folder_lost() {
    let env = Env::new("replica-local");
    let replica = env.dir.join("replica").to_string_lossy().into_owned();
    replica_serves_what_the_primary_lost(env, &replica);
}

#[test]
fn a_replica_bucket_serves_what_the_primary_bucket_lost() {
    let env = Env::new_s3("replica-s3");
    let replica = env
        .repo
        .to_string_lossy()
        .replace("s3://primary/", "s3://replica/");
    replica_serves_what_the_primary_lost(env, &replica);
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
