//! Writes the seed corpora (fuzz/corpus/<target>/) from a real repository: a small
//! backup made through the engine, its objects opened with its keys, so every decoder
//! starts from what Backazon really stores. Run by `bash bench/fuzz.sh --seeds`; the
//! seeds are committed.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backazon_engine::backup::{backup, BackupOptions, BackupProgress};
use backazon_engine::crypto::ObjectType;
use backazon_engine::{lock, pack, Backend, Kind, LocalBackend, Repository};

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let work = std::env::temp_dir().join(format!("bz-seeds-{}", std::process::id()));
    let src = work.join("src");
    fs::create_dir_all(src.join("docs/2026")).unwrap();
    fs::write(
        src.join("docs/ledger.csv"),
        "date,amount\n2026-01-02,10\n".repeat(300),
    )
    .unwrap();
    fs::write(src.join("docs/2026/notes.txt"), b"short").unwrap();
    fs::write(
        src.join("noise.bin"),
        (0..70_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let backend = Arc::new(LocalBackend::new(work.join("repo")));
    Repository::init(backend.clone(), b"seed", 1 << 20).unwrap();
    let repo = Repository::open(backend.clone(), b"seed").unwrap();
    let result = backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &BackupProgress::new(|_| {}),
    )
    .unwrap();
    let keys = repo.keys();
    let what = || "seed".to_string();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = out.join(target);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), bytes).unwrap();
    };

    put(
        "config",
        "real",
        &fs::read(work.join("repo/config")).unwrap(),
    );
    for (name, _) in backend.list(Kind::Key).unwrap() {
        put("key_file", "real", &backend.read(Kind::Key, &name).unwrap());
    }
    for (name, _) in backend.list(Kind::Index).unwrap() {
        let b = backend.read(Kind::Index, &name).unwrap();
        put(
            "index",
            "real",
            &keys.open(ObjectType::Index, None, &b, &what).unwrap(),
        );
    }
    let snap = backend
        .read(Kind::Snapshot, &result.snapshot.id.to_hex())
        .unwrap();
    put(
        "snapshot",
        "real",
        &keys.open(ObjectType::Snapshot, None, &snap, &what).unwrap(),
    );
    {
        let _held = lock::lock(&repo, false, "seeds", Duration::ZERO).unwrap();
        let (name, _) = backend.list(Kind::Lock).unwrap().remove(0);
        let b = backend.read(Kind::Lock, &name).unwrap();
        put(
            "lock",
            "real",
            &keys.open(ObjectType::Lock, None, &b, &what).unwrap(),
        );
    }
    // Every blob of every pack: trees to the tree target, data (with its claimed length
    // in front) to the blob target; each pack's header to the header target.
    let index = repo.load_index().unwrap().index;
    for (i, (name, size)) in backend.list(Kind::Pack).unwrap().into_iter().enumerate() {
        let bytes = backend.read(Kind::Pack, &name).unwrap();
        let hl = pack::header_length(&bytes);
        let end = bytes.len() - pack::TRAILER_LEN;
        let header = keys
            .open(ObjectType::PackHeader, None, &bytes[end - hl..end], &what)
            .unwrap();
        put("pack_header", &format!("real-{i}"), &header);
        let pack_id = backazon_engine::Id::from_hex(&name).unwrap();
        let blobs = pack::parse_header(keys, &pack_id, &bytes[end - hl..end]).unwrap();
        assert!(size as usize == bytes.len());
        for (j, b) in blobs.iter().enumerate() {
            let at = b.offset as usize..(b.offset + b.length) as usize;
            let loc = index.get(&b.id).unwrap();
            let ty = b.kind.object_type();
            let body = keys.open(ty, Some(&b.id), &bytes[at], &what).unwrap();
            if ty == ObjectType::TreeBlob {
                put("tree", &format!("real-{i}-{j}"), &body);
            } else {
                let mut seed = loc.raw_length.to_le_bytes().to_vec();
                seed.extend_from_slice(&body);
                put("blob", &format!("real-{i}-{j}"), &seed);
            }
        }
    }
    fs::remove_dir_all(&work).unwrap();
}
