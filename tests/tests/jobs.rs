//! Jobs, the daemon, forget and prune, through the real binary: a daemon process making
//! snapshots on a seconds schedule, catching up one missed run, reloading its jobs file,
//! surviving a broken job and SIGTERM mid-run; a job refused while it runs; forget keeping
//! what its rules say; prune shrinking the repository without losing a kept byte, also
//! when it races a backup and when it is killed with SIGKILL; a backup killed by the
//! system notified, a cancelled one not.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use backazon_e2e::*;

fn password_file(env: &Env) -> PathBuf {
    let p = env.dir.join("pw");
    fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    p
}

/// Snapshots of the repository (optionally only one job's), oldest first.
fn snapshots(env: &Env, job: Option<&str>) -> Vec<serde_json::Value> {
    let v = env.run(&["snapshots", "--json"]).ok().json();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| job.is_none_or(|j| s["job"] == j))
        .cloned()
        .collect()
}

fn state_dir(env: &Env) -> PathBuf {
    env.dir.join(".local/state/backazon")
}

fn jobs_file(env: &Env) -> PathBuf {
    env.dir.join(".config/backazon/jobs.toml")
}

fn job_state(env: &Env, job: &str) -> serde_json::Value {
    fs::read(state_dir(env).join(format!("{job}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn log(env: &Env) -> String {
    fs::read_to_string(state_dir(env).join("backazon.log")).unwrap_or_default()
}

/// `backazon daemon`, killed if a test ends while it still runs.
struct Daemon(Child);

impl Daemon {
    fn start(env: &Env) -> Daemon {
        let err = fs::File::create(env.dir.join("daemon.err")).unwrap();
        Daemon(
            env.command()
                .arg("daemon")
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap(),
        )
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn add_job(env: &Env, name: &str, src: &Path, schedule: &str, extra: &[&str]) {
    let pw = password_file(env);
    let mut args = vec![
        "--password-file",
        pw.to_str().unwrap(),
        "job",
        "add",
        name,
        "--path",
        src.to_str().unwrap(),
        "--schedule",
        schedule,
    ];
    args.extend_from_slice(extra);
    env.run(&args).ok();
}

#[test]
fn daemon_runs_due_jobs_reloads_its_file_and_survives_a_broken_job() {
    let env = Env::init("daemon");
    let src = env.dir.join("src");
    generate_tree(&src, 3, 1 << 20);
    add_job(
        &env,
        "docs",
        &src,
        "*/2 * * * * *",
        &["--keep-last", "3", "--prune-schedule", "*/3 * * * * *"],
    );
    // A job whose repository does not exist fails at every slot, and only itself.
    let pw = password_file(&env);
    let missing = env.dir.join("no-such-repo");
    env.run(&[
        "--repo",
        missing.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "job",
        "add",
        "broken",
        "--path",
        src.to_str().unwrap(),
        "--schedule",
        "*/2 * * * * *",
        "--no-check",
    ])
    .ok();

    let mut d = Daemon::start(&env);
    wait_until(
        "three snapshots by the daemon",
        Duration::from_secs(30),
        || snapshots(&env, Some("docs")).len() >= 3,
    );
    // (On a schedule, a repository that is not there is tried again later.)
    wait_until("the broken job's failure", Duration::from_secs(10), || {
        job_state(&env, "broken")["last_run"]["result"] == "retrying"
    });
    let err = job_state(&env, "broken")["last_run"]["error"].to_string();
    assert!(err.contains("no repository"), "{err}");
    // Retention ran after each success: never more than 3 of the job's snapshots.
    std::thread::sleep(Duration::from_secs(3));
    assert!(snapshots(&env, Some("docs")).len() <= 3);
    assert!(log(&env).contains("retention kept"), "{}", log(&env));
    // Prune runs on its own schedule (never beside the job's own backup).
    wait_until("a scheduled prune", Duration::from_secs(30), || {
        job_state(&env, "docs")["last_prune"]["result"] == "success"
    });

    // A job added to the file while the daemon runs is picked up without a restart.
    let other = env.dir.join("other");
    fs::create_dir_all(&other).unwrap();
    write(&other.join("f"), b"added later");
    add_job(&env, "later", &other, "*/2 * * * * *", &[]);
    wait_until(
        "the new job's first snapshot",
        Duration::from_secs(15),
        || !snapshots(&env, Some("later")).is_empty(),
    );
    // And a job removed from it stops.
    env.run(&["job", "remove", "docs"]).ok();
    std::thread::sleep(Duration::from_secs(1));
    let n = snapshots(&env, Some("docs")).len();
    let runs_before = log(&env).matches("job docs: backup started").count();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        log(&env).matches("job docs: backup started").count(),
        runs_before,
        "a removed job still ran"
    );
    assert_eq!(snapshots(&env, Some("docs")).len(), n);

    let status = env.run(&["status", "--json"]).ok().json();
    assert!(status["daemon"].is_string(), "{status}");
    assert!(d.terminate().success());
    let status = env.run(&["status"]).ok();
    assert!(
        status.stdout.contains("daemon: not running"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("later"), "{}", status.stdout);

    // The snapshots the daemon made restore byte for byte.
    let target = env.dir.join("restore");
    env.restore("latest", &target, &[]).ok();
    assert_diff_clean(&other, &in_snapshot(&target, &other));
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_repository_that_cannot_be_reached_is_tried_again_before_the_run_counts_as_failed() {
    let env = Env::new("retry");
    let src = env.dir.join("src");
    generate_tree(&src, 5, 1 << 16);
    let hook = listeners::Webhook::start();
    // "nas": its repository appears while the daemon waits to try again (a drive
    // mounted late, a server back up). "gone": never there.
    add_job(
        &env,
        "nas",
        &src,
        "*/30 * * * * *",
        &["--no-check", "--webhook", &hook.url],
    );
    let gone = env.dir.join("gone");
    let pw = password_file(&env);
    env.run(&[
        "--repo",
        gone.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "job",
        "add",
        "gone",
        "--path",
        src.to_str().unwrap(),
        "--schedule",
        "*/30 * * * * *",
        "--no-check",
        "--webhook",
        &hook.url,
    ])
    .ok();
    let mut text = fs::read_to_string(jobs_file(&env)).unwrap();
    text.push_str("\n[settings]\nretry_after = [\"4s\", \"4s\"]\n");
    fs::write(jobs_file(&env), text).unwrap();

    let mut d = Daemon::start(&env);
    wait_until("the first try's failure", Duration::from_secs(40), || {
        job_state(&env, "nas")["last_run"]["result"] == "retrying"
    });
    let first = job_state(&env, "nas")["last_run"].clone();
    assert!(first["retry_at"].is_string(), "{first}");
    env.run(&["init"]).ok();
    wait_until("the retry's success", Duration::from_secs(20), || {
        job_state(&env, "nas")["last_run"]["result"] == "success"
    });
    let ok = job_state(&env, "nas")["last_run"].clone();
    assert_eq!(ok["trigger"], "retry", "{ok}");
    assert_eq!(ok["attempt"], 2, "{ok}");
    assert_eq!(snapshots(&env, Some("nas")).len(), 1);

    wait_until("the other job's last try", Duration::from_secs(30), || {
        job_state(&env, "gone")["last_run"]["result"] == "failed"
    });
    let failed = job_state(&env, "gone")["last_run"].clone();
    assert_eq!(failed["attempt"], 3, "{failed}");
    let l = log(&env);
    assert!(
        l.contains("job gone: backup could not reach its repository (try 1 of 3)"),
        "{l}"
    );
    assert!(l.contains("(try 2 of 3)"), "{l}");
    // Told once, when it counted as failed; never about a try to be repeated.
    let hooks = hook.all();
    let told: Vec<_> = hooks
        .iter()
        .filter(|h| h.body.contains("\"job\":\"gone\""))
        .collect();
    assert_eq!(told.len(), 1, "{hooks:?}");
    assert!(
        told[0].body.contains("\"event\":\"failure\""),
        "{}",
        told[0].body
    );
    assert!(
        !hooks.iter().any(|h| h.body.contains("\"job\":\"nas\"")),
        "{hooks:?}"
    );
    assert!(d.terminate().success());
}

#[test]
fn daemon_catches_up_one_missed_run() {
    let env = Env::init("catchup");
    let src = env.dir.join("src");
    generate_tree(&src, 4, 0);
    // Hourly at a minute half an hour away: no slot falls within the test.
    let minute = (jiff_minute_now() + 30) % 60;
    add_job(&env, "docs", &src, &format!("0 {minute} * * * *"), &[]);

    // A first daemon sees the job and runs nothing (no slot has passed).
    let mut d = Daemon::start(&env);
    wait_until(
        "the daemon to record the job",
        Duration::from_secs(10),
        || job_state(&env, "docs")["last_slot"].is_string(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.terminate().success());
    assert_eq!(snapshots(&env, None).len(), 0);

    // The machine is "off" for five hours: five slots are missed.
    let path = state_dir(&env).join("docs.json");
    let mut st: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let five_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 5 * 3600;
    st["last_slot"] = rfc3339(five_hours_ago).into();
    fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();

    let mut d = Daemon::start(&env);
    wait_until("the catch-up run", Duration::from_secs(15), || {
        snapshots(&env, None).len() == 1
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        snapshots(&env, None).len(),
        1,
        "missed slots ran more than once"
    );
    assert_eq!(job_state(&env, "docs")["last_run"]["trigger"], "catch-up");
    assert!(d.terminate().success());
    // Restarted again, nothing is due: the catch-up covered every missed slot.
    let mut d = Daemon::start(&env);
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.terminate().success());
    assert_eq!(snapshots(&env, None).len(), 1);
}

#[test]
fn a_daemon_killed_mid_job_runs_that_job_again_when_it_starts() {
    let env = Env::init("resume");
    let src = env.dir.join("src");
    generate_tree(&src, 4, 0);
    let pw = password_file(&env);
    // Hourly at a minute half an hour away, and a password command that takes three
    // seconds: the run is still going when the daemon is killed.
    let minute = (jiff_minute_now() + 30) % 60;
    let cmd = format!("sleep 3; cat {}", pw.display());
    let schedule = format!("0 {minute} * * * *");
    let args = ["--password-command", &cmd, "job", "add", "docs", "--path"];
    let mut args = args.to_vec();
    args.extend([src.to_str().unwrap(), "--schedule", &schedule, "--no-check"]);
    env.run(&args).ok();
    // A slot an hour ago was missed: the first daemon starts a catch-up run at once.
    let mut d = Daemon::start(&env);
    wait_until(
        "the daemon to record the job",
        Duration::from_secs(10),
        || job_state(&env, "docs")["last_slot"].is_string(),
    );
    assert!(d.terminate().success());
    let path = state_dir(&env).join("docs.json");
    let mut st: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    st["last_slot"] = rfc3339(an_hour_ago).into();
    fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    let mut d = Daemon::start(&env);
    wait_until("the catch-up run", Duration::from_secs(10), || {
        job_state(&env, "docs")["last_run"]["result"] == "running"
    });
    // The machine stops: the daemon and its child die at once, nothing is recorded.
    let child = job_state(&env, "docs")["last_run"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling our own child and its child.
    unsafe {
        libc::kill(d.0.id() as i32, libc::SIGKILL);
        libc::kill(child, libc::SIGKILL);
    }
    d.0.wait().unwrap();
    assert_eq!(snapshots(&env, None).len(), 0);
    assert_eq!(job_state(&env, "docs")["last_run"]["result"], "running");

    // Started again, the daemon runs the job now, though its next slot is far away.
    let mut d = Daemon::start(&env);
    wait_until("the resumed run", Duration::from_secs(20), || {
        snapshots(&env, None).len() == 1
    });
    wait_until(
        "the resumed run to be recorded",
        Duration::from_secs(10),
        || job_state(&env, "docs")["last_run"]["result"] == "success",
    );
    assert_eq!(job_state(&env, "docs")["last_run"]["trigger"], "resume");
    assert!(
        log(&env).contains("did not finish; it runs again now"),
        "{}",
        log(&env)
    );
    assert!(d.terminate().success());
    // And once only: started again, nothing is due.
    let mut d = Daemon::start(&env);
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.terminate().success());
    assert_eq!(snapshots(&env, None).len(), 1);
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_backup_killed_by_the_system_is_notified_and_a_cancel_is_not() {
    let env = Env::init("oomkill");
    let src = env.dir.join("src");
    generate_tree(&src, 3, 0);
    let hook = listeners::Webhook::start();
    // Every 2 seconds, with a password command taking 3: each run is still going when
    // it is signalled.
    let cmd = format!("sleep 3; cat {}", password_file(&env).display());
    let args = ["--password-command", &cmd, "job", "add", "docs", "--path"];
    let mut args = args.to_vec();
    args.extend([src.to_str().unwrap(), "--schedule", "*/2 * * * * *"]);
    args.extend(["--no-check", "--webhook", &hook.url]);
    env.run(&args).ok();
    let mut d = Daemon::start(&env);
    let running = |not: i64| {
        let mut pid = 0;
        wait_until("a run", Duration::from_secs(20), || {
            let r = &job_state(&env, "docs")["last_run"];
            pid = r["pid"].as_i64().unwrap_or(0);
            r["result"] == "running" && pid != not
        });
        pid
    };
    let interrupted = |pid: i64| {
        wait_until("the run recorded", Duration::from_secs(10), || {
            let r = &job_state(&env, "docs")["last_run"];
            r["pid"] == pid && r["result"] == "interrupted"
        });
        job_state(&env, "docs")["last_run"].clone()
    };

    // Killed as the out-of-memory killer kills: a failure, told by the webhook.
    let first = running(0);
    // SAFETY: signalling the daemon's child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let rec = interrupted(first);
    assert!(
        rec["error"].as_str().unwrap().contains("signal 9 (SIGKILL"),
        "{rec}"
    );
    let h = hook
        .wait_for(
            |h| h.body.contains("\"job\":\"docs\""),
            Duration::from_secs(10),
        )
        .expect("no webhook for the killed run");
    let body: serde_json::Value = serde_json::from_str(&h.body).unwrap();
    assert_eq!(body["event"], "failure", "{body}");
    assert_eq!(body["result"], "interrupted", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("SIGKILL"),
        "{body}"
    );

    // Stopped with SIGTERM, as the console's Cancel and a service stop do: recorded,
    // not told.
    let second = running(first);
    // SAFETY: as above.
    unsafe { libc::kill(second as i32, libc::SIGTERM) };
    let rec = interrupted(second);
    assert!(rec["error"].as_str().unwrap().contains("SIGTERM"), "{rec}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.all().len(), 1, "{:?}", hook.all());
    let l = log(&env);
    assert!(
        l.contains(&format!("(pid {first}) ended by signal 9")),
        "{l}"
    );
    assert!(d.terminate().success());
    env.run(&["check"]).ok();
}

fn jiff_minute_now() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Local minute equals UTC minute except in zones offset by a part of an hour; the
    // 30-minute margin covers those too.
    (secs / 60) % 60
}

fn rfc3339(unix: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_running_job_is_not_run_twice() {
    let env = Env::init("twice");
    let src = env.dir.join("src");
    generate_tree(&src, 5, 0);
    let pw = password_file(&env);
    // The password command takes three seconds: the run is still going when the second starts.
    let cmd = format!("sleep 3; cat {}", pw.display());
    env.run(&[
        "--password-command",
        &cmd,
        "job",
        "add",
        "slow",
        "--path",
        src.to_str().unwrap(),
        "--no-check",
    ])
    .ok();
    let first = env
        .command()
        .args(["job", "run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = Daemon(first);
    wait_until("the first run", Duration::from_secs(10), || {
        job_state(&env, "slow")["last_run"]["result"] == "running"
    });
    let second = env.run(&["job", "run", "slow"]);
    assert_eq!(second.code, 11, "{}", second.stderr);
    assert!(
        second.stderr.contains("already running"),
        "{}",
        second.stderr
    );
    let status = env.run(&["status"]).ok();
    assert!(status.stdout.contains("running:"), "{}", status.stdout);
    assert!(first.0.wait().unwrap().success());
    assert_eq!(job_state(&env, "slow")["last_run"]["result"], "success");
    assert_eq!(snapshots(&env, Some("slow")).len(), 1);
}

/// Bytes of a local repository's objects (not temporary files).
fn objects_size(repo: &Path) -> u64 {
    ["data", "index", "snapshots", "keys"]
        .iter()
        .flat_map(|f| {
            objects(repo, f)
                .into_iter()
                .map(move |n| fs::metadata(object_path(repo, f, &n)).unwrap().len())
        })
        .sum()
}

/// Incompressible files, `mib` MiB in all.
fn noise_tree(root: &Path, seed: u64, mib: usize) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root).unwrap();
    for i in 0..mib / 4 {
        write(&root.join(format!("n{i:03}.bin")), &rng.noise(4 << 20));
    }
}

#[test]
fn sigterm_stops_the_daemon_mid_run_and_the_repository_stays_consistent() {
    let env = Env::init("sigterm");
    let src = env.dir.join("src");
    noise_tree(&src, 6, 400);
    // zstd level 12 on incompressible data: a run of several seconds on two cores.
    add_job(&env, "big", &src, "*/2 * * * * *", &["--compression", "12"]);
    let mut d = Daemon::start(&env);
    wait_until("the run to store packs", Duration::from_secs(30), || {
        objects(&env.repo, "data").len() >= 2
    });
    assert!(
        !log(&env).contains("job big: backup success"),
        "the run ended before it could be interrupted"
    );
    let started = Instant::now();
    assert!(d.terminate().success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let st = job_state(&env, "big");
    assert_eq!(st["last_run"]["result"], "interrupted", "{st}");
    // No run is left behind.
    let pid = st["last_run"]["pid"].as_u64().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the job's process outlived the daemon"
    );
    assert!(log(&env).contains("daemon stopped"));

    // Consistent: check is clean, and the next run completes without an unlock step.
    env.run(&["check", "--read-data"]).ok();
    env.run(&["job", "run", "big"]).ok();
    let target = env.dir.join("restore");
    env.restore("latest", &target, &[]).ok();
    assert_diff_clean(&src, &in_snapshot(&target, &src));
}

/// A tree in `gen` states: each backup changes a part of it. Returns copies of each state.
fn changing_history(env: &Env, src: &Path, states: usize) -> Vec<PathBuf> {
    let mut copies = Vec::new();
    let mut rng = Rng::new(77);
    fs::create_dir_all(src).unwrap();
    for g in 0..states {
        // Replace a quarter of the files, add some, remove one.
        for i in 0..8 {
            if g == 0 || i % 4 == g % 4 {
                write(&src.join(format!("f{i}.bin")), &rng.noise(3 << 20));
            }
        }
        write(&src.join(format!("new{g}.txt")), &rng.text(200 << 10));
        if g >= 2 {
            let _ = fs::remove_file(src.join(format!("new{}.txt", g - 2)));
        }
        env.backup(&[src], &["--job", "hist"]);
        let copy = env.dir.join(format!("state{g}"));
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(src)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        copies.push(copy);
        // Distinct times for every snapshot.
        std::thread::sleep(Duration::from_millis(20));
    }
    copies
}

#[test]
fn forget_and_prune_keep_exactly_what_the_rules_say() {
    let env = Env::init("prune");
    let src = env.dir.join("src");
    let copies = changing_history(&env, &src, 6);
    let before = snapshots(&env, Some("hist"));
    assert_eq!(before.len(), 6);

    // A dry run changes nothing.
    let dry = env
        .run(&[
            "forget",
            "--job",
            "hist",
            "--keep-last",
            "2",
            "--dry-run",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(dry["removed"], 0);
    assert_eq!(snapshots(&env, None).len(), 6);
    // Keep the newest two.
    let out = env
        .run(&["forget", "--job", "hist", "--keep-last", "2"])
        .ok();
    assert!(out.stdout.contains("remove"), "{}", out.stdout);
    let kept: Vec<String> = snapshots(&env, None)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = before[4..]
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, want);

    let size_before = du(&env.repo);
    let dry = env.run(&["prune", "--dry-run", "--json"]).ok().json();
    assert_eq!(
        du(&env.repo),
        size_before,
        "a dry run changed the repository"
    );
    let p = env.run(&["prune", "--json"]).ok().json();
    assert!(
        p["packs_unused"].as_u64().unwrap() + p["packs_repacked"].as_u64().unwrap() > 0,
        "{p}"
    );
    assert_eq!(p["packs_unused"], dry["packs_unused"]);
    let size_after = du(&env.repo);
    assert!(
        size_after < size_before * 3 / 4,
        "{size_before} -> {size_after}: {p}"
    );
    env.run(&["check", "--read-data"]).ok();
    // Every kept snapshot restores byte for byte.
    for (i, s) in snapshots(&env, None).iter().enumerate() {
        let target = env.dir.join(format!("restore{i}"));
        env.restore(s["id"].as_str().unwrap(), &target, &[]).ok();
        assert_diff_clean(&copies[4 + i], &in_snapshot(&target, &src));
    }
    // A second prune has nothing left to do.
    let again = env.run(&["prune", "--json"]).ok().json();
    assert_eq!(again["packs_unused"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
}

#[test]
fn prune_racing_a_backup_loses_nothing() {
    let env = Env::init("race");
    let src = env.dir.join("src");
    noise_tree(&src, 8, 160);
    env.backup(&[&src], &["--job", "race"]);
    for round in 0..3 {
        // The data stays in the repository, but no snapshot uses it any more: prune
        // wants it gone, while the backup below finds it in the index and reuses it.
        for id in objects(&env.repo, "snapshots") {
            fs::remove_file(object_path(&env.repo, "snapshots", &id)).unwrap();
        }
        let backup = env
            .command()
            .args(["backup", "--json", "--force", src.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(round * 150));
        let prune = env.run(&["prune"]);
        let b = backup.wait_with_output().unwrap();
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        // Prune either ran first (the backup waited) or found the backup's lock.
        assert!(
            prune.code == 0 || (prune.code == 11 && prune.stderr.contains("locked")),
            "prune: {} {}",
            prune.code,
            prune.stderr
        );
        env.run(&["check", "--read-data"]).ok();
        let target = env.dir.join(format!("restore{round}"));
        env.restore("latest", &target, &[]).ok();
        assert_diff_clean(&src, &in_snapshot(&target, &src));
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn prune_killed_at_any_moment_loses_nothing() {
    let env = Env::init("killprune");
    let src = env.dir.join("src");
    // Old data to throw away, mixed into the same packs as data that stays.
    changing_history(&env, &src, 5);
    let mut extra = Rng::new(3);
    for i in 0..30 {
        write(&src.join(format!("big{i}.bin")), &extra.noise(4 << 20));
    }
    env.backup(&[&src], &["--job", "hist"]);
    for i in 0..30 {
        if i % 2 == 0 {
            fs::remove_file(src.join(format!("big{i}.bin"))).unwrap();
        }
    }
    env.backup(&[&src], &["--job", "hist"]);
    env.run(&["forget", "--job", "hist", "--keep-last", "1"])
        .ok();
    let snaps = snapshots(&env, None);
    assert_eq!(snaps.len(), 1);

    // Killed after each step prune reports (finding what is used, planning, writing new
    // packs), right away and a little later, and at plain times from its start.
    let size_before = objects_size(&env.repo);
    let mut killed = 0;
    let points: Vec<(usize, u64)> = vec![(1, 0), (2, 0), (2, 40), (3, 0), (3, 5), (0, 400)];
    for (after_line, delay_ms) in points {
        use std::io::BufRead;
        let mut p = env
            .command()
            .arg("prune")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(p.stdout.take().unwrap()).lines();
        for _ in 0..after_line {
            let _ = lines.next();
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        if p.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = p.kill(); // SIGKILL
        let _ = p.wait();
        // Whatever the moment, the kept snapshot is whole.
        env.run(&["check", "--read-data"]).ok();
        let target = env.dir.join("restore");
        env.restore("latest", &target, &[]).ok();
        assert_diff_clean(&src, &in_snapshot(&target, &src));
        fs::remove_dir_all(&target).unwrap();
    }
    assert!(
        killed >= 4,
        "prune finished before most kills ({killed} of 6 landed)"
    );
    // And a prune after all that completes without an unlock step, and leaves no more
    // than a prune would have left with no interruption (temporary files of killed
    // writes are removed once they are an hour old, so only objects count here).
    env.run(&["prune"]).ok();
    let after = objects_size(&env.repo);
    assert!(after < size_before, "{size_before} -> {after}");
    let again = env.run(&["prune", "--json"]).ok().json();
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert_eq!(again["packs_unused"], 0, "{again}");
    env.run(&["check", "--read-data"]).ok();
    let target = env.dir.join("restore");
    env.restore("latest", &target, &[]).ok();
    assert_diff_clean(&src, &in_snapshot(&target, &src));
}

#[test]
fn jobs_file_errors_name_line_and_key_and_the_service_unit_is_valid() {
    let env = Env::new("service");
    let path = jobs_file(&env);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        &path,
        "[jobs.docs]\nrepository = \"/r\"\npaths = [\"/p\"]\npassword_file = \"/pw\"\nschedule = \"daily 25:00\"\n",
    )
    .unwrap();
    let r = env.run(&["job", "list"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("line 1")
            && r.stderr.contains("jobs.docs.schedule")
            && r.stderr.contains("hours 0-23"),
        "{}",
        r.stderr
    );
    fs::write(
        &path,
        "[jobs.docs]\nrepository = \"/r\"\npaths = [\"/p\"]\npasword_file = \"/pw\"\n",
    )
    .unwrap();
    let r = env.run(&["status"]);
    assert!(
        r.stderr.contains("line 4") && r.stderr.contains("pasword_file"),
        "{}",
        r.stderr
    );
    // Shadow copies are Windows-only: refused here by name, not silently skipped.
    fs::write(
        &path,
        "[jobs.docs]\nrepository = \"/r\"\npaths = [\"/p\"]\npassword_file = \"/pw\"\nuse_vss = true\n",
    )
    .unwrap();
    let r = env.run(&["job", "list"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("jobs.docs.use_vss") && r.stderr.contains("only on Windows"),
        "{}",
        r.stderr
    );
    fs::remove_file(&path).unwrap();

    let unit = env.dir.join(".config/systemd/user/backazon.service");
    // The dry run prints the unit it would write and the commands it would run.
    let dry = env.run(&["service", "install", "--dry-run"]).ok().stdout;
    assert!(!unit.exists(), "the dry run wrote nothing");
    assert!(
        dry.contains(&format!("would write {}", unit.display())),
        "{dry}"
    );
    assert!(
        dry.contains("would run: systemctl --user enable --now backazon.service"),
        "{dry}"
    );
    let st = env.run(&["service", "status", "--json"]).ok().json();
    assert_eq!(st["installed"], false, "{st}");
    let r = env.run(&["service", "install", "--no-start"]).ok();
    assert!(r.stdout.contains("backazon.service"), "{}", r.stdout);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("ExecStart=\"{}\" \"daemon\"", bin().display())),
        "{text}"
    );
    assert!(text.contains("WantedBy=default.target"));
    assert!(dry.contains(&text), "the dry run printed this unit: {dry}");
    let st = env.run(&["service", "status", "--json"]).ok().json();
    assert_eq!(st["installed"], true, "{st}");
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&unit)
        .output()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify: {err}");
        assert!(
            !err.contains("backazon.service:"),
            "systemd-analyze verify: {err}"
        );
    }
    env.run(&["service", "uninstall"]).ok();
    assert!(!unit.exists());
}

#[test]
fn a_job_run_asks_its_password_command_once() {
    let env = Env::init("job-password-once");
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"kept for a while");
    // The command counts how often it runs.
    let runs = env.dir.join("runs");
    let cmd = format!("echo run >> {}; echo {PASSWORD}", runs.display());
    env.run(&[
        "--password-command",
        &cmd,
        "job",
        "add",
        "counted",
        "--path",
        src.to_str().unwrap(),
        "--keep-last",
        "2",
    ])
    .ok();
    fs::remove_file(&runs).unwrap();
    let r = env
        .command()
        .env_remove("BACKAZON_PASSWORD")
        .args(["job", "run", "counted"])
        .output()
        .unwrap();
    let r = Run::from(r).ok();
    // A backup, then the job's retention, in one process: one password.
    assert!(
        log(&env).contains("job counted: retention kept 1"),
        "{}\n{}",
        log(&env),
        r.stderr
    );
    assert_eq!(fs::read_to_string(&runs).unwrap().lines().count(), 1);
}
