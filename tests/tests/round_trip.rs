//! Back up and restore real trees through the real binary: byte for byte and metadata for
//! metadata, incremental runs, dedup, compression choices, selection and restore filters.
#![cfg(target_os = "linux")]

use std::fs;

use backazon_e2e::*;

#[test]
fn every_kind_of_file_round_trips() {
    let env = Env::init("kinds");
    let src = env.dir.join("src");
    generate_tree(&src, 1, 20 << 20);
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["errors"], 0);
    assert!(s["files_new"].as_u64().unwrap() > 300);

    let target = env.dir.join("restore");
    env.restore("latest", &target, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&target, &src));

    // The ordinary tool agrees.
    assert_diff_clean(&src, &in_snapshot(&target, &src));

    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn large_file_round_trips() {
    let env = Env::init("large");
    let src = env.dir.join("src");
    let mut rng = Rng::new(9);
    // 300 MiB in 4 MiB pieces, half compressible, written without holding it in memory.
    {
        use std::io::Write;
        fs::create_dir_all(&src).unwrap();
        let mut f = fs::File::create(src.join("disk-image.raw")).unwrap();
        for i in 0..75 {
            let piece = if i % 2 == 0 {
                rng.text(4 << 20)
            } else {
                rng.noise(4 << 20)
            };
            f.write_all(&piece).unwrap();
        }
    }
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["bytes_read"], 300u64 << 20);
    assert!(s["packs_written"].as_u64().unwrap() >= 8, "{s}");
    let target = env.dir.join("out");
    env.restore("latest", &target, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&target, &src));
}

#[test]
fn unchanged_files_are_not_read_again() {
    let env = Env::init("incremental");
    let src = env.dir.join("src");
    generate_tree(&src, 2, 3 << 20);
    let first = env.backup(&[&src], &[]);
    let total = first["total_files"].as_u64().unwrap();

    let second = env.backup(&[&src], &[]);
    assert_eq!(second["files_unchanged"], total, "{second}");
    assert_eq!(second["bytes_read"], 0);
    assert_eq!(second["files_new"], 0);

    write(&src.join("docs/letter.txt"), b"a new letter");
    write(&src.join("docs/new.txt"), b"brand new");
    let third = env.backup(&[&src], &[]);
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(third["files_new"], 1);
    assert_eq!(third["bytes_read"], 12 + 9);

    let forced = env.backup(&[&src], &["--force"]);
    assert_eq!(forced["files_unchanged"], 0);
    assert_eq!(forced["bytes_read"], forced["total_bytes"]);
    assert!(
        forced["bytes_added"].as_u64().unwrap() < 100_000,
        "{forced}"
    );

    // Each snapshot restores its own contents.
    let snaps = env.run(&["snapshots", "--json"]).ok().json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 4);
    assert_eq!(snaps[2]["parent"], snaps[1]["id"]);
    let first_id = snaps[0]["short_id"].as_str().unwrap();
    let out = env.dir.join("first");
    env.restore(&format!("{first_id}:{}/docs", src.display()), &out, &[])
        .ok();
    assert!(!out.join("new.txt").exists());
    assert_ne!(fs::read(out.join("letter.txt")).unwrap(), b"a new letter");
}

#[test]
fn duplicate_data_is_stored_once() {
    let env = Env::init("dedup");
    let src = env.dir.join("src");
    let data = Rng::new(3).noise(40 << 20);
    write(&src.join("a/original.bin"), &data);
    let first = env.backup(&[&src], &[]);
    assert!(first["bytes_added"].as_u64().unwrap() > 40 << 20);
    let size_before = du(&env.repo);

    write(&src.join("b/copy.bin"), &data);
    write(&src.join("c/copy-again.bin"), &data);
    let second = env.backup(&[&src], &[]);
    assert_eq!(second["files_new"], 2);
    let added = second["bytes_added"].as_u64().unwrap();
    assert!(
        added < 64 << 10,
        "a duplicated 40 MiB file added {added} bytes"
    );
    assert!(du(&env.repo) - size_before < 256 << 10);
}

