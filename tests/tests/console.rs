//! The web console (`backazon ui`): who may use it, checked over raw HTTP (401 without
//! the token, cross-site and foreign-Host requests refused), and what a person does
//! with it, in Debian's headless chromium driven by playwright-core
//! (tests/browser/console.mjs): a job made with the folder picker, bad input named
//! beside its field, a run watched to its end, a snapshot browsed and a file downloaded
//! byte for byte, a failing job turning red. Screenshots go to
//! target/test-artifacts/console/.
#![cfg(target_os = "linux")]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backazon_e2e::http::{http, https};
use backazon_e2e::*;

/// A running `backazon ui`, stopped when dropped.
struct Ui {
    child: Child,
    url: String,
    /// `127.0.0.1:PORT`
    host: String,
    token: String,
}

impl Ui {
    fn start(env: &Env, config: &Path, state: &Path) -> Ui {
        Ui::start_with(env, config, state, &[])
    }

    fn start_with(env: &Env, config: &Path, state: &Path, extra: &[&std::ffi::OsStr]) -> Ui {
        let mut child = env
            .command()
            .env_remove("BACKAZON_PASSWORD")
            .env("BACKAZON_CONFIG", config)
            .env("BACKAZON_STATE_DIR", state)
            .args(["ui", "--no-open", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
        // Whatever else it prints is read, so that it never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let url = first.trim().to_string();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("first line is not the address: {url:?}"));
        let (host, query) = rest.split_once('/').unwrap();
        let token = query.strip_prefix("?token=").unwrap().to_string();
        assert_eq!(token.len(), 64, "{url}");
        assert!(host.starts_with("127.0.0.1:"), "{url}");
        let host = host.to_string();
        Ui {
            child,
            url,
            host,
            token,
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn without_the_token_nothing_answers_and_cross_site_requests_are_refused() {
    let env = Env::init("ui-guard");
    let ui = Ui::start(&env, &env.dir.join("jobs.toml"), &env.dir.join("state"));
    let h = ui.host.as_str();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/app.js"),
        ("GET", "/api/status"),
        ("GET", "/api/events"),
        ("GET", "/api/folders?path=/"),
        (
            "GET",
            "/api/jobs/x/download?snapshot=latest&path=/etc/passwd",
        ),
        ("POST", "/api/jobs/x/run"),
        ("DELETE", "/api/jobs/x"),
    ] {
        let r = http(h, method, path, &[], "");
        assert_eq!(r.status, 401, "{method} {path}: {}", r.head);
        let cookie_of_another = ["Cookie: backazon_session=0123".to_string()];
        assert_eq!(http(h, method, path, &cookie_of_another, "").status, 401);
    }
    assert_eq!(http(h, "GET", "/?token=00", &[], "").status, 401);
    let wrong_bearer = [format!("Authorization: Bearer {}0", &ui.token[1..])];
    assert_eq!(http(h, "GET", "/api/status", &wrong_bearer, "").status, 401);

    // The printed address trades the token for a session cookie and leaves it out of
    // the address bar.
    let r = http(h, "GET", &format!("/?token={}", ui.token), &[], "");
    assert_eq!(r.status, 303, "{}", r.head);
    assert!(r.head.contains("location: /\r\n"), "{}", r.head);
    let set = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = format!("Cookie: {}", set.split(';').next().unwrap());
    let ok = http(h, "GET", "/api/status", std::slice::from_ref(&cookie), "");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("\"jobs\":[]"), "{}", ok.body);
    let page = http(h, "GET", "/", std::slice::from_ref(&cookie), "");
    assert!(page.body.contains("/app.js"));
    assert!(page
        .head
        .contains("content-security-policy: default-src 'self'"));

    // State changes: never from another origin, never without the page's own header
    // (what a cross-site form or a simple request cannot add).
    let body = r#"{"name":"x","job":{}}"#;
    let from = |origin: &str| {
        vec![
            cookie.clone(),
            "X-Backazon: 1".to_string(),
            format!("Origin: {origin}"),
        ]
    };
    let r = http(h, "POST", "/api/jobs", &from("http://evil.example"), body);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("cross-origin"), "{}", r.body);
    let r = http(h, "POST", "/api/jobs", std::slice::from_ref(&cookie), body);
    assert_eq!(r.status, 403, "{}", r.body);
    let own = from(&format!("http://{h}"));
    let r = http(h, "POST", "/api/jobs", &own, body);
    assert_eq!(
        r.status, 422,
        "the page's own request reaches the API: {}",
        r.body
    );
    // A page that rebinds its DNS name to 127.0.0.1 sends its own Host.
    let rebound = [cookie.clone(), "Host: evil.example:80".to_string()];
    assert_eq!(http(h, "GET", "/api/status", &rebound, "").status, 403);
    assert!(!env.dir.join("jobs.toml").exists(), "nothing was saved");
}

#[test]
fn served_to_other_computers_it_needs_a_password_and_tls_and_slows_down_guessing() {
    let env = Env::init("ui-listen");
    let (config, state) = (env.dir.join("jobs.toml"), env.dir.join("state"));
    let cert = listeners::test_cert();
    let key = cert.with_file_name("key.pem");
    let pw = env.dir.join("ui-pw");
    fs::write(&pw, "a long console password\n").unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);

    // Never without both.
    let r = Run::from_output(env.command().args([
        os("ui"),
        os("--no-open"),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--ui-password-file"),
        pw.clone().into(),
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--tls-cert"), "{}", r.stderr);
    let short = env.dir.join("short");
    fs::write(&short, "hunter2\n").unwrap();
    let listen = |pw: &Path| {
        vec![
            os("--listen"),
            os("127.0.0.1:0"),
            os("--ui-password-file"),
            pw.as_os_str().to_owned(),
            os("--tls-cert"),
            cert.clone().into(),
            os("--tls-key"),
            key.clone().into(),
        ]
    };
    let mut short_args = vec![os("ui"), os("--no-open")];
    short_args.extend(listen(&short));
    let r = Run::from_output(env.command().args(&short_args));
    assert!(
        r.code == 1 && r.stderr.contains("shorter than 12"),
        "{}",
        r.stderr
    );

    let args = listen(&pw);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let ui = Ui::start_with(&env, &config, &state, &args);
    assert!(ui.url.starts_with("https://127.0.0.1:"), "{}", ui.url);
    let h = ui.host.as_str();
    // Plain HTTP gets nothing.
    assert_ne!(http(h, "GET", "/api/status", &[], "").status, 200);
    let r = https(h, "GET", "/", &[], "");
    assert_eq!(r.status, 303, "{}", r.head);
    assert!(r.head.contains("location: /login"), "{}", r.head);
    assert_eq!(https(h, "GET", "/api/status", &[], "").status, 401);
    let page = https(h, "GET", "/login", &[], "");
    assert!(
        page.status == 200 && page.body.contains("type=\"password\""),
        "{}",
        page.body
    );

    // Wrong passwords: each answered later than the one before.
    let form = ["Content-Type: application/x-www-form-urlencoded".to_string()];
    let mut waits = Vec::new();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let r = https(h, "POST", "/login", &form, "password=guess");
        assert_eq!(r.status, 401, "{}", r.head);
        assert!(r.body.contains("Wrong password"));
        waits.push(t.elapsed());
    }
    assert!(
        waits[1] >= Duration::from_millis(450) && waits[2] >= Duration::from_millis(950),
        "{waits:?}"
    );
    let r = https(
        h,
        "POST",
        "/login",
        &form,
        "password=a+long+console+password",
    );
    assert_eq!(r.status, 303, "{}", r.head);
    let set = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap();
    assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
    let cookie = format!("Cookie: {}", set.split(';').next().unwrap());
    let ok = https(h, "GET", "/api/status", std::slice::from_ref(&cookie), "");
    assert_eq!(ok.status, 200, "{}", ok.body);
    // State changes still only from the console's own page.
    let body = r#"{"name":"x","job":{}}"#;
    let mut own = vec![cookie.clone(), "X-Backazon: 1".into()];
    own.push(format!("Origin: https://{h}"));
    assert_eq!(https(h, "POST", "/api/jobs", &own, body).status, 422);
    own.pop();
    own.push("Origin: https://evil.example".into());
    assert_eq!(https(h, "POST", "/api/jobs", &own, body).status, 403);
    // Signing out ends the session: the same cookie opens nothing after it.
    let status = https(h, "GET", "/api/status", std::slice::from_ref(&cookie), "");
    assert!(status.body.contains("\"remote\":true"), "{}", status.body);
    own.pop();
    let out = https(h, "POST", "/api/logout", &own, "");
    assert_eq!(out.status, 204, "{}", out.head);
    assert!(out.head.contains("Max-Age=0"), "{}", out.head);
    let after = https(h, "GET", "/api/status", std::slice::from_ref(&cookie), "");
    assert_eq!(after.status, 401, "{}", after.body);
}

#[test]
fn the_daemon_serves_the_console_of_its_own_jobs() {
    let env = Env::init("ui-daemon");
    let (config, state) = (env.dir.join("jobs.toml"), env.dir.join("state"));
    let mut child = env
        .command()
        .env("BACKAZON_CONFIG", &config)
        .env("BACKAZON_STATE_DIR", &state)
        .args(["daemon", "--ui", "--ui-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    let url = first.trim().to_string();
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{url}"));
    let (port, token) = rest.split_once("/?token=").unwrap();
    let host = format!("127.0.0.1:{port}");
    let bearer = [format!("Authorization: Bearer {token}")];
    let r = http(&host, "GET", "/api/status", &bearer, "");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["daemon"].is_string(), "the daemon is seen running: {v}");
}

fn browser_tools() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/console.mjs");
    let modules = script.with_file_name("node_modules/playwright-core");
    assert!(
        modules.exists() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's chromium and playwright-core in \
         tests/browser/node_modules: run ci/setup.sh"
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console");
    fs::create_dir_all(&shots).unwrap();
    (script, shots)
}

#[test]
fn a_job_is_made_run_browsed_and_downloaded_from_in_a_real_browser() {
    let (script, shots) = browser_tools();
    let env = Env::init("ui-browser");
    let data = env.dir.join("data");
    let mut rng = Rng::new(16);
    let file = data.join("Documents/2026/report.bin");
    write(&file, &rng.noise(3_000_000));
    write(&data.join("Documents/notes.txt"), &rng.text(20_000));
    // Skipped once the editor's "more settings" say so.
    write(&data.join("private/.nobackup"), b"");
    write(&data.join("private/diary.txt"), b"not to be backed up");
    write(
        &data.join("thumbs/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    write(&data.join("thumbs/t1.png"), b"cached");
    for i in 0..1200 {
        write(
            &data.join(format!("wide/f{i:05}.txt")),
            format!("{i}\n").as_bytes(),
        );
    }
    let pw = env.dir.join("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let flaky = env.dir.join("flaky-pw");
    fs::write(&flaky, format!("{PASSWORD}\n")).unwrap();
    let config = env.dir.join("config/jobs.toml");
    let state = env.dir.join("state");
    let downloads = env.dir.join("downloads");
    fs::create_dir_all(&downloads).unwrap();
    let restored = env.dir.join("restored");
    let mount_at = env.dir.join("mnt");
    fs::create_dir_all(&mount_at).unwrap();
    let ui = Ui::start(&env, &config, &state);
    let hook = listeners::Webhook::start();
    let smtp = listeners::Smtp::start();

    let out = Command::new("node")
        .arg(&script)
        .env("URL", &ui.url)
        .env("DATA", &data)
        .env("FILE", &file)
        .env("REPO", &env.repo)
        // The pause keeps the run going long enough to be watched.
        .env("GOOD_PW_CMD", format!("sleep 2; cat {}", pw.display()))
        .env("BAD_PW_CMD", "echo wrong")
        .env("FLAKY_PW", &flaky)
        .env("WEBHOOK", &hook.url)
        .env("SMTP_PORT", smtp.port.to_string())
        .env("CA_FILE", listeners::test_cert())
        .env("CONFIG", &config)
        .env("RESTORE_TO", &restored)
        .env("MOUNT_AT", &mount_at)
        .env("SHOTS", &shots)
        .env("DOWNLOADS", &downloads)
        .stderr(Stdio::inherit())
        .output()
        .expect("running node (ci/setup.sh installs it)");
    let said = String::from_utf8_lossy(&out.stdout);
    print!("{said}");
    assert!(out.status.success(), "the browser run failed: {said}");

    let got = fs::read(downloads.join("report.bin")).unwrap();
    assert!(got == fs::read(&file).unwrap(), "the download differs");
    // The zip of the same folder, opened by an ordinary program.
    let unzipped = env.dir.join("unzipped");
    let r = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(downloads.join("folder.zip"))
        .arg(&unzipped)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_diff_clean(file.parent().unwrap(), &unzipped);
    // The restore of Documents/2026 from the first snapshot.
    assert_diff_clean(file.parent().unwrap(), &restored);
    for shot in ["dashboard.png", "job-editor.png", "snapshot-browser.png"] {
        let len = fs::metadata(shots.join(shot)).unwrap().len();
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
    // Saved through the same jobs file the command line edits.
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# Backazon backup jobs."), "{text}");
    assert!(
        text.contains("[jobs.documents]") && text.contains("daily = 14"),
        "{text}"
    );
    for set in [
        "prune_schedule = \"monthly 1 04:00\"",
        "exclude_if_present = [\".nobackup\"]",
        "exclude_caches = true",
    ] {
        assert!(text.contains(set), "{set} is not in {text}");
    }
    // ... and the backup followed them: the marked folder is not in the snapshot.
    let listed = env.run(&["ls", "latest", "--json"]).ok().stdout;
    assert!(listed.contains("notes.txt"), "{listed}");
    assert!(!listed.contains("diary.txt"), "{listed}");
    assert!(!listed.contains("t1.png"), "{listed}");
    let status = env
        .command()
        .env("BACKAZON_CONFIG", &config)
        .env("BACKAZON_STATE_DIR", &state)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    let state_of = |n: &str| jobs.iter().find(|j| j["name"] == n).unwrap()["state"].clone();
    assert_eq!(state_of("documents"), "ok");
    assert_eq!(state_of("photos"), "failed");
    // The cancelled run is in the history the chart draws, between the others.
    let history = fs::read_to_string(state.join("documents.history")).unwrap();
    let results: Vec<String> = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["result"].to_string())
        .collect();
    assert_eq!(
        results,
        [
            "\"success\"",
            "\"success\"",
            "\"interrupted\"",
            "\"success\""
        ],
        "{history}"
    );

    // The "send test" button, then the failed run: each told by webhook and by email
    // (over STARTTLS: the server takes no message before it).
    let wait = Duration::from_secs(30);
    for event in ["test", "failure"] {
        let h = hook
            .wait_for(|h| h.body.contains(&format!("\"event\":\"{event}\"")), wait)
            .unwrap_or_else(|| panic!("no {event} webhook: {:?}", hook.all()));
        assert!(h.line.starts_with("POST /hook "), "{}", h.line);
        let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(v["job"], "photos");
        if event == "failure" {
            assert_eq!(v["result"], "failed");
            assert!(
                v["error"].as_str().unwrap().contains("wrong password"),
                "{v}"
            );
        }
    }
    // The healthchecks pings: a start and a failure for the run.
    for ping in ["POST /hc/start ", "POST /hc/fail "] {
        hook.wait_for(|h| h.line.starts_with(ping), wait)
            .unwrap_or_else(|| panic!("no {ping}: {:?}", hook.all()));
    }
    let test_mail = smtp
        .wait_for(|m| m.data.contains("test message for job photos"), wait)
        .expect("the test email");
    assert!(test_mail.tls);
    let failed = smtp
        .wait_for(
            |m| m.data.contains("Subject: Backazon: job photos on"),
            wait,
        )
        .filter(|m| m.data.contains("FAILED"))
        .or_else(|| smtp.wait_for(|m| m.data.contains("FAILED"), wait))
        .expect("the failure email");
    assert!(
        failed.tls && failed.to == ["<owner@example.com>"],
        "{failed:?}"
    );
    assert!(failed.data.contains("wrong password"), "{}", failed.data);
    drop(ui);
}

#[test]
fn jobs_of_one_repository_open_it_once_and_a_run_refreshes_it() {
    let env = Env::init("ui-shared");
    let src = env.dir.join("src");
    write(&src.join("a.txt"), b"one");
    env.backup(&[&src], &[]);
    let (config, state) = (env.dir.join("jobs.toml"), env.dir.join("state"));
    // Two jobs into one repository, whose password command counts its runs.
    let runs = env.dir.join("runs");
    let pw = format!("echo run >> {}; echo {PASSWORD}", runs.display());
    let mut text = String::new();
    for name in ["first", "second"] {
        text += &format!(
            "[jobs.{name}]\nrepository = '{}'\npaths = ['{}']\npassword_command = '{pw}'\n\n",
            env.repo.display(),
            src.display()
        );
    }
    fs::write(&config, text).unwrap();
    let ui = Ui::start(&env, &config, &state);
    let auth = [format!("Authorization: Bearer {}", ui.token)];
    let listed = |job: &str| {
        let r = http(
            &ui.host,
            "GET",
            &format!("/api/jobs/{job}/snapshots"),
            &auth,
            "",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["snapshots"].as_array().unwrap().len()
    };
    assert_eq!((listed("first"), listed("second")), (1, 1));
    let count = || fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(count(), 1, "the password command ran for each job");
    // A run of one job: both see its snapshot, the repository opened once more.
    let r = http(&ui.host, "POST", "/api/jobs/second/run", &auth, "");
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("the run", Duration::from_secs(60), || {
        let s = http(&ui.host, "GET", "/api/status", &auth, "").body;
        s.contains("\"state\":\"ok\"")
    });
    assert_eq!((listed("first"), listed("second")), (2, 2));
    // The run's own password, and the console's reopening for the new index.
    assert_eq!(count(), 3);
}
