//! The Windows build, `backazon.exe`, under Wine: the whole job on local folders (`C:\`
//! and `Z:\`) and on the Garage S3 server; snapshots crossing between Linux and Windows
//! byte for byte; names Windows cannot hold restored escaped and listed; a link beside a
//! folder of the same name on a folder that ignores case; paths over 260 characters; a
//! file held open without sharing; the jobs file and state in the user's AppData; the
//! daemon running a due job and catching up a missed one; Ctrl-C; and the messages and
//! exit codes of a wrong password and a full disk, beside the Linux binary's; and `mount`
//! on a machine without WinFsp; the daemon as a Windows service; the web console making,
//! running and downloading from a job.
//!
//! What Wine cannot show (README, "Windows"): it lists a Unix symlink as its target,
//! its CreateSymbolicLinkW reports links it does not make, it has no Volume Shadow Copy
//! service, and it cannot hold a name with an unpaired surrogate.
#![cfg(target_os = "linux")]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use backazon_e2e::wine::{self, recorded, win};
use backazon_e2e::*;

/// A folder inside the Wine prefix's drive C:, removed when dropped, and its Windows path.
struct DriveC {
    _dir: TempDir,
    windows: String,
}

fn drive_c(name: &str) -> DriveC {
    let users = wine::wine().1.join("drive_c/users/root");
    let base = std::env::var_os("BACKAZON_TEST_TMP");
    std::env::set_var("BACKAZON_TEST_TMP", &users);
    let dir = TempDir::new(name);
    match base {
        Some(b) => std::env::set_var("BACKAZON_TEST_TMP", b),
        None => std::env::remove_var("BACKAZON_TEST_TMP"),
    }
    let rel = dir
        .path()
        .strip_prefix(&users)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let windows = format!(r"C:\users\root\{rel}");
    DriveC { _dir: dir, windows }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn the_exe_does_the_whole_job_on_drive_c_and_z() {
    let env = Env::new("win-local");
    let src = env.dir.join("src");
    generate_portable_tree(&src, 11);

    // A repository on C: (inside the prefix), found through BACKAZON_REPOSITORY.
    let c = drive_c("win-repo");
    let on_c = |args: &[&str]| {
        let mut cmd = env.wine_command();
        cmd.env("BACKAZON_REPOSITORY", format!(r"{}\repo", c.windows))
            .args(args);
        Run::from_output(&mut cmd)
    };
    on_c(&["init"]).ok();
    let s = on_c(&["backup", "--json", &win(&src)]).ok().json();
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(
        s["files_new"].as_u64().unwrap(),
        s["total_files"].as_u64().unwrap()
    );
    let snaps = on_c(&["snapshots", "--json"]).ok().json();
    assert_eq!(
        snaps[0]["paths"][0],
        recorded(&src),
        "paths as restic records them"
    );
    let ls = on_c(&["ls", &format!("latest:{}", win(&src))]).ok().stdout;
    assert!(ls.contains("/Documents/QuickBooks/company.qbw"), "{ls}");

    let out = env.dir.join("out-c");
    let r = on_c(&["restore", "latest", "--target", &win(&out)]).ok();
    assert!(r.stdout.contains("restored snapshot"), "{}", r.stdout);
    let restored = out.join("Z").join(src.strip_prefix("/").unwrap());
    assert_same_portable_tree(&src, &restored);
    assert_diff_clean(&src, &restored);
    // A folder of the snapshot alone, given as a Windows path.
    let part = env.dir.join("out-part");
    on_c(&[
        "restore",
        &format!("latest:{}\\Documents", win(&src)),
        "--target",
        &win(&part),
    ])
    .ok();
    assert_diff_clean(&src.join("Documents"), &part);

    let again = on_c(&["backup", "--json", &win(&src)]).ok().json();
    assert_eq!(again["files_unchanged"], again["total_files"], "{again}");
    assert_eq!(again["bytes_read"], 0);
    on_c(&["check", "--read-data"]).ok();

    // Passwords: add one, change the one in use, the old one stops working.
    let pw2 = env.dir.join("pw2");
    fs::write(&pw2, "second password\n").unwrap();
    on_c(&["key", "add", "--new-password-file", &win(&pw2)]).ok();
    let keys = on_c(&["key", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let pw3 = env.dir.join("pw3");
    fs::write(&pw3, "third password\n").unwrap();
    on_c(&["key", "passwd", "--new-password-file", &win(&pw3)]).ok();
    let old = on_c(&["snapshots"]);
    assert_eq!(old.code, 1, "{}", old.stderr);
    assert!(old.stderr.contains("wrong password"), "{}", old.stderr);
    let with = |pw: &Path, args: &[&str]| {
        let mut cmd = env.wine_command();
        cmd.env("BACKAZON_REPOSITORY", format!(r"{}\repo", c.windows))
            .env_remove("BACKAZON_PASSWORD")
            .env("BACKAZON_PASSWORD_FILE", win(pw))
            .args(args);
        Run::from_output(&mut cmd)
    };
    with(&pw2, &["snapshots"]).ok();
    with(&pw3, &["forget", "--keep-last", "1", "--prune"]).ok();
    let left = with(&pw3, &["snapshots", "--json"]).ok().json();
    assert_eq!(left.as_array().unwrap().len(), 1);
    with(&pw3, &["check", "--read-data"]).ok();

    // A repository on Z: with a replica beside it.
    let replica = env.dir.join("replica");
    let mut cmd = env.wine_command();
    cmd.env("BACKAZON_REPLICA", win(&replica));
    Run::from_output(cmd.arg("init")).ok();
    let mut cmd = env.wine_command();
    cmd.env("BACKAZON_REPLICA", win(&replica));
    Run::from_output(cmd.args(["backup", &win(&src)])).ok();
    let mut cmd = env.wine_command();
    cmd.env("BACKAZON_REPLICA", win(&replica));
    Run::from_output(cmd.args(["replica", "check"])).ok();
    // The replica alone restores everything.
    let mut cmd = env.wine_command();
    cmd.env("BACKAZON_REPOSITORY", win(&replica));
    let out = env.dir.join("out-replica");
    Run::from_output(cmd.args(["restore", "latest", "--target", &win(&out)])).ok();
    assert_same_portable_tree(&src, &out.join("Z").join(src.strip_prefix("/").unwrap()));
}

#[test]
fn the_exe_does_the_whole_job_on_s3() {
    let env = Env::new_s3("win-s3");
    let src = env.dir.join("src");
    generate_portable_tree(&src, 12);
    env.wine(&["init"]).ok();
    let s = env.wine(&["backup", "--json", &win(&src)]).ok().json();
    assert!(s["requests"]["puts"].as_u64().unwrap() > 0, "{s}");
    let out = env.dir.join("out");
    env.wine(&["restore", "latest", "--target", &win(&out)])
        .ok();
    assert_same_portable_tree(&src, &out.join("Z").join(src.strip_prefix("/").unwrap()));
    env.wine(&["check", "--read-data"]).ok();
    env.wine(&["forget", "--keep-last", "1", "--prune"]).ok();
    // The Linux binary reads what the Windows one wrote, and the other way round.
    env.run(&["check", "--read-data"]).ok();
    let linux = env.dir.join("linux-src");
    generate_portable_tree(&linux, 13);
    env.backup(&[&linux], &[]);
    let out = env.dir.join("out-linux");
    env.wine(&["restore", "latest", "--target", &win(&out)])
        .ok();
    assert_same_portable_tree(&linux, &out.join(linux.strip_prefix("/").unwrap()));
}

#[test]
fn snapshots_cross_between_linux_and_windows_byte_for_byte() {
    let env = Env::init("win-cross");
    let src = env.dir.join("src");
    generate_portable_tree(&src, 14);

    // Made on Linux, restored on Windows.
    env.backup(&[&src], &[]);
    let on_windows = env.dir.join("on-windows");
    let spec = format!("latest:{}", src.display());
    let r = env
        .wine(&["restore", &spec, "--target", &win(&on_windows)])
        .ok();
    assert!(!r.stderr.contains("note:"), "nothing renamed: {}", r.stderr);
    assert_same_portable_tree(&src, &on_windows);

    // Made on Windows, restored on Linux.
    let s = env.wine(&["backup", "--json", &win(&src)]).ok().json();
    assert_eq!(s["errors"], 0);
    let on_linux = env.dir.join("on-linux");
    let id = s["snapshot_id"].as_str().unwrap();
    env.restore(&format!("{id}:{}", recorded(&src)), &on_linux, &[])
        .ok();
    assert_same_portable_tree(&src, &on_linux);
    assert_diff_clean(&src, &on_linux);
    // The Windows snapshot's nodes hold attributes and creation times; Linux keeps
    // modes from them (read-only files have no write bit).
    let ls = env
        .run(&["ls", "--json", &format!("{id}:{}/perms", recorded(&src))])
        .ok()
        .json();
    let ro = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "readonly.txt")
        .unwrap();
    assert_eq!(ro["mode"], 0o444, "{ro}");
}

#[test]
fn names_windows_cannot_hold_are_restored_escaped_and_listed() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::init("win-names");
    let src = env.dir.join("src");
    let names: [(&[u8], &str); 13] = [
        (b"a:b", "a：b"),
        (b"CON", "CON_"),
        (b"aux.txt", "aux_.txt"),
        (b"nul.tar.gz", "nul_.tar.gz"),
        (b"trailing.", "trailing．"),
        (b"trailing ", "trailing␠"),
        (b"what?", "what？"),
        (b"star*", "star＊"),
        (b"<angle>", "＜angle＞"),
        (b"pipe|quote\"", "pipe｜quote＂"),
        (b"back\\slash", "back＼slash"),
        (b"caf\xe9.txt", "caf%E9.txt"),
        (b"readme.txt", "readme (2).txt"),
    ];
    for (i, (name, _)) in names.iter().enumerate() {
        write(
            &src.join(std::ffi::OsStr::from_bytes(name)),
            format!("entry {i}").as_bytes(),
        );
    }
    write(
        &src.join("README.txt"),
        b"the first of two names differing in case",
    );
    write(&src.join("sub:dir/inner.txt"), b"inside a renamed folder");
    let fifo = std::ffi::CString::new(src.join("a-fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path and mode.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    env.backup(&[&src], &[]);

    let outer = env.dir.join("outer");
    let target = outer.join("target");
    let spec = format!("latest:{}", src.display());
    let mut cmd = env.wine_command();
    let r = Run::from_output(cmd.args(["restore", "--json", &spec, "--target", &win(&target)]));
    assert_eq!(r.code, 0, "nothing fails: {}", r.stderr);
    let summary = r.json();
    for (i, (name, escaped)) in names.iter().enumerate() {
        let got = fs::read(target.join(escaped))
            .unwrap_or_else(|e| panic!("{escaped} ({:?}): {e}", String::from_utf8_lossy(name)));
        assert_eq!(got, format!("entry {i}").as_bytes(), "{escaped}");
    }
    assert_eq!(
        fs::read(target.join("README.txt")).unwrap(),
        b"the first of two names differing in case"
    );
    assert_eq!(
        fs::read(target.join("sub：dir/inner.txt")).unwrap(),
        b"inside a renamed folder"
    );
    let renamed = summary["renamed"].as_array().unwrap();
    assert_eq!(renamed.len(), names.len() + 1, "{summary}");
    let listed = |path: &str| {
        renamed
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(path))
            .unwrap_or_else(|| panic!("{path} not listed: {summary}"))
            .clone()
    };
    assert_eq!(listed("/a:b")["reason"], "not_valid_here");
    assert_eq!(listed("/readme.txt")["reason"], "name_taken");
    assert!(listed("/sub:dir")["restored_as"]
        .as_str()
        .unwrap()
        .ends_with("sub：dir"));
    let skipped = summary["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{summary}");
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("/a-fifo"));
    assert!(skipped[0]["reason"]
        .as_str()
        .unwrap()
        .contains("only on Unix"));
    // Nothing dropped, nothing outside the target.
    assert_eq!(fs::read_dir(&target).unwrap().count(), names.len() + 2);
    assert_eq!(fs::read_dir(&outer).unwrap().count(), 1);
    // Without --json the notes say the same.
    let plain = env
        .wine(&["restore", &spec, "--target", &win(&env.dir.join("again"))])
        .ok();
    assert!(
        plain.stderr.contains("/a:b restored as ") && plain.stderr.contains("a：b"),
        "{}",
        plain.stderr
    );
    assert!(
        plain.stderr.contains("/a-fifo not restored"),
        "{}",
        plain.stderr
    );
}

/// A crafted snapshot: folder `A` with a file, and beside it `a`, a link to a folder
/// outside the target. On a folder that ignores case they are one entry: a restore that
/// followed the link would write `A`'s file, and its folder's times, out there.
fn link_beside_a_folder(env: &Env, outside: &Path) {
    let repo = env.open();
    craft_snapshot(
        &repo,
        vec![
            Crafted::dir(b"A", vec![Crafted::file(b"inside.txt", b"stays inside")]),
            Crafted::link(b"a", outside.as_os_str().as_encoded_bytes()),
            Crafted::file(b"b.txt", b"file b"),
        ],
    );
}

#[test]
fn a_link_beside_a_folder_of_the_same_name_never_leads_the_restore_out() {
    let env = Env::init("win-case-link");
    let outside = env.dir.join("somewhere-else");
    fs::create_dir_all(&outside).unwrap();
    link_beside_a_folder(&env, &outside);

    // Wine's view of a folder ignores case, as NTFS does.
    let target = env.dir.join("target");
    let r = env.wine(&["restore", "--json", "latest", "--target", &win(&target)]);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside: {}",
        r.stderr
    );
    assert_eq!(
        fs::read(target.join("A/inside.txt")).unwrap(),
        b"stays inside"
    );
    assert_eq!(fs::read(target.join("b.txt")).unwrap(), b"file b");
    // The link gets its own name; Wine then cannot make it (and says so).
    assert!(
        r.stderr.contains("/a: symlink not restored"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Wine cannot make links"), "{}", r.stderr);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["renamed"][0]["path"], "/a", "{s}");
    assert!(s["renamed"][0]["restored_as"]
        .as_str()
        .unwrap()
        .ends_with("a (2)"));

    // Linux, on a folder that tells case apart: both as they are, the link a link.
    let linux = env.dir.join("linux");
    env.restore("latest", &linux, &[]).ok();
    assert_eq!(fs::read_link(linux.join("a")).unwrap(), outside);
    assert_eq!(
        fs::read(linux.join("A/inside.txt")).unwrap(),
        b"stays inside"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

/// An NTFS volume that ignores case as Windows does (ntfs-3g's `ignore_case`), mounted
/// through FUSE for the test; unmounted when dropped.
struct Ntfs(PathBuf);

impl Ntfs {
    fn mount(env: &Env) -> Ntfs {
        let image = env.dir.join("ntfs.img");
        let mnt = env.dir.join("ntfs");
        fs::create_dir_all(&mnt).unwrap();
        let ok = |c: &mut std::process::Command| {
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ok(std::process::Command::new("truncate")
            .arg("-s")
            .arg("16M")
            .arg(&image));
        ok(std::process::Command::new("mkntfs")
            .args(["-q", "-F", "-f"])
            .arg(&image));
        ok(std::process::Command::new("lowntfs-3g")
            .args(["-o", "ignore_case"])
            .arg(&image)
            .arg(&mnt));
        Ntfs(mnt)
    }
}

impl Drop for Ntfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn linux_restores_onto_a_folder_that_ignores_case_without_following_or_losing_anything() {
    let env = Env::init("ntfs-case");
    let outside = env.dir.join("somewhere-else");
    fs::create_dir_all(&outside).unwrap();
    link_beside_a_folder(&env, &outside);
    let ntfs = Ntfs::mount(&env);
    let target = ntfs.0.join("target");
    let r = env.restore("latest", &target, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside the target"
    );
    assert_eq!(
        fs::read(target.join("A/inside.txt")).unwrap(),
        b"stays inside"
    );
    // The link is there, under its own name, and still a link.
    assert_eq!(fs::read_link(target.join("a (2)")).unwrap(), outside);
    let s = r.json();
    assert_eq!(s["renamed"][0]["reason"], "name_taken", "{s}");

    // Files and folders whose names differ only in case: each kept, none replaced.
    let env = Env::init("ntfs-twins");
    let repo = env.open();
    craft_snapshot(
        &repo,
        vec![
            Crafted::dir(
                b"Docs",
                vec![Crafted::file(b"inside.txt", b"in the folder")],
            ),
            Crafted::file(b"README", b"upper"),
            Crafted::file(b"docs", b"a file named like the folder"),
            Crafted::file(b"readme", b"lower"),
        ],
    );
    drop(repo);
    let ntfs = Ntfs::mount(&env);
    let r = env.restore("latest", &ntfs.0, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut names: Vec<_> = fs::read_dir(&ntfs.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('$') && n != "System Volume Information")
        .collect();
    names.sort();
    // lowntfs-3g's ignore_case lists every name in lower case.
    assert_eq!(names, ["docs", "docs (2)", "readme", "readme (2)"]);
    assert_eq!(fs::read(ntfs.0.join("README")).unwrap(), b"upper");
    assert_eq!(
        fs::read(ntfs.0.join("Docs/inside.txt")).unwrap(),
        b"in the folder"
    );
    assert_eq!(
        fs::read(ntfs.0.join("docs (2)")).unwrap(),
        b"a file named like the folder"
    );
    assert_eq!(fs::read(ntfs.0.join("readme (2)")).unwrap(), b"lower");
    assert_eq!(r.json()["renamed"].as_array().unwrap().len(), 2);
}

#[test]
fn paths_over_260_characters_back_up_and_restore() {
    let env = Env::init("win-long");
    let src = env.dir.join("src");
    let mut deep = src.clone();
    for i in 0..12 {
        deep = deep.join(format!("a folder with a long name, number {i:02}"));
    }
    let file = deep.join("a file at the bottom of it all.txt");
    write(&file, b"far down");
    assert!(win(&file).len() > 400, "{}", win(&file).len());
    env.wine(&["backup", &win(&src)]).ok();
    let out = env.dir.join("out");
    env.wine(&[
        "restore",
        &format!("latest:{}", win(&src)),
        "--target",
        &win(&out),
    ])
    .ok();
    assert_eq!(
        fs::read(out.join(file.strip_prefix(&src).unwrap())).unwrap(),
        b"far down"
    );
    env.wine(&["check", "--read-data"]).ok();
}

/// `bz-hold-open.exe FILE`: FILE held open without sharing until dropped.
struct HeldOpen(Child);

impl HeldOpen {
    fn new(file: &Path) -> HeldOpen {
        let helper = wine::exe().with_file_name("bz-hold-open.exe");
        let mut child = wine::command(&helper)
            .arg(win(file))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        HeldOpen(child)
    }
}

impl Drop for HeldOpen {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn a_file_held_open_without_sharing_is_skipped_and_counted() {
    let env = Env::init("win-held");
    let src = env.dir.join("src");
    write(&src.join("outlook.pst"), b"held by another program");
    write(&src.join("letter.txt"), b"free to read");
    let held = HeldOpen::new(&src.join("outlook.pst"));
    let r = env.wine(&["backup", "--json", &win(&src)]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(r"src\outlook.pst"), "{}", r.stderr);
    assert!(r.stderr.contains("(skipped)"), "{}", r.stderr);
    assert_eq!(r.json()["errors"], 1);
    let ls = env.wine(&["ls", "latest"]).ok().stdout;
    assert!(
        ls.contains("letter.txt") && !ls.contains("outlook.pst"),
        "{ls}"
    );
    // A shadow copy would read it; Wine has no VSS service, and says so clearly.
    let vss = env.wine(&["backup", "--vss", &win(&src)]);
    assert_eq!(vss.code, 1, "{}", vss.stderr);
    assert!(vss.stderr.contains("Volume Shadow Copy"), "{}", vss.stderr);
    drop(held);
    let r = env.wine(&["backup", "--json", &win(&src)]).ok();
    assert_eq!(r.json()["errors"], 0);
}

#[test]
fn the_jobs_file_and_state_live_in_appdata() {
    let env = Env::init("win-appdata");
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"job data");
    let pw = env.dir.join("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let job = format!("bz-test-{}", std::process::id());
    let r = env.wine(&[
        "job",
        "add",
        &job,
        "--path",
        &win(&src),
        "--password-file",
        &win(&pw),
        "--keep-last",
        "3",
    ]);
    let jobs_file = wine::appdata().join("backazon/jobs.toml");
    struct RemoveJob<'a>(&'a Env, String);
    impl Drop for RemoveJob<'_> {
        fn drop(&mut self) {
            let _ = self.0.wine(&["job", "remove", &self.1]);
        }
    }
    let _cleanup = RemoveJob(&env, job.clone());
    r.ok();
    let text = fs::read_to_string(&jobs_file).unwrap();
    assert!(text.contains(&format!("[jobs.{job}]")), "{text}");
    env.wine(&["job", "run", &job]).ok();
    let state = wine::local_appdata().join("backazon/state");
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join(format!("{job}.json"))).unwrap()).unwrap();
    assert_eq!(st["last_run"]["result"], "success", "{st}");
    let log = fs::read_to_string(state.join("backazon.log")).unwrap();
    assert!(log.contains(&format!("job {job}")), "{log}");
    let status = env.wine(&["status", "--json"]).ok().json();
    assert!(status["config"]
        .as_str()
        .unwrap()
        .ends_with(r"AppData\Roaming\backazon\jobs.toml"));
}

#[test]
fn the_console_makes_runs_lists_and_downloads_under_wine() {
    use backazon_e2e::http::http;
    let env = Env::init("win-console");
    let src = env.dir.join("src");
    let data = Rng::new(7).noise(1_500_000);
    write(&src.join("docs/report.bin"), &data);
    let pw = env.dir.join("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let (config, state) = (env.dir.join("jobs.toml"), env.dir.join("state"));
    let mut ui = env
        .wine_command()
        .env_remove("BACKAZON_PASSWORD")
        .args(["--config", &win(&config), "--state-dir", &win(&state)])
        .args(["ui", "--no-open", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = BufReader::new(ui.stdout.take().unwrap());
    let _ui = Stop(ui);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let rest = first
        .trim()
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{first}"));
    let (host, token) = rest.split_once("/?token=").unwrap();
    let auth = [format!("Authorization: Bearer {token}")];
    assert_eq!(http(host, "GET", "/api/status", &[], "").status, 401);

    // A job made through the API, with Windows paths, in the jobs file the .exe reads.
    let job = serde_json::json!({
        "name": "docs",
        "job": { "repository": win(&env.repo), "paths": [win(&src)], "password_file": win(&pw) },
    });
    let r = http(host, "POST", "/api/jobs", &auth, &job.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        http(host, "POST", "/api/jobs/docs/run", &auth, "").status,
        202
    );
    wait_until("the console's run", Duration::from_secs(90), || {
        let r = http(host, "GET", "/api/status", &auth, "");
        r.body.contains("\"state\":\"ok\"")
    });
    let r = http(host, "GET", "/api/jobs/docs/snapshots", &auth, "");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let snap = v["snapshots"][0]["short"].as_str().unwrap().to_string();
    // The file as the snapshot records it (`/C/...` on Windows), byte for byte.
    let path = format!("{}/docs/report.bin", recorded(&src));
    let r = http(
        host,
        "GET",
        &format!("/api/jobs/docs/download?snapshot={snap}&path={path}"),
        &auth,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.bytes == data, "the download differs from the file");

    // The folder picker starts at the home folder and the drives, and opens one.
    let get = |path: &str| {
        let r = http(host, "GET", path, &auth, "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    let roots = get("/api/folders");
    let names: Vec<&str> = roots["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"C:\\") && names.contains(&"Z:\\"),
        "{names:?}"
    );
    let inside = get(&format!("/api/folders?path={}", enc(&win(&src))));
    assert_eq!(inside["folders"][0]["name"], "docs", "{inside}");

    // A restore to a Windows path and a check, as tasks with their progress.
    let target = env.dir.join("restored");
    let form = serde_json::json!({
        "snapshot": snap, "path": format!("{}/docs", recorded(&src)), "target": win(&target),
    });
    let r = http(
        host,
        "POST",
        "/api/jobs/docs/restore",
        &auth,
        &form.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(
        host,
        "POST",
        "/api/jobs/docs/check",
        &auth,
        r#"{"read_data":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut tasks = serde_json::Value::Null;
    wait_until("the restore and the check", Duration::from_secs(90), || {
        tasks = get("/api/status")["tasks"].clone();
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["finished"] == true)
    });
    for t in tasks.as_array().unwrap() {
        assert!(t["error"].is_null(), "{t}");
        assert_eq!(t["done"], t["total"], "{t}");
    }
    assert!(fs::read(target.join("report.bin")).unwrap() == data);

    // Wine has no WinFsp: the mount says what to install, beside the field.
    let r = http(
        host,
        "POST",
        "/api/jobs/docs/mount",
        &auth,
        r#"{"mountpoint":"B:"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("WinFsp") && r.body.contains("mountpoint"),
        "{}",
        r.body
    );
}

/// A query string's value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How many snapshots of job `name` the repository holds.
fn snapshots_of(env: &Env, name: &str) -> usize {
    let v = env.run(&["snapshots", "--json"]).ok().json();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["job"] == name)
        .count()
}

/// A jobs file with `often` (due every two seconds) and `nightly` (daily, whose last run
/// covered a slot three days ago: the computer was off since), and its state folder.
fn due_and_missed_jobs(env: &Env) -> (PathBuf, PathBuf) {
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"job data");
    let pw = env.dir.join("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let config = env.dir.join("jobs.toml");
    let state = env.dir.join("state");
    let job = |name: &str, schedule: &str| {
        format!(
            "[jobs.{name}]\nrepository = '{}'\npaths = ['{}']\nschedule = \"{schedule}\"\npassword_file = '{}'\n",
            win(&env.repo),
            win(&src),
            win(&pw)
        )
    };
    fs::write(
        &config,
        job("often", "*/2 * * * * *") + &job("nightly", "daily 03:00"),
    )
    .unwrap();
    fs::create_dir_all(&state).unwrap();
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72);
    fs::write(
        state.join("nightly.json"),
        format!("{{\"last_slot\": \"{long_ago}\"}}"),
    )
    .unwrap();
    (config, state)
}

#[test]
fn the_daemon_runs_a_due_job_and_catches_up_a_missed_one() {
    let env = Env::init("win-daemon");
    let (config, state) = due_and_missed_jobs(&env);
    let mut daemon = env
        .wine_command()
        .args([
            "--config",
            &win(&config),
            "--state-dir",
            &win(&state),
            "daemon",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let snapshots_of = |name: &str| snapshots_of(&env, name);
    let wait = Duration::from_secs(60);
    wait_until("a catch-up run of nightly", wait, || {
        snapshots_of("nightly") == 1
    });
    wait_until("two runs of often", wait, || snapshots_of("often") >= 2);
    let log = fs::read_to_string(state.join("backazon.log")).unwrap();
    assert!(log.contains("catch-up"), "{log}");
    // Ctrl-C stops it cleanly.
    signal(&daemon, libc::SIGINT);
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = fs::read_to_string(state.join("backazon.log")).unwrap();
    assert!(log.contains("daemon stopped"), "{log}");
    assert_eq!(snapshots_of("nightly"), 1, "the missed runs ran once");
}

#[test]
fn ctrl_c_ends_a_backup_with_130_and_the_next_run_completes() {
    let env = Env::init("win-ctrl-c");
    let src = env.dir.join("src");
    let mut rng = Rng::new(5);
    for i in 0..12 {
        write(&src.join(format!("big{i:02}.bin")), &rng.noise(40 << 20));
    }
    let mut child = env
        .wine_command()
        .args(["backup", &win(&src)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once some packs are being written.
    wait_until("the first packs", Duration::from_secs(60), || {
        all_files(&env.repo.join("data")).len() >= 2
    });
    signal(&child, libc::SIGINT);
    let out = child.wait().unwrap();
    assert_eq!(out.code(), Some(130));
    let s = env.wine(&["backup", "--json", &win(&src)]).ok().json();
    assert_eq!(s["errors"], 0);
    env.wine(&["check", "--read-data"]).ok();
    let out = env.dir.join("out");
    env.wine(&["restore", "latest", "--target", &win(&out)])
        .ok();
    assert_diff_clean(&src, &out.join("Z").join(src.strip_prefix("/").unwrap()));
}

#[test]
fn a_wrong_password_and_a_full_disk_end_as_on_linux() {
    let env = Env::init("win-faults");
    let mut wrong = env.wine_command();
    wrong.env("BACKAZON_PASSWORD", "not it");
    let w = Run::from_output(wrong.arg("snapshots"));
    let mut wrong = env.command();
    wrong.env("BACKAZON_PASSWORD", "not it");
    let l = Run::from_output(wrong.arg("snapshots"));
    assert_eq!((w.code, l.code), (1, 1));
    assert_eq!(w.stderr.trim(), l.stderr.trim());
    assert_eq!(
        w.stderr.trim(),
        "error: wrong password or no key file matches"
    );
    let missing = env.wine(&["--repo", &win(&env.dir.join("nothing")), "snapshots"]);
    assert_eq!(missing.code, 10, "{}", missing.stderr);

    // A repository on a 24 MiB disk, and 40 MiB that does not compress.
    let small = env.dir.join("small");
    fs::create_dir_all(&small).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mount.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let src = env.dir.join("src");
    write(&src.join("noise.bin"), &Rng::new(3).noise(40 << 20));
    let on = |repo: &Path, windows: bool, args: &[&str]| {
        let mut c = if windows {
            env.wine_command()
        } else {
            env.command()
        };
        c.env(
            "BACKAZON_REPOSITORY",
            if windows {
                win(repo)
            } else {
                repo.display().to_string()
            },
        );
        Run::from_output(c.args(args))
    };
    for (windows, name) in [(true, "w"), (false, "l")] {
        let repo = small.join(name);
        on(&repo, windows, &["init"]).ok();
        let path = if windows {
            win(&src)
        } else {
            src.display().to_string()
        };
        let r = on(&repo, windows, &["backup", &path]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let err = r.stderr.lines().last().unwrap();
        assert!(err.starts_with("error: "), "{err}");
        let full = if windows {
            "(os error 112)"
        } else {
            "(os error 28)"
        };
        assert!(err.contains(full), "{err}");
        assert!(err.contains(name), "names the repository's file: {err}");
        // Room again for the other binary.
        fs::remove_dir_all(&repo).unwrap();
    }
}

#[test]
fn the_exe_reads_a_repository_written_by_0_1_0() {
    let env = Env::new("win-fixture");
    copy_fixture_repo(&env);
    let with = |args: &[&str]| {
        let mut c = env.wine_command();
        c.env("BACKAZON_PASSWORD", FIXTURE_PASSWORD).args(args);
        Run::from_output(&mut c)
    };
    with(&["check", "--read-data"]).ok();
    let target = env.dir.join("restored");
    with(&[
        "restore",
        &format!("latest:{FIXTURE_SRC}/Documents"),
        "--target",
        &win(&target),
    ])
    .ok();
    let expected = env.dir.join("expected");
    generate_fixture_tree(&expected);
    assert_diff_clean(&expected.join("Documents"), &target);
}

#[test]
fn mount_without_winfsp_says_what_to_install_before_asking_for_the_password() {
    // Wine has no WinFsp (its driver cannot run there): `mount` fails at once with
    // exit 1, says where to get WinFsp and what to do meanwhile, and neither asks for
    // the password nor opens the repository.
    let env = Env::init("win-mount");
    let mut c = env.wine_command();
    c.env_remove("BACKAZON_PASSWORD").args(["mount", "B:"]);
    let r = Run::from_output(&mut c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("WinFsp is not installed"), "{}", r.stderr);
    assert!(r.stderr.contains("https://winfsp.dev/rel/"), "{}", r.stderr);
    assert!(r.stderr.contains("backazon restore"), "{}", r.stderr);
    assert!(!r.stderr.contains("password"), "{}", r.stderr);
    // --network and `*` are understood the same way.
    let r = env.wine(&["mount", "*", "--network"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("WinFsp is not installed"), "{}", r.stderr);
}

#[test]
fn the_daemon_runs_as_a_windows_service_catches_up_and_is_removed() {
    // Wine's service manager is real enough for this: it registers the service, starts
    // backazon.exe as a service process, sends it Stop, and removes it. What it lacks
    // (delayed start, restart after a failure) `service install` reports as notes.
    let env = Env::init("win-service");
    let (config, state) = due_and_missed_jobs(&env);
    let (config_w, state_w) = (win(&config), win(&state));
    let svc = |args: &[&str]| {
        let mut all = vec![
            "--config",
            config_w.as_str(),
            "--state-dir",
            state_w.as_str(),
        ];
        all.extend_from_slice(args);
        env.wine(&all)
    };
    struct Uninstall<'a>(&'a dyn Fn(&[&str]) -> Run);
    impl Drop for Uninstall<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["service", "uninstall"]);
        }
    }
    let _cleanup = Uninstall(&svc);
    // An earlier run's service, if one was left: start from none.
    svc(&["service", "uninstall"]).ok();

    // The dry run prints what would be registered, and registers nothing.
    let dry = svc(&["service", "install", "--dry-run"]).ok().stdout;
    assert!(
        dry.contains("would register the Windows service Backazon"),
        "{dry}"
    );
    assert!(
        dry.contains("LocalSystem") && dry.contains("automatic"),
        "{dry}"
    );
    let command_line = dry
        .lines()
        .find_map(|l| l.trim().strip_prefix("command line:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        command_line.contains(&format!("--config {config_w}")),
        "{command_line}"
    );
    assert!(
        command_line.contains("service run --profile"),
        "{command_line}"
    );
    let status = || svc(&["service", "status", "--json"]).ok().json();
    assert_eq!(
        status()["installed"],
        false,
        "the dry run registered nothing"
    );

    // Installed: registered with exactly that command line, and running.
    let r = svc(&["service", "install"]).ok();
    assert!(
        r.stdout.contains("registered the Windows service Backazon"),
        "{}",
        r.stdout
    );
    let st = status();
    assert_eq!(st["installed"], true, "{st}");
    assert!(st["state"].as_str().unwrap().starts_with("running"), "{st}");
    assert_eq!(st["command_line"], command_line.as_str(), "{st}");
    assert_eq!(st["account"], "LocalSystem", "{st}");
    assert!(
        st["start"].as_str().unwrap().starts_with("automatic"),
        "{st}"
    );

    // It runs the due job and catches up the missed one, with nobody's console.
    let snapshots_of = |name: &str| snapshots_of(&env, name);
    let wait = Duration::from_secs(90);
    wait_until("a catch-up run of nightly", wait, || {
        snapshots_of("nightly") == 1
    });
    wait_until("two runs of often", wait, || snapshots_of("often") >= 2);
    let log = fs::read_to_string(state.join("backazon.log")).unwrap();
    assert!(log.contains("daemon started"), "{log}");
    assert!(log.contains("catch-up"), "{log}");

    // Uninstalled: stopped through the service manager, then gone.
    svc(&["service", "uninstall"]).ok();
    let log = fs::read_to_string(state.join("backazon.log")).unwrap();
    assert!(log.contains("daemon stopping (service stop)"), "{log}");
    assert!(log.contains("daemon stopped"), "{log}");
    assert_eq!(status()["installed"], false);
    let n = snapshots_of("often");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(snapshots_of("often"), n, "nothing runs once it is removed");
    assert_eq!(snapshots_of("nightly"), 1, "the missed runs ran once");

    // Started from a console, `service run` says what to run instead.
    let r = svc(&["service", "run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("backazon daemon"), "{}", r.stderr);
}