#[test]
fn incompressible_data_is_stored_raw_and_text_is_compressed() {
    let env = Env::init("compress");
    let src = env.dir.join("src");
    write(&src.join("noise.dat"), &Rng::new(4).noise(20 << 20));
    let s = env.backup(&[&src], &[]);
    let raw = s["data_added_raw"].as_f64().unwrap();
    let added = s["bytes_added"].as_f64().unwrap();
    // Stored raw: only the per-blob seal and flag overhead on top.
    assert!(
        added / raw > 0.999 && added / raw < 1.001,
        "{added} / {raw}"
    );

    write(&src.join("ledger.txt"), &Rng::new(5).text(20 << 20));
    let s = env.backup(&[&src], &[]);
    let raw = s["data_added_raw"].as_f64().unwrap();
    let added = s["bytes_added"].as_f64().unwrap();
    assert!(added / raw < 0.5, "text compressed only to {added} / {raw}");

    // --compression 0 stores everything raw.
    write(&src.join("more.txt"), &Rng::new(6).text(4 << 20));
    let s = env.backup(&[&src], &["--compression", "0"]);
    let raw = s["data_added_raw"].as_f64().unwrap();
    assert!(s["bytes_added"].as_f64().unwrap() > raw);
    let out = env.dir.join("out");
    env.restore("latest", &out, &[]).ok();
    assert_same_tree(&src, &in_snapshot(&out, &src));
}

#[test]
fn nothing_is_stored_in_plaintext() {
    let env = Env::init("plaintext");
    let src = env.dir.join("src");
    let marker = "BACKAZON-PLAINTEXT-MARKER-7f3a9c";
    write(
        &src.join(format!("{marker}.txt")),
        marker.repeat(1000).as_bytes(),
    );
    write(
        &src.join("notes.txt"),
        format!("some text {marker} more text").as_bytes(),
    );
    fs::create_dir_all(src.join(format!("dir-{marker}"))).unwrap();
    env.backup(&[&src], &["--tag", marker, "--host", marker]);
    for root in [&env.repo, &env.cache] {
        for (path, bytes) in all_files(root) {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{} holds the marker in plaintext",
                path.display()
            );
            assert!(!path.to_string_lossy().contains(marker));
        }
    }
}

#[test]
fn selection_options_leave_out_what_they_say() {
    let env = Env::init("select");
    let src = env.dir.join("src");
    write(&src.join("keep/a.txt"), b"a");
    write(&src.join("keep/b.tmp"), b"tmp");
    write(&src.join("keep/big.iso"), &vec![7u8; 3 << 20]);
    write(&src.join("build/out.o"), b"o");
    write(&src.join("nobackup-here/.nobackup"), b"");
    write(&src.join("nobackup-here/x"), b"x");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# cache",
    );
    write(&src.join("cache/blob"), b"c");
    write(&src.join("fake-cache/CACHEDIR.TAG"), b"not a real tag");
    write(&src.join("logs/x.log"), b"log");
    let exclude_file = env.dir.join("excludes");
    write(&exclude_file, b"# comment\n*.log\n\n");
    env.backup(
        &[&src],
        &[
            "--exclude",
            "*.tmp",
            "--exclude",
            &format!("{}/build", src.display()),
            "--exclude-file",
            exclude_file.to_str().unwrap(),
            "--exclude-if-present",
            ".nobackup",
            "--exclude-caches",
            "--exclude-larger-than",
            "1M",
            "--tag",
            "nightly",
            "--host",
            "office-pc",
        ],
    );
    let ls = env.run(&["ls", "latest"]).ok().stdout;
    let names: Vec<&str> = ls.lines().map(|l| l.rsplit('/').next().unwrap()).collect();
    for kept in ["a.txt", "fake-cache", "logs", "keep"] {
        assert!(names.contains(&kept), "{kept} missing from\n{ls}");
    }
    for gone in [
        "b.tmp",
        "big.iso",
        "build",
        "out.o",
        "nobackup-here",
        "cache",
        "blob",
        "x.log",
    ] {
        assert!(!names.contains(&gone), "{gone} should be excluded:\n{ls}");
    }
    let snaps = env.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps[0]["tags"][0], "nightly");
    assert_eq!(snaps[0]["hostname"], "office-pc");
    assert_eq!(snaps[0]["paths"][0], src.to_str().unwrap());
}

#[test]
fn ls_and_restore_filters() {
    let env = Env::init("filters");
    let src = env.dir.join("src");
    generate_tree(&src, 6, 1 << 20);
    env.backup(&[&src], &[]);

    let ls = env
        .run(&["ls", "--json", &format!("latest:{}/links", src.display())])
        .ok()
        .json();
    let items = ls.as_array().unwrap();
    assert_eq!(items.len(), 4, "{ls}");
    let rel = items.iter().find(|i| i["name"] == "relative").unwrap();
    assert_eq!(rel["type"], "symlink");
    assert_eq!(rel["target"], "../docs/letter.txt");

    let long = env.run(&["ls", "-l", "latest"]).ok().stdout;
    assert!(
        long.lines()
            .any(|l| l.starts_with("-rw-------") && l.ends_with("/perms/private")),
        "{long}"
    );

    let out = env.dir.join("only-txt");
    env.restore("latest", &out, &["--include", "*.txt", "--exclude", "many"])
        .ok();
    let files: Vec<_> = all_files(&out).into_iter().map(|(p, _)| p).collect();
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "txt")),
        "{files:?}"
    );
    assert!(files
        .iter()
        .all(|p| !p.to_string_lossy().contains("/many/")));
    assert!(files.iter().any(|p| p.ends_with("bottom.txt")));

    // A single file restores under its own name.
    let one = env.dir.join("one");
    env.restore(
        &format!("latest:{}/docs/letter.txt", src.display()),
        &one,
        &[],
    )
    .ok();
    assert_eq!(
        fs::read(one.join("letter.txt")).unwrap(),
        fs::read(src.join("docs/letter.txt")).unwrap()
    );
    assert_eq!(fs::read_dir(&one).unwrap().count(), 1);

    let missing = env.restore(&format!("latest:{}/nope", src.display()), &one, &[]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("not in this snapshot"),
        "{}",
        missing.stderr
    );
}

#[test]
fn several_paths_keep_their_places() {
    let env = Env::init("paths");
    let a = env.dir.join("home/alice/Documents");
    let b = env.dir.join("srv/QuickBooks");
    write(&a.join("cv.txt"), b"cv");
    write(&b.join("company.qbw"), b"books");
    env.backup(&[&a, &b], &[]);
    let out = env.dir.join("out");
    env.restore("latest", &out, &[]).ok();
    assert_same_tree(&a, &in_snapshot(&out, &a));
    assert_same_tree(&b, &in_snapshot(&out, &b));
    assert!(!in_snapshot(&out, &env.dir.join("home/alice"))
        .join("other")
        .exists());
}

/// Makes `tests/fixtures/repo-0.1.0` again with the binary in BACKAZON_OLD_BIN (built from
/// commit 7fac499). Run by hand: `BACKAZON_OLD_BIN=... cargo test --release -p
/// backazon-e2e --test round_trip make_fixture -- --ignored`.
#[test]
#[ignore]
fn make_fixture() {
    let old = std::env::var_os("BACKAZON_OLD_BIN").expect("BACKAZON_OLD_BIN");
    let src = std::path::Path::new(FIXTURE_SRC);
    let _ = fs::remove_dir_all(src);
    generate_fixture_tree(src);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repo-0.1.0");
    let _ = fs::remove_dir_all(&repo);
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&old)
            .args(args)
            .env("BACKAZON_REPOSITORY", &repo)
            .env("BACKAZON_PASSWORD", FIXTURE_PASSWORD)
            .arg("--no-cache")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["init"]);
    run(&["backup", "--host", "fixture", FIXTURE_SRC]);
    // Empty data folders are not kept by git; a repository works without them.
    for d in fs::read_dir(repo.join("data")).unwrap() {
        let d = d.unwrap().path();
        let _ = fs::remove_dir(d);
    }
}

#[test]
fn a_repository_written_by_0_1_0_restores_byte_for_byte() {
    let env = Env::new("fixture");
    copy_fixture_repo(&env);
    let with = |args: &[&str]| {
        let mut c = env.command();
        c.env("BACKAZON_PASSWORD", FIXTURE_PASSWORD).args(args);
        Run::from_output(&mut c)
    };
    let target = env.dir.join("restored");
    with(&[
        "restore",
        &format!("latest:{FIXTURE_SRC}"),
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    let expected = env.dir.join("expected");
    generate_fixture_tree(&expected);
    assert_same_tree(&expected, &target);
    with(&["check", "--read-data"]).ok();
    // A new backup into the old repository: both snapshots restore.
    let more = env.dir.join("more");
    write(&more.join("new.txt"), b"written by this version");
    with(&["backup", more.to_str().unwrap()]).ok();
    with(&["check", "--read-data"]).ok();
}

/// `--json` status lines of `--json` output (`message_type` "status"), in order.
fn status_lines(r: &Run) -> Vec<serde_json::Value> {
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "status")
        .collect()
}

#[test]
fn backup_restore_check_and_prune_report_how_far_they_are() {
    let mut env = Env::init("progress");
    // Status lines every 5 ms: even a short run writes several.
    env.extra_env
        .push(("BACKAZON_PROGRESS_FPS".into(), "200".into()));
    let src = env.dir.join("src");
    let mut rng = Rng::new(21);
    for i in 0..400 {
        write(&src.join(format!("d{}/f{i}", i % 7)), &rng.noise(200 << 10));
    }
    let whole = 400 * (200u64 << 10);
    let run = env.run(&["backup", "--json", src.to_str().unwrap()]).ok();
    let seen = status_lines(&run);
    assert!(!seen.is_empty(), "no status lines:\n{}", run.stdout);
    let counted = seen.iter().filter(|v| v.get("total_bytes").is_some());
    for v in counted {
        assert_eq!(v["total_bytes"], whole, "{v}");
        assert_eq!(v["total_files"], 400, "{v}");
    }

    // A restore counts what it will write ahead of the writers.
    let target = env.dir.join("out");
    let run = env.restore("latest", &target, &["--json"]).ok();
    let seen = status_lines(&run);
    let last = seen
        .last()
        .unwrap_or_else(|| panic!("no status lines:\n{}", run.stdout));
    assert!(seen.iter().any(|v| v["total_bytes"] == whole), "{seen:?}");
    assert!(last["percent_done"].as_f64().unwrap() > 0.0, "{last}");
    let fractions: Vec<f64> = seen
        .iter()
        .filter_map(|v| v["percent_done"].as_f64())
        .collect();
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert_eq!(run.json()["bytes"], whole);
    assert_same_tree(&src, &in_snapshot(&target, &src));
    // Run again onto the same files: those already there whole count as done.
    let again = env.restore("latest", &target, &["--json"]).ok();
    assert_eq!(again.json()["unchanged"], 400);
    for v in status_lines(&again)
        .iter()
        .filter(|v| v.get("total_bytes").is_some())
    {
        assert_eq!(v["total_bytes"], whole, "{v}");
    }

    // Check names its steps; reading the data has a whole in bytes.
    let run = env.run(&["check", "--read-data", "--json"]).ok();
    let seen = status_lines(&run);
    let reading: Vec<_> = seen
        .iter()
        .filter(|v| v["step"] == "reading all data")
        .collect();
    assert!(!reading.is_empty(), "{seen:?}");
    for v in &reading {
        assert_eq!(v["unit"], "bytes");
        assert!(v["total"].as_u64().unwrap() > whole / 2, "{v}");
        assert!(v["done"].as_u64() <= v["total"].as_u64(), "{v}");
    }
    assert_eq!(run.json()["errors"], serde_json::json!([]));

    // Prune, with half the data forgotten: its steps, then its one-line summary.
    for f in fs::read_dir(src.join("d0")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    env.backup(&[&src], &[]);
    env.run(&["forget", "--keep-last", "1"]).ok();
    let run = env.run(&["prune", "--json"]).ok();
    let seen = status_lines(&run);
    let numbers: Vec<u64> = seen
        .iter()
        .map(|v| v["step_number"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(!seen.is_empty(), "no status lines:\n{}", run.stdout);
    for v in &seen {
        let step = v["step"].as_str().unwrap();
        let unit = [
            ("starting", None),
            ("loading index", None),
            ("finding the data 1 snapshots use", Some("items")),
            ("copying the used data of 1 of", Some("bytes")),
            ("writing the new index", Some("items")),
            ("removing what interrupted writes left", None),
            ("removing ", Some("items")),
        ]
        .into_iter()
        .find(|(name, _)| step.starts_with(name))
        .unwrap_or_else(|| panic!("an unknown step: {v}"))
        .1;
        if let Some(unit) = unit {
            assert_eq!(v["unit"], unit, "{v}");
            assert!(v["done"].as_u64() <= v["total"].as_u64(), "{v}");
        }
    }
    let report = run.json();
    assert!(
        report["packs_unused"].as_u64().unwrap() + report["packs_repacked"].as_u64().unwrap() > 0,
        "{report}"
    );
    env.run(&["check", "--read-data"]).ok();
}
